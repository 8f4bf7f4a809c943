using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using Engine.Backends.Cuda;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary>The options of <c>engine ptx</c>.</summary>
sealed class PtxSettings : CommandSettings
{
    [CommandOption("--arch <ARCH>"), Description("Target architecture; only sm_90 (the H200) is supported."), DefaultValue("sm_90")]
    public string Arch { get; set; } = "sm_90";

    [CommandOption("--out <DIR>"), Description("Directory for one .ptx file per kernel and index.tsv (created if missing).")]
    public string? Out { get; set; }

    [CommandOption("--sass"), Description("Also assemble each file with ptxas -arch=sm_90 -v --warn-on-spills (NAME.cubin beside it) and print registers, spills, stack, shared memory and an occupancy estimate.")]
    public bool Sass { get; set; }
}

/// <summary>
/// <c>engine ptx --arch sm_90 --out DIR [--sass]</c>: the PTX of every kernel instantiation the CUDA backend can launch
/// (<see cref="KernelRegistry"/>), generated without a GPU through the compile path the backend uses at run time
/// (<see cref="PtxCompiler"/>: its ILGPU context at O2, sm_90, PTX ISA pinned to 8.3). Writes DIR/NAME.ptx per kernel
/// and DIR/index.tsv (name, family, dtype, file). With <c>--sass</c> it runs NVIDIA's ptxas on every file in
/// parallel (ptxas from ENGINE_PTXAS, the scripts/ci-deps.sh cache, or PATH; missing: exit 3) and prints, per kernel,
/// registers per thread, spill stores/loads, stack frame, static shared memory, threads per group and an sm_90
/// occupancy estimate (<see cref="Sm90Occupancy"/>); exit 1 when a kernel does not assemble.
/// </summary>
sealed class PtxCommand : Command<PtxSettings>
{
    public override int Execute(CommandContext context, PtxSettings s, CancellationToken cancellationToken)
    {
        if (s.Arch != Ptxas.Arch) throw new UsageException($"--arch {s.Arch} is not supported: only {Ptxas.Arch} (the H200) is");
        if (string.IsNullOrWhiteSpace(s.Out)) throw new UsageException("--out DIR is required: the directory for the .ptx files and index.tsv");
        string? ptxas = null;
        if (s.Sass)
        {
            ptxas = Ptxas.Find("ptxas");
            if (ptxas is null)
            {
                // Like a missing device: the tool this command needs is not on this machine (exit 3).
                Console.Error.WriteLine($"engine: ptxas not found (ENGINE_PTXAS, {Path.Combine(Ptxas.CacheDirectory, "usr", "bin")}, PATH); run {Ptxas.InstallHint} to install it");
                return ExitCodes.DeviceUnavailable;
            }
        }

        var entries = KernelRegistry.All;
        var sw = Stopwatch.StartNew();
        var results = Ptxas.WriteAndAssemble(entries, s.Out, ptxas, cancellationToken);
        var index = new List<string> { "name\tfamily\tdtype\tfile" };
        index.AddRange(entries.Select(e => $"{e.Name}\t{e.Family}\t{e.DTypeList}\t{e.FileName}"));
        File.WriteAllLines(Path.Combine(s.Out, "index.tsv"), index);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{entries.Count} kernels: PTX (sm_90, PTX ISA 8.3, ILGPU O2) and index.tsv in {s.Out}{(ptxas is null ? "" : ", each assembled by " + ptxas + " -arch=sm_90 -v --warn-on-spills into NAME.cubin")} ({sw.Elapsed.TotalSeconds:F1} s)"));
        if (ptxas is null) return ExitCodes.Ok;

        Console.WriteLine("occupancy: resident warps of 64 per SM (65536 registers, 228 KiB shared, 2048 threads, 32 groups);");
        Console.WriteLine("  threads per group from the launch configuration; * = varies by launch (row kernels: 32-1024 by row length), 256 assumed");
        int width = Math.Max(6, entries.Max(e => e.Name.Length));
        Console.WriteLine($"{"kernel".PadRight(width)} {"family",-11} {"regs",4} {"spill st",8} {"spill ld",8} {"stack",5} {"smem",6} {"threads",7} {"occupancy",9} limit");
        int failed = 0;
        for (int i = 0; i < entries.Count; i++)
        {
            var e = entries[i];
            var r = results[i]!;
            if (!r.Assembled)
            {
                failed++;
                Console.WriteLine($"{e.Name.PadRight(width)} {e.Family,-11} FAILED: {r.FirstProblem}");
                continue;
            }
            int threads = e.ThreadsPerGroup ?? 256;
            var occ = Sm90Occupancy.Estimate(r.Registers, r.SharedBytes, threads);
            string t = e.ThreadsPerGroup is null ? "256*" : threads.ToString(CultureInfo.InvariantCulture);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{e.Name.PadRight(width)} {e.Family,-11} {r.Registers,4} {r.SpillStores,8} {r.SpillLoads,8} {r.StackFrame,5} {r.SharedBytes,6} {t,7} {occ.Occupancy,9:P0} {occ.Limit}"));
        }
        if (failed > 0)
        {
            Console.Out.Flush();
            Console.Error.WriteLine($"engine: {failed} of {entries.Count} kernels did not assemble (see FAILED above)");
            return ExitCodes.Error;
        }
        return ExitCodes.Ok;
    }
}

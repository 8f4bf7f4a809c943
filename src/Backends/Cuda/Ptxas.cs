using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Engine.Backends.Cuda;

/// <summary>
/// What ptxas reported for one PTX module (one kernel) assembled with <c>-v</c>: the entry's registers, stack frame
/// and static shared memory, and the spills summed over every function of the module.
/// </summary>
/// <param name="ExitCode">ptxas's exit status (0: assembled).</param>
/// <param name="Output">ptxas's stdout and stderr.</param>
/// <param name="Registers">Registers per thread of the entry function.</param>
/// <param name="StackFrame">Bytes of stack frame of the entry function (local memory per thread).</param>
/// <param name="SpillStores">Bytes of spill stores, all functions of the module.</param>
/// <param name="SpillLoads">Bytes of spill loads, all functions of the module.</param>
/// <param name="SharedBytes">Bytes of static shared memory of the entry function.</param>
/// <param name="CalleeStackFrame">The largest stack frame among the module's non-entry functions (0 when there are none).</param>
public sealed record PtxasResult(int ExitCode, string Output, int Registers, int StackFrame, int SpillStores, int SpillLoads, int SharedBytes, int CalleeStackFrame)
{
    /// <summary>True when ptxas assembled the module.</summary>
    public bool Assembled => ExitCode == 0;

    /// <summary>The first error or warning line of <see cref="Output"/>, for a one-line report.</summary>
    public string FirstProblem => Output.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Contains("error", StringComparison.OrdinalIgnoreCase) || l.Contains("warning", StringComparison.OrdinalIgnoreCase))
        ?? Output.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0) ?? "";
}

/// <summary>
/// A static occupancy estimate for sm_90 (65536 registers, 228 KiB shared memory, 2048 threads, 64 warps and 32 groups
/// per multiprocessor): resident groups per multiprocessor are the least of the four limits. Registers are allocated
/// per warp in units of 256 (8 per thread); every group also takes 1 KiB of shared memory that CUDA reserves on sm_80
/// and later, as NVIDIA's occupancy calculator counts it.
/// </summary>
/// <param name="GroupsPerSm">Resident groups per multiprocessor (0: the group does not fit).</param>
/// <param name="Occupancy">Resident warps over the 64 an sm_90 multiprocessor holds.</param>
/// <param name="Limit">What bounds <see cref="GroupsPerSm"/>: registers, shared, threads or groups.</param>
public readonly record struct Sm90Occupancy(int GroupsPerSm, double Occupancy, string Limit)
{
    /// <summary>Registers per multiprocessor.</summary>
    public const int RegistersPerSm = 65536;
    /// <summary>Shared memory per multiprocessor, bytes.</summary>
    public const int SharedPerSm = 228 * 1024;
    /// <summary>Resident threads per multiprocessor.</summary>
    public const int ThreadsPerSm = 2048;
    /// <summary>Resident groups per multiprocessor.</summary>
    public const int GroupsPerSmLimit = 32;
    /// <summary>Shared memory CUDA reserves per group on sm_80 and later, bytes.</summary>
    public const int ReservedSharedPerGroup = 1024;

    /// <summary>The estimate for a kernel using <paramref name="registers"/> per thread and <paramref name="sharedBytes"/> per group, launched with <paramref name="threads"/> per group.</summary>
    public static Sm90Occupancy Estimate(int registers, int sharedBytes, int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        int warps = (threads + 31) / 32;
        int regsPerWarp = (Math.Max(registers, 1) * 32 + 255) / 256 * 256;
        int byRegs = RegistersPerSm / (regsPerWarp * warps);
        int byShared = SharedPerSm / (sharedBytes + ReservedSharedPerGroup);
        int byThreads = ThreadsPerSm / (warps * 32);
        // On a tie the hardware's own limits (threads, groups) are named: a kernel at 100 % is not register-bound.
        var limits = new[] { (byThreads, "threads"), (GroupsPerSmLimit, "groups"), (byRegs, "registers"), (byShared, "shared") };
        var (groups, limit) = limits.MinBy(l => l.Item1);
        return new(groups, groups * warps / 64.0, limit);
    }
}

/// <summary>
/// NVIDIA's PTX assembler and disassembler, run on the PTX of <see cref="PtxCompiler"/> without a GPU: where to find
/// them (<c>ENGINE_PTXAS</c>, then the cache scripts/ci-deps.sh fills, then PATH), how to run them, and how to read
/// ptxas's <c>-v</c> report.
/// </summary>
public static partial class Ptxas
{
    /// <summary>The architecture assembled for.</summary>
    public const string Arch = "sm_90";

    /// <summary>The command that installs the tools (into <see cref="CacheDirectory"/>).</summary>
    public const string InstallHint = "bash scripts/ci-deps.sh";

    /// <summary>The cache scripts/ci-deps.sh unpacks into: <c>$ENGINE_DEPS_CACHE</c>, else <c>~/.cache/engine-ci-deps</c>.</summary>
    public static string CacheDirectory =>
        Environment.GetEnvironmentVariable("ENGINE_DEPS_CACHE") is { Length: > 0 } d
            ? d
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "engine-ci-deps");

    /// <summary>
    /// The path of ptxas, cuobjdump or nvdisasm, or null when none is found. ptxas: <c>ENGINE_PTXAS</c> (a file), then
    /// <c>CacheDirectory/usr/bin</c>, then PATH. The other tools: beside the ptxas found, then the cache, then PATH.
    /// </summary>
    public static string? Find(string tool)
    {
        ArgumentException.ThrowIfNullOrEmpty(tool);
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable("ENGINE_PTXAS") is { Length: > 0 } env)
            candidates.Add(tool == "ptxas" ? env : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(env)) ?? ".", tool));
        candidates.Add(Path.Combine(CacheDirectory, "usr", "bin", tool));
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            candidates.Add(Path.Combine(dir, tool));
        return candidates.FirstOrDefault(File.Exists);
    }

    /// <summary>
    /// Assembles <paramref name="ptxFile"/> for sm_90 into <paramref name="cubinFile"/> with
    /// <c>ptxas -arch=sm_90 -v --warn-on-spills</c> and reads its report.
    /// </summary>
    public static PtxasResult Assemble(string ptxas, string ptxFile, string cubinFile)
    {
        var (code, output) = RunTool(ptxas, ["-arch=" + Arch, "-v", "--warn-on-spills", "-o", cubinFile, ptxFile]);
        return Parse(code, output);
    }

    /// <summary>
    /// Writes the PTX of every entry (<see cref="PtxCompiler"/>) to <paramref name="directory"/> as
    /// <see cref="KernelEntry.FileName"/> and, when <paramref name="ptxas"/> is given, assembles each file into a
    /// <c>.cubin</c> beside it as soon as it is written, up to one ptxas per core while the next kernels compile.
    /// Returns ptxas's results in entry order (all null without ptxas).
    /// </summary>
    public static PtxasResult?[] WriteAndAssemble(IReadOnlyList<KernelEntry> entries, string directory, string? ptxas, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(entries);
        Directory.CreateDirectory(directory);
        var results = new PtxasResult?[entries.Count];
        var tasks = new List<Task>();
        using var slots = new SemaphoreSlim(Environment.ProcessorCount);
        try
        {
            for (int i = 0; i < entries.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                string file = Path.Combine(directory, entries[i].FileName);
                File.WriteAllText(file, PtxCompiler.Compile(entries[i]));
                if (ptxas is null) continue;
                int at = i;
                slots.Wait(cancellationToken);
                tasks.Add(Task.Run(() =>
                {
                    try { results[at] = Assemble(ptxas, file, Path.ChangeExtension(file, ".cubin")); }
                    finally { slots.Release(); }
                }, CancellationToken.None));
            }
        }
        finally
        {
            // Never return (or dispose the semaphore) while a ptxas is still running.
            Task.WaitAll([.. tasks], CancellationToken.None);
        }
        return results;
    }

    /// <summary>The SASS of a cubin (<c>cuobjdump -sass</c>).</summary>
    public static string Disassemble(string cuobjdump, string cubinFile)
    {
        var (code, output) = RunTool(cuobjdump, ["-sass", cubinFile]);
        if (code != 0) throw new InvalidOperationException($"cuobjdump -sass {cubinFile} failed ({code}): {output.Trim()}");
        return output;
    }

    /// <summary>
    /// Reads ptxas's <c>-v</c> lines: "Compiling entry function 'E'", "Function properties for F" followed by
    /// "N bytes stack frame, N bytes spill stores, N bytes spill loads", and "Used N registers, ..., N bytes smem".
    /// </summary>
    public static PtxasResult Parse(int exitCode, string output)
    {
        ArgumentNullException.ThrowIfNull(output);
        string? entry = null, function = null;
        int registers = 0, stack = 0, stores = 0, loads = 0, smem = 0, calleeStack = 0;
        foreach (var raw in output.Split('\n'))
        {
            var line = raw.Trim();
            if (EntryLine().Match(line) is { Success: true } e) { entry = e.Groups[1].Value; continue; }
            if (PropertiesLine().Match(line) is { Success: true } p) { function = p.Groups[1].Value; continue; }
            if (FrameLine().Match(line) is { Success: true } f)
            {
                int frame = Int(f.Groups[1]);
                stores += Int(f.Groups[2]);
                loads += Int(f.Groups[3]);
                if (function is not null && function == entry) stack = frame;
                else calleeStack = Math.Max(calleeStack, frame);
                continue;
            }
            if (RegistersLine().Match(line) is { Success: true } r)
            {
                // The resource line follows the entry's "Compiling entry function" line.
                registers = Int(r.Groups[1]);
                if (SmemPart().Match(line) is { Success: true } s) smem = Int(s.Groups[1]);
            }
        }
        // A module whose one function is the entry reports its frame under the entry's name; without names (an
        // unexpected format) the only frame seen is the entry's.
        if (entry is null && calleeStack > 0 && stack == 0) (stack, calleeStack) = (calleeStack, 0);
        return new(exitCode, output, registers, stack, stores, loads, smem, calleeStack);
    }

    static int Int(Group g) => int.Parse(g.Value, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"Compiling entry function '([^']+)'")]
    private static partial Regex EntryLine();

    [GeneratedRegex(@"Function properties for (\S+)")]
    private static partial Regex PropertiesLine();

    [GeneratedRegex(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")]
    private static partial Regex FrameLine();

    [GeneratedRegex(@"Used (\d+) registers")]
    private static partial Regex RegistersLine();

    [GeneratedRegex(@"(\d+) bytes smem")]
    private static partial Regex SmemPart();

    static (int Code, string Output) RunTool(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        // Both streams at once: a tool blocked on a full stderr pipe would never exit.
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result);
    }
}

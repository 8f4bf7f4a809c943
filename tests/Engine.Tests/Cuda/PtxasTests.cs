using System.Diagnostics;
using System.Globalization;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The CUDA kernels as NVIDIA's assembler sees them, without a GPU: every entry of <see cref="KernelRegistry"/> is
/// compiled through the run-time path (<see cref="PtxCompiler"/>) and assembled for sm_90 by ptxas
/// (<c>-v --warn-on-spills</c>), in parallel; the tensor-core GEMMs' cubins are disassembled with cuobjdump. Checks:
/// every kernel assembles; nothing spills; every kernel that can serve float32, float16 or bfloat16 has a 0-byte
/// stack frame (float64-only kernels may have one: ILGPU's software float64 exp/log/tanh; they are printed, not
/// asserted); the tensor-core kernels issue HMMA and LDSM. The tools come from ENGINE_PTXAS, the cache
/// scripts/ci-deps.sh fills, or PATH. Without them the fixture fails when CI=true (CI must run scripts/ci-deps.sh)
/// and is ignored otherwise, saying why.
/// </summary>
[TestFixture]
[NonParallelizable] // runs one ptxas per core
public class PtxasTests
{
    /// <summary>
    /// Narrow-float kernels allowed a stack frame, with the frame measured (ptxas 12.4): a change in either direction
    /// fails, so the list stays true. AdamPrepare runs on one thread once per optimizer step and computes Adam's bias
    /// corrections 1 − βᵗ with Math.Pow in float64 on purpose (float32 would cost 1 − β2ᵗ about four digits at small
    /// t); ILGPU's software pow needs the frame, which is free at one thread. ForeachAdamPrepare is the same computation
    /// for a list of parameters. The general p-norm (clip_grad_norm_ with norm_type not 0, 1, 2 or ±inf) needs float64
    /// Math.Pow; it is its own instantiation (ForeachNorm*&lt;PowerNorm&gt;), launched only for such p, so the norms
    /// every clipped step runs (&lt;PlainNorm&gt;) have no frame.
    /// </summary>
    static readonly Dictionary<string, int> s_knownStackFrames = new()
    {
        ["AdamPrepare"] = 64, ["ForeachAdamPrepare"] = 64, ["ForeachNormPartials<PowerNorm>"] = 64, ["ForeachNormFinish<PowerNorm>"] = 64,
    };

    string _dir = "";
    IReadOnlyList<KernelEntry> _entries = [];
    PtxasResult[] _results = [];
    readonly Dictionary<string, string> _sass = [];

    [OneTimeSetUp]
    public void AssembleEverything()
    {
        string? ptxas = Ptxas.Find("ptxas"), cuobjdump = Ptxas.Find("cuobjdump");
        if (ptxas is null || cuobjdump is null)
        {
            string why = $"NVIDIA's ptxas/cuobjdump not found (ENGINE_PTXAS, {Path.Combine(Ptxas.CacheDirectory, "usr", "bin")}, PATH): run {Ptxas.InstallHint}";
            if (Environment.GetEnvironmentVariable("CI") == "true") Assert.Fail(why + " (CI=true: CI must install them)");
            TestContext.Progress.WriteLine("PtxasTests ignored: " + why);
            Assert.Ignore(why);
        }
        _dir = Path.Combine(Path.GetTempPath(), "engine-ptxas-" + Guid.NewGuid().ToString("N")[..8]);
        _entries = KernelRegistry.All;
        var sw = Stopwatch.StartNew();
        _results = Ptxas.WriteAndAssemble(_entries, _dir, ptxas).Select(r => r!).ToArray();
        double assemble = sw.Elapsed.TotalSeconds;
        var mma = _entries.Select((e, i) => (e, i)).Where(x => (x.e.IsTensorCore || IsFloat32Simt(x.e)) && _results[x.i].Assembled).ToList();
        var sass = new string[mma.Count];
        Parallel.For(0, mma.Count, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
            j => sass[j] = Ptxas.Disassemble(cuobjdump!, Path.Combine(_dir, Path.ChangeExtension(mma[j].e.FileName, ".cubin"))));
        for (int j = 0; j < mma.Count; j++) _sass[mma[j].e.Name] = sass[j];
        TestContext.Progress.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"PtxasTests: {_entries.Count} kernels compiled and assembled for sm_90 in {assemble:F1} s, {mma.Count} GEMM cubins (tensor-core, float32 SIMT) disassembled in {sw.Elapsed.TotalSeconds - assemble:F1} s ({Environment.ProcessorCount} cores)"));
        foreach (var family in _entries.Select(e => e.Family).Distinct())
        {
            var r = _entries.Select((e, i) => (e, r: _results[i])).Where(x => x.e.Family == family && x.r.Assembled).ToList();
            if (r.Count == 0) continue;
            TestContext.Progress.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {family,-11} {r.Count,3} kernels: registers {r.Min(x => x.r.Registers)}-{r.Max(x => x.r.Registers)}, stack max {r.Max(x => x.r.StackFrame)} B, spills {r.Sum(x => x.r.SpillStores + x.r.SpillLoads)} B, smem max {r.Max(x => x.r.SharedBytes)} B"));
        }
    }

    [OneTimeTearDown]
    public void RemoveFiles()
    {
        if (_dir.Length > 0 && Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    IEnumerable<(KernelEntry Entry, PtxasResult Result)> Assembled() =>
        _entries.Select((e, i) => (e, _results[i])).Where(x => x.Item2.Assembled);

    [Test]
    public void EveryKernel_Assembles()
    {
        var failed = _entries.Select((e, i) => (e, r: _results[i])).Where(x => !x.r.Assembled)
            .Select(x => $"{x.e.Name}: ptxas exit {x.r.ExitCode}: {x.r.FirstProblem}").ToList();
        Assert.That(failed, Is.Empty);
        Assert.That(_entries.Select(e => e.Family).Distinct(), Is.SupersetOf(new[]
        {
            KernelRegistry.Elementwise, KernelRegistry.Reduce, KernelRegistry.Row, KernelRegistry.Index, KernelRegistry.Random,
            KernelRegistry.Optimizer, KernelRegistry.Amp, KernelRegistry.GemmSimt, KernelRegistry.GemmMma,
        }));
    }

    /// <summary>
    /// No kernel that serves float32 or a half type divides 64-bit integers: PTX <c>div.s64</c>/<c>rem.s64</c> is an
    /// ~80-instruction software routine, and index math per dim per element made it the cost of a strided launch.
    /// Geometry and the index/row arguments carry precomputed <see cref="FastDivisor"/>s instead.
    /// </summary>
    [Test]
    public void NarrowFloatKernels_HaveNo64BitDivision()
    {
        string[] ops = ["div.s64", "div.u64", "rem.s64", "rem.u64"];
        var bad = Assembled().Where(x => x.Entry.ServesNarrowFloat)
            .Select(x => (x.Entry, Ptx: File.ReadAllText(Path.Combine(_dir, x.Entry.FileName))))
            .Select(x => (x.Entry, Count: ops.Sum(o => CountOf(x.Ptx, o))))
            .Where(x => x.Count > 0).Select(x => $"{x.Entry.Name} ({x.Entry.DTypeList}): {x.Count} 64-bit divisions").ToList();
        Assert.That(bad, Is.Empty);
    }

    [Test]
    public void NoKernel_Spills()
    {
        var spilled = Assembled().Where(x => x.Result.SpillStores + x.Result.SpillLoads > 0 || x.Result.Output.Contains("spilled", StringComparison.OrdinalIgnoreCase))
            .Select(x => $"{x.Entry.Name}: {x.Result.SpillStores} bytes spill stores, {x.Result.SpillLoads} bytes spill loads").ToList();
        Assert.That(spilled, Is.Empty);
    }

    /// <summary>
    /// No stack frame in any kernel a float32, float16 or bfloat16 tensor can launch (see
    /// <see cref="s_knownStackFrames"/>); the float64-only kernels' frames are printed.
    /// </summary>
    [Test]
    public void NarrowFloatKernels_HaveNoStackFrame()
    {
        var bad = new List<string>();
        foreach (var (e, r) in Assembled().Where(x => x.Entry.ServesNarrowFloat))
        {
            int allowed = s_knownStackFrames.GetValueOrDefault(e.Name);
            if (r.StackFrame != allowed || r.CalleeStackFrame != 0)
                bad.Add($"{e.Name} ({e.DTypeList}): {r.StackFrame} bytes stack frame{(r.CalleeStackFrame != 0 ? $", a callee with {r.CalleeStackFrame}" : "")}, " +
                    (allowed == 0 ? "expected none" : $"the known exception is {allowed}"));
        }
        foreach (var name in s_knownStackFrames.Keys)
            Assert.That(_entries.Any(e => e.Name == name), $"known exception {name} is not in the registry any more");
        var wide = Assembled().Where(x => !x.Entry.ServesNarrowFloat && x.Result.StackFrame > 0).ToList();
        TestContext.Out.WriteLine($"float64-only kernels with a stack frame ({wide.Count}): " +
            string.Join(", ", wide.Select(x => $"{x.Entry.Name} {x.Result.StackFrame} B/{x.Result.Registers} regs")));
        Assert.That(bad, Is.Empty);
    }

    [Test]
    public void TensorCoreGemms_IssueHmmaAndLdsm()
    {
        var mma = _entries.Where(e => e.IsTensorCore).ToList();
        Assert.That(mma, Has.Count.GreaterThanOrEqualTo(4), "the default tilings' bf16 and f16 kernels at least");
        var bad = new List<string>();
        foreach (var e in mma)
        {
            if (!_sass.TryGetValue(e.Name, out var sass)) { bad.Add($"{e.Name}: no SASS (did not assemble)"); continue; }
            bool bf16 = e.DTypes.Contains(DType.BFloat16);
            if (!sass.Contains("HMMA.16816.F32", StringComparison.Ordinal)) bad.Add($"{e.Name}: no HMMA.16816.F32");
            else if (bf16 != sass.Contains("HMMA.16816.F32.BF16", StringComparison.Ordinal)) bad.Add($"{e.Name}: HMMA of the wrong input type");
            // NT reads both operands with ldmatrix, TN both with ldmatrix.trans, NN and TT one of each.
            bool plain = !e.Name.EndsWith("TN>", StringComparison.Ordinal), trans = !e.Name.EndsWith("NT>", StringComparison.Ordinal);
            if (plain != sass.Contains("LDSM.16.M88.4", StringComparison.Ordinal)) bad.Add($"{e.Name}: LDSM.16.M88.4 (ldmatrix.x4) {(plain ? "missing" : "unexpected")}");
            if (trans != sass.Contains("LDSM.16.MT88.4", StringComparison.Ordinal)) bad.Add($"{e.Name}: LDSM.16.MT88.4 (ldmatrix.x4.trans) {(trans ? "missing" : "unexpected")}");
        }
        Assert.That(bad, Is.Empty);
    }

    /// <summary>
    /// Global→shared copies by cp.async (LDGSTS, 16 bytes: LDGSTS.E.BYPASS.LTC128B.128 for .cg) and no global loads at all
    /// besides them: no 2-byte loads (LDG.E.U16, each of which cost ~53 instructions of 64-bit index arithmetic in the
    /// first tensor-core kernel) nor any other LDG.
    /// </summary>
    [Test]
    public void TensorCoreGemms_CopyWithCpAsync_AndNoTwoByteGlobalLoads()
    {
        var bad = new List<string>();
        foreach (var e in _entries.Where(e => e.IsTensorCore))
        {
            if (!_sass.TryGetValue(e.Name, out var sass)) { bad.Add($"{e.Name}: no SASS"); continue; }
            if (!System.Text.RegularExpressions.Regex.IsMatch(sass, @"LDGSTS\.E\.BYPASS(\.\w+)*\.128")) bad.Add($"{e.Name}: no LDGSTS.E.BYPASS...128 (16-byte cp.async.cg)");
            int u16 = CountOf(sass, "LDG.E.U16"), ldg = CountOf(sass, "LDG.");
            if (u16 > 0) bad.Add($"{e.Name}: {u16} LDG.E.U16");
            if (ldg > 0) bad.Add($"{e.Name}: {ldg} global loads (LDG) besides the cp.async copies");
        }
        Assert.That(bad, Is.Empty);
    }

    static bool IsFloat32Simt(KernelEntry e) => e.Family == KernelRegistry.GemmSimt && e.DTypes.Contains(DType.Float32);

    /// <summary>
    /// The float32 SIMT GEMMs read a thread's runs of a and b from shared memory 16 bytes at a time: every shared load
    /// is LDS.128 (not the 2×2 test tiling, whose runs are two long); the tilings that stage four elements of an operand
    /// per thread (BM·BK = 4·threads: the GPU's 128×128×8 and its 64-thread twin 32×32×8) also load contiguous operands
    /// from global memory as LDG.E.128 (ILGPU's ld.global.v4.f32), in the grouped kernel as well. Still no spills and no
    /// stack frame (also checked for every kernel above; here with the registers printed).
    /// </summary>
    [Test]
    public void Float32SimtGemms_Load16BytesAtATime()
    {
        var simt = _entries.Where(IsFloat32Simt).ToList();
        Assert.That(simt, Has.Count.GreaterThanOrEqualTo(4), "the default tilings' Gemm and GemmGrouped at least");
        var bad = new List<string>();
        foreach (var e in simt)
        {
            if (!_sass.TryGetValue(e.Name, out var sass)) { bad.Add($"{e.Name}: no SASS (did not assemble)"); continue; }
            var r = _results[_entries.ToList().IndexOf(e)];
            // Gemm<f32-BMxBNxBK-TMxTN>: the tile sizes from the plan's name.
            var m = System.Text.RegularExpressions.Regex.Match(e.Name, @"f32-(\d+)x(\d+)x(\d+)-(\d+)x(\d+)");
            Assert.That(m.Success, $"{e.Name}: a SIMT plan name of the form f32-BMxBNxBK-TMxTN");
            int bm = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), bn = int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
            int bk = int.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture), tm = int.Parse(m.Groups[4].Value, CultureInfo.InvariantCulture);
            int tn = int.Parse(m.Groups[5].Value, CultureInfo.InvariantCulture), threads = bm / tm * (bn / tn);
            var loads = System.Text.RegularExpressions.Regex.Matches(sass, @"\bLDS(\.\w+)*\s").Select(x => x.Value.Trim()).ToList();
            int wide = loads.Count(x => x == "LDS.128"), ldg128 = CountOf(sass, "LDG.E.128");
            TestContext.Out.WriteLine($"{e.Name}: {r.Registers} registers, {wide} of {loads.Count} shared loads LDS.128, {ldg128} LDG.E.128");
            if (tm >= 4)
            {
                if (wide == 0) bad.Add($"{e.Name}: no LDS.128");
                if (wide != loads.Count) bad.Add($"{e.Name}: {loads.Count - wide} shared loads narrower than 16 bytes ({string.Join(", ", loads.Distinct())})");
            }
            if (bm * bk == 4 * threads && bn * bk == 4 * threads && ldg128 == 0) bad.Add($"{e.Name}: four staged elements per thread but no LDG.E.128");
            if (r.SpillStores + r.SpillLoads != 0 || r.StackFrame != 0) bad.Add($"{e.Name}: {r.SpillStores + r.SpillLoads} bytes of spills, {r.StackFrame} bytes stack frame");
        }
        Assert.That(bad, Is.Empty);
    }

    static int CountOf(string text, string what)
    {
        int n = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal)) n++;
        return n;
    }
}

/// <summary>The parsing of ptxas's report and the occupancy estimate (no tools needed).</summary>
[TestFixture]
public class PtxasReportTests
{
    const string Sample = """
        ptxas info    : 0 bytes gmem
        ptxas info    : Compiling entry function 'Kernel_Softmax' for 'sm_90'
        ptxas info    : Function properties for Kernel_Softmax
            64 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
        ptxas info    : Used 48 registers, 64 bytes cumulative stack size, 400 bytes smem
        ptxas info    : Function properties for Exp_1110747
            16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        """;

    [Test]
    public void Parse_ReadsTheEntryAndSumsSpills()
    {
        var r = Ptxas.Parse(0, Sample);
        Assert.That((r.Registers, r.StackFrame, r.SpillStores, r.SpillLoads, r.SharedBytes, r.CalleeStackFrame), Is.EqualTo((48, 64, 8, 4, 400, 16)));
        Assert.That(r.Assembled);
    }

    [Test]
    public void Occupancy_Sm90_TakesTheTightestLimit()
    {
        // 256 threads: 32 registers → 8 groups (the thread limit); 40 → 6 (registers); 96 → 2.
        Assert.That(Sm90Occupancy.Estimate(32, 0, 256), Is.EqualTo(new Sm90Occupancy(8, 1.0, "threads")));
        Assert.That(Sm90Occupancy.Estimate(34, 0, 256), Is.EqualTo(new Sm90Occupancy(6, 0.75, "registers")));
        Assert.That(Sm90Occupancy.Estimate(96, 8448, 256).GroupsPerSm, Is.EqualTo(2));
        // 64 threads and 9216 bytes of shared memory: 228 KiB / (9216 + 1024) = 22 groups of 2 warps.
        Assert.That(Sm90Occupancy.Estimate(40, 9216, 64), Is.EqualTo(new Sm90Occupancy(22, 44 / 64.0, "shared")));
        Assert.That(Sm90Occupancy.Estimate(11, 0, 1), Is.EqualTo(new Sm90Occupancy(32, 0.5, "groups")));
    }

    const string DepotSample = """
        .entry k(
        )
        {
        	.local .align 4 .b8 __local_depot0[4];
        	.local .align 8 .b8 __local_depot1[8];
        	.reg .b32 %r<9>;
        	.reg .b64 %rd<9>;
        	mov.b64	%rd1, __local_depot0;
        	mov.b64	%rd2, __local_depot1;
        	st.local.f32	[%rd1], 0f00000000;
        	st.local.f32	[%rd1], %f3;
        	st.local.b64	[%rd2], %rd5;
        	ld.local.f32	%f4, [%rd1];
        	ld.local.b64	%rd6, [%rd2];
        	cp.async.cg.shared.global [%r1], [%rd6], 16, %r2;
        	st.local.f32	[%rd1], %f4;
        	ret;
        }
        """;

    /// <summary>ILGPU's inline-asm operand slots become registers in a cp.async module, loads and stores become movs.</summary>
    [Test]
    public void Depots_BecomeRegisters_InCpAsyncModules()
    {
        string p = PtxDepots.Promote(DepotSample);
        Assert.That(p, Does.Not.Contain("__local_depot"));
        Assert.That(p, Does.Not.Contain(".local"));
        Assert.That(p, Does.Contain(".reg .f32 %dp0;"));
        Assert.That(p, Does.Contain(".reg .b64 %dp1;"));
        Assert.That(p, Does.Contain("mov.f32\t%dp0, 0f00000000;"));
        Assert.That(p, Does.Contain("mov.f32\t%f4, %dp0;"));
        Assert.That(p, Does.Contain("mov.b64\t%rd6, %dp1;"));
        Assert.That(p, Does.Contain("cp.async.cg.shared.global [%r1], [%rd6], 16, %r2;"));
    }

    /// <summary>Any slot that is not a plain scalar (its address used otherwise, mixed types) leaves the module as it was; so does a module without cp.async.</summary>
    [Test]
    public void Depots_AreLeftAlone_WhenASlotEscapesOrMixesTypes_OrWithoutCpAsync()
    {
        string plain = DepotSample.Replace("cp.async.cg.shared.global [%r1], [%rd6], 16, %r2;", "add.s32 %r1, %r1, 1;");
        Assert.That(PtxDepots.Promote(plain), Is.EqualTo(plain));
        string escaped = DepotSample.Replace("\tret;", "\tadd.s64 %rd7, %rd1, 4;\n\tret;");
        Assert.That(PtxDepots.Promote(escaped), Is.EqualTo(escaped));
        string mixed = DepotSample.Replace("ld.local.f32\t%f4, [%rd1];", "ld.local.b32\t%r4, [%rd1];");
        Assert.That(PtxDepots.Promote(mixed), Is.EqualTo(mixed));
    }

    /// <summary>The run-time load path's text replacement (PtxCompiler.Promote, by ILGPU's backing field) still works in this ILGPU.</summary>
    [Test]
    public void Promote_ReplacesTheCompiledKernelsText()
    {
        var field = typeof(ILGPU.Backends.PTX.PTXCompiledKernel).GetField("<PTXAssembly>k__BackingField",
            System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic);
        Assert.That(field, Is.Not.Null, "PtxCompiler.Promote replaces the text through this field");
        string ptx = PtxCompiler.Compile(KernelRegistry.Named("Gemm<mma-64x64x32-2x4, f16, TN>"));
        Assert.That(ptx, Does.Contain("cp.async.cg"));
        Assert.That(ptx, Does.Not.Contain("__local_depot"));
    }

    [Test]
    public void Registry_NamesAndFilesAreUnique_AndCoverEveryFamily()
    {
        var all = KernelRegistry.All;
        Assert.That(all.Select(e => e.Name), Is.Unique);
        Assert.That(all.Select(e => e.FileName), Is.Unique);
        Assert.That(all.Select(e => e.Method), Is.Unique);
        Assert.That(all.All(e => !e.Method.ContainsGenericParameters), "every generic kernel has its arguments bound");
        Assert.That(all.Where(e => e.IsTensorCore).Select(e => e.Method.DeclaringType!.GetGenericArguments()[2]),
            Has.None.EqualTo(typeof(Engine.Backends.Cuda.Gemm.EmulatedWarpMma)), "tensor-core entries use the inline PTX, not the emulation");
        Assert.That(KernelRegistry.Named("Gemm<mma-128x128x32-4x8, bf16, NN>").FileName, Is.EqualTo("Gemm_mma-128x128x32-4x8_bf16_NN.ptx"));
    }
}

using System.Diagnostics;
using Engine.Backends.Cpu.Gemm;
using Engine.Backends.Cpu;
using Engine.Backends.Cpu.Jit;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// The bf16 GEMM: the x86-64 emitter's encodings, the generated AVX512_BF16 kernel against a float64 reference and
/// against the float32 fallback, thread-count independence, and the bf16 MatMul op that uses it.
/// </summary>
[TestFixture]
public unsafe class Bf16GemmTests
{
    // ------------------------------------------------------------------ encodings

    private static byte[] Encode(Action<X64Emitter> emit)
    {
        var e = new X64Emitter();
        emit(e);
        return e.ToArray();
    }

    // Expected bytes are from the Intel SDM encoding tables, cross-checked once against GNU as 2.42 (objdump -d).
    private static IEnumerable<TestCaseData> Encodings()
    {
        static TestCaseData Case(string asm, Action<X64Emitter> emit, params byte[] bytes) =>
            new TestCaseData(emit, bytes).SetArgDisplayNames(asm);
        yield return Case("vdpbf16ps zmm0, zmm1, [rax]{1to16}", e => e.VDpBf16Ps(0, 1, new Mem(Gpr.Rax), true), 0x62, 0xF2, 0x76, 0x58, 0x52, 0x00);
        yield return Case("vdpbf16ps zmm23, zmm27, [rdi+20]{1to16}", e => e.VDpBf16Ps(23, 27, new Mem(Gpr.Rdi, 20), true), 0x62, 0xE2, 0x26, 0x50, 0x52, 0x7F, 0x05);
        yield return Case("vdpbf16ps zmm5, zmm26, [rdi+1024]{1to16}", e => e.VDpBf16Ps(5, 26, new Mem(Gpr.Rdi, 1024), true), 0x62, 0xF2, 0x2E, 0x50, 0x52, 0xAF, 0x00, 0x04, 0x00, 0x00);
        yield return Case("vdpbf16ps zmm17, zmm28, zmm9", e => e.VDpBf16Ps(17, 28, 9), 0x62, 0xC2, 0x1E, 0x40, 0x52, 0xC9);
        yield return Case("vdpbf16ps zmm3, zmm4, [r12+128]", e => e.VDpBf16Ps(3, 4, new Mem(Gpr.R12, 128), false), 0x62, 0xD2, 0x5E, 0x48, 0x52, 0x5C, 0x24, 0x02);
        yield return Case("vfmadd231ps zmm23, zmm24, zmm25", e => e.VFmadd231Ps(23, 24, 25), 0x62, 0x82, 0x3D, 0x40, 0xB8, 0xF9);
        yield return Case("vmovups zmm24, [rsi]", e => e.VMovUps(24, new Mem(Gpr.Rsi)), 0x62, 0x61, 0x7C, 0x48, 0x10, 0x06);
        yield return Case("vmovups zmm27, [rsi+192]", e => e.VMovUps(27, new Mem(Gpr.Rsi, 192)), 0x62, 0x61, 0x7C, 0x48, 0x10, 0x5E, 0x03);
        yield return Case("vmovups zmm9, [r13+8192]", e => e.VMovUps(9, new Mem(Gpr.R13, 8192)), 0x62, 0x51, 0x7C, 0x48, 0x10, 0x8D, 0x00, 0x20, 0x00, 0x00);
        yield return Case("vmovups [rdx+64], zmm17", e => e.VMovUps(new Mem(Gpr.Rdx, 64), 17), 0x62, 0xE1, 0x7C, 0x48, 0x11, 0x4A, 0x01);
        yield return Case("vmovaps zmm2, [rbp]", e => e.VMovAps(2, new Mem(Gpr.Rbp)), 0x62, 0xF1, 0x7C, 0x48, 0x28, 0x55, 0x00);
        yield return Case("vaddps zmm19, zmm19, [rdx+128]", e => e.VAddPs(19, 19, new Mem(Gpr.Rdx, 128)), 0x62, 0xE1, 0x64, 0x40, 0x58, 0x5A, 0x02);
        yield return Case("vxorps zmm20, zmm20, zmm20", e => e.VXorPs(20, 20, 20), 0x62, 0xA1, 0x5C, 0x40, 0x57, 0xE4);
        yield return Case("vpxord zmm20, zmm20, zmm20", e => e.VPXorD(20, 20, 20), 0x62, 0xA1, 0x5D, 0x40, 0xEF, 0xE4);
        yield return Case("vpbroadcastd zmm29, [rdi+8]", e => e.VPBroadcastD(29, new Mem(Gpr.Rdi, 8)), 0x62, 0x62, 0x7D, 0x48, 0x58, 0x6F, 0x02);
        yield return Case("add rdi, 24", e => e.Add(Gpr.Rdi, 24), 0x48, 0x83, 0xC7, 0x18);
        yield return Case("add rsi, 1024", e => e.Add(Gpr.Rsi, 1024), 0x48, 0x81, 0xC6, 0x00, 0x04, 0x00, 0x00);
        yield return Case("sub r8, 1", e => e.Sub(Gpr.R8, 1), 0x49, 0x83, 0xE8, 0x01);
        yield return Case("dec rax", e => e.Dec(Gpr.Rax), 0x48, 0xFF, 0xC8);
        yield return Case("dec r8", e => e.Dec(Gpr.R8), 0x49, 0xFF, 0xC8);
        yield return Case("add rdx, rcx", e => e.Add(Gpr.Rdx, Gpr.Rcx), 0x48, 0x01, 0xCA);
        yield return Case("shr rax, 2", e => e.Shr(Gpr.Rax, 2), 0x48, 0xC1, 0xE8, 0x02);
        yield return Case("and r8, 3", e => e.And(Gpr.R8, 3), 0x49, 0x83, 0xE0, 0x03);
        yield return Case("test r8, r8", e => e.Test(Gpr.R8, Gpr.R8), 0x4D, 0x85, 0xC0);
        yield return Case("mov rax, r8", e => e.Mov(Gpr.Rax, Gpr.R8), 0x4C, 0x89, 0xC0);
        yield return Case("push rbx; push r12; pop r15", e => { e.Push(Gpr.Rbx); e.Push(Gpr.R12); e.Pop(Gpr.R15); }, 0x53, 0x41, 0x54, 0x41, 0x5F);
        yield return Case("prefetcht0 [rsi+512]", e => e.PrefetchT0(new Mem(Gpr.Rsi, 512)), 0x0F, 0x18, 0x8E, 0x00, 0x02, 0x00, 0x00);
        yield return Case("vzeroupper; ret", e => { e.VZeroUpper(); e.Ret(); }, 0xC5, 0xF8, 0x77, 0xC3);
    }

    [TestCaseSource(nameof(Encodings))]
    public void Emitter_EncodesLikeTheSdm(object emit, byte[] expected)
    {
        // object: the emitter is internal, and a public test method cannot name it.
        Assert.That(Convert.ToHexString(Encode((Action<X64Emitter>)emit)), Is.EqualTo(Convert.ToHexString(expected)));
    }

    [Test]
    public void Emitter_ResolvesForwardAndBackwardJumps()
    {
        var code = Encode(e =>
        {
            var top = e.NewLabel();
            var end = e.NewLabel();
            e.Bind(top);          // 0
            e.Jz(end);            // 0: 0F 84 rel32 -> end at 12: rel = 12 - 6 = 6
            e.Jnz(top);           // 6: 0F 85 rel32 -> 0: rel = 0 - 12 = -12
            e.Bind(end);
            e.Ret();
        });
        Assert.That(Convert.ToHexString(code), Is.EqualTo("0F8406000000" + "0F85F4FFFFFF" + "C3"));
        Assert.Throws<InvalidOperationException>(() => Encode(e => e.Jmp(e.NewLabel())));
    }

    // ------------------------------------------------------------------ numerics

    /// <summary>How an operand is laid out.</summary>
    public enum Lay { RowMajor, ColMajor, Strided }

    public sealed record Case(int Batch, int M, int N, int K, Lay A, Lay B, bool ABf16, bool BBf16, bool Accumulate);

    private static (long rs, long cs, long size) Strides(Lay l, int rows, int cols) => l switch
    {
        Lay.RowMajor => (cols + 3, 1, (long)rows * (cols + 3)),
        Lay.ColMajor => (1, rows + 1, (long)cols * (rows + 1)),
        _ => (2L * cols + 1, 2, (long)rows * (2L * cols + 1)),
    };

    /// <summary>Operands (float32 values and their bf16 copies) of one case, with per-batch offsets.</summary>
    private sealed class Data
    {
        public float[] A = [], B = [], C0 = [];
        public BFloat16[] ABf = [], BBf = [];
        public long[] AOff = [], BOff = [], COff = [];
        public long Ars, Acs, Brs, Bcs, Crs;
    }

    private static Data Make(Case t, Func<Random, float> value, int seed)
    {
        var rng = new Random(seed);
        var d = new Data();
        (d.Ars, d.Acs, long aSize) = Strides(t.A, t.M, t.K);
        (d.Brs, d.Bcs, long bSize) = Strides(t.B, t.K, t.N);
        d.Crs = t.N + 2;
        d.AOff = new long[t.Batch]; d.BOff = new long[t.Batch]; d.COff = new long[t.Batch];
        for (int b = 0; b < t.Batch; b++)
        {
            d.AOff[b] = 5 + b * (aSize + 7);
            d.BOff[b] = 1 + b * (bSize + 3);
            d.COff[b] = 3 + b * ((long)t.M * d.Crs + 5);
        }
        d.A = Fill(rng, 5 + t.Batch * (aSize + 7), value);
        d.B = Fill(rng, 1 + t.Batch * (bSize + 3), value);
        d.C0 = Fill(rng, 3 + t.Batch * ((long)t.M * d.Crs + 5), value);
        d.ABf = Array.ConvertAll(d.A, x => (BFloat16)x);
        d.BBf = Array.ConvertAll(d.B, x => (BFloat16)x);
        return d;
    }

    private static float[] Fill(Random rng, long n, Func<Random, float> value)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = value(rng);
        return a;
    }

    private static float Uniform(Random r) => (float)(2 * r.NextDouble() - 1);
    private static float SmallInt(Random r) => r.Next(-4, 5);

    private static float[] Run(Case t, Data d, Bf16GemmPath path, int threads)
    {
        var c = (float[])d.C0.Clone();
        using (CpuBackend.UseOptions(CpuBackend.Options with { Bf16Gemm = path }))
        {
            fixed (float* af = d.A, bf = d.B, cp = c)
            fixed (BFloat16* ah = d.ABf, bh = d.BBf)
            {
                if (t.ABf16 && t.BBf16) Bf16Gemm.Gemm(t.Batch, t.M, t.N, t.K, ah, d.AOff, d.Ars, d.Acs, bh, d.BOff, d.Brs, d.Bcs, cp, d.COff, d.Crs, t.Accumulate, threads);
                else if (t.ABf16) Bf16Gemm.Gemm(t.Batch, t.M, t.N, t.K, ah, d.AOff, d.Ars, d.Acs, bf, d.BOff, d.Brs, d.Bcs, cp, d.COff, d.Crs, t.Accumulate, threads);
                else if (t.BBf16) Bf16Gemm.Gemm(t.Batch, t.M, t.N, t.K, af, d.AOff, d.Ars, d.Acs, bh, d.BOff, d.Brs, d.Bcs, cp, d.COff, d.Crs, t.Accumulate, threads);
                else Bf16Gemm.Gemm(t.Batch, t.M, t.N, t.K, af, d.AOff, d.Ars, d.Acs, bf, d.BOff, d.Brs, d.Bcs, cp, d.COff, d.Crs, t.Accumulate, threads);
            }
        }
        return c;
    }

    private static void RequireJit()
    {
        if (Bf16GemmSelection.Kernel is null) Assert.Ignore($"bf16 JIT kernel unavailable here: {Bf16GemmSelection.UnavailableReason}");
    }

    private static readonly int[] Sizes = [1, 3, 17, 33, 64, 127, 250];

    private static IEnumerable<Case> ReferenceCases()
    {
        // Every size on every axis (not the full cube: each size appears with a different partner on each axis).
        for (int x = 0; x < Sizes.Length; x++)
        {
            yield return new Case(1, Sizes[x], Sizes[x], Sizes[x], Lay.RowMajor, Lay.RowMajor, true, true, false);
            yield return new Case(1, Sizes[x], Sizes[(x + 3) % 7], Sizes[(x + 5) % 7], Lay.RowMajor, Lay.ColMajor, false, true, x % 2 == 0);
            yield return new Case(1, Sizes[(x + 2) % 7], Sizes[x], Sizes[(x + 4) % 7], Lay.ColMajor, Lay.RowMajor, true, false, x % 2 == 1);
            yield return new Case(1, Sizes[(x + 6) % 7], Sizes[(x + 1) % 7], Sizes[x], Lay.Strided, Lay.Strided, x % 2 == 0, x % 3 == 0, false);
        }
        yield return new Case(3, 33, 65, 127, Lay.RowMajor, Lay.ColMajor, true, true, false);
        yield return new Case(4, 17, 250, 64, Lay.RowMajor, Lay.RowMajor, false, false, true);
        yield return new Case(2, 250, 127, 300, Lay.RowMajor, Lay.ColMajor, false, true, false); // two k-blocks, odd tail
        yield return new Case(1, 7, 129, 513, Lay.RowMajor, Lay.RowMajor, true, false, true);   // three k-blocks
    }

    [TestCaseSource(nameof(ReferenceCases))]
    public void Jit_MatchesFloat64OfBf16RoundedOperands(Case t)
    {
        RequireJit();
        var d = Make(t, Uniform, t.M * 31 + t.N * 7 + t.K);
        var c = Run(t, d, Bf16GemmPath.Jit, 2);
        var covered = new bool[c.Length];
        int bad = 0;
        double worst = 0;
        string first = "";
        for (int b = 0; b < t.Batch; b++)
            for (int i = 0; i < t.M; i++)
                for (int j = 0; j < t.N; j++)
                {
                    double sum = 0, abs = 0;
                    for (int p = 0; p < t.K; p++)
                    {
                        double x = (double)(float)d.ABf[d.AOff[b] + i * d.Ars + p * d.Acs] * (float)d.BBf[d.BOff[b] + p * d.Brs + j * d.Bcs];
                        sum += x;
                        abs += Math.Abs(x);
                    }
                    long at = d.COff[b] + i * d.Crs + j;
                    covered[at] = true;
                    double c0 = t.Accumulate ? d.C0[at] : 0;
                    // Operands are exact bf16 values and their products exact in float32, so the only error is the
                    // float32 summation: K roundings inside vdpbf16ps (two per pair) plus one per k-block added into
                    // C. Recursive summation of n terms errs by at most about n * 2^-24 * sum|terms| (Higham, 4.4).
                    int roundings = t.K + t.K / 256 + 2;
                    double bound = roundings * Math.Pow(2, -24) * (abs + Math.Abs(c0)) + 1e-30;
                    double err = Math.Abs(c[at] - (c0 + sum));
                    worst = Math.Max(worst, err / bound);
                    if (err > bound && bad++ == 0) first = $"[{b},{i},{j}] got {c[at]} want {c0 + sum} (bound {bound})";
                }
        for (int x = 0; x < c.Length; x++)
            if (!covered[x] && BitConverter.SingleToInt32Bits(c[x]) != BitConverter.SingleToInt32Bits(d.C0[x]) && bad++ == 0) first = $"wrote outside C at {x}";
        Assert.That(bad, Is.Zero, first);
        TestContext.Out.WriteLine($"worst error / bound = {worst:F4}");
    }

    private static IEnumerable<Case> ExactCases()
    {
        foreach (int s in Sizes)
        {
            int k = Math.Min(s, 64);
            yield return new Case(1, s, s, k, Lay.RowMajor, Lay.RowMajor, true, true, false);
            yield return new Case(2, s, 130 - s % 7, k, Lay.ColMajor, Lay.ColMajor, false, true, true);
            yield return new Case(1, 250 - s, s, 64 - k / 2, Lay.Strided, Lay.RowMajor, true, false, s % 2 == 0);
        }
    }

    [TestCaseSource(nameof(ExactCases))]
    public void Jit_IsBitIdenticalToFallback_WhenEverySumIsExact(Case t)
    {
        // Integers in [-4, 4], k <= 64: |partial sums| <= 64 * 16 + 4, exact in float32 whatever the order.
        RequireJit();
        var d = Make(t, SmallInt, t.M + t.N + t.K);
        var jit = Run(t, d, Bf16GemmPath.Jit, 2);
        var fallback = Run(t, d, Bf16GemmPath.Fallback, 2);
        Assert.That(jit, Is.EqualTo(fallback));
    }

    [Test]
    public void Microkernel_VariantsAgreeBitForBit()
    {
        // Both variants issue the same vdpbf16ps per accumulator in the same order; only the broadcast differs.
        RequireJit();
        var rng = new Random(3);
        const int kp = 37; // 9 unrolled iterations + 1 tail pair
        var a = new uint[kp * Bf16Microkernel.MR];
        var b = new uint[kp * Bf16Microkernel.NR];
        for (int i = 0; i < a.Length; i++) a[i] = (uint)((BFloat16)Uniform(rng)).Bits | (uint)((BFloat16)Uniform(rng)).Bits << 16;
        for (int i = 0; i < b.Length; i++) b[i] = (uint)((BFloat16)Uniform(rng)).Bits | (uint)((BFloat16)Uniform(rng)).Bits << 16;
        var results = new List<float[]>();
        foreach (var kind in new[] { Bf16Microkernel.Variant.EmbeddedBroadcast, Bf16Microkernel.Variant.RegisterBroadcast })
        {
            using var k = Bf16Microkernel.TryCreate(kind, out var err) ?? throw new InvalidOperationException(err);
            var c = new float[Bf16Microkernel.MR * Bf16Microkernel.NR];
            fixed (uint* ap = a, bp = b)
            fixed (float* cp = c)
            {
                k.Store(ap, bp, cp, Bf16Microkernel.NR * 4, kp);
                k.Accumulate(ap, bp, cp, Bf16Microkernel.NR * 4, kp); // c = 2 * product, exactly
            }
            results.Add(c);
        }
        Assert.That(results[1], Is.EqualTo(results[0]));
        // And the tile is the product: spot-check against float64 (bf16 pairs, low half first).
        for (int i = 0; i < Bf16Microkernel.MR; i++)
            for (int j = 0; j < Bf16Microkernel.NR; j += 21)
            {
                double sum = 0, abs = 0;
                for (int q = 0; q < kp; q++)
                {
                    uint x = a[q * Bf16Microkernel.MR + i], y = b[q * Bf16Microkernel.NR + j];
                    double lo = (double)(float)BFloat16.FromBits((ushort)x) * (float)BFloat16.FromBits((ushort)y);
                    double hi = (double)(float)BFloat16.FromBits((ushort)(x >> 16)) * (float)BFloat16.FromBits((ushort)(y >> 16));
                    sum += lo + hi; abs += Math.Abs(lo) + Math.Abs(hi);
                }
                Assert.That(Math.Abs(results[0][i * Bf16Microkernel.NR + j] - 2 * sum), Is.LessThanOrEqualTo(2 * (2 * kp + 2) * Math.Pow(2, -24) * abs));
            }
    }

    [Test]
    public void Jit_ResultDoesNotDependOnThreadCount()
    {
        RequireJit();
        var t = new Case(3, 250, 333, 300, Lay.RowMajor, Lay.ColMajor, false, true, true);
        var d = Make(t, Uniform, 11);
        var one = Run(t, d, Bf16GemmPath.Jit, 1);
        foreach (int threads in new[] { 2, 3, 5 })
            Assert.That(Run(t, d, Bf16GemmPath.Jit, threads), Is.EqualTo(one), $"threads {threads}");
    }

    [Test]
    public void Fallback_MatchesFloat64WithinFmaBound()
    {
        var t = new Case(2, 33, 70, 129, Lay.RowMajor, Lay.ColMajor, false, true, false);
        var d = Make(t, Uniform, 5);
        var c = Run(t, d, Bf16GemmPath.Fallback, 2);
        for (int b = 0; b < t.Batch; b++)
            for (int i = 0; i < t.M; i++)
                for (int j = 0; j < t.N; j++)
                {
                    double sum = 0, abs = 0;
                    for (int p = 0; p < t.K; p++)
                    {
                        double x = (double)(float)d.ABf[d.AOff[b] + i * d.Ars + p * d.Acs] * (float)d.BBf[d.BOff[b] + p * d.Brs + j * d.Bcs];
                        sum += x; abs += Math.Abs(x);
                    }
                    double got = c[d.COff[b] + i * d.Crs + j];
                    Assert.That(Math.Abs(got - sum), Is.LessThanOrEqualTo((t.K + 2) * Math.Pow(2, -24) * abs + 1e-30));
                }
    }

    [Test]
    public void Bf16Output_RoundsOnceOnStore()
    {
        // Same product into a float32 C and into a bf16 C (accumulating onto bf16 values): the bf16 result must be
        // exactly the float32 one rounded to nearest even.
        foreach (var path in new[] { Bf16GemmPath.Jit, Bf16GemmPath.Fallback })
        {
            if (path == Bf16GemmPath.Jit && Bf16GemmSelection.Kernel is null) continue;
            var t = new Case(2, 19, 70, 40, Lay.RowMajor, Lay.RowMajor, true, false, true);
            var d = Make(t, Uniform, 9);
            for (int x = 0; x < d.C0.Length; x++) d.C0[x] = (float)(BFloat16)d.C0[x];
            var wide = Run(t, d, path, 2);
            var narrow = Array.ConvertAll(d.C0, x => (BFloat16)x);
            using (CpuBackend.UseOptions(CpuBackend.Options with { Bf16Gemm = path }))
            {
                fixed (BFloat16* ah = d.ABf, cp = narrow)
                fixed (float* bf = d.B)
                    Bf16Gemm.Gemm(t.Batch, t.M, t.N, t.K, ah, d.AOff, d.Ars, d.Acs, bf, d.BOff, d.Brs, d.Bcs, cp, d.COff, d.Crs, true, 2);
            }
            Assert.That(Array.ConvertAll(narrow, x => x.Bits), Is.EqualTo(Array.ConvertAll(wide, x => ((BFloat16)x).Bits)), path.ToString());
        }
    }

    [Test]
    public void Selection_HonoursEnvironmentAndForcing()
    {
        Assert.That(Bf16GemmSelection.ParseSwitch("0"), Is.False);
        Assert.That(Bf16GemmSelection.ParseSwitch(" OFF "), Is.False);
        Assert.That(Bf16GemmSelection.ParseSwitch("false"), Is.False);
        Assert.That(Bf16GemmSelection.ParseSwitch("1"), Is.True);
        Assert.That(Bf16GemmSelection.ParseSwitch("Yes"), Is.True);
        Assert.That(Bf16GemmSelection.ParseSwitch(null), Is.Null);
        Assert.That(Bf16GemmSelection.ParseSwitch("maybe"), Is.Null);
        using (CpuBackend.UseOptions(CpuBackend.Options with { Bf16Gemm = Bf16GemmPath.Fallback }))
            Assert.That(Bf16Gemm.IsAccelerated, Is.False);
        Assert.That(CpuBackend.DefaultOptions.Bf16Gemm, Is.EqualTo(CpuBackendOptions.FromEnvironment().Bf16Gemm), "the environment sets the default");
        if (Bf16GemmSelection.Kernel is null)
            Assert.Throws<NotSupportedException>(() => _ = CpuBackend.Options with { Bf16Gemm = Bf16GemmPath.Jit });
        bool expected = (Bf16GemmSelection.EnvironmentChoice ?? Bf16GemmSelection.JitByDefault) && Bf16GemmSelection.Kernel is not null;
        Assert.That(Bf16Gemm.IsAccelerated, Is.EqualTo(expected));
        if (File.Exists("/proc/cpuinfo") && File.ReadAllText("/proc/cpuinfo").Contains(" avx512_bf16 ") && System.Runtime.Intrinsics.X86.Avx512BW.IsSupported)
            Assert.That(CpuFeatures.HasAvx512Bf16, Is.True, "CPUID disagrees with /proc/cpuinfo");
    }

    [TestCase("0")]
    [TestCase("1")]
    public void EnvironmentSwitch_IsHonouredInAChildProcess(string value)
    {
        // ENGINE_CPU_JIT is read once per process, so each setting is checked in a child process running the probe.
        if (value == "1") RequireJit();
        string self = typeof(Bf16GemmTests).Assembly.Location;
        var psi = new ProcessStartInfo("dotnet", $"\"{self}\" --filter \"FullyQualifiedName~Bf16GemmTests.EnvironmentSwitch_Probe\"")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.Environment["ENGINE_CPU_JIT"] = value;
        psi.Environment["ENGINE_BF16_PROBE"] = value;
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.Zero, output);
        Assert.That(output, Does.Contain("succeeded: 1"), output);
    }

    [Test]
    public void EnvironmentSwitch_Probe()
    {
        string? expected = Environment.GetEnvironmentVariable("ENGINE_BF16_PROBE");
        if (expected is null) Assert.Ignore("runs only inside EnvironmentSwitch_IsHonouredInAChildProcess");
        Assert.That(Bf16GemmSelection.EnvironmentChoice, Is.EqualTo(expected == "1"));
        Assert.That(Bf16Gemm.IsAccelerated, Is.EqualTo(expected == "1"));
        // The MatMul op follows the switch too; its result is the same either way on exact inputs.
        using var a = Tensor.FromArray(new float[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        using var b = Tensor.FromArray(new float[] { 1, -1, 2, 0, -2, 3 }, [3, 2]);
        using var ha = a.To(DType.BFloat16);
        using var hb = b.To(DType.BFloat16);
        using var y = ha.MatMul(hb);
        Assert.That(Array.ConvertAll(y.ToArray<BFloat16>(), v => (float)v), Is.EqualTo(new float[] { -1, 8, 2, 14 }));
    }

    // ------------------------------------------------------------------ the MatMul op

    [TestCase(1, 37, 70, 129)]
    [TestCase(3, 64, 64, 64)]
    public void MatMulOp_OnBf16Tensors_MatchesFloat64(int batch, int m, int n, int k)
    {
        var rng = new Random(m + n + k);
        var a = Fill(rng, (long)batch * m * k, Uniform);
        var b = Fill(rng, (long)k * n, Uniform);
        var results = new List<ushort[]>();
        foreach (var path in new[] { Bf16GemmPath.Jit, Bf16GemmPath.Fallback })
        {
            if (path == Bf16GemmPath.Jit && Bf16GemmSelection.Kernel is null) continue;
            using (CpuBackend.UseOptions(CpuBackend.Options with { Bf16Gemm = path }))
            {
                using var ta = Tensor.FromArray(a, [batch, m, k]);
                using var tb = Tensor.FromArray(b, [k, n]);
                using var ha = ta.To(DType.BFloat16);
                using var hb = tb.To(DType.BFloat16);
                using var hbt = hb.T.Contiguous().T; // a column-major B: the transposed-weight packing path
                using var y = ha.MatMul(hbt);
                Assert.That(y.DType, Is.EqualTo(DType.BFloat16));
                var got = y.ToArray<BFloat16>();
                for (int x = 0; x < batch; x++)
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++)
                        {
                            double sum = 0, abs = 0;
                            for (int p = 0; p < k; p++)
                            {
                                double v = (double)(float)(BFloat16)a[(x * m + i) * k + p] * (float)(BFloat16)b[p * n + j];
                                sum += v; abs += Math.Abs(v);
                            }
                            // One bf16 rounding of the result (8 significant bits: half an ulp is at most 2^-8 relative) on top of
                            // the float32 sum's error.
                            double tol = Math.Pow(2, -8) * Math.Abs(sum) + (k + 2) * Math.Pow(2, -24) * abs * 1.01 + 1e-30;
                            float g = (float)got[(x * m + i) * n + j];
                            Assert.That(Math.Abs(g - sum), Is.LessThanOrEqualTo(tol), $"{path} [{x},{i},{j}]");
                        }
                results.Add(Array.ConvertAll(got, v => v.Bits));
                if (path == Bf16GemmPath.Fallback)
                {
                    // The fallback is the CPU backend's old bf16 MatMul: widen, multiply in float32, round once.
                    using var wa = ha.To(DType.Float32);
                    using var wb = hbt.To(DType.Float32);
                    using var wy = wa.MatMul(wb);
                    using var old = wy.To(DType.BFloat16);
                    Assert.That(Array.ConvertAll(got, v => v.Bits), Is.EqualTo(Array.ConvertAll(old.ToArray<BFloat16>(), v => v.Bits)));
                }
            }
        }
        if (results.Count == 1) Assert.Ignore("only the fallback could run here");
    }

    // ------------------------------------------------------------------ throughput (manual)

    [Test, Explicit("timing; run alone on a quiet machine")]
    public void Throughput_1024Cubed_VersusSgemm()
    {
        RequireJit();
        const int n = 1024;
        var rng = new Random(1);
        var af = Fill(rng, (long)n * n, Uniform);
        var bf = Fill(rng, (long)n * n, Uniform);
        var ah = Array.ConvertAll(af, x => (BFloat16)x);
        var bh = Array.ConvertAll(bf, x => (BFloat16)x);
        var c = new float[(long)n * n];
        long[] zero = [0];
        double flops = 2.0 * n * n * n;
        using var jit = CpuBackend.UseOptions(CpuBackend.Options with { Bf16Gemm = Bf16GemmPath.Jit });
        fixed (float* a32 = af, b32 = bf, cp = c)
        fixed (BFloat16* a16 = ah, b16 = bh)
        {
            var a16p = a16; var b16p = b16; var a32p = a32; var b32p = b32; var cpp = cp;
            foreach (int threads in new[] { 1, 2 })
            {
                double sg = Median(() => Sgemm.Gemm(1, n, n, n, a32p, zero, n, 1, b32p, zero, n, 1, cpp, zero, n, false, threads));
                double bg = Median(() => Bf16Gemm.Gemm(1, n, n, n, a16p, zero, n, 1, b16p, zero, n, 1, cpp, zero, n, false, threads));
                double bt = Median(() => Bf16Gemm.Gemm(1, n, n, n, a16p, zero, n, 1, b16p, zero, 1, n, cpp, zero, n, false, threads));
                double mixed = Median(() => Bf16Gemm.Gemm(1, n, n, n, a32p, zero, n, 1, b32p, zero, 1, n, cpp, zero, n, false, threads));
                double fb;
                using (CpuBackend.UseOptions(CpuBackend.Options with { Bf16Gemm = Bf16GemmPath.Fallback }))
                    fb = Median(() => Bf16Gemm.Gemm(1, n, n, n, a16p, zero, n, 1, b16p, zero, n, 1, cpp, zero, n, false, threads));
                TestContext.Out.WriteLine($"threads {threads}: sgemm {flops / sg / 1e9:F0} GFLOP/s, bf16 JIT NN {flops / bg / 1e9:F0}, " +
                    $"JIT NT {flops / bt / 1e9:F0}, JIT f32->bf16 NT {flops / mixed / 1e9:F0}, fallback NN {flops / fb / 1e9:F0}  (JIT/sgemm {sg / bg:F2}x)");
            }
        }
    }

    [Test, Explicit("timing; run alone on a quiet machine")]
    public void Throughput_RegisterOnlyPeak_VdpVersusFma()
    {
        // Independent accumulator chains, no memory: 24 chains measure the issue rate, 1 chain the latency.
        // Sources are zeroed first (no NaN/denormal surprises from whatever the caller left in zmm24/25).
        static double Rate(bool bf16, int chains)
        {
            var e = new X64Emitter();
            var top = e.NewLabel();
            for (int r = 0; r < 26; r++) e.VPXorD(r, r, r);
            e.Bind(top);
            for (int r = 0; r < 24; r++)
                if (bf16) e.VDpBf16Ps(r % chains, 24, 25); else e.VFmadd231Ps(r % chains, 24, 25);
            e.Dec(Gpr.Rdi);
            e.Jnz(top);
            e.VZeroUpper();
            e.Ret();
            using var mem = ExecutableMemory.TryCreate(e.ToArray(), out var err) ?? throw new InvalidOperationException(err);
            var f = (delegate* unmanaged<long, void>)mem.Pointer;
            long iters = chains == 1 ? 200_000 : 2_000_000;
            f(iters / 10);
            var t = new double[7];
            for (int i = 0; i < t.Length; i++)
            {
                long s = Stopwatch.GetTimestamp();
                f(iters);
                t[i] = Stopwatch.GetElapsedTime(s).TotalSeconds;
            }
            Array.Sort(t);
            return 24.0 * iters / t[3] / 1e9; // instructions per ns
        }
        RequireJit();
        for (int rep = 0; rep < 3; rep++)
        {
            double fma = Rate(false, 24), dp = Rate(true, 24), fmaLat = Rate(false, 1), dpLat = Rate(true, 1);
            TestContext.Out.WriteLine($"one core: vfmadd231ps {fma:F2}/ns = {fma * 32:F0} GFLOP/s, vdpbf16ps {dp:F2}/ns = {dp * 64:F0} GFLOP/s; " +
                $"latency ratio vdpbf16ps/vfmadd231ps {fmaLat / dpLat:F2}");
        }
    }

    [Test, Explicit("timing; run alone on a quiet machine")]
    public void Throughput_MicrokernelInL1()
    {
        RequireJit();
        foreach (var kind in new[] { Bf16Microkernel.Variant.EmbeddedBroadcast, Bf16Microkernel.Variant.RegisterBroadcast })
        {
            using var k = Bf16Microkernel.TryCreate(kind, out var err) ?? throw new InvalidOperationException(err);
            const int kp = 128;
            var a = new uint[kp * 6];
            var b = new uint[kp * 64];
            var c = new float[6 * 64];
            Array.Fill(a, 0x3F803F80u);
            Array.Fill(b, 0x3F803F80u);
            fixed (uint* ap = a, bp = b)
            fixed (float* cp = c)
            {
                const int calls = 20000;
                var t = new double[7];
                for (int i = 0; i < t.Length; i++)
                {
                    long s = Stopwatch.GetTimestamp();
                    for (int x = 0; x < calls; x++) k.Store(ap, bp, cp, 256, kp);
                    t[i] = Stopwatch.GetElapsedTime(s).TotalSeconds;
                }
                Array.Sort(t);
                double flops = 2.0 * 6 * 64 * 2 * kp * calls;
                TestContext.Out.WriteLine($"{kind}: {flops / t[3] / 1e9:F0} GFLOP/s one core (tile 6x64, {kp} k-pairs, L1-resident)");
            }
        }
    }

    private static double Median(Action f)
    {
        for (int i = 0; i < 3; i++) f();
        var t = new double[11];
        for (int i = 0; i < t.Length; i++)
        {
            long s = Stopwatch.GetTimestamp();
            f();
            t[i] = Stopwatch.GetElapsedTime(s).TotalSeconds;
        }
        Array.Sort(t);
        return t[t.Length / 2];
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Engine.Backends.Cpu.Jit;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// Batched, strided matrix multiply with bfloat16 products and float32 sums: A and B are float32 or
/// <see cref="BFloat16"/> (float32 operands are rounded to bf16, to nearest even, while they are packed, so a float32
/// master weight needs no separate cast pass), C is float32 or bfloat16 (rounded once on store).
/// With <c>ENGINE_CPU_JIT=1</c> on a CPU with AVX512_BF16 it runs a micro-kernel generated at run time around
/// <c>vdpbf16ps</c> (two bf16 products per float32 lane); otherwise, the default because on the CPUs measured so far
/// vdpbf16ps has half the flop rate of float32 FMA, it widens the rounded operands to float32 and calls
/// <see cref="Sgemm"/>. Results do not depend on the thread count.
/// </summary>
/// <remarks>
/// The two paths agree exactly whenever every partial sum is exact in float32 (e.g. small integers). Otherwise they
/// differ by float32 rounding only: vdpbf16ps rounds after each of its two products (odd k first), treats bf16
/// subnormal inputs as zero and flushes subnormal results, where the fallback uses one FMA per k with IEEE subnormals.
/// </remarks>
public static unsafe class Bf16Gemm
{
    // Blocking for the 6 x 64 tile. A k-block of KC = 256 (128 pairs) makes a B micro-panel 128 x 256 bytes = 32 KiB,
    // which stays in the 48 KiB L1D across the row panels; an A block of MC x KC is 192 x 512 bytes = 96 KiB (L2);
    // a B block of NC x KC is 2048 x 512 bytes = 1 MiB (L2/L3). KC must be even so blocks start on a k-pair.
    private const int MR = Bf16Microkernel.MR, NR = Bf16Microkernel.NR;
    private const int KC = 256, MC = 192, NC = 2048;
    /// <summary>Minimum multiply-adds that justify one more worker thread (as in the float32 driver).</summary>
    private const long MinWorkPerThread = 1L << 19;

    /// <summary>Whether calls from this thread run the generated AVX512_BF16 kernel (else the float32 fallback).</summary>
    public static bool IsAccelerated => Bf16GemmSelection.UseJit;

    /// <summary>
    /// C[b][i,j] (+)= sum_k bf16(A[b][i,k]) * bf16(B[b][k,j]) in float32, for b in [0, <paramref name="batch"/>). Layout
    /// as <see cref="Sgemm.Gemm"/>: A element (i,k) of batch b is at <c>a + aOffsets[b] + i*aRowStride + k*aColStride</c>
    /// (strides in elements, any values), the same for B; C element (i,j) at <c>c + cOffsets[b] + i*cRowStride + j</c>.
    /// </summary>
    /// <typeparam name="TA">float or <see cref="BFloat16"/>.</typeparam>
    /// <typeparam name="TB">float or <see cref="BFloat16"/>.</typeparam>
    /// <param name="batch">Number of independent products.</param>
    /// <param name="m">Rows of A and C.</param>
    /// <param name="n">Columns of B and C.</param>
    /// <param name="k">Columns of A, rows of B.</param>
    /// <param name="a">Base pointer of A.</param>
    /// <param name="aOffsets">Per-batch element offsets of A.</param>
    /// <param name="aRowStride">Element stride between rows of A.</param>
    /// <param name="aColStride">Element stride between columns of A.</param>
    /// <param name="b">Base pointer of B.</param>
    /// <param name="bOffsets">Per-batch element offsets of B.</param>
    /// <param name="bRowStride">Element stride between rows of B.</param>
    /// <param name="bColStride">Element stride between columns of B.</param>
    /// <param name="c">Base pointer of C (float32).</param>
    /// <param name="cOffsets">Per-batch element offsets of C.</param>
    /// <param name="cRowStride">Element stride between rows of C.</param>
    /// <param name="accumulate">False overwrites C; true adds the product to it.</param>
    /// <param name="maxThreads">Worker limit; 0 or less means <see cref="Environment.ProcessorCount"/>.</param>
    public static void Gemm<TA, TB>(int batch, int m, int n, int k,
        TA* a, ReadOnlySpan<long> aOffsets, long aRowStride, long aColStride,
        TB* b, ReadOnlySpan<long> bOffsets, long bRowStride, long bColStride,
        float* c, ReadOnlySpan<long> cOffsets, long cRowStride,
        bool accumulate, int maxThreads)
        where TA : unmanaged where TB : unmanaged
    {
        CheckOperand<TA>(nameof(a));
        CheckOperand<TB>(nameof(b));
        GemmKernelSelection.Validate(batch, m, n, k, aOffsets.Length, bOffsets.Length, cOffsets.Length);
        if (batch == 0 || m == 0 || n == 0) return;
        fixed (long* ao = aOffsets, bo = bOffsets, co = cOffsets)
        {
            var p = new Problem
            {
                Batch = batch, M = m, N = n, K = k,
                A = a, AOffsets = ao, ARowStride = aRowStride, AColStride = aColStride, ABf16 = typeof(TA) == typeof(BFloat16),
                B = b, BOffsets = bo, BRowStride = bRowStride, BColStride = bColStride, BBf16 = typeof(TB) == typeof(BFloat16),
                C = c, COffsets = co, CRowStride = cRowStride, Accumulate = accumulate,
            };
            if (k == 0) { if (!accumulate) ZeroC(p); return; }
            var kernel = Bf16GemmSelection.UseJit ? Bf16GemmSelection.Kernel : null;
            if (kernel is null) Fallback(p, maxThreads);
            else Packed(p, kernel, maxThreads);
        }
    }

    /// <summary>
    /// As the float32-output overload, with a bfloat16 C: the product (plus C when <paramref name="accumulate"/>) is
    /// summed in float32 and rounded to bf16 once, on store.
    /// </summary>
    /// <typeparam name="TA">float or <see cref="BFloat16"/>.</typeparam>
    /// <typeparam name="TB">float or <see cref="BFloat16"/>.</typeparam>
    /// <param name="batch">Number of independent products.</param>
    /// <param name="m">Rows of A and C.</param>
    /// <param name="n">Columns of B and C.</param>
    /// <param name="k">Columns of A, rows of B.</param>
    /// <param name="a">Base pointer of A.</param>
    /// <param name="aOffsets">Per-batch element offsets of A.</param>
    /// <param name="aRowStride">Element stride between rows of A.</param>
    /// <param name="aColStride">Element stride between columns of A.</param>
    /// <param name="b">Base pointer of B.</param>
    /// <param name="bOffsets">Per-batch element offsets of B.</param>
    /// <param name="bRowStride">Element stride between rows of B.</param>
    /// <param name="bColStride">Element stride between columns of B.</param>
    /// <param name="c">Base pointer of C (bfloat16).</param>
    /// <param name="cOffsets">Per-batch element offsets of C.</param>
    /// <param name="cRowStride">Element stride between rows of C.</param>
    /// <param name="accumulate">False overwrites C; true adds the product to it.</param>
    /// <param name="maxThreads">Worker limit; 0 or less means <see cref="Environment.ProcessorCount"/>.</param>
    public static void Gemm<TA, TB>(int batch, int m, int n, int k,
        TA* a, ReadOnlySpan<long> aOffsets, long aRowStride, long aColStride,
        TB* b, ReadOnlySpan<long> bOffsets, long bRowStride, long bColStride,
        BFloat16* c, ReadOnlySpan<long> cOffsets, long cRowStride,
        bool accumulate, int maxThreads)
        where TA : unmanaged where TB : unmanaged
    {
        GemmKernelSelection.Validate(batch, m, n, k, aOffsets.Length, bOffsets.Length, cOffsets.Length);
        if (batch == 0 || m == 0 || n == 0) return;
        if (!Bf16GemmSelection.UseJit && !Sgemm.PrefersCopies(m, n, k))
        {
            // The widening float32 GEMM sums each block of C in float32 and rounds it once: no float32 copy of C.
            Sgemm.GemmWidening(batch, m, n, k, a, KindOf<TA>(), aOffsets, aRowStride, aColStride, b, KindOf<TB>(), bOffsets, bRowStride, bColStride,
                c, GemmElement.BFloat16, cOffsets, cRowStride, accumulate, maxThreads, default);
            return;
        }
        // A dense float32 C, so that k-blocks accumulate in float32 and rounding to bf16 happens once at the end.
        long size = (long)m * n;
        float* wide = (float*)NativeMemory.AlignedAlloc((nuint)(batch * size * sizeof(float)), 64);
        try
        {
            var offsets = new long[batch];
            for (int i = 0; i < batch; i++)
            {
                offsets[i] = i * size;
                if (!accumulate) continue;
                for (int r = 0; r < m; r++)
                    BFloat16.ConvertToSingle(new ReadOnlySpan<BFloat16>(c + cOffsets[i] + r * cRowStride, n), new Span<float>(wide + offsets[i] + r * n, n));
            }
            Gemm(batch, m, n, k, a, aOffsets, aRowStride, aColStride, b, bOffsets, bRowStride, bColStride,
                wide, offsets, n, accumulate, maxThreads);
            for (int i = 0; i < batch; i++)
                for (int r = 0; r < m; r++)
                    BFloat16.ConvertFromSingle(new ReadOnlySpan<float>(wide + offsets[i] + r * n, n), new Span<BFloat16>(c + cOffsets[i] + r * cRowStride, n));
        }
        finally { NativeMemory.AlignedFree(wide); }
    }

    // A float32 operand of a bf16 GEMM is rounded to bf16 first.
    private static GemmElement KindOf<T>() => typeof(T) == typeof(BFloat16) ? GemmElement.BFloat16 : GemmElement.Float32AsBf16;

    private static void CheckOperand<T>(string name)
    {
        if (typeof(T) != typeof(float) && typeof(T) != typeof(BFloat16))
            throw new NotSupportedException($"Bf16Gemm: operand {name} must be float or BFloat16, not {typeof(T).Name}.");
    }

    /// <summary>The operands of one call; A and B are float32 or bf16 as the flags say.</summary>
    private struct Problem
    {
        public int Batch, M, N, K;
        public void* A; public long* AOffsets; public long ARowStride, AColStride; public bool ABf16;
        public void* B; public long* BOffsets; public long BRowStride, BColStride; public bool BBf16;
        public float* C; public long* COffsets; public long CRowStride;
        public bool Accumulate;
    }

    private static void ZeroC(in Problem p)
    {
        for (int b = 0; b < p.Batch; b++)
            for (int i = 0; i < p.M; i++) new Span<float>(p.C + p.COffsets[b] + i * p.CRowStride, p.N).Clear();
    }

    // ------------------------------------------------------------------ fallback: bf16-rounded float32 + Sgemm

    /// <summary>
    /// The pre-JIT path: operands rounded to bf16 and widened (exactly) to dense float32, then <see cref="Sgemm"/>.
    /// For bf16 x bf16 this is what the CPU backend always did for a bf16 MatMul.
    /// </summary>
    private static void Fallback(in Problem p, int maxThreads)
    {
        if (!Sgemm.PrefersCopies(p.M, p.N, p.K))
        {
            // Large enough to pack: widen while packing, as the copies below would, without them.
            Sgemm.GemmWidening(p.Batch, p.M, p.N, p.K,
                p.A, p.ABf16 ? GemmElement.BFloat16 : GemmElement.Float32AsBf16, new ReadOnlySpan<long>(p.AOffsets, p.Batch), p.ARowStride, p.AColStride,
                p.B, p.BBf16 ? GemmElement.BFloat16 : GemmElement.Float32AsBf16, new ReadOnlySpan<long>(p.BOffsets, p.Batch), p.BRowStride, p.BColStride,
                p.C, GemmElement.Float32, new ReadOnlySpan<long>(p.COffsets, p.Batch), p.CRowStride, p.Accumulate, maxThreads, default);
            return;
        }
        long aSize = (long)p.M * p.K, bSize = (long)p.K * p.N;
        float* aw = (float*)NativeMemory.AlignedAlloc((nuint)(p.Batch * aSize * sizeof(float)), 64);
        float* bw = (float*)NativeMemory.AlignedAlloc((nuint)(p.Batch * bSize * sizeof(float)), 64);
        try
        {
            var ao = new long[p.Batch];
            var bo = new long[p.Batch];
            var co = new long[p.Batch];
            for (int i = 0; i < p.Batch; i++)
            {
                ao[i] = i * aSize; bo[i] = i * bSize; co[i] = p.COffsets[i];
                Widen(p.M, p.K, p.A, p.ABf16, p.AOffsets[i], p.ARowStride, p.AColStride, aw + ao[i]);
                Widen(p.K, p.N, p.B, p.BBf16, p.BOffsets[i], p.BRowStride, p.BColStride, bw + bo[i]);
            }
            Sgemm.Gemm(p.Batch, p.M, p.N, p.K, aw, ao, p.K, 1, bw, bo, p.N, 1, p.C, co, p.CRowStride, p.Accumulate, maxThreads);
        }
        finally
        {
            NativeMemory.AlignedFree(aw);
            NativeMemory.AlignedFree(bw);
        }
    }

    private static void Widen(int rows, int cols, void* src, bool bf16, long offset, long rs, long cs, float* dst)
    {
        // Contiguous rows take the vectorized conversions (bit-identical to the scalar casts); others go one by one.
        BFloat16[]? staging = cs == 1 && !bf16 ? new BFloat16[cols] : null;
        for (int i = 0; i < rows; i++)
        {
            long at = offset + i * rs;
            var row = new Span<float>(dst + (long)i * cols, cols);
            if (cs == 1 && bf16)
            {
                BFloat16.ConvertToSingle(new ReadOnlySpan<BFloat16>((BFloat16*)src + at, cols), row);
                continue;
            }
            if (staging is not null)
            {
                BFloat16.ConvertFromSingle(new ReadOnlySpan<float>((float*)src + at, cols), staging);
                BFloat16.ConvertToSingle(staging, row);
                continue;
            }
            for (int j = 0; j < cols; j++, at += cs)
                row[j] = bf16 ? (float)((BFloat16*)src)[at] : (float)(BFloat16)((float*)src)[at];
        }
    }

    // ------------------------------------------------------------------ the packed JIT path

    private static void Packed(in Problem p, Bf16Microkernel kernel, int maxThreads)
    {
        int threads = maxThreads <= 0 ? Environment.ProcessorCount : maxThreads;
        long total = (long)p.M * p.N * p.K * p.Batch;
        threads = (int)Math.Min(threads, Math.Max(1, total / MinWorkPerThread));
        var job = new Job { P = p, Kernel = kernel };
        // Chunks are whole micro-tiles and depend on the thread count only through which worker computes which
        // tile; every element is computed by the same kernel over the same k-blocks, so results do not change.
        GemmBlocking.Partition(p.Batch, p.M, p.N, threads, MR, NR, out job.TilesM, out job.TilesN, out job.ChunkM, out job.ChunkN);
        job.Items = p.Batch * job.TilesM * job.TilesN;
        threads = Math.Min(threads, job.Items);
        if (threads <= 1) job.Work(0);
        else Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, job.Work);
    }

    private sealed class Job
    {
        public Problem P;
        public Bf16Microkernel Kernel = null!;
        public int TilesM, TilesN, ChunkM, ChunkN, Items;
        private int _next;

        public void Work(int worker)
        {
            int idx;
            while ((idx = Interlocked.Increment(ref _next) - 1) < Items)
            {
                int tn = idx % TilesN, rest = idx / TilesN;
                int tm = rest % TilesM, b = rest / TilesM;
                int i0 = tm * ChunkM, j0 = tn * ChunkN;
                Item(P, Kernel, b, i0, Math.Min(P.M, i0 + ChunkM), j0, Math.Min(P.N, j0 + ChunkN));
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Item(in Problem p, Bf16Microkernel kernel, int b, int i0, int i1, int j0, int j1)
    {
        // The k-blocking depends on K only: the order of the float32 sums of an element is fixed.
        int kcb = GemmBlocking.Balanced(p.K, KC, 2);
        int kpb = kcb / 2;
        int mcb = GemmBlocking.Balanced(i1 - i0, MC, MR);
        int ncb = GemmBlocking.Balanced(j1 - j0, NC, NR);

        nuint aBytes = Align((nuint)mcb * (nuint)kpb * 4);
        nuint bBytes = Align((nuint)ncb * (nuint)kpb * 4);
        nuint sBytes = Align(MR * NR * sizeof(float));
        // bf16 staging for operands that are float32 or not pair-addressable: 64 columns (or 6 rows) of kcb values,
        // or two rows of ncb values.
        nuint tBytes = Align((nuint)Math.Max(NR * kcb, 2 * ncb) * 2 + 128);
        byte* buf = GemmBuffer.Get(aBytes + bBytes + sBytes + tBytes);
        uint* pa = (uint*)buf, pb = (uint*)(buf + aBytes);
        float* scratch = (float*)(buf + aBytes + bBytes);
        ushort* tmp = (ushort*)(buf + aBytes + bBytes + sBytes);

        int ea = p.ABf16 ? 2 : 4, eb = p.BBf16 ? 2 : 4;
        byte* a = (byte*)p.A + p.AOffsets[b] * ea;
        byte* bm = (byte*)p.B + p.BOffsets[b] * eb;
        float* c = p.C + p.COffsets[b];

        for (int jc = j0; jc < j1; jc += ncb)
        {
            int nc = Math.Min(ncb, j1 - jc);
            for (int pc = 0; pc < p.K; pc += kcb)
            {
                int kc = Math.Min(kcb, p.K - pc);
                byte* bs = bm + (pc * p.BRowStride + jc * p.BColStride) * eb;
                if (p.BBf16) Bf16Pack.PackB(kc, nc, (ushort*)bs, p.BRowStride, p.BColStride, pb, tmp);
                else Bf16Pack.PackB(kc, nc, (float*)bs, p.BRowStride, p.BColStride, pb, tmp);
                bool add = pc > 0 || p.Accumulate;
                for (int ic = i0; ic < i1; ic += mcb)
                {
                    int mc = Math.Min(mcb, i1 - ic);
                    byte* s = a + (ic * p.ARowStride + pc * p.AColStride) * ea;
                    if (p.ABf16) Bf16Pack.PackA(mc, kc, (ushort*)s, p.ARowStride, p.AColStride, pa, tmp);
                    else Bf16Pack.PackA(mc, kc, (float*)s, p.ARowStride, p.AColStride, pa, tmp);
                    Macro(kernel, mc, nc, (kc + 1) / 2, pa, pb, c + ic * p.CRowStride + jc, p.CRowStride, add, scratch);
                }
            }
        }
    }

    private static nuint Align(nuint bytes) => (bytes + 63) & ~(nuint)63;

    /// <summary>Runs the micro-kernel over an mc x nc block; edge tiles go through a scratch tile (same arithmetic).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Macro(Bf16Microkernel kernel, int mc, int nc, int kp, uint* pa, uint* pb, float* c, long ldc, bool add, float* scratch)
    {
        var store = kernel.Store;
        var accumulate = kernel.Accumulate;
        long ldcBytes = ldc * sizeof(float);
        for (int jr = 0; jr < nc; jr += NR)
        {
            int nrr = Math.Min(NR, nc - jr);
            uint* bp = pb + jr * kp;
            for (int ir = 0; ir < mc; ir += MR)
            {
                int mrr = Math.Min(MR, mc - ir);
                uint* ap = pa + ir * kp;
                float* cp = c + ir * ldc + jr;
                if (mrr == MR && nrr == NR)
                {
                    if (add) accumulate(ap, bp, cp, ldcBytes, kp);
                    else store(ap, bp, cp, ldcBytes, kp);
                    continue;
                }
                store(ap, bp, scratch, NR * sizeof(float), kp);
                for (int i = 0; i < mrr; i++)
                {
                    float* src = scratch + i * NR;
                    float* dst = cp + i * ldc;
                    if (add) for (int j = 0; j < nrr; j++) dst[j] += src[j];
                    else new ReadOnlySpan<float>(src, nrr).CopyTo(new Span<float>(dst, nrr));
                }
            }
        }
    }
}

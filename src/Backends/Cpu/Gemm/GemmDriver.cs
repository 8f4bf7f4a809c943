using System.Numerics;
using System.Runtime.CompilerServices;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>The operands of one (batched, strided) GEMM call, as raw pointers.</summary>
internal unsafe struct GemmProblem<T> where T : unmanaged
{
    public int Batch, M, N, K;
    public T* A; public long* AOffsets; public long ARowStride, AColStride;
    public T* B; public long* BOffsets; public long BRowStride, BColStride;
    public T* C; public long* COffsets; public long CRowStride;
    public bool Accumulate;
    /// <summary>Applied to each finished block of C (never with <see cref="Accumulate"/>); the default does nothing.</summary>
    public GemmEpilogue Epilogue;
}

/// <summary>
/// BLIS-style blocked GEMM driver, generic over the element type and the micro-kernel.
/// Loops: item (batch x M-chunk x N-chunk, spread over workers) → jc (NC) → pc (KC) → pack B → ic (MC) → pack A
/// → jr (NR) → ir (MR) → micro-kernel. The KC blocking depends only on K, and every output element is produced
/// by the same micro-kernel arithmetic wherever its tile falls, so results do not depend on the thread count.
/// </summary>
internal static unsafe class GemmDriver<T, TK>
    where T : unmanaged, IFloatingPointIeee754<T>
    where TK : struct, IGemmKernel<T>
{
    /// <summary>Products with fewer multiply-adds per matrix than this skip packing.</summary>
    private const long DirectThreshold = 32 * 1024;
    /// <summary>Minimum multiply-adds that justify one more worker thread.</summary>
    private const long MinWorkPerThread = 1L << 19;
    /// <summary>Column alignment of direct-path chunks.</summary>
    private const int DirectAlignN = 64;

    public static void Run(in GemmProblem<T> p, int maxThreads)
    {
        if (p.Batch <= 0 || p.M <= 0 || p.N <= 0) return;
        if (p.K <= 0)
        {
            if (!p.Accumulate) ZeroC(p);
            if (p.Epilogue.Active)
                for (int b = 0; b < p.Batch; b++) p.Epilogue.Apply(p.C, p.COffsets[b], p.CRowStride, 0, p.M, 0, p.N);
            return;
        }

        long perMatrix = (long)p.M * p.N * p.K;
        var mode = ChooseMode(p, perMatrix < DirectThreshold);
        bool direct = mode != Mode.Packed;

        int threads = maxThreads <= 0 ? Environment.ProcessorCount : maxThreads;
        long total = perMatrix * p.Batch;
        threads = (int)Math.Min(threads, Math.Max(1, total / MinWorkPerThread));

        var job = new Job { P = p, Mode = mode };
        GemmBlocking.Partition(p.Batch, p.M, p.N, threads, direct ? 1 : TK.MR, direct ? DirectAlignN : TK.NR,
            out job.TilesM, out job.TilesN, out job.ChunkM, out job.ChunkN);
        job.Items = p.Batch * job.TilesM * job.TilesN;
        threads = Math.Min(threads, job.Items);

        if (threads <= 1) job.Work(0);
        else Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, job.Work);
    }

    private enum Mode { Packed, Rows, Dot, Strided }

    /// <summary>
    /// Picks the path from the shape and strides only (never from the thread count): small products and thin ones
    /// (fewer rows than a micro-tile, or dot-product friendly few rows/columns) skip packing.
    /// </summary>
    private static Mode ChooseMode(in GemmProblem<T> p, bool small)
    {
        if (p.BColStride == 1 && (small || p.M < TK.MR)) return Mode.Rows;
        if (p.AColStride == 1 && p.BRowStride == 1 && (small || p.M <= GemmDirect.MaxDotRows || p.N <= 4)) return Mode.Dot;
        return small ? Mode.Strided : Mode.Packed;
    }

    private static void ZeroC(in GemmProblem<T> p)
    {
        for (int b = 0; b < p.Batch; b++)
        {
            T* c = p.C + p.COffsets[b];
            for (int i = 0; i < p.M; i++) new Span<T>(c + i * p.CRowStride, p.N).Clear();
        }
    }

    private sealed class Job
    {
        public GemmProblem<T> P;
        public Mode Mode;
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
                int i1 = Math.Min(P.M, i0 + ChunkM), j1 = Math.Min(P.N, j0 + ChunkN);
                if (Mode == Mode.Packed) PackedItem(P, b, i0, i1, j0, j1);
                else DirectItem(P, Mode, b, i0, i1, j0, j1);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DirectItem(in GemmProblem<T> p, Mode mode, int b, int i0, int i1, int j0, int j1)
    {
        T* a = p.A + p.AOffsets[b];
        T* bm = p.B + p.BOffsets[b] + j0 * p.BColStride;
        T* c = p.C + p.COffsets[b] + j0;
        int n = j1 - j0;
        long ars = p.ARowStride, crs = p.CRowStride;
        switch (mode)
        {
            case Mode.Rows:
                for (int i = i0; i < i1; i += GemmDirect.MaxRows)
                    TK.DirectRows(Math.Min(GemmDirect.MaxRows, i1 - i), n, p.K, a + i * ars, ars, p.AColStride,
                        bm, p.BRowStride, c + i * crs, crs, p.Accumulate);
                break;
            case Mode.Dot:
                for (int i = i0; i < i1; i += GemmDirect.MaxDotRows)
                    TK.DotRows(Math.Min(GemmDirect.MaxDotRows, i1 - i), n, p.K, a + i * ars, ars, bm, p.BColStride,
                        c + i * crs, crs, p.Accumulate);
                break;
            default:
                bool fused = typeof(TK) != typeof(ScalarKernel<T>);
                for (int i = i0; i < i1; i++)
                    GemmScalar.StridedRow(n, p.K, a + i * ars, p.AColStride, bm, p.BRowStride, p.BColStride,
                        c + i * crs, p.Accumulate, fused);
                break;
        }
        // The direct paths produce this item's rows whole; they are small, so the item is still in cache.
        if (p.Epilogue.Active) p.Epilogue.Apply(p.C, p.COffsets[b], crs, i0, i1, j0, j1);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackedItem(in GemmProblem<T> p, int b, int i0, int i1, int j0, int j1)
    {
        int mr = TK.MR, nr = TK.NR;
        int kcb = GemmBlocking.Balanced(p.K, TK.KC, 1);
        int mcb = GemmBlocking.Balanced(i1 - i0, TK.MC, mr);
        int ncb = GemmBlocking.Balanced(j1 - j0, TK.NC, nr);

        nuint aBytes = Align((nuint)(mcb * kcb * sizeof(T)));
        nuint bBytes = Align((nuint)(ncb * kcb * sizeof(T)));
        nuint sBytes = Align((nuint)(mr * nr * sizeof(T)));
        byte* buf = GemmBuffer.Get(aBytes + bBytes + sBytes);
        T* pa = (T*)buf, pb = (T*)(buf + aBytes), scratch = (T*)(buf + aBytes + bBytes);

        T* a = p.A + p.AOffsets[b];
        T* bm = p.B + p.BOffsets[b];
        T* c = p.C + p.COffsets[b];

        for (int jc = j0; jc < j1; jc += ncb)
        {
            int nc = Math.Min(ncb, j1 - jc);
            for (int pc = 0; pc < p.K; pc += kcb)
            {
                int kc = Math.Min(kcb, p.K - pc);
                GemmPack<T>.PackB(kc, nc, nr, bm + pc * p.BRowStride + jc * p.BColStride, p.BRowStride, p.BColStride, pb);
                bool add = pc > 0 || p.Accumulate;
                for (int ic = i0; ic < i1; ic += mcb)
                {
                    int mc = Math.Min(mcb, i1 - ic);
                    GemmPack<T>.PackA(mc, kc, mr, a + ic * p.ARowStride + pc * p.AColStride, p.ARowStride, p.AColStride, pa);
                    Macro(mc, nc, kc, pa, pb, c + ic * p.CRowStride + jc, p.CRowStride, add, scratch);
                    // The block is final after the last KC panel: run the epilogue while it is in cache.
                    if (pc + kc >= p.K && p.Epilogue.Active) p.Epilogue.Apply(p.C, p.COffsets[b], p.CRowStride, ic, ic + mc, jc, jc + nc);
                }
            }
        }
    }

    private static nuint Align(nuint bytes) => (bytes + 63) & ~(nuint)63;

    /// <summary>Runs the micro-kernel over an mc x nc block; edge tiles go through a scratch tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Macro(int mc, int nc, int kc, T* pa, T* pb, T* c, long ldc, bool add, T* scratch)
    {
        int mr = TK.MR, nr = TK.NR;
        for (int jr = 0; jr < nc; jr += nr)
        {
            int nrr = Math.Min(nr, nc - jr);
            T* bp = pb + jr * kc;
            for (int ir = 0; ir < mc; ir += mr)
            {
                int mrr = Math.Min(mr, mc - ir);
                T* ap = pa + ir * kc;
                T* cp = c + ir * ldc + jr;
                if (mrr == mr && nrr == nr)
                {
                    TK.Tile(kc, ap, bp, cp, ldc, add);
                }
                else
                {
                    TK.Tile(kc, ap, bp, scratch, nr, false);
                    for (int i = 0; i < mrr; i++)
                    {
                        T* src = scratch + i * nr;
                        T* dst = cp + i * ldc;
                        if (add) for (int j = 0; j < nrr; j++) dst[j] += src[j];
                        else for (int j = 0; j < nrr; j++) dst[j] = src[j];
                    }
                }
            }
        }
    }
}

/// <summary>Thread partitioning and cache blocking shared by the GEMM drivers (float32/float64 and bf16).</summary>
internal static class GemmBlocking
{
    /// <summary>
    /// Splits each matrix into tilesM x tilesN chunks (aligned to alignM/alignN) so that the batch x tiles items
    /// keep every worker busy, preferring the split that packs the least redundant data.
    /// </summary>
    public static void Partition(int batch, int m, int n, int threads, int alignM, int alignN,
        out int tilesM, out int tilesN, out int chunkM, out int chunkN)
    {
        tilesM = tilesN = 1;
        int blocksM = (m + alignM - 1) / alignM, blocksN = (n + alignN - 1) / alignN;
        if (threads > 1 && batch < 4 * threads)
        {
            int split = threads / Gcd(batch, threads);
            double best = double.MaxValue;
            for (int tm = 1; tm <= split; tm++)
            {
                if (split % tm != 0) continue;
                int tn = split / tm;
                if (tm > blocksM || tn > blocksN) continue;
                // tm chunks each pack all of B's columns, tn chunks each pack all of A's rows.
                double cost = (double)tm * n + (double)tn * m;
                if (cost < best) { best = cost; tilesM = tm; tilesN = tn; }
            }
            if (best == double.MaxValue)
            {
                tilesM = Math.Min(split, blocksM);
                tilesN = Math.Min((split + tilesM - 1) / tilesM, blocksN);
            }
        }
        chunkM = (blocksM + tilesM - 1) / tilesM * alignM;
        chunkN = (blocksN + tilesN - 1) / tilesN * alignN;
        tilesM = (m + chunkM - 1) / chunkM;
        tilesN = (n + chunkN - 1) / chunkN;
    }

    private static int Gcd(int a, int b)
    {
        while (b != 0) (a, b) = (b, a % b);
        return a;
    }

    /// <summary>Splits <paramref name="length"/> into equal blocks of at most <paramref name="max"/>, rounded up to <paramref name="align"/>.</summary>
    public static int Balanced(int length, int max, int align)
    {
        int count = (length + max - 1) / max;
        int size = (length + count - 1) / count;
        return (size + align - 1) / align * align;
    }
}

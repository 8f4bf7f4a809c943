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
    /// <summary>
    /// How A, B and C are stored when not as T (float32 only; see <see cref="GemmWiden"/>): the pointers then point
    /// at elements of that type, offsets and strides still count elements. Such a problem always takes the packed path.
    /// </summary>
    public GemmElement AKind, BKind, CKind;
    /// <summary>True when an operand is not stored as T.</summary>
    public readonly bool Widens => AKind != GemmElement.Float32 || BKind != GemmElement.Float32 || CKind != GemmElement.Float32;
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
        if (p.Widens && typeof(T) != typeof(float)) throw new NotSupportedException("GemmDriver: only a float32 GEMM reads or writes other element types");
        if (p.K <= 0 && p.CKind != GemmElement.Float32)
        {
            for (int b = 0; b < p.Batch; b++) ZeroKRows16(p, b);
            return;
        }
        if (p.K <= 0)
        {
            if (!p.Accumulate) ZeroC(p);
            if (p.Epilogue.Active)
                for (int b = 0; b < p.Batch; b++) p.Epilogue.Apply(p.C, p.COffsets[b], p.CRowStride, 0, p.M, 0, p.N);
            return;
        }

        long perMatrix = (long)p.M * p.N * p.K;
        var mode = p.Widens ? Mode.Packed : ChooseMode(p, perMatrix < DirectThreshold);
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

    /// <summary>
    /// Whether a problem of this size may take a direct (unpacked) path for some operand layout (see ChooseMode): such
    /// products are small or skinny, so widening them into float32 copies costs little and keeps those faster paths.
    /// </summary>
    public static bool PrefersDirect(int m, int n, int k) => (long)m * n * k < DirectThreshold || m < TK.MR || n <= 4;

    // An empty sum into a 16-bit C: C stays (accumulate) or becomes zero, then the epilogue, rounded once.
    private static void ZeroKRows16(in GemmProblem<T> p, int b)
    {
        float* row = (float*)GemmBuffer.Get((nuint)(2 * p.N * sizeof(float)));
        for (int i = 0; i < p.M; i++)
        {
            if (p.Accumulate) GemmWiden.Row(p.CKind, p.C, p.COffsets[b] + i * p.CRowStride, p.N, row);
            else new Span<float>(row, p.N).Clear();
            GemmWiden.StoreBlock(p.CKind, row, p.N, 1, p.N, p.C, p.COffsets[b], p.CRowStride, i, 0, p.Epilogue, row + p.N);
        }
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

        if (p.CKind != GemmElement.Float32) { PackedItem16(p, b, i0, i1, j0, j1); return; }

        nuint aBytes = Align((nuint)(mcb * kcb * sizeof(T)));
        nuint bBytes = Align((nuint)(ncb * kcb * sizeof(T)));
        nuint sBytes = Align((nuint)(mr * nr * sizeof(T)));
        nuint wBytes = p.Widens ? Align((nuint)(GemmWiden.StagingFloats(mr, nr, kcb) * sizeof(float))) : 0;
        byte* buf = GemmBuffer.Get(aBytes + bBytes + sBytes + wBytes);
        T* pa = (T*)buf, pb = (T*)(buf + aBytes), scratch = (T*)(buf + aBytes + bBytes);
        float* staging = (float*)(buf + aBytes + bBytes + sBytes);

        T* bm = p.B + p.BOffsets[b];
        T* c = p.C + p.COffsets[b];

        for (int jc = j0; jc < j1; jc += ncb)
        {
            int nc = Math.Min(ncb, j1 - jc);
            for (int pc = 0; pc < p.K; pc += kcb)
            {
                int kc = Math.Min(kcb, p.K - pc);
                if (p.BKind == GemmElement.Float32) GemmPack<T>.PackB(kc, nc, nr, bm + pc * p.BRowStride + jc * p.BColStride, p.BRowStride, p.BColStride, pb);
                else GemmWiden.PackB(p.BKind, kc, nc, nr, p.B, p.BOffsets[b] + pc * p.BRowStride + jc * p.BColStride, p.BRowStride, p.BColStride, (float*)pb, staging);
                bool add = pc > 0 || p.Accumulate;
                for (int ic = i0; ic < i1; ic += mcb)
                {
                    int mc = Math.Min(mcb, i1 - ic);
                    PackA(p, b, ic, pc, mc, kc, pa, staging);
                    Macro(mc, nc, kc, pa, pb, c + ic * p.CRowStride + jc, p.CRowStride, add, scratch);
                    // The block is final after the last KC panel: run the epilogue while it is in cache.
                    if (pc + kc >= p.K && p.Epilogue.Active) p.Epilogue.Apply(p.C, p.COffsets[b], p.CRowStride, ic, ic + mc, jc, jc + nc);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PackA(in GemmProblem<T> p, int b, int ic, int pc, int mc, int kc, T* pa, float* staging)
    {
        long at = p.AOffsets[b] + ic * p.ARowStride + pc * p.AColStride;
        if (p.AKind == GemmElement.Float32) GemmPack<T>.PackA(mc, kc, TK.MR, p.A + at, p.ARowStride, p.AColStride, pa);
        else GemmWiden.PackA(p.AKind, mc, kc, TK.MR, p.A, at, p.ARowStride, p.AColStride, (float*)pa, staging);
    }

    /// <summary>
    /// The packed path into a 16-bit C: each MC×NC block is summed over all of K in a float32 block (k panels in the
    /// same order as the float32 path, so every element gets the same sum), then finished and rounded once. B's
    /// panel is packed again for each block of rows unless K fits one panel, which costs about 1/MC of the block's work.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackedItem16(in GemmProblem<T> p, int b, int i0, int i1, int j0, int j1)
    {
        const int MaxBlockColumns = 512; // keeps the float32 block (MC x this) near L2
        int mr = TK.MR, nr = TK.NR;
        int kcb = GemmBlocking.Balanced(p.K, TK.KC, 1);
        int mcb = GemmBlocking.Balanced(i1 - i0, TK.MC, mr);
        int ncb = GemmBlocking.Balanced(j1 - j0, Math.Min(TK.NC, MaxBlockColumns), nr);
        bool onePanel = kcb >= p.K;

        nuint aBytes = Align((nuint)(mcb * kcb * sizeof(T)));
        nuint bBytes = Align((nuint)(ncb * kcb * sizeof(T)));
        nuint sBytes = Align((nuint)(mr * nr * sizeof(T)));
        nuint wBytes = Align((nuint)(GemmWiden.StagingFloats(mr, nr, kcb) * sizeof(float)));
        nuint cBytes = Align((nuint)(mcb * ncb * sizeof(float)));
        nuint biasBytes = Align((nuint)(ncb * sizeof(float)));
        byte* buf = GemmBuffer.Get(aBytes + bBytes + sBytes + wBytes + cBytes + biasBytes);
        T* pa = (T*)buf, pb = (T*)(buf + aBytes), scratch = (T*)(buf + aBytes + bBytes);
        float* staging = (float*)(buf + aBytes + bBytes + sBytes);
        float* block = (float*)(buf + aBytes + bBytes + sBytes + wBytes);
        float* bias = (float*)(buf + aBytes + bBytes + sBytes + wBytes + cBytes);

        for (int jc = j0; jc < j1; jc += ncb)
        {
            int nc = Math.Min(ncb, j1 - jc);
            bool packedB = false;
            for (int ic = i0; ic < i1; ic += mcb)
            {
                int mc = Math.Min(mcb, i1 - ic);
                if (p.Accumulate)
                    for (int i = 0; i < mc; i++) GemmWiden.Row(p.CKind, p.C, p.COffsets[b] + (ic + i) * p.CRowStride + jc, nc, block + i * nc);
                for (int pc = 0; pc < p.K; pc += kcb)
                {
                    int kc = Math.Min(kcb, p.K - pc);
                    if (!(onePanel && packedB))
                    {
                        long bat = p.BOffsets[b] + pc * p.BRowStride + jc * p.BColStride;
                        if (p.BKind == GemmElement.Float32) GemmPack<T>.PackB(kc, nc, nr, p.B + bat, p.BRowStride, p.BColStride, pb);
                        else GemmWiden.PackB(p.BKind, kc, nc, nr, p.B, bat, p.BRowStride, p.BColStride, (float*)pb, staging);
                        packedB = true;
                    }
                    PackA(p, b, ic, pc, mc, kc, pa, staging);
                    Macro(mc, nc, kc, pa, pb, (T*)block, nc, pc > 0 || p.Accumulate, scratch);
                }
                GemmWiden.StoreBlock(p.CKind, block, nc, mc, nc, p.C, p.COffsets[b], p.CRowStride, ic, jc, p.Epilogue, bias);
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

using ILGPU;

namespace Engine.Backends.Cuda.Gemm;

/// <summary>
/// The float32/float64 GEMM on CUDA cores: one group computes a BM×BN tile of one batch's output, staging BK-deep
/// slices of a and b in shared memory and keeping each thread's TM×TN outputs in registers (the shape that reached
/// 15.9 TFLOP/s on the H200 at 128×128×8 with 8×8 per thread, see shared/gpu/README.md). Shared a is stored
/// [k][m] and b [k][n], both padded by 4 so that loads walking k store without bank conflicts; the inner loop then reads
/// a thread's TM values of a (a warp broadcast) and TN of b per k as runs of four consecutive ones, one 16-byte shared
/// load each (LDS.128; see Tile for the ownership and the banks). Where an operand is contiguous and aligned (the host's
/// VectorA/VectorB) the 128×128 tiling stages it from global memory 16 bytes at a time (LDG.E.128) as well. The GPU tilings double-buffer: the
/// next stage's global loads are issued into registers before the current stage's FMAs and stored to the other
/// shared buffer after them, one barrier per stage.
/// Operands are read with any strides: the host picks, per operand, whether consecutive threads walk the tile along
/// its contiguous dim (NN, NT, TN, TT all coalesce) and a general strided operand is read the same way. Tiles past
/// m, n or k load zeros and store nothing, so any sizes work. The fused Linear (IBackend.Linear) runs the same kernel
/// with GemmArgs' epilogue flags: bias, pre-activation store and activation after the tile's store (see Epilogue).
/// </summary>
static class SimtGemm<T, TMath, TTile, TMicro>
    where T : unmanaged
    where TMath : struct, IGemmMath<T>
    where TTile : struct, ISimtTile
    where TMicro : struct, IMicroTile<T>
{
    const int Pad = 4;

    /// <summary>Threads per group for this tiling.</summary>
    public static int Threads => default(TTile).BM / default(TMicro).TM * (default(TTile).BN / default(TMicro).TN);

    // True when a thread stages exactly four elements of each operand per stage: the tilings whose pipelined path can
    // load a contiguous operand as one 16-byte run (VectorA/VectorB).
    static bool StagesRuns
    {
        get
        {
            TTile tile = default;
            int threads = Threads;
            return tile.BM * tile.BK == 4 * threads && tile.BN * tile.BK == 4 * threads;
        }
    }

    public static void Kernel(GemmArgs g, ArrayView<byte> a, ArrayView<byte> b, ArrayView<byte> y, ArrayView<byte> bias, ArrayView<byte> pre) =>
        Tile(g, Grid.IdxX, g.BatchStart + Grid.IdxY, a, b, y, bias, pre);

    /// <summary>
    /// Two GEMMs in one launch (the fused Linear's backward, IBackend.LinearGradients: dx = dz·w, then dw = dzᵀ·x):
    /// blocks [0, FirstTiles) compute the first problem's tiles, the rest the second's, each with its own sizes,
    /// strides and output, no batch and no epilogue. Every block runs exactly the single kernel's tile code.
    /// </summary>
    public static void Grouped(GroupedGemmArgs g, ArrayView<byte> a0, ArrayView<byte> b0, ArrayView<byte> y0,
        ArrayView<byte> a1, ArrayView<byte> b1, ArrayView<byte> y1)
    {
        int t = Grid.IdxX;
        bool second = t >= g.FirstTiles;
        if (StagesRuns)
        {
            // Two calls rather than one on selected views: ILGPU vectorizes the 16-byte staging loads (Run4) only where
            // it can prove the address aligned, and it assumes a kernel parameter view 256-byte aligned but nothing of a
            // select of two. The tile code is then inlined twice (more registers in some tilings), so only here.
            if (second) Tile(g.Second, t - g.FirstTiles, 0, a1, b1, y1, y1, y1);
            else Tile(g.First, t, 0, a0, b0, y0, y0, y0);
        }
        else Tile(second ? g.Second : g.First, second ? t - g.FirstTiles : t, 0, second ? a1 : a0, second ? b1 : b0, second ? y1 : y0, y0, y0);
    }

    // Tile t (row-major over the TilesM × TilesN tiles) of batch entry batch.
    static void Tile(in GemmArgs g, int t, long batch, ArrayView<byte> a, ArrayView<byte> b, ArrayView<byte> y, ArrayView<byte> bias, ArrayView<byte> pre)
    {
        TTile tile = default;
        TMicro acc = default;
        int bm = tile.BM, bn = tile.BN, bk = tile.BK;
        int pa = bm + Pad, pb = bn + Pad;
        // Two stages of each operand: the pipelined path fills one while it computes from the other.
        var sA = SharedMemory.Allocate<T>(2 * tile.BK * (tile.BM + Pad));
        var sB = SharedMemory.Allocate<T>(2 * tile.BK * (tile.BN + Pad));
        int tx = bn / acc.TN, ty = bm / acc.TM, threads = tx * ty;

        int tid = Group.IdxX;
        // Thread (row, col) owns runs of R consecutive rows and columns (R = 4, 2 in the 2×2 tile): rows R·row + i % 4
        // + (i / 4)·R·ty, so each k reads a run as one 16-byte shared load (LDS.128) instead of four scalar ones. A warp
        // (two values of row, 16 of col at 16×16 threads) then reads two distinct runs of a (a broadcast) and 16
        // consecutive runs of b: each quarter-warp phase of LDS.128 covers 8 runs = 32 floats = all 32 banks once, so
        // neither operand conflicts. (Strided ownership, row + i·ty, read single floats: four LDS.32 per run.)
        int col = tid % tx, row = tid / tx, run = acc.Run;
        int tm = t / g.TilesN, tn = t - tm * g.TilesN;
        int row0 = tm * bm, col0 = tn * bn;
        var av = a.Cast<T>();
        var bv = b.Cast<T>();
        long baseA = g.OffsetA + batch * g.BatchStrideA + row0 * g.StrideAm;
        long baseB = g.OffsetB + batch * g.BatchStrideB + col0 * g.StrideBn;
        int mLeft = g.M - row0, nLeft = g.N - col0;

        // Each thread stages perA elements of a's stage and perB of b's. The GPU tilings give 4 or 2 (in registers,
        // loaded one stage ahead); the emulator's deep-BK tilings give more and take the single-buffered loop, since
        // on ILGPU's CPU accelerator a barrier, not memory latency, is the cost.
        int perA = bm * bk / threads, perB = bn * bk / threads;
        if (perA * threads == bm * bk && perB * threads == bn * bk && (perA == 1 || perA == 2 || perA == 4) && (perB == 1 || perB == 2 || perB == 4))
            Pipelined(g, av, bv, a.Cast<Run4<T>>(), b.Cast<Run4<T>>(), sA, sB, ref acc, baseA, baseB, mLeft, nLeft, tid, threads, row, col, tx, ty, perA, perB);
        else
            SingleBuffered(g, av, bv, sA, sB, ref acc, baseA, baseB, mLeft, nLeft, tid, threads, row, col, tx, ty);
        acc.Store(y, batch * g.M * g.N, row0 + run * row, run * ty, col0 + run * col, run * tx, g.M, g.N);
        if (g.Fused) Epilogue(g, y, bias, pre, batch * g.M * g.N, row0 + run * row, run * ty, col0 + run * col, run * tx);
    }

    // The fused Linear's store epilogue: each thread reads back the outputs it has just stored (its own writes, so no
    // barrier), adds the bias, stores the pre-activation when asked and then the activation. A loop rather than the
    // register tile's straight-line code: the activations' math once, not once per accumulator, at the cost of
    // reading TM·TN values back from L1. Same arithmetic as the CPU's float32 epilogue (no rounding in between).
    static void Epilogue(in GemmArgs g, ArrayView<byte> y, ArrayView<byte> bias, ArrayView<byte> pre, long yBase, int row, int rowStride, int col, int colStride)
    {
        TMath f = default;
        TMicro acc = default;
        for (int i = 0; i < acc.TM; i++)
        {
            int r = row + (i & 3) + (i >> 2) * rowStride; // the register tile's run order (IMicroTile.Store)
            if (r >= g.M) break;
            for (int j = 0; j < acc.TN; j++)
            {
                int c = col + (j & 3) + (j >> 2) * colStride;
                if (c >= g.N) break;
                long o = yBase + (long)r * g.N + c;
                T v = f.Load(y, o);
                if (g.Bias != 0) v = f.Add(v, f.Load(bias, c));
                if (g.Pre != 0) f.Store(pre, o, v);
                f.Store(y, o, f.Activate(v, g.Activation));
            }
        }
    }

    // Double buffering: while the group computes stage s from one shared buffer, each thread's loads of stage s + 1
    // are in flight into registers; they go to the other buffer after the stage's FMAs. One barrier per stage: it
    // orders this stage's reads of buffer s against the next stage's writes into it. Where each staged element comes
    // from and goes to is worked out once (Slots): a stage's load is one add and one bounds test per element.
    // With four elements of an operand per thread and the host's VectorA/VectorB, a thread stages one run of four
    // along the operand's contiguous dim: one 16-byte global load (LDG.E.128), stored as one 16-byte shared store when
    // that dim is m or n (shared rows run along it) or as four along k.
    static void Pipelined(in GemmArgs g, ArrayView<T> av, ArrayView<T> bv, ArrayView<Run4<T>> av4, ArrayView<Run4<T>> bv4, ArrayView<T> sA, ArrayView<T> sB, ref TMicro acc,
        long baseA, long baseB, int mLeft, int nLeft, int tid, int threads, int row, int col, int tx, int ty, int perA, int perB)
    {
        TTile tile = default;
        int bm = tile.BM, bn = tile.BN, bk = tile.BK, pa = bm + Pad, pb = bn + Pad;
        int sizeA = bk * pa, sizeB = bk * pb;
        int run = acc.Run, paR = pa / run, pbR = pb / run, sizeAR = sizeA / run, sizeBR = sizeB / run;
        int stages = (g.K + bk - 1) / bk;
        // 0 scalar, 1 a run along the shared row (m or n), 2 a run along k.
        int vecA = perA == 4 && g.VectorA != 0 ? 2 - g.AAlongM : 0, vecB = perB == 4 && g.VectorB != 0 ? 2 - g.BAlongN : 0;
        var slotsA = SlotsOf(g, true, baseA, tid, threads, perA, mLeft, vecA);
        var slotsB = SlotsOf(g, false, baseB, tid, threads, perB, nLeft, vecB);
        var ra = Fetch(av, av4, slotsA, perA, vecA, 0, g.K);
        var rb = Fetch(bv, bv4, slotsB, perB, vecB, 0, g.K);
        Put(sA, 0, slotsA, ra, perA, vecA, pa);
        Put(sB, 0, slotsB, rb, perB, vecB, pb);
        Group.Barrier();
        int cur = 0;
        for (int s = 0; s < stages; s++)
        {
            int k0 = s * bk, kLeft = g.K - k0;
            bool next = s + 1 < stages;
            if (next)
            {
                ra = Fetch(av, av4, slotsA, perA, vecA, (k0 + bk) * g.StrideAk, kLeft - bk);
                rb = Fetch(bv, bv4, slotsB, perB, vecB, (k0 + bk) * g.StrideBk, kLeft - bk);
            }
            // Step counts runs: the thread's first run of a at row, of b at col, in this stage's buffer.
            int oa = cur * sizeAR + row, ob = cur * sizeBR + col;
            if (kLeft >= bk) for (int kk = 0; kk < bk; kk++) acc.Step(sA, oa + kk * paR, ty, sB, ob + kk * pbR, tx);
            else for (int kk = 0; kk < kLeft; kk++) acc.Step(sA, oa + kk * paR, ty, sB, ob + kk * pbR, tx);
            if (next)
            {
                Put(sA, (cur ^ 1) * sizeA, slotsA, ra, perA, vecA, pa);
                Put(sB, (cur ^ 1) * sizeB, slotsB, rb, perB, vecB, pb);
            }
            Group.Barrier();
            cur ^= 1;
        }
    }

    static void SingleBuffered(in GemmArgs g, ArrayView<T> av, ArrayView<T> bv, ArrayView<T> sA, ArrayView<T> sB, ref TMicro acc,
        long baseA, long baseB, int mLeft, int nLeft, int tid, int threads, int row, int col, int tx, int ty)
    {
        TTile tile = default;
        int bm = tile.BM, bn = tile.BN, bk = tile.BK, pa = bm + Pad, pb = bn + Pad;
        int run = acc.Run, paR = pa / run, pbR = pb / run;
        for (int k0 = 0; k0 < g.K; k0 += bk)
        {
            int kLeft = g.K - k0;
            for (int l = tid; l < bm * bk; l += threads)
            {
                SlotA(g, l, out int r, out int kk);
                sA[kk * pa + r] = r < mLeft && kk < kLeft ? av[baseA + r * g.StrideAm + (k0 + kk) * g.StrideAk] : default;
            }
            for (int l = tid; l < bn * bk; l += threads)
            {
                SlotB(g, l, out int c, out int kk);
                sB[kk * pb + c] = c < nLeft && kk < kLeft ? bv[baseB + c * g.StrideBn + (k0 + kk) * g.StrideBk] : default;
            }
            Group.Barrier();
            // Full stages keep a constant trip count (ptxas may unroll it); the last one stops at k.
            if (kLeft >= bk) for (int kk = 0; kk < bk; kk++) acc.Step(sA, kk * paR + row, ty, sB, kk * pbR + col, tx);
            else for (int kk = 0; kk < kLeft; kk++) acc.Step(sA, kk * paR + row, ty, sB, kk * pbR + col, tx);
            Group.Barrier();
        }
    }

    // Element l of a stage (a: BM×BK, b: BN×BK) as (row or column, k): consecutive threads walk the operand's
    // contiguous dim, so the global loads coalesce.
    static void SlotA(in GemmArgs g, int l, out int r, out int kk)
    {
        TTile tile = default;
        if (g.AAlongM != 0) { r = l % tile.BM; kk = l / tile.BM; }
        else { r = l / tile.BK; kk = l - r * tile.BK; }
    }

    static void SlotB(in GemmArgs g, int l, out int c, out int kk)
    {
        TTile tile = default;
        if (g.BAlongN != 0) { c = l % tile.BN; kk = l / tile.BN; }
        else { c = l / tile.BK; kk = l - c * tile.BK; }
    }

    /// <summary>A thread's share of one stage of an operand, in registers (ILGPU keeps constant-named fields there).</summary>
    struct Staged
    {
        public T V0, V1, V2, V3;
    }

    /// <summary>
    /// Where a thread's staged elements live: O, the element's global offset at k = 0 (−1 past the m or n edge); K, its
    /// k within the stage; S, its index in a shared buffer.
    /// </summary>
    struct Slots
    {
        public long O0, O1, O2, O3;
        public int K0, K1, K2, K3;
        public int S0, S1, S2, S3;
    }

    static void Slot(in GemmArgs g, bool isA, long origin, int l, int edge, out long o, out int k, out int s)
    {
        TTile tile = default;
        int r;
        if (isA) { SlotA(g, l, out r, out k); s = k * (tile.BM + Pad) + r; o = r < edge ? origin + r * g.StrideAm + k * g.StrideAk : -1; }
        else { SlotB(g, l, out r, out k); s = k * (tile.BN + Pad) + r; o = r < edge ? origin + r * g.StrideBn + k * g.StrideBk : -1; }
    }

    // The run of four a thread stages (vec 1: along the shared row, m or n; 2: along k), as slot 0: its first
    // element's global offset at k = 0 (−1 past the edge: the host's VectorA/VectorB promise that m, n or k is a
    // multiple of 4, so a run is wholly inside or wholly outside), k and shared index.
    static void RunSlot(in GemmArgs g, bool isA, long origin, int tid, int edge, int vec, out long o, out int k, out int s)
    {
        TTile tile = default;
        int rows = isA ? tile.BM : tile.BN, r;
        if (vec == 1) { r = (tid % (rows / 4)) * 4; k = tid / (rows / 4); }
        else { r = tid / (tile.BK / 4); k = (tid % (tile.BK / 4)) * 4; }
        s = k * (rows + Pad) + r;
        long stride = isA ? g.StrideAm : g.StrideBn, kStride = isA ? g.StrideAk : g.StrideBk;
        o = r < edge ? origin + r * stride + k * kStride : -1;
    }

    static Slots SlotsOf(in GemmArgs g, bool isA, long origin, int tid, int threads, int per, int edge, int vec)
    {
        Slots x = default;
        if (vec != 0)
        {
            RunSlot(g, isA, origin, tid, edge, vec, out x.O0, out x.K0, out x.S0);
            return x;
        }
        Slot(g, isA, origin, tid, edge, out x.O0, out x.K0, out x.S0);
        if (per > 1) Slot(g, isA, origin, tid + threads, edge, out x.O1, out x.K1, out x.S1);
        if (per > 2)
        {
            Slot(g, isA, origin, tid + 2 * threads, edge, out x.O2, out x.K2, out x.S2);
            Slot(g, isA, origin, tid + 3 * threads, edge, out x.O3, out x.K3, out x.S3);
        }
        return x;
    }

    // The stage whose first k is at offset kOffset (k0·stride along k), with kLeft of its k still inside K.
    static T Load(ArrayView<T> v, long o, int k, long kOffset, int kLeft) => o >= 0 && k < kLeft ? v[o + kOffset] : default;

    static Staged Fetch(ArrayView<T> v, ArrayView<Run4<T>> v4, in Slots x, int per, int vec, long kOffset, int kLeft)
    {
        Staged s = default;
        if (vec != 0)
        {
            if (x.O0 >= 0 && x.K0 < kLeft)
            {
                var r = v4[(x.O0 + kOffset) >> 2]; // 16-byte aligned: the host checked the offset, strides and address
                s.V0 = r.X; s.V1 = r.Y; s.V2 = r.Z; s.V3 = r.W;
            }
            return s;
        }
        s.V0 = Load(v, x.O0, x.K0, kOffset, kLeft);
        if (per > 1) s.V1 = Load(v, x.O1, x.K1, kOffset, kLeft);
        if (per > 2) { s.V2 = Load(v, x.O2, x.K2, kOffset, kLeft); s.V3 = Load(v, x.O3, x.K3, kOffset, kLeft); }
        return s;
    }

    static void Put(ArrayView<T> shared, int buffer, in Slots x, in Staged s, int per, int vec, int pitch)
    {
        if (vec == 1)
        {
            shared.Cast<Run4<T>>()[(buffer + x.S0) >> 2] = new Run4<T> { X = s.V0, Y = s.V1, Z = s.V2, W = s.V3 };
            return;
        }
        if (vec == 2)
        {
            // Thread pairs share a row (m or n), one at k, one at k + 4; a warp's 16 rows are consecutive, so with
            // pitch ≡ 4 (mod 32) each of the four stores meets all 32 banks once.
            shared[buffer + x.S0] = s.V0; shared[buffer + x.S0 + pitch] = s.V1;
            shared[buffer + x.S0 + 2 * pitch] = s.V2; shared[buffer + x.S0 + 3 * pitch] = s.V3;
            return;
        }
        shared[buffer + x.S0] = s.V0;
        if (per > 1) shared[buffer + x.S1] = s.V1;
        if (per > 2) { shared[buffer + x.S2] = s.V2; shared[buffer + x.S3] = s.V3; }
    }
}

#pragma warning disable CS1591 // the tilings are named by their numbers: BM×BN×BK
/// <summary>128×128 block tiles, BK 8: with 8×8 per thread, 256 threads (the GPU's float32 tiling for large products).</summary>
public struct Tile128x128x8 : ISimtTile { public readonly int BM => 128; public readonly int BN => 128; public readonly int BK => 8; }

/// <summary>64×64 block tiles, BK 8: 256 threads at 4×4 per thread (the GPU's tiling for small products and float64).</summary>
public struct Tile64x64x8 : ISimtTile { public readonly int BM => 64; public readonly int BN => 64; public readonly int BK => 8; }

// The emulator's tilings (64 threads): deep BK, because a group barrier costs milliseconds on ILGPU's CPU accelerator.

/// <summary>32×32 block tiles, BK 8: 64 threads at 4×4 per thread, 4 elements of each operand per thread: the GPU
/// tilings' double-buffered path at the emulator's group size (a test tiling).</summary>
public struct Tile32x32x8 : ISimtTile { public readonly int BM => 32; public readonly int BN => 32; public readonly int BK => 8; }

/// <summary>64×64 block tiles, BK 16: 64 threads at 8×8 per thread.</summary>
public struct Tile64x64x16 : ISimtTile { public readonly int BM => 64; public readonly int BN => 64; public readonly int BK => 16; }

/// <summary>32×32 block tiles, BK 32: 64 threads at 4×4 per thread (the emulator's default).</summary>
public struct Tile32x32x32 : ISimtTile { public readonly int BM => 32; public readonly int BN => 32; public readonly int BK => 32; }

/// <summary>16×16 block tiles, BK 32: 64 threads at 2×2 per thread.</summary>
public struct Tile16x16x32 : ISimtTile { public readonly int BM => 16; public readonly int BN => 16; public readonly int BK => 32; }
#pragma warning restore CS1591

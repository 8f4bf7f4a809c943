using ILGPU;

namespace Engine.Backends.Cuda.Gemm;

/// <summary>
/// The float32/float64 GEMM on CUDA cores: one group computes a BM×BN tile of one batch's output, staging BK-deep
/// slices of a and b in shared memory and keeping each thread's TM×TN outputs in registers (the shape that reached
/// 15.9 TFLOP/s on the H200 at 128×128×8 with 8×8 per thread, see shared/gpu/README.md). Shared a is stored
/// [k][m] and b [k][n], both padded by 4 so that loads walking k store without bank conflicts; the inner loop then reads
/// TM values of a (a warp broadcast) and TN consecutive-thread values of b per k.
/// Operands are read with any strides: the host picks, per operand, whether consecutive threads walk the tile along
/// its contiguous dim (NN, NT, TN, TT all coalesce) and a general strided operand is read the same way. Tiles past
/// m, n or k load zeros and store nothing, so any sizes work.
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

    public static void Kernel(GemmArgs g, ArrayView<byte> a, ArrayView<byte> b, ArrayView<byte> y)
    {
        TTile tile = default;
        TMicro acc = default;
        int bm = tile.BM, bn = tile.BN, bk = tile.BK;
        int pa = bm + Pad, pb = bn + Pad;
        var sA = SharedMemory.Allocate<T>(tile.BK * (tile.BM + Pad));
        var sB = SharedMemory.Allocate<T>(tile.BK * (tile.BN + Pad));
        int tx = bn / acc.TN, ty = bm / acc.TM, threads = tx * ty;

        int tid = Group.IdxX;
        int col = tid % tx, row = tid / tx;
        int t = Grid.IdxX, tm = t / g.TilesN, tn = t - tm * g.TilesN;
        int row0 = tm * bm, col0 = tn * bn;
        long batch = g.BatchStart + Grid.IdxY;
        var av = a.Cast<T>();
        var bv = b.Cast<T>();
        long baseA = g.OffsetA + batch * g.BatchStrideA + row0 * g.StrideAm;
        long baseB = g.OffsetB + batch * g.BatchStrideB + col0 * g.StrideBn;
        int mLeft = g.M - row0, nLeft = g.N - col0;

        for (int k0 = 0; k0 < g.K; k0 += bk)
        {
            int kLeft = g.K - k0;
            for (int l = tid; l < bm * bk; l += threads)
            {
                int r, kk;
                if (g.AAlongM != 0) { r = l % bm; kk = l / bm; }
                else { r = l / bk; kk = l - r * bk; }
                T v = default;
                if (r < mLeft && kk < kLeft) v = av[baseA + r * g.StrideAm + (k0 + kk) * g.StrideAk];
                sA[kk * pa + r] = v;
            }
            for (int l = tid; l < bn * bk; l += threads)
            {
                int c, kk;
                if (g.BAlongN != 0) { c = l % bn; kk = l / bn; }
                else { c = l / bk; kk = l - c * bk; }
                T v = default;
                if (c < nLeft && kk < kLeft) v = bv[baseB + c * g.StrideBn + (k0 + kk) * g.StrideBk];
                sB[kk * pb + c] = v;
            }
            Group.Barrier();
            // Full stages keep a constant trip count (ptxas may unroll it); the last one stops at k.
            if (kLeft >= bk) for (int kk = 0; kk < bk; kk++) acc.Step(sA, kk * pa + row, ty, sB, kk * pb + col, tx);
            else for (int kk = 0; kk < kLeft; kk++) acc.Step(sA, kk * pa + row, ty, sB, kk * pb + col, tx);
            Group.Barrier();
        }
        acc.Store(y, batch * g.M * g.N, row0 + row, ty, col0 + col, tx, g.M, g.N);
    }
}

#pragma warning disable CS1591 // the tilings are named by their numbers: BM×BN×BK
/// <summary>128×128 block tiles, BK 8: with 8×8 per thread, 256 threads (the GPU's float32 tiling for large products).</summary>
public struct Tile128x128x8 : ISimtTile { public readonly int BM => 128; public readonly int BN => 128; public readonly int BK => 8; }

/// <summary>64×64 block tiles, BK 8: 256 threads at 4×4 per thread (the GPU's tiling for small products and float64).</summary>
public struct Tile64x64x8 : ISimtTile { public readonly int BM => 64; public readonly int BN => 64; public readonly int BK => 8; }

// The emulator's tilings (64 threads): deep BK, because a group barrier costs milliseconds on ILGPU's CPU accelerator.

/// <summary>64×64 block tiles, BK 16: 64 threads at 8×8 per thread.</summary>
public struct Tile64x64x16 : ISimtTile { public readonly int BM => 64; public readonly int BN => 64; public readonly int BK => 16; }

/// <summary>32×32 block tiles, BK 32: 64 threads at 4×4 per thread (the emulator's default).</summary>
public struct Tile32x32x32 : ISimtTile { public readonly int BM => 32; public readonly int BN => 32; public readonly int BK => 32; }

/// <summary>16×16 block tiles, BK 32: 64 threads at 2×2 per thread.</summary>
public struct Tile16x16x32 : ISimtTile { public readonly int BM => 16; public readonly int BN => 16; public readonly int BK => 32; }
#pragma warning restore CS1591

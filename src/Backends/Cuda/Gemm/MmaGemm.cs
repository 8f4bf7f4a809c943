using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Engine.Backends.Cuda.Gemm;

/// <summary>
/// The float16/bfloat16 GEMM on tensor cores: a group of WarpsM×WarpsN warps computes a BM×BN tile (BM = WarpsM·MI·16,
/// BN = WarpsN·NI·8), each warp an (MI·16)×(NI·8) tile as MI×NI m16n8k16 mma's per k16 step with float32 accumulators
/// (<see cref="IMmaWarpTile{TInstr}"/>), rounded once to the half type on store. A and B stages live in one shared allocation
/// (so the ldmatrix PTX can name it, see <see cref="WarpMma.LoadMatrixX4Ptx"/>): A as [BM][BK + 8] and B as
/// [BN][BK + 8], k contiguous in both, which is what non-transposing ldmatrix turns into row-major A and
/// column-major B fragments. The pitch of BK + 8 half words keeps rows 16-byte aligned and puts the 8 rows one
/// ldmatrix matrix reads in distinct banks. Global loads copy raw 16-bit words (no conversion), walking each operand
/// along its contiguous dim as the SIMT kernel does; out-of-range elements load as 0.
/// Next steps on a GPU: 16-byte global loads (or cp.async) into a double-buffered stage.
/// </summary>
static class MmaGemm<TBlock, TWarp, TInstr>
    where TBlock : struct, IMmaBlock
    where TWarp : struct, IMmaWarpTile<TInstr>
    where TInstr : struct, IWarpMma
{
    /// <summary>Threads per group for this tiling.</summary>
    public static int Threads => 32 * default(TBlock).WarpsM * default(TBlock).WarpsN;

    /// <summary>Rows of the block tile.</summary>
    public static int BM => default(TBlock).WarpsM * default(TWarp).MI * 16;

    /// <summary>Columns of the block tile.</summary>
    public static int BN => default(TBlock).WarpsN * default(TWarp).NI * 8;

    /// <summary>Bytes of the one shared allocation (A and B stages).</summary>
    public static int SharedBytes => (BM + BN) * (default(TBlock).BK + 8) * 2;

    public static void Kernel(GemmArgs g, ArrayView<byte> a, ArrayView<byte> b, ArrayView<byte> y)
    {
        TBlock blk = default;
        TWarp acc = default;
        int wn = blk.WarpsN, bk = blk.BK;
        int mi16 = acc.MI * 16, ni8 = acc.NI * 8;
        int bm = blk.WarpsM * mi16, bn = wn * ni8;
        int pitch = bk + 8;
        var s = SharedMemory.Allocate<ushort>((blk.WarpsM * acc.MI * 16 + blk.WarpsN * acc.NI * 8) * (blk.BK + 8));
        if (CudaAsm.IsSupported) s = s.AsAligned16(); // ldmatrix reads 16-byte rows
        // The emulated warp instructions' exchange area (a word under PTX), allocated second: the stages stay __shared_alloca0.
        TInstr instr = default;
        var scratch = SharedMemory.Allocate<uint>(blk.WarpsM * blk.WarpsN * instr.ScratchWords);
        int sB = bm * pitch;
        int threads = 32 * blk.WarpsM * wn;

        int tid = Group.IdxX, lane = tid & 31, warp = tid >> 5;
        int warpRow = warp / wn * mi16, warpCol = warp % wn * ni8;
        int t = Grid.IdxX, tm = t / g.TilesN, tn = t - tm * g.TilesN;
        int row0 = tm * bm, col0 = tn * bn;
        long batch = g.BatchStart + Grid.IdxY;
        var av = a.Cast<ushort>();
        var bv = b.Cast<ushort>();
        long baseA = g.OffsetA + batch * g.BatchStrideA + row0 * g.StrideAm;
        long baseB = g.OffsetB + batch * g.BatchStrideB + col0 * g.StrideBn;
        int mLeft = g.M - row0, nLeft = g.N - col0;
        // A constant in the PTX kernels (one half type each), so the epilogue holds one conversion.
        int bf16 = instr.InputIsBf16 >= 0 ? instr.InputIsBf16 : g.DType == (int)DType.BFloat16 ? 1 : 0;
        int aWarp = warpRow * pitch, bWarp = sB + warpCol * pitch;
        var warpScratch = scratch.SubView(warp * instr.ScratchWords, instr.ScratchWords);

        for (int k0 = 0; k0 < g.K; k0 += bk)
        {
            int kLeft = g.K - k0;
            for (int l = tid; l < bm * bk; l += threads)
            {
                int r, kk;
                if (g.AAlongM != 0) { r = l % bm; kk = l / bm; }
                else { r = l / bk; kk = l - r * bk; }
                ushort v = 0;
                if (r < mLeft && kk < kLeft) v = av[baseA + r * g.StrideAm + (k0 + kk) * g.StrideAk];
                s[r * pitch + kk] = v;
            }
            for (int l = tid; l < bn * bk; l += threads)
            {
                int c, kk;
                if (g.BAlongN != 0) { c = l % bn; kk = l / bn; }
                else { c = l / bk; kk = l - c * bk; }
                ushort v = 0;
                if (c < nLeft && kk < kLeft) v = bv[baseB + c * g.StrideBn + (k0 + kk) * g.StrideBk];
                s[sB + c * pitch + kk] = v;
            }
            Group.Barrier();
            // Full stages keep a constant trip count (ptxas may unroll it); the last one stops at the last k16 step
            // that holds data (kLeft is the same for the whole group, so every warp stays converged).
            if (kLeft >= bk) for (int kk = 0; kk < bk; kk += 16) acc.Step(s, aWarp + kk, bWarp + kk, pitch, lane, bf16, warpScratch);
            else for (int kk = 0; kk < kLeft; kk += 16) acc.Step(s, aWarp + kk, bWarp + kk, pitch, lane, bf16, warpScratch);
            Group.Barrier();
        }
        acc.Store(y, batch * g.M * g.N, row0 + warpRow, col0 + warpCol, lane, g.M, g.N, bf16);
    }
}

#pragma warning disable CS1591 // the block shapes are named by their numbers: warps along m × warps along n, BK
/// <summary>2×4 warps (256 threads), BK 32: with <see cref="Mma4x4{TInstr}"/>, 128×128 tiles (the GPU's tiling for large products).</summary>
public struct Warps2x4K32 : IMmaBlock { public readonly int WarpsM => 2; public readonly int WarpsN => 4; public readonly int BK => 32; }

/// <summary>2×2 warps (128 threads), BK 32: with <see cref="Mma2x4{TInstr}"/>, 64×64 tiles (the GPU's tiling for small products).</summary>
public struct Warps2x2K32 : IMmaBlock { public readonly int WarpsM => 2; public readonly int WarpsN => 2; public readonly int BK => 32; }

// The emulator's block shapes (64 threads).

/// <summary>1×2 warps, BK 64: four k16 steps per stage (the emulator's default, with <see cref="Mma2x2{TInstr}"/>).</summary>
public struct Warps1x2K64 : IMmaBlock { public readonly int WarpsM => 1; public readonly int WarpsN => 2; public readonly int BK => 64; }

/// <summary>2×1 warps, BK 32.</summary>
public struct Warps2x1K32 : IMmaBlock { public readonly int WarpsM => 2; public readonly int WarpsN => 1; public readonly int BK => 32; }

/// <summary>2×1 warps, BK 16: one k16 step per stage.</summary>
public struct Warps2x1K16 : IMmaBlock { public readonly int WarpsM => 2; public readonly int WarpsN => 1; public readonly int BK => 16; }
#pragma warning restore CS1591

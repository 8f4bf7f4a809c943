// The tensor-core GEMM's warp tiles: one field per accumulator fragment and straight-line code, for the reason given in
// RegisterTiles.cs (ILGPU keeps a struct local's fields in registers only when each is named by a constant).
// Mechanical code: a new shape is a copy with the indices renumbered.
using ILGPU;

namespace Engine.Backends.Cuda.Gemm;

/// <summary>A warp's 2×4 grid of m16n8k16 accumulators: a 32×32 tile of the output.</summary>
public struct Mma2x4<TInstr> : IMmaWarpTile<TInstr> where TInstr : struct, IWarpMma
{
    F4 c00, c01, c02, c03;
    F4 c10, c11, c12, c13;

    /// <inheritdoc/>
    public readonly int MI => 2;

    /// <inheritdoc/>
    public readonly int NI => 4;

    /// <inheritdoc/>
    public void Mma(WarpFragments f, int lane, int bf16, ArrayView<uint> scratch)
    {
        TInstr w = default;
        c00 = w.Mma(f.A0, f.B0.X, f.B0.Y, c00, lane, bf16, scratch);
        c01 = w.Mma(f.A0, f.B0.Z, f.B0.W, c01, lane, bf16, scratch);
        c02 = w.Mma(f.A0, f.B1.X, f.B1.Y, c02, lane, bf16, scratch);
        c03 = w.Mma(f.A0, f.B1.Z, f.B1.W, c03, lane, bf16, scratch);
        c10 = w.Mma(f.A1, f.B0.X, f.B0.Y, c10, lane, bf16, scratch);
        c11 = w.Mma(f.A1, f.B0.Z, f.B0.W, c11, lane, bf16, scratch);
        c12 = w.Mma(f.A1, f.B1.X, f.B1.Y, c12, lane, bf16, scratch);
        c13 = w.Mma(f.A1, f.B1.Z, f.B1.W, c13, lane, bf16, scratch);
    }

    /// <inheritdoc/>
    public readonly void StageOutput(ArrayView<ushort> s, uint sBase, uint tile, int pitch, int lane, int bf16, in MmaBias bias)
    {
        TInstr w = default;
        // c0, c1 at row g, columns 2t, 2t + 1 of each m16×n8 block; c2, c3 eight rows down.
        uint o = tile + (uint)((lane >> 2) * pitch + ((lane & 3) << 2)), down = (uint)(8 * pitch);
        w.SharedStore32(s, sBase, o + 0u, WarpMma.Pack(bias.Add(c00.X, 0), bias.Add(c00.Y, 1), bf16)); w.SharedStore32(s, sBase, o + 0u + down, WarpMma.Pack(bias.Add(c00.Z, 0), bias.Add(c00.W, 1), bf16));
        w.SharedStore32(s, sBase, o + 16u, WarpMma.Pack(bias.Add(c01.X, 8), bias.Add(c01.Y, 9), bf16)); w.SharedStore32(s, sBase, o + 16u + down, WarpMma.Pack(bias.Add(c01.Z, 8), bias.Add(c01.W, 9), bf16));
        w.SharedStore32(s, sBase, o + 32u, WarpMma.Pack(bias.Add(c02.X, 16), bias.Add(c02.Y, 17), bf16)); w.SharedStore32(s, sBase, o + 32u + down, WarpMma.Pack(bias.Add(c02.Z, 16), bias.Add(c02.W, 17), bf16));
        w.SharedStore32(s, sBase, o + 48u, WarpMma.Pack(bias.Add(c03.X, 24), bias.Add(c03.Y, 25), bf16)); w.SharedStore32(s, sBase, o + 48u + down, WarpMma.Pack(bias.Add(c03.Z, 24), bias.Add(c03.W, 25), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 0u, WarpMma.Pack(bias.Add(c10.X, 0), bias.Add(c10.Y, 1), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 0u + down, WarpMma.Pack(bias.Add(c10.Z, 0), bias.Add(c10.W, 1), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 16u, WarpMma.Pack(bias.Add(c11.X, 8), bias.Add(c11.Y, 9), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 16u + down, WarpMma.Pack(bias.Add(c11.Z, 8), bias.Add(c11.W, 9), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 32u, WarpMma.Pack(bias.Add(c12.X, 16), bias.Add(c12.Y, 17), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 32u + down, WarpMma.Pack(bias.Add(c12.Z, 16), bias.Add(c12.W, 17), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 48u, WarpMma.Pack(bias.Add(c13.X, 24), bias.Add(c13.Y, 25), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 48u + down, WarpMma.Pack(bias.Add(c13.Z, 24), bias.Add(c13.W, 25), bf16));
    }

    /// <inheritdoc/>
    public readonly void StoreFloat32(ArrayView<float> y, long origin, int ldy, int rowsLeft, int colsLeft, int lane)
    {
        // c0, c1 at row g, columns 2t, 2t + 1 of each m16×n8 block; c2, c3 eight rows down.
        int r = lane >> 2, c = (lane & 3) << 1;
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 0, c00.X, c00.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 0, c00.Z, c00.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 8, c01.X, c01.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 8, c01.Z, c01.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 16, c02.X, c02.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 16, c02.Z, c02.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 24, c03.X, c03.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 24, c03.Z, c03.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 0, c10.X, c10.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 0, c10.Z, c10.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 8, c11.X, c11.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 8, c11.Z, c11.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 16, c12.X, c12.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 16, c12.Z, c12.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 24, c13.X, c13.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 24, c13.Z, c13.W);
    }
}

/// <summary>A warp's 4×8 grid of m16n8k16 accumulators: a 64×64 tile of the output.</summary>
public struct Mma4x8<TInstr> : IMmaWarpTile<TInstr> where TInstr : struct, IWarpMma
{
    F4 c00, c01, c02, c03, c04, c05, c06, c07;
    F4 c10, c11, c12, c13, c14, c15, c16, c17;
    F4 c20, c21, c22, c23, c24, c25, c26, c27;
    F4 c30, c31, c32, c33, c34, c35, c36, c37;

    /// <inheritdoc/>
    public readonly int MI => 4;

    /// <inheritdoc/>
    public readonly int NI => 8;

    /// <inheritdoc/>
    public void Mma(WarpFragments f, int lane, int bf16, ArrayView<uint> scratch)
    {
        TInstr w = default;
        c00 = w.Mma(f.A0, f.B0.X, f.B0.Y, c00, lane, bf16, scratch);
        c01 = w.Mma(f.A0, f.B0.Z, f.B0.W, c01, lane, bf16, scratch);
        c02 = w.Mma(f.A0, f.B1.X, f.B1.Y, c02, lane, bf16, scratch);
        c03 = w.Mma(f.A0, f.B1.Z, f.B1.W, c03, lane, bf16, scratch);
        c04 = w.Mma(f.A0, f.B2.X, f.B2.Y, c04, lane, bf16, scratch);
        c05 = w.Mma(f.A0, f.B2.Z, f.B2.W, c05, lane, bf16, scratch);
        c06 = w.Mma(f.A0, f.B3.X, f.B3.Y, c06, lane, bf16, scratch);
        c07 = w.Mma(f.A0, f.B3.Z, f.B3.W, c07, lane, bf16, scratch);
        c10 = w.Mma(f.A1, f.B0.X, f.B0.Y, c10, lane, bf16, scratch);
        c11 = w.Mma(f.A1, f.B0.Z, f.B0.W, c11, lane, bf16, scratch);
        c12 = w.Mma(f.A1, f.B1.X, f.B1.Y, c12, lane, bf16, scratch);
        c13 = w.Mma(f.A1, f.B1.Z, f.B1.W, c13, lane, bf16, scratch);
        c14 = w.Mma(f.A1, f.B2.X, f.B2.Y, c14, lane, bf16, scratch);
        c15 = w.Mma(f.A1, f.B2.Z, f.B2.W, c15, lane, bf16, scratch);
        c16 = w.Mma(f.A1, f.B3.X, f.B3.Y, c16, lane, bf16, scratch);
        c17 = w.Mma(f.A1, f.B3.Z, f.B3.W, c17, lane, bf16, scratch);
        c20 = w.Mma(f.A2, f.B0.X, f.B0.Y, c20, lane, bf16, scratch);
        c21 = w.Mma(f.A2, f.B0.Z, f.B0.W, c21, lane, bf16, scratch);
        c22 = w.Mma(f.A2, f.B1.X, f.B1.Y, c22, lane, bf16, scratch);
        c23 = w.Mma(f.A2, f.B1.Z, f.B1.W, c23, lane, bf16, scratch);
        c24 = w.Mma(f.A2, f.B2.X, f.B2.Y, c24, lane, bf16, scratch);
        c25 = w.Mma(f.A2, f.B2.Z, f.B2.W, c25, lane, bf16, scratch);
        c26 = w.Mma(f.A2, f.B3.X, f.B3.Y, c26, lane, bf16, scratch);
        c27 = w.Mma(f.A2, f.B3.Z, f.B3.W, c27, lane, bf16, scratch);
        c30 = w.Mma(f.A3, f.B0.X, f.B0.Y, c30, lane, bf16, scratch);
        c31 = w.Mma(f.A3, f.B0.Z, f.B0.W, c31, lane, bf16, scratch);
        c32 = w.Mma(f.A3, f.B1.X, f.B1.Y, c32, lane, bf16, scratch);
        c33 = w.Mma(f.A3, f.B1.Z, f.B1.W, c33, lane, bf16, scratch);
        c34 = w.Mma(f.A3, f.B2.X, f.B2.Y, c34, lane, bf16, scratch);
        c35 = w.Mma(f.A3, f.B2.Z, f.B2.W, c35, lane, bf16, scratch);
        c36 = w.Mma(f.A3, f.B3.X, f.B3.Y, c36, lane, bf16, scratch);
        c37 = w.Mma(f.A3, f.B3.Z, f.B3.W, c37, lane, bf16, scratch);
    }

    /// <inheritdoc/>
    public readonly void StageOutput(ArrayView<ushort> s, uint sBase, uint tile, int pitch, int lane, int bf16, in MmaBias bias)
    {
        TInstr w = default;
        // c0, c1 at row g, columns 2t, 2t + 1 of each m16×n8 block; c2, c3 eight rows down.
        uint o = tile + (uint)((lane >> 2) * pitch + ((lane & 3) << 2)), down = (uint)(8 * pitch);
        w.SharedStore32(s, sBase, o + 0u, WarpMma.Pack(bias.Add(c00.X, 0), bias.Add(c00.Y, 1), bf16)); w.SharedStore32(s, sBase, o + 0u + down, WarpMma.Pack(bias.Add(c00.Z, 0), bias.Add(c00.W, 1), bf16));
        w.SharedStore32(s, sBase, o + 16u, WarpMma.Pack(bias.Add(c01.X, 8), bias.Add(c01.Y, 9), bf16)); w.SharedStore32(s, sBase, o + 16u + down, WarpMma.Pack(bias.Add(c01.Z, 8), bias.Add(c01.W, 9), bf16));
        w.SharedStore32(s, sBase, o + 32u, WarpMma.Pack(bias.Add(c02.X, 16), bias.Add(c02.Y, 17), bf16)); w.SharedStore32(s, sBase, o + 32u + down, WarpMma.Pack(bias.Add(c02.Z, 16), bias.Add(c02.W, 17), bf16));
        w.SharedStore32(s, sBase, o + 48u, WarpMma.Pack(bias.Add(c03.X, 24), bias.Add(c03.Y, 25), bf16)); w.SharedStore32(s, sBase, o + 48u + down, WarpMma.Pack(bias.Add(c03.Z, 24), bias.Add(c03.W, 25), bf16));
        w.SharedStore32(s, sBase, o + 64u, WarpMma.Pack(bias.Add(c04.X, 32), bias.Add(c04.Y, 33), bf16)); w.SharedStore32(s, sBase, o + 64u + down, WarpMma.Pack(bias.Add(c04.Z, 32), bias.Add(c04.W, 33), bf16));
        w.SharedStore32(s, sBase, o + 80u, WarpMma.Pack(bias.Add(c05.X, 40), bias.Add(c05.Y, 41), bf16)); w.SharedStore32(s, sBase, o + 80u + down, WarpMma.Pack(bias.Add(c05.Z, 40), bias.Add(c05.W, 41), bf16));
        w.SharedStore32(s, sBase, o + 96u, WarpMma.Pack(bias.Add(c06.X, 48), bias.Add(c06.Y, 49), bf16)); w.SharedStore32(s, sBase, o + 96u + down, WarpMma.Pack(bias.Add(c06.Z, 48), bias.Add(c06.W, 49), bf16));
        w.SharedStore32(s, sBase, o + 112u, WarpMma.Pack(bias.Add(c07.X, 56), bias.Add(c07.Y, 57), bf16)); w.SharedStore32(s, sBase, o + 112u + down, WarpMma.Pack(bias.Add(c07.Z, 56), bias.Add(c07.W, 57), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 0u, WarpMma.Pack(bias.Add(c10.X, 0), bias.Add(c10.Y, 1), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 0u + down, WarpMma.Pack(bias.Add(c10.Z, 0), bias.Add(c10.W, 1), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 16u, WarpMma.Pack(bias.Add(c11.X, 8), bias.Add(c11.Y, 9), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 16u + down, WarpMma.Pack(bias.Add(c11.Z, 8), bias.Add(c11.W, 9), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 32u, WarpMma.Pack(bias.Add(c12.X, 16), bias.Add(c12.Y, 17), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 32u + down, WarpMma.Pack(bias.Add(c12.Z, 16), bias.Add(c12.W, 17), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 48u, WarpMma.Pack(bias.Add(c13.X, 24), bias.Add(c13.Y, 25), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 48u + down, WarpMma.Pack(bias.Add(c13.Z, 24), bias.Add(c13.W, 25), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 64u, WarpMma.Pack(bias.Add(c14.X, 32), bias.Add(c14.Y, 33), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 64u + down, WarpMma.Pack(bias.Add(c14.Z, 32), bias.Add(c14.W, 33), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 80u, WarpMma.Pack(bias.Add(c15.X, 40), bias.Add(c15.Y, 41), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 80u + down, WarpMma.Pack(bias.Add(c15.Z, 40), bias.Add(c15.W, 41), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 96u, WarpMma.Pack(bias.Add(c16.X, 48), bias.Add(c16.Y, 49), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 96u + down, WarpMma.Pack(bias.Add(c16.Z, 48), bias.Add(c16.W, 49), bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 112u, WarpMma.Pack(bias.Add(c17.X, 56), bias.Add(c17.Y, 57), bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 112u + down, WarpMma.Pack(bias.Add(c17.Z, 56), bias.Add(c17.W, 57), bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 0u, WarpMma.Pack(bias.Add(c20.X, 0), bias.Add(c20.Y, 1), bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 0u + down, WarpMma.Pack(bias.Add(c20.Z, 0), bias.Add(c20.W, 1), bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 16u, WarpMma.Pack(bias.Add(c21.X, 8), bias.Add(c21.Y, 9), bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 16u + down, WarpMma.Pack(bias.Add(c21.Z, 8), bias.Add(c21.W, 9), bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 32u, WarpMma.Pack(bias.Add(c22.X, 16), bias.Add(c22.Y, 17), bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 32u + down, WarpMma.Pack(bias.Add(c22.Z, 16), bias.Add(c22.W, 17), bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 48u, WarpMma.Pack(bias.Add(c23.X, 24), bias.Add(c23.Y, 25), bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 48u + down, WarpMma.Pack(bias.Add(c23.Z, 24), bias.Add(c23.W, 25), bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 64u, WarpMma.Pack(bias.Add(c24.X, 32), bias.Add(c24.Y, 33), bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 64u + down, WarpMma.Pack(bias.Add(c24.Z, 32), bias.Add(c24.W, 33), bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 80u, WarpMma.Pack(bias.Add(c25.X, 40), bias.Add(c25.Y, 41), bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 80u + down, WarpMma.Pack(bias.Add(c25.Z, 40), bias.Add(c25.W, 41), bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 96u, WarpMma.Pack(bias.Add(c26.X, 48), bias.Add(c26.Y, 49), bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 96u + down, WarpMma.Pack(bias.Add(c26.Z, 48), bias.Add(c26.W, 49), bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 112u, WarpMma.Pack(bias.Add(c27.X, 56), bias.Add(c27.Y, 57), bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 112u + down, WarpMma.Pack(bias.Add(c27.Z, 56), bias.Add(c27.W, 57), bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 0u, WarpMma.Pack(bias.Add(c30.X, 0), bias.Add(c30.Y, 1), bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 0u + down, WarpMma.Pack(bias.Add(c30.Z, 0), bias.Add(c30.W, 1), bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 16u, WarpMma.Pack(bias.Add(c31.X, 8), bias.Add(c31.Y, 9), bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 16u + down, WarpMma.Pack(bias.Add(c31.Z, 8), bias.Add(c31.W, 9), bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 32u, WarpMma.Pack(bias.Add(c32.X, 16), bias.Add(c32.Y, 17), bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 32u + down, WarpMma.Pack(bias.Add(c32.Z, 16), bias.Add(c32.W, 17), bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 48u, WarpMma.Pack(bias.Add(c33.X, 24), bias.Add(c33.Y, 25), bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 48u + down, WarpMma.Pack(bias.Add(c33.Z, 24), bias.Add(c33.W, 25), bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 64u, WarpMma.Pack(bias.Add(c34.X, 32), bias.Add(c34.Y, 33), bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 64u + down, WarpMma.Pack(bias.Add(c34.Z, 32), bias.Add(c34.W, 33), bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 80u, WarpMma.Pack(bias.Add(c35.X, 40), bias.Add(c35.Y, 41), bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 80u + down, WarpMma.Pack(bias.Add(c35.Z, 40), bias.Add(c35.W, 41), bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 96u, WarpMma.Pack(bias.Add(c36.X, 48), bias.Add(c36.Y, 49), bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 96u + down, WarpMma.Pack(bias.Add(c36.Z, 48), bias.Add(c36.W, 49), bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 112u, WarpMma.Pack(bias.Add(c37.X, 56), bias.Add(c37.Y, 57), bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 112u + down, WarpMma.Pack(bias.Add(c37.Z, 56), bias.Add(c37.W, 57), bf16));
    }

    /// <inheritdoc/>
    public readonly void StoreFloat32(ArrayView<float> y, long origin, int ldy, int rowsLeft, int colsLeft, int lane)
    {
        // c0, c1 at row g, columns 2t, 2t + 1 of each m16×n8 block; c2, c3 eight rows down.
        int r = lane >> 2, c = (lane & 3) << 1;
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 0, c00.X, c00.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 0, c00.Z, c00.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 8, c01.X, c01.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 8, c01.Z, c01.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 16, c02.X, c02.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 16, c02.Z, c02.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 24, c03.X, c03.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 24, c03.Z, c03.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 32, c04.X, c04.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 32, c04.Z, c04.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 40, c05.X, c05.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 40, c05.Z, c05.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 48, c06.X, c06.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 48, c06.Z, c06.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 0, c + 56, c07.X, c07.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 8, c + 56, c07.Z, c07.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 0, c10.X, c10.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 0, c10.Z, c10.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 8, c11.X, c11.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 8, c11.Z, c11.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 16, c12.X, c12.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 16, c12.Z, c12.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 24, c13.X, c13.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 24, c13.Z, c13.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 32, c14.X, c14.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 32, c14.Z, c14.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 40, c15.X, c15.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 40, c15.Z, c15.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 48, c16.X, c16.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 48, c16.Z, c16.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 16, c + 56, c17.X, c17.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 24, c + 56, c17.Z, c17.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 32, c + 0, c20.X, c20.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 40, c + 0, c20.Z, c20.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 32, c + 8, c21.X, c21.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 40, c + 8, c21.Z, c21.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 32, c + 16, c22.X, c22.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 40, c + 16, c22.Z, c22.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 32, c + 24, c23.X, c23.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 40, c + 24, c23.Z, c23.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 32, c + 32, c24.X, c24.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 40, c + 32, c24.Z, c24.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 32, c + 40, c25.X, c25.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 40, c + 40, c25.Z, c25.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 32, c + 48, c26.X, c26.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 40, c + 48, c26.Z, c26.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 32, c + 56, c27.X, c27.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 40, c + 56, c27.Z, c27.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 48, c + 0, c30.X, c30.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 56, c + 0, c30.Z, c30.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 48, c + 8, c31.X, c31.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 56, c + 8, c31.Z, c31.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 48, c + 16, c32.X, c32.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 56, c + 16, c32.Z, c32.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 48, c + 24, c33.X, c33.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 56, c + 24, c33.Z, c33.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 48, c + 32, c34.X, c34.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 56, c + 32, c34.Z, c34.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 48, c + 40, c35.X, c35.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 56, c + 40, c35.Z, c35.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 48, c + 48, c36.X, c36.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 56, c + 48, c36.Z, c36.W);
        MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 48, c + 56, c37.X, c37.Y); MmaFloat32Store.Pair(y, origin, ldy, rowsLeft, colsLeft, r + 56, c + 56, c37.Z, c37.W);
    }
}

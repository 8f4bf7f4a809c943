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
    public readonly void StageOutput(ArrayView<ushort> s, uint sBase, uint tile, int pitch, int lane, int bf16)
    {
        TInstr w = default;
        // c0, c1 at row g, columns 2t, 2t + 1 of each m16×n8 block; c2, c3 eight rows down.
        uint o = tile + (uint)((lane >> 2) * pitch + ((lane & 3) << 2)), down = (uint)(8 * pitch);
        w.SharedStore32(s, sBase, o + 0u, WarpMma.Pack(c00.X, c00.Y, bf16)); w.SharedStore32(s, sBase, o + 0u + down, WarpMma.Pack(c00.Z, c00.W, bf16));
        w.SharedStore32(s, sBase, o + 16u, WarpMma.Pack(c01.X, c01.Y, bf16)); w.SharedStore32(s, sBase, o + 16u + down, WarpMma.Pack(c01.Z, c01.W, bf16));
        w.SharedStore32(s, sBase, o + 32u, WarpMma.Pack(c02.X, c02.Y, bf16)); w.SharedStore32(s, sBase, o + 32u + down, WarpMma.Pack(c02.Z, c02.W, bf16));
        w.SharedStore32(s, sBase, o + 48u, WarpMma.Pack(c03.X, c03.Y, bf16)); w.SharedStore32(s, sBase, o + 48u + down, WarpMma.Pack(c03.Z, c03.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 0u, WarpMma.Pack(c10.X, c10.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 0u + down, WarpMma.Pack(c10.Z, c10.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 16u, WarpMma.Pack(c11.X, c11.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 16u + down, WarpMma.Pack(c11.Z, c11.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 32u, WarpMma.Pack(c12.X, c12.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 32u + down, WarpMma.Pack(c12.Z, c12.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 48u, WarpMma.Pack(c13.X, c13.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 48u + down, WarpMma.Pack(c13.Z, c13.W, bf16));
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
    public readonly void StageOutput(ArrayView<ushort> s, uint sBase, uint tile, int pitch, int lane, int bf16)
    {
        TInstr w = default;
        // c0, c1 at row g, columns 2t, 2t + 1 of each m16×n8 block; c2, c3 eight rows down.
        uint o = tile + (uint)((lane >> 2) * pitch + ((lane & 3) << 2)), down = (uint)(8 * pitch);
        w.SharedStore32(s, sBase, o + 0u, WarpMma.Pack(c00.X, c00.Y, bf16)); w.SharedStore32(s, sBase, o + 0u + down, WarpMma.Pack(c00.Z, c00.W, bf16));
        w.SharedStore32(s, sBase, o + 16u, WarpMma.Pack(c01.X, c01.Y, bf16)); w.SharedStore32(s, sBase, o + 16u + down, WarpMma.Pack(c01.Z, c01.W, bf16));
        w.SharedStore32(s, sBase, o + 32u, WarpMma.Pack(c02.X, c02.Y, bf16)); w.SharedStore32(s, sBase, o + 32u + down, WarpMma.Pack(c02.Z, c02.W, bf16));
        w.SharedStore32(s, sBase, o + 48u, WarpMma.Pack(c03.X, c03.Y, bf16)); w.SharedStore32(s, sBase, o + 48u + down, WarpMma.Pack(c03.Z, c03.W, bf16));
        w.SharedStore32(s, sBase, o + 64u, WarpMma.Pack(c04.X, c04.Y, bf16)); w.SharedStore32(s, sBase, o + 64u + down, WarpMma.Pack(c04.Z, c04.W, bf16));
        w.SharedStore32(s, sBase, o + 80u, WarpMma.Pack(c05.X, c05.Y, bf16)); w.SharedStore32(s, sBase, o + 80u + down, WarpMma.Pack(c05.Z, c05.W, bf16));
        w.SharedStore32(s, sBase, o + 96u, WarpMma.Pack(c06.X, c06.Y, bf16)); w.SharedStore32(s, sBase, o + 96u + down, WarpMma.Pack(c06.Z, c06.W, bf16));
        w.SharedStore32(s, sBase, o + 112u, WarpMma.Pack(c07.X, c07.Y, bf16)); w.SharedStore32(s, sBase, o + 112u + down, WarpMma.Pack(c07.Z, c07.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 0u, WarpMma.Pack(c10.X, c10.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 0u + down, WarpMma.Pack(c10.Z, c10.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 16u, WarpMma.Pack(c11.X, c11.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 16u + down, WarpMma.Pack(c11.Z, c11.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 32u, WarpMma.Pack(c12.X, c12.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 32u + down, WarpMma.Pack(c12.Z, c12.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 48u, WarpMma.Pack(c13.X, c13.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 48u + down, WarpMma.Pack(c13.Z, c13.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 64u, WarpMma.Pack(c14.X, c14.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 64u + down, WarpMma.Pack(c14.Z, c14.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 80u, WarpMma.Pack(c15.X, c15.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 80u + down, WarpMma.Pack(c15.Z, c15.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 96u, WarpMma.Pack(c16.X, c16.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 96u + down, WarpMma.Pack(c16.Z, c16.W, bf16));
        w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 112u, WarpMma.Pack(c17.X, c17.Y, bf16)); w.SharedStore32(s, sBase, o + 16u * (uint)pitch + 112u + down, WarpMma.Pack(c17.Z, c17.W, bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 0u, WarpMma.Pack(c20.X, c20.Y, bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 0u + down, WarpMma.Pack(c20.Z, c20.W, bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 16u, WarpMma.Pack(c21.X, c21.Y, bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 16u + down, WarpMma.Pack(c21.Z, c21.W, bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 32u, WarpMma.Pack(c22.X, c22.Y, bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 32u + down, WarpMma.Pack(c22.Z, c22.W, bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 48u, WarpMma.Pack(c23.X, c23.Y, bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 48u + down, WarpMma.Pack(c23.Z, c23.W, bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 64u, WarpMma.Pack(c24.X, c24.Y, bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 64u + down, WarpMma.Pack(c24.Z, c24.W, bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 80u, WarpMma.Pack(c25.X, c25.Y, bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 80u + down, WarpMma.Pack(c25.Z, c25.W, bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 96u, WarpMma.Pack(c26.X, c26.Y, bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 96u + down, WarpMma.Pack(c26.Z, c26.W, bf16));
        w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 112u, WarpMma.Pack(c27.X, c27.Y, bf16)); w.SharedStore32(s, sBase, o + 32u * (uint)pitch + 112u + down, WarpMma.Pack(c27.Z, c27.W, bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 0u, WarpMma.Pack(c30.X, c30.Y, bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 0u + down, WarpMma.Pack(c30.Z, c30.W, bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 16u, WarpMma.Pack(c31.X, c31.Y, bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 16u + down, WarpMma.Pack(c31.Z, c31.W, bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 32u, WarpMma.Pack(c32.X, c32.Y, bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 32u + down, WarpMma.Pack(c32.Z, c32.W, bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 48u, WarpMma.Pack(c33.X, c33.Y, bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 48u + down, WarpMma.Pack(c33.Z, c33.W, bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 64u, WarpMma.Pack(c34.X, c34.Y, bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 64u + down, WarpMma.Pack(c34.Z, c34.W, bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 80u, WarpMma.Pack(c35.X, c35.Y, bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 80u + down, WarpMma.Pack(c35.Z, c35.W, bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 96u, WarpMma.Pack(c36.X, c36.Y, bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 96u + down, WarpMma.Pack(c36.Z, c36.W, bf16));
        w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 112u, WarpMma.Pack(c37.X, c37.Y, bf16)); w.SharedStore32(s, sBase, o + 48u * (uint)pitch + 112u + down, WarpMma.Pack(c37.Z, c37.W, bf16));
    }
}

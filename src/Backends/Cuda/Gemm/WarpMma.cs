using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime.Cuda;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Gemm;

/// <summary>Four 32-bit registers: an ldmatrix.x4 result, or an m16n8k16 A fragment (a0..a3 as X..W).</summary>
public struct U4
{
#pragma warning disable CS1591
    public uint X, Y, Z, W;
#pragma warning restore CS1591
}

/// <summary>
/// The two warp-level instructions of the tensor-core GEMM, <c>ldmatrix.sync.aligned.m8n8.x4.shared.b16</c> and
/// <c>mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32</c>, as a type parameter of the kernel:
/// <see cref="PtxWarpMmaBf16"/> and <see cref="PtxWarpMmaF16"/> issue the inline PTX on a GPU (where
/// <see cref="CudaAsm.IsSupported"/>);
/// <see cref="EmulatedWarpMma"/>, on ILGPU's CPU accelerator, computes what the instruction computes from the same
/// per-lane registers, exchanged between the lanes of the warp. So the tiling and the fragment indexing run in CI; only
/// the PTX strings wait for a GPU. The host picks the type from the accelerator rather than branching on
/// <see cref="CudaAsm.IsSupported"/> in the kernel, because ILGPU lowers that property to a run-time compare and every
/// PTX would carry the whole emulation (42,000 lines of PTX for ptxas to JIT instead of 15,000 for the 128×128 kernel).
/// The PTX kernels take the input type as a type too, so no branch splits the inner loop's mma's.
/// </summary>
public interface IWarpMma
{
    /// <summary>Words of shared scratch per warp the instructions need (the emulation's exchange area; 1 for PTX).</summary>
    int ScratchWords { get; }

    /// <summary>1 for bfloat16 inputs, 0 for float16, −1 when the kernel's argument says (the emulation serves both).</summary>
    int InputIsBf16 { get; }

    /// <summary>
    /// ldmatrix.x4 from the kernel's shared allocation <paramref name="s"/>: <paramref name="offset"/> is this lane's
    /// row address in half words (16-byte aligned on a GPU). Every lane of the warp must call it.
    /// </summary>
    U4 LoadMatrixX4(ArrayView<ushort> s, int offset, int lane, ArrayView<uint> scratch);

    /// <summary>
    /// mma.sync m16n8k16 row.col with float32 accumulation: this lane's D fragment for A fragment <paramref name="a"/>,
    /// B fragment (<paramref name="b0"/>, <paramref name="b1"/>) and C fragment <paramref name="c"/>;
    /// <paramref name="bf16"/> selects bfloat16 (1) or float16 (0) inputs. Every lane of the warp must call it.
    /// </summary>
    F4 Mma(U4 a, uint b0, uint b1, F4 c, int lane, int bf16, ArrayView<uint> scratch);
}

/// <summary>The warp instructions as inline PTX (a GPU only), on bfloat16 inputs.</summary>
public readonly struct PtxWarpMmaBf16 : IWarpMma
{
    /// <inheritdoc/>
    public int ScratchWords => 1;

    /// <inheritdoc/>
    public int InputIsBf16 => 1;

    /// <inheritdoc/>
    public U4 LoadMatrixX4(ArrayView<ushort> s, int offset, int lane, ArrayView<uint> scratch) => WarpMma.IssueLoadMatrixX4(offset);

    /// <inheritdoc/>
    public F4 Mma(U4 a, uint b0, uint b1, F4 c, int lane, int bf16, ArrayView<uint> scratch) => WarpMma.IssueMmaBf16(a, b0, b1, c);
}

/// <summary>The warp instructions as inline PTX (a GPU only), on float16 inputs.</summary>
public readonly struct PtxWarpMmaF16 : IWarpMma
{
    /// <inheritdoc/>
    public int ScratchWords => 1;

    /// <inheritdoc/>
    public int InputIsBf16 => 0;

    /// <inheritdoc/>
    public U4 LoadMatrixX4(ArrayView<ushort> s, int offset, int lane, ArrayView<uint> scratch) => WarpMma.IssueLoadMatrixX4(offset);

    /// <inheritdoc/>
    public F4 Mma(U4 a, uint b0, uint b1, F4 c, int lane, int bf16, ArrayView<uint> scratch) => WarpMma.IssueMmaF16(a, b0, b1, c);
}

/// <summary>The warp instructions emulated in C# (ILGPU's CPU accelerator): see <see cref="WarpMma.MmaEmulated"/>.</summary>
public readonly struct EmulatedWarpMma : IWarpMma
{
    /// <inheritdoc/>
    public int ScratchWords => WarpMma.ScratchWords;

    /// <inheritdoc/>
    public int InputIsBf16 => -1;

    /// <inheritdoc/>
    public U4 LoadMatrixX4(ArrayView<ushort> s, int offset, int lane, ArrayView<uint> scratch) =>
        WarpMma.LoadMatrixX4Emulated(s, offset, lane, scratch);

    /// <inheritdoc/>
    public F4 Mma(U4 a, uint b0, uint b1, F4 c, int lane, int bf16, ArrayView<uint> scratch) =>
        WarpMma.MmaEmulated(a, b0, b1, c, lane, bf16, scratch);
}

/// <summary>
/// The PTX of the warp instructions, their emulation, and the fragment index arithmetic the warp tiles share.
/// <para>
/// Fragment layouts, from the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point type" and
/// "Warp-level matrix load instruction: ldmatrix"), with g = lane / 4 (groupID) and t = lane % 4 (threadID_in_group);
/// the lower-indexed of two packed 16-bit values sits in the low half of the register:
/// A (16×16, row): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9].
/// B (16×8, col): b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g].
/// C/D (16×8, float32): c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1].
/// ldmatrix.x4: lane 8j + r supplies the address of row r of matrix j; register j of lane l receives row l / 4,
/// elements 2(l % 4) and 2(l % 4) + 1 of matrix j.
/// </para>
/// </summary>
public static class WarpMma
{
    /// <summary>
    /// The PTX that loads four 8×8 matrices of 16-bit values from shared memory. ILGPU's <c>LoadEffectiveAddress</c> does
    /// not work inside kernels, so the address is formed from the name ILGPU gives a kernel's first shared allocation,
    /// <c>__shared_alloca0</c> (the tensor-core kernel makes exactly one; a test compiles the kernel to PTX and checks
    /// the name, its size and its 16-byte alignment). %4 is the byte offset into that allocation.
    /// </summary>
    public const string LoadMatrixX4Ptx =
        "{ .reg .u32 s; mov.u32 s, __shared_alloca0; add.u32 s, s, %4; ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [s]; }";

    /// <summary>D = A·B + C on bfloat16 inputs with float32 accumulation (C and D share registers %0..%3).</summary>
    public const string MmaBf16Ptx =
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};";

    /// <summary>D = A·B + C on float16 inputs with float32 accumulation.</summary>
    public const string MmaF16Ptx =
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};";

    /// <summary>Issues <see cref="LoadMatrixX4Ptx"/> for this lane's row at <paramref name="offset"/> half words.</summary>
    public static U4 IssueLoadMatrixX4(int offset)
    {
        Output<uint> r0 = default, r1 = default, r2 = default, r3 = default;
        Input<uint> bytes = (uint)(offset << 1);
        CudaAsm.EmitRef(LoadMatrixX4Ptx, ref r0, ref r1, ref r2, ref r3, ref bytes);
        return new U4 { X = r0.Value, Y = r1.Value, Z = r2.Value, W = r3.Value };
    }

    /// <summary>Issues <see cref="MmaBf16Ptx"/>.</summary>
    public static F4 IssueMmaBf16(U4 a, uint b0, uint b1, F4 c)
    {
        Ref<float> d0 = c.X, d1 = c.Y, d2 = c.Z, d3 = c.W;
        Input<uint> a0 = a.X, a1 = a.Y, a2 = a.Z, a3 = a.W, x0 = b0, x1 = b1;
        CudaAsm.EmitRef(MmaBf16Ptx, ref d0, ref d1, ref d2, ref d3, ref a0, ref a1, ref a2, ref a3, ref x0, ref x1);
        return new F4 { X = d0.Value, Y = d1.Value, Z = d2.Value, W = d3.Value };
    }

    /// <summary>Issues <see cref="MmaF16Ptx"/>.</summary>
    public static F4 IssueMmaF16(U4 a, uint b0, uint b1, F4 c)
    {
        Ref<float> d0 = c.X, d1 = c.Y, d2 = c.Z, d3 = c.W;
        Input<uint> a0 = a.X, a1 = a.Y, a2 = a.Z, a3 = a.W, x0 = b0, x1 = b1;
        CudaAsm.EmitRef(MmaF16Ptx, ref d0, ref d1, ref d2, ref d3, ref a0, ref a1, ref a2, ref a3, ref x0, ref x1);
        return new F4 { X = d0.Value, Y = d1.Value, Z = d2.Value, W = d3.Value };
    }

    /// <summary>This lane's row address (in half words, relative to the warp's first A row) for an A fragment load.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ALaneOffset(int lane, int pitch) =>
        // Matrices 0..3 = (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15): a0..a3.
        (lane & 15) * pitch + ((lane >> 4) << 3);

    /// <summary>This lane's row address for a B fragment load covering two n8 blocks (B stored [n][k]).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int BLaneOffset(int lane, int pitch) =>
        // Matrices 0..3 = (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15): b0, b1 of two n blocks.
        ((lane & 7) + ((lane >> 4) << 3)) * pitch + (((lane >> 3) & 1) << 3);

    /// <summary>Words of emulation scratch each warp needs (see <see cref="LoadMatrixX4Emulated"/>, <see cref="MmaEmulated"/>).</summary>
    public const int ScratchWords = 32 * 6;

    /// <summary>
    /// What ldmatrix.x4 computes: register j of lane l is word l % 4 of the row whose address lane 8j + l / 4 holds.
    /// Lanes exchange values through the warp's <paramref name="scratch"/> between two warp barriers (each lane
    /// publishes only its own register, and reads only what the instruction routes to it): the same data flow as warp
    /// shuffles, at one exchange instead of one shuffle per value, which matters on ILGPU's CPU accelerator where a
    /// shuffle costs milliseconds.
    /// </summary>
    public static U4 LoadMatrixX4Emulated(ArrayView<ushort> s, int offset, int lane, ArrayView<uint> scratch)
    {
        scratch[lane] = (uint)offset;
        Warp.Barrier();
        int row = lane >> 2, word = (lane & 3) << 1;
        int r0 = (int)scratch[row], r1 = (int)scratch[8 + row], r2 = (int)scratch[16 + row], r3 = (int)scratch[24 + row];
        Warp.Barrier();
        return new U4 { X = Pair(s, r0 + word), Y = Pair(s, r1 + word), Z = Pair(s, r2 + word), W = Pair(s, r3 + word) };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static uint Pair(ArrayView<ushort> s, int i) => s[i] | (uint)s[i + 1] << 16;

    /// <summary>
    /// What the mma computes, from the fragments alone: every lane publishes its a0..a3, b0, b1 in the warp's
    /// <paramref name="scratch"/> (as <see cref="LoadMatrixX4Emulated"/> does); lane (g, t) then reads rows g and
    /// g + 8 of A from lanes 4g..4g+3 and columns 2t and 2t + 1 of B from lanes 8t..8t+3 and 8t+4..8t+7, and adds the
    /// products (exact in float32 for 16-bit inputs) to C in ascending k.
    /// </summary>
    public static F4 MmaEmulated(U4 a, uint b0, uint b1, F4 c, int lane, int bf16, ArrayView<uint> scratch)
    {
        int me = lane * 6;
        scratch[me] = a.X; scratch[me + 1] = a.Y; scratch[me + 2] = a.Z; scratch[me + 3] = a.W;
        scratch[me + 4] = b0; scratch[me + 5] = b1;
        Warp.Barrier();
        int rowLanes = (lane >> 2) << 2, col0 = (lane & 3) << 3, col1 = col0 + 4;
        float d0 = c.X, d1 = c.Y, d2 = c.Z, d3 = c.W;
        for (int half = 0; half < 2; half++)
        {
            // k = 8·half + 2q, 8·half + 2q + 1 sit in a0 (row g) and a1 (row g + 8), or a2 and a3, and in b0 or b1 of
            // thread q of the source group.
            for (int q = 0; q < 4; q++)
            {
                int src = (rowLanes + q) * 6 + 2 * half;
                uint x0 = scratch[src], x1 = scratch[src + 1];
                uint y0 = scratch[(col0 + q) * 6 + 4 + half], y1 = scratch[(col1 + q) * 6 + 4 + half];
                d0 = Dot2(x0, y0, d0, bf16); d1 = Dot2(x0, y1, d1, bf16);
                d2 = Dot2(x1, y0, d2, bf16); d3 = Dot2(x1, y1, d3, bf16);
            }
        }
        Warp.Barrier();
        return new F4 { X = d0, Y = d1, Z = d2, W = d3 };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Dot2(uint x, uint y, float acc, int bf16) =>
        acc + Lo(x, bf16) * Lo(y, bf16) + Hi(x, bf16) * Hi(y, bf16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Lo(uint v, int bf16) => bf16 != 0 ? Bf16ToFloat((ushort)v) : HalfToFloat((ushort)v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Hi(uint v, int bf16) => bf16 != 0 ? Bf16ToFloat((ushort)(v >> 16)) : HalfToFloat((ushort)(v >> 16));

    /// <summary>
    /// Writes an accumulator fragment of the m16×n8 block at (<paramref name="row"/>, <paramref name="col"/>): c0, c1 at
    /// row g, columns 2t, 2t + 1; c2, c3 at row g + 8. Values outside [m, n] are dropped; each is rounded once to
    /// bfloat16 (<paramref name="bf16"/> = 1) or float16.
    /// </summary>
    public static void StoreAccumulator(ArrayView<byte> y, long yBase, int row, int col, int lane, int m, int n, int bf16, F4 c)
    {
        var h = y.Cast<ushort>();
        int r = row + (lane >> 2), j = col + ((lane & 3) << 1);
        if (r < m)
        {
            long o = yBase + (long)r * n + j;
            if (j < n) h[o] = Round(c.X, bf16);
            if (j + 1 < n) h[o + 1] = Round(c.Y, bf16);
        }
        r += 8;
        if (r < m)
        {
            long o = yBase + (long)r * n + j;
            if (j < n) h[o] = Round(c.Z, bf16);
            if (j + 1 < n) h[o + 1] = Round(c.W, bf16);
        }
    }

    // One rounding to the half type, bit-exact with the CPU backend's conversions.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ushort Round(float x, int bf16) =>
        bf16 != 0 ? FloatToBf16(Interop.FloatAsInt(x)) : FloatToHalf(Interop.FloatAsInt(x));
}

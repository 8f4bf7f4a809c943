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
/// The instructions of the tensor-core GEMM that have no C# form, as a type parameter of the kernel:
/// <c>ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16</c>, <c>mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32</c>,
/// the 16-byte asynchronous copy <c>cp.async.cg.shared.global</c> with its commit and wait, and the 16-byte shared and
/// global accesses of the epilogue. <see cref="PtxWarpMmaBf16"/> and <see cref="PtxWarpMmaF16"/> issue inline PTX on a
/// GPU (where <see cref="CudaAsm.IsSupported"/>); <see cref="EmulatedWarpMma"/>, on ILGPU's CPU accelerator, computes
/// what each instruction computes: per-lane registers exchanged between the lanes of the warp, the asynchronous copy as
/// a plain copy that is complete at once (so commit and wait are nothing, and the kernel's barriers still order the
/// stages: the pipeline's stage indexing and barrier placement run in CI). Shared memory is addressed two ways at once:
/// a 32-bit shared-window byte address (<c>sBase + byteOffset</c>, what the PTX takes; <c>sBase</c> is read once per
/// kernel by <see cref="SharedBase"/>) and the view <c>s</c> with the same byte offset (what the emulation indexes);
/// global memory likewise as a 64-bit byte address and a view with an element index. Each implementation ignores the
/// other form, and ILGPU removes its arithmetic as dead code. The host picks the type from the accelerator rather than
/// branching on <see cref="CudaAsm.IsSupported"/> in the kernel, because ILGPU lowers that property to a run-time
/// compare and every PTX would carry the whole emulation.
/// </summary>
public interface IWarpMma
{
    /// <summary>Words of shared scratch per warp the instructions need (the emulation's exchange area; 0 for PTX).</summary>
    int ScratchWords { get; }

    /// <summary>1 for bfloat16 inputs, 0 for float16, −1 when the kernel's argument says (the emulation serves both).</summary>
    int InputIsBf16 { get; }

    /// <summary>The 32-bit shared-window address of the kernel's first shared allocation (0 under emulation).</summary>
    uint SharedBase();

    /// <summary>
    /// ldmatrix.x4 (<paramref name="trans"/> = 0) or ldmatrix.x4.trans (1, a compile-time constant) from the kernel's
    /// shared allocation: <paramref name="byteOffset"/> is this lane's row address (16-byte aligned). Every lane of the
    /// warp must call it.
    /// </summary>
    U4 LoadMatrixX4(ArrayView<ushort> s, uint sBase, uint byteOffset, int trans, int lane, ArrayView<uint> scratch);

    /// <summary>
    /// mma.sync m16n8k16 row.col with float32 accumulation: this lane's D fragment for A fragment <paramref name="a"/>,
    /// B fragment (<paramref name="b0"/>, <paramref name="b1"/>) and C fragment <paramref name="c"/>;
    /// <paramref name="bf16"/> selects bfloat16 (1) or float16 (0) inputs. Every lane of the warp must call it.
    /// </summary>
    F4 Mma(U4 a, uint b0, uint b1, F4 c, int lane, int bf16, ArrayView<uint> scratch);

    /// <summary>
    /// cp.async.cg of 16 bytes from global (<paramref name="gAddress"/>, element <paramref name="gIndex"/> of
    /// <paramref name="g"/>) to shared; only the first <paramref name="bytes"/> (0..16, even) are read, the rest of the
    /// 16 are zero-filled (cp.async's src-size). Both addresses 16-byte aligned.
    /// </summary>
    void CopyAsync16(ArrayView<ushort> s, uint sBase, uint byteOffset, ArrayView<ushort> g, long gIndex, long gAddress, int bytes);

    /// <summary>cp.async.commit_group: the copies issued since the last commit form one group.</summary>
    void CommitGroup();

    /// <summary>cp.async.wait_group 1: all but the most recent group have landed (this thread's copies).</summary>
    void WaitGroupAllButOne();

    /// <summary>cp.async.wait_group 0: every group has landed.</summary>
    void WaitGroupAll();

    /// <summary>A 4-byte shared store.</summary>
    void SharedStore32(ArrayView<ushort> s, uint sBase, uint byteOffset, uint value);

    /// <summary>A 16-byte shared load (16-byte aligned).</summary>
    U4 SharedLoad128(ArrayView<ushort> s, uint sBase, uint byteOffset);

    /// <summary>A 16-byte global store at <paramref name="address"/> (element <paramref name="index"/> of <paramref name="y"/>), 16-byte aligned.</summary>
    void GlobalStore128(ArrayView<ushort> y, long index, long address, U4 value);
}

/// <summary>The instructions as inline PTX (a GPU only), on bfloat16 inputs.</summary>
public readonly struct PtxWarpMmaBf16 : IWarpMma
{
    /// <inheritdoc/>
    public int ScratchWords => 0;

    /// <inheritdoc/>
    public int InputIsBf16 => 1;

    /// <inheritdoc/>
    public uint SharedBase() => WarpMma.IssueSharedBase();

    /// <inheritdoc/>
    public U4 LoadMatrixX4(ArrayView<ushort> s, uint sBase, uint byteOffset, int trans, int lane, ArrayView<uint> scratch) =>
        trans != 0 ? WarpMma.IssueLoadMatrixX4Trans(sBase + byteOffset) : WarpMma.IssueLoadMatrixX4(sBase + byteOffset);

    /// <inheritdoc/>
    public F4 Mma(U4 a, uint b0, uint b1, F4 c, int lane, int bf16, ArrayView<uint> scratch) => WarpMma.IssueMmaBf16(a, b0, b1, c);

    /// <inheritdoc/>
    public void CopyAsync16(ArrayView<ushort> s, uint sBase, uint byteOffset, ArrayView<ushort> g, long gIndex, long gAddress, int bytes) =>
        WarpMma.IssueCopyAsync16(sBase + byteOffset, gAddress, bytes);

    /// <inheritdoc/>
    public void CommitGroup() => CudaAsm.Emit(WarpMma.CommitGroupPtx);

    /// <inheritdoc/>
    public void WaitGroupAllButOne() => CudaAsm.Emit(WarpMma.WaitGroup1Ptx);

    /// <inheritdoc/>
    public void WaitGroupAll() => CudaAsm.Emit(WarpMma.WaitGroup0Ptx);

    /// <inheritdoc/>
    public void SharedStore32(ArrayView<ushort> s, uint sBase, uint byteOffset, uint value) => WarpMma.StoreThroughView(s, byteOffset, value);

    /// <inheritdoc/>
    public U4 SharedLoad128(ArrayView<ushort> s, uint sBase, uint byteOffset) => WarpMma.IssueSharedLoad128(sBase + byteOffset);

    /// <inheritdoc/>
    public void GlobalStore128(ArrayView<ushort> y, long index, long address, U4 value) => WarpMma.IssueGlobalStore128(address, value);
}

/// <summary>The instructions as inline PTX (a GPU only), on float16 inputs.</summary>
public readonly struct PtxWarpMmaF16 : IWarpMma
{
    /// <inheritdoc/>
    public int ScratchWords => 0;

    /// <inheritdoc/>
    public int InputIsBf16 => 0;

    /// <inheritdoc/>
    public uint SharedBase() => WarpMma.IssueSharedBase();

    /// <inheritdoc/>
    public U4 LoadMatrixX4(ArrayView<ushort> s, uint sBase, uint byteOffset, int trans, int lane, ArrayView<uint> scratch) =>
        trans != 0 ? WarpMma.IssueLoadMatrixX4Trans(sBase + byteOffset) : WarpMma.IssueLoadMatrixX4(sBase + byteOffset);

    /// <inheritdoc/>
    public F4 Mma(U4 a, uint b0, uint b1, F4 c, int lane, int bf16, ArrayView<uint> scratch) => WarpMma.IssueMmaF16(a, b0, b1, c);

    /// <inheritdoc/>
    public void CopyAsync16(ArrayView<ushort> s, uint sBase, uint byteOffset, ArrayView<ushort> g, long gIndex, long gAddress, int bytes) =>
        WarpMma.IssueCopyAsync16(sBase + byteOffset, gAddress, bytes);

    /// <inheritdoc/>
    public void CommitGroup() => CudaAsm.Emit(WarpMma.CommitGroupPtx);

    /// <inheritdoc/>
    public void WaitGroupAllButOne() => CudaAsm.Emit(WarpMma.WaitGroup1Ptx);

    /// <inheritdoc/>
    public void WaitGroupAll() => CudaAsm.Emit(WarpMma.WaitGroup0Ptx);

    /// <inheritdoc/>
    public void SharedStore32(ArrayView<ushort> s, uint sBase, uint byteOffset, uint value) => WarpMma.StoreThroughView(s, byteOffset, value);

    /// <inheritdoc/>
    public U4 SharedLoad128(ArrayView<ushort> s, uint sBase, uint byteOffset) => WarpMma.IssueSharedLoad128(sBase + byteOffset);

    /// <inheritdoc/>
    public void GlobalStore128(ArrayView<ushort> y, long index, long address, U4 value) => WarpMma.IssueGlobalStore128(address, value);
}

/// <summary>The instructions emulated in C# (ILGPU's CPU accelerator): see <see cref="WarpMma.MmaEmulated"/>.</summary>
public readonly struct EmulatedWarpMma : IWarpMma
{
    /// <inheritdoc/>
    public int ScratchWords => WarpMma.ScratchWords;

    /// <inheritdoc/>
    public int InputIsBf16 => -1;

    /// <inheritdoc/>
    public uint SharedBase() => 0;

    /// <inheritdoc/>
    public U4 LoadMatrixX4(ArrayView<ushort> s, uint sBase, uint byteOffset, int trans, int lane, ArrayView<uint> scratch) =>
        trans != 0 ? WarpMma.LoadMatrixX4TransEmulated(s, (int)(byteOffset >> 1), lane, scratch) : WarpMma.LoadMatrixX4Emulated(s, (int)(byteOffset >> 1), lane, scratch);

    /// <inheritdoc/>
    public F4 Mma(U4 a, uint b0, uint b1, F4 c, int lane, int bf16, ArrayView<uint> scratch) =>
        WarpMma.MmaEmulated(a, b0, b1, c, lane, bf16, scratch);

    /// <inheritdoc/>
    public void CopyAsync16(ArrayView<ushort> s, uint sBase, uint byteOffset, ArrayView<ushort> g, long gIndex, long gAddress, int bytes)
    {
        int d = (int)(byteOffset >> 1), n = bytes >> 1;
        for (int e = 0; e < 8; e++) s[d + e] = e < n ? g[gIndex + e] : (ushort)0;
    }

    /// <inheritdoc/>
    public void CommitGroup() { }

    /// <inheritdoc/>
    public void WaitGroupAllButOne() { }

    /// <inheritdoc/>
    public void WaitGroupAll() { }

    /// <inheritdoc/>
    public void SharedStore32(ArrayView<ushort> s, uint sBase, uint byteOffset, uint value)
    {
        int d = (int)(byteOffset >> 1);
        s[d] = (ushort)value;
        s[d + 1] = (ushort)(value >> 16);
    }

    /// <inheritdoc/>
    public U4 SharedLoad128(ArrayView<ushort> s, uint sBase, uint byteOffset)
    {
        int d = (int)(byteOffset >> 1);
        return new U4 { X = Pair(s, d), Y = Pair(s, d + 2), Z = Pair(s, d + 4), W = Pair(s, d + 6) };
    }

    /// <inheritdoc/>
    public void GlobalStore128(ArrayView<ushort> y, long index, long address, U4 value)
    {
        y[index] = (ushort)value.X; y[index + 1] = (ushort)(value.X >> 16);
        y[index + 2] = (ushort)value.Y; y[index + 3] = (ushort)(value.Y >> 16);
        y[index + 4] = (ushort)value.Z; y[index + 5] = (ushort)(value.Z >> 16);
        y[index + 6] = (ushort)value.W; y[index + 7] = (ushort)(value.W >> 16);
    }

    static uint Pair(ArrayView<ushort> s, int i) => s[i] | (uint)s[i + 1] << 16;
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
    /// The shared-window address of the kernel's first shared allocation, read once per kernel: ILGPU's
    /// <c>LoadEffectiveAddress</c> does not work inside kernels, so the PTX names the allocation. ILGPU calls a kernel's
    /// shared allocations <c>__shared_alloca0</c>, <c>__shared_alloca1</c>, ... in order of allocation; the tensor-core
    /// kernel makes one (a test compiles it to PTX and checks the name, its size and its 16-byte alignment). Every
    /// later shared access is this 32-bit base plus a 32-bit byte offset.
    /// </summary>
    public const string SharedBasePtx = "mov.u32 %0, __shared_alloca0;";

    /// <summary>Loads four 8×8 matrices of 16-bit values from shared memory; %4 is the 32-bit shared address of this lane's row.</summary>
    public const string LoadMatrixX4Ptx = "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];";

    /// <summary>The same, each matrix transposed on the way (for operands stored [k][m] or [k][n] in shared: m or n contiguous).</summary>
    public const string LoadMatrixX4TransPtx = "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];";

    /// <summary>D = A·B + C on bfloat16 inputs with float32 accumulation (C and D share registers %0..%3).</summary>
    public const string MmaBf16Ptx =
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};";

    /// <summary>D = A·B + C on float16 inputs with float32 accumulation.</summary>
    public const string MmaF16Ptx =
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};";

    /// <summary>16 bytes global → shared, bypassing L1 (.cg); %2 (src-size) bytes are read, the rest zero-filled.</summary>
    public const string CopyAsync16Ptx = "cp.async.cg.shared.global [%0], [%1], 16, %2;";

    /// <summary>Closes the group of copies issued since the last commit.</summary>
    public const string CommitGroupPtx = "cp.async.commit_group;";

    /// <summary>Waits until at most one group (the newest) is pending: with three stages, the stage to read next has landed.</summary>
    public const string WaitGroup1Ptx = "cp.async.wait_group 1;";

    /// <summary>Waits for every group.</summary>
    public const string WaitGroup0Ptx = "cp.async.wait_group 0;";

    /// <summary>The epilogue's shared store of two rounded outputs.</summary>
    public const string SharedStore32Ptx = "st.shared.b32 [%0], %1;";

    /// <summary>The epilogue's 16-byte shared load.</summary>
    public const string SharedLoad128Ptx = "ld.shared.v4.b32 {%0,%1,%2,%3}, [%4];";

    /// <summary>The epilogue's 16-byte global store.</summary>
    public const string GlobalStore128Ptx = "st.global.v4.b32 [%0], {%1,%2,%3,%4};";

    /// <summary>Issues <see cref="SharedBasePtx"/>.</summary>
    public static uint IssueSharedBase()
    {
        CudaAsm.Emit(SharedBasePtx, out uint r);
        return r;
    }

    /// <summary>Issues <see cref="LoadMatrixX4Ptx"/> for this lane's row at shared address <paramref name="address"/>.</summary>
    public static U4 IssueLoadMatrixX4(uint address)
    {
        Output<uint> r0 = default, r1 = default, r2 = default, r3 = default;
        Input<uint> a = address;
        CudaAsm.EmitRef(LoadMatrixX4Ptx, ref r0, ref r1, ref r2, ref r3, ref a);
        return new U4 { X = r0.Value, Y = r1.Value, Z = r2.Value, W = r3.Value };
    }

    /// <summary>Issues <see cref="LoadMatrixX4TransPtx"/>.</summary>
    public static U4 IssueLoadMatrixX4Trans(uint address)
    {
        Output<uint> r0 = default, r1 = default, r2 = default, r3 = default;
        Input<uint> a = address;
        CudaAsm.EmitRef(LoadMatrixX4TransPtx, ref r0, ref r1, ref r2, ref r3, ref a);
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

    /// <summary>Issues <see cref="CopyAsync16Ptx"/>.</summary>
    public static void IssueCopyAsync16(uint shared, long global, int bytes)
    {
        CudaAsm.Emit(CopyAsync16Ptx, shared, global, bytes);
    }

    /// <summary>
    /// The epilogue's 4-byte shared store through the kernel's view, not inline PTX: ILGPU gives the allocation the
    /// alignment of the views that access it (<c>AsAligned16</c>), and a kernel whose every other shared access is
    /// inline PTX naming the symbol would get <c>.align 2</c>, too little for cp.async and ldmatrix.
    /// </summary>
    public static void StoreThroughView(ArrayView<ushort> s, uint byteOffset, uint value) => s.Cast<uint>()[(int)(byteOffset >> 2)] = value;

    /// <summary>Issues <see cref="SharedStore32Ptx"/>.</summary>
    public static void IssueSharedStore32(uint address, uint value)
    {
        CudaAsm.Emit(SharedStore32Ptx, address, value);
    }

    /// <summary>Issues <see cref="SharedLoad128Ptx"/>.</summary>
    public static U4 IssueSharedLoad128(uint address)
    {
        Output<uint> r0 = default, r1 = default, r2 = default, r3 = default;
        Input<uint> a = address;
        CudaAsm.EmitRef(SharedLoad128Ptx, ref r0, ref r1, ref r2, ref r3, ref a);
        return new U4 { X = r0.Value, Y = r1.Value, Z = r2.Value, W = r3.Value };
    }

    /// <summary>Issues <see cref="GlobalStore128Ptx"/>.</summary>
    public static void IssueGlobalStore128(long address, U4 v)
    {
        CudaAsm.Emit(GlobalStore128Ptx, address, v.X, v.Y, v.Z, v.W);
    }

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

    /// <summary>
    /// What ldmatrix.x4.trans computes: register j of lane l holds column l / 4 of matrix j at rows 2(l % 4) and
    /// 2(l % 4) + 1 (the low half from the lower row), the rows' addresses coming from lanes 8j + 2(l % 4) and
    /// 8j + 2(l % 4) + 1.
    /// </summary>
    public static U4 LoadMatrixX4TransEmulated(ArrayView<ushort> s, int offset, int lane, ArrayView<uint> scratch)
    {
        scratch[lane] = (uint)offset;
        Warp.Barrier();
        int col = lane >> 2, row = (lane & 3) << 1;
        U4 r;
        r.X = Column(s, scratch, row, col);
        r.Y = Column(s, scratch, 8 + row, col);
        r.Z = Column(s, scratch, 16 + row, col);
        r.W = Column(s, scratch, 24 + row, col);
        Warp.Barrier();
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static uint Column(ArrayView<ushort> s, ArrayView<uint> scratch, int rowLane, int col) =>
        s[(int)scratch[rowLane] + col] | (uint)s[(int)scratch[rowLane + 1] + col] << 16;

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

    /// <summary>Two outputs rounded once to bfloat16 (<paramref name="bf16"/> = 1) or float16, packed low-first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Pack(float lo, float hi, int bf16) => Round(lo, bf16) | (uint)Round(hi, bf16) << 16;

    // One rounding to the half type, bit-exact with the CPU backend's conversions.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static ushort Round(float x, int bf16) =>
        bf16 != 0 ? FloatToBf16(Interop.FloatAsInt(x)) : FloatToHalf(Interop.FloatAsInt(x));
}

using ILGPU;

namespace Engine.Backends.Cuda.Gemm;

/// <summary>
/// One batched GEMM launch, passed by value to the kernels: y[b] = a[b]·b[b] with a read at
/// <c>OffsetA + b·BatchStrideA + i·StrideAm + p·StrideAk</c>, b at <c>OffsetB + b·BatchStrideB + p·StrideBk + j·StrideBn</c>
/// (element units, any strides, 0 for a broadcast batch) and y contiguous [batch, M, N]. Blocks are numbered along x
/// over the (M, N) tiles, row-major; grid y counts batches from <see cref="BatchStart"/>.
/// Public because ILGPU's launchers must see kernel parameter types.
/// </summary>
public struct GemmArgs
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int M, N, K;
    public int TilesM, TilesN;
    public int BatchStart;
    public long OffsetA, OffsetB;
    public long BatchStrideA, BatchStrideB;
    public long StrideAm, StrideAk, StrideBk, StrideBn;
#pragma warning restore CS1591

    /// <summary>
    /// 1 when consecutive threads should walk a's tile along m (a's m stride is the small one: a transposed a),
    /// 0 along k. Only coalescing depends on it; any strides are read correctly either way.
    /// </summary>
    public int AAlongM;

    /// <summary>1 when consecutive threads should walk b's tile along n (b row-major), 0 along k (b transposed).</summary>
    public int BAlongN;

    /// <summary>The element type code (<see cref="DType"/> as int): the tensor-core kernel's Float16 or BFloat16.</summary>
    public int DType;

    /// <summary>
    /// The tensor-core kernel's device byte addresses of element 0 of a, b and y (the views' first bytes): cp.async and
    /// the 16-byte stores take addresses, and ILGPU forms none inside a kernel. Unused by the SIMT kernel and by the
    /// emulation, which index the views.
    /// </summary>
    public long PtrA, PtrB, PtrY;

    /// <summary>1 when y's rows start 16-byte aligned (n a multiple of 8, y's address aligned): the epilogue stores 16 bytes at a time.</summary>
    public int VectorY;
}

/// <summary>The arithmetic of the SIMT GEMM for one element type (float32 or float64): what differs between the two.</summary>
public interface IGemmMath<T> where T : unmanaged
{
    /// <summary>a·b + c (ptxas fuses the pair into one fma).</summary>
    T Fma(T a, T b, T c);

    /// <summary>Stores element <paramref name="index"/> of a byte view holding T's.</summary>
    void Store(ArrayView<byte> y, long index, T value);
}

/// <summary>float32 arithmetic for the SIMT GEMM.</summary>
public readonly struct FloatMath : IGemmMath<float>
{
    /// <inheritdoc/>
    public float Fma(float a, float b, float c) => a * b + c;

    /// <inheritdoc/>
    public void Store(ArrayView<byte> y, long index, float value) => y.Cast<float>()[index] = value;
}

/// <summary>float64 arithmetic for the SIMT GEMM.</summary>
public readonly struct DoubleMath : IGemmMath<double>
{
    /// <inheritdoc/>
    public double Fma(double a, double b, double c) => a * b + c;

    /// <inheritdoc/>
    public void Store(ArrayView<byte> y, long index, double value) => y.Cast<double>()[index] = value;
}

/// <summary>
/// A thread's register tile of the SIMT GEMM: TM×TN accumulators, one field each (see RegisterTiles.cs). The thread
/// owns rows <c>row + i·rowStride</c> and columns <c>col + j·colStride</c> of the block tile, strided so that a warp's
/// shared-memory reads of b are conflict-free and its stores coalesce.
/// </summary>
public interface IMicroTile<T> where T : unmanaged
{
    /// <summary>Rows per thread.</summary>
    int TM { get; }

    /// <summary>Columns per thread.</summary>
    int TN { get; }

    /// <summary>One k step: TM values of a from sA[a + i·aStride], TN of b from sB[b + j·bStride], TM·TN fmas.</summary>
    void Step(ArrayView<T> sA, int a, int aStride, ArrayView<T> sB, int b, int bStride);

    /// <summary>Writes the accumulators inside [m, n] to y[yBase + r·n + c].</summary>
    void Store(ArrayView<byte> y, long yBase, int row, int rowStride, int col, int colStride, int m, int n);
}

/// <summary>The block tile of the SIMT GEMM: BM×BN outputs, BK of k per shared-memory stage.</summary>
public interface ISimtTile
{
    /// <summary>Rows of the block tile.</summary>
    int BM { get; }

    /// <summary>Columns of the block tile.</summary>
    int BN { get; }

    /// <summary>k per stage.</summary>
    int BK { get; }
}

/// <summary>
/// The fragments of one k16 step of a warp's tile: up to four A fragments (one per m16 block, ldmatrix.x4 each) and up
/// to four pairs of B fragments (one ldmatrix.x4 covers two n8 blocks: X, Y for the first, Z, W for the second). A
/// tile uses the first MI of A and NI / 2 of B; the rest stay unset and cost nothing (ILGPU keeps struct fields in
/// registers and drops the unused ones). Two of these, one k step apart, let the ldmatrix of the next step overlap the
/// mma's of this one.
/// </summary>
public struct WarpFragments
{
#pragma warning disable CS1591
    public U4 A0, A1, A2, A3, B0, B1, B2, B3;
#pragma warning restore CS1591
}

/// <summary>
/// A warp's tile of the tensor-core GEMM: MI×NI m16n8k16 accumulators (float32, in the PTX ISA's C/D fragment
/// layout), fed by <see cref="WarpFragments"/> through the warp instructions <typeparamref name="TInstr"/>. NI is even
/// (one ldmatrix.x4 loads the B fragments of two n8 blocks); MI ≤ 4, NI ≤ 8.
/// </summary>
public interface IMmaWarpTile<TInstr> where TInstr : struct, IWarpMma
{
    /// <summary>m16 blocks per warp.</summary>
    int MI { get; }

    /// <summary>n8 blocks per warp (even).</summary>
    int NI { get; }

    /// <summary>The MI·NI mma's of one k16 step; <paramref name="scratch"/> is the warp's exchange area for the emulated instructions.</summary>
    void Mma(WarpFragments f, int lane, int bf16, ArrayView<uint> scratch);

    /// <summary>
    /// Writes the accumulators, rounded once to bfloat16 (<paramref name="bf16"/> = 1) or float16, as a row-major
    /// (MI·16)×(NI·8) tile at shared byte offset <paramref name="tile"/> with rows <paramref name="pitch"/> bytes apart
    /// (the epilogue's staging, read back 16 bytes at a time).
    /// </summary>
    void StageOutput(ArrayView<ushort> s, uint sBase, uint tile, int pitch, int lane, int bf16);
}

/// <summary>The block shape of the tensor-core GEMM: WarpsM×WarpsN warps.</summary>
public interface IMmaBlock
{
    /// <summary>Warps along m.</summary>
    int WarpsM { get; }

    /// <summary>Warps along n.</summary>
    int WarpsN { get; }
}

/// <summary>
/// How the tensor-core kernel's operands lie in memory, as a type (the ldmatrix form differs): A contiguous along k
/// (row-major, <see cref="ATrans"/> = 0) or along m (a transposed view, 1); B contiguous along k (a transposed view, the
/// Linear layer's weight, <see cref="BTrans"/> = 0) or along n (row-major, 1). An operand contiguous along k is staged
/// [m or n][k] in shared memory and read by ldmatrix; one contiguous along m or n is staged [k][m or n] and read by
/// ldmatrix.trans, which delivers the same fragments. Either way the 16-byte copies walk the contiguous dim.
/// </summary>
public interface IMmaLayout
{
    /// <summary>1 when A is contiguous along m.</summary>
    int ATrans { get; }

    /// <summary>1 when B is contiguous along n.</summary>
    int BTrans { get; }
}

#pragma warning disable CS1591 // named by which dim of each operand is contiguous: A along k or m, B along k or n
/// <summary>a row-major, b transposed (y = a·bᵀ for a row-major weight b: "NT").</summary>
public readonly struct AkBk : IMmaLayout { public int ATrans => 0; public int BTrans => 0; }

/// <summary>a and b row-major ("NN").</summary>
public readonly struct AkBn : IMmaLayout { public int ATrans => 0; public int BTrans => 1; }

/// <summary>a transposed, b transposed ("TT").</summary>
public readonly struct AmBk : IMmaLayout { public int ATrans => 1; public int BTrans => 0; }

/// <summary>a transposed, b row-major ("TN", the weight gradient aᵀ·g).</summary>
public readonly struct AmBn : IMmaLayout { public int ATrans => 1; public int BTrans => 1; }
#pragma warning restore CS1591

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
    public int TilesN;
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
/// A warp's tile of the tensor-core GEMM: MI×NI m16n8k16 accumulators (float32, in the PTX ISA's C/D fragment
/// layout), fed by ldmatrix.x4 from shared memory through the warp instructions <typeparamref name="TInstr"/>. NI is
/// even: one ldmatrix.x4 loads the B fragments of two n8 blocks.
/// </summary>
public interface IMmaWarpTile<TInstr> where TInstr : struct, IWarpMma
{
    /// <summary>m16 blocks per warp.</summary>
    int MI { get; }

    /// <summary>n8 blocks per warp (even).</summary>
    int NI { get; }

    /// <summary>
    /// One k16 step. <paramref name="a"/> and <paramref name="b"/> are the half-word offsets in <paramref name="s"/>
    /// of the warp's first A row ([m][k], k contiguous) and first B column ([n][k]) at the step's k;
    /// <paramref name="scratch"/> is the warp's exchange area for the emulated instructions (unused on a GPU).
    /// </summary>
    void Step(ArrayView<ushort> s, int a, int b, int pitch, int lane, int bf16, ArrayView<uint> scratch);

    /// <summary>Writes the accumulators inside [m, n], rounded once to bfloat16 (<paramref name="bf16"/> = 1) or float16, to y[yBase + r·n + c].</summary>
    void Store(ArrayView<byte> y, long yBase, int row, int col, int lane, int m, int n, int bf16);
}

/// <summary>The block shape of the tensor-core GEMM: WarpsM×WarpsN warps, BK (a multiple of 16) of k per stage.</summary>
public interface IMmaBlock
{
    /// <summary>Warps along m.</summary>
    int WarpsM { get; }

    /// <summary>Warps along n.</summary>
    int WarpsN { get; }

    /// <summary>k per stage, a multiple of 16.</summary>
    int BK { get; }
}

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

    /// <summary>
    /// The SIMT kernel's 16-byte staging (float32 and float64): 1 when the operand is contiguous along the dim its
    /// stage loads walk (m for a when <see cref="AAlongM"/>, else k; likewise n or k for b), that dim's extent, the
    /// other stride, the offset and the batch stride are multiples of 4 elements and the buffer is 16-byte aligned. The
    /// tilings with four staged elements per thread then load each thread's four as one run; 0 loads them one by one.
    /// </summary>
    public int VectorA, VectorB;

    /// <summary>The element type code (<see cref="DType"/> as int): the tensor-core kernel's Float16 or BFloat16.</summary>
    public int DType;

    /// <summary>
    /// The tensor-core kernel's device byte addresses of element 0 of a, b and y (the views' first bytes): cp.async and
    /// the 16-byte stores take addresses, and ILGPU forms none inside a kernel. Unused by the SIMT kernel and by the
    /// emulation, which index the views.
    /// </summary>
    public long PtrA, PtrB, PtrY;

    /// <summary>1 when y's rows start 16-byte aligned (n a multiple of 8, y's address aligned, pre's too when given): the epilogue stores 16 bytes at a time.</summary>
    public int VectorY;

    /// <summary>
    /// The fused Linear's store epilogue (IBackend.Linear): 1 when a bias [N] is added to every row, 1 when the
    /// pre-activation (the product plus the bias) is also stored to the pre view (contiguous [M, N], as y), and the
    /// <see cref="Engine.Activation"/> applied last, as an int. All 0 for a plain MatMul, which then stores as before.
    /// </summary>
    public int Bias, Pre, Activation;

    /// <summary>
    /// The tensor-core kernel's device byte addresses of the pre view's element 0 (its 16-byte stores) and of the
    /// bias's (16-byte aligned: the block's slice of the bias is staged into shared memory by cp.async).
    /// </summary>
    public long PtrPre, PtrBias;

    /// <summary>True when the launch has anything for the epilogue to do besides the plain store.</summary>
    public readonly bool Fused => (Bias | Pre | Activation) != 0;
}

/// <summary>
/// Two GEMMs of one grouped launch (the fused Linear's backward): blocks [0, <see cref="FirstTiles"/>) take
/// <see cref="First"/>'s tiles, the rest <see cref="Second"/>'s; each problem has batch 1 and no epilogue.
/// </summary>
public struct GroupedGemmArgs
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public GemmArgs First, Second;
    public int FirstTiles;
#pragma warning restore CS1591
}

/// <summary>
/// The activations of the fused Linear epilogue, by <see cref="Engine.Activation"/> code, in float32 and float64: the
/// op structs' own math (Engine.Ops), so the CUDA epilogue computes what the Unary kernels and the CPU compute.
/// </summary>
static class GemmActivation
{
    public static float Apply(float x, int activation) => activation switch
    {
        (int)Engine.Activation.Relu => default(Engine.Ops.ReluOp).Apply(x),
        (int)Engine.Activation.Gelu => default(Engine.Ops.GeluOp).Apply(x),
        (int)Engine.Activation.GeluTanh => default(Engine.Ops.GeluTanhOp).Apply(x),
        _ => x,
    };

    /// <summary>
    /// The float64 GEMM's epilogue applies ReLU only: float64 erf/exp/tanh are software routines with a stack frame on
    /// PTX that every float64 GEMM would then carry; the host runs the float64 GELUs as a Unary after the GEMM.
    /// </summary>
    public static double Apply(double x, int activation) => activation == (int)Engine.Activation.Relu ? default(Engine.Ops.ReluOp).Apply(x) : x;

    /// <summary>True when the float64 GEMM epilogue can apply <paramref name="activation"/> itself.</summary>
    public static bool InFloat64Epilogue(Engine.Activation activation) => activation is Engine.Activation.None or Engine.Activation.Relu;

    /// <summary>act′(x) (1 for no activation), the Linear backward's factor.</summary>
    public static float Derivative(float x, int activation) => activation switch
    {
        (int)Engine.Activation.Relu => default(Engine.Ops.ReluOp).Derivative(x),
        (int)Engine.Activation.Gelu => default(Engine.Ops.GeluOp).Derivative(x),
        (int)Engine.Activation.GeluTanh => default(Engine.Ops.GeluTanhOp).Derivative(x),
        _ => 1f,
    };

    /// <inheritdoc cref="Derivative(float, int)"/>
    public static double Derivative(double x, int activation) => activation switch
    {
        (int)Engine.Activation.Relu => default(Engine.Ops.ReluOp).Derivative(x),
        (int)Engine.Activation.Gelu => default(Engine.Ops.GeluOp).Derivative(x),
        (int)Engine.Activation.GeluTanh => default(Engine.Ops.GeluTanhOp).Derivative(x),
        _ => 1.0,
    };
}

/// <summary>The arithmetic of the SIMT GEMM for one element type (float32 or float64): what differs between the two.</summary>
public interface IGemmMath<T> where T : unmanaged
{
    /// <summary>a·b + c (ptxas fuses the pair into one fma).</summary>
    T Fma(T a, T b, T c);

    /// <summary>Stores element <paramref name="index"/> of a byte view holding T's.</summary>
    void Store(ArrayView<byte> y, long index, T value);

    /// <summary>Element <paramref name="index"/> of a byte view holding T's.</summary>
    T Load(ArrayView<byte> v, long index);

    /// <summary>a + b.</summary>
    T Add(T a, T b);

    /// <summary>The Linear epilogue's activation (an <see cref="Engine.Activation"/> code; 0 returns x).</summary>
    T Activate(T x, int activation);
}

/// <summary>float32 arithmetic for the SIMT GEMM.</summary>
public readonly struct FloatMath : IGemmMath<float>
{
    /// <inheritdoc/>
    public float Fma(float a, float b, float c) => a * b + c;

    /// <inheritdoc/>
    public void Store(ArrayView<byte> y, long index, float value) => y.Cast<float>()[index] = value;

    /// <inheritdoc/>
    public float Load(ArrayView<byte> v, long index) => v.Cast<float>()[index];

    /// <inheritdoc/>
    public float Add(float a, float b) => a + b;

    /// <inheritdoc/>
    public float Activate(float x, int activation) => GemmActivation.Apply(x, activation);
}

/// <summary>float64 arithmetic for the SIMT GEMM.</summary>
public readonly struct DoubleMath : IGemmMath<double>
{
    /// <inheritdoc/>
    public double Fma(double a, double b, double c) => a * b + c;

    /// <inheritdoc/>
    public void Store(ArrayView<byte> y, long index, double value) => y.Cast<double>()[index] = value;

    /// <inheritdoc/>
    public double Load(ArrayView<byte> v, long index) => v.Cast<double>()[index];

    /// <inheritdoc/>
    public double Add(double a, double b) => a + b;

    /// <inheritdoc/>
    public double Activate(double x, int activation) => GemmActivation.Apply(x, activation);
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

    /// <summary>
    /// Elements per run: the thread's rows (columns) are runs of this many consecutive ones, run q starting q·stride
    /// after the first (4, one 16-byte shared load each; 2 for the 2×2 tile).
    /// </summary>
    int Run { get; }

    /// <summary>
    /// One k step: TM values of a, the runs starting at run index a + q·aStride of sA (in units of <see cref="Run"/>
    /// elements), TN of b likewise, TM·TN fmas.
    /// </summary>
    void Step(ArrayView<T> sA, int a, int aStride, ArrayView<T> sB, int b, int bStride);

    /// <summary>
    /// Writes the accumulators inside [m, n] to y[yBase + r·n + c], for rows r = row + i % 4 + (i / 4)·rowStride and
    /// columns likewise.
    /// </summary>
    void Store(ArrayView<byte> y, long yBase, int row, int rowStride, int col, int colStride, int m, int n);
}

/// <summary>
/// Four consecutive elements: the unit of the SIMT GEMM's 16-byte loads (a thread's run of a or b in shared memory,
/// a staged run of a contiguous operand in global memory). ILGPU's PTX backend loads and stores a 16-byte struct as
/// one <c>ld.v4.f32</c>/<c>st.v4.f32</c> when it can prove the address 16-byte aligned: an element of a view of
/// <c>Run4&lt;float&gt;</c> is (a power-of-2 size gives the type a 16-byte alignment in its analysis, and a shared
/// allocation takes the largest alignment of the views cast from it). Of doubles, two <c>ld.v2.f64</c>.
/// </summary>
public struct Run4<T> where T : unmanaged
{
#pragma warning disable CS1591
    public T X, Y, Z, W;
#pragma warning restore CS1591
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
    /// Writes the accumulators, plus the Linear epilogue's bias when <paramref name="bias"/> has one (in float32),
    /// rounded once to bfloat16 (<paramref name="bf16"/> = 1) or float16, as a row-major (MI·16)×(NI·8) tile at shared
    /// byte offset <paramref name="tile"/> with rows <paramref name="pitch"/> bytes apart (the epilogue's staging, read
    /// back 16 bytes at a time).
    /// </summary>
    void StageOutput(ArrayView<ushort> s, uint sBase, uint tile, int pitch, int lane, int bf16, in MmaBias bias);

    /// <summary>
    /// Writes the accumulators unrounded to a float32 y: the warp's tile origin is at <paramref name="origin"/>, rows
    /// <paramref name="ldy"/> apart; only the <paramref name="rowsLeft"/> × <paramref name="colsLeft"/> inside the
    /// output are stored.
    /// </summary>
    void StoreFloat32(ArrayView<float> y, long origin, int ldy, int rowsLeft, int colsLeft, int lane);
}

/// <summary>The element type a tensor-core GEMM stores, as a type (a constant in the kernel, so each kernel holds one store path).</summary>
public interface IMmaOutput
{
    /// <summary>1 for float32 (the accumulators as they are), 0 for the operands' half type (rounded once).</summary>
    int Float32 { get; }
}

/// <summary>Output in the operands' half type, through the staged 16-byte epilogue.</summary>
public readonly struct HalfOutput : IMmaOutput { /// <inheritdoc/>
    public int Float32 => 0; }

/// <summary>Output in float32, stored from the accumulators (IBackend.LinearGradients' master weight gradient).</summary>
public readonly struct Float32Output : IMmaOutput { /// <inheritdoc/>
    public int Float32 => 1; }

/// <summary>The float32 stores of <see cref="IMmaWarpTile{TInstr}.StoreFloat32"/>: one accumulator pair, bounds-checked.</summary>
static class MmaFloat32Store
{
    /// <summary>Values v0, v1 at (r, c), (r, c + 1) of the warp tile, those inside rowsLeft × colsLeft.</summary>
    public static void Pair(ArrayView<float> y, long origin, int ldy, int rowsLeft, int colsLeft, int r, int c, float v0, float v1)
    {
        if (r >= rowsLeft || c >= colsLeft) return;
        long at = origin + (long)r * ldy + c;
        y[at] = v0;
        if (c + 1 < colsLeft) y[at + 1] = v1;
    }
}

/// <summary>
/// The bias of the tensor-core GEMM's Linear epilogue as its warp tile stages it: the block's BN columns of the bias,
/// staged in shared memory (the kernel copies them in with cp.async, so the epilogue issues no 2-byte global loads),
/// at half index <see cref="Base"/>; the thread's first column in the block tile (the warp's column plus
/// 2·(lane mod 4), the C fragment's); fragment column block j adds the bias at <see cref="Col"/> + 8·j (+1 for the
/// second value of the pair). Off (<see cref="On"/> = 0) for a plain MatMul, whose staged values are then the
/// accumulators themselves (no +0 that would turn −0 into +0).
/// </summary>
public struct MmaBias
{
#pragma warning disable CS1591
    public ArrayView<ushort> Shared;
    public int Base, Col, Left, On, Bf16;
#pragma warning restore CS1591

    /// <summary>x plus the bias at block column <see cref="Col"/> + <paramref name="offset"/> (x alone when off or past the last column).</summary>
    public readonly float Add(float x, int offset)
    {
        int c = Col + offset;
        if (On == 0 || c >= Left) return x;
        ushort h = Shared[Base + c];
        return x + (Bf16 != 0 ? DeviceElements.Bf16ToFloat(h) : DeviceElements.HalfToFloat(h));
    }
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

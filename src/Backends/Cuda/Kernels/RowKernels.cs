using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // The fused row kernels: one group per row (a grid-stride loop over rows when there are more rows than groups),
    // each thread walking the row's columns with the group's stride; row sums and maxima are reduced by warp shuffles
    // and one shared-memory step in a fixed order, so results are reproducible run to run. dWeight/dBias go through
    // per-row-block partial column sums and a second pass adding the blocks in order (no float atomics).

    /// <summary>
    /// The instantiation of a row kernel (or the random fill) for a dtype: Float64 computes in float64, the others in
    /// float32. One kernel per width, as for the elementwise kernels, so the float32 one carries none of the float64
    /// math (on PTX, software exp and log with calls, a 64-byte stack frame and more registers).
    /// </summary>
    static Type WidthOf(DType t) => t == DType.Float64 ? typeof(Wide) : typeof(Narrow);

    /// <summary>
    /// Threads per group of the row kernels; 0 (the default) picks one from the row length. A multiple of the warp
    /// size (32) up to the device's limit: tests set it to run one-warp and multi-warp groups on short rows.
    /// </summary>
    internal static int RowGroupSizeOverride { get; set; }

    /// <summary>Threads per row: one warp for short rows, doubling while each thread would still walk 16+ elements.</summary>
    internal int RowGroup(int cols)
    {
        int warp = Accelerator.WarpSize, max = Math.Min(1024, Accelerator.MaxNumThreadsPerGroup);
        int forced = RowGroupSizeOverride;
        if (forced > 0)
        {
            if (forced % warp != 0 || forced > max)
                throw new EngineException("RowGroupSize", $"a row group of {forced} threads is not a multiple of the warp size {warp} up to {max}");
            return forced;
        }
        int g = warp;
        while (g * 2 <= max && (long)g * 16 < cols) g *= 2;
        return g;
    }

    KernelConfig RowLaunch(int rows, int cols)
    {
        int g = RowGroup(cols);
        // Enough groups to fill every multiprocessor (2048 threads each); beyond that the groups loop over rows.
        int groups = IsEmulated ? MaxGroups : Accelerator.NumMultiprocessors * Math.Max(1, 2048 / g);
        return new KernelConfig(Math.Clamp(rows, 1, groups), g);
    }

    static void CheckRowFloat(string op, DType dtype)
    {
        ContractChecks.Floating(op, dtype);
    }

    /// <inheritdoc/>
    public void Softmax(Storage x, Storage y, int rows, int cols, bool log)
    {
        CheckRowFloat(log ? "LogSoftmax" : "Softmax", x.DType);
        if (rows <= 0 || cols <= 0) return;
        var a = new RowArgs { Rows = rows, Cols = cols, Type = (int)x.DType, Flags = log ? RowKernels.Log : 0 };
        Kernel("Softmax", WidthOf(x.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, RowArgs>(x.DType == DType.Float64 ? RowKernels.Softmax<Wide> : RowKernels.Softmax<Narrow>))
            (RowLaunch(rows, cols), V(x), V(y), a);
    }

    /// <inheritdoc/>
    public void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int cols, bool log)
    {
        CheckRowFloat(log ? "LogSoftmaxBackward" : "SoftmaxBackward", y.DType);
        if (rows <= 0 || cols <= 0) return;
        var a = new RowArgs { Rows = rows, Cols = cols, Type = (int)y.DType, Flags = log ? RowKernels.Log : 0 };
        Kernel("SoftmaxBackward", WidthOf(y.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, RowArgs>(y.DType == DType.Float64 ? RowKernels.SoftmaxBackward<Wide> : RowKernels.SoftmaxBackward<Narrow>))
            (RowLaunch(rows, cols), V(y), V(dy), V(dx), a);
    }

    /// <inheritdoc/>
    public void LayerNorm(Storage x, Storage? weight, Storage? bias, Storage y, Storage mean, Storage rstd, int rows, int cols, double eps, bool rms)
    {
        CheckRowFloat(rms ? "RmsNorm" : "LayerNorm", x.DType);
        if (rows <= 0) return;
        var a = new RowArgs
        {
            Rows = rows, Cols = cols, Type = (int)x.DType, Eps = eps,
            Flags = (rms ? RowKernels.Rms : 0) | (weight is null ? 0 : RowKernels.HasWeight) | (bias is null || rms ? 0 : RowKernels.HasBias),
        };
        var xv = V(x);
        Kernel("LayerNorm", WidthOf(x.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, RowArgs>(x.DType == DType.Float64 ? RowKernels.LayerNorm<Wide> : RowKernels.LayerNorm<Narrow>))
            (RowLaunch(rows, cols), xv, weight is null ? xv : V(weight), bias is null ? xv : V(bias), V(y), V(mean), V(rstd), a);
    }

    /// <inheritdoc/>
    public void LayerNormBackward(Storage x, Storage? weight, Storage mean, Storage rstd, Storage dy, Storage dx, Storage? dWeight, Storage? dBias, int rows, int cols, bool rms)
    {
        CheckRowFloat(rms ? "RmsNormBackward" : "LayerNormBackward", x.DType);
        var xv = V(x);
        if (rows > 0)
        {
            var a = new RowArgs
            {
                Rows = rows, Cols = cols, Type = (int)x.DType,
                Flags = (rms ? RowKernels.Rms : 0) | (weight is null ? 0 : RowKernels.HasWeight),
            };
            Kernel("LayerNormBackward", WidthOf(x.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, RowArgs>(x.DType == DType.Float64 ? RowKernels.LayerNormBackward<Wide> : RowKernels.LayerNormBackward<Narrow>))
                (RowLaunch(rows, cols), xv, weight is null ? xv : V(weight), V(mean), V(rstd), V(dy), V(dx), a);
        }
        if (dWeight is null && dBias is null || cols <= 0) return;
        if (rows <= 0)
        {
            var cl = Layout.Contiguous([cols]);
            if (dWeight is not null) Fill(dWeight, cl, 0);
            if (dBias is not null) Fill(dBias, cl, 0);
            return;
        }
        // dWeight = Σ_rows dy·x̂ and dBias = Σ_rows dy (for RMSNorm too, as the CPU's). Blocks of rows give partial sums
        // (float32, float64 for Float64) that a second kernel adds in block order; the blocks depend only on the shape.
        int blocks = RowKernels.ColumnBlocks(rows, cols);
        var c = new ColumnArgs
        {
            Rows = rows, Cols = cols, Type = (int)x.DType, Blocks = blocks, PerBlock = (rows + blocks - 1) / blocks,
            Flags = (dWeight is null ? 0 : RowKernels.HasWeight) | (dBias is null ? 0 : RowKernels.HasBias),
        };
        var dwv = dWeight is null ? xv : V(dWeight);
        var dbv = dBias is null ? xv : V(dBias);
        var partials = Kernel("LayerNormColumns", WidthOf(x.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ColumnArgs>(x.DType == DType.Float64 ? RowKernels.LayerNormColumns<Wide> : RowKernels.LayerNormColumns<Narrow>));
        if (blocks == 1)
        {
            partials(Grid(cols), xv, V(mean), V(rstd), V(dy), xv, dwv, dbv, c);
            return;
        }
        var scratch = Allocate(Device, x.DType == DType.Float64 ? DType.Float64 : DType.Float32, 2L * blocks * cols);
        scratch.AddRef();
        try
        {
            partials(Grid((long)blocks * cols), xv, V(mean), V(rstd), V(dy), V(scratch), dwv, dbv, c);
            Kernel("ColumnFinish", WidthOf(x.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ColumnArgs>(x.DType == DType.Float64 ? RowKernels.ColumnFinish<Wide> : RowKernels.ColumnFinish<Narrow>))
                (Grid(cols), V(scratch), dwv, dbv, c);
        }
        finally
        {
            // Back to the pool; stream order keeps the queued kernels' reads ahead of any reuse.
            scratch.Release();
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Targets are validated on the device, never read back here: a row whose target is neither the ignore index nor
    /// in [0, cols) gets a NaN loss and raises the device error flag, which the next host synchronization
    /// (<see cref="CopyToHost{T}"/>, <see cref="Synchronize"/>) turns into a <see cref="ShapeException"/> naming
    /// CrossEntropy, as PyTorch's CUDA kernels report bad targets asynchronously through device-side asserts.
    /// </remarks>
    public void CrossEntropy(Storage logits, Storage targets, Storage loss, int rows, int cols, long ignoreIndex, double labelSmoothing)
    {
        CheckRowFloat("CrossEntropy", logits.DType);
        ContractChecks.Int64("CrossEntropy", "targets", targets);
        if (rows <= 0) return;
        var a = new RowArgs
        {
            Rows = rows, Cols = cols, Type = (int)logits.DType, Eps = labelSmoothing, Ignore = ignoreIndex,
            Flags = loss.DType == DType.Float64 ? RowKernels.WideLoss : 0,
        };
        var errors = DeviceErrors();
        Kernel("CrossEntropy", WidthOf(logits.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<long>, RowArgs>(logits.DType == DType.Float64 ? RowKernels.CrossEntropy<Wide> : RowKernels.CrossEntropy<Narrow>))
            (RowLaunch(rows, cols), V(logits), V(targets), V(loss), errors, a);
    }

    /// <inheritdoc/>
    /// <remarks>Targets are validated on the device as in <see cref="CrossEntropy"/> (a bad row's gradient is NaN).</remarks>
    public void CrossEntropyBackward(Storage logits, Storage targets, Storage dloss, Storage dlogits, int rows, int cols, long ignoreIndex, double labelSmoothing)
    {
        CheckRowFloat("CrossEntropyBackward", logits.DType);
        ContractChecks.Int64("CrossEntropyBackward", "targets", targets);
        ContractChecks.Accumulator("CrossEntropyBackward", "dloss", dloss);
        if (rows <= 0 || cols <= 0) return;
        var a = new RowArgs
        {
            Rows = rows, Cols = cols, Type = (int)logits.DType, Eps = labelSmoothing, Ignore = ignoreIndex,
            Flags = dloss.DType == DType.Float64 ? RowKernels.WideLoss : 0,
        };
        var errors = DeviceErrors();
        Kernel("CrossEntropyBackward", WidthOf(logits.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<long>, RowArgs>(logits.DType == DType.Float64 ? RowKernels.CrossEntropyBackward<Wide> : RowKernels.CrossEntropyBackward<Narrow>))
            (RowLaunch(rows, cols), V(logits), V(targets), V(dloss), V(dlogits), errors, a);
    }

    // ---- device-side error reports (bad targets and indices), checked at the next host synchronization ----

    // Layout (Int64): [0] the error code of the first report since the last check (0: none), [1] the row or flat
    // position, [2] the offending value, [3] the bound (classes or dim size), [4] the ignore index.
    MemoryBuffer1D<long, Stride1D.Dense>? _errorBuffer;
    readonly Lock _errorLock = new();
    volatile bool _errorCheckPending;

    /// <summary>The error buffer for a kernel that may report (see <see cref="CheckDeviceErrors"/>), marking a check as due.</summary>
    ArrayView<long> DeviceErrors()
    {
        lock (_errorLock)
        {
            if (_errorBuffer is null)
            {
                Bind();
                _errorBuffer = Accelerator.Allocate1D<long>(RowKernels.ErrorSlots);
                _errorBuffer.View.MemSetToZero(Accelerator.DefaultStream);
            }
            _errorCheckPending = true;
            return _errorBuffer.View.AsContiguous();
        }
    }

    /// <summary>
    /// Throws the first error a kernel reported on the device since the last check (a CrossEntropy target or a
    /// Gather/ScatterAdd index out of range), then clears it. Reads the flag only when a reporting kernel ran since
    /// the last check, and only after the stream was synchronized: called by <see cref="CopyToHost{T}"/> and
    /// <see cref="Synchronize"/> after they waited.
    /// </summary>
    internal void CheckDeviceErrors()
    {
        if (!_errorCheckPending) return;
        var report = new long[RowKernels.ErrorSlots];
        lock (_errorLock)
        {
            if (!_errorCheckPending || _errorBuffer is null) return;
            _errorCheckPending = false;
            Bind();
            _errorBuffer.View.CopyToCPU(Accelerator.DefaultStream, report);
            if (report[0] == 0) return;
            _errorBuffer.View.MemSetToZero(Accelerator.DefaultStream);
        }
        long pos = report[1], value = report[2], bound = report[3];
        throw report[0] switch
        {
            RowKernels.ErrorCrossEntropy or RowKernels.ErrorCrossEntropyBackward => new ShapeException(
                report[0] == RowKernels.ErrorCrossEntropy ? "CrossEntropy" : "CrossEntropyBackward",
                $"target {value} (row {pos}) is out of bounds for {bound} classes (expected in [0, {bound}) or the ignore index {report[4]}); " +
                "reported by the device at the next synchronization, the loss of that row is NaN"),
            _ => new ShapeException(report[0] == IndexKernels.ErrorGather ? "Gather" : "ScatterAdd",
                $"index {value} is out of bounds for a dim of size {bound} (valid indices are 0 to {bound - 1}); " +
                "reported by the device at the next synchronization" +
                (report[0] == IndexKernels.ErrorGather ? ", the element it would have read is 0" : ", its update was skipped")),
        };
    }
}

/// <summary>The scalars of one row-kernel launch.</summary>
public struct RowArgs
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int Rows, Cols, Type, Flags;
    public double Eps;
    public long Ignore;
#pragma warning restore CS1591
}

/// <summary>The scalars of the column-sum kernels (LayerNorm's dWeight and dBias).</summary>
public struct ColumnArgs
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int Rows, Cols, Type, Flags, Blocks, PerBlock;
#pragma warning restore CS1591
}

/// <summary>
/// The row kernels on the device. Each group owns a row at a time; threads stride over its columns. Float32 and the
/// half types compute in float32 (row sums too), rounding once on store, in the <see cref="Narrow"/> instantiation;
/// Float64 computes in float64 in the <see cref="Wide"/> one. Group
/// reductions (<see cref="Reduce{T, TR}"/>) combine within warps by shuffles, then the warps' results in warp order,
/// so a row's result depends only on the group size, which depends only on the row length. The CPU references are in
/// src/Backends/Cpu/Kernels/RowKernels.cs; both follow the same formulas step by step.
/// </summary>
static class RowKernels
{
    public const int Log = 1, Rms = 2, HasWeight = 4, HasBias = 8, WideLoss = 16;
    public const int ErrorSlots = 5;
    public const long ErrorCrossEntropy = 1, ErrorCrossEntropyBackward = 2;

    // Partial column sums for dWeight/dBias: about 16 rows per block, at most 256 blocks and 4M partials (so
    // 8192 rows of 768 give 256 × 768 threads of 32 rows each).
    public static int ColumnBlocks(int rows, int cols) =>
        (int)Math.Clamp(Math.Min((rows + 15L) / 16, (1L << 22) / Math.Max(cols, 1)), 1, 256);

    /// <summary>Records the first error since the last host check; later ones are dropped (the CAS picks one).</summary>
    public static void Report(ArrayView<long> errors, long code, long position, long value, long bound, long extra)
    {
        if (Atomic.CompareExchange(ref errors[0], 0, code) != 0) return;
        errors[1] = position; errors[2] = value; errors[3] = bound; errors[4] = extra;
    }

    // ---- group reductions ----

    public interface IReduce<T> where T : unmanaged
    {
        T Apply(T a, T b);
    }

    public readonly struct SumF : IReduce<float> { public float Apply(float a, float b) => a + b; }

    public readonly struct SumD : IReduce<double> { public double Apply(double a, double b) => a + b; }

    // NaN-propagating max, as the CPU's TensorPrimitives.Max (PTX's max.f32 would drop NaN).
    public readonly struct MaxF : IReduce<float> { public float Apply(float a, float b) => a > b || float.IsNaN(a) ? a : b; }

    public readonly struct MaxD : IReduce<double> { public double Apply(double a, double b) => a > b || double.IsNaN(a) ? a : b; }

    /// <summary>
    /// The group-wide reduction of one value per thread, returned to every thread: a shuffle tree within each warp,
    /// then thread 0 combines the warps' results in order. <paramref name="shared"/> holds 33 elements; two barriers
    /// make back-to-back calls safe (the next call writes slots 0..31 only after every read of this one).
    /// </summary>
    public static T Reduce<T, TR>(T v, ArrayView<T> shared) where T : unmanaged where TR : struct, IReduce<T>
    {
        TR op = default;
        for (int d = Warp.WarpSize / 2; d > 0; d >>= 1) v = op.Apply(v, Warp.ShuffleDown(v, d));
        if (Warp.IsFirstLane) shared[Warp.WarpIdx] = v;
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            int warps = Group.DimX / Warp.WarpSize;
            T r = shared[0];
            for (int w = 1; w < warps; w++) r = op.Apply(r, shared[w]);
            shared[32] = r;
        }
        Group.Barrier();
        return shared[32];
    }

    // ---- softmax ----

    // Stable: exp(x − max) ≤ 1; log-softmax is (x − max) − log Σ. Three passes over the row (max, Σ, store), the
    // later ones mostly from cache.
    public static void Softmax<TW>(ArrayView<byte> x, ArrayView<byte> y, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        bool log = (a.Flags & Log) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long o = (long)r * cols;
            if (TW.Wide)
            {
                double m = double.NegativeInfinity;
                for (int c = tid; c < cols; c += step) m = new MaxD().Apply(m, LoadDouble(x, t, o + c));
                m = Reduce<double, MaxD>(m, sd);
                double s = 0;
                for (int c = tid; c < cols; c += step) s += Math.Exp(LoadDouble(x, t, o + c) - m);
                s = Reduce<double, SumD>(s, sd);
                double ls = Math.Log(s), inv = 1 / s;
                for (int c = tid; c < cols; c += step)
                {
                    double d = LoadDouble(x, t, o + c) - m;
                    StoreDouble(y, t, o + c, log ? d - ls : Math.Exp(d) * inv);
                }
            }
            else
            {
                float m = float.NegativeInfinity;
                for (int c = tid; c < cols; c += step) m = new MaxF().Apply(m, LoadFloat(x, t, o + c));
                m = Reduce<float, MaxF>(m, sf);
                float s = 0;
                for (int c = tid; c < cols; c += step) s += MathF.Exp(LoadFloat(x, t, o + c) - m);
                s = Reduce<float, SumF>(s, sf);
                float ls = MathF.Log(s), inv = 1 / s;
                for (int c = tid; c < cols; c += step)
                {
                    float d = LoadFloat(x, t, o + c) - m;
                    StoreFloat(y, t, o + c, log ? d - ls : MathF.Exp(d) * inv);
                }
            }
        }
    }

    // softmax: dx = y·(dy − Σ dy·y); log-softmax: dx = dy − eʸ·Σ dy.
    public static void SoftmaxBackward<TW>(ArrayView<byte> y, ArrayView<byte> dy, ArrayView<byte> dx, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        bool log = (a.Flags & Log) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long o = (long)r * cols;
            if (TW.Wide)
            {
                double s = 0;
                for (int c = tid; c < cols; c += step) s += log ? LoadDouble(dy, t, o + c) : LoadDouble(dy, t, o + c) * LoadDouble(y, t, o + c);
                s = Reduce<double, SumD>(s, sd);
                for (int c = tid; c < cols; c += step)
                {
                    double yi = LoadDouble(y, t, o + c), gi = LoadDouble(dy, t, o + c);
                    StoreDouble(dx, t, o + c, log ? gi - Math.Exp(yi) * s : yi * (gi - s));
                }
            }
            else
            {
                float s = 0;
                for (int c = tid; c < cols; c += step) s += log ? LoadFloat(dy, t, o + c) : LoadFloat(dy, t, o + c) * LoadFloat(y, t, o + c);
                s = Reduce<float, SumF>(s, sf);
                for (int c = tid; c < cols; c += step)
                {
                    float yi = LoadFloat(y, t, o + c), gi = LoadFloat(dy, t, o + c);
                    StoreFloat(dx, t, o + c, log ? gi - MathF.Exp(yi) * s : yi * (gi - s));
                }
            }
        }
    }

    // ---- layer norm / RMS norm ----

    // Two passes for the statistics (mean, then Σ (x − mean)², so no cancellation); the normalization uses the stored
    // (rounded) mean and rstd, exactly as the backward will. rstd = 1/√(var + eps) is formed in float64 once per row.
    public static void LayerNorm<TW>(ArrayView<byte> x, ArrayView<byte> w, ArrayView<byte> b, ArrayView<byte> y, ArrayView<byte> mean, ArrayView<byte> rstd, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        bool rms = (a.Flags & Rms) != 0, hasW = (a.Flags & HasWeight) != 0, hasB = (a.Flags & HasBias) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long o = (long)r * cols;
            if (TW.Wide)
            {
                double mu = 0;
                if (!rms)
                {
                    double s = 0;
                    for (int c = tid; c < cols; c += step) s += LoadDouble(x, t, o + c);
                    mu = Reduce<double, SumD>(s, sd) / cols;
                }
                double v = 0;
                for (int c = tid; c < cols; c += step) { double d = LoadDouble(x, t, o + c) - mu; v += d * d; }
                double rs = 1 / Math.Sqrt(Reduce<double, SumD>(v, sd) / cols + a.Eps);
                if (tid == 0) { mean.Cast<double>()[r] = mu; rstd.Cast<double>()[r] = rs; }
                for (int c = tid; c < cols; c += step)
                {
                    double h = (LoadDouble(x, t, o + c) - mu) * rs;
                    if (hasW) h *= LoadDouble(w, t, c);
                    if (hasB) h += LoadDouble(b, t, c);
                    StoreDouble(y, t, o + c, h);
                }
            }
            else
            {
                float mu = 0;
                if (!rms)
                {
                    float s = 0;
                    for (int c = tid; c < cols; c += step) s += LoadFloat(x, t, o + c);
                    mu = Reduce<float, SumF>(s, sf) / cols;
                }
                float v = 0;
                for (int c = tid; c < cols; c += step) { float d = LoadFloat(x, t, o + c) - mu; v += d * d; }
                float rs = (float)(1 / Math.Sqrt((double)(Reduce<float, SumF>(v, sf) / cols) + a.Eps));
                if (tid == 0) { mean.Cast<float>()[r] = mu; rstd.Cast<float>()[r] = rs; }
                for (int c = tid; c < cols; c += step)
                {
                    float h = (LoadFloat(x, t, o + c) - mu) * rs;
                    if (hasW) h *= LoadFloat(w, t, c);
                    if (hasB) h += LoadFloat(b, t, c);
                    StoreFloat(y, t, o + c, h);
                }
            }
        }
    }

    // With x̂ = (x − mean)·rstd and g = dy·w: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (RMSNorm drops mean(g)).
    public static void LayerNormBackward<TW>(ArrayView<byte> x, ArrayView<byte> w, ArrayView<byte> mean, ArrayView<byte> rstd, ArrayView<byte> dy, ArrayView<byte> dx, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        bool rms = (a.Flags & Rms) != 0, hasW = (a.Flags & HasWeight) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long o = (long)r * cols;
            if (TW.Wide)
            {
                double mu = mean.Cast<double>()[r], rs = rstd.Cast<double>()[r];
                double s1 = 0, s2 = 0;
                for (int c = tid; c < cols; c += step)
                {
                    double h = (LoadDouble(x, t, o + c) - mu) * rs, g = LoadDouble(dy, t, o + c);
                    if (hasW) g *= LoadDouble(w, t, c);
                    s1 += g; s2 += g * h;
                }
                double ma = rms ? 0 : Reduce<double, SumD>(s1, sd) / cols;
                double mc = Reduce<double, SumD>(s2, sd) / cols;
                for (int c = tid; c < cols; c += step)
                {
                    double h = (LoadDouble(x, t, o + c) - mu) * rs, g = LoadDouble(dy, t, o + c);
                    if (hasW) g *= LoadDouble(w, t, c);
                    StoreDouble(dx, t, o + c, rs * (g - ma - h * mc));
                }
            }
            else
            {
                float mu = mean.Cast<float>()[r], rs = rstd.Cast<float>()[r];
                float s1 = 0, s2 = 0;
                for (int c = tid; c < cols; c += step)
                {
                    float h = (LoadFloat(x, t, o + c) - mu) * rs, g = LoadFloat(dy, t, o + c);
                    if (hasW) g *= LoadFloat(w, t, c);
                    s1 += g; s2 += g * h;
                }
                float ma = rms ? 0 : Reduce<float, SumF>(s1, sf) / cols;
                float mc = Reduce<float, SumF>(s2, sf) / cols;
                for (int c = tid; c < cols; c += step)
                {
                    float h = (LoadFloat(x, t, o + c) - mu) * rs, g = LoadFloat(dy, t, o + c);
                    if (hasW) g *= LoadFloat(w, t, c);
                    StoreFloat(dx, t, o + c, rs * (g - ma - h * mc));
                }
            }
        }
    }

    // One thread per (block of rows, column): Σ dy·x̂ and Σ dy over the block's rows in order. With one block the sums
    // are the results (rounded once); otherwise they go to partials [2, blocks, cols] for ColumnFinish. Adjacent
    // threads read adjacent columns, so the loads coalesce.
    public static void LayerNormColumns<TW>(ArrayView<byte> x, ArrayView<byte> mean, ArrayView<byte> rstd, ArrayView<byte> dy,
        ArrayView<byte> partials, ArrayView<byte> dw, ArrayView<byte> db, ColumnArgs a) where TW : struct, IComputeWidth
    {
        int t = a.Type, cols = a.Cols;
        bool wantW = (a.Flags & HasWeight) != 0, wantB = (a.Flags & HasBias) != 0, final = a.Blocks == 1;
        long n = (long)a.Blocks * cols, stride = (long)Grid.DimX * Group.DimX;
        for (long q = Grid.GlobalIndex.X; q < n; q += stride)
        {
            int blk = (int)(q / cols), c = (int)(q - (long)blk * cols);
            int r0 = blk * a.PerBlock, r1 = Math.Min(a.Rows, r0 + a.PerBlock);
            if (TW.Wide)
            {
                double sw = 0, sb = 0;
                for (int r = r0; r < r1; r++)
                {
                    long i = (long)r * cols + c;
                    double g = LoadDouble(dy, t, i);
                    if (wantW) sw += g * ((LoadDouble(x, t, i) - mean.Cast<double>()[r]) * rstd.Cast<double>()[r]);
                    sb += g;
                }
                if (final)
                {
                    if (wantW) StoreDouble(dw, t, c, sw);
                    if (wantB) StoreDouble(db, t, c, sb);
                }
                else
                {
                    var p = partials.Cast<double>();
                    p[q] = sw; p[n + q] = sb;
                }
            }
            else
            {
                float sw = 0, sb = 0;
                for (int r = r0; r < r1; r++)
                {
                    long i = (long)r * cols + c;
                    float g = LoadFloat(dy, t, i);
                    if (wantW) sw += g * ((LoadFloat(x, t, i) - mean.Cast<float>()[r]) * rstd.Cast<float>()[r]);
                    sb += g;
                }
                if (final)
                {
                    if (wantW) StoreFloat(dw, t, c, sw);
                    if (wantB) StoreFloat(db, t, c, sb);
                }
                else
                {
                    var p = partials.Cast<float>();
                    p[q] = sw; p[n + q] = sb;
                }
            }
        }
    }

    // Adds the blocks' partial column sums in block order and rounds once.
    public static void ColumnFinish<TW>(ArrayView<byte> partials, ArrayView<byte> dw, ArrayView<byte> db, ColumnArgs a) where TW : struct, IComputeWidth
    {
        int t = a.Type, cols = a.Cols;
        bool wantW = (a.Flags & HasWeight) != 0, wantB = (a.Flags & HasBias) != 0;
        long n = (long)a.Blocks * cols, stride = (long)Grid.DimX * Group.DimX;
        for (long c = Grid.GlobalIndex.X; c < cols; c += stride)
        {
            if (TW.Wide)
            {
                var p = partials.Cast<double>();
                double sw = 0, sb = 0;
                for (int blk = 0; blk < a.Blocks; blk++) { long q = (long)blk * cols + c; sw += p[q]; sb += p[n + q]; }
                if (wantW) StoreDouble(dw, t, c, sw);
                if (wantB) StoreDouble(db, t, c, sb);
            }
            else
            {
                var p = partials.Cast<float>();
                float sw = 0, sb = 0;
                for (int blk = 0; blk < a.Blocks; blk++) { long q = (long)blk * cols + c; sw += p[q]; sb += p[n + q]; }
                if (wantW) StoreFloat(dw, t, c, sw);
                if (wantB) StoreFloat(db, t, c, sb);
            }
        }
    }

    // ---- cross entropy ----

    // With lse = max + log Σ e^(x−max) and q = (1−ε)·onehot(t) + ε/C: loss = (1−ε)(lse − x_t) + ε(lse − mean(x)),
    // the per-row scalars in float64. A target that is neither ignored nor in range gives NaN and a device report.
    public static void CrossEntropy<TW>(ArrayView<byte> x, ArrayView<byte> targets, ArrayView<byte> loss, ArrayView<long> errors, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        double eps = a.Eps;
        bool wideLoss = (a.Flags & WideLoss) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long target = targets.Cast<long>()[r];
            double result = 0;
            if (target != a.Ignore)
            {
                if (target < 0 || target >= cols)
                {
                    result = double.NaN;
                    if (tid == 0) Report(errors, ErrorCrossEntropy, r, target, cols, a.Ignore);
                }
                else
                {
                    long o = (long)r * cols;
                    double lse, xt, mu = 0;
                    if (TW.Wide)
                    {
                        double m = double.NegativeInfinity, sx = 0;
                        for (int c = tid; c < cols; c += step) { double v = LoadDouble(x, t, o + c); m = new MaxD().Apply(m, v); sx += v; }
                        m = Reduce<double, MaxD>(m, sd);
                        if (eps != 0) mu = Reduce<double, SumD>(sx, sd) / cols;
                        double s = 0;
                        for (int c = tid; c < cols; c += step) s += Math.Exp(LoadDouble(x, t, o + c) - m);
                        lse = m + Math.Log(Reduce<double, SumD>(s, sd));
                        xt = LoadDouble(x, t, o + target);
                    }
                    else
                    {
                        float m = float.NegativeInfinity, sx = 0;
                        for (int c = tid; c < cols; c += step) { float v = LoadFloat(x, t, o + c); m = new MaxF().Apply(m, v); sx += v; }
                        m = Reduce<float, MaxF>(m, sf);
                        if (eps != 0) mu = (double)Reduce<float, SumF>(sx, sf) / cols;
                        float s = 0;
                        for (int c = tid; c < cols; c += step) s += MathF.Exp(LoadFloat(x, t, o + c) - m);
                        // The log in float32 (the CPU's is float64): Math.Log would put float64 software math, its
                        // calls and a stack frame into this float32 kernel; the two differ within float32 rounding.
                        lse = m + (double)MathF.Log(Reduce<float, SumF>(s, sf));
                        xt = LoadFloat(x, t, o + target);
                    }
                    result = (1 - eps) * (lse - xt);
                    if (eps != 0) result += eps * (lse - mu);
                }
            }
            if (tid == 0)
            {
                if (wideLoss) loss.Cast<double>()[r] = result;
                else loss.Cast<float>()[r] = (float)result;
            }
        }
    }

    // dx = (softmax(x) − q)·dloss[r]; 0 for ignored rows, NaN (and a device report) for a target out of range.
    public static void CrossEntropyBackward<TW>(ArrayView<byte> x, ArrayView<byte> targets, ArrayView<byte> dloss, ArrayView<byte> dx, ArrayView<long> errors, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        double eps = a.Eps;
        bool wideLoss = (a.Flags & WideLoss) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long target = targets.Cast<long>()[r];
            long o = (long)r * cols;
            if (target == a.Ignore || target < 0 || target >= cols)
            {
                bool bad = target != a.Ignore;
                if (bad && tid == 0) Report(errors, ErrorCrossEntropyBackward, r, target, cols, a.Ignore);
                for (int c = tid; c < cols; c += step)
                {
                    if (TW.Wide) StoreDouble(dx, t, o + c, bad ? double.NaN : 0);
                    else StoreFloat(dx, t, o + c, bad ? float.NaN : 0);
                }
                continue;
            }
            double g = wideLoss ? dloss.Cast<double>()[r] : dloss.Cast<float>()[r];
            if (TW.Wide)
            {
                double m = double.NegativeInfinity;
                for (int c = tid; c < cols; c += step) m = new MaxD().Apply(m, LoadDouble(x, t, o + c));
                m = Reduce<double, MaxD>(m, sd);
                double s = 0;
                for (int c = tid; c < cols; c += step) s += Math.Exp(LoadDouble(x, t, o + c) - m);
                double inv = 1 / Reduce<double, SumD>(s, sd), off = eps / cols;
                for (int c = tid; c < cols; c += step)
                    StoreDouble(dx, t, o + c, (Math.Exp(LoadDouble(x, t, o + c) - m) * inv - off - (c == target ? 1 - eps : 0)) * g);
            }
            else
            {
                float m = float.NegativeInfinity;
                for (int c = tid; c < cols; c += step) m = new MaxF().Apply(m, LoadFloat(x, t, o + c));
                m = Reduce<float, MaxF>(m, sf);
                float s = 0;
                for (int c = tid; c < cols; c += step) s += MathF.Exp(LoadFloat(x, t, o + c) - m);
                float inv = 1 / Reduce<float, SumF>(s, sf), off = (float)(eps / cols), hit = (float)(1 - eps), gf = (float)g;
                for (int c = tid; c < cols; c += step)
                    StoreFloat(dx, t, o + c, (MathF.Exp(LoadFloat(x, t, o + c) - m) * inv - off - (c == target ? hit : 0)) * gf);
            }
        }
    }
}

using Engine.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;

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
    public void LayerNorm(Storage x, Storage? residual, Storage? weight, Storage? bias, Storage? sum, Storage y, Storage mean, Storage rstd, int rows, int cols, double eps, bool rms)
    {
        CheckRowFloat(rms ? "RmsNorm" : "LayerNorm", x.DType);
        if (residual is not null && sum is null) throw new ArgumentNullException(nameof(sum), "LayerNorm: a residual needs a sum output");
        if (rows <= 0) return;
        var a = new RowArgs
        {
            Rows = rows, Cols = cols, Type = (int)x.DType, Eps = eps, ResidualType = (int)(residual?.DType ?? x.DType), OutputType = (int)y.DType,
            Flags = (rms ? RowKernels.Rms : 0) | (weight is null ? 0 : RowKernels.HasWeight) | (bias is null || rms ? 0 : RowKernels.HasBias)
                | (residual is null ? 0 : RowKernels.HasResidual),
        };
        var xv = V(x);
        Kernel("LayerNorm", WidthOf(x.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, RowArgs>(x.DType == DType.Float64 ? RowKernels.LayerNorm<Wide> : RowKernels.LayerNorm<Narrow>))
            (RowLaunch(rows, cols), xv, residual is null ? xv : V(residual), residual is null ? xv : V(sum!), weight is null ? xv : V(weight), bias is null ? xv : V(bias), V(y), V(mean), V(rstd), a);
    }

    /// <inheritdoc/>
    public void LayerNormBackward(Storage x, Storage? weight, Storage mean, Storage rstd, Storage dy, Storage? dxAdd, Storage dx, Storage? dWeight, Storage? dBias, int rows, int cols, bool rms)
    {
        CheckRowFloat(rms ? "RmsNormBackward" : "LayerNormBackward", x.DType);
        var xv = V(x);
        if (rows > 0)
        {
            var a = new RowArgs
            {
                Rows = rows, Cols = cols, Type = (int)x.DType, OutputType = (int)dy.DType,
                Flags = (rms ? RowKernels.Rms : 0) | (weight is null ? 0 : RowKernels.HasWeight) | (dxAdd is null ? 0 : RowKernels.HasDxAdd),
            };
            Kernel("LayerNormBackward", WidthOf(x.DType), k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, RowArgs>(x.DType == DType.Float64 ? RowKernels.LayerNormBackward<Wide> : RowKernels.LayerNormBackward<Narrow>))
                (RowLaunch(rows, cols), xv, weight is null ? xv : V(weight), V(mean), V(rstd), V(dy), dxAdd is null ? xv : V(dxAdd), V(dx), a);
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
            Rows = rows, Cols = cols, Type = (int)x.DType, OutputType = (int)dy.DType, Blocks = blocks, PerBlock = (rows + blocks - 1) / blocks, ByCols = FastDivisor.Of(cols),
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

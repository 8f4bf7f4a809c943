using System.Runtime.CompilerServices;
using Engine.Ops;

namespace Engine.Backends;

/// <summary>The reductions a backend implements over the trailing dims of a layout.</summary>
public enum ReduceOp
{
    /// <summary>Σ x.</summary>
    Sum,
    /// <summary>Σ x / n.</summary>
    Mean,
    /// <summary>max x, with the index of the first maximum (NaN counts as the maximum, as PyTorch's).</summary>
    Max,
    /// <summary>min x, with the index of the first minimum (NaN counts as the minimum).</summary>
    Min,
    /// <summary>Σ (x − mean)² / (n − correction); the argument is the correction.</summary>
    Var,
    /// <summary>log Σ eˣ, computed as m + log Σ e^(x−m).</summary>
    LogSumExp,
    /// <summary>(Σ |x|ᵖ)^(1/p); the argument is p (∞ gives max |x|).</summary>
    Norm,
}

/// <summary>
/// The backend contract: a few dozen kernels over storages and layouts. A backend never sees a tensor or the graph;
/// everything else (views, broadcasting, type promotion, autograd, composite ops) is built above it, once.
/// Conventions: outputs are storages the caller allocated with <see cref="Allocate"/>; a layout argument describes
/// where an operand's elements sit and may be strided, broadcast (stride 0) or offset; "rows" kernels take contiguous
/// operands whose last dim is the row. Float16/BFloat16 compute in float32 and round once on store; reductions
/// accumulate in at least float32 (float64 for Float64). Results never depend on the number of threads.
/// </summary>
public interface IBackend
{
    /// <summary>The device type served.</summary>
    DeviceType Type { get; }

    /// <summary>A buffer of <paramref name="count"/> elements; its contents are unspecified.</summary>
    Storage Allocate(Device device, DType dtype, long count);

    /// <summary>Copies host data into a storage of the same element type (contiguous, from index 0).</summary>
    void CopyFromHost<T>(ReadOnlySpan<T> source, Storage destination) where T : unmanaged;

    /// <summary>Copies the whole storage into host memory of the same element type. Synchronizes.</summary>
    void CopyToHost<T>(Storage source, Span<T> destination) where T : unmanaged;

    /// <summary>
    /// Copies host data into a storage from byte <paramref name="destinationByteOffset"/> on, so that a buffer larger
    /// than a span (2 GiB) can be filled in chunks. The offset and the length must be whole elements of the storage.
    /// The default stages the chunk in a temporary storage and places it with <see cref="Copy"/>; a backend with
    /// addressable memory overrides it with a direct copy.
    /// </summary>
    void CopyFromHost<T>(ReadOnlySpan<T> source, Storage destination, long destinationByteOffset) where T : unmanaged
    {
        long bytes = (long)source.Length * Unsafe.SizeOf<T>();
        var range = CheckedRange("CopyFromHost", destination, destinationByteOffset, bytes);
        if (bytes == 0) return;
        if (range is null) { CopyFromHost(source, destination); return; }
        var staging = Allocate(destination.Device, destination.DType, range.Numel);
        staging.AddRef();
        try
        {
            CopyFromHost(source, staging);
            Copy(staging, Layout.Contiguous(range.Shape), destination, range);
        }
        finally { staging.Release(); }
    }

    /// <summary>
    /// Copies <c>destination.Length</c> elements' worth of bytes from byte <paramref name="sourceByteOffset"/> of a
    /// storage into host memory, the chunked counterpart of <see cref="CopyToHost{T}(Storage, Span{T})"/>. The same
    /// rules and default as the chunked <c>CopyFromHost</c>. Synchronizes.
    /// </summary>
    void CopyToHost<T>(Storage source, long sourceByteOffset, Span<T> destination) where T : unmanaged
    {
        long bytes = (long)destination.Length * Unsafe.SizeOf<T>();
        var range = CheckedRange("CopyToHost", source, sourceByteOffset, bytes);
        if (bytes == 0) return;
        if (range is null) { CopyToHost(source, destination); return; }
        var staging = Allocate(source.Device, source.DType, range.Numel);
        staging.AddRef();
        try
        {
            Copy(source, range, staging, Layout.Contiguous(range.Shape));
            CopyToHost(staging, destination);
        }
        finally { staging.Release(); }
    }

    /// <summary>
    /// The 1-d layout of a byte range of a storage, or null when the range is the whole storage; throws when it is
    /// out of bounds or not made of whole elements.
    /// </summary>
    private static Layout? CheckedRange(string op, Storage storage, long byteOffset, long bytes)
    {
        int size = storage.DType.ElementSize();
        if (byteOffset < 0 || bytes > storage.ByteLength - byteOffset)
            throw new ShapeException(op, $"bytes [{byteOffset}, {byteOffset + bytes}) are outside a storage of {storage.ByteLength}");
        if (byteOffset % size != 0 || bytes % size != 0 || bytes / size > int.MaxValue)
            throw new ShapeException(op, $"bytes [{byteOffset}, {byteOffset + bytes}) are not at most {int.MaxValue} whole {storage.DType.Name()} elements");
        if (byteOffset == 0 && bytes == storage.ByteLength) return null;
        return new Layout([(int)(bytes / size)], [1], byteOffset / size);
    }

    /// <summary>y[i] = convert(x[i]) over two layouts of one shape, converting dtype as needed.</summary>
    void Copy(Storage x, Layout xLayout, Storage y, Layout yLayout);

    /// <summary>Sets every element of the layout to <paramref name="value"/> (converted to the storage's dtype).</summary>
    void Fill(Storage y, Layout yLayout, double value);

    /// <summary>y = op(x), x and y of one dtype and shape.</summary>
    void Unary<TOp>(TOp op, Storage x, Layout xLayout, Storage y, Layout yLayout) where TOp : struct, IUnaryOp;

    /// <summary>y = op(a, b); a and b share a dtype and are laid out at y's shape (broadcast dims have stride 0); y is Bool for comparisons.</summary>
    void Binary<TOp>(TOp op, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout) where TOp : struct, IBinaryOp;

    /// <summary>y = cond ? a : b, all laid out at y's shape; cond is Bool.</summary>
    void Where(Storage cond, Layout condLayout, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout);

    /// <summary>
    /// Reduces the last <paramref name="reducedDims"/> dims of <paramref name="xLayout"/>; y is contiguous over the
    /// remaining dims, of x's dtype. Max/Min also write the flat index within the reduced block into
    /// <paramref name="indices"/> (Int64) when given. <paramref name="argument"/> is Var's correction or Norm's p.
    /// </summary>
    void Reduce(ReduceOp op, Storage x, Layout xLayout, int reducedDims, Storage y, Storage? indices, double argument);

    /// <summary>
    /// Batched matrix product y[b] = a[b] · b[b]: a is laid out as [batch, m, k], b as [batch, k, n] (any strides,
    /// broadcast batches have stride 0), y contiguous [batch, m, n]. One dtype for all three.
    /// </summary>
    void MatMul(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k);

    /// <summary>Softmax (or log-softmax) of each row of a contiguous [rows, cols] x.</summary>
    void Softmax(Storage x, Storage y, int rows, int cols, bool log);

    /// <summary>dx from the softmax output y and dy: y·(dy − Σ dy·y), or for log-softmax dy − eʸ·Σ dy.</summary>
    void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int cols, bool log);

    /// <summary>
    /// Layer norm of each row (rms: RMSNorm, no mean subtraction and no bias): y = (x − mean)·rstd·w + b. Writes
    /// per-row mean and rstd (float32, or float64 for Float64 inputs) for the backward. Weight and bias may be null.
    /// </summary>
    void LayerNorm(Storage x, Storage? weight, Storage? bias, Storage y, Storage mean, Storage rstd, int rows, int cols, double eps, bool rms);

    /// <summary>Gradients of <see cref="LayerNorm"/>: dx always; dWeight and dBias (summed over rows) when given.</summary>
    void LayerNormBackward(Storage x, Storage? weight, Storage mean, Storage rstd, Storage dy, Storage dx, Storage? dWeight, Storage? dBias, int rows, int cols, bool rms);

    /// <summary>
    /// Per-row cross entropy of logits [rows, cols] against Int64 targets: loss[r] = −Σ_c q_c·log_softmax(x)_c with
    /// q the one-hot target smoothed by <paramref name="labelSmoothing"/>; rows whose target is
    /// <paramref name="ignoreIndex"/> give 0. loss is float32 (float64 for Float64 logits). Throws on a target out of range.
    /// </summary>
    void CrossEntropy(Storage logits, Storage targets, Storage loss, int rows, int cols, long ignoreIndex, double labelSmoothing);

    /// <summary>dlogits = (softmax(x) − q)·dloss[r] per row (0 for ignored rows); dloss has one value per row.</summary>
    void CrossEntropyBackward(Storage logits, Storage targets, Storage dloss, Storage dlogits, int rows, int cols, long ignoreIndex, double labelSmoothing);

    /// <summary>
    /// Gather along the middle dim of x viewed as [outer, size, inner]: y[o, j, i] = x[o, index[o, j, i], i] with
    /// index Int64 and laid out as y ([outer, count, inner], any strides). Throws on an index out of [−size, size).
    /// </summary>
    void Gather(Storage x, Layout xLayout, Storage index, Layout indexLayout, Storage y, int outer, int size, int count, int inner);

    /// <summary>
    /// The adjoint of <see cref="Gather"/>: dx[o, index[o, j, i], i] += dy[o, j, i], with dx contiguous [outer, size, inner]
    /// and already initialized. Accumulation order is fixed (deterministic).
    /// </summary>
    void ScatterAdd(Storage dy, Layout dyLayout, Storage index, Layout indexLayout, Storage dx, int outer, int size, int count, int inner);

    /// <summary>
    /// Fills a contiguous storage with Philox4x32-10 random numbers for (seed, offset): element i takes counter
    /// offset + i/4, lane i%4, so a seed gives the same numbers on every device and thread count. Uniform in
    /// [a, b) or normal with mean a and std b.
    /// </summary>
    void Random(Storage y, ulong seed, ulong offset, bool normal, double a, double b);

    /// <summary>
    /// One fused Adam/AdamW update of a contiguous parameter (see <see cref="AdamConfig"/>). <paramref name="step"/> is
    /// a one-element Float32 storage on the device holding the step count, advanced by the kernel, so bias correction
    /// needs no host value. When <paramref name="foundInf"/> (one Float32 element) is given and nonzero, nothing
    /// changes (the step is skipped, the count does not advance); when <paramref name="invScale"/> is given the
    /// gradient is multiplied by it first. The gradient may be of another float dtype than the parameter.
    /// </summary>
    void AdamStep(Storage param, Storage grad, Storage expAvg, Storage expAvgSq, Storage step, AdamConfig config, Storage? invScale, Storage? foundInf);

    /// <summary>
    /// One fused SGD update (momentum, dampening, Nesterov, weight decay as <c>torch.optim.SGD</c>). The momentum
    /// buffer, when given, is initialized from the gradient on the first step (<paramref name="momentumInitialized"/>
    /// false). Skips and unscales like <see cref="AdamStep"/>.
    /// </summary>
    void SgdStep(Storage param, Storage grad, Storage? momentum, bool momentumInitialized, SgdConfig config, Storage? invScale, Storage? foundInf);

    /// <summary>
    /// The AMP gradient scaler's fused check: multiplies every element of every gradient (contiguous storages of any
    /// float dtype; Float32, Float16 and BFloat16 compute in float32, Float64 in float64, rounding once) by
    /// <paramref name="invScale"/> (one Float32 element) and sets <paramref name="foundInf"/> (one Float32 element) to
    /// 1 when any value is Inf or NaN; it never resets it. Reads nothing back to the host. As PyTorch's
    /// <c>_amp_foreach_non_finite_check_and_unscale_</c>; implementations count the call in <see cref="AmpKernelCounters"/>.
    /// </summary>
    void NonFiniteCheckAndUnscale(IReadOnlyList<Storage> grads, Storage foundInf, Storage invScale);

    /// <summary>
    /// The AMP scale update, as PyTorch's <c>_amp_update_scale_</c>, on the device: when <paramref name="foundInf"/> is
    /// nonzero, scale ← scale·backoff and the tracker (one Int32 element) ← 0; otherwise the tracker counts the clean
    /// step and, on reaching <paramref name="growthInterval"/>, scale ← scale·growth (only if that is finite) and the
    /// tracker ← 0. scale and foundInf are one Float32 element each. Implementations count the call.
    /// </summary>
    void UpdateScale(Storage scale, Storage growthTracker, Storage foundInf, double growthFactor, double backoffFactor, int growthInterval);

    /// <summary>Blocks until all queued work is done (a no-op on the CPU).</summary>
    void Synchronize();
}

/// <summary>Hyper-parameters of one Adam/AdamW update.</summary>
/// <param name="Lr">Learning rate.</param>
/// <param name="Beta1">First-moment decay.</param>
/// <param name="Beta2">Second-moment decay.</param>
/// <param name="Eps">Added to the denominator.</param>
/// <param name="WeightDecay">L2 penalty (Adam) or decoupled decay (AdamW).</param>
/// <param name="Decoupled">True for AdamW: p ← p·(1 − lr·wd) before the Adam step.</param>
public readonly record struct AdamConfig(double Lr, double Beta1, double Beta2, double Eps, double WeightDecay, bool Decoupled);

/// <summary>Hyper-parameters of one SGD update.</summary>
/// <param name="Lr">Learning rate.</param>
/// <param name="Momentum">Momentum factor (0 for none).</param>
/// <param name="Dampening">Dampening of the momentum.</param>
/// <param name="WeightDecay">L2 penalty.</param>
/// <param name="Nesterov">Nesterov momentum.</param>
public readonly record struct SgdConfig(double Lr, double Momentum, double Dampening, double WeightDecay, bool Nesterov);

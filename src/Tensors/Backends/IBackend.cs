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
/// The backend contract: kernels over storages and layouts. A backend never sees a tensor or the graph; everything
/// else (views, broadcasting, type promotion, autograd, composite ops) is built above it, once.
/// <para>
/// Two kinds of member. The <b>required kernels</b>, declared in this file, are what a backend must implement:
/// allocation, host copies, <see cref="Copy"/>, <see cref="Fill"/>, <see cref="Unary"/>, <see cref="Binary"/>,
/// <see cref="Where"/>, <see cref="Reduce"/>, <see cref="MatMul"/>, <see cref="Gather"/>, <see cref="ScatterAdd"/>,
/// <see cref="Random"/> and <see cref="Synchronize"/>. The <b>fused capabilities</b> (IBackend.Fused.cs: softmax,
/// layer norm, cross entropy, the optimizer steps, the AMP scaler kernels) have a default body that composes them from
/// the required kernels (<see cref="CompositeKernels"/>); a backend overrides one by implementing it, for speed only,
/// and the composite is the reference its fused kernel must match. A new backend therefore starts with the required
/// kernels and nothing else, and every op and optimizer already runs on it.
/// </para>
/// <para>
/// Conventions: outputs are storages the caller allocated with <see cref="Allocate"/>; a layout argument describes
/// where an operand's elements sit and may be strided, broadcast (stride 0) or offset; "rows" kernels take contiguous
/// operands whose last dim is the row. Float16/BFloat16 compute in float32 and round once on store; reductions
/// accumulate in at least float32 (float64 for Float64). Results never depend on the number of threads. Each kernel
/// launch is counted with <see cref="KernelCounter.Record"/> under the method's name.
/// </para>
/// </summary>
public partial interface IBackend
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

    /// <summary>Blocks until all queued work is done (a no-op on the CPU).</summary>
    void Synchronize();
}

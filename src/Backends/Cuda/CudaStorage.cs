using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

/// <summary>
/// A device buffer from the device's <see cref="CudaCachingAllocator"/>: a block of the request's size class, of which
/// the first <see cref="Storage.ByteLength"/> bytes are the storage. Float16 and BFloat16 elements are 16-bit words.
/// Going back to the pool is all that freeing does, so it is safe from a finalizer.
/// </summary>
public sealed class CudaStorage : Storage
{
    readonly CudaCachingAllocator _allocator;
    MemoryBuffer1D<byte, Stride1D.Dense>? _buffer;
    readonly ArrayView<byte> _view;

    // The base constructor has checked the size; the storage counts as live (Track) only once its block is rented,
    // so an allocation that throws leaves the leak counters and the allocator's statistics as they were.
    internal CudaStorage(Device device, DType dtype, long count, CudaCachingAllocator allocator) : base(device, dtype, count)
    {
        _allocator = allocator;
        var buffer = allocator.Rent(ByteLength, dtype);
        try
        {
            _view = buffer.View.SubView(0, ByteLength).AsContiguous();
        }
        catch
        {
            allocator.Return(buffer);
            throw;
        }
        _buffer = buffer;
        Track();
    }

    /// <summary>The storage's bytes on the device (valid until the storage is freed).</summary>
    public ArrayView<byte> View => _buffer is not null ? _view : throw new ObjectDisposedException(nameof(CudaStorage));

    /// <summary>
    /// The device address of the storage's first byte (valid until the storage is freed): what a C library that takes
    /// raw device pointers (NCCL, cuBLAS) is passed. ILGPU keeps an ArrayView's address internal; the view starts at
    /// offset 0 of its buffer, whose address is public.
    /// </summary>
    public IntPtr DevicePointer => _buffer?.NativePtr ?? throw new ObjectDisposedException(nameof(CudaStorage));

    /// <summary>The bytes of the whole block (the view plus the rounding of its size class).</summary>
    internal long BlockLength => _buffer?.Length ?? 0;

    /// <inheritdoc/>
    protected override void Free()
    {
        var b = Interlocked.Exchange(ref _buffer, null);
        if (b is not null) _allocator.Return(b);
    }
}

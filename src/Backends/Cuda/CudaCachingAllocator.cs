using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

/// <summary>
/// A per-device caching allocator in the manner of PyTorch's: requests are rounded to size classes (multiples of
/// 512 bytes up to 1 MiB, then four classes per power of two), freed buffers go to a free list per class, and a
/// request is served from the free list when it can, so a training loop whose steps allocate the same sizes does no
/// device allocation after the first step. Buffers are reused in stream order: every kernel runs on the device's one
/// stream, so work queued before a buffer was freed finishes before work that reuses it starts.
/// When a device allocation fails, the cache is emptied and the allocation retried once; a second failure throws an
/// <see cref="EngineOutOfMemoryException"/> with the statistics, and leaves <see cref="Allocated"/>,
/// <see cref="Peak"/> and <see cref="DeviceAllocations"/> as they were.
/// </summary>
public sealed class CudaCachingAllocator
{
    /// <summary>Requests up to this size round to multiples of <see cref="SmallGranularity"/>.</summary>
    public const long SmallLimit = 1L << 20;

    /// <summary>The rounding granularity of small requests (and the smallest block).</summary>
    public const long SmallGranularity = 512;

    readonly Accelerator _accelerator;
    readonly string _device;
    readonly Dictionary<long, Stack<MemoryBuffer1D<byte, Stride1D.Dense>>> _free = [];
    // Every block handed out stays reachable from here: a storage dropped without Dispose reaches the pool from its
    // tensor's finalizer, and ILGPU's buffers have finalizers of their own that would otherwise free the block in the
    // same collection (finalization order is undefined), leaving a dead block in the free list.
    readonly HashSet<MemoryBuffer1D<byte, Stride1D.Dense>> _inUse = new(ReferenceEqualityComparer.Instance);
    readonly Lock _lock = new();
    long _allocated, _reserved, _peak, _cached, _deviceAllocations;

    readonly Action _bind;

    internal CudaCachingAllocator(Accelerator accelerator, string device, Action bind)
    {
        _accelerator = accelerator;
        _device = device;
        _bind = bind;
    }

    /// <summary>Bytes in blocks handed out (rounded sizes), as <c>torch.cuda.memory_allocated</c>.</summary>
    public long Allocated { get { lock (_lock) return _allocated; } }

    /// <summary>Bytes of device memory held: blocks handed out plus the cache, as <c>torch.cuda.memory_reserved</c>.</summary>
    public long Reserved { get { lock (_lock) return _reserved; } }

    /// <summary>The largest <see cref="Allocated"/> since creation or <see cref="ResetPeak"/>.</summary>
    public long Peak { get { lock (_lock) return _peak; } }

    /// <summary>Bytes in free lists.</summary>
    public long Cached { get { lock (_lock) return _cached; } }

    /// <summary>Device allocations made so far (cache misses): a steady training loop stops increasing it.</summary>
    public long DeviceAllocations { get { lock (_lock) return _deviceAllocations; } }

    /// <summary>
    /// A cap on <see cref="Reserved"/> in bytes (null: the device's memory is the limit), as
    /// <c>torch.cuda.set_per_process_memory_fraction</c>; a request that would pass it fails like a device allocation.
    /// </summary>
    public long? Limit { get; set; }

    /// <summary>The size class of a request of <paramref name="bytes"/> bytes.</summary>
    public static long RoundSize(long bytes)
    {
        if (bytes <= SmallGranularity) return SmallGranularity;
        if (bytes <= SmallLimit) return (bytes + SmallGranularity - 1) / SmallGranularity * SmallGranularity;
        // Four classes per power of two (PyTorch's roundup_power2_divisions = 4): at most 25% waste.
        long p = 1L << (63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)bytes));
        long step = p / 4;
        return (bytes + step - 1) / step * step;
    }

    internal MemoryBuffer1D<byte, Stride1D.Dense> Rent(long bytes, DType dtype)
    {
        long size = RoundSize(bytes);
        lock (_lock)
        {
            if (_free.TryGetValue(size, out var stack) && stack.TryPop(out var cached))
            {
                _cached -= size;
                Account(size);
                _inUse.Add(cached);
                return cached;
            }
            var buffer = TryAllocate(size);
            if (buffer is null)
            {
                EmptyCacheLocked();
                buffer = TryAllocate(size)
                    ?? throw new EngineOutOfMemoryException("Allocate",
                        $"CUDA out of memory on {_device}: tried to allocate {Format(bytes)} for {bytes / dtype.ElementSize()} elements of {dtype.Name()} (block of {Format(size)}); " +
                        $"allocated {Format(_allocated)}, reserved {Format(_reserved)}, peak {Format(_peak)}, " +
                        $"limit {(Limit is long l ? Format(l) : Format(_accelerator.MemorySize))}");
            }
            _reserved += size;
            _deviceAllocations++;
            Account(size);
            _inUse.Add(buffer);
            return buffer;
        }
    }

    void Account(long size)
    {
        _allocated += size;
        if (_allocated > _peak) _peak = _allocated;
    }

    MemoryBuffer1D<byte, Stride1D.Dense>? TryAllocate(long size)
    {
        if (Limit is long limit && _reserved + size > limit) return null;
        try
        {
            _bind();
            return _accelerator.Allocate1D<byte>(size);
        }
        catch (Exception e) when (e is OutOfMemoryException or AcceleratorException)
        {
            return null;
        }
    }

    /// <summary>Takes back a block (any thread, finalizers included): it joins its class's free list.</summary>
    internal void Return(MemoryBuffer1D<byte, Stride1D.Dense> buffer)
    {
        long size = buffer.Length;
        lock (_lock)
        {
            if (!_inUse.Remove(buffer)) return; // not ours, or returned twice
            _allocated -= size;
            if (!_free.TryGetValue(size, out var stack)) _free[size] = stack = new Stack<MemoryBuffer1D<byte, Stride1D.Dense>>();
            stack.Push(buffer);
            _cached += size;
        }
    }

    /// <summary>Frees every cached block on the device (as <c>torch.cuda.empty_cache</c>). Waits for queued work first.</summary>
    public void EmptyCache()
    {
        lock (_lock) EmptyCacheLocked();
    }

    void EmptyCacheLocked()
    {
        if (_cached == 0) return;
        _bind();
        _accelerator.Synchronize(); // a cached block may still be read by queued kernels
        CudaBackend.CountHostSynchronization();
        foreach (var stack in _free.Values)
            while (stack.TryPop(out var b)) { _reserved -= b.Length; b.Dispose(); }
        _cached = 0;
    }

    /// <summary>Sets <see cref="Peak"/> to the current <see cref="Allocated"/>.</summary>
    public void ResetPeak()
    {
        lock (_lock) _peak = _allocated;
    }

    static string Format(long bytes) =>
        bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):0.##} GiB"
        : bytes >= 1L << 20 ? $"{bytes / (double)(1L << 20):0.##} MiB"
        : bytes >= 1L << 10 ? $"{bytes / 1024.0:0.##} KiB"
        : $"{bytes} bytes";
}

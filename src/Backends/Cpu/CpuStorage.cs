using System.Runtime.InteropServices;
using Engine.Backends;

namespace Engine.Backends.Cpu;

/// <summary>
/// A 64-byte aligned native buffer from <see cref="CpuBufferPool"/>, aligned for AVX-512 (blocks from 2 MB on huge
/// pages, <see cref="HugePages"/>). Live storages are reported
/// to the GC as memory pressure (<see cref="CpuMemoryPressure"/>), so tensors dropped without Dispose get collected.
/// </summary>
public sealed unsafe class CpuStorage : Storage
{
    byte* _ptr;
    readonly long _capacity;

    internal CpuStorage(Device device, DType dtype, long count) : base(device, dtype, count)
    {
        _ptr = CpuBufferPool.Rent(ByteLength, out _capacity, dtype, device);
        Track();
        CpuMemoryPressure.Update();
    }

    /// <summary>Start of the buffer.</summary>
    public byte* Pointer => _ptr != null ? _ptr : throw new ObjectDisposedException(nameof(CpuStorage));

    /// <summary>The buffer as elements of <typeparamref name="T"/>.</summary>
    public T* Ptr<T>() where T : unmanaged => (T*)Pointer;

    /// <summary>
    /// The buffer as a span of <typeparamref name="T"/>; a <see cref="ShapeException"/> when it holds more than
    /// <see cref="int.MaxValue"/> of them (a span cannot: walk such a buffer through <see cref="Ptr{T}"/>).
    /// </summary>
    public Span<T> AsSpan<T>() where T : unmanaged
    {
        long n = ByteLength / sizeof(T);
        if (n > int.MaxValue)
            throw new ShapeException("AsSpan", $"a storage of {n} {typeof(T).Name} elements is longer than a span can be ({int.MaxValue})");
        return new(Pointer, (int)n);
    }

    /// <inheritdoc/>
    protected override void Free()
    {
        var p = _ptr;
        _ptr = null;
        if (p == null) return;
        CpuBufferPool.Return(p, _capacity);
        CpuMemoryPressure.Update(); // Release has uncounted this storage already
    }
}

/// <summary>
/// Size-class free lists of aligned native buffers, so a training loop that frees and reallocates the same shapes
/// each step does no allocation after the first. Buffers above <see cref="MaxCachedBytes"/> in total are freed.
/// </summary>
public static unsafe class CpuBufferPool
{
    static readonly Stack<nint>[] s_free = CreateClasses();
    static readonly Lock s_lock = new();
    static long s_cached;

    /// <summary>The most bytes kept in free lists (default 2 GiB).</summary>
    public static long MaxCachedBytes { get; set; } = 2L << 30;

    /// <summary>Bytes currently held in free lists.</summary>
    public static long CachedBytes => Interlocked.Read(ref s_cached);

    static Stack<nint>[] CreateClasses()
    {
        var a = new Stack<nint>[64];
        for (int i = 0; i < a.Length; i++) a[i] = new Stack<nint>();
        return a;
    }

    // Power-of-two classes from 64 bytes: at most 2x waste, O(1) lookup.
    static int ClassOf(long bytes) => bytes <= 64 ? 6 : 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)(bytes - 1));

    /// <summary>
    /// A buffer of at least <paramref name="bytes"/> bytes (at most <see cref="Shape.MaxBytes"/>). When the system
    /// refuses one, the free lists are emptied and the allocation retried once (unless the request is larger than
    /// the machine's memory, which no trimming can help); a second refusal throws an
    /// <see cref="EngineOutOfMemoryException"/> and leaves the pool as it was, apart from that trim.
    /// </summary>
    internal static byte* Rent(long bytes, out long capacity, DType dtype, Device device)
    {
        int c = ClassOf(bytes);
        long cap = capacity = 1L << c;
        lock (s_lock)
        {
            if (s_free[c].TryPop(out var p)) { s_cached -= cap; return (byte*)p; }
        }
        var fresh = TryAlloc(cap);
        if (fresh == null && CachedBytes > 0 && cap <= GC.GetGCMemoryInfo().TotalAvailableMemoryBytes)
        {
            Trim();
            fresh = TryAlloc(cap);
        }
        if (fresh == null)
            throw new EngineOutOfMemoryException("Allocate",
                $"out of host memory: {bytes} bytes for {bytes / dtype.ElementSize()} elements of {dtype.Name()} on {device} " +
                $"(a pool block of {cap} bytes) were refused; {CachedBytes} bytes are cached in the pool, " +
                $"{Storage.LiveBytes(DeviceType.Cpu)} held by live storages");
        return fresh;
    }

    // NativeMemory throws rather than returning null; either way the answer here is "no".
    static byte* TryAlloc(long bytes)
    {
        byte* p;
        try { p = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, HugePages.AlignmentFor(bytes)); }
        catch (OutOfMemoryException) { return null; }
        // Before the first touch, so the pages are faulted in as huge ones (pool blocks from 2 MB are whole pages).
        HugePages.Advise(p, bytes);
        return p;
    }

    internal static void Return(byte* p, long capacity)
    {
        int c = ClassOf(capacity);
        lock (s_lock)
        {
            if (s_cached + capacity <= MaxCachedBytes)
            {
                s_free[c].Push((nint)p);
                s_cached += capacity;
                return;
            }
        }
        NativeMemory.AlignedFree(p);
    }

    /// <summary>Frees every cached buffer.</summary>
    public static void Trim()
    {
        lock (s_lock)
        {
            foreach (var st in s_free) while (st.TryPop(out var p)) NativeMemory.AlignedFree((void*)p);
            s_cached = 0;
        }
    }
}

using System.Runtime.InteropServices;
using Engine.Backends;

namespace Engine.Backends.Cpu;

/// <summary>A 64-byte aligned native buffer from <see cref="CpuBufferPool"/>: no GC pressure, aligned for AVX-512.</summary>
public sealed unsafe class CpuStorage : Storage
{
    byte* _ptr;
    readonly long _capacity;

    internal CpuStorage(Device device, DType dtype, long count) : base(device, dtype, count)
    {
        _ptr = CpuBufferPool.Rent(ByteLength, out _capacity);
    }

    /// <summary>Start of the buffer.</summary>
    public byte* Pointer => _ptr != null ? _ptr : throw new ObjectDisposedException(nameof(CpuStorage));

    /// <summary>The buffer as elements of <typeparamref name="T"/>.</summary>
    public T* Ptr<T>() where T : unmanaged => (T*)Pointer;

    /// <summary>The buffer as a span of <typeparamref name="T"/> (at most int.MaxValue elements).</summary>
    public Span<T> AsSpan<T>() where T : unmanaged => new(Pointer, checked((int)(ByteLength / sizeof(T))));

    /// <inheritdoc/>
    protected override void Free()
    {
        var p = _ptr;
        _ptr = null;
        if (p != null) CpuBufferPool.Return(p, _capacity);
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

    internal static byte* Rent(long bytes, out long capacity)
    {
        int c = ClassOf(bytes);
        long cap = capacity = 1L << c;
        lock (s_lock)
        {
            if (s_free[c].TryPop(out var p)) { s_cached -= cap; return (byte*)p; }
        }
        return (byte*)NativeMemory.AlignedAlloc((nuint)cap, 64);
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

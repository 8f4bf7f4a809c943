namespace Engine.Backends;

/// <summary>
/// A backend's buffer of <see cref="Count"/> elements of one dtype on one device. Tensors that are views of each other
/// share one storage; it is reference counted by them and goes back to its backend's pool when the last one is
/// disposed (or finalized). The version counter is shared by all views, as PyTorch's, so autograd can tell that a
/// saved tensor was modified in place.
/// A storage counts in <see cref="LiveCount"/> and <see cref="LiveBytes"/> only once its buffer exists: the base
/// constructor validates the size, the derived constructor allocates and then calls <see cref="Track"/>, so an
/// allocation that throws leaves the counters as they were.
/// </summary>
public abstract class Storage
{
    int _refs;
    int _version;
    int _tracked;
    static readonly long[] s_live = new long[Enum.GetValues<DeviceType>().Length];
    static readonly long[] s_liveBytes = new long[Enum.GetValues<DeviceType>().Length];
    static readonly long[] s_peakBytes = new long[Enum.GetValues<DeviceType>().Length];

    /// <summary>
    /// Describes a storage with no references yet, not counted as live until the derived constructor calls
    /// <see cref="Track"/>. Throws a <see cref="ShapeException"/> for a negative count or one past
    /// <see cref="Shape.MaxBytes"/> bytes, so <see cref="ByteLength"/> never overflows.
    /// </summary>
    protected Storage(Device device, DType dtype, long count)
    {
        long max = Shape.MaxBytes >> System.Numerics.BitOperations.Log2((uint)dtype.ElementSize()); // a shift: sizes are powers of two
        if (count < 0 || count > max)
            throw new ShapeException("Allocate", $"{count} elements of {dtype.Name()} on {device}: a storage holds 0 to {max} elements (2^62 bytes)");
        Device = device; DType = dtype; Count = count;
    }

    /// <summary>
    /// Counts this storage as live. The derived constructor calls it last, once its buffer is allocated; the last
    /// <see cref="Release"/> uncounts it. Idempotent.
    /// </summary>
    protected void Track()
    {
        if (Interlocked.Exchange(ref _tracked, 1) != 0) return;
        Interlocked.Increment(ref s_live[(int)Device.Type]);
        RaisePeak((int)Device.Type, Interlocked.Add(ref s_liveBytes[(int)Device.Type], ByteLength));
    }

    // A lock-free maximum: the common case (live below the peak) is one read.
    static void RaisePeak(int type, long live)
    {
        long peak = Volatile.Read(ref s_peakBytes[type]);
        while (live > peak)
        {
            long seen = Interlocked.CompareExchange(ref s_peakBytes[type], live, peak);
            if (seen == peak) return;
            peak = seen;
        }
    }

    /// <summary>The device holding the buffer.</summary>
    public Device Device { get; }

    /// <summary>The element type.</summary>
    public DType DType { get; }

    /// <summary>Number of elements.</summary>
    public long Count { get; }

    /// <summary>Size in bytes.</summary>
    public long ByteLength => Count * DType.ElementSize();

    /// <summary>Bumped by every in-place write through any view.</summary>
    public int Version => Volatile.Read(ref _version);

    /// <summary>Records an in-place modification.</summary>
    public void BumpVersion() => Interlocked.Increment(ref _version);

    /// <summary>
    /// The number of references (tensor handles and saved values) now on this storage. The backward pass reads it to
    /// take over a gradient that nothing else can see instead of copying it into a leaf's <c>Grad</c>.
    /// </summary>
    internal int References => Volatile.Read(ref _refs);

    /// <summary>Adds a reference (a tensor or a saved value now points at this storage).</summary>
    public void AddRef() => Interlocked.Increment(ref _refs);

    /// <summary>Drops a reference; the last one returns the buffer to the backend.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) != 0) return;
        if (Volatile.Read(ref _tracked) != 0)
        {
            Interlocked.Decrement(ref s_live[(int)Device.Type]);
            Interlocked.Add(ref s_liveBytes[(int)Device.Type], -ByteLength);
        }
        Free();
    }

    /// <summary>Returns the buffer to the backend's pool. Called once, possibly from a finalizer thread.</summary>
    protected abstract void Free();

    /// <summary>Storages alive on a device type: the leak tests' counter.</summary>
    public static long LiveCount(DeviceType type) => Interlocked.Read(ref s_live[(int)type]);

    /// <summary>Bytes held by live storages on a device type.</summary>
    public static long LiveBytes(DeviceType type) => Interlocked.Read(ref s_liveBytes[(int)type]);

    /// <summary>
    /// The most bytes live storages held at once on a device type since start-up or <see cref="ResetPeakLiveBytes"/>
    /// (as <c>torch.cuda.max_memory_allocated</c>, in exact storage bytes rather than allocator blocks; pooled buffers
    /// not held by a storage do not count).
    /// </summary>
    public static long PeakLiveBytes(DeviceType type) => Interlocked.Read(ref s_peakBytes[(int)type]);

    /// <summary>Starts a new peak from the bytes live now (<c>torch.cuda.reset_peak_memory_stats</c>).</summary>
    public static void ResetPeakLiveBytes(DeviceType type) =>
        Interlocked.Exchange(ref s_peakBytes[(int)type], Interlocked.Read(ref s_liveBytes[(int)type]));
}

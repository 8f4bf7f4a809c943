namespace Engine.Backends;

/// <summary>
/// A backend's buffer of <see cref="Count"/> elements of one dtype on one device. Tensors that are views of each other
/// share one storage; it is reference counted by them and goes back to its backend's pool when the last one is
/// disposed (or finalized). The version counter is shared by all views, as PyTorch's, so autograd can tell that a
/// saved tensor was modified in place.
/// </summary>
public abstract class Storage
{
    int _refs;
    int _version;
    static readonly long[] s_live = new long[2];
    static readonly long[] s_liveBytes = new long[2];

    /// <summary>Creates a storage with no references yet.</summary>
    protected Storage(Device device, DType dtype, long count)
    {
        Device = device; DType = dtype; Count = count;
        Interlocked.Increment(ref s_live[(int)device.Type]);
        Interlocked.Add(ref s_liveBytes[(int)device.Type], ByteLength);
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

    /// <summary>Adds a reference (a tensor or a saved value now points at this storage).</summary>
    public void AddRef() => Interlocked.Increment(ref _refs);

    /// <summary>Drops a reference; the last one returns the buffer to the backend.</summary>
    public void Release()
    {
        if (Interlocked.Decrement(ref _refs) != 0) return;
        Interlocked.Decrement(ref s_live[(int)Device.Type]);
        Interlocked.Add(ref s_liveBytes[(int)Device.Type], -ByteLength);
        Free();
    }

    /// <summary>Returns the buffer to the backend's pool. Called once, possibly from a finalizer thread.</summary>
    protected abstract void Free();

    /// <summary>Storages alive on a device type: the leak tests' counter.</summary>
    public static long LiveCount(DeviceType type) => Interlocked.Read(ref s_live[(int)type]);

    /// <summary>Bytes held by live storages on a device type.</summary>
    public static long LiveBytes(DeviceType type) => Interlocked.Read(ref s_liveBytes[(int)type]);
}

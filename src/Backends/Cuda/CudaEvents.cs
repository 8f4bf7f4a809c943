using System.Runtime.InteropServices;

namespace Engine.Backends.Cuda;

/// <summary>
/// A CUDA event (driver API, <c>cuEventCreate</c> without timing): recorded on a stream, it completes when the work
/// queued on that stream before it has run. Another stream can wait for it on the device
/// (<see cref="CudaSideStream.WaitEvent(IntPtr, CudaEvent)"/>), the host can poll it (<see cref="IsComplete"/>) or block
/// on it (<see cref="Synchronize"/>). ILGPU keeps its event API internal, so these are P/Invoked from
/// <c>libcuda.so.1</c>; the calling thread must have the device's context current (<c>Accelerator.Bind()</c>).
/// As <c>torch.cuda.Event</c>; one event is recorded once here (a fresh event per use is cheap).
/// </summary>
public sealed partial class CudaEvent : IDisposable
{
    const int DisableTiming = 2;
    const int ErrorNotReady = 600;

    IntPtr _event;

    CudaEvent(IntPtr e) => _event = e;

    /// <summary>The driver's handle (<c>CUevent</c>); zero once disposed.</summary>
    public IntPtr Handle => _event;

    /// <summary>Creates an event and records it on <paramref name="stream"/> (a <c>CUstream</c>; zero is the legacy default stream).</summary>
    public static CudaEvent Record(IntPtr stream)
    {
        CudaDriver.Check("cuEventCreate", EventCreate(out var e, DisableTiming));
        var ev = new CudaEvent(e);
        try { CudaDriver.Check("cuEventRecord", EventRecord(e, stream)); }
        catch { ev.Dispose(); throw; }
        return ev;
    }

    /// <summary>Polls without blocking (<c>cuEventQuery</c>): true once the work before the record has run.</summary>
    public bool IsComplete
    {
        get
        {
            ObjectDisposedException.ThrowIf(_event == 0, this);
            int r = EventQuery(_event);
            if (r == ErrorNotReady) return false;
            CudaDriver.Check("cuEventQuery", r);
            return true;
        }
    }

    /// <summary>Blocks the host until the event completes (<c>cuEventSynchronize</c>).</summary>
    public void Synchronize()
    {
        ObjectDisposedException.ThrowIf(_event == 0, this);
        CudaDriver.Check("cuEventSynchronize", EventSynchronize(_event));
        CudaBackend.CountHostSynchronization();
    }

    /// <summary>
    /// Destroys the event. A stream already told to wait for it still waits (the driver releases it once complete),
    /// so an event may be disposed right after <see cref="CudaSideStream.WaitEvent(IntPtr, CudaEvent)"/>.
    /// </summary>
    public void Dispose()
    {
        var e = Interlocked.Exchange(ref _event, 0);
        if (e != 0) _ = EventDestroy(e);
    }

    [LibraryImport(CudaDriver.Library, EntryPoint = "cuEventCreate")] private static partial int EventCreate(out IntPtr e, int flags);
    [LibraryImport(CudaDriver.Library, EntryPoint = "cuEventRecord")] private static partial int EventRecord(IntPtr e, IntPtr stream);
    [LibraryImport(CudaDriver.Library, EntryPoint = "cuEventQuery")] private static partial int EventQuery(IntPtr e);
    [LibraryImport(CudaDriver.Library, EntryPoint = "cuEventSynchronize")] private static partial int EventSynchronize(IntPtr e);
    [LibraryImport(CudaDriver.Library, EntryPoint = "cuEventDestroy_v2")] private static partial int EventDestroy(IntPtr e);
}

/// <summary>The CUDA driver library these P/Invokes load, its availability and its error codes.</summary>
public static class CudaDriver
{
    /// <summary>The driver library (installed by the NVIDIA driver, not the toolkit).</summary>
    public const string Library = "libcuda.so.1";

    static readonly Lazy<bool> s_available = new(() =>
    {
        if (!NativeLibrary.TryLoad(Library, out var h)) return false;
        NativeLibrary.Free(h);
        return true;
    });

    /// <summary>Whether <c>libcuda.so.1</c> loads on this machine (an NVIDIA driver is installed).</summary>
    public static bool IsAvailable => s_available.Value;

    /// <summary>Throws <see cref="DeviceUnavailableException"/> naming the call when the driver returns an error.</summary>
    public static void Check(string call, int result)
    {
        if (result != 0) throw new DeviceUnavailableException(call, $"CUDA driver error {result} ({Name(result)})");
    }

    // The codes a stream or event call returns in practice (cuda.h, CUresult).
    static string Name(int r) => r switch
    {
        1 => "CUDA_ERROR_INVALID_VALUE",
        2 => "CUDA_ERROR_OUT_OF_MEMORY",
        3 => "CUDA_ERROR_NOT_INITIALIZED",
        4 => "CUDA_ERROR_DEINITIALIZED",
        201 => "CUDA_ERROR_INVALID_CONTEXT",
        400 => "CUDA_ERROR_INVALID_HANDLE",
        600 => "CUDA_ERROR_NOT_READY",
        700 => "CUDA_ERROR_ILLEGAL_ADDRESS",
        719 => "CUDA_ERROR_LAUNCH_FAILED",
        _ => "see cuda.h",
    };
}

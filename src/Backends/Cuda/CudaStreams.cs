using System.Runtime.InteropServices;
using ILGPU.Runtime.Cuda;

namespace Engine.Backends.Cuda;

/// <summary>
/// A CUDA stream beside the backend's compute stream, for work that should run concurrently with its kernels (as the
/// stream <c>ProcessGroupNCCL</c> gives each communicator): NCCL's collectives, in Engine.Distributed. The backend
/// launches every kernel on ILGPU's default stream, which is CUDA's legacy NULL stream; a stream created the ordinary
/// way would synchronize implicitly with it (each waits for the other's queued work), so this one is created with
/// <c>CU_STREAM_NON_BLOCKING</c> and is ordered with the compute stream only through events
/// (<see cref="WaitEvent(IntPtr, CudaEvent)"/>). Memory a side stream uses must stay allocated until the stream is
/// done with it: the caching allocator reuses blocks in compute-stream order only (see Engine.Distributed's
/// <c>CommStream</c>, which keeps such buffers alive until the compute stream has been made to wait).
/// </summary>
public sealed partial class CudaSideStream : IDisposable
{
    const uint NonBlocking = 1;

    readonly CudaBackend _backend;
    IntPtr _stream;

    CudaSideStream(CudaBackend backend, IntPtr stream) { _backend = backend; _stream = stream; }

    /// <summary>
    /// Creates a non-blocking stream on <paramref name="backend"/>'s device; <paramref name="highPriority"/> gives it
    /// the device's greatest priority, so its kernels are scheduled ahead of queued compute kernels when both wait.
    /// </summary>
    public static CudaSideStream Create(CudaBackend backend, bool highPriority = false)
    {
        if (backend.IsEmulated)
            throw new DeviceUnavailableException("CudaSideStream", $"{backend.Device} is ILGPU's CPU emulator: side streams need a real GPU");
        backend.Bind();
        int priority = 0;
        if (highPriority)
        {
            CudaDriver.Check("cuCtxGetStreamPriorityRange", CtxGetStreamPriorityRange(out _, out int greatest));
            priority = greatest;
        }
        CudaDriver.Check("cuStreamCreateWithPriority", StreamCreateWithPriority(out var s, NonBlocking, priority));
        return new CudaSideStream(backend, s);
    }

    /// <summary>The driver's handle (<c>CUstream</c>), what NCCL is passed; zero once disposed.</summary>
    public IntPtr Handle => _stream;

    /// <summary>The stream every kernel of <paramref name="backend"/> runs on (ILGPU's default stream: CUDA's NULL stream).</summary>
    public static IntPtr ComputeStream(CudaBackend backend) =>
        backend.Accelerator.DefaultStream is CudaStream s ? s.StreamPtr
            : throw new DeviceUnavailableException("CudaSideStream", $"{backend.Device} is ILGPU's CPU emulator: it has no CUDA stream");

    /// <summary>
    /// Makes <paramref name="stream"/> wait on the device for <paramref name="e"/> (<c>cuStreamWaitEvent</c>): work
    /// queued on it afterwards starts only once the work before the event's record has run. The host does not wait.
    /// </summary>
    public static void WaitEvent(IntPtr stream, CudaEvent e) =>
        CudaDriver.Check("cuStreamWaitEvent", StreamWaitEvent(stream, e.Handle, 0));

    /// <summary>Makes this stream wait on the device for <paramref name="e"/>.</summary>
    public void WaitEvent(CudaEvent e) => WaitEvent(_stream, e);

    /// <summary>Blocks the host until everything queued on this stream has run.</summary>
    public void Synchronize()
    {
        _backend.Bind();
        CudaDriver.Check("cuStreamSynchronize", StreamSynchronize(_stream));
        CudaBackend.CountHostSynchronization();
    }

    /// <summary>Destroys the stream (work already queued on it still runs).</summary>
    public void Dispose()
    {
        var s = Interlocked.Exchange(ref _stream, 0);
        if (s == 0) return;
        _backend.Bind();
        _ = StreamDestroy(s);
    }

    [LibraryImport(CudaDriver.Library, EntryPoint = "cuStreamCreateWithPriority")] private static partial int StreamCreateWithPriority(out IntPtr s, uint flags, int priority);
    [LibraryImport(CudaDriver.Library, EntryPoint = "cuCtxGetStreamPriorityRange")] private static partial int CtxGetStreamPriorityRange(out int least, out int greatest);
    [LibraryImport(CudaDriver.Library, EntryPoint = "cuStreamWaitEvent")] private static partial int StreamWaitEvent(IntPtr s, IntPtr e, uint flags);
    [LibraryImport(CudaDriver.Library, EntryPoint = "cuStreamSynchronize")] private static partial int StreamSynchronize(IntPtr s);
    [LibraryImport(CudaDriver.Library, EntryPoint = "cuStreamDestroy_v2")] private static partial int StreamDestroy(IntPtr s);
}

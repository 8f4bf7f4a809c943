using Engine.Backends.Cuda;

namespace Engine.Distributed.Nccl;

/// <summary>
/// <see cref="IStreamDriver"/> on a real GPU: the backend's compute stream, a non-blocking communication stream
/// (<see cref="CudaSideStream"/>, high priority, so a ready collective is not queued behind a wave of backward kernels)
/// and driver events (<see cref="CudaEvent"/>). Binds the device's context before each call: the watchdog polls from
/// its own thread.
/// </summary>
internal sealed class CudaStreamDriver : IStreamDriver, IDisposable
{
    readonly CudaBackend _backend;
    readonly CudaSideStream _comm;

    public CudaStreamDriver(CudaBackend backend)
    {
        _backend = backend;
        Compute = CudaSideStream.ComputeStream(backend);
        _comm = CudaSideStream.Create(backend, highPriority: true);
    }

    public IntPtr Compute { get; }

    public IntPtr Comm => _comm.Handle;

    public object Record(IntPtr stream)
    {
        _backend.Accelerator.Bind();
        return CudaEvent.Record(stream);
    }

    public void Wait(IntPtr stream, object e) => CudaSideStream.WaitEvent(stream, (CudaEvent)e);

    public bool IsComplete(object e)
    {
        _backend.Accelerator.Bind();
        return ((CudaEvent)e).IsComplete;
    }

    public void Synchronize(IntPtr stream)
    {
        if (stream == Comm) _comm.Synchronize();
        else { _backend.Accelerator.Bind(); _backend.Synchronize(); }
    }

    public void Destroy(object e) => ((CudaEvent)e).Dispose();

    public void Dispose() => _comm.Dispose();
}

using Engine.Backends;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Distributed;

/// <summary>
/// The CUDA driver's streams and events (<see cref="CudaSideStream"/>, <see cref="CudaEvent"/>) on a real GPU (Gpu
/// category, the nightly script): an event recorded behind a kernel completes once it has run, a side stream waits
/// for it without blocking the host, and the side stream is not the compute stream. Without libcuda or a device the
/// tests are ignored with the reason.
/// </summary>
[TestFixture, Category("Gpu")]
public sealed class CudaStreamGpuTests
{
    CudaBackend _backend = null!;

    [OneTimeSetUp]
    public void Open()
    {
        if (!CudaDriver.IsAvailable) Assert.Ignore($"{CudaDriver.Library} does not load (no NVIDIA driver)");
        if (CudaBackend.RealDeviceCount == 0) Assert.Ignore("no CUDA device");
        _backend = (CudaBackend)BackendRegistry.Get(Device.Cuda(0));
    }

    [Test]
    public void ASideStreamWaitsForAnEventRecordedBehindComputeKernels()
    {
        _backend.Accelerator.Bind();
        using var side = CudaSideStream.Create(_backend, highPriority: true);
        var compute = CudaSideStream.ComputeStream(_backend);
        Assert.That(side.Handle, Is.Not.EqualTo(compute).And.Not.EqualTo(IntPtr.Zero));
        using var a = Tensor.Ones([1 << 22], DType.Float32, Device.Cuda(0));
        using var b = a * 3;
        using var afterKernels = CudaEvent.Record(compute);
        long syncs = CudaBackend.HostSynchronizations;
        side.WaitEvent(afterKernels);
        using var onSide = CudaEvent.Record(side.Handle);
        Assert.That(CudaBackend.HostSynchronizations, Is.EqualTo(syncs), "a device-side wait synchronized the host");
        onSide.Synchronize();
        Assert.That(afterKernels.IsComplete, Is.True, "the side stream's event completed before the compute event it waited for");
        Assert.That(b.ToArray<float>()[12345], Is.EqualTo(3f));
    }

    [Test]
    public void ADisposedEventOrStreamIsRefused()
    {
        _backend.Accelerator.Bind();
        var e = CudaEvent.Record(CudaSideStream.ComputeStream(_backend));
        e.Synchronize();
        e.Dispose();
        Assert.That(e.Handle, Is.EqualTo(IntPtr.Zero));
        Assert.Throws<ObjectDisposedException>(() => _ = e.IsComplete);
        var s = CudaSideStream.Create(_backend);
        s.Dispose();
        Assert.That(s.Handle, Is.EqualTo(IntPtr.Zero));
    }
}

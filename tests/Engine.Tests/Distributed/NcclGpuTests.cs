using Engine.Autograd.Nn;
using Engine.Backends.Cuda;
using Engine.Distributed;
using NUnit.Framework;

namespace Engine.Tests.Distributed;

/// <summary>
/// NCCL on a real GPU, world size 1 (the nightly GPU script runs the Gpu category): every collective leaves its
/// tensor as a one-rank reduction must (the input itself, or its rounding for an average), on contiguous tensors and
/// views, and DistributedDataParallel over NCCL gives the plain backward's gradients. Two-rank NCCL runs need two GPUs
/// and mpirun: <c>mpirun -np 2 dotnet Engine.Distributed.Worker.dll ...</c> with a CUDA scenario is still owed.
/// </summary>
[TestFixture, NonParallelizable, Category("Gpu")]
public sealed class NcclGpuTests
{
    ProcessGroup _group = null!;

    [OneTimeSetUp]
    public void Join()
    {
        if (CudaBackend.RealDeviceCount == 0) Assert.Ignore("no CUDA device");
        var (found, why) = Libraries.Nccl();
        if (!found) Assert.Ignore(why);
        _group = ProcessGroup.Create(DistributedBackend.Nccl, TimeSpan.FromSeconds(30));
    }

    [OneTimeTearDown]
    public void Leave() => _group?.Dispose();

    static double[] Values(int n, int salt) => Enumerable.Range(0, n).Select(i => Math.Sin(0.7 * i + salt) * 3).ToArray();

    [Test]
    public void OneRankCollectivesLeaveTheInput([Values(DType.Float32, DType.BFloat16, DType.Float64)] DType dtype)
    {
        var dev = _group.Device;
        Assert.That((_group.Rank, _group.WorldSize), Is.EqualTo((0, 1)));
        using var host = Tensor.FromArray(Values(37, 1)).To(dtype);
        var want = host.ToArray<double>();
        foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Average, ReduceOp.Max })
        {
            using var t = host.To(dev);
            _group.AllReduce(t, op).Wait();
            Assert.That(t.ToArray<double>(), Is.EqualTo(want), $"{op}");
        }
        using (var t = host.To(dev)) { _group.Broadcast(t, 0).Wait(); Assert.That(t.ToArray<double>(), Is.EqualTo(want)); }
        using (var t = host.To(dev))
        using (var o = Tensor.Zeros([37], dtype, dev)) { _group.AllGather(o, t).Wait(); Assert.That(o.ToArray<double>(), Is.EqualTo(want)); }
        using (var t = host.To(dev))
        using (var o = Tensor.Zeros([37], dtype, dev)) { _group.ReduceScatter(o, t).Wait(); Assert.That(o.ToArray<double>(), Is.EqualTo(want)); }
        // A column of a matrix: staged through a contiguous copy and written back in place, the other column untouched.
        using var mh = Tensor.FromArray(Values(40, 2), new Shape([20, 2])).To(dtype);
        using var m = mh.To(dev);
        using (var col = m.Narrow(1, 1, 1)) _group.AllReduce(col, ReduceOp.Sum).Wait();
        Assert.That(m.ToArray<double>(), Is.EqualTo(mh.ToArray<double>()));
    }

    [Test]
    public void WaitOrdersLaterKernelsOnTheDeviceWithoutAHostSynchronization()
    {
        var dev = _group.Device;
        var nccl = (Engine.Distributed.Nccl.NcclProcessGroup)_group;
        Assert.That(nccl.Streams.Driver.Comm, Is.Not.EqualTo(nccl.Streams.Driver.Compute), "collectives on the compute stream");
        var values = Values(1 << 20, 3);
        using var x = Tensor.FromArray(values).To(DType.Float32).To(dev);
        long syncs = CudaBackend.HostSynchronizations;
        using var y = x * 2;                       // compute stream, before the post: the all-reduce must see it
        var work = _group.AllReduce(y, ReduceOp.Sum);
        work.Wait();
        using var z = y + 1;                       // compute stream, after the wait: must see the all-reduce's result
        Assert.That(CudaBackend.HostSynchronizations, Is.EqualTo(syncs), "Wait() synchronized the host");
        var got = z.ToArray<double>();
        for (int i = 0; i < values.Length; i += 4099)
            Assert.That(got[i], Is.EqualTo((double)((float)values[i] * 2 + 1)).Within(1e-6 * (1 + Math.Abs(values[i]))), $"[{i}]");
        nccl.Streams.Sweep();
        Assert.That(nccl.Streams.InFlight, Is.Zero, "buffers still held after the host waited");
        Assert.That(work.IsCompleted, Is.True);
    }

    [Test]
    public void DdpOverNcclMatchesPlainBackward()
    {
        var dev = _group.Device;
        using var a = new Linear(8, 4, device: dev, generator: new Generator(3));
        using var b = new Linear(8, 4, device: dev, generator: new Generator(3));
        using var ddp = new DistributedDataParallel(b, _group, bucketCapBytes: 64, findUnusedParameters: true);   // so a world of one still reduces its buckets
        using var x = Tensor.FromArray(Values(48, 4), new Shape([6, 8])).To(dev);
        using var y = Tensor.FromArray(Values(24, 5), new Shape([6, 4])).To(dev);
        using (var o = a.Forward(x)) using (var l = o.MseLoss(y)) l.Backward();
        using (var o = ddp.Forward(x)) using (var l = o.MseLoss(y)) l.Backward();
        foreach (var ((name, p), (_, q)) in b.NamedParameters().Zip(a.NamedParameters()))
            Assert.That(p.Grad!.ToArray<double>(), Is.EqualTo(q.Grad!.ToArray<double>()).Within(1e-6), name);
        Assert.That(ddp.BucketParameterNames, Has.Count.GreaterThan(1));
    }
}

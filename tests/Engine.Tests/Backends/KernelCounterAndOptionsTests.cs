using Engine.Backends;
using Engine.Backends.Cpu;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Backends;

/// <summary>The kernel counter's scopes and the per-backend options objects.</summary>
public class KernelCounterAndOptionsTests
{
    [Test]
    public void Scope_CountsThisFlowsLaunchesByName_AndNests()
    {
        using var a = Tensor.FromArray(new float[] { 1, 2, 3, 4 }, [2, 2]);
        long before = KernelCounter.Count(nameof(IBackend.MatMul));
        using var outer = KernelCounter.Begin();
        using (var y = a.MatMul(a)) { }
        KernelCounterScope inner;
        using (inner = KernelCounter.Begin())
        using (var y = a.Exp()) { }
        using (var y = a.Exp()) { }
        Assert.That(outer.Count(nameof(IBackend.MatMul)), Is.EqualTo(1));
        Assert.That(outer.Count(nameof(IBackend.Unary)), Is.EqualTo(2), outer.ToString());
        Assert.That(inner.Count(nameof(IBackend.Unary)), Is.EqualTo(1), "a disposed scope stops counting");
        Assert.That(inner.Launches, Is.EqualTo(1), inner.ToString());
        Assert.That(outer.Launches, Is.GreaterThanOrEqualTo(3));
        Assert.That(KernelCounter.Count(nameof(IBackend.MatMul)) - before, Is.GreaterThanOrEqualTo(1), "process-wide totals grow too");
        Assert.That(KernelCounter.Snapshot()[nameof(IBackend.MatMul)], Is.GreaterThanOrEqualTo(1));
    }

    [Test]
    public void Scope_IgnoresOtherThreads_ButFollowsTasksItStarts()
    {
        using var a = Tensor.FromArray(new float[] { 1, 2 });
        using var c = KernelCounter.Begin();
        var other = new Thread(() => { using var y = a.Exp(); }, 1 << 20);
        // A thread started with a suppressed flow does not inherit the scope.
        using (ExecutionContext.SuppressFlow()) other.Start();
        other.Join();
        Assert.That(c.Launches, Is.Zero, c.ToString());
        Task.Run(() => { using var y = a.Exp(); }).Wait();
        Assert.That(c.Count(nameof(IBackend.Unary)), Is.EqualTo(1), "a task started inside the scope is counted");
    }

    [Test]
    public void CpuOptions_ScopeOverridesTheDefault_AndRestoresIt()
    {
        var start = CpuBackend.Options;
        using (CpuBackend.UseOptions(start with { Threads = 1 }))
        {
            Assert.That(CpuParallel.MaxThreads, Is.EqualTo(1));
            using (CpuBackend.UseOptions(CpuBackend.Options with { Threads = 3 }))
                Assert.That(CpuParallel.MaxThreads, Is.EqualTo(3));
            Assert.That(CpuParallel.MaxThreads, Is.EqualTo(1));
            int seen = 0;
            var t = new Thread(() => seen = CpuParallel.MaxThreads);
            using (ExecutionContext.SuppressFlow()) t.Start();
            t.Join();
            Assert.That(seen, Is.EqualTo(CpuBackend.DefaultOptions.Threads), "another thread keeps the default");
        }
        Assert.That(CpuBackend.Options, Is.EqualTo(start));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = start with { Threads = 0 });
    }

    [Test]
    public void CudaOptions_ValidateTheirValues()
    {
        var o = CudaBackendOptions.FromEnvironment();
        Assert.That(o.Emulation, Is.EqualTo(Environment.GetEnvironmentVariable("ENGINE_CUDA_EMULATION") == "1"));
        Assert.That(o.MaxGroupSize, Is.EqualTo(256));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = o with { MaxGroupSize = 100 });
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = o with { GroupsPerMultiprocessor = 0 });
    }
}

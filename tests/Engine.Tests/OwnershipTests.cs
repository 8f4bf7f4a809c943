using System.Runtime.CompilerServices;
using Engine.Backends;
using Engine.Backends.Cpu;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Deterministic ownership: disposal returns storage at once, views keep it alive, scopes free what was created
/// inside them (across awaits too), and the finalizer is the safety net. Live counts are measured as deltas after a
/// full collection, so leftovers of other tests do not matter.
/// </summary>
[TestFixture]
[NonParallelizable]
public class OwnershipTests
{
    static long Live => Storage.LiveCount(DeviceType.Cpu);

    /// <summary>Finalizes whatever earlier code left unreachable, then reads the live count.</summary>
    static long Settle()
    {
        for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        return Live;
    }

    [SetUp]
    public void NoScopeOpen() => Assert.That(DisposeScope.Current, Is.Null, "a test left a scope open");

    [Test]
    public void DisposeReleasesStorageAtOnce()
    {
        long before = Settle();
        var a = Tensor.Zeros([10]);
        var b = Tensor.Ones([3, 3], DType.Float64);
        Assert.That(Live, Is.EqualTo(before + 2));
        long bytes = Storage.LiveBytes(DeviceType.Cpu);
        a.Dispose();
        Assert.That(Live, Is.EqualTo(before + 1));
        Assert.That(Storage.LiveBytes(DeviceType.Cpu), Is.EqualTo(bytes - 40));
        Assert.That(a.IsDisposed, Is.True);
        a.Dispose(); // idempotent
        Assert.That(Live, Is.EqualTo(before + 1));
        b.Dispose();
        Assert.That(Live, Is.EqualTo(before));
    }

    [Test]
    public void ViewsKeepStorageAliveUntilTheLastIsDisposed()
    {
        long before = Settle();
        var x = Tensor.Zeros([4, 4]);
        var v1 = x.T;
        var v2 = x.Narrow(0, 1, 2);
        var v3 = v2.View(8);
        Assert.That(Live, Is.EqualTo(before + 1), "views allocate no storage");
        x.Dispose();
        Assert.That(Live, Is.EqualTo(before + 1));
        v1.Dispose(); v2.Dispose();
        Assert.That(Live, Is.EqualTo(before + 1));
        Assert.That(v3.ToArray<float>(), Has.Length.EqualTo(8), "the last view still reads");
        v3.FillInPlace(2);
        v3.Dispose();
        Assert.That(Live, Is.EqualTo(before));
    }

    [Test]
    public void OpsAllocateExactlyTheirOutputsAndFreeTemporaries()
    {
        Settle();
        using var i = Tensor.FromArray(new[] { 1, 2, 3 });
        using var f = Tensor.FromArray(new[] { 1.5, 2, 3 });
        using var mask = i.Gt(1);
        long start = Live;
        // Promotions, scalar forms, conversions and true division make temporaries: all must be freed.
        var outs = new List<Tensor> { i + f, i / i, i + 2.5, 2 / i, i.Exp(), f.MaskedFill(mask, 0), i.Lt(2.5), f.To(DType.Float16), i.Pow(-1) };
        Assert.That(Live, Is.EqualTo(start + outs.Count), "one storage per result");
        foreach (var o in outs) o.Dispose();
        Assert.That(Live, Is.EqualTo(start));
        using (var col = f.Reshape(3, 1))
        using (var row = col.T)
        using (var back = row.Reshape(3))
            Assert.That(Live, Is.EqualTo(start), "views allocate nothing");
    }

    [Test]
    public void UsingADisposedTensorThrows()
    {
        var x = Tensor.Ones([2, 2]);
        using var y = Tensor.Ones([2, 2]);
        x.Dispose();
        Assert.That(() => x.Exp(), Throws.TypeOf<DisposedTensorException>());
        Assert.That(() => x + y, Throws.TypeOf<DisposedTensorException>());
        Assert.That(() => y + x, Throws.TypeOf<DisposedTensorException>());
        Assert.That(() => x.ToArray<float>(), Throws.TypeOf<DisposedTensorException>());
        Assert.That(() => x.T, Throws.TypeOf<DisposedTensorException>());
        Assert.That(() => x.View(4), Throws.TypeOf<DisposedTensorException>());
        Assert.That(() => y.AddInPlace(x), Throws.TypeOf<DisposedTensorException>());
        Assert.That(() => x.FillInPlace(1), Throws.TypeOf<DisposedTensorException>());
        Assert.That(() => x.DType, Throws.TypeOf<DisposedTensorException>());
        Assert.That(() => x.Version, Throws.TypeOf<DisposedTensorException>());
        Assert.That(x.Shape, Is.EqualTo(new[] { 2, 2 }), "the layout stays readable");
        Assert.That(y.ToArray<float>(), Is.All.EqualTo(1f), "the other operand is untouched");
    }

    [Test]
    public void ScopeDisposesEverythingCreatedInsideExceptSurvivors()
    {
        long before = Settle();
        using var outside = Tensor.Ones([3]);
        Tensor a, b, c, moved, detached, view, same, contig, det, alias2;
        using (var scope = Tensor.NewScope())
        {
            Assert.That(DisposeScope.Current, Is.SameAs(scope));
            a = Tensor.Zeros([2]);
            b = outside + 1;
            c = b.Exp();
            view = outside.View(3, 1);
            same = outside.To(DType.Float32);
            contig = outside.Contiguous();
            det = outside.Detach();
            alias2 = outside.T;
            moved = (c * 2).MoveToOuterScope();
            detached = (c * 3).DetachFromScopes();
            Assert.That(scope.Count, Is.GreaterThanOrEqualTo(8));
        }
        Assert.That(DisposeScope.Current, Is.Null);
        foreach (var t in new[] { a, b, c, view, same, contig, det, alias2 }) Assert.That(t.IsDisposed, Is.True, "created inside the scope");
        Assert.That(moved.IsDisposed, Is.False);
        Assert.That(detached.IsDisposed, Is.False);
        Assert.That(outside.IsDisposed, Is.False);
        Assert.That(moved.ToArray<float>(), Has.Length.EqualTo(3));
        Assert.That(Live, Is.EqualTo(before + 3));
        moved.Dispose(); detached.Dispose();
        Assert.That(Live, Is.EqualTo(before + 1));
    }

    [Test]
    public void NestedScopes()
    {
        long before = Settle();
        Tensor outer, inner, promoted, twice;
        using (var s1 = Tensor.NewScope())
        {
            outer = Tensor.Zeros([1]);
            using (var s2 = Tensor.NewScope())
            {
                Assert.That(s2.Outer, Is.SameAs(s1));
                inner = Tensor.Zeros([1]);
                promoted = Tensor.Zeros([1]).MoveToOuterScope();
                twice = Tensor.Zeros([1]).MoveToOuterScope().MoveToOuterScope();
                Assert.That(s2.Count, Is.EqualTo(1));
            }
            Assert.That(DisposeScope.Current, Is.SameAs(s1));
            Assert.That(inner.IsDisposed, Is.True);
            Assert.That(promoted.IsDisposed, Is.False);
            Assert.That(outer.IsDisposed, Is.False);
            Assert.That(s1.Count, Is.EqualTo(2));
        }
        Assert.That(promoted.IsDisposed, Is.True, "moved one level, then freed by the outer scope");
        Assert.That(outer.IsDisposed, Is.True);
        Assert.That(twice.IsDisposed, Is.False, "moved out of both scopes");
        twice.Dispose();
        Assert.That(Live, Is.EqualTo(before));
        // Disposing a scope twice is harmless; a scope's Detach hands a tensor to the caller.
        var s = Tensor.NewScope();
        var kept = s.Detach(Tensor.Ones([2]));
        s.Dispose(); s.Dispose();
        Assert.That(kept.IsDisposed, Is.False);
        kept.Dispose();
        Assert.That(DisposeScope.Current, Is.Null);
    }

    [Test]
    public async Task ScopeFlowsAcrossAwait()
    {
        long before = Settle();
        Tensor a, b, c, d;
        using (var scope = Tensor.NewScope())
        {
            a = Tensor.Zeros([2]);
            await Task.Yield();
            Assert.That(DisposeScope.Current, Is.SameAs(scope));
            b = Tensor.Zeros([2]);
            c = await Task.Run(() => Tensor.Ones([2])); // the scope flows into the task
            await Task.Delay(1).ConfigureAwait(false);
            d = Tensor.Zeros([2]);
            await CreateInInnerAsyncScope();
            Assert.That(DisposeScope.Current, Is.SameAs(scope), "an async callee's scope does not leak into the caller");
            Assert.That(scope.Count, Is.EqualTo(4));
        }
        foreach (var t in new[] { a, b, c, d }) Assert.That(t.IsDisposed, Is.True);
        Assert.That(Live, Is.EqualTo(before));
    }

    static async Task CreateInInnerAsyncScope()
    {
        using var inner = Tensor.NewScope();
        await Task.Yield();
        _ = Tensor.Zeros([5]);
        Assert.That(inner.Count, Is.EqualTo(1));
    }

    [Test]
    public void FinalizerReleasesUndisposedTensors()
    {
        long before = Settle();
        MakeGarbage(50);
        for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        Assert.That(Live, Is.EqualTo(before), "the finalizer gave every storage back");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void MakeGarbage(int n)
    {
        for (int i = 0; i < n; i++)
        {
            var x = Tensor.Ones([16]);
            var v = x.T;
            var y = x * 2;
            _ = y.Narrow(0, 0, 4);
            _ = v;
        }
    }

    [Test]
    public void BufferPoolReusesFreedBuffers()
    {
        Settle();
        // An odd size that nothing else uses: 3000 floats = 12 000 bytes, in the 16 KiB class.
        var x = Tensor.Zeros([3000]);
        long cached = CpuBufferPool.CachedBytes;
        x.Dispose();
        Assert.That(CpuBufferPool.CachedBytes, Is.EqualTo(cached + 16384), "freed into the pool");
        var y = Tensor.Zeros([2999]);
        Assert.That(CpuBufferPool.CachedBytes, Is.EqualTo(cached), "rented back from the pool");
        y.Dispose();
        long max = CpuBufferPool.MaxCachedBytes;
        try
        {
            var z = Tensor.Zeros([5000]);
            long now = CpuBufferPool.CachedBytes;
            CpuBufferPool.MaxCachedBytes = now; // full: the next free goes back to the OS
            z.Dispose();
            Assert.That(CpuBufferPool.CachedBytes, Is.EqualTo(now));
        }
        finally { CpuBufferPool.MaxCachedBytes = max; }
    }
}

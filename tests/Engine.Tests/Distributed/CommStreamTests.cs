using Engine.Distributed;
using Engine.Distributed.Nccl;
using NUnit.Framework;

namespace Engine.Tests.Distributed;

/// <summary>
/// The NCCL group's stream ordering (<see cref="CommStream"/>) against a model of a GPU with two streams, so it runs
/// without one: a collective starts only after the kernels queued before its post, the kernels queued after it run
/// while it is still waiting for the peers (overlap), kernels queued after <c>Wait()</c> run only after it, nothing
/// synchronizes the host, and a collective's buffers stay alive until reuse is safe. Plus the watchdog thread. The
/// real driver path (CudaStreamDriver over libcuda) is exercised by <see cref="NcclGpuTests"/> (Gpu category).
/// </summary>
[TestFixture]
public sealed class CommStreamTests
{
    /// <summary>
    /// Streams as in-order queues. A kernel or collective runs when the device steps and its gate is open (a
    /// collective's gate: the peers have joined); a wait blocks its stream until its event's record has run.
    /// </summary>
    sealed class FakeGpu : IStreamDriver
    {
        public sealed class Event { public bool Done; public bool Destroyed; }

        abstract class Item { public abstract bool TryRun(FakeGpu gpu); }
        sealed class Work(string name, Func<bool> gate) : Item
        {
            public override bool TryRun(FakeGpu gpu) { if (!gate()) return false; gpu.Ran.Add(name); return true; }
        }
        sealed class RecordItem(Event e) : Item
        {
            public override bool TryRun(FakeGpu gpu) { e.Done = true; return true; }
        }
        sealed class WaitItem(Event e) : Item
        {
            public override bool TryRun(FakeGpu gpu) => e.Done;
        }

        readonly Dictionary<IntPtr, Queue<Item>> _queues = new() { [1] = new(), [2] = new() };
        public readonly List<string> Ran = [];
        public readonly List<Event> Events = [];
        public int HostSynchronizations;
        public bool RunsOnItsOwn;   // a poll lets the device go on (it runs while the host spins)

        public IntPtr Compute => 1;
        public IntPtr Comm => 2;

        public void Kernel(IntPtr stream, string name, Func<bool>? gate = null) => _queues[stream].Enqueue(new Work(name, gate ?? (() => true)));

        public object Record(IntPtr stream)
        {
            var e = new Event();
            Events.Add(e);
            _queues[stream].Enqueue(new RecordItem(e));
            return e;
        }

        public void Wait(IntPtr stream, object e) => _queues[stream].Enqueue(new WaitItem((Event)e));

        public bool IsComplete(object e)
        {
            var ev = (Event)e;
            Assert.That(ev.Destroyed, Is.False, "an event polled after it was destroyed");
            if (RunsOnItsOwn) Step();
            return ev.Done;
        }

        public void Synchronize(IntPtr stream)
        {
            HostSynchronizations++;
            Step();
            Assert.That(_queues[stream], Is.Empty, "a host synchronization with work that cannot run: it would hang");
        }

        public void Destroy(object e) => ((Event)e).Destroyed = true;

        /// <summary>Runs every stream as far as it can go.</summary>
        public void Step()
        {
            bool progressed = true;
            while (progressed)
            {
                progressed = false;
                foreach (var q in _queues.Values)
                    while (q.Count > 0 && q.Peek().TryRun(this)) { q.Dequeue(); progressed = true; }
            }
        }
    }

    sealed class Buffer : IDisposable
    {
        public bool Disposed;
        public void Dispose() => Disposed = true;
    }

    static (CommStream.Op Op, Buffer Held) AllReduce(CommStream streams, FakeGpu gpu, Func<bool> peersJoined)
    {
        var held = new Buffer();
        var (op, status) = streams.Post("AllReduce", s => { gpu.Kernel(s, "allreduce", peersJoined); return 0; }, [held]);
        Assert.That(status, Is.Zero);
        return (op!, held);
    }

    [Test]
    public void ACollectiveWaitsForEarlierKernelsAndLaterKernelsWaitForIt()
    {
        var gpu = new FakeGpu();
        using var streams = new CommStream(gpu);
        bool gradientsWritten = false;
        gpu.Kernel(gpu.Compute, "write bucket", () => gradientsWritten);
        var (op, _) = AllReduce(streams, gpu, () => true);
        gpu.Kernel(gpu.Compute, "backward rest");
        streams.WaitOnDevice(op);
        gpu.Kernel(gpu.Compute, "optimizer");

        gpu.Step();
        Assert.That(gpu.Ran, Is.Empty, "the all-reduce ran before the kernel that writes its bucket");
        gradientsWritten = true;
        gpu.Step();
        Assert.That(gpu.Ran, Is.EquivalentTo(new[] { "write bucket", "allreduce", "backward rest", "optimizer" }));
        Assert.That(gpu.Ran.IndexOf("allreduce"), Is.GreaterThan(gpu.Ran.IndexOf("write bucket")));
        Assert.That(gpu.Ran.IndexOf("optimizer"), Is.GreaterThan(gpu.Ran.IndexOf("allreduce")));
        Assert.That(gpu.HostSynchronizations, Is.Zero);
        Assert.That(op.IsComplete, Is.True);
    }

    [Test]
    public void KernelsQueuedAfterThePostRunWhileTheCollectiveWaitsForPeers()
    {
        var gpu = new FakeGpu();
        using var streams = new CommStream(gpu);
        bool peersJoined = false;
        gpu.Kernel(gpu.Compute, "bucket 0 grads");
        var (op, _) = AllReduce(streams, gpu, () => peersJoined);
        gpu.Kernel(gpu.Compute, "bucket 1 grads");
        streams.WaitOnDevice(op);   // returns at once: the host goes on queueing
        gpu.Kernel(gpu.Compute, "optimizer");

        gpu.Step();
        Assert.That(gpu.Ran, Is.EqualTo(new[] { "bucket 0 grads", "bucket 1 grads" }), "the rest of backward overlaps the all-reduce; the optimizer waits");
        Assert.That(op.IsComplete, Is.False);
        peersJoined = true;
        gpu.Step();
        Assert.That(gpu.Ran, Is.EqualTo(new[] { "bucket 0 grads", "bucket 1 grads", "allreduce", "optimizer" }));
        Assert.That(op.IsComplete, Is.True);
        Assert.That(gpu.HostSynchronizations, Is.Zero);
    }

    [Test]
    public void BuffersStayAliveUntilTheComputeStreamWaitsOrTheCollectiveHasRun()
    {
        var gpu = new FakeGpu();
        using var streams = new CommStream(gpu);
        bool peersJoined = false;

        // Waited for on the device: any later reuse of the block is queued after the wait, so it is released then.
        var (waited, heldA) = AllReduce(streams, gpu, () => peersJoined);
        Assert.That(heldA.Disposed, Is.False);
        streams.WaitOnDevice(waited);
        Assert.That(heldA.Disposed, Is.True);

        // Dropped without a wait: held until its completion event is seen, even across sweeps.
        var (_, heldB) = AllReduce(streams, gpu, () => peersJoined);
        gpu.Step();
        streams.Sweep();
        Assert.That(heldB.Disposed, Is.False, "freed while the comm stream may still write it");
        Assert.That(streams.InFlight, Is.EqualTo(2));
        peersJoined = true;
        gpu.Step();
        streams.Sweep();
        Assert.That(heldB.Disposed, Is.True);
        Assert.That(streams.InFlight, Is.Zero);
        Assert.That(gpu.Events.All(e => e.Destroyed), Is.True, "every event destroyed once its collective ran");
        Assert.That(waited.IsComplete, Is.True, "a retired collective still reads as complete");
    }

    [Test]
    public void AFailedEnqueueReleasesItsBuffersAndPostsNothing()
    {
        var gpu = new FakeGpu();
        using var streams = new CommStream(gpu);
        var held = new Buffer();
        var (op, status) = streams.Post("AllReduce", _ => 5, [held]);
        Assert.That((op, status, held.Disposed, streams.InFlight), Is.EqualTo(((CommStream.Op?)null, 5, true, 0)));
    }

    [Test]
    public void OverdueNamesTheOldestCollectiveStillRunningAfterTheTimeout()
    {
        var gpu = new FakeGpu();
        using var streams = new CommStream(gpu);
        bool peersJoined = false;
        var (op, _) = AllReduce(streams, gpu, () => peersJoined);
        op.Name = "collective #0 (AllReduce of float32 [4])";
        streams.WaitOnDevice(op);   // a device-side wait: the host cannot notice a hang, the watchdog must
        gpu.Step();
        Assert.That(streams.Overdue(TimeSpan.FromSeconds(30)), Is.Null);
        Thread.Sleep(30);
        Assert.That(streams.Overdue(TimeSpan.FromMilliseconds(10))?.Name, Is.EqualTo("collective #0 (AllReduce of float32 [4])"));
        peersJoined = true;
        gpu.Step();
        Assert.That(streams.Overdue(TimeSpan.FromMilliseconds(10)), Is.Null);
    }

    [Test]
    public void DisposeWaitsForTheCommStreamThenReleasesEverything()
    {
        var gpu = new FakeGpu();
        var streams = new CommStream(gpu);
        var (_, held) = AllReduce(streams, gpu, () => true);
        streams.Dispose();
        Assert.That((gpu.HostSynchronizations, held.Disposed, streams.InFlight), Is.EqualTo((1, true, 0)));
        Assert.Throws<ObjectDisposedException>(() => streams.Post("AllReduce", _ => 0, []));
    }

    [Test]
    public void DrainPollsUntilEveryCollectiveHasRunOrGivesUpAfterTheTimeout()
    {
        var gpu = new FakeGpu { RunsOnItsOwn = true };
        var streams = new CommStream(gpu);
        bool peersJoined = false;
        var (_, held) = AllReduce(streams, gpu, () => peersJoined);
        Assert.That(streams.Drain(TimeSpan.FromMilliseconds(30)), Is.False, "a collective no peer joins was drained");
        Assert.That((held.Disposed, gpu.HostSynchronizations), Is.EqualTo((false, 0)));
        peersJoined = true;
        Assert.That(streams.Drain(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That((held.Disposed, streams.InFlight, gpu.HostSynchronizations), Is.EqualTo((true, 0, 0)));
        streams.Dispose();
    }

    [Test]
    public void TheWatchdogReportsTheFirstFailureOnceWithinTheTimeout()
    {
        int polls = 0, failures = 0;
        string? reported = null;
        using var done = new ManualResetEventSlim();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        using (var dog = new Watchdog("test watchdog", () => TimeSpan.FromMilliseconds(200),
                   () => Interlocked.Increment(ref polls) < 3 ? null : "rank 0 of 2: collective #7 did not complete",
                   m => { reported = m; Interlocked.Increment(ref failures); done.Set(); }))
        {
            dog.EnsureStarted();
            dog.EnsureStarted();
            Assert.That(done.Wait(TimeSpan.FromSeconds(10)), Is.True, "the watchdog never reported");
            Thread.Sleep(100);
            Assert.That(dog.Failed, Is.True);
        }
        Assert.That((reported, failures, polls), Is.EqualTo(("rank 0 of 2: collective #7 did not complete", 1, 3)));
        // Three polls a tenth of the timeout apart (20 ms): well under the timeout, far under a second.
        Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)));
    }

    [Test]
    public void TheWatchdogTurnsACheckThatThrowsIntoAFailure()
    {
        string? reported = null;
        using var done = new ManualResetEventSlim();
        using var dog = new Watchdog("test watchdog", () => TimeSpan.FromMilliseconds(100),
            () => throw new DistributedException("ncclCommGetAsyncError", "rank 1 of 2: NCCL reported unhandled system error"),
            m => { reported = m; done.Set(); });
        dog.EnsureStarted();
        Assert.That(done.Wait(TimeSpan.FromSeconds(10)), Is.True);
        Assert.That(reported, Does.Contain("rank 1 of 2: NCCL reported unhandled system error"));
    }
}

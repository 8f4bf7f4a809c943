using System.Diagnostics;

namespace Engine.Distributed.Nccl;

/// <summary>
/// The stream and event operations <see cref="CommStream"/> orders collectives with: the CUDA driver's
/// (<see cref="CudaStreamDriver"/>), or a test's model of two streams. Events are opaque handles.
/// </summary>
internal interface IStreamDriver
{
    /// <summary>The stream the backend's kernels run on.</summary>
    IntPtr Compute { get; }

    /// <summary>The communication stream the collectives run on.</summary>
    IntPtr Comm { get; }

    /// <summary>A new event recorded on <paramref name="stream"/>.</summary>
    object Record(IntPtr stream);

    /// <summary>Makes <paramref name="stream"/> wait on the device for <paramref name="e"/>.</summary>
    void Wait(IntPtr stream, object e);

    /// <summary>Polls <paramref name="e"/>: true once the work before its record has run.</summary>
    bool IsComplete(object e);

    /// <summary>Blocks the host until everything on <paramref name="stream"/> has run.</summary>
    void Synchronize(IntPtr stream);

    /// <summary>Destroys <paramref name="e"/>.</summary>
    void Destroy(object e);
}

/// <summary>
/// How an NCCL process group overlaps its collectives with the kernels (as <c>ProcessGroupNCCL</c>): each collective
/// runs on the group's communication stream, after an event recorded on the compute stream at the time it is posted
/// (so it reads what the kernels queued before wrote), and records a completion event. Waiting makes the compute
/// stream wait for that event on the device (<see cref="WaitOnDevice"/>), so kernels queued before the wait (the rest
/// of backward) run concurrently with the collective and the host never synchronizes.
/// <para>
/// Memory. The caching allocator reuses a freed block for the next request at once, which is safe only in
/// compute-stream order. A collective's buffers are therefore held here (not only by its <see cref="Work"/>, which a
/// caller may drop) until either the compute stream has been made to wait for the collective (then any later reuse
/// is ordered after it) or its completion event is seen complete: PyTorch's <c>recordStream</c>, done by keeping the
/// buffers alive. <see cref="Sweep"/> releases what has become free; every post sweeps.
/// </para>
/// The watchdog thread calls <see cref="Overdue"/> with the group's timeout. Thread-safe.
/// </summary>
internal sealed class CommStream(IStreamDriver driver) : IDisposable
{
    /// <summary>One posted collective: its completion event and what must stay alive until it is safe to reuse.</summary>
    internal sealed class Op(CommStream owner, string name, object done, IDisposable[] held)
    {
        /// <summary>What messages call it ("collective #3 (AllReduce of float32 [1024])").</summary>
        public string Name { get; set; } = name;
        public readonly long Posted = Stopwatch.GetTimestamp();
        internal object? Done = done;
        internal IDisposable[]? Held = held;
        internal bool StreamWaited;
        internal bool Completed;

        /// <summary>Whether the collective has run (the completion event polled; sticky).</summary>
        public bool IsComplete
        {
            get
            {
                lock (owner._lock)
                {
                    if (Completed) return true;
                    if (Done is null || !owner._driver.IsComplete(Done)) return false;
                    owner.Retire(this, completed: true);
                    return true;
                }
            }
        }
    }

    readonly IStreamDriver _driver = driver;
    readonly List<Op> _inFlight = [];
    readonly Lock _lock = new();
    bool _disposed;

    /// <summary>The driver (for the group's own checks).</summary>
    public IStreamDriver Driver => _driver;

    /// <summary>Collectives whose buffers are still held (a test's and a diagnostic's view).</summary>
    public int InFlight { get { lock (_lock) return _inFlight.Count; } }

    /// <summary>
    /// Posts a collective: the comm stream waits for the compute stream's work so far, then <paramref name="enqueue"/>
    /// queues the collective on the comm stream (it returns the library's status; nonzero is thrown by the caller after
    /// the buffers are released), then a completion event is recorded. <paramref name="held"/> stays alive until safe.
    /// </summary>
    public (Op? Op, int Status) Post(string name, Func<IntPtr, int> enqueue, IDisposable[] held)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            SweepLocked();
            var ready = _driver.Record(_driver.Compute);
            _driver.Wait(_driver.Comm, ready);
            _driver.Destroy(ready);   // the wait holds what it needs
            int status = enqueue(_driver.Comm);
            if (status != 0)
            {
                foreach (var h in held) h.Dispose();
                return (null, status);
            }
            var op = new Op(this, name, _driver.Record(_driver.Comm), held);
            _inFlight.Add(op);
            return (op, 0);
        }
    }

    /// <summary>
    /// Makes the compute stream wait for <paramref name="op"/> on the device (no host synchronization); its buffers
    /// may then be reused by any later kernel and are released.
    /// </summary>
    public void WaitOnDevice(Op op)
    {
        lock (_lock)
        {
            if (op.Completed || op.StreamWaited) return;
            _driver.Wait(_driver.Compute, op.Done!);
            op.StreamWaited = true;
            Retire(op, completed: false);
        }
    }

    /// <summary>Releases the buffers of every collective the compute stream has waited for or that has run.</summary>
    public void Sweep()
    {
        lock (_lock) SweepLocked();
    }

    void SweepLocked()
    {
        for (int i = _inFlight.Count - 1; i >= 0; i--)
        {
            var op = _inFlight[i];
            if (op.Done is not null && _driver.IsComplete(op.Done)) Retire(op, completed: true);
        }
    }

    // Under the lock. A stream-waited op keeps its event (the watchdog still polls it) but not its buffers.
    void Retire(Op op, bool completed)
    {
        if (op.Held is { } held)
        {
            op.Held = null;
            foreach (var h in held) h.Dispose();
        }
        if (!completed) return;
        op.Completed = true;
        if (op.Done is { } e) { op.Done = null; _driver.Destroy(e); }
        _inFlight.Remove(op);
    }

    /// <summary>
    /// The oldest collective still running after <paramref name="timeout"/> (polling each), or null: what the
    /// watchdog reports, since a device-side wait never blocks the host that could notice.
    /// </summary>
    public Op? Overdue(TimeSpan timeout)
    {
        lock (_lock)
        {
            if (_disposed) return null;
            SweepLocked();
            long now = Stopwatch.GetTimestamp();
            foreach (var op in _inFlight)
                if (Stopwatch.GetElapsedTime(op.Posted, now) > timeout) return op;
            return null;
        }
    }

    /// <summary>
    /// Polls until every collective has run, at most <paramref name="timeout"/>: true when none is left. A group being
    /// closed drains first, so a collective a dead peer never joins cannot block its close (it aborts instead, and the
    /// buffers stay held, since the comm stream may still write them).
    /// </summary>
    public bool Drain(TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        int spins = 0;
        while (true)
        {
            lock (_lock)
            {
                SweepLocked();
                if (_inFlight.Count == 0) return true;
            }
            if (watch.Elapsed > timeout) return false;
            if (++spins < 200) Thread.Yield(); else Thread.Sleep(1);
        }
    }

    /// <summary>Waits for the comm stream (the host blocks), then releases every held buffer and event.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            try { _driver.Synchronize(_driver.Comm); }
            finally
            {
                foreach (var op in _inFlight.ToArray()) Retire(op, completed: true);
            }
        }
    }
}

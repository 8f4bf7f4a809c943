namespace Engine.Distributed;

/// <summary>
/// A background thread that polls a health check (as <c>ProcessGroupNCCL</c>'s watchdog): every tenth of the timeout
/// (between 10 ms and 1 s) it calls <c>check</c>, and on the first failure it says (a message, or the check's
/// exception text) calls <c>fail</c> once and stops. For collectives the host does not wait for (NCCL on a stream),
/// where no <see cref="Work.Wait()"/> is there to notice a dead or hung peer. Started on first use, so a group that
/// never posts anything runs no thread.
/// </summary>
internal sealed class Watchdog(string name, Func<TimeSpan> timeout, Func<string?> check, Action<string> fail) : IDisposable
{
    readonly ManualResetEventSlim _stop = new();
    readonly Lock _lock = new();
    Thread? _thread;
    bool _disposed;

    /// <summary>Whether the thread has reported a failure.</summary>
    public bool Failed { get; private set; }

    /// <summary>Starts the thread once.</summary>
    public void EnsureStarted()
    {
        if (_thread is not null) return;
        lock (_lock)
        {
            if (_thread is not null || _disposed) return;
            _thread = new Thread(Run) { IsBackground = true, Name = name };
            _thread.Start();
        }
    }

    TimeSpan Interval => TimeSpan.FromTicks(Math.Clamp(timeout().Ticks / 10, TimeSpan.FromMilliseconds(10).Ticks, TimeSpan.FromSeconds(1).Ticks));

    void Run()
    {
        while (!_stop.Wait(Interval))
        {
            string? failure;
            try { failure = check(); }
            catch (Exception e) { failure = e.Message; }
            if (failure is null) continue;
            Failed = true;
            fail(failure);
            return;
        }
    }

    /// <summary>Stops the thread (waits for its current poll).</summary>
    public void Dispose()
    {
        Thread? t;
        lock (_lock) { _disposed = true; t = _thread; }
        _stop.Set();
        if (t is not null && t != Thread.CurrentThread) t.Join();
        _stop.Dispose();
    }
}

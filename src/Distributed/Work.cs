using System.Diagnostics;

namespace Engine.Distributed;

/// <summary>
/// An asynchronous collective in flight (as <c>torch.distributed.Work</c>): the tensors it reads and writes must be
/// left alone until <see cref="Wait()"/> returns. MPI: <c>Wait()</c> blocks the host until the collective is done.
/// NCCL: <c>Wait()</c> makes the compute stream wait for it on the device and returns at once (as PyTorch's), so
/// kernels queued afterwards see its results and reading a tensor (a host copy) waits for it. Every host wait has a
/// watchdog: past the group's timeout it throws a <see cref="DistributedTimeoutException"/> that names the ranks, so a
/// dead or hung rank never hangs the others (NCCL's group also runs a watchdog thread, for waits on the device).
/// </summary>
public abstract class Work
{
    readonly ProcessGroup _group;
    bool _finished;

    /// <summary>Starts the record of a collective posted by <paramref name="group"/>.</summary>
    protected Work(ProcessGroup group, string op, string what)
    {
        _group = group;
        Op = op;
        Description = what;
        Sequence = group.NextSequence();
        StartedTimestamp = Stopwatch.GetTimestamp();
    }

    /// <summary>The collective ("AllReduce", "Broadcast", ...).</summary>
    public string Op { get; }

    /// <summary>The dtype and element count, for messages.</summary>
    public string Description { get; }

    /// <summary>The position of this collective among the group's collectives (0, 1, ...): the same on every rank.</summary>
    public long Sequence { get; }

    /// <summary>When it was posted (<see cref="Stopwatch.GetTimestamp"/>).</summary>
    public long StartedTimestamp { get; }

    /// <summary>
    /// When it was seen complete or, for a wait on the device, when the compute stream was made to wait for it
    /// (<see cref="Stopwatch.GetTimestamp"/>); 0 before.
    /// </summary>
    public long CompletedTimestamp { get; private set; }

    /// <summary>
    /// Polls the library once: true when the collective is complete (its results are then in place), or once
    /// <see cref="Wait()"/> has made the compute stream wait for it (its results are then in place for every kernel
    /// and host read queued after).
    /// </summary>
    public bool IsCompleted
    {
        get
        {
            if (_finished) return true;
            if (!Poll()) return false;
            Complete();
            return true;
        }
    }

    /// <summary>
    /// Waits with the group's timeout (<see cref="ProcessGroup.Timeout"/>): on the device where the backend can (NCCL),
    /// else on the host.
    /// </summary>
    public void Wait()
    {
        if (_finished) return;
        if (WaitOnStream()) { Complete(); return; }
        Wait(_group.Timeout);
    }

    /// <summary>
    /// Blocks the host until the collective is done, at most <paramref name="timeout"/>, then throws a
    /// <see cref="DistributedTimeoutException"/> (for NCCL this is <c>work.synchronize()</c> with a timeout).
    /// </summary>
    public void Wait(TimeSpan timeout)
    {
        if (_finished) return;
        var watch = Stopwatch.StartNew();
        int spins = 0;
        while (!Poll())
        {
            if (watch.Elapsed > timeout)
            {
                var others = Enumerable.Range(0, _group.WorldSize).Where(r => r != _group.Rank).ToArray();
                throw new DistributedTimeoutException(Op,
                    $"rank {_group.Rank} of {_group.WorldSize}: collective #{Sequence} ({Op} of {Description}) did not complete within {timeout.TotalSeconds:0.###} s; " +
                    $"rank(s) {string.Join(", ", others)} did not join it (dead, hung, or at another collective)")
                { Ranks = others };
            }
            // Yield first (a collective on one machine completes in microseconds), then sleep so a waiting rank does
            // not take the core a peer on an oversubscribed machine needs.
            if (++spins < 200) Thread.Yield(); else Thread.Sleep(1);
        }
        Complete();
    }

    void Complete()
    {
        if (_finished) return;
        _finished = true;
        CompletedTimestamp = Stopwatch.GetTimestamp();
        Finish();
    }

    /// <summary>Asks the library whether the collective is done; throws a <see cref="DistributedException"/> on its errors.</summary>
    protected abstract bool Poll();

    /// <summary>
    /// Makes the consumer (the compute stream) wait for the collective without blocking the host and returns true, or
    /// returns false when the backend completes collectives only on the host (MPI; NCCL's barrier and blocking mode).
    /// </summary>
    protected virtual bool WaitOnStream() => false;

    /// <summary>
    /// Runs once on completion, or after <see cref="WaitOnStream"/>: copies staged results back (in stream order),
    /// divides an average, frees what was held.
    /// </summary>
    protected abstract void Finish();

    /// <summary>Waits for every handle in order (as a list of <c>work.wait()</c> calls).</summary>
    public static void WaitAll(IEnumerable<Work> works)
    {
        foreach (var w in works) w.Wait();
    }
}

namespace Engine.Backends.Cpu;

/// <summary>
/// How the CPU kernels split work. Work is split only over independent output elements, in fixed-size chunks, so a
/// result never depends on the number of threads.
/// </summary>
public static class CpuParallel
{
    /// <summary>
    /// Threads the kernels may use here: <see cref="CpuBackendOptions.Threads"/> of <see cref="CpuBackend.Options"/>.
    /// Results do not depend on it; only speed does.
    /// </summary>
    public static int MaxThreads => CpuBackend.Options.Threads;

    /// <summary>
    /// Runs <paramref name="body"/>(start, end) over [0, count) in chunks of at least <paramref name="grain"/> items,
    /// on up to <see cref="MaxThreads"/> threads; inline when there is only one chunk.
    /// </summary>
    public static void For(long count, long grain, Action<long, long> body)
    {
        if (count <= 0) return;
        int threads = MaxThreads;
        grain = Math.Max(grain, 1);
        if (threads <= 1 || count <= grain) { body(0, count); return; }
        long chunks = Math.Min(threads * 4L, (count + grain - 1) / grain);
        long per = (count + chunks - 1) / chunks;
        Parallel.For(0, (int)chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, c =>
        {
            long s = c * per, e = Math.Min(count, s + per);
            if (s < e) body(s, e);
        });
    }
}

namespace Engine;

/// <summary>
/// Process-wide counts of the AMP kernels' invocations, bumped by every backend's implementation: how tests prove that
/// a path (the bfloat16 pass-through of the gradient scaler) launched no kernel at all.
/// </summary>
public static class AmpKernelCounters
{
    static long s_unscale, s_update;

    /// <summary>Calls of <c>IBackend.NonFiniteCheckAndUnscale</c> so far.</summary>
    public static long NonFiniteCheckAndUnscaleCalls => Interlocked.Read(ref s_unscale);

    /// <summary>Calls of <c>IBackend.UpdateScale</c> so far.</summary>
    public static long UpdateScaleCalls => Interlocked.Read(ref s_update);

    /// <summary>Counts one <c>NonFiniteCheckAndUnscale</c> launch (called by backends).</summary>
    public static void CountNonFiniteCheckAndUnscale() => Interlocked.Increment(ref s_unscale);

    /// <summary>Counts one <c>UpdateScale</c> launch (called by backends).</summary>
    public static void CountUpdateScale() => Interlocked.Increment(ref s_update);
}

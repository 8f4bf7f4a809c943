using System.ComponentModel;

namespace Engine.Autocast;

/// <summary>
/// Superseded by <see cref="Backends.KernelCounter"/>, which counts every kernel of every backend: read
/// <c>KernelCounter.Count("NonFiniteCheckAndUnscale")</c> or a <c>KernelCounter.Begin()</c> scope instead. What is left
/// are the two calls the AMP kernel files still make; they do nothing, because the backends now count each launch
/// where they bind the contract (CpuBackend.cs, CudaBackend.cs). Delete this class once those calls are gone.
/// </summary>
[EditorBrowsable(EditorBrowsableState.Never)]
public static class AmpKernelCounters
{
    /// <summary>No-op; the launch is counted by <see cref="Backends.KernelCounter"/>.</summary>
    [EditorBrowsable(EditorBrowsableState.Never)]
    public static void CountNonFiniteCheckAndUnscale() { }

    /// <summary>No-op; the launch is counted by <see cref="Backends.KernelCounter"/>.</summary>
    [EditorBrowsable(EditorBrowsableState.Never)]
    public static void CountUpdateScale() { }
}

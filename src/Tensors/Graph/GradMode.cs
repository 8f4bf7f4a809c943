namespace Engine.Graph;

/// <summary>
/// Whether ops record the graph. <c>using (GradMode.NoGrad()) { ... }</c> turns recording off for the async flow,
/// as <c>torch.no_grad()</c>.
/// </summary>
public static class GradMode
{
    static readonly AsyncLocal<bool> s_disabled = new();

    /// <summary>True when ops record the graph.</summary>
    public static bool IsEnabled => !s_disabled.Value;

    /// <summary>Disables recording until the returned scope is disposed.</summary>
    public static IDisposable NoGrad() => new Scope(false);

    /// <summary>Sets recording on or off until the returned scope is disposed.</summary>
    public static IDisposable Set(bool enabled) => new Scope(enabled);

    sealed class Scope : IDisposable
    {
        readonly bool _previous;
        bool _done;
        public Scope(bool enabled) { _previous = s_disabled.Value; s_disabled.Value = !enabled; }
        public void Dispose() { if (!_done) { _done = true; s_disabled.Value = _previous; } }
    }
}

namespace Engine;

/// <summary>
/// Frees every tensor created inside it when disposed, except those moved out. Scopes nest and flow with async code
/// (<see cref="AsyncLocal{T}"/>): a scope opened before an <c>await</c> still collects what is created after it.
/// </summary>
/// <example><code>
/// using (var scope = Tensor.NewScope())
/// {
///     var h = x.MatMul(w).Relu();      // freed at the end of the block
///     result = h.Sum().MoveToOuterScope();
/// }
/// </code></example>
public sealed class DisposeScope : IDisposable
{
    static readonly AsyncLocal<DisposeScope?> s_current = new();
    readonly HashSet<Tensor> _owned = new(ReferenceEqualityComparer.Instance);
    readonly DisposeScope? _outer;
    bool _disposed;

    internal DisposeScope()
    {
        _outer = s_current.Value;
        s_current.Value = this;
    }

    /// <summary>The innermost open scope of this async flow, or null.</summary>
    public static DisposeScope? Current => s_current.Value;

    /// <summary>The scope this one is nested in.</summary>
    public DisposeScope? Outer => _outer;

    /// <summary>Tensors this scope will dispose.</summary>
    public int Count { get { lock (_owned) return _owned.Count; } }

    internal void Add(Tensor t) { lock (_owned) _owned.Add(t); }

    internal bool Remove(Tensor t) { lock (_owned) return _owned.Remove(t); }

    /// <summary>Removes a tensor from this scope without disposing it; the caller owns it now.</summary>
    public Tensor Detach(Tensor t) { Remove(t); return t; }

    /// <summary>Disposes every tensor still owned and makes the outer scope current again.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Tensor[] owned;
        lock (_owned) { owned = [.. _owned]; _owned.Clear(); }
        foreach (var t in owned) t.Dispose();
        if (ReferenceEquals(s_current.Value, this)) s_current.Value = _outer;
    }
}

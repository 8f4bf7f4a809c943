namespace Engine.Autocast;

/// <summary>
/// What an autocast implementation (the <c>Engine.Amp</c> package) plugs into op dispatch. Tensors knows nothing of
/// the policy: an op passes its identity (the type of its autograd definition, or of its op struct for the
/// elementwise unary ops) and its inputs, and the hook says which dtype the floating inputs should have.
/// </summary>
public interface IAutocastHook
{
    /// <summary>
    /// The dtype the floating inputs of <paramref name="op"/> should be cast to on <paramref name="device"/>, or null
    /// to run the op on its inputs as they are (no active region for that device, or an op the policy leaves alone).
    /// </summary>
    DType? TargetDType(Type op, Device device);

    /// <summary>
    /// <paramref name="t"/> cast to <paramref name="dtype"/>, differentiably (gradients flow back to
    /// <paramref name="t"/> in its own dtype). Returns a tensor the caller owns; an implementation may serve it from a
    /// per-region cache (a new handle on the cached cast).
    /// </summary>
    Tensor Cast(Tensor t, DType dtype);

    /// <summary>The autocast dtype of the region active for <paramref name="device"/> in the current async flow, or null.</summary>
    DType? RegionDType(Device device);

    /// <summary>
    /// Casts, ahead of use, those of <paramref name="tensors"/> that <paramref name="op"/> would have
    /// <see cref="Cast"/> serve from a per-region cache, so that the later lookups hit it; an implementation without a
    /// cache does nothing (the default). It must not change what any op computes.
    /// </summary>
    void PreCast(Type op, IReadOnlyList<Tensor> tensors) { }
}

/// <summary>
/// The autocast extension point of op dispatch. <see cref="Hook"/> is null until an autocast implementation installs
/// itself, so ops pay one null check when autocast is not in use. Inside a backward pass autocast is suspended (see
/// <see cref="Suspend"/>): gradients are computed in the dtypes the forward pass produced, as PyTorch's.
/// </summary>
public static class AutocastDispatch
{
    static volatile IAutocastHook? s_hook;
    static readonly AsyncLocal<bool> s_suspended = new();

    /// <summary>The installed hook (process-wide), or null.</summary>
    public static IAutocastHook? Hook
    {
        get => s_hook;
        set => s_hook = value;
    }

    /// <summary>True while <see cref="Suspend"/> is in effect in the current async flow.</summary>
    public static bool IsSuspended => s_suspended.Value;

    /// <summary>
    /// Turns autocast off for the current async flow until the returned scope is disposed (the backward engine runs
    /// under it; nestable).
    /// </summary>
    public static IDisposable Suspend() => new SuspendScope();

    sealed class SuspendScope : IDisposable
    {
        readonly bool _previous;
        bool _done;
        public SuspendScope() { _previous = s_suspended.Value; s_suspended.Value = true; }
        public void Dispose() { if (!_done) { _done = true; s_suspended.Value = _previous; } }
    }

    /// <summary>
    /// Fills the autocast cast cache of the current region, in one multi-tensor launch per
    /// <see cref="Backends.MultiTensor.MaxTensors"/> tensors (<see cref="Tensor.ForeachTo"/>), with the casts that
    /// <paramref name="op"/> would make of <paramref name="tensors"/> (typically a module's parameters that reach it),
    /// instead of one launch per tensor at its first use. Only what the cache would hold is cast: float32 parameters
    /// (leaves that require grad) on a device whose region casts <paramref name="op"/>'s inputs to the region's
    /// dtype; the rest are left alone. The cache's rules stay: a parameter changed in place before its use is cast
    /// again then. Does nothing outside an autocast region, in a backward pass, or with the cache disabled. Every op
    /// computes the same bits with or without it.
    /// </summary>
    public static void PreCast(Type op, IReadOnlyList<Tensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(op);
        ArgumentNullException.ThrowIfNull(tensors);
        var h = s_hook;
        if (h is null || s_suspended.Value || tensors.Count == 0) return;
        h.PreCast(op, tensors);
    }

    /// <summary>
    /// The dtype <paramref name="op"/> would cast <paramref name="t"/> (or any tensor of its dtype and device) to under
    /// the active autocast region, or null when it would use it as it is. A producer that can write that dtype itself
    /// (a norm's <c>outputDType</c>) then saves the op its cast, with the same bits.
    /// </summary>
    public static DType? CastTargetFor(Type op, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(op);
        ArgumentNullException.ThrowIfNull(t);
        var h = s_hook;
        if (h is null || s_suspended.Value) return null;
        return h.TargetDType(op, t.Device) is DType d && NeedsCast(t, d) ? d : null;
    }

    /// <summary>The autocast dtype of the active region for <paramref name="device"/>, or null (one null check without a hook).</summary>
    internal static DType? RegionDTypeFor(Device device)
    {
        var h = s_hook;
        if (h is null) return null;
        var d = h.RegionDType(device);
        return d is null || s_suspended.Value ? null : d;
    }

    /// <summary>
    /// Whether <paramref name="op"/> must re-run on autocast inputs: true when a region is active for the device of
    /// <paramref name="a"/>, the policy gives a target dtype, and at least one floating input other than Float64 has
    /// another dtype. Then <paramref name="casts"/> holds the inputs in order (cast where needed, null where given
    /// null); the caller re-enters the op with them (they no longer differ, so it terminates) and disposes
    /// <paramref name="casts"/>. Integer, Bool and Float64 inputs are never cast.
    /// </summary>
    internal static bool TryAutocast(Type op, Tensor a, out AutocastCasts casts) => TryAutocast(op, a, null, null, out casts);

    /// <summary>Two-input form of <see cref="TryAutocast(Type, Tensor, out AutocastCasts)"/>.</summary>
    internal static bool TryAutocast(Type op, Tensor a, Tensor? b, out AutocastCasts casts) => TryAutocast(op, a, b, null, out casts);

    /// <summary>Three-input form of <see cref="TryAutocast(Type, Tensor, out AutocastCasts)"/>.</summary>
    internal static bool TryAutocast(Type op, Tensor a, Tensor? b, Tensor? c, out AutocastCasts casts)
    {
        casts = default;
        var h = s_hook;
        return h is not null && Slow(h, op, a, b, c, out casts);
    }

    static bool NeedsCast(Tensor? t, DType target) =>
        t is not null && t.DType != target && t.DType.IsFloatingPoint() && t.DType != DType.Float64;

    static bool Slow(IAutocastHook h, Type op, Tensor a, Tensor? b, Tensor? c, out AutocastCasts casts)
    {
        casts = default;
        if (h.TargetDType(op, a.Device) is not DType target || s_suspended.Value) return false;
        if (!NeedsCast(a, target) && !NeedsCast(b, target) && !NeedsCast(c, target)) return false;
        Tensor?[] inputs = [a, b, c];
        var t = new Tensor?[3];
        var owned = new bool[3];
        try
        {
            for (int i = 0; i < 3; i++)
            {
                if (NeedsCast(inputs[i], target)) { t[i] = h.Cast(inputs[i]!, target); owned[i] = true; }
                else t[i] = inputs[i];
            }
        }
        catch
        {
            for (int i = 0; i < 3; i++) if (owned[i]) t[i]!.Dispose();
            throw;
        }
        casts = new AutocastCasts(t, owned);
        return true;
    }
}

/// <summary>The inputs of an op after autocast: the casts are owned (disposed with this), the others borrowed.</summary>
internal readonly struct AutocastCasts(Tensor?[] tensors, bool[] owned) : IDisposable
{
    /// <summary>Input <paramref name="i"/> (given non-null).</summary>
    public Tensor this[int i] => tensors[i]!;

    /// <summary>Input <paramref name="i"/>, null where the op was given null.</summary>
    public Tensor? Optional(int i) => tensors[i];

    /// <summary>Disposes the casts.</summary>
    public void Dispose()
    {
        if (tensors is null) return;
        for (int i = 0; i < tensors.Length; i++) if (owned[i]) tensors[i]!.Dispose();
    }
}

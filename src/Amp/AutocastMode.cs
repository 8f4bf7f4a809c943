using Engine.Autocast;
using Engine.Graph;

namespace Engine.Amp;

/// <summary>
/// Automatic mixed precision, as <c>torch.amp</c>: <c>using (AutocastMode.Autocast(DType.BFloat16)) { ... }</c> runs the ops
/// of the policy table of the tensors' device type (<see cref="AutocastPolicy"/>: a CUDA and a CPU table, as PyTorch's
/// lists) in float16/bfloat16 or float32 as that table says, for tensors on the region's device type. Regions nest
/// (the inner one wins until disposed) and flow with async code (<see cref="AsyncLocal{T}"/>), like
/// <see cref="GradMode"/>; <c>enabled: false</c> opens a region that turns autocast
/// off. Only floating tensors are cast, never Float64 ones; in-place ops are not autocast. Casts of a float32 leaf
/// parameter that requires grad (weights and biases, or a transpose of one, as <c>x.MatMul(w.T)</c> reads it) are cached for the outermost region
/// and freed when it ends, as PyTorch's autocast cache; gradients reach the float32 parameters in float32.
/// Run <c>Backward()</c> inside or outside a region: the backward pass never autocasts.
/// </summary>
public static class AutocastMode
{
    static readonly AsyncLocal<AutocastState?> s_state = new();

    /// <summary>
    /// Opens an autocast region until the returned scope is disposed. <paramref name="dtype"/> is the lower precision
    /// (Float16 or BFloat16); <paramref name="device"/> limits the region to one device type (null: every device
    /// type); <paramref name="enabled"/> false turns autocast off inside (for a part that must run in full
    /// precision); <paramref name="cacheEnabled"/> false skips the cast cache in this region.
    /// </summary>
    public static IDisposable Autocast(DType dtype, DeviceType? device = null, bool enabled = true, bool cacheEnabled = true)
    {
        if (enabled && !dtype.IsHalf())
            throw new DTypeException("Autocast", $"autocast runs in float16 or bfloat16, got {dtype.Name()}; use enabled: false to turn autocast off");
        // The hook is installed once and stays: without an active region it costs ops one async-local read.
        if (!ReferenceEquals(AutocastDispatch.Hook, AutocastHook.Instance)) AutocastDispatch.Hook = AutocastHook.Instance;
        return new Region(dtype, device, enabled, cacheEnabled);
    }

    /// <summary>True inside an enabled autocast region for <paramref name="device"/> in the current async flow.</summary>
    public static bool IsEnabled(DeviceType device = DeviceType.Cpu) => s_state.Value?.For(device).Enabled == true;

    /// <summary>The dtype of the enabled autocast region for <paramref name="device"/>, or null outside one.</summary>
    public static DType? RegionDType(DeviceType device = DeviceType.Cpu) => s_state.Value?.For(device) is { Enabled: true } s ? s.DType : null;

    /// <summary>Number of casts held by the cache of the current (outermost) region; 0 outside any region.</summary>
    public static int CachedCastCount => s_state.Value?.Cache.Count ?? 0;

    internal static AutocastState? State => s_state.Value;

    sealed class Region : IDisposable
    {
        readonly AutocastState? _previous;
        readonly AutocastState _mine;
        bool _done;

        public Region(DType dtype, DeviceType? device, bool enabled, bool cacheEnabled)
        {
            _previous = s_state.Value;
            var setting = new DeviceSetting(enabled, dtype);
            var cpu = device is null or DeviceType.Cpu ? setting : _previous?.Cpu ?? default;
            var cuda = device is null or DeviceType.Cuda ? setting : _previous?.Cuda ?? default;
            _mine = new AutocastState(cpu, cuda, cacheEnabled, _previous?.Cache ?? new CastCache());
            s_state.Value = _mine;
        }

        public void Dispose()
        {
            if (_done) return;
            _done = true;
            s_state.Value = _previous;
            // The outermost region owns the cache (PyTorch clears it when the autocast nesting returns to zero).
            if (_previous is null) _mine.Cache.Dispose();
        }
    }
}

/// <summary>Autocast on or off for one device type, and its dtype.</summary>
internal readonly record struct DeviceSetting(bool Enabled, DType DType);

/// <summary>The immutable autocast state of one async flow: per device type settings and the shared cast cache.</summary>
internal sealed record AutocastState(DeviceSetting Cpu, DeviceSetting Cuda, bool CacheEnabled, CastCache Cache)
{
    public DeviceSetting For(DeviceType t) => t == DeviceType.Cpu ? Cpu : Cuda;
}

/// <summary>The dispatch hook: the policy table of the input's device type and the cache behind <see cref="AutocastDispatch"/>.</summary>
internal sealed class AutocastHook : IAutocastHook
{
    public static readonly AutocastHook Instance = new();

    public DType? TargetDType(Type op, Device device) =>
        AutocastMode.State?.For(device.Type) is { Enabled: true } s ? AutocastPolicy.TargetDType(op, device.Type, s.DType) : null;

    public DType? RegionDType(Device device) => AutocastMode.State?.For(device.Type) is { Enabled: true } s ? s.DType : null;

    public Tensor Cast(Tensor t, DType dtype)
    {
        var state = AutocastMode.State;
        // As PyTorch: only float32 → the region's lower precision is cached, only for parameters (leaves that
        // require grad).
        if (state is { CacheEnabled: true } && dtype == state.For(t.Device.Type).DType && t.DType == DType.Float32
            && state.Cache.TryCast(t, dtype) is { } cached)
            return cached;
        return t.To(dtype);
    }

    public void PreCast(Type op, IReadOnlyList<Tensor> tensors)
    {
        if (AutocastMode.State is not { CacheEnabled: true } state) return;
        // What Cast would cache: float32 parameters whose op the policy runs in the region's dtype on their device.
        var byTarget = new Dictionary<(Device Device, DType DType), List<Tensor>>();
        foreach (var t in tensors)
        {
            if (t is not { IsLeaf: true, RequiresGrad: true, DType: DType.Float32, IsDisposed: false }) continue;
            if (TargetDType(op, t.Device) is not DType target || target != state.For(t.Device.Type).DType) continue;
            var key = (t.Device, target);
            if (!byTarget.TryGetValue(key, out var list)) byTarget[key] = list = [];
            list.Add(t);
        }
        foreach (var ((_, dtype), leaves) in byTarget) state.Cache.Fill(leaves, dtype);
    }
}

/// <summary>
/// Casts of float32 leaf parameters for the outermost autocast region, keyed by (parameter, dtype) and checked
/// against the parameter's version (an in-place update makes a fresh cast). The cached tensors belong to no dispose
/// scope; the region disposes them when it ends. Thread-safe: async work started inside a region shares it.
/// </summary>
internal sealed class CastCache : IDisposable
{
    readonly Dictionary<(Tensor Leaf, DType DType), (int Version, Tensor Cast)> _map = new(KeyComparer.Instance);
    readonly Lock _lock = new();
    bool _disposed;

    public int Count { get { lock (_lock) return _map.Count; } }

    /// <summary>A new handle on the cached cast of <paramref name="t"/> (a parameter, or a transpose of one), or null when <paramref name="t"/> is not cacheable.</summary>
    public Tensor? TryCast(Tensor t, DType dtype)
    {
        if (t.IsLeaf)
        {
            if (!t.RequiresGrad) return null;
            var c = Get(t, dtype);
            return c?.To(dtype); // an "Alias" record on the shared cast: the caller owns (and disposes) its handle
        }
        // x.MatMul(weight.T) reads a transpose view of a parameter: it is served as the transpose of the cached cast.
        if (t.GradFn is { Function: Tensor.TransposeBackward tr } n && n.Edges.Length == 1
            && n.Edges[0].Tensor is { IsLeaf: true, RequiresGrad: true, IsDisposed: false } leaf
            && leaf.DType == DType.Float32 && ReferenceEquals(leaf.Storage, t.Storage))
        {
            var c = Get(leaf, dtype);
            return c?.Transpose(tr.Dims.Dim0, tr.Dims.Dim1);
        }
        return null;
    }

    Tensor? Get(Tensor leaf, DType dtype)
    {
        lock (_lock)
        {
            if (_disposed) return null;
            var key = (leaf, dtype);
            if (_map.TryGetValue(key, out var e) && IsCurrent(e, leaf)) return e.Cast;
            if (_map.Remove(key, out var stale)) stale.Cast.Dispose();
            var cast = leaf.To(dtype).DetachFromScopes();
            _map[key] = (leaf.Version, cast);
            return cast;
        }
    }

    // An entry serves its leaf while the leaf is unchanged since the cast (same version). A cast made under no-grad
    // has no graph record; with grad on it would cut the gradient's path.
    static bool IsCurrent((int Version, Tensor Cast) e, Tensor leaf) =>
        e.Version == leaf.Version && !e.Cast.IsDisposed && (e.Cast.GradFn is not null || !GradMode.IsEnabled);

    /// <summary>
    /// Casts the <paramref name="leaves"/> (float32 parameters on one device) that have no current entry, all in one
    /// <see cref="Tensor.ForeachTo"/>, and enters them as <see cref="Get"/> would at their first use: the same bits and
    /// the same graph record, the same version check later.
    /// </summary>
    public void Fill(IReadOnlyList<Tensor> leaves, DType dtype)
    {
        lock (_lock)
        {
            if (_disposed) return;
            var missing = new List<Tensor>();
            var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance); // a tied weight is listed twice
            foreach (var leaf in leaves)
                if (seen.Add(leaf) && !(_map.TryGetValue((leaf, dtype), out var e) && IsCurrent(e, leaf))) missing.Add(leaf);
            if (missing.Count == 0) return;
            var casts = Tensor.ForeachTo(missing, dtype);
            for (int j = 0; j < missing.Count; j++)
            {
                var key = (missing[j], dtype);
                if (_map.Remove(key, out var stale)) stale.Cast.Dispose();
                _map[key] = (missing[j].Version, casts[j].DetachFromScopes());
            }
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            foreach (var (_, e) in _map) e.Cast.Dispose();
            _map.Clear();
        }
    }

    sealed class KeyComparer : IEqualityComparer<(Tensor Leaf, DType DType)>
    {
        public static readonly KeyComparer Instance = new();
        public bool Equals((Tensor Leaf, DType DType) x, (Tensor Leaf, DType DType) y) => ReferenceEquals(x.Leaf, y.Leaf) && x.DType == y.DType;
        public int GetHashCode((Tensor Leaf, DType DType) k) => HashCode.Combine(System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Leaf), k.DType);
    }
}

using Engine.Graph;
using Engine.Autograd.Optim;
using Microsoft.Extensions.Logging;

namespace Engine.Amp;

/// <summary>
/// Dynamic loss scaling for float16 training, as <c>torch.amp.GradScaler</c>, with the same defaults and semantics:
/// <see cref="Scale"/> multiplies the loss by the scale, <see cref="Unscale"/> divides the gradients by it and checks
/// them for Inf/NaN (once per optimizer per iteration), <see cref="Step"/> unscales if needed and skips the update
/// when a gradient was not finite, <see cref="Update()"/> backs the scale off after an overflow and grows it after
/// <see cref="GrowthInterval"/> clean steps.
/// </summary>
/// <remarks>
/// <para>Beyond PyTorch: the scale, the growth tracker and the found-inf flag live on the device, and the fused
/// optimizer kernels read found-inf there and skip the update inside the kernel (Adam's step count does not advance),
/// so a scaled step never synchronizes with the host. Whether the last step was taken is the 0-d tensor
/// <see cref="LastStepTaken"/>; reading it is the caller's choice.</para>
/// <para>bfloat16 policy: bfloat16 has float32's exponent range, so its gradients do not underflow and need no
/// scaling. The scaler decides from the autocast dtype of the region that produced the loss
/// (<see cref="Tensor.AutocastDType"/>; outside autocast, from the loss's and the parameters' dtypes) and, at
/// Unscale/Step, from the gradients' dtypes. When everything is bfloat16 (no float16 anywhere) it passes through:
/// scale 1, no unscale, no check, a plain optimizer step, and it says so once through <see cref="EngineLog"/>.
/// <c>forceForBFloat16: true</c> runs the full algorithm on bfloat16 gradients. As soon as float16 shows up (mixed
/// float16/bfloat16 runs), the full algorithm runs. PyTorch refuses float16 gradients on float16 parameters; they work
/// here, although float32 master weights remain the recommended setup (small updates vanish when added to float16
/// weights).</para>
/// </remarks>
public sealed class GradScaler : IDisposable
{
    enum Stage { Ready, Unscaled, Stepped }

    sealed class PerOptimizer
    {
        public Stage Stage;
        public Tensor? FoundInf; // null: no check ran this iteration (pass-through)
    }

    readonly Dictionary<Optimizer, PerOptimizer> _perOptimizer = new(ReferenceEqualityComparer.Instance);
    double _initScale, _growthFactor, _backoffFactor;
    int _initGrowthTracker, _growthInterval;
    Tensor? _scale, _growthTracker, _taken;
    bool _sawFloat16, _logged, _decided, _passThrough, _scaledThisIteration;

    /// <summary>Creates a scaler with PyTorch's defaults (2¹⁶, ×2 after 2000 clean steps, ×0.5 on overflow).</summary>
    /// <param name="initScale">The first scale.</param>
    /// <param name="growthFactor">Multiplies the scale after <paramref name="growthInterval"/> clean steps (&gt; 1).</param>
    /// <param name="backoffFactor">Multiplies the scale after a step with Inf/NaN gradients (in (0, 1)).</param>
    /// <param name="growthInterval">Clean steps between growths (≥ 1).</param>
    /// <param name="enabled">False: every method is a no-op (Step is a plain optimizer step), as PyTorch's.</param>
    /// <param name="forceForBFloat16">Run the full algorithm even when everything is bfloat16.</param>
    public GradScaler(double initScale = 65536.0, double growthFactor = 2.0, double backoffFactor = 0.5, int growthInterval = 2000,
        bool enabled = true, bool forceForBFloat16 = false)
    {
        if (!(initScale > 0) || double.IsInfinity(initScale)) throw new EngineException("GradScaler", $"initScale must be positive and finite, got {initScale}");
        GrowthFactor = growthFactor;
        BackoffFactor = backoffFactor;
        GrowthInterval = growthInterval;
        _initScale = initScale;
        IsEnabled = enabled;
        ForceForBFloat16 = forceForBFloat16;
    }

    /// <summary>Whether the scaler does anything.</summary>
    public bool IsEnabled { get; }

    /// <summary>Whether bfloat16 runs go through the full algorithm instead of passing through.</summary>
    public bool ForceForBFloat16 { get; }

    /// <summary>The growth factor (&gt; 1).</summary>
    public double GrowthFactor
    {
        get => _growthFactor;
        set => _growthFactor = value > 1 && double.IsFinite(value) ? value : throw new EngineException("GradScaler", $"the growth factor must be > 1.0, got {value}");
    }

    /// <summary>The backoff factor (in (0, 1)).</summary>
    public double BackoffFactor
    {
        get => _backoffFactor;
        set => _backoffFactor = value is > 0 and < 1 ? value : throw new EngineException("GradScaler", $"the backoff factor must be < 1.0 (and > 0), got {value}");
    }

    /// <summary>Clean steps between growths (≥ 1).</summary>
    public int GrowthInterval
    {
        get => _growthInterval;
        set => _growthInterval = value >= 1 ? value : throw new EngineException("GradScaler", $"the growth interval must be at least 1, got {value}");
    }

    /// <summary>True when the latest iteration passed through (bfloat16 without <see cref="ForceForBFloat16"/>).</summary>
    public bool IsBFloat16PassThrough => IsEnabled && _passThrough;

    /// <summary>The scale as a 0-d float32 tensor on the device (null until the first scaled loss). Borrowed: do not dispose.</summary>
    public Tensor? ScaleTensor => _scale;

    /// <summary>
    /// Whether the last <see cref="Step"/> updated the parameters: a 0-d Bool tensor on the parameters' device,
    /// updated in place by every Step (null before the first). Reading it synchronizes; the scaler never does.
    /// Borrowed: do not dispose.
    /// </summary>
    public Tensor? LastStepTaken => _taken;

    /// <summary>
    /// The loss multiplied by the current scale (computed in float32, or float64 for a float64 loss, so the product
    /// cannot overflow a 16-bit type); a new tensor the caller owns. In the bfloat16 pass-through, or when disabled,
    /// a new handle on the loss itself.
    /// </summary>
    public Tensor Scale(Tensor loss)
    {
        ArgumentNullException.ThrowIfNull(loss);
        if (!loss.DType.IsFloatingPoint()) throw new DTypeException("Scale", $"the loss must be floating point, got {loss.DType.Name()}");
        if (!IsEnabled) return loss.To(loss.DType);
        Decide(loss);
        if (_passThrough)
        {
            LogPassThroughOnce();
            return loss.To(loss.DType);
        }
        EnsureState(loss.Device);
        _scaledThisIteration = true;
        using var wide = loss.To(loss.DType == DType.Float64 ? DType.Float64 : DType.Float32);
        if (_scale!.Device == loss.Device) return wide.Mul(_scale);
        using var moved = _scale.To(loss.Device);
        return wide.Mul(moved);
    }

    /// <summary>
    /// Divides the gradients of <paramref name="optimizer"/>'s parameters by the scale in place and records whether
    /// any is Inf/NaN, in one fused kernel on the device (for gradient clipping between backward and step). At most
    /// once per optimizer per iteration: a second call, or a call after <see cref="Step"/>, throws
    /// <see cref="EngineException"/> as PyTorch's <c>unscale_</c>. A no-op in the bfloat16 pass-through.
    /// </summary>
    public void Unscale(Optimizer optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        if (!IsEnabled) return;
        var st = StateOf(optimizer);
        if (st.Stage == Stage.Unscaled) throw new EngineException("Unscale", "unscale_() has already been called on this optimizer since the last update()");
        if (st.Stage == Stage.Stepped) throw new EngineException("Unscale", "unscale_() is being called after step()");
        UnscaleGrads(optimizer, st);
        st.Stage = Stage.Unscaled;
    }

    /// <summary>
    /// Unscales the gradients if <see cref="Unscale"/> was not called, then steps the optimizer with the found-inf
    /// flag, so the update is skipped on the device when any gradient was Inf/NaN. Once per optimizer per iteration
    /// (a second call throws, as PyTorch's). Sets <see cref="LastStepTaken"/>.
    /// </summary>
    public void Step(Optimizer optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        if (!IsEnabled)
        {
            optimizer.Step();
            SetTaken(optimizer, null);
            return;
        }
        var st = StateOf(optimizer);
        if (st.Stage == Stage.Stepped) throw new EngineException("Step", "step() has already been called since the last update()");
        if (st.Stage == Stage.Ready)
        {
            UnscaleGrads(optimizer, st);
            st.Stage = Stage.Unscaled;
        }
        if (st.FoundInf is null) optimizer.Step();
        else optimizer.Step(null, st.FoundInf);
        SetTaken(optimizer, st.FoundInf);
        st.Stage = Stage.Stepped;
    }

    /// <summary>
    /// Updates the scale from this iteration's checks on the device (PyTorch's <c>_amp_update_scale_</c>): × backoff
    /// and tracker reset if any optimizer saw Inf/NaN, × growth after <see cref="GrowthInterval"/> clean steps (if the
    /// result is finite). Throws when the full algorithm ran no check this iteration, as PyTorch. Starts a new iteration.
    /// </summary>
    public void Update() => UpdateCore(null, null);

    /// <summary>Sets the scale to <paramref name="newScale"/> (the growth tracker is left alone) and starts a new iteration.</summary>
    public void Update(double newScale)
    {
        if (!(newScale > 0) || double.IsInfinity(newScale)) throw new EngineException("Update", $"new_scale must be positive and finite, got {newScale}");
        UpdateCore(newScale, null);
    }

    /// <summary>Sets the scale from a one-element float32 tensor that does not require grad, and starts a new iteration.</summary>
    public void Update(Tensor newScale)
    {
        ArgumentNullException.ThrowIfNull(newScale);
        if (newScale.Numel != 1 || newScale.DType != DType.Float32 || newScale.RequiresGrad)
            throw new DTypeException("Update", $"new_scale should be a float or a 1-element float32 tensor with RequiresGrad false, got {Shape.Format(newScale.Layout.Shape)} {newScale.DType.Name()} (RequiresGrad {newScale.RequiresGrad})");
        UpdateCore(null, newScale);
    }

    void UpdateCore(double? newValue, Tensor? newTensor)
    {
        if (!IsEnabled) return;
        using (GradMode.NoGrad())
        {
            if (newValue is double v)
            {
                if (_scale is null) _initScale = v;
                else _scale.FillInPlace(v);
            }
            else if (newTensor is not null)
            {
                if (_scale is null) _initScale = newTensor.Item();
                else _scale.CopyInPlace(newTensor);
            }
            else
            {
                var found = _perOptimizer.Values.Where(s => s.FoundInf is not null).Select(s => s.FoundInf!).ToList();
                if (found.Count == 0)
                {
                    bool passedThrough = _perOptimizer.Count > 0 || _decided && _passThrough;
                    if (!passedThrough) throw new EngineException("Update", "No inf checks were recorded prior to update.");
                }
                else
                {
                    EnsureState(found[0].Device);
                    Tensor combined = found[0];
                    var sums = new List<Tensor>();
                    try
                    {
                        for (int i = 1; i < found.Count; i++)
                        {
                            var next = found[i].Device == combined.Device ? combined.Add(found[i]) : combined.Add(found[i].To(combined.Device));
                            sums.Add(next);
                            combined = next;
                        }
                        Tensor.UpdateScale(_scale!, _growthTracker!, combined, _growthFactor, _backoffFactor, _growthInterval);
                    }
                    finally { foreach (var s in sums) s.Dispose(); }
                }
            }
        }
        foreach (var s in _perOptimizer.Values) s.FoundInf?.Dispose();
        _perOptimizer.Clear();
        _decided = false;
        _scaledThisIteration = false;
    }

    /// <summary>
    /// The current scale (synchronizes). 1 when disabled or in the bfloat16 pass-through, as PyTorch's disabled
    /// scaler (the pass-through is one, for that iteration); the initial scale before the first scaled loss.
    /// </summary>
    public double GetScale()
    {
        if (!IsEnabled || IsBFloat16PassThrough) return 1.0;
        return _scale is null ? _initScale : _scale.Item<float>();
    }

    /// <summary>Clean steps since the last growth or backoff (synchronizes).</summary>
    public int GetGrowthTracker() => _growthTracker is null ? _initGrowthTracker : _growthTracker.Item<int>();

    /// <summary>
    /// The scaler's state by PyTorch's names: <c>scale</c>, <c>growth_factor</c>, <c>backoff_factor</c>,
    /// <c>growth_interval</c>, <c>_growth_tracker</c> (synchronizes). Empty when disabled or in the bfloat16
    /// pass-through, as PyTorch's disabled scaler, so that it agrees with <see cref="GetScale"/> (1: no scale).
    /// </summary>
    public Dictionary<string, double> StateDict()
    {
        if (!IsEnabled || IsBFloat16PassThrough) return [];
        return new()
        {
            ["scale"] = _scale is null ? _initScale : _scale.Item<float>(),
            ["growth_factor"] = _growthFactor,
            ["backoff_factor"] = _backoffFactor,
            ["growth_interval"] = _growthInterval,
            ["_growth_tracker"] = GetGrowthTracker(),
        };
    }

    /// <summary>
    /// Restores a state saved by <see cref="StateDict"/>. A no-op when disabled, whatever the state (as PyTorch's).
    /// An empty state (saved by a disabled scaler or in the bfloat16 pass-through) restores nothing on a scaler that
    /// is in the pass-through or has not run the full algorithm yet (a bfloat16 run resuming); on one that holds a
    /// scale it throws, as PyTorch's enabled scaler.
    /// </summary>
    public void LoadStateDict(IReadOnlyDictionary<string, double> state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (!IsEnabled) return;
        if (state.Count == 0)
        {
            if (IsBFloat16PassThrough || _scale is null && !_sawFloat16) return;
            throw new EngineException("LoadStateDict", "The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler (or one in the bfloat16 pass-through), and this scaler holds a scale.");
        }
        double Get(string key) => state.TryGetValue(key, out var v) ? v
            : throw new EngineException("LoadStateDict", $"missing key '{key}' (expected scale, growth_factor, backoff_factor, growth_interval, _growth_tracker)");
        double scale = Get("scale");
        if (!(scale > 0) || double.IsInfinity(scale)) throw new EngineException("LoadStateDict", $"scale must be positive and finite, got {scale}");
        GrowthFactor = Get("growth_factor");
        BackoffFactor = Get("backoff_factor");
        GrowthInterval = checked((int)Get("growth_interval"));
        _initScale = scale;
        _initGrowthTracker = checked((int)Get("_growth_tracker"));
        using var _ = GradMode.NoGrad();
        _scale?.FillInPlace(_initScale);
        _growthTracker?.FillInPlace(_initGrowthTracker);
    }

    /// <summary>Frees the device state.</summary>
    public void Dispose()
    {
        _scale?.Dispose(); _growthTracker?.Dispose(); _taken?.Dispose();
        foreach (var s in _perOptimizer.Values) s.FoundInf?.Dispose();
        _perOptimizer.Clear();
        _scale = _growthTracker = _taken = null;
    }

    // ---- the decisions ----

    PerOptimizer StateOf(Optimizer o)
    {
        if (!_perOptimizer.TryGetValue(o, out var s)) _perOptimizer[o] = s = new PerOptimizer();
        return s;
    }

    // Once per iteration, at the first Scale: bfloat16 evidence (the region's dtype, the loss's dtype, the dtypes of
    // the parameters the loss depends on) and no float16 anywhere means pass-through. Float16 evidence is remembered.
    void Decide(Tensor loss)
    {
        bool f16 = loss.AutocastDType == DType.Float16 || loss.DType == DType.Float16;
        bool bf16 = loss.AutocastDType == DType.BFloat16 || loss.DType == DType.BFloat16;
        // The graph walk only matters while a pass-through is possible.
        if (!f16 && !ForceForBFloat16 && !_sawFloat16 && (!_decided || _passThrough) && loss.GradFn is { } root)
        {
            var (leafF16, leafBf16) = LeafDTypes(root);
            f16 |= leafF16;
            bf16 |= leafBf16;
        }
        if (f16) _sawFloat16 = true;
        if (_decided) return;
        _decided = true;
        _passThrough = !ForceForBFloat16 && !_sawFloat16 && bf16;
    }

    static (bool F16, bool Bf16) LeafDTypes(GradNode root)
    {
        bool f16 = false, bf16 = false;
        var seen = new HashSet<GradNode> { root };
        var stack = new Stack<GradNode>();
        stack.Push(root);
        while (stack.Count > 0)
        {
            foreach (var e in stack.Pop().Edges)
            {
                if (e.Node is { } n) { if (seen.Add(n)) stack.Push(n); }
                else if (e.Tensor is { IsDisposed: false } leaf)
                {
                    f16 |= leaf.DType == DType.Float16;
                    bf16 |= leaf.DType == DType.BFloat16;
                }
            }
        }
        return (f16, bf16);
    }

    void LogPassThroughOnce()
    {
        if (_logged) return;
        _logged = true;
        EngineLog.For("Engine.Amp.GradScaler").Log(LogLevel.Information, new EventId(1, "BFloat16PassThrough"),
            "GradScaler: bfloat16 training detected (no float16 loss, parameters or gradients). bfloat16 has float32's exponent range and needs no loss scaling, " +
            "so the scaler passes through: scale 1, no unscale, no inf/NaN check. Pass forceForBFloat16: true to run the full algorithm.",
            null, static (s, _) => s);
    }

    void EnsureState(Device device)
    {
        if (_scale is not null) return;
        _scale = Tensor.Full([], _initScale, DType.Float32, device).DetachFromScopes();
        _growthTracker = Tensor.Full([], _initGrowthTracker, DType.Int32, device).DetachFromScopes();
    }

    List<Tensor> Gradients(Optimizer optimizer)
    {
        var grads = new List<Tensor>();
        foreach (var g in optimizer.ParamGroups)
            foreach (var p in g.Params)
                if (p.Grad is { } grad) // as the optimizer steps every parameter with a gradient
                {
                    // The fused kernel takes whole contiguous buffers: a strided or offset gradient is replaced by a dense copy.
                    if (!grad.IsContiguous || grad.Layout.Offset != 0 || grad.Storage.Count != grad.Numel)
                    {
                        var dense = grad.Clone().DetachFromScopes();
                        grad.Dispose();
                        p.Grad = dense;
                    }
                    grads.Add(p.Grad!);
                }
        return grads;
    }

    void UnscaleGrads(Optimizer optimizer, PerOptimizer st)
    {
        using var _ = GradMode.NoGrad();
        var grads = Gradients(optimizer);
        bool anyF16 = grads.Any(g => g.DType == DType.Float16), anyBf16 = grads.Any(g => g.DType == DType.BFloat16);
        if (anyF16) { _sawFloat16 = true; _passThrough = false; }
        if (!_decided)
        {
            // Unscale/Step without Scale this iteration: decide from the gradients alone.
            _decided = true;
            _passThrough = !ForceForBFloat16 && !_sawFloat16 && anyBf16;
        }
        if (_passThrough)
        {
            st.FoundInf = null;
            return;
        }
        // Float16 gradients in a pass-through iteration (a mixed run): the loss was not scaled, so check with 1/1.
        var device = grads.Count > 0 ? grads[0].Device : _scale?.Device ?? Device.Cpu;
        foreach (var g in grads)
            if (g.Device != device)
                throw new DeviceMismatchException("Unscale", $"all gradients of one optimizer must be on one device, got {device} and {g.Device}");
        EnsureState(device);
        st.FoundInf?.Dispose();
        st.FoundInf = Tensor.Zeros([], DType.Float32, device).DetachFromScopes();
        using var inv = InverseScale(device);
        Tensor.NonFiniteCheckAndUnscale(grads, st.FoundInf, inv);
    }

    // 1/scale computed on the device (in float64, then rounded to float32, as PyTorch), or 1 when the loss of this
    // iteration was not scaled.
    Tensor InverseScale(Device device)
    {
        if (!_scaledThisIteration) return Tensor.Scalar(1.0, DType.Float32, device);
        using var s = _scale!.Device == device ? _scale.To(DType.Float64) : _scale.To(device, DType.Float64);
        using var r = 1.0 / s;
        return r.To(DType.Float32);
    }

    void SetTaken(Optimizer optimizer, Tensor? foundInf)
    {
        var device = foundInf?.Device ?? optimizer.ParamGroups.SelectMany(g => g.Params).FirstOrDefault()?.Device ?? Device.Cpu;
        using var _ = GradMode.NoGrad();
        if (_taken is null || _taken.Device != device)
        {
            _taken?.Dispose();
            _taken = Tensor.Zeros([], DType.Bool, device).DetachFromScopes();
        }
        if (foundInf is null) _taken.FillInPlace(1);
        else
        {
            using var clean = foundInf.Eq(0);
            _taken.CopyInPlace(clean);
        }
    }
}

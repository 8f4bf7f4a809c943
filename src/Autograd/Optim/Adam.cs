using Engine.Backends;

namespace Engine.Autograd.Optim;

/// <summary>
/// Adam (<c>torch.optim.Adam</c>): L2 weight decay added to the gradient, bias-corrected moments. The step count lives
/// on the device per parameter, so bias correction needs no host value and a skipped AMP step does not advance it.
/// Options: lr (1e-3), beta1 (0.9), beta2 (0.999), eps (1e-8), weight_decay (0).
/// </summary>
public class Adam : Optimizer
{
    readonly bool _decoupled;

    /// <summary>Adam over one group.</summary>
    public Adam(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
        : this([new ParamGroup(parameters)], lr, beta1, beta2, eps, weightDecay) { }

    /// <summary>Adam over several groups.</summary>
    public Adam(IEnumerable<ParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
        : this(groups, lr, beta1, beta2, eps, weightDecay, decoupled: false) { }

    /// <summary>For AdamW.</summary>
    protected Adam(IEnumerable<ParamGroup> groups, double lr, double beta1, double beta2, double eps, double weightDecay, bool decoupled)
        : base(groups, Validate(lr, beta1, beta2, eps, weightDecay))
    {
        _decoupled = decoupled;
    }

    static Dictionary<string, double> Validate(double lr, double beta1, double beta2, double eps, double wd)
    {
        if (lr < 0) throw new EngineException("Adam", $"invalid learning rate: {lr}");
        if (beta1 is < 0 or >= 1) throw new EngineException("Adam", $"invalid beta parameter at index 0: {beta1}");
        if (beta2 is < 0 or >= 1) throw new EngineException("Adam", $"invalid beta parameter at index 1: {beta2}");
        if (eps < 0) throw new EngineException("Adam", $"invalid epsilon value: {eps}");
        if (wd < 0) throw new EngineException("Adam", $"invalid weight_decay value: {wd}");
        return new() { ["lr"] = lr, ["beta1"] = beta1, ["beta2"] = beta2, ["eps"] = eps, ["weight_decay"] = wd };
    }

    AdamConfig ConfigOf(ParamGroup g) =>
        new(Opt(g, "lr"), Opt(g, "beta1"), Opt(g, "beta2"), Opt(g, "eps"), Opt(g, "weight_decay"), _decoupled);

    static void EnsureState(Tensor p, Dictionary<string, Tensor> state)
    {
        if (state.ContainsKey("exp_avg")) return;
        state["exp_avg"] = StateZeros(p);
        state["exp_avg_sq"] = StateZeros(p);
        state["step"] = Tensor.Zeros([], DType.Float32, p.Device).DetachFromScopes();
    }

    /// <inheritdoc/>
    protected override void Update(ParamGroup g, Tensor p, Tensor grad, Dictionary<string, Tensor> state, Tensor? invScale, Tensor? foundInf)
    {
        EnsureState(p, state);
        using var gc = DenseGrad(grad);
        Tensor.AdamUpdate(p, gc, state["exp_avg"], state["exp_avg_sq"], state["step"], ConfigOf(g), invScale, foundInf);
    }

    /// <inheritdoc/>
    protected override void UpdateGroup(ParamGroup g, IReadOnlyList<Tensor> parameters, IReadOnlyList<Tensor> grads,
        IReadOnlyList<Dictionary<string, Tensor>> states, Tensor? invScale, Tensor? foundInf)
    {
        var dense = new List<Tensor>(parameters.Count);
        try
        {
            for (int i = 0; i < parameters.Count; i++)
            {
                EnsureState(parameters[i], states[i]);
                dense.Add(DenseGrad(grads[i]));
            }
            Tensor.ForeachAdamUpdate(parameters, dense, states.Select(s => s["exp_avg"]).ToList(), states.Select(s => s["exp_avg_sq"]).ToList(),
                states.Select(s => s["step"]).ToList(), ConfigOf(g), invScale, foundInf);
        }
        finally { foreach (var d in dense) d.Dispose(); }
    }
}

/// <summary>
/// AdamW (<c>torch.optim.AdamW</c>): decoupled weight decay p ← p·(1 − lr·wd) before the Adam step. Default
/// weight_decay 0.01, as PyTorch's.
/// </summary>
public sealed class AdamW : Adam
{
    /// <summary>AdamW over one group.</summary>
    public AdamW(IEnumerable<Tensor> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0.01)
        : this([new ParamGroup(parameters)], lr, beta1, beta2, eps, weightDecay) { }

    /// <summary>AdamW over several groups.</summary>
    public AdamW(IEnumerable<ParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0.01)
        : base(groups, lr, beta1, beta2, eps, weightDecay, decoupled: true) { }
}

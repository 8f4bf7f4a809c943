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

    /// <inheritdoc/>
    protected override void Update(ParamGroup g, Tensor p, Tensor grad, Dictionary<string, Tensor> state, Tensor? invScale, Tensor? foundInf)
    {
        if (!state.TryGetValue("exp_avg", out var m))
        {
            state["exp_avg"] = m = StateZeros(p);
            state["exp_avg_sq"] = StateZeros(p);
            state["step"] = Tensor.Zeros([], DType.Float32, p.Device).DetachFromScopes();
        }
        var config = new AdamConfig(Opt(g, "lr"), Opt(g, "beta1"), Opt(g, "beta2"), Opt(g, "eps"), Opt(g, "weight_decay"), _decoupled);
        using var gc = DenseGrad(grad);
        Tensor.AdamUpdate(p, gc, m, state["exp_avg_sq"], state["step"], config, invScale, foundInf);
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

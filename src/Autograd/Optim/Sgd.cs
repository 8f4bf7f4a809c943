using Engine.Backends;

namespace Engine.Autograd.Optim;

/// <summary>
/// Stochastic gradient descent (<c>torch.optim.SGD</c>) with momentum, dampening, Nesterov and weight decay.
/// Options: lr, momentum (0), dampening (0), weight_decay (0), nesterov (0 or 1).
/// </summary>
public sealed class Sgd : Optimizer
{
    /// <summary>SGD over one group.</summary>
    public Sgd(IEnumerable<Tensor> parameters, double lr, double momentum = 0, double dampening = 0, double weightDecay = 0, bool nesterov = false)
        : this([new ParamGroup(parameters)], lr, momentum, dampening, weightDecay, nesterov) { }

    /// <summary>SGD over several groups.</summary>
    public Sgd(IEnumerable<ParamGroup> groups, double lr, double momentum = 0, double dampening = 0, double weightDecay = 0, bool nesterov = false)
        : base(groups, new Dictionary<string, double> { ["lr"] = lr, ["momentum"] = momentum, ["dampening"] = dampening, ["weight_decay"] = weightDecay, ["nesterov"] = nesterov ? 1 : 0 })
    {
        if (lr < 0) throw new EngineException("Sgd", $"invalid learning rate: {lr}");
        if (momentum < 0) throw new EngineException("Sgd", $"invalid momentum value: {momentum}");
        if (nesterov && (momentum <= 0 || dampening != 0)) throw new EngineException("Sgd", "Nesterov momentum requires a momentum and zero dampening");
    }

    /// <inheritdoc/>
    protected override void Update(ParamGroup g, Tensor p, Tensor grad, Dictionary<string, Tensor> state, Tensor? invScale, Tensor? foundInf)
    {
        double mu = Opt(g, "momentum");
        var config = new SgdConfig(Opt(g, "lr"), mu, Opt(g, "dampening"), Opt(g, "weight_decay"), Opt(g, "nesterov") != 0);
        Tensor? buf = null;
        bool initialized = false;
        if (mu != 0)
        {
            initialized = state.TryGetValue("momentum_buffer", out buf);
            if (!initialized) state["momentum_buffer"] = buf = StateZeros(p);
        }
        using var gc = DenseGrad(grad);
        Tensor.SgdUpdate(p, gc, buf, initialized, config, invScale, foundInf);
        // Known gap: if the very first step is skipped by the AMP scaler, the next step treats the zero buffer as
        // initialized, which differs from PyTorch only when dampening is nonzero.
    }

    /// <inheritdoc/>
    protected override void UpdateGroup(ParamGroup g, IReadOnlyList<Tensor> parameters, IReadOnlyList<Tensor> grads,
        IReadOnlyList<Dictionary<string, Tensor>> states, Tensor? invScale, Tensor? foundInf)
    {
        double mu = Opt(g, "momentum");
        var config = new SgdConfig(Opt(g, "lr"), mu, Opt(g, "dampening"), Opt(g, "weight_decay"), Opt(g, "nesterov") != 0);
        // One call for the parameters whose momentum buffer holds the last step's momentum, one for those starting
        // (new parameters, or a group added later); without momentum, one call.
        foreach (bool initialized in mu == 0 ? [false] : new[] { true, false })
        {
            var ps = new List<Tensor>();
            var dense = new List<Tensor>();
            var bufs = new List<Tensor>();
            try
            {
                for (int i = 0; i < parameters.Count; i++)
                {
                    if (mu != 0 && states[i].ContainsKey("momentum_buffer") != initialized) continue;
                    if (mu != 0 && !initialized) states[i]["momentum_buffer"] = StateZeros(parameters[i]);
                    if (mu != 0) bufs.Add(states[i]["momentum_buffer"]);
                    ps.Add(parameters[i]);
                    dense.Add(DenseGrad(grads[i]));
                }
                if (ps.Count > 0) Tensor.ForeachSgdUpdate(ps, dense, mu == 0 ? null : bufs, initialized, config, invScale, foundInf);
            }
            finally { foreach (var d in dense) d.Dispose(); }
        }
    }
}

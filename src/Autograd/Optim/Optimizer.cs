using Engine.Graph;

namespace Engine.Autograd.Optim;

/// <summary>A set of parameters sharing hyper-parameters (as a PyTorch param group); options are by PyTorch name.</summary>
public sealed class ParamGroup
{
    /// <summary>Creates a group; options not given take the optimizer's defaults.</summary>
    public ParamGroup(IEnumerable<Tensor> parameters, IReadOnlyDictionary<string, double>? options = null)
    {
        Params = parameters.ToList();
        if (options is not null) foreach (var (k, v) in options) Options[k] = v;
    }

    /// <summary>The parameters.</summary>
    public List<Tensor> Params { get; }

    /// <summary>Hyper-parameters by name (<c>lr</c>, <c>weight_decay</c>, <c>beta1</c>...).</summary>
    public Dictionary<string, double> Options { get; } = [];

    /// <summary>The learning rate; schedules set it between steps.</summary>
    public double Lr { get => Options["lr"]; set => Options["lr"] = value; }
}

/// <summary>An optimizer's state for checkpoints: tensors by name and scalar hyper-parameters by name.</summary>
/// <param name="Tensors">Per-parameter state tensors, named <c>state.{index}.{name}</c> (index over all groups' parameters in order).</param>
/// <param name="Scalars">Group hyper-parameters, named <c>param_groups.{group}.{option}</c>, plus optimizer-level values.</param>
public sealed record OptimizerState(OrderedDictionary<string, Tensor> Tensors, Dictionary<string, double> Scalars);

/// <summary>
/// Base of the optimizers: parameter groups, per-parameter state, <see cref="ZeroGrad"/>, state save/load. The update
/// itself is one multi-tensor backend kernel per group and chunk of parameters (<see cref="Foreach"/>), or one fused
/// kernel per parameter tensor. <see cref="Step(Tensor?, Tensor?)"/> takes the AMP
/// scaler's inverse scale and found-inf flag as device tensors, so a scaled step needs no host synchronization.
/// Every parameter with a gradient is updated, whether or not it requires grad (as PyTorch's, which looks only at
/// <c>p.grad</c>); parameters without one are skipped.
/// </summary>
public abstract class Optimizer : IDisposable
{
    readonly Dictionary<Tensor, Dictionary<string, Tensor>> _state = new(ReferenceEqualityComparer.Instance);

    /// <summary>Creates an optimizer over groups whose missing options come from <paramref name="defaults"/>.</summary>
    protected Optimizer(IEnumerable<ParamGroup> groups, IReadOnlyDictionary<string, double> defaults)
    {
        Defaults = new Dictionary<string, double>(defaults);
        foreach (var g in groups) AddParamGroup(g);
        if (ParamGroups.Count == 0 || ParamGroups.All(g => g.Params.Count == 0))
            throw new EngineException(GetType().Name, "optimizer got an empty parameter list");
    }

    /// <summary>Default hyper-parameters.</summary>
    public IReadOnlyDictionary<string, double> Defaults { get; }

    /// <summary>The parameter groups.</summary>
    public List<ParamGroup> ParamGroups { get; } = [];

    /// <summary>Adds a group, filling its missing options from the defaults.</summary>
    public void AddParamGroup(ParamGroup group)
    {
        foreach (var (k, v) in Defaults) group.Options.TryAdd(k, v);
        foreach (var p in group.Params)
            if (ParamGroups.Any(g => g.Params.Contains(p)))
                throw new EngineException(GetType().Name, "some parameters appear in more than one parameter group");
        ParamGroups.Add(group);
    }

    /// <summary>The state tensors of a parameter (created on its first step).</summary>
    protected Dictionary<string, Tensor> StateOf(Tensor p)
    {
        if (!_state.TryGetValue(p, out var s)) _state[p] = s = [];
        return s;
    }

    /// <summary>One update of every parameter that has a gradient.</summary>
    public void Step() => Step(null, null);

    /// <summary>
    /// One update with AMP inputs: gradients are multiplied by <paramref name="invScale"/> inside the kernel, and the
    /// whole update is skipped on the device when <paramref name="foundInf"/> is nonzero (both one-element float32
    /// tensors on the parameters' device, or null).
    /// </summary>
    public void Step(Tensor? invScale, Tensor? foundInf)
    {
        using var _ = GradMode.NoGrad();
        foreach (var g in ParamGroups)
        {
            var ps = new List<Tensor>(g.Params.Count);
            var grads = new List<Tensor>(g.Params.Count);
            foreach (var p in g.Params)
                if (p.Grad is { } grad) { ps.Add(p); grads.Add(grad); }
            if (ps.Count == 0) continue;
            if (Foreach) UpdateGroup(g, ps, grads, ps.Select(StateOf).ToList(), invScale, foundInf);
            else for (int i = 0; i < ps.Count; i++) Update(g, ps[i], grads[i], StateOf(ps[i]), invScale, foundInf);
        }
    }

    /// <summary>
    /// True (the default): each group's parameters are updated by multi-tensor kernels, one launch per
    /// <see cref="Engine.Backends.MultiTensor.MaxTensors"/> parameters of one device (<c>torch.optim</c>'s
    /// <c>foreach=True</c>); false: one fused kernel per parameter. Both give every parameter the same bits.
    /// </summary>
    public bool Foreach { get; set; } = true;

    /// <summary>Updates one parameter; <paramref name="state"/> persists across steps.</summary>
    protected abstract void Update(ParamGroup group, Tensor param, Tensor grad, Dictionary<string, Tensor> state, Tensor? invScale, Tensor? foundInf);

    /// <summary>
    /// Updates the parameters of one group that have a gradient (<paramref name="grads"/>[i] is
    /// <paramref name="parameters"/>[i]'s, <paramref name="states"/>[i] its state) when <see cref="Foreach"/> is on.
    /// The default calls <see cref="Update"/> for each; the built-in optimizers launch multi-tensor kernels.
    /// </summary>
    protected virtual void UpdateGroup(ParamGroup group, IReadOnlyList<Tensor> parameters, IReadOnlyList<Tensor> grads,
        IReadOnlyList<Dictionary<string, Tensor>> states, Tensor? invScale, Tensor? foundInf)
    {
        for (int i = 0; i < parameters.Count; i++) Update(group, parameters[i], grads[i], states[i], invScale, foundInf);
    }

    /// <summary>Clears the gradients of every parameter (drops them by default).</summary>
    public void ZeroGrad(bool setToNone = true)
    {
        using var _ = GradMode.NoGrad();
        foreach (var g in ParamGroups)
            foreach (var p in g.Params)
            {
                if (p.Grad is null) continue;
                if (setToNone) { p.Grad.Dispose(); p.Grad = null; }
                else p.Grad.ZeroInPlace();
            }
    }

    IEnumerable<Tensor> AllParams => ParamGroups.SelectMany(g => g.Params);

    /// <summary>The state (borrowed tensors: do not dispose) and the group hyper-parameters.</summary>
    public OptimizerState StateDict()
    {
        var tensors = new OrderedDictionary<string, Tensor>();
        int i = 0;
        foreach (var p in AllParams)
        {
            if (_state.TryGetValue(p, out var s))
                foreach (var (k, t) in s) tensors[$"state.{i}.{k}"] = t;
            i++;
        }
        var scalars = new Dictionary<string, double>();
        for (int g = 0; g < ParamGroups.Count; g++)
            foreach (var (k, v) in ParamGroups[g].Options) scalars[$"param_groups.{g}.{k}"] = v;
        return new OptimizerState(tensors, scalars);
    }

    /// <summary>
    /// Restores state saved by <see cref="StateDict"/> for the same parameters in the same order: the state is replaced
    /// (parameters absent from <paramref name="state"/> start afresh, as PyTorch's) by copies of the given tensors, and
    /// the group hyper-parameters are set. Every key is checked first, so a bad key throws and changes nothing.
    /// </summary>
    public void LoadStateDict(OptimizerState state)
    {
        var ps = AllParams.ToList();
        var parsed = new List<(int Index, string Name, Tensor Value)>();
        foreach (var (name, t) in state.Tensors)
        {
            var parts = name.Split('.', 3);
            if (parts.Length != 3 || parts[0] != "state" || !int.TryParse(parts[1], out int i) || i < 0 || i >= ps.Count)
                throw new EngineException("LoadStateDict", $"unexpected optimizer state key '{name}' for {ps.Count} parameters");
            parsed.Add((i, parts[2], t));
        }
        var options = new List<(int Group, string Name, double Value)>();
        foreach (var (name, v) in state.Scalars)
        {
            var parts = name.Split('.', 3);
            if (parts.Length != 3 || parts[0] != "param_groups") continue; // optimizer-level values of other optimizers
            if (!int.TryParse(parts[1], out int g) || g < 0 || g >= ParamGroups.Count)
                throw new EngineException("LoadStateDict", $"state key '{name}' names a parameter group this optimizer does not have ({ParamGroups.Count} groups)");
            options.Add((g, parts[2], v));
        }

        using var _ = GradMode.NoGrad();
        var loaded = new Dictionary<Tensor, Dictionary<string, Tensor>>(ReferenceEqualityComparer.Instance);
        foreach (var (i, n, t) in parsed)
        {
            if (!loaded.TryGetValue(ps[i], out var s)) loaded[ps[i]] = s = [];
            using var moved = t.To(ps[i].Device);
            s[n] = moved.Clone().DetachFromScopes();
        }
        foreach (var s in _state.Values) foreach (var t in s.Values) t.Dispose();
        _state.Clear();
        foreach (var (p, s) in loaded) _state[p] = s;
        foreach (var (g, n, v) in options) ParamGroups[g].Options[n] = v;
    }

    /// <summary>Frees the state tensors.</summary>
    public void Dispose()
    {
        foreach (var s in _state.Values) foreach (var t in s.Values) t.Dispose();
        _state.Clear();
        GC.SuppressFinalize(this);
    }

    /// <summary>A new state tensor of zeros like <paramref name="p"/>, outside any dispose scope.</summary>
    protected static Tensor StateZeros(Tensor p, DType? dtype = null) => Tensor.Zeros(p.Shape, dtype ?? p.DType, p.Device).DetachFromScopes();

    /// <summary>
    /// The gradient as the fused kernels take it: a whole contiguous tensor (offset 0, a storage of exactly its
    /// elements). A handle on the gradient itself when it already is one, else a dense copy. The caller disposes it.
    /// </summary>
    protected static Tensor DenseGrad(Tensor grad) =>
        grad.IsContiguous && grad.Layout.Offset == 0 && grad.Storage.Count == grad.Numel ? grad.Detach() : grad.Detach().Clone();

    /// <summary>The options of a group as given to <c>torch.optim</c> (betas are split into beta1 and beta2).</summary>
    protected static double Opt(ParamGroup g, string name) => g.Options[name];
}

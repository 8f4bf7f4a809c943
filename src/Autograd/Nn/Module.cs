using Engine.Graph;

namespace Engine.Autograd.Nn;

/// <summary>Keys that did not line up when loading a state dict.</summary>
/// <param name="MissingKeys">Names the module has but the state dict lacked.</param>
/// <param name="UnexpectedKeys">Names in the state dict the module does not have.</param>
public sealed record LoadResult(IReadOnlyList<string> MissingKeys, IReadOnlyList<string> UnexpectedKeys);

/// <summary>
/// Base of every layer, as <c>torch.nn.Module</c>: named parameters, buffers and submodules found recursively under
/// PyTorch-style dotted paths (<c>blocks.0.attn.qkv.weight</c>), train/eval mode, state dicts, device and dtype moves.
/// A module owns its parameters and buffers: disposing it disposes them. Parameters are created outside any dispose
/// scope.
/// </summary>
public abstract class Module : IDisposable
{
    readonly List<(string Name, Tensor? Tensor)> _parameters = [];
    readonly List<(string Name, Tensor? Tensor)> _buffers = [];
    readonly HashSet<string> _nonPersistent = [];
    readonly List<(string Name, Module Module)> _modules = [];

    /// <summary>True in training mode (dropout active), false after <see cref="Eval"/>.</summary>
    public bool Training { get; private set; } = true;

    /// <summary>Registers a parameter under <paramref name="name"/>: it requires grad and belongs to no dispose scope. Returns it.</summary>
    protected Tensor RegisterParameter(string name, Tensor tensor, bool requiresGrad = true)
    {
        CheckName(name);
        tensor.DetachFromScopes();
        tensor.RequiresGrad = requiresGrad;
        _parameters.Add((name, tensor));
        return tensor;
    }

    /// <summary>
    /// Registers a non-trainable tensor that moves with the module (a running statistic, a mask). A non-persistent
    /// buffer is left out of the state dict, as PyTorch's <c>persistent=False</c>.
    /// </summary>
    protected Tensor RegisterBuffer(string name, Tensor tensor, bool persistent = true)
    {
        CheckName(name);
        tensor.DetachFromScopes();
        _buffers.Add((name, tensor));
        if (!persistent) _nonPersistent.Add(name);
        return tensor;
    }

    /// <summary>Registers a submodule under <paramref name="name"/>. Returns it.</summary>
    protected T RegisterModule<T>(string name, T module) where T : Module
    {
        CheckName(name);
        _modules.Add((name, module));
        return module;
    }

    void CheckName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('.'))
            throw new EngineException("Module", $"invalid name '{name}' (must be non-empty and contain no '.')");
        if (_parameters.Any(p => p.Name == name) || _buffers.Any(b => b.Name == name) || _modules.Any(m => m.Name == name))
            throw new EngineException("Module", $"attribute '{name}' already exists in {GetType().Name}");
    }

    /// <summary>Runs the module.</summary>
    public abstract Tensor Forward(Tensor input);

    /// <summary>Same as <see cref="Forward"/>.</summary>
    public Tensor Call(Tensor input) => Forward(input);

    /// <summary>Direct children with their names.</summary>
    public IEnumerable<(string Name, Module Module)> NamedChildren() => _modules;

    /// <summary>This module and every descendant, with dotted paths ("" for this one).</summary>
    public IEnumerable<(string Name, Module Module)> NamedModules(string prefix = "")
    {
        yield return (prefix, this);
        foreach (var (n, m) in _modules)
            foreach (var x in m.NamedModules(prefix.Length == 0 ? n : prefix + "." + n)) yield return x;
    }

    /// <summary>Every parameter with its dotted path, in registration order, each once.</summary>
    public IEnumerable<(string Name, Tensor Parameter)> NamedParameters()
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (path, m) in NamedModules())
            foreach (var (n, t) in m._parameters)
                if (t is not null && seen.Add(t)) yield return (path.Length == 0 ? n : path + "." + n, t);
    }

    /// <summary>Every parameter, each once.</summary>
    public IEnumerable<Tensor> Parameters() => NamedParameters().Select(p => p.Parameter);

    /// <summary>Every buffer with its dotted path.</summary>
    public IEnumerable<(string Name, Tensor Buffer)> NamedBuffers()
    {
        foreach (var (path, m) in NamedModules())
            foreach (var (n, t) in m._buffers)
                if (t is not null) yield return (path.Length == 0 ? n : path + "." + n, t);
    }

    /// <summary>Number of parameter elements (only those requiring grad when <paramref name="trainableOnly"/>).</summary>
    public long ParameterCount(bool trainableOnly = false) =>
        Parameters().Where(p => !trainableOnly || p.RequiresGrad).Sum(p => p.Numel);

    /// <summary>Sets training mode on this module and every descendant. Returns this.</summary>
    public Module Train(bool mode = true)
    {
        foreach (var (_, m) in NamedModules()) m.Training = mode;
        return this;
    }

    /// <summary>Evaluation mode (dropout off). Returns this.</summary>
    public Module Eval() => Train(false);

    /// <summary>
    /// Clears gradients: by default drops them (<c>Grad = null</c>, PyTorch's default since 2.0), else zeroes them in place.
    /// </summary>
    public void ZeroGrad(bool setToNone = true)
    {
        foreach (var p in Parameters())
        {
            if (p.Grad is null) continue;
            if (setToNone) { p.Grad.Dispose(); p.Grad = null; }
            else using (GradMode.NoGrad()) p.Grad.ZeroInPlace();
        }
    }

    /// <summary>
    /// Parameters then buffers by dotted path, in registration order, as <c>state_dict()</c>. The values are the
    /// module's own tensors (borrowed: do not dispose them).
    /// </summary>
    public OrderedDictionary<string, Tensor> StateDict()
    {
        var d = new OrderedDictionary<string, Tensor>();
        foreach (var (path, m) in NamedModules())
        {
            foreach (var (n, t) in m._parameters) if (t is not null) d[path.Length == 0 ? n : path + "." + n] = t;
            foreach (var (n, t) in m._buffers) if (t is not null && !m._nonPersistent.Contains(n)) d[path.Length == 0 ? n : path + "." + n] = t;
        }
        return d;
    }

    /// <summary>
    /// Copies values from <paramref name="state"/> into the parameters and buffers (converting dtype and device).
    /// Strict: a missing or unexpected key or a shape mismatch throws and changes nothing; non-strict: matching keys
    /// load (shape mismatches still throw) and the result lists the rest.
    /// </summary>
    public LoadResult LoadStateDict(IReadOnlyDictionary<string, Tensor> state, bool strict = true)
    {
        var own = StateDict();
        var missing = own.Keys.Where(k => !state.ContainsKey(k)).ToList();
        var unexpected = state.Keys.Where(k => !own.ContainsKey(k)).ToList();
        if (strict && (missing.Count > 0 || unexpected.Count > 0))
            throw new EngineException("LoadStateDict", $"error(s) in loading state dict for {GetType().Name}: missing keys [{string.Join(", ", missing)}], unexpected keys [{string.Join(", ", unexpected)}]");
        foreach (var (k, t) in own)
            if (state.TryGetValue(k, out var src) && !src.Layout.Shape.AsSpan().SequenceEqual(t.Layout.Shape))
                throw new ShapeException("LoadStateDict", $"size mismatch for {k}: copying a param with shape {Shape.Format(src.Layout.Shape)}, the shape in the current model is {Shape.Format(t.Layout.Shape)}");
        using (GradMode.NoGrad())
            foreach (var (k, t) in own)
                if (state.TryGetValue(k, out var src)) t.CopyInPlace(src);
        return new LoadResult(missing, unexpected);
    }

    /// <summary>Moves every parameter and buffer to <paramref name="device"/> in place (gradients are dropped). Returns this.</summary>
    public Module To(Device device) => Apply(t => t.Device == device ? null : t.To(device), floatOnly: false);

    /// <summary>Converts every floating parameter and buffer to <paramref name="dtype"/> in place (gradients dropped). Returns this.</summary>
    public Module To(DType dtype)
    {
        if (!dtype.IsFloatingPoint()) throw new DTypeException("Module.To", $"modules can only be converted to floating dtypes, got {dtype.Name()}");
        return Apply(t => t.DType == dtype ? null : t.To(dtype), floatOnly: true);
    }

    Module Apply(Func<Tensor, Tensor?> convert, bool floatOnly)
    {
        using var _ = GradMode.NoGrad();
        foreach (var (_, m) in NamedModules())
            foreach (var t in m._parameters.Concat(m._buffers).Select(p => p.Tensor))
            {
                if (t is null || floatOnly && !t.DType.IsFloatingPoint()) continue;
                using var converted = convert(t);
                if (converted is null) continue;
                t.Grad?.Dispose();
                t.Grad = null;
                t.SetData(converted);
            }
        return this;
    }

    /// <summary>Disposes every parameter and buffer of this module and its descendants.</summary>
    public void Dispose()
    {
        foreach (var (_, m) in NamedModules())
            foreach (var t in m._parameters.Concat(m._buffers).Select(p => p.Tensor))
            {
                t?.Grad?.Dispose();
                t?.Dispose();
            }
        GC.SuppressFinalize(this);
    }
}

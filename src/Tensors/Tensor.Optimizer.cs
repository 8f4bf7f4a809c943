using Engine.Backends;

namespace Engine;

public sealed partial class Tensor
{
    static void CheckUpdateOperand(string op, Tensor param, Tensor? t, string name, bool sameDType)
    {
        if (t is null) return;
        CheckSameDevice(op, param, t);
        if (!t.IsContiguous || t.Layout.Offset != 0 || t.Storage.Count != t.Numel)
            throw new ShapeException(op, $"{name} must be a whole contiguous tensor, got {t.Layout}");
        if (!t.Layout.Shape.AsSpan().SequenceEqual(param.Layout.Shape))
            throw new ShapeException(op, $"{name} {Shape.Format(t.Layout.Shape)} does not match the parameter {Shape.Format(param.Layout.Shape)}");
        if (sameDType && t.DType != param.DType)
            throw new DTypeException(op, $"{name} is {t.DType.Name()}, the parameter {param.DType.Name()}");
        if (!t.DType.IsFloatingPoint()) throw new DTypeException(op, $"{name} must be floating point, got {t.DType.Name()}");
    }

    static void CheckScalarOperand(string op, Tensor param, Tensor? t, string name)
    {
        if (t is null) return;
        CheckSameDevice(op, param, t);
        if (t.Numel != 1 || t.DType != DType.Float32 || t.Layout.Offset != 0)
            throw new DTypeException(op, $"{name} must be a one-element float32 tensor, got {t.Describe()}");
    }

    /// <summary>
    /// The fused Adam/AdamW update of one parameter tensor, in place (no autograd). <paramref name="step"/> is a
    /// one-element float32 tensor on the parameter's device, advanced by the kernel. With <paramref name="foundInf"/>
    /// nonzero nothing changes; <paramref name="invScale"/> unscales the gradient inside the kernel (AMP).
    /// </summary>
    public static void AdamUpdate(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, Tensor step, AdamConfig config,
        Tensor? invScale = null, Tensor? foundInf = null)
    {
        const string op = "AdamUpdate";
        CheckUpdateOperand(op, param, param, "param", true);
        CheckUpdateOperand(op, param, grad, "grad", false);
        CheckUpdateOperand(op, param, expAvg, "expAvg", true);
        CheckUpdateOperand(op, param, expAvgSq, "expAvgSq", true);
        CheckScalarOperand(op, param, step, "step");
        CheckScalarOperand(op, param, invScale, "invScale");
        CheckScalarOperand(op, param, foundInf, "foundInf");
        param.Backend.AdamStep(param.Storage, grad.Storage, expAvg.Storage, expAvgSq.Storage, step.Storage, config, invScale?.Storage, foundInf?.Storage);
        param.Storage.BumpVersion(); expAvg.Storage.BumpVersion(); expAvgSq.Storage.BumpVersion(); step.Storage.BumpVersion();
    }

    /// <summary>
    /// The fused SGD update of one parameter tensor, in place (no autograd); the momentum buffer is initialized from
    /// the gradient when <paramref name="momentumInitialized"/> is false. Skips and unscales like <see cref="AdamUpdate"/>.
    /// </summary>
    public static void SgdUpdate(Tensor param, Tensor grad, Tensor? momentum, bool momentumInitialized, SgdConfig config,
        Tensor? invScale = null, Tensor? foundInf = null)
    {
        const string op = "SgdUpdate";
        CheckUpdateOperand(op, param, param, "param", true);
        CheckUpdateOperand(op, param, grad, "grad", false);
        CheckUpdateOperand(op, param, momentum, "momentum", true);
        CheckScalarOperand(op, param, invScale, "invScale");
        CheckScalarOperand(op, param, foundInf, "foundInf");
        param.Backend.SgdStep(param.Storage, grad.Storage, momentum?.Storage, momentumInitialized, config, invScale?.Storage, foundInf?.Storage);
        param.Storage.BumpVersion();
        momentum?.Storage.BumpVersion();
    }

    // Multi-tensor updates: the lists are checked entry by entry as the single-tensor updates check one parameter, then
    // split into backend calls of at most MultiTensor.MaxTensors entries on one device (one launch each).

    static void CheckForeachLists(string op, int count, params (string Name, int Count)[] others)
    {
        foreach (var (name, c) in others)
            if (c != count) throw new ShapeException(op, $"{name} has {c} entries for {count} parameters");
    }

    static void CheckDistinct(string op, IReadOnlyList<Tensor>[] lists)
    {
        var seen = new HashSet<Storage>(ReferenceEqualityComparer.Instance);
        foreach (var l in lists)
            for (int j = 0; j < l.Count; j++)
                if (!seen.Add(l[j].Storage))
                    throw new EngineException(op, $"entry {j} shares its storage with another tensor updated in place by the same call");
    }

    static Storage[] Storages(IReadOnlyList<Tensor> l, int start, int count)
    {
        var r = new Storage[count];
        for (int j = 0; j < count; j++) r[j] = l[start + j].Storage;
        return r;
    }

    /// <summary>
    /// <see cref="AdamUpdate"/> of many parameters at once (as <c>torch.optim.Adam(foreach=True)</c>): entry j of each
    /// list belongs to parameter j, every parameter gets exactly the update AdamUpdate would give it, and the backend
    /// launches once per <see cref="MultiTensor.MaxTensors"/> parameters of one device. No tensor may share its
    /// storage with another that the call updates.
    /// </summary>
    public static void ForeachAdamUpdate(IReadOnlyList<Tensor> param, IReadOnlyList<Tensor> grad, IReadOnlyList<Tensor> expAvg, IReadOnlyList<Tensor> expAvgSq,
        IReadOnlyList<Tensor> step, AdamConfig config, Tensor? invScale = null, Tensor? foundInf = null)
    {
        const string op = "ForeachAdamUpdate";
        ArgumentNullException.ThrowIfNull(param); ArgumentNullException.ThrowIfNull(grad); ArgumentNullException.ThrowIfNull(expAvg);
        ArgumentNullException.ThrowIfNull(expAvgSq); ArgumentNullException.ThrowIfNull(step);
        int n = param.Count;
        CheckForeachLists(op, n, ("grad", grad.Count), ("expAvg", expAvg.Count), ("expAvgSq", expAvgSq.Count), ("step", step.Count));
        for (int j = 0; j < n; j++)
        {
            var p = param[j];
            CheckUpdateOperand(op, p, p, "param", true);
            CheckUpdateOperand(op, p, grad[j], "grad", false);
            CheckUpdateOperand(op, p, expAvg[j], "expAvg", true);
            CheckUpdateOperand(op, p, expAvgSq[j], "expAvgSq", true);
            CheckScalarOperand(op, p, step[j], "step");
            CheckScalarOperand(op, p, invScale, "invScale");
            CheckScalarOperand(op, p, foundInf, "foundInf");
        }
        CheckDistinct(op, [param, expAvg, expAvgSq, step]);
        foreach (var (start, count) in MultiTensor.Chunks(n, j => param[j].Device))
            param[start].Backend.ForeachAdamStep(Storages(param, start, count), Storages(grad, start, count), Storages(expAvg, start, count),
                Storages(expAvgSq, start, count), Storages(step, start, count), config, invScale?.Storage, foundInf?.Storage);
        for (int j = 0; j < n; j++)
        {
            param[j].Storage.BumpVersion(); expAvg[j].Storage.BumpVersion(); expAvgSq[j].Storage.BumpVersion(); step[j].Storage.BumpVersion();
        }
    }

    /// <summary>
    /// <see cref="SgdUpdate"/> of many parameters at once: <paramref name="momentum"/> is null (no momentum) or one
    /// buffer per parameter, all initialized or all not. Launches as <see cref="ForeachAdamUpdate"/>.
    /// </summary>
    public static void ForeachSgdUpdate(IReadOnlyList<Tensor> param, IReadOnlyList<Tensor> grad, IReadOnlyList<Tensor>? momentum, bool momentumInitialized,
        SgdConfig config, Tensor? invScale = null, Tensor? foundInf = null)
    {
        const string op = "ForeachSgdUpdate";
        ArgumentNullException.ThrowIfNull(param); ArgumentNullException.ThrowIfNull(grad);
        int n = param.Count;
        CheckForeachLists(op, n, ("grad", grad.Count), ("momentum", momentum?.Count ?? n));
        for (int j = 0; j < n; j++)
        {
            var p = param[j];
            CheckUpdateOperand(op, p, p, "param", true);
            CheckUpdateOperand(op, p, grad[j], "grad", false);
            CheckUpdateOperand(op, p, momentum?[j], "momentum", true);
            CheckScalarOperand(op, p, invScale, "invScale");
            CheckScalarOperand(op, p, foundInf, "foundInf");
        }
        CheckDistinct(op, momentum is null ? [param] : [param, momentum]);
        foreach (var (start, count) in MultiTensor.Chunks(n, j => param[j].Device))
            param[start].Backend.ForeachSgdStep(Storages(param, start, count), Storages(grad, start, count),
                momentum is null ? null : Storages(momentum, start, count), momentumInitialized, config, invScale?.Storage, foundInf?.Storage);
        for (int j = 0; j < n; j++)
        {
            param[j].Storage.BumpVersion();
            momentum?[j].Storage.BumpVersion();
        }
    }
}

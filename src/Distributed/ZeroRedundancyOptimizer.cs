using Engine.Autograd.Optim;
using Engine.Graph;

namespace Engine.Distributed;

/// <summary>
/// ZeRO stage 1 (optimizer state sharded across ranks), as llm.c does it and in the manner of
/// <c>torch.distributed.optim.ZeroRedundancyOptimizer</c>: the parameters are laid end to end in one flat vector,
/// padded to a multiple of the world size, and rank r owns the r-th of <see cref="ProcessGroup.WorldSize"/> equal
/// slices. <see cref="Step"/> copies the local gradients into the flat vector, reduce-scatters it (average) so each
/// rank gets the averaged gradient of its slice, runs the wrapped optimizer on that slice only (its float master copy,
/// so the moments of AdamW exist for 1/world of the elements), and all-gathers the updated slices into every rank's
/// parameters. Reduce-scatter plus all-gather move as much as DDP's one all-reduce, and every rank's optimizer state
/// is 1/world of one process's.
/// <list type="bullet">
/// <item>Train the plain module (not wrapped in <see cref="DistributedDataParallel"/>): the gradients are reduced
/// here. Under DDP it is still correct (the average of equal averages), but the gradients move twice.</item>
/// <item>Parameters of rank 0 are copied to every rank at construction, as DDP does.</item>
/// <item>The optimizer must be elementwise (Adam, AdamW, SGD with momentum: every element's update depends only on
/// that element): it is built by <c>optimizer</c> over the one flat slice, so one parameter group and one set of
/// hyper-parameters (<see cref="Optimizer"/>'s <c>ParamGroups[0].Lr</c> takes a schedule). A parameter without a
/// gradient counts as a zero gradient (PyTorch's optimizers skip it).</item>
/// <item>Differences from PyTorch's: a flat element-wise partition (PyTorch assigns whole parameters to ranks and
/// broadcasts them), no overlap of the reduction with backward, and no consolidated state dict: each rank's
/// <see cref="Optimizer"/> holds its slice.</item>
/// </list>
/// </summary>
public sealed class ZeroRedundancyOptimizer : IDisposable
{
    readonly Tensor[] _params;
    readonly long[] _offsets;
    readonly Tensor _flatGrad, _flatParams, _shard, _shardGrad;
    bool _disposed;

    /// <summary>
    /// Shards <paramref name="parameters"/> (those that require grad; one dtype, on <paramref name="group"/>'s device)
    /// and builds this rank's optimizer with <paramref name="optimizer"/> over its slice, e.g.
    /// <c>ps =&gt; new AdamW(ps, lr: 1e-3)</c>.
    /// </summary>
    public ZeroRedundancyOptimizer(IEnumerable<Tensor> parameters, ProcessGroup group, Func<IEnumerable<Tensor>, Optimizer> optimizer)
    {
        ArgumentNullException.ThrowIfNull(optimizer);
        Group = group;
        _params = parameters.Where(p => p.RequiresGrad).ToArray();
        if (_params.Length == 0) throw new EngineException("ZeroRedundancyOptimizer", "optimizer got an empty parameter list");
        var dtype = _params[0].DType;
        foreach (var p in _params)
        {
            if (p.DType != dtype)
                throw new DTypeException("ZeroRedundancyOptimizer", $"the parameters must share one dtype to be sharded as one vector: {dtype.Name()} and {p.DType.Name()}");
            if (p.Device != group.Device)
                throw new DeviceMismatchException("ZeroRedundancyOptimizer", $"a parameter is on {p.Device}; the {group.Backend} group takes {group.Device}");
            if (!p.IsContiguous)
                throw new EngineException("ZeroRedundancyOptimizer", $"parameter {Shape.Format(p.Layout.Shape)} is not contiguous");
        }
        _offsets = new long[_params.Length + 1];
        for (int i = 0; i < _params.Length; i++) _offsets[i + 1] = _offsets[i] + _params[i].Numel;
        long total = _offsets[^1];
        int w = group.WorldSize;
        long shard = (total + w - 1) / w;
        if (shard * w > int.MaxValue)
            throw new ShapeException("ZeroRedundancyOptimizer", $"{total} elements do not fit one collective ({int.MaxValue} at most)");
        Numel = total;
        ShardNumel = shard;

        // Rank 0's weights everywhere first, so every rank's master slice starts from the same model.
        if (w > 1) Work.WaitAll(_params.Select(p => group.Broadcast(p, 0)).ToList());
        var device = group.Device;
        using (GradMode.NoGrad())
        {
            _flatGrad = Tensor.Zeros([(int)(shard * w)], dtype, device).DetachFromScopes();
            _flatParams = Tensor.Zeros([(int)(shard * w)], dtype, device).DetachFromScopes();
            _shardGrad = Tensor.Zeros([(int)shard], dtype, device).DetachFromScopes();
            Flatten(_flatParams, p => p);
            using var mine = _flatParams.Narrow(0, (int)(group.Rank * shard), (int)shard);
            _shard = mine.Clone().DetachFromScopes();
        }
        _shard.RequiresGrad = true;
        _shard.Grad = _shardGrad.Detach().DetachFromScopes();
        Optimizer = optimizer([_shard]);
    }

    /// <summary>The ranks the optimizer state is sharded over.</summary>
    public ProcessGroup Group { get; }

    /// <summary>This rank's optimizer, over its slice only (its state is this rank's shard of the whole state).</summary>
    public Optimizer Optimizer { get; }

    /// <summary>Elements of all the parameters.</summary>
    public long Numel { get; }

    /// <summary>Elements of each rank's slice (the last one's padded with zeros): <see cref="Numel"/> / world size, rounded up.</summary>
    public long ShardNumel { get; }

    /// <summary>The parameters, in the order they are laid out.</summary>
    public IReadOnlyList<Tensor> Parameters => _params;

    // Copies each parameter's tensor (or zeros for a missing one) into its place in a flat vector.
    void Flatten(Tensor flat, Func<Tensor, Tensor?> of)
    {
        for (int i = 0; i < _params.Length; i++)
        {
            using var slot = flat.Narrow(0, (int)_offsets[i], (int)_params[i].Numel);
            using var view = slot.View(_params[i].Layout.Shape);
            if (of(_params[i]) is { IsDisposed: false } t) view.CopyInPlace(t);
            else view.ZeroInPlace();
        }
    }

    /// <summary>
    /// Reduce-scatters the gradients (average over ranks), steps this rank's slice, and all-gathers the slices into
    /// every parameter. Every rank calls it at the same point. The parameters' <c>Grad</c> are left as they were.
    /// </summary>
    public void Step()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var _ = GradMode.NoGrad();
        Flatten(_flatGrad, p => p.Grad);
        Group.ReduceScatter(_shardGrad, _flatGrad, ReduceOp.Average).Wait();
        Optimizer.Step();
        Group.AllGather(_flatParams, _shard).Wait();
        for (int i = 0; i < _params.Length; i++)
        {
            using var slot = _flatParams.Narrow(0, (int)_offsets[i], (int)_params[i].Numel);
            using var view = slot.View(_params[i].Layout.Shape);
            _params[i].CopyInPlace(view);
        }
    }

    /// <summary>Clears the parameters' gradients (drops them by default), as <see cref="Optimizer.ZeroGrad"/>.</summary>
    public void ZeroGrad(bool setToNone = true)
    {
        using var _ = GradMode.NoGrad();
        foreach (var p in _params)
        {
            if (p.Grad is null) continue;
            if (setToNone) { p.Grad.Dispose(); p.Grad = null; }
            else p.Grad.ZeroInPlace();
        }
    }

    /// <summary>Frees the flat buffers and this rank's optimizer state; the parameters are left as they are.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Optimizer.Dispose();
        _shard.Grad?.Dispose();
        _shard.Grad = null;
        foreach (var t in new[] { _flatGrad, _flatParams, _shard, _shardGrad }) t.Dispose();
    }
}

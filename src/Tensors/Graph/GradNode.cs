using Engine.Backends;

namespace Engine.Graph;

/// <summary>Where a gradient flows from one op's output back to one of its inputs.</summary>
/// <param name="Node">The op that produced the input (null for a leaf).</param>
/// <param name="Tensor">The input tensor, when it requires grad: a leaf accumulates into its <c>Grad</c>; a non-leaf
/// runs its hooks and keeps its gradient if it retains grad.</param>
public readonly record struct Edge(GradNode? Node, Tensor? Tensor)
{
    /// <summary>True when a gradient is wanted along this edge.</summary>
    public bool IsLive => Tensor is not null;
}

/// <summary>What an input looked like when the op ran: what a backward rule needs to shape the input's gradient.</summary>
public readonly record struct InputInfo(Shape Shape, DType DType, Device Device);

/// <summary>
/// A value saved for backward: a private alias of the tensor (it keeps the storage alive even when the user's tensor
/// is disposed) and the storage version at save time, checked when backward unpacks it.
/// </summary>
public sealed class SavedTensor
{
    Tensor? _alias;
    readonly int _version;
    readonly GradFunction _owner;

    internal SavedTensor(Tensor t, GradFunction owner)
    {
        _alias = t.Alias();
        _version = t.Storage.Version;
        _owner = owner;
    }

    /// <summary>The saved value; throws if it was modified in place since, or if the graph was freed.</summary>
    public Tensor Value
    {
        get
        {
            var a = _alias ?? throw new EngineException(_owner.Name + "Backward",
                "trying to backward through the graph a second time (or directly access saved tensors after they have already been freed); " +
                "saved intermediate values of the graph are freed when you call Backward(). Specify retainGraph: true if you need to backward a second time");
            if (a.Storage.Version != _version)
                throw new EngineException(_owner.Name + "Backward",
                    $"one of the variables needed for gradient computation has been modified by an in-place operation: {Shape.Format(a.Layout.Shape)} {a.DType.Name()} is at version {a.Storage.Version}; expected version {_version} instead");
            return a;
        }
    }

    internal void Free() { Interlocked.Exchange(ref _alias, null)?.Dispose(); }
}

/// <summary>
/// The record of one op in the autograd graph: its inputs' edges and descriptions and its typed definition
/// (<see cref="GradFunction"/>: attributes, saved values, backward). Created only when an input requires grad, so
/// inference builds nothing.
/// </summary>
public sealed class GradNode
{
    internal GradNode(GradFunction function, Edge[] edges, InputInfo[] inputs, Shape outputShape, DType outputDType)
    {
        Function = function; Edges = edges; Inputs = inputs;
        OutputShape = outputShape; OutputDType = outputDType;
        function.Attach(this);
    }

    /// <summary>The op's definition: what it saved and its backward.</summary>
    public GradFunction Function { get; }

    /// <summary>The op's name (<see cref="GradFunction.Name"/>).</summary>
    public string Op => Function.Name;

    /// <summary>One edge per input, in the forward call's order.</summary>
    public Edge[] Edges { get; }

    /// <summary>Shape, dtype and device of each input.</summary>
    public InputInfo[] Inputs { get; }

    /// <summary>Shape of the op's output.</summary>
    public Shape OutputShape { get; }

    /// <summary>Dtype of the op's output.</summary>
    public DType OutputDType { get; }

    /// <summary>The i-th saved value, in the order the definition saved them (see <see cref="SavedTensor.Value"/> for the checks).</summary>
    public Tensor Saved(int i) => Function.SavedValues[i].Value;

    /// <summary>Number of saved values.</summary>
    public int SavedCount => Function.SavedValues.Count;

    /// <summary>True once <see cref="FreeSaved"/> ran.</summary>
    public bool IsFreed { get; private set; }

    /// <summary>Hooks called with the gradient of this node's output before the backward runs.</summary>
    public List<Func<Tensor, Tensor?>>? Hooks { get; set; }

    /// <summary>
    /// See <see cref="GradFunction.PreferredGradDType"/>: input <paramref name="i"/>'s own dtype, or the wider floating
    /// dtype of the tensor it was cast from when its edge leads, through gradient-preserving aliases
    /// (<see cref="Tensor.IdentityBackward"/>: the autocast cache's handles), to a <see cref="Tensor.CastBackward"/>
    /// from that dtype on the same device, and nothing on the way observes the gradient at the narrow dtype (no
    /// hooks, no retained grad).
    /// </summary>
    internal DType PreferredGradDType(int i)
    {
        var own = Inputs[i];
        var edge = Edges[i];
        // A few alias hops at most (cache handle, Contiguous); the bound only guards against a pathological chain.
        for (int hop = 0; hop < 8; hop++)
        {
            if (edge is not { Node: { } c, Tensor: { } t } || !ReferenceEquals(t.GradFn, c) || t.RetainsGrad
                || t.GradHooks is { Count: > 0 } || c.Hooks is { Count: > 0 })
                return own.DType;
            if (c.Function is Tensor.CastBackward)
            {
                var wide = c.Inputs[0];
                return wide.Device == own.Device && own.DType.IsFloatingPoint() && wide.DType.IsFloatingPoint()
                    && wide.DType.ElementSize() > own.DType.ElementSize() ? wide.DType : own.DType;
            }
            if (c.Function is not Tensor.IdentityBackward || c.Edges.Length != 1 || c.Inputs[0].DType != own.DType) return own.DType;
            edge = c.Edges[0];
        }
        return own.DType;
    }

    /// <summary>Frees the saved values (after a backward pass without retainGraph).</summary>
    public void FreeSaved()
    {
        IsFreed = true;
        foreach (var s in Function.SavedValues) s.Free();
    }

    /// <summary>Debug name, as PyTorch's <c>grad_fn</c> (<c>MulBackward</c>).</summary>
    public override string ToString() => Op + "Backward";
}

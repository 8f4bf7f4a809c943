using Engine.Graph;

namespace Engine.Autograd;

/// <summary>
/// What a <see cref="CustomFunction"/>'s forward leaves for its backward: saved tensors (checked for in-place
/// modification, freed after backward as any op's), which inputs need a gradient, and free-form state.
/// </summary>
public sealed class FunctionContext
{
    Tensor[] _toSave = [];
    CustomBackward? _node;

    internal FunctionContext(CustomFunction function, Tensor[] inputs)
    {
        Function = function;
        NeedsInputGrad = [.. inputs.Select(x => x.RequiresGrad)];
    }

    internal CustomFunction Function { get; }

    internal Tensor[] ToSave => _toSave;

    internal CustomBackward Node { set => _node = value; }

    /// <summary>Saves tensors (inputs or outputs or intermediates) for <c>Backward</c>; call once in <c>Forward</c>.</summary>
    public void SaveForBackward(params Tensor[] tensors) => _toSave = [.. tensors];

    /// <summary>
    /// The tensors saved in <c>Forward</c>, in order; readable in <c>Backward</c>. They belong to the graph: do not
    /// dispose them. Throws if one was modified in place since, or after the graph was freed.
    /// </summary>
    public IReadOnlyList<Tensor> SavedTensors
    {
        get
        {
            if (_node is null) throw new EngineException("SavedTensors", "saved tensors can be read in Backward only");
            return _node.SavedTensors;
        }
    }

    /// <summary>Per input: whether it requires grad (its gradient may be skipped, returning null, when false).</summary>
    public bool[] NeedsInputGrad { get; }

    /// <summary>
    /// Anything else the backward needs (sizes, flags, constants). Tensors kept here are not owned by the context:
    /// prefer <see cref="SaveForBackward"/>.
    /// </summary>
    public Dictionary<string, object?> State { get; } = [];
}

/// <summary>
/// A differentiable function with a hand-written backward, as PyTorch's <c>torch.autograd.Function</c>. Subclass it,
/// implement <see cref="Forward"/> (runs without recording) and <see cref="Backward"/> (one gradient per input, or
/// null), and call <see cref="Apply"/>. Temporaries created inside either are freed when they return (a dispose
/// scope), so only the returned tensors and <see cref="FunctionContext.SaveForBackward"/> survive.
/// </summary>
/// <example><code>
/// sealed class Cube : CustomFunction
/// {
///     protected override Tensor Forward(FunctionContext ctx, params Tensor[] x) { ctx.SaveForBackward(x[0]); return x[0] * x[0] * x[0]; }
///     protected override Tensor?[] Backward(FunctionContext ctx, Tensor grad)
///     {
///         var x = ctx.SavedTensors[0];
///         return [grad * x * x * 3];
///     }
/// }
/// var y = new Cube().Apply(x);   // y.GradFn.ToString() == "CubeBackward"
/// </code></example>
public abstract class CustomFunction
{
    /// <summary>The op name in the graph (<c>GradFn</c> prints it with "Backward"); the class name by default.</summary>
    public virtual string Name => GetType().Name;

    /// <summary>Computes the output from the inputs; runs with grad mode off.</summary>
    protected abstract Tensor Forward(FunctionContext ctx, params Tensor[] inputs);

    /// <summary>
    /// Given the gradient of the output, returns one gradient per input (the input's shape; cast to its dtype if
    /// needed), or null for an input that gets none. Runs with grad mode off.
    /// </summary>
    protected abstract Tensor?[] Backward(FunctionContext ctx, Tensor grad);

    /// <summary>Runs the function and, when an input requires grad, records it so <c>Backward</c> runs on the way back.</summary>
    public Tensor Apply(params Tensor[] inputs)
    {
        var ctx = new FunctionContext(this, inputs);
        Tensor y;
        using (var scope = Tensor.NewScope())
        {
            using (GradMode.NoGrad())
            {
                var r = Forward(ctx, inputs) ?? throw new EngineException(Name, "Forward returned null");
                y = GraphExecutor.Share(r); // a fresh tensor to carry the record, even when Forward returned an input
            }
            y.MoveToOuterScope();
            if (Tensor.ShouldRecord(inputs))
                return y.RecordCustom(new CustomBackward(ctx), inputs); // saves while the scope keeps the values alive
        }
        return y;
    }

    internal Tensor?[] RunBackward(FunctionContext ctx, Tensor grad) =>
        Backward(ctx, grad) ?? throw new EngineException(Name + "Backward", "Backward returned null");
}

/// <summary>The graph record of a <see cref="CustomFunction"/> call: the context's saved tensors and the user's backward.</summary>
internal sealed class CustomBackward : GradFunction
{
    readonly FunctionContext _ctx;
    readonly SavedTensor[] _saved;

    internal CustomBackward(FunctionContext ctx)
    {
        _ctx = ctx;
        _saved = [.. ctx.ToSave.Select(Save)];
        ctx.Node = this;
    }

    public override string Name => _ctx.Function.Name;

    internal IReadOnlyList<Tensor> SavedTensors => [.. _saved.Select(s => s.Value)];

    protected internal override Tensor?[] Backward(Tensor grad) => _ctx.Function.RunBackward(_ctx, grad);
}

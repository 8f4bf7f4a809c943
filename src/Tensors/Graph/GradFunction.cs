namespace Engine.Graph;

/// <summary>
/// The autograd definition of one op: its forward attributes (constructor parameters), the tensors it saves
/// (<see cref="Save"/>, in the constructor) and its <see cref="Backward"/>, side by side in one class placed next to
/// the op's forward method. The op's forward creates it only when the graph is recorded
/// (<c>y.Record(new SumBackward(dims, keepDim), x)</c>), so inference allocates nothing. The type is the op's
/// identity: the autocast policy is keyed by it, and the compiler checks the seam between forward and backward.
/// </summary>
/// <remarks>
/// <para>A backward holds derivatives only. The executor (src/Autograd/GraphExecutor.cs) runs it with grad mode and
/// autocast off inside a dispose scope, so temporaries need no <c>using</c>; it then sums each returned gradient back
/// to its input's shape (a gradient at a shape the input broadcasts to is reduced as <see cref="Tensor.SumToSize"/>),
/// converts it to the input's dtype and device (a gradient in <see cref="PreferredGradDType"/> passes as it is), and
/// drops gradients of inputs that need none.</para>
/// <para>Return one gradient per input, in the forward call's order, or null for an input that gets none (check
/// <see cref="NeedsGrad"/> to skip work). A returned tensor may be <c>grad</c> itself or a saved value: the executor
/// takes its own handle.</para>
/// </remarks>
public abstract class GradFunction
{
    List<SavedTensor>? _saved;
    GradNode? _node;

    /// <summary>
    /// The op's name in the graph (<see cref="GradNode.ToString"/> adds "Backward", as PyTorch's <c>grad_fn</c>):
    /// the class name without its "Backward" suffix by default.
    /// </summary>
    public virtual string Name
    {
        get
        {
            var n = GetType().Name;
            int tick = n.IndexOf('`');
            if (tick >= 0) n = n[..tick];
            return n.EndsWith("Backward", StringComparison.Ordinal) && n.Length > 8 ? n[..^8] : n;
        }
    }

    /// <summary>
    /// Saves a tensor for <see cref="Backward"/>: a private alias (it keeps the data alive when the caller disposes
    /// the tensor) checked against in-place modification when read. Call from the constructor.
    /// </summary>
    protected SavedTensor Save(Tensor t)
    {
        if (_node is not null) throw new InvalidOperationException("tensors are saved when the op is recorded, not after");
        var s = new SavedTensor(t, this);
        (_saved ??= []).Add(s);
        return s;
    }

    /// <summary>The record this definition belongs to (set when the op is recorded).</summary>
    protected GradNode Node => _node ?? throw new InvalidOperationException($"{Name}: the op was not recorded");

    /// <summary>Shape, dtype and device of input <paramref name="i"/> when the op ran.</summary>
    protected InputInfo Input(int i) => Node.Inputs[i];

    /// <summary>Whether input <paramref name="i"/> wants a gradient (requires grad, and the pass needs it).</summary>
    protected bool NeedsGrad(int i) => Node.Edges[i].IsLive;

    /// <summary>
    /// The dtype in which input <paramref name="i"/>'s gradient is best produced. Usually the input's own dtype; but
    /// when the input is the autocast copy of a wider float tensor (the output of a <c>To</c> cast recorded as
    /// CastBackward from float32, say, on the same device, perhaps behind aliases, and with no hook or retained grad
    /// that would see the narrow gradient), it is that wider dtype: a backward that can compute the gradient there
    /// directly (the fused Linear's weight GEMM writes float32 from bfloat16 operands) may return it so, and the executor
    /// passes it up to the cast unconverted, skipping a rounding to 16 bits and the cast back. A backward may ignore
    /// this; the executor converts whatever dtype it returns to the input's dtype, except this one.
    /// </summary>
    protected DType PreferredGradDType(int i) => Node.PreferredGradDType(i);

    /// <summary>
    /// The gradients of the inputs given the gradient of the output: one per input, in the forward's order, or null
    /// for one that gets none. See the class remarks for what the executor does around it.
    /// </summary>
    protected internal abstract Tensor?[] Backward(Tensor grad);

    /// <summary>
    /// For an op of one input whose gradient is zero outside one region of it (slice, select): adds
    /// <paramref name="grad"/> into that region of <paramref name="accumulated"/>, a gradient of the input that the
    /// pass already holds privately (from another slice of the same tensor), and returns true. The executor then skips
    /// <see cref="Backward"/>, which would fill zeros and copy only for the result to be summed in: three slices of
    /// one tensor (q, k, v of a fused projection) cost one fill, one copy and two in-place adds instead of three fills,
    /// three copies and two adds. The default declines.
    /// </summary>
    protected internal virtual bool TryAccumulateInto(Tensor accumulated, Tensor grad) => false;

    /// <summary>
    /// For an op whose first input is also used elsewhere (a residual stream that feeds a norm and the next add): the
    /// gradients as <see cref="Backward"/> gives them, except that input 0's is <paramref name="pending"/> (the share
    /// the executor already summed for that input from its other uses, at the input's shape, dtype and device) plus
    /// this op's own, added by the op's kernel. The executor then drops its pending sum, so the fan-out Add never
    /// runs. Must give the bits of <c>pending + Backward(grad)[0]</c>. The default (null) declines.
    /// </summary>
    protected internal virtual Tensor?[]? BackwardAccumulating(Tensor grad, Tensor pending) => null;

    internal IReadOnlyList<SavedTensor> SavedValues => (IReadOnlyList<SavedTensor>?)_saved ?? [];

    internal void Attach(GradNode node)
    {
        if (_node is not null) throw new InvalidOperationException($"{Name}: one GradFunction instance records one op");
        _node = node;
    }
}

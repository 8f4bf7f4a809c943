using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>True when an op on these inputs must record itself.</summary>
    internal static bool ShouldRecord(Tensor a) => a.RequiresGrad && GradMode.IsEnabled;

    internal static bool ShouldRecord(Tensor a, Tensor b) => (a.RequiresGrad || b.RequiresGrad) && GradMode.IsEnabled;

    internal static bool ShouldRecord(ReadOnlySpan<Tensor> inputs)
    {
        if (!GradMode.IsEnabled) return false;
        foreach (var t in inputs) if (t.RequiresGrad) return true;
        return false;
    }

    /// <summary>
    /// Attaches the record of the op that produced this tensor when any input requires grad (and grad mode is on);
    /// otherwise does nothing, so inference pays one check. Returns this.
    /// </summary>
    internal Tensor Record(string op, ReadOnlySpan<Tensor> inputs, object? attributes = null, ReadOnlySpan<Tensor> saved = default)
    {
        if (!ShouldRecord(inputs)) return this;
        var edges = new Edge[inputs.Length];
        var infos = new InputInfo[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            var x = inputs[i];
            infos[i] = new InputInfo(x.Layout.Shape, x.DType, x.Device);
            if (x.RequiresGrad) edges[i] = new Edge(x.GradFn, x);
        }
        var savedValues = new SavedTensor[saved.Length];
        for (int i = 0; i < saved.Length; i++) savedValues[i] = new SavedTensor(saved[i], op);
        GradFn = new GradNode(op, edges, infos, savedValues, attributes, Layout.Shape, DType);
        return this;
    }

    /// <summary>
    /// Attaches a graph record to this freshly computed tensor, for ops defined outside this assembly (custom
    /// autograd functions): <paramref name="op"/> names the backward rule (register it with
    /// <c>Engine.Autograd.BackwardRules.Register</c>), <paramref name="saved"/> are checked for in-place
    /// modification when backward reads them. Does nothing when no input requires grad or grad mode is off. Returns this.
    /// </summary>
    public Tensor RecordCustom(string op, Tensor[] inputs, object? attributes, Tensor[] saved)
    {
        if (GradFn is not null) throw new EngineException(op, "the tensor already has a grad_fn; record a custom op on a fresh output tensor");
        return Record(op, inputs, attributes, saved);
    }

    /// <summary>Records an op with one input.</summary>
    internal Tensor Record(string op, Tensor input, object? attributes = null, ReadOnlySpan<Tensor> saved = default) =>
        ShouldRecord(input) ? Record(op, [input], attributes, saved) : this;
}

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
    /// Attaches the record of the op that produced this tensor. Callers build <paramref name="function"/> only when
    /// <see cref="ShouldRecord(ReadOnlySpan{Tensor})"/> says so (its constructor saves tensors). Returns this.
    /// </summary>
    internal Tensor Record(GradFunction function, params ReadOnlySpan<Tensor> inputs)
    {
        var edges = new Edge[inputs.Length];
        var infos = new InputInfo[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            var x = inputs[i];
            infos[i] = new InputInfo(x.Layout.Shape, x.DType, x.Device);
            if (x.RequiresGrad) edges[i] = new Edge(x.GradFn, x);
        }
        GradFn = new GradNode(function, edges, infos, Layout.Shape, DType);
        return this;
    }

    /// <summary>
    /// Attaches a graph record to this freshly computed tensor, for ops defined outside this assembly: subclass
    /// <see cref="GradFunction"/> (or use <c>Engine.Autograd.CustomFunction</c>, which does it for you). Does nothing
    /// when no input requires grad or grad mode is off. Returns this.
    /// </summary>
    public Tensor RecordCustom(GradFunction function, params Tensor[] inputs)
    {
        ArgumentNullException.ThrowIfNull(function);
        if (GradFn is not null) throw new EngineException(function.Name, "the tensor already has a grad_fn; record a custom op on a fresh output tensor");
        return ShouldRecord(inputs) ? Record(function, inputs) : this;
    }

    /// <summary>Records a view or copy whose gradient passes through unchanged (Alias, Contiguous, Clone, To).</summary>
    internal Tensor RecordIdentity(Tensor input) => ShouldRecord(input) ? Record(new IdentityBackward(), input) : this;

    /// <summary>Records a dtype or device conversion.</summary>
    internal Tensor RecordCast(Tensor input) => ShouldRecord(input) ? Record(new CastBackward(), input) : this;

    /// <summary>The backward of views and copies that keep every element (Alias, Contiguous, Clone): the identity.</summary>
    internal sealed class IdentityBackward : GradFunction
    {
        public override string Name => "Alias";
        protected internal override Tensor?[] Backward(Tensor grad) => [grad];
    }

    /// <summary>The backward of a dtype or device conversion: the gradient as it is; the executor converts it back
    /// to the input's dtype and device.</summary>
    internal sealed class CastBackward : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad) => [grad];
    }
}

using Engine.Autograd;

namespace Engine;

/// <summary>Reverse-mode autograd on tensors: <c>loss.Backward()</c>, as PyTorch's <c>tensor.backward()</c>.</summary>
public static class AutogradExtensions
{
    /// <summary>
    /// Computes the gradient of this tensor with respect to every leaf of its graph that requires grad and adds it to
    /// the leaf's <see cref="Tensor.Grad"/> (created on first use with the leaf's shape and dtype; it belongs to no
    /// dispose scope, so dispose it or zero it yourself). Non-leaves that called <see cref="RetainGrad"/> keep theirs
    /// too, and gradient hooks run on the way. Without <paramref name="retainGraph"/> the values saved for backward are
    /// freed, so a second call through the same graph throws. No graph is recorded during the pass.
    /// </summary>
    /// <param name="t">The output, typically a scalar loss.</param>
    /// <param name="gradient">The gradient of some scalar with respect to <paramref name="t"/> (its shape); may be
    /// omitted only for a one-element tensor, where it is 1. Not disposed.</param>
    /// <param name="retainGraph">Keep the saved values so the graph can be backpropagated again.</param>
    public static void Backward(this Tensor t, Tensor? gradient = null, bool retainGraph = false) =>
        GraphExecutor.Backward(t, gradient, retainGraph);

    /// <summary>
    /// Makes a non-leaf tensor keep its gradient in <see cref="Tensor.Grad"/> during <see cref="Backward"/> (as
    /// PyTorch's <c>retain_grad()</c>); a no-op on leaves, which keep theirs anyway.
    /// </summary>
    public static void RetainGrad(this Tensor t)
    {
        if (!t.RequiresGrad) throw new EngineException("RetainGrad", "can't retain the gradient of a tensor that does not require grad");
        if (!t.IsLeaf) t.RetainsGrad = true;
    }
}

namespace Engine.Autograd;

/// <summary>
/// Autograd over several outputs at once: <see cref="Backward"/> accumulates into the leaves' <c>Grad</c>, as
/// <c>torch.autograd.backward</c>; <see cref="Grad"/> returns the gradients instead, as <c>torch.autograd.grad</c>.
/// </summary>
public static class Gradients
{
    /// <summary>
    /// Backpropagates from every tensor of <paramref name="tensors"/> in one pass (shared subgraphs run once, their
    /// gradients summed) and adds the result to each leaf's <see cref="Tensor.Grad"/>, as
    /// <c>torch.autograd.backward(tensors, grad_tensors)</c>. A tensor of one element may have a null gradient (1).
    /// </summary>
    /// <param name="tensors">The roots.</param>
    /// <param name="gradTensors">One gradient per root (its shape), or null entries / null for one-element roots.</param>
    /// <param name="retainGraph">Keep the saved values so the graph can be backpropagated again.</param>
    public static void Backward(Tensor[] tensors, Tensor?[]? gradTensors = null, bool retainGraph = false)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        if (tensors.Length == 0) throw new EngineException("Backward", "no tensors given");
        if (gradTensors is not null && gradTensors.Length != tensors.Length)
            throw new EngineException("Backward", $"got {gradTensors.Length} gradients for {tensors.Length} tensors");
        GraphExecutor.Backward(tensors, gradTensors, retainGraph);
    }

    /// <summary>
    /// The sum over <paramref name="outputs"/> of the vector-Jacobian products with <paramref name="gradOutputs"/>,
    /// with respect to each of <paramref name="inputs"/> (leaves or intermediate tensors, all requiring grad). No
    /// <see cref="Tensor.Grad"/> is read or written; only the rules on paths to the inputs run. The results are new
    /// tensors the caller owns (null for an unused input when <paramref name="allowUnused"/>).
    /// </summary>
    /// <param name="outputs">The differentiated tensors.</param>
    /// <param name="inputs">The tensors to differentiate with respect to.</param>
    /// <param name="gradOutputs">One gradient per output (its shape), or null entries / null for one-element outputs (1).</param>
    /// <param name="retainGraph">Keep the saved values of the rules that ran, so the graph can be used again.</param>
    /// <param name="allowUnused">Return null for an input no gradient reaches instead of throwing.</param>
    /// <example><code>
    /// using var y = (x * x).Sum();
    /// var dx = Gradients.Grad([y], [x])[0]!;   // 2x; x.Grad stays null
    /// </code></example>
    public static Tensor?[] Grad(Tensor[] outputs, Tensor[] inputs, Tensor?[]? gradOutputs = null, bool retainGraph = false, bool allowUnused = false)
    {
        if (outputs.Length == 0) throw new EngineException("Grad", "no outputs given");
        if (gradOutputs is not null && gradOutputs.Length != outputs.Length)
            throw new EngineException("Grad", $"got {gradOutputs.Length} gradients for {outputs.Length} outputs");
        for (int i = 0; i < inputs.Length; i++)
            if (!inputs[i].RequiresGrad)
                throw new EngineException("Grad", $"input {i} ({Shape.Format(inputs[i].Layout.Shape)}) does not require grad: one of the differentiated tensors does not require grad");
        var r = GraphExecutor.Capture(outputs, gradOutputs, inputs, retainGraph);
        if (!allowUnused)
            for (int i = 0; i < r.Length; i++)
                if (r[i] is null)
                {
                    foreach (var g in r) g?.Dispose();
                    throw new EngineException("Grad", $"input {i} ({Shape.Format(inputs[i].Layout.Shape)}) appears to not have been used in the graph (no gradient reaches it); pass allowUnused: true if this is expected");
                }
        return r;
    }
}

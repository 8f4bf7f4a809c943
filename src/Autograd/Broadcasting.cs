namespace Engine.Autograd;

/// <summary>The backward of broadcasting: a gradient at the broadcast shape summed back to an operand's shape.</summary>
public static class Broadcasting
{
    /// <summary>
    /// Sums <paramref name="grad"/> over the leading dims it has beyond <paramref name="shape"/> and over the dims
    /// where <paramref name="shape"/> has size 1 but the gradient does not, giving a tensor of exactly
    /// <paramref name="shape"/> (as PyTorch's <c>sum_to_size</c>). Returns a new tensor the caller owns (a new handle
    /// on the same data when the shapes already match). Differentiable.
    /// </summary>
    public static Tensor SumToShape(Tensor grad, int[] shape)
    {
        var g = grad.Layout.Shape;
        int lead = g.Length - shape.Length;
        if (lead < 0)
            throw new ShapeException("SumToShape", $"cannot sum a gradient of shape {Shape.Format(g)} to the larger-rank shape {Shape.Format(shape)}");
        var dims = new List<int>();
        for (int i = 0; i < lead; i++) dims.Add(i);
        for (int i = 0; i < shape.Length; i++)
        {
            int have = g[lead + i];
            if (have == shape[i]) continue;
            if (shape[i] != 1)
                throw new ShapeException("SumToShape", $"shape {Shape.Format(shape)} does not broadcast to the gradient's shape {Shape.Format(g)} (dim {i}: {shape[i]} vs {have})");
            dims.Add(lead + i);
        }
        if (dims.Count == 0) return grad.To(grad.DType);
        using var s = grad.Sum([.. dims], keepDim: true);
        return s.Reshape(shape);
    }
}

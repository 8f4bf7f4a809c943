using Engine.Graph;

namespace Engine.Autograd.Rules;

/// <summary>
/// Backward rules of the indexing and joining ops (forward: src/Tensors/Tensor.Index.cs), written with tensor ops so
/// that they are themselves differentiable: a gather's adjoint is a scatter-add into zeros and the other way round,
/// and a concatenation's is a slice per input.
/// </summary>
static class IndexRules
{
    static Tensor ZerosOf(InputInfo input) => Tensor.Zeros(input.Shape, input.DType, input.Device);

    [BackwardRule("Gather")]
    static Tensor?[] Gather(GradNode node, Tensor grad)
    {
        int dim = (int)node.Attributes!;
        using var zeros = ZerosOf(node.Inputs[0]);
        return [zeros.ScatterAdd(dim, node.Saved(0), grad)];
    }

    [BackwardRule("ScatterAdd")]
    static Tensor?[] ScatterAdd(GradNode node, Tensor grad)
    {
        int dim = (int)node.Attributes!;
        if (!node.Edges[1].IsLive) return [grad, null];
        var index = node.Saved(0);
        var source = node.Inputs[1].Shape;
        var g = grad.Gather(dim, index);
        // The source may be larger than the index: its elements the index does not reach get zeros.
        for (int d = 0; d < source.Length; d++)
        {
            int have = g.Layout.Shape[d];
            if (have == source[d]) continue;
            var padShape = g.Shape;
            padShape[d] = source[d] - have;
            using var pad = Tensor.Zeros(padShape, g.DType, g.Device);
            using var prev = g;
            g = Tensor.Cat([prev, pad], d);
        }
        return [grad, g];
    }

    [BackwardRule("IndexSelect")]
    static Tensor?[] IndexSelect(GradNode node, Tensor grad)
    {
        int dim = (int)node.Attributes!;
        using var zeros = ZerosOf(node.Inputs[0]);
        return [zeros.IndexAdd(dim, node.Saved(0), grad)];
    }

    [BackwardRule("IndexAdd")]
    static Tensor?[] IndexAdd(GradNode node, Tensor grad)
    {
        int dim = (int)node.Attributes!;
        return [grad, node.Edges[1].IsLive ? grad.IndexSelect(dim, node.Saved(0)) : null];
    }

    [BackwardRule("Embedding")]
    static Tensor?[] Embedding(GradNode node, Tensor grad)
    {
        var weight = node.Inputs[0];
        var index = node.Saved(0);
        using var rows = grad.Reshape((int)index.Numel, weight.Shape[1]);
        using var zeros = ZerosOf(weight);
        return [zeros.IndexAdd(0, index, rows)];
    }

    [BackwardRule("Cat")]
    static Tensor?[] Cat(GradNode node, Tensor grad)
    {
        var (dim, sizes) = ((int, int[]))node.Attributes!;
        var r = new Tensor?[sizes.Length];
        int start = 0;
        for (int i = 0; i < sizes.Length; i++)
        {
            var input = node.Inputs[i];
            if (sizes[i] < 0)
            {
                // A skipped 1-D empty input.
                if (node.Edges[i].IsLive) r[i] = ZerosOf(input);
                continue;
            }
            if (node.Edges[i].IsLive)
            {
                using var part = grad.Narrow(dim, start, sizes[i]);
                if (input.DType == grad.DType) r[i] = part.Contiguous();
                else r[i] = part.To(input.DType);
            }
            start += sizes[i];
        }
        return r;
    }
}

using Engine.Graph;

namespace Engine.Autograd.Rules;

// Backward of the view and copy ops (src/Tensors/Tensor.Views.cs, Tensor.Data.cs, Tensor.InPlace.cs). The gradient of
// a view is the inverse view of the gradient (no copy) or, for views that drop elements (Slice, Select), the
// gradient scattered into zeros of the input's shape.
static class ViewRules
{
    // Alias, Contiguous, Clone, To(same dtype): the identity.
    [BackwardRule("Alias")]
    static Tensor?[] Alias(GradNode node, Tensor grad) => [grad];

    // A dtype or device conversion: the gradient converted back.
    [BackwardRule("Cast")]
    static Tensor?[] Cast(GradNode node, Tensor grad)
    {
        var info = node.Inputs[0];
        return [grad.To(info.Device, info.DType)];
    }

    [BackwardRule("Transpose")]
    static Tensor?[] Transpose(GradNode node, Tensor grad)
    {
        var (a, b) = ((int, int))node.Attributes!;
        return [grad.Transpose(a, b)];
    }

    // Result dim i is input dim perm[i], so input dim perm[i] is gradient dim i.
    [BackwardRule("Permute")]
    static Tensor?[] Permute(GradNode node, Tensor grad)
    {
        var perm = (int[])node.Attributes!;
        var inverse = new int[perm.Length];
        for (int i = 0; i < perm.Length; i++) inverse[perm[i]] = i;
        return [grad.Permute(inverse)];
    }

    // Attributes (dim, start, count, step), also recorded by Narrow (step 1) and the indexer's ranges.
    [BackwardRule("Slice")]
    static Tensor?[] Slice(GradNode node, Tensor grad)
    {
        var (dim, start, count, step) = ((int, int, int, int))node.Attributes!;
        var info = node.Inputs[0];
        var z = Tensor.Zeros(info.Shape, info.DType, info.Device);
        if (count > 0)
        {
            using var v = z.Slice(dim, start, start + (count - 1) * step + 1, step);
            v.CopyInPlace(grad);
        }
        return [z];
    }

    // Attributes (dim, index).
    [BackwardRule("Select")]
    static Tensor?[] Select(GradNode node, Tensor grad)
    {
        var (dim, index) = ((int, int))node.Attributes!;
        var info = node.Inputs[0];
        var z = Tensor.Zeros(info.Shape, info.DType, info.Device);
        using var v = z.Select(dim, index);
        v.CopyInPlace(grad);
        return [z];
    }

    // View, Reshape, Flatten, Unsqueeze, Squeeze (a copy only when the gradient's strides do not allow a view).
    [BackwardRule("Reshape")]
    static Tensor?[] Reshape(GradNode node, Tensor grad) => [grad.Reshape(node.Inputs[0].Shape)];

    // Broadcasting without copying: the gradient summed over the broadcast dims.
    [BackwardRule("Expand")]
    static Tensor?[] Expand(GradNode node, Tensor grad) => [Broadcasting.SumToShape(grad, node.Inputs[0].Shape)];

    // FillInPlace on a tensor in the graph: the old values no longer matter.
    [BackwardRule("Fill")]
    static Tensor?[] Fill(GradNode node, Tensor grad)
    {
        var info = node.Inputs[0];
        return [Tensor.Zeros(info.Shape, info.DType, info.Device)];
    }
}

using Engine.Graph;

namespace Engine.Autograd.Rules;

/// <summary>
/// Backward rule of CrossEntropy (Tensor.Loss.cs): the gradient of the reduced loss becomes a per-sample dloss
/// (broadcast for Sum, divided by the count of non-ignored samples for Mean), then one fused kernel gives dlogits.
/// MseLoss is composed from differentiable ops and needs no rule.
/// </summary>
static class LossRules
{
    [BackwardRule("CrossEntropy")]
    static Tensor?[] CrossEntropy(GradNode node, Tensor grad)
    {
        var a = (CrossEntropyAttributes)node.Attributes!;
        var logits = node.Saved(0);
        var target = node.Saved(1);
        var shape = target.Shape;
        switch (a.Reduction)
        {
            case Reduction.None:
                return [Tensor.CrossEntropyBackward(logits, target, grad, a.IgnoreIndex, a.LabelSmoothing)];
            case Reduction.Sum:
            {
                using var g = grad.Expand(shape);
                return [Tensor.CrossEntropyBackward(logits, target, g, a.IgnoreIndex, a.LabelSmoothing)];
            }
            default:
            {
                using var m = grad.Div(node.Saved(2));
                using var g = m.Expand(shape);
                return [Tensor.CrossEntropyBackward(logits, target, g, a.IgnoreIndex, a.LabelSmoothing)];
            }
        }
    }
}

using Engine.Graph;

namespace Engine.Autograd.Rules;

/// <summary>Backward rules of Softmax and LogSoftmax: one fused kernel from the saved output (Tensor.Softmax.cs).</summary>
static class SoftmaxRules
{
    [BackwardRule("Softmax")]
    static Tensor?[] Softmax(GradNode node, Tensor grad) => [Tensor.SoftmaxBackward(node.Saved(0), grad, (int)node.Attributes!, log: false)];

    [BackwardRule("LogSoftmax")]
    static Tensor?[] LogSoftmax(GradNode node, Tensor grad) => [Tensor.SoftmaxBackward(node.Saved(0), grad, (int)node.Attributes!, log: true)];
}

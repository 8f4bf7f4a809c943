using Engine.Graph;
using Engine.Ops;

namespace Engine.Autograd.Rules;

// Backward of the unary ops recorded by Tensor.Apply (src/Tensors/Tensor.Unary.cs). Each record carries the op's
// IUnaryGradient as its attributes and saves x, so one rule serves them all: dx = dy · f'(x), computed by the
// generic UnaryGradOp kernel from each op struct's Derivative (src/Tensors/Ops/UnaryOps.cs).
static class UnaryRules
{
    [BackwardRule("Neg"), BackwardRule("Abs"), BackwardRule("Exp"), BackwardRule("Log"), BackwardRule("Sqrt"),
     BackwardRule("Rsqrt"), BackwardRule("Sin"), BackwardRule("Cos"), BackwardRule("Tanh"), BackwardRule("Sigmoid"),
     BackwardRule("Relu"), BackwardRule("GeluTanh"), BackwardRule("Gelu"), BackwardRule("Silu"),
     BackwardRule("PowScalar"), BackwardRule("Clamp")]
    static Tensor?[] Elementwise(GradNode node, Tensor grad) =>
        [((IUnaryGradient)node.Attributes!).Gradient(node.Saved(0), grad)];

    // a·x + b needs only a, not x: reading the saved x would make the in-place forms (x += 1, x *= 2 on a tensor in
    // the graph, which overwrite x) fail the saved-tensor version check for nothing.
    [BackwardRule("Affine")]
    static Tensor?[] Affine(GradNode node, Tensor grad)
    {
        var scale = ((UnaryGradient<AffineOp>)node.Attributes!).Op.Scale;
        return [scale == 1 ? grad : Tensor.Map(new AffineOp(scale, 0), grad)];
    }
}

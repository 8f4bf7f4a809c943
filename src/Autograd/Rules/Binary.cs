using Engine.Graph;

namespace Engine.Autograd.Rules;

// Backward of the broadcasting binary ops (src/Tensors/Tensor.Binary.cs). The recorded inputs are the operands
// after type promotion (one dtype); a gradient at the broadcast output shape is summed back to each input's shape.
// Only live inputs get a gradient, and saved operands are read only when needed, so an in-place update of an
// operand that does not need it does not trip the saved-tensor version check.
static class BinaryRules
{
    // The gradient g (at the output's shape) summed to input i's shape and cast to its dtype: a new tensor.
    internal static Tensor Reduce(Tensor g, InputInfo info)
    {
        var s = Broadcasting.SumToShape(g, info.Shape);
        if (s.DType == info.DType && s.Device == info.Device) return s;
        using (s) return s.To(info.Device, info.DType);
    }

    static bool Live(GradNode node, int i) => node.Edges[i].IsLive;

    [BackwardRule("Add")]
    static Tensor?[] Add(GradNode node, Tensor grad) =>
        [Live(node, 0) ? Reduce(grad, node.Inputs[0]) : null, Live(node, 1) ? Reduce(grad, node.Inputs[1]) : null];

    [BackwardRule("Sub")]
    static Tensor?[] Sub(GradNode node, Tensor grad)
    {
        Tensor? db = null;
        if (Live(node, 1)) { using var n = grad.Neg(); db = Reduce(n, node.Inputs[1]); }
        return [Live(node, 0) ? Reduce(grad, node.Inputs[0]) : null, db];
    }

    [BackwardRule("Mul")]
    static Tensor?[] Mul(GradNode node, Tensor grad)
    {
        Tensor? da = null, db = null;
        if (Live(node, 0)) { using var t = grad.Mul(node.Saved(1)); da = Reduce(t, node.Inputs[0]); }
        if (Live(node, 1)) { using var t = grad.Mul(node.Saved(0)); db = Reduce(t, node.Inputs[1]); }
        return [da, db];
    }

    // d(a/b)/da = 1/b, d(a/b)/db = −a/b².
    [BackwardRule("Div")]
    static Tensor?[] Div(GradNode node, Tensor grad)
    {
        var b = node.Saved(1);
        using var gb = grad.Div(b);
        Tensor? da = Live(node, 0) ? Reduce(gb, node.Inputs[0]) : null, db = null;
        if (Live(node, 1))
        {
            using var t = gb.Mul(node.Saved(0));
            using var q = t.Div(b);
            using var n = q.Neg();
            db = Reduce(n, node.Inputs[1]);
        }
        return [da, db];
    }

    // d(aᵇ)/da = b·aᵇ⁻¹ (0 where b = 0, as PyTorch, so 0⁰ does not give NaN); d(aᵇ)/db = aᵇ·ln a (0 where a = 0 and
    // b ≥ 0, as PyTorch, where the limit is finite).
    [BackwardRule("Pow")]
    static Tensor?[] Pow(GradNode node, Tensor grad)
    {
        var a = node.Saved(0);
        var b = node.Saved(1);
        using var zero = Tensor.Scalar(0, grad.DType, grad.Device);
        Tensor? da = null, db = null;
        if (Live(node, 0))
        {
            using var bm1 = b.Sub(1.0);
            using var p = a.Pow(bm1);
            using var t = p.Mul(b);
            using var t2 = t.Mul(grad);
            using var bZero = b.Eq(0.0);
            using var full = Tensor.Where(bZero, zero, t2);
            da = Reduce(full, node.Inputs[0]);
        }
        if (Live(node, 1))
        {
            using var y = a.Pow(b);
            using var ln = a.Log();
            using var t = y.Mul(ln);
            using var t2 = t.Mul(grad);
            using var aZero = a.Eq(0.0);
            using var bNonNeg = b.Ge(0.0);
            using var inner = Tensor.Where(bNonNeg, zero, t2);
            using var full = Tensor.Where(aZero, inner, t2);
            db = Reduce(full, node.Inputs[1]);
        }
        return [da, db];
    }

    // The gradient goes to the larger (smaller) operand; ties split it half and half, as PyTorch.
    [BackwardRule("Maximum")]
    static Tensor?[] Maximum(GradNode node, Tensor grad) => Extremum(node, grad, max: true);

    [BackwardRule("Minimum")]
    static Tensor?[] Minimum(GradNode node, Tensor grad) => Extremum(node, grad, max: false);

    static Tensor?[] Extremum(GradNode node, Tensor grad, bool max)
    {
        var a = node.Saved(0);
        var b = node.Saved(1);
        using var zero = Tensor.Scalar(0, grad.DType, grad.Device);
        using var half = grad.Mul(0.5);
        using var eq = a.Eq(b);
        using var shared = Tensor.Where(eq, half, grad);
        Tensor? da = null, db = null;
        if (Live(node, 0))
        {
            using var loses = max ? a.Lt(b) : a.Gt(b);
            using var t = Tensor.Where(loses, zero, shared);
            da = Reduce(t, node.Inputs[0]);
        }
        if (Live(node, 1))
        {
            using var loses = max ? b.Lt(a) : b.Gt(a);
            using var t = Tensor.Where(loses, zero, shared);
            db = Reduce(t, node.Inputs[1]);
        }
        return [da, db];
    }

    // Inputs [a, b], saved [condition].
    [BackwardRule("Where")]
    static Tensor?[] Where(GradNode node, Tensor grad)
    {
        var cond = node.Saved(0);
        using var zero = Tensor.Scalar(0, grad.DType, grad.Device);
        Tensor? da = null, db = null;
        if (Live(node, 0)) { using var t = Tensor.Where(cond, grad, zero); da = Reduce(t, node.Inputs[0]); }
        if (Live(node, 1)) { using var t = Tensor.Where(cond, zero, grad); db = Reduce(t, node.Inputs[1]); }
        return [da, db];
    }
}

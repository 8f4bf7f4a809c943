using Engine.Graph;

namespace Engine.Autograd.Rules;

/// <summary>
/// Backward rules of the reductions (forward: src/Tensors/Tensor.Reduce.cs), written with tensor ops so that they
/// are themselves differentiable. Each rule first puts the output gradient back at the keepDim shape (size 1 at the
/// reduced dims), from where it broadcasts against the input.
/// </summary>
static class ReduceRules
{
    /// <summary>The input shape with the reduced dims set to 1.</summary>
    static int[] KeptShape(int[] input, int[] dims)
    {
        var s = (int[])input.Clone();
        foreach (var d in dims) s[d] = 1;
        return s;
    }

    /// <summary>The output gradient (or saved output) viewed at the keepDim shape.</summary>
    static Tensor Kept(Tensor t, int[] input, int[] dims) => t.Reshape(KeptShape(input, dims));

    static long Count(int[] input, int[] dims)
    {
        long n = 1;
        foreach (var d in dims) n *= input[d];
        return n;
    }

    /// <summary>The gradient broadcast to the input's shape, materialized (a dense tensor the engine may accumulate into).</summary>
    static Tensor Spread(Tensor keptGrad, int[] input)
    {
        using var e = keptGrad.Expand(input);
        return e.Contiguous();
    }

    [BackwardRule("Sum")]
    static Tensor?[] Sum(GradNode node, Tensor grad)
    {
        var (dims, _) = ((int[], bool))node.Attributes!;
        var shape = node.Inputs[0].Shape;
        using var g = Kept(grad, shape, dims);
        return [Spread(g, shape)];
    }

    [BackwardRule("Mean")]
    static Tensor?[] Mean(GradNode node, Tensor grad)
    {
        var (dims, _) = ((int[], bool))node.Attributes!;
        var shape = node.Inputs[0].Shape;
        using var g = Kept(grad, shape, dims);
        using var scaled = g.Div(Count(shape, dims));
        return [Spread(scaled, shape)];
    }

    [BackwardRule("Max")]
    [BackwardRule("Min")]
    static Tensor?[] Extremum(GradNode node, Tensor grad)
    {
        var shape = node.Inputs[0].Shape;
        using var zero = Tensor.Scalar(0, grad.DType, grad.Device);
        if (node.Attributes is null)
        {
            // All elements: the gradient is shared evenly among the elements equal to the result (the NaNs when
            // the result is NaN), as PyTorch's evenly_distribute_backward.
            var x = node.Saved(0);
            var y = node.Saved(1);
            using var equal = x.Eq(y);
            using var xNaN = x.Ne(x);
            using var yNaN = y.Ne(y);
            using var mask = Tensor.Where(yNaN, xNaN, equal);
            using var count = mask.Sum();
            using var countF = count.To(grad.DType);
            using var share = grad.Div(countF);
            return [Tensor.Where(mask, share, zero)];
        }
        var (dim, _) = ((int, bool))node.Attributes;
        if (shape.Length == 0) return [grad.To(grad.DType)];
        // Along a dim: the gradient goes to the returned index only, picked by comparing each position along the dim
        // with the index (a one-hot mask built by broadcasting, no scatter kernel needed).
        var dims = new[] { dim };
        using var idx = Kept(node.Saved(0), shape, dims);
        using var g = Kept(grad, shape, dims);
        var positionsShape = new int[shape.Length - dim];
        Array.Fill(positionsShape, 1);
        positionsShape[0] = shape[dim];
        using var ar = Tensor.Arange(shape[dim], grad.Device);
        using var positions = ar.Reshape(positionsShape);
        using var hit = positions.Eq(idx);
        return [Tensor.Where(hit, g, zero)];
    }

    [BackwardRule("Var")]
    static Tensor?[] Var(GradNode node, Tensor grad)
    {
        var (dims, correction, _) = ((int[], double, bool))node.Attributes!;
        var shape = node.Inputs[0].Shape;
        var x = node.Saved(0);
        // d/dx Σ(x − mean)²/(n − c) = 2(x − mean)/(n − c); n ≤ c gives ∞ (or NaN where x equals the mean), as PyTorch.
        using var mean = x.Mean(dims, keepDim: true);
        using var dev = x.Sub(mean);
        using var g = Kept(grad, shape, dims);
        using var gd = dev.Mul(g);
        return [gd.Mul(2.0 / (Count(shape, dims) - correction))];
    }

    [BackwardRule("LogSumExp")]
    static Tensor?[] LogSumExp(GradNode node, Tensor grad)
    {
        var (dims, _) = ((int[], bool))node.Attributes!;
        var shape = node.Inputs[0].Shape;
        var x = node.Saved(0);
        using var y = Kept(node.Saved(1), shape, dims);
        using var g = Kept(grad, shape, dims);
        using var shifted = x.Sub(y);
        using var softmax = shifted.Exp();
        return [softmax.Mul(g)];
    }

    [BackwardRule("Norm")]
    static Tensor?[] Norm(GradNode node, Tensor grad)
    {
        var (dims, _, p) = ((int[], bool, double))node.Attributes!;
        var shape = node.Inputs[0].Shape;
        var x = node.Saved(0);
        using var norm = Kept(node.Saved(1), shape, dims);
        using var g = Kept(grad, shape, dims);
        if (p == 0) return [x.ZerosLike()];
        if (p == 1)
        {
            using var sign = Sign(x);
            return [sign.Mul(g)];
        }
        using var normIsZero = norm.Eq(0);
        if (p == 2)
        {
            // x·g/‖x‖, with 0 where the norm is 0 (PyTorch's subgradient).
            using var ratio = g.Div(norm);
            using var scale = ratio.MaskedFill(normIsZero, 0);
            return [x.Mul(scale)];
        }
        if (double.IsInfinity(p))
        {
            // The gradient of max |x| (or min |x|), shared evenly among the tied elements and the NaNs.
            using var abs = x.Abs();
            using var equal = abs.Eq(norm);
            using var isNaN = abs.Ne(abs);
            using var equalF = equal.To(x.DType);
            using var isNaNF = isNaN.To(x.DType);
            using var mask = equalF.Add(isNaNF);
            using var count = mask.Sum(dims, keepDim: true);
            using var share = g.Div(count);
            using var sign = Sign(x);
            using var signed = sign.Mul(mask);
            return [signed.Mul(share)];
        }
        using var absX = x.Abs();
        using var sgn = Sign(x);
        if (p < 1)
        {
            // sgn(x)·|x|^(p−1)·g·‖x‖^(1−p), with 0 where x is 0.
            using var pw = absX.Pow(p - 1);
            using var xIsZero = x.Eq(0);
            using var pwm = pw.MaskedFill(xIsZero, 0);
            using var scaled = sgn.Mul(pwm);
            using var np = norm.Pow(1 - p);
            using var gn = g.Mul(np);
            return [scaled.Mul(gn)];
        }
        else
        {
            // x·|x|^(p−2)·g/‖x‖^(p−1) (written sgn(x)·|x|^(p−1) for p < 2), with 0 where the norm is 0.
            using var pw = absX.Pow(p < 2 ? p - 1 : p - 2);
            using var scaled = (p < 2 ? sgn : x).Mul(pw);
            using var np = norm.Pow(p - 1);
            using var ratio = g.Div(np);
            using var scale = ratio.MaskedFill(normIsZero, 0);
            return [scaled.Mul(scale)];
        }
    }

    /// <summary>sign(x) as x's dtype: −1, 0 or 1.</summary>
    static Tensor Sign(Tensor x)
    {
        using var pos = x.Gt(0);
        using var neg = x.Lt(0);
        using var posF = pos.To(x.DType);
        using var negF = neg.To(x.DType);
        return posF.Sub(negF);
    }
}

using System.Text;
using Engine.Graph;

namespace Engine.Autograd;

/// <summary>A gradient check that failed: the message names the input, the worst element and both values.</summary>
public sealed class GradCheckException(string message) : EngineException("GradCheck", message);

/// <summary>The outcome of <see cref="GradCheck.TryCheck"/>.</summary>
public sealed class GradCheckResult
{
    internal GradCheckResult(bool passed, string message, double maxAbsError)
    {
        Passed = passed; Message = message; MaxAbsError = maxAbsError;
    }

    /// <summary>True when every analytic gradient element matched the numeric one.</summary>
    public bool Passed { get; }

    /// <summary>What failed (the worst element of the first failing input and layout), or "ok".</summary>
    public string Message { get; }

    /// <summary>The largest |analytic − numeric| over all checked elements.</summary>
    public double MaxAbsError { get; }
}

/// <summary>
/// Checks backward rules against finite differences, as <c>torch.autograd.gradcheck</c>: for a random weight vector
/// w of the output's shape, the analytic gradient of Σ w·f(x) (one <c>Backward(w)</c>, a vector-Jacobian product, so
/// non-scalar outputs are covered) is compared with central differences (f(x+ε) − f(x−ε))/2ε on every element of
/// every input that requires grad, with |analytic − numeric| ≤ atol + rtol·|numeric|.
/// </summary>
/// <remarks>
/// Inputs that require grad must be float64 (the check is meaningless in lower precision; test other dtypes against
/// a reference instead). The inputs are never written: the check builds its own leaves from their values (with
/// <c>FromArray</c>), so their <c>Grad</c> stays untouched. Other inputs (masks, indices, constants) are passed as
/// they are. With <c>checkNonContiguous</c> the analytic pass is repeated with the leaves in non-contiguous layouts
/// (transposed for rank ≥ 2, strided with an offset for rank 1). Keep inputs small: the numeric part evaluates f
/// twice per element. Avoid points where f is not differentiable (|x| at 0, relu at 0, ties of max).
/// </remarks>
/// <example><code>
/// using var a = Tensor.FromArray(new double[] { 0.3, -1.2, 2.0, 0.7, 1.1, -0.4 }, [2, 3], requiresGrad: true);
/// using var b = Tensor.FromArray(new double[] { 1.5, -0.5, 0.25 }, [3], requiresGrad: true);
/// GradCheck.Check(x => x[0] * x[1].Exp(), [a, b]);   // throws GradCheckException on a mismatch
/// </code></example>
public static class GradCheck
{
    /// <summary>Throws <see cref="GradCheckException"/> unless the analytic gradients of <paramref name="f"/> match finite differences (see the class remarks).</summary>
    /// <param name="f">The function; it must not dispose its inputs. Its result is disposed by the check.</param>
    /// <param name="inputs">The point; those requiring grad (float64) are differentiated.</param>
    /// <param name="eps">Finite-difference step.</param>
    /// <param name="atol">Absolute tolerance.</param>
    /// <param name="rtol">Tolerance relative to the numeric gradient.</param>
    /// <param name="checkNonContiguous">Also check with non-contiguous leaves.</param>
    public static void Check(Func<Tensor[], Tensor> f, Tensor[] inputs, double eps = 1e-6, double atol = 1e-5, double rtol = 1e-3, bool checkNonContiguous = true)
    {
        var r = TryCheck(f, inputs, eps, atol, rtol, checkNonContiguous);
        if (!r.Passed) throw new GradCheckException(r.Message);
    }

    /// <summary>As <see cref="Check"/>, returning the outcome instead of throwing on a mismatch (invalid arguments still throw).</summary>
    public static GradCheckResult TryCheck(Func<Tensor[], Tensor> f, Tensor[] inputs, double eps = 1e-6, double atol = 1e-5, double rtol = 1e-3, bool checkNonContiguous = true)
    {
        bool any = false;
        for (int i = 0; i < inputs.Length; i++)
        {
            if (!inputs[i].RequiresGrad) continue;
            any = true;
            if (inputs[i].DType != DType.Float64)
                throw new DTypeException("GradCheck", $"input {i} requires grad but is {inputs[i].DType.Name()}; gradient checks need float64 inputs");
        }
        if (!any) throw new EngineException("GradCheck", "no input requires grad");

        var values = inputs.Select(x => x.RequiresGrad ? x.ToArray<double>() : null).ToArray();
        var shapes = inputs.Select(x => x.Shape).ToArray();

        // The output's shape and the random weights of the vector-Jacobian product.
        Shape outShape;
        using (var scope = Tensor.NewScope())
        using (GradMode.NoGrad())
        {
            var xs = Build(inputs, values, shapes, -1, 0, 0);
            outShape = Call(f, xs, "GradCheck").Shape;
        }
        var rng = new Random(1234567);
        var w = new double[Shape.Numel(outShape)];
        for (int i = 0; i < w.Length; i++) w[i] = 2 * rng.NextDouble() - 1;

        var numeric = Numeric(f, inputs, values, shapes, w, eps);
        double maxErr = 0;
        string? failure = null;
        foreach (var nonContiguous in checkNonContiguous ? new[] { false, true } : [false])
        {
            var analytic = Analytic(f, inputs, values, shapes, outShape, w, nonContiguous);
            for (int i = 0; i < inputs.Length && failure is null; i++)
            {
                if (values[i] is null) continue;
                var msg = Compare(analytic[i]!, numeric[i]!, shapes[i], atol, rtol, ref maxErr);
                if (msg is not null)
                    failure = $"the analytic gradient of input {i} ({Shape.Format(shapes[i])}, {(nonContiguous ? "non-contiguous" : "contiguous")} leaves) does not match finite differences: {msg}";
            }
            if (failure is not null) break;
        }
        return new GradCheckResult(failure is null, failure ?? "ok", maxErr);
    }

    static Tensor Call(Func<Tensor[], Tensor> f, Tensor[] xs, string what) =>
        f(xs) ?? throw new EngineException("GradCheck", $"the function returned null ({what})");

    // The inputs as fresh float64 tensors (contiguous, no grad) except those not differentiated; element `elem` of
    // input `which` shifted by `delta`.
    static Tensor[] Build(Tensor[] inputs, double[]?[] values, Shape[] shapes, int which, int elem, double delta)
    {
        var xs = new Tensor[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            if (values[i] is not { } v) { xs[i] = inputs[i]; continue; }
            if (i == which)
            {
                v = (double[])v.Clone();
                v[elem] += delta;
            }
            xs[i] = Tensor.FromArray(v, shapes[i]);
        }
        return xs;
    }

    static double[]?[] Numeric(Func<Tensor[], Tensor> f, Tensor[] inputs, double[]?[] values, Shape[] shapes, double[] w, double eps)
    {
        using var noGrad = GradMode.NoGrad();
        var r = new double[]?[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
        {
            if (values[i] is null) continue;
            var d = r[i] = new double[values[i]!.Length];
            for (int j = 0; j < d.Length; j++)
                d[j] = (Weighted(f, inputs, values, shapes, i, j, eps, w) - Weighted(f, inputs, values, shapes, i, j, -eps, w)) / (2 * eps);
        }
        return r;
    }

    static double Weighted(Func<Tensor[], Tensor> f, Tensor[] inputs, double[]?[] values, Shape[] shapes, int which, int elem, double delta, double[] w)
    {
        using var scope = Tensor.NewScope();
        var xs = Build(inputs, values, shapes, which, elem, delta);
        var y = Call(f, xs, "finite differences").ToArray<double>();
        if (y.Length != w.Length) throw new EngineException("GradCheck", $"the function's output changed size ({w.Length} → {y.Length}) between evaluations");
        double s = 0;
        for (int k = 0; k < y.Length; k++) s += w[k] * y[k];
        return s;
    }

    static double[]?[] Analytic(Func<Tensor[], Tensor> f, Tensor[] inputs, double[]?[] values, Shape[] shapes, Shape outShape, double[] w, bool nonContiguous)
    {
        var leaves = new Tensor?[inputs.Length];
        try
        {
            using var scope = Tensor.NewScope();
            using var grad = GradMode.Set(true);
            var xs = new Tensor[inputs.Length];
            for (int i = 0; i < inputs.Length; i++)
                xs[i] = values[i] is { } v ? (leaves[i] = Leaf(v, shapes[i], nonContiguous)) : inputs[i];
            var y = Call(f, xs, "analytic pass");
            if (!y.Layout.Shape.AsSpan().SequenceEqual(outShape))
                throw new EngineException("GradCheck", $"the function's output shape changed ({Shape.Format(outShape)} → {Shape.Format(y.Layout.Shape)}) between evaluations");
            if (!y.RequiresGrad)
                throw new EngineException("GradCheck", "the function's output does not require grad: it is not connected to any input that requires grad");
            using var wt = Tensor.FromArray(w, outShape);
            using var wy = wt.To(y.DType);
            y.Backward(wy);
            var r = new double[]?[inputs.Length];
            for (int i = 0; i < inputs.Length; i++)
                if (leaves[i] is { } l) r[i] = l.Grad?.ToArray<double>() ?? new double[values[i]!.Length];
            return r;
        }
        finally
        {
            foreach (var l in leaves)
                if (l is not null) { l.Grad?.Dispose(); l.Dispose(); }
        }
    }

    // A float64 leaf requiring grad holding `v`: contiguous, or a transposed (rank ≥ 2) / strided, offset (rank 1)
    // view of a larger buffer.
    static Tensor Leaf(double[] v, Shape shape, bool nonContiguous)
    {
        Tensor t;
        if (!nonContiguous || shape.Rank == 0) t = Tensor.FromArray(v, shape);
        else
        {
            using var noGrad = GradMode.NoGrad();
            int r = shape.Rank;
            if (r >= 2)
            {
                // Stored with the last two dims swapped, then transposed back.
                var sw = shape.ToArray();
                (sw[r - 1], sw[r - 2]) = (sw[r - 2], sw[r - 1]);
                var buf = new double[v.Length];
                var st = Shape.ContiguousStrides(sw);
                var idx = new int[r];
                for (int f = 0; f < v.Length; f++)
                {
                    long rem = f, pos = 0;
                    for (int d = r - 1; d >= 0; d--) { idx[d] = (int)(rem % shape[d]); rem /= shape[d]; }
                    (idx[r - 1], idx[r - 2]) = (idx[r - 2], idx[r - 1]);
                    for (int d = 0; d < r; d++) pos += idx[d] * st[d];
                    buf[pos] = v[f];
                }
                using var b = Tensor.FromArray(buf, sw);
                t = b.Transpose(-1, -2);
            }
            else
            {
                // Every other element, starting at 1, of a buffer of 2n+1.
                var buf = new double[2 * v.Length + 1];
                for (int k = 0; k < v.Length; k++) buf[1 + 2 * k] = v[k];
                using var b = Tensor.FromArray(buf);
                t = b.Slice(0, 1, buf.Length, 2);
            }
        }
        t.DetachFromScopes();
        t.RequiresGrad = true;
        return t;
    }

    // Null when every element matches; else the worst element and the first few mismatches.
    static string? Compare(double[] analytic, double[] numeric, Shape shape, double atol, double rtol, ref double maxErr)
    {
        int bad = 0, worst = -1;
        double worstRatio = 0;
        var first = new StringBuilder();
        for (int j = 0; j < numeric.Length; j++)
        {
            double a = analytic[j], n = numeric[j], err = Math.Abs(a - n);
            if (!double.IsNaN(err)) maxErr = Math.Max(maxErr, err);
            double ratio = double.IsNaN(err) ? double.PositiveInfinity : err / (atol + rtol * Math.Abs(n));
            if (ratio <= 1) continue;
            if (bad++ < 3) first.Append($"; {Index(j, shape)}: analytic {a:R}, numeric {n:R}");
            if (ratio > worstRatio || worst < 0) { worstRatio = ratio; worst = j; }
        }
        if (bad == 0) return null;
        double wa = analytic[worst], wn = numeric[worst];
        return $"{bad} of {numeric.Length} elements differ; worst at {Index(worst, shape)}: analytic {wa:R}, numeric {wn:R}, " +
               $"|diff| {Math.Abs(wa - wn):G3} > atol {atol} + rtol {rtol}·|numeric|{first}";
    }

    static string Index(int flat, Shape shape)
    {
        var idx = new int[shape.Rank];
        for (int d = shape.Rank - 1; d >= 0; d--) { idx[d] = shape[d] == 0 ? 0 : flat % shape[d]; flat = shape[d] == 0 ? 0 : flat / shape[d]; }
        return "[" + string.Join(", ", idx) + "]";
    }
}

using Engine.Autograd;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Autograd;

/// <summary>
/// <see cref="Tensor.Linear"/> (F.linear with an optional fused activation) against act(x·Wᵀ + b) computed in
/// float64 here, on every layout the test helpers make, batched, 1-D, empty and without bias; and its float64
/// gradients by finite differences for every activation.
/// </summary>
public class LinearTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.BFloat16, DType.Float16];

    static double Act(Activation a, double z) => a switch
    {
        Activation.Relu => Math.Max(z, 0),
        Activation.Gelu => 0.5 * z * (1 + RefErf.Erf(z / Math.Sqrt(2))),
        Activation.GeluTanh => 0.5 * z * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (z + 0.044715 * z * z * z))),
        _ => z,
    };

    static (double[] y, double[] magnitude) Reference(double[] x, int rows, int inF, double[] w, int outF, double[]? b, Activation a)
    {
        var y = new double[rows * outF];
        var mag = new double[rows * outF];
        for (int r = 0; r < rows; r++)
            for (int o = 0; o < outF; o++)
            {
                double s = b?[o] ?? 0, m = Math.Abs(b?[o] ?? 0);
                for (int i = 0; i < inF; i++) { s += x[r * inF + i] * w[o * inF + i]; m += Math.Abs(x[r * inF + i] * w[o * inF + i]); }
                y[r * outF + o] = Act(a, s);
                mag[r * outF + o] = m;
            }
        return (y, mag);
    }

    static IEnumerable<TestCaseData> Shapes()
    {
        foreach (var a in new[] { Activation.None, Activation.Relu, Activation.Gelu, Activation.GeluTanh })
        {
            yield return new TestCaseData(new[] { 5, 7 }, 4, true, a);
            yield return new TestCaseData(new[] { 2, 3, 7 }, 6, true, a);
        }
        yield return new TestCaseData(new[] { 7 }, 3, true, Activation.None);
        yield return new TestCaseData(new[] { 5, 7 }, 4, false, Activation.Gelu);
        yield return new TestCaseData(new[] { 0, 7 }, 4, true, Activation.None);
        yield return new TestCaseData(new[] { 3, 1 }, 1, true, Activation.Relu);
        yield return new TestCaseData(new[] { 3, 0 }, 4, true, Activation.None);
    }

    [TestCaseSource(nameof(Shapes))]
    public void MatchesReference(int[] inputShape, int outF, bool withBias, Activation act)
    {
        var rng = new Random(inputShape.Sum() + outF + (int)act);
        int inF = inputShape[^1], rows = Ref.Numel(inputShape[..^1]);
        foreach (var dt in Floats)
            foreach (var kind in Layouts.All)
            {
                var x = Ref.Random(rng, Ref.Numel(inputShape), dt);
                var w = Ref.Random(rng, outF * inF, dt);
                var b = withBias ? Ref.Random(rng, outF, dt) : null;
                using var tx = Layouts.Make(x, inputShape, dt, kind);
                using var tw = Layouts.Make(w, [outF, inF], dt, kind == Layouts.Kind.Transposed ? Layouts.Kind.Strided : Layouts.Kind.Transposed);
                using var tb = b is null ? null : Layouts.Make(b, [outF], dt, Layouts.Kind.Contiguous);
                using var y = Tensor.Linear(tx, tw, tb, act);
                Assert.That(y.Shape, Is.EqualTo(inputShape[..^1].Append(outF).ToArray()), $"{dt} {kind}");
                Assert.That(y.DType, Is.EqualTo(dt));
                var (expected, magnitude) = Reference(x, rows, inF, w, outF, b, act);
                var got = y.ToArray<double>();
                var (rtol, atol) = Ref.Tol(dt);
                // Sums of inF products: the error is relative to the terms' magnitude, not to a cancelling sum.
                for (int i = 0; i < got.Length; i++)
                    Assert.That(Math.Abs(got[i] - expected[i]), Is.LessThanOrEqualTo(2 * rtol * Math.Max(1, Math.Sqrt(inF)) * (magnitude[i] + Math.Abs(expected[i])) + atol),
                        $"linear {act} {dt} {kind} [{i}]: got {got[i]}, expected {expected[i]}");
            }
    }

    [TestCase(Activation.None, true)]
    [TestCase(Activation.None, false)]
    [TestCase(Activation.Relu, true)]
    [TestCase(Activation.Gelu, true)]
    [TestCase(Activation.GeluTanh, false)]
    public void Float64Gradients_MatchFiniteDifferences(Activation act, bool withBias)
    {
        var rng = new Random(5 + (int)act);
        // Away from ReLU's kink: finite differences across it are meaningless.
        var xs = Ref.Random(rng, 2 * 3 * 4, DType.Float64);
        using var x = Tensor.FromArray(xs, [2, 3, 4], requiresGrad: true);
        using var w = Tensor.FromArray(Ref.Random(rng, 5 * 4, DType.Float64), [5, 4], requiresGrad: true);
        using var b = Tensor.FromArray(Ref.Random(rng, 5, DType.Float64), [5], requiresGrad: true);
        if (withBias) GradCheck.Check(t => Tensor.Linear(t[0], t[1], t[2], act), [x, w, b]);
        else GradCheck.Check(t => Tensor.Linear(t[0], t[1], null, act), [x, w]);
    }

    [Test]
    public void BadShapesAndDTypes_AreRefusedNamingThem()
    {
        using var x = Tensor.Zeros([2, 3]);
        using var w = Tensor.Zeros([4, 5]);
        var e = Assert.Throws<ShapeException>(() => Tensor.Linear(x, w).Dispose())!;
        Assert.That(e.Message, Does.Contain("Linear").And.Contain("[2, 3]").And.Contain("[4, 5]"));
        using var w2 = Tensor.Zeros([4, 3]);
        using var b = Tensor.Zeros([5]);
        e = Assert.Throws<ShapeException>(() => Tensor.Linear(x, w2, b).Dispose())!;
        Assert.That(e.Message, Does.Contain("Linear").And.Contain("[5]"));
        using var xi = Tensor.Zeros([2, 3], DType.Int64);
        using var wi = Tensor.Zeros([4, 3], DType.Int32);
        var d = Assert.Throws<DTypeException>(() => Tensor.Linear(xi, wi).Dispose())!;
        Assert.That(d.Message, Does.Contain("int64").And.Contain("int32").And.Contain("Linear"));
    }

    // Outside autocast, mixed dtypes promote as the unfused x.MatMul(w.T).Add(b) (torch.promote_types): the result
    // has the composition's dtype and values, and each input's gradient comes back in its own dtype.
    [TestCase(DType.Float64, DType.Float32, DType.Float32)]
    [TestCase(DType.Float32, DType.Float64, DType.Float32)]
    [TestCase(DType.Float32, DType.Float32, DType.Float64)]
    [TestCase(DType.BFloat16, DType.Float32, DType.BFloat16)]
    [TestCase(DType.Float16, DType.BFloat16, DType.Float16)]
    [TestCase(DType.Int64, DType.Float32, DType.Float32)]
    public void MixedDTypes_PromoteAsTheUnfusedComposition(DType xt, DType wt, DType bt)
    {
        using var scope = Tensor.NewScope();
        var rng = new Random(21);
        bool xFloat = xt.IsFloatingPoint();
        var x = Tensor.FromArray(xFloat ? Ref.Random(rng, 2 * 3 * 4, DType.BFloat16) : Ref.Random(rng, 24, DType.Int64, -3, 3), [2, 3, 4]).To(xt);
        var w = Tensor.FromArray(Ref.Random(rng, 5 * 4, DType.BFloat16), [5, 4]).To(wt);
        var b = Tensor.FromArray(Ref.Random(rng, 5, DType.BFloat16), [5]).To(bt);
        x.RequiresGrad = xFloat;
        w.RequiresGrad = true;
        b.RequiresGrad = true;
        var want = x.MatMul(w.T).Add(b);
        var y = Tensor.Linear(x, w, b, Activation.Relu);
        Assert.That(y.DType, Is.EqualTo(want.DType));
        var relu = want.Relu();
        Ref.AssertClose(y.ToArray<double>(), relu.ToArray<double>(), y.DType, "values");
        // A float64 reference of the promoted computation.
        var (r, mag) = Reference(x.ToArray<double>(), 6, 4, w.ToArray<double>(), 5, b.ToArray<double>(), Activation.Relu);
        var (rtol, _) = Ref.Tol(y.DType);
        var got = y.ToArray<double>();
        for (int i = 0; i < got.Length; i++) Assert.That(got[i], Is.EqualTo(r[i]).Within(rtol * (mag[i] + 1)), $"y[{i}]");
        y.Sum().Backward();
        if (xFloat) Assert.That(x.Grad!.DType, Is.EqualTo(xt));
        Assert.That(w.Grad!.DType, Is.EqualTo(wt));
        Assert.That(b.Grad!.DType, Is.EqualTo(bt));
        var wGot = w.Grad.ToArray<double>();
        var wWant = new double[20];
        var xv = x.ToArray<double>();
        for (int row = 0; row < 6; row++)
            for (int o = 0; o < 5; o++)
                if (r[row * 5 + o] > 0)
                    for (int i = 0; i < 4; i++) wWant[o * 4 + i] += xv[row * 4 + i];
        double wtol = Math.Max(rtol, Ref.Tol(wt).rtol); // the gradient is rounded to the weight's own dtype
        for (int i = 0; i < 20; i++) Assert.That(wGot[i], Is.EqualTo(wWant[i]).Within(wtol * (Math.Abs(wWant[i]) + 6)), $"dW[{i}]");
    }
}

using Engine.Autograd;
using Engine.Autograd.Nn;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Autograd;

/// <summary>
/// The PyTorch-parity pieces of the op definitions: NllLoss on every input layout, Amax/Amin over several dims, Var
/// with any correction, Embedding's padding row, and backward over several roots — each against a float64 reference
/// written here, and through the float64 gradient check.
/// </summary>
public class ParityOpsTests
{
    static Tensor Leaf(double[] v, params int[] shape) => Tensor.FromArray(v, shape, requiresGrad: true);

    // −logp[n, t, rest] per sample, as nll_loss; ignored samples give 0 and leave the mean.
    static double[] RefNll(double[] logp, int[] shape, long[] target, long ignore, Reduction r)
    {
        int c = shape.Length == 1 ? shape[0] : shape[1];
        int n = shape.Length == 1 ? 1 : shape[0];
        int inner = 1;
        for (int i = 2; i < shape.Length; i++) inner *= shape[i];
        var per = new double[target.Length];
        int kept = 0;
        for (int s = 0; s < n; s++)
            for (int k = 0; k < inner; k++)
            {
                long t = target[s * inner + k];
                if (t == ignore) continue;
                kept++;
                per[s * inner + k] = -logp[(s * c + t) * inner + k];
            }
        return r switch
        {
            Reduction.None => per,
            Reduction.Sum => [per.Sum()],
            _ => [per.Sum() / kept],
        };
    }

    [Test]
    public void NllLossMatchesTheReferenceOnEveryLayout()
    {
        var rng = new Random(11);
        foreach (var shape in new[] { new[] { 5 }, new[] { 4, 5 }, new[] { 3, 4, 2 }, new[] { 2, 3, 2, 2 }, new[] { 1, 3 } })
        {
            int c = shape.Length == 1 ? shape[0] : shape[1];
            int[] tshape = shape.Length == 1 ? [] : [shape[0], .. shape[2..]];
            var t = new long[Ref.Numel(tshape)];
            for (int i = 0; i < t.Length; i++) t[i] = rng.Next(c);
            if (t.Length > 1) t[1] = -100; // one ignored sample
            var logp = Ref.Random(rng, Ref.Numel(shape), DType.Float64, -3, 0);
            using var target = Tensor.FromArray(t, tshape);
            foreach (var r in new[] { Reduction.None, Reduction.Sum, Reduction.Mean })
            {
                using var x = Leaf(logp, shape);
                using var y = x.NllLoss(target, r);
                Assert.That(y.Shape, Is.EqualTo(r == Reduction.None ? tshape : Array.Empty<int>()));
                Ref.AssertClose(y.ToArray<double>(), RefNll(logp, shape, t, -100, r), DType.Float64, $"NllLoss {Shape.Format(shape)} {r}");
                GradCheck.Check(v => v[0].NllLoss(target, r), [x]);
                using var viaLosses = Losses.Nll(x, target, r);
                Assert.That(viaLosses.ToArray<double>(), Is.EqualTo(y.ToArray<double>()));
            }
        }
        // Equals log_softmax + nll (the definition of cross entropy).
        using var logits = Tensor.FromArray(Ref.Random(rng, 12, DType.Float64), [3, 4]);
        using var tt = Tensor.FromArray(new long[] { 0, 3, 1 }, [3]);
        using var ls = logits.LogSoftmax(1);
        using var nll = ls.NllLoss(tt);
        using var ce = logits.CrossEntropy(tt);
        Assert.That(nll.Item(), Is.EqualTo(ce.Item()).Within(1e-12));

        using var bad = Tensor.FromArray(new long[] { 0, 4, 1 }, [3]);
        var e = Assert.Throws<ShapeException>(() => ls.NllLoss(bad))!;
        Assert.That(e.Message, Does.Contain("NllLoss"));
        using var wrong = Tensor.FromArray(new long[] { 0, 1 }, [2]);
        Assert.That(() => ls.NllLoss(wrong), Throws.TypeOf<ShapeException>().With.Message.Contains("NllLoss"));
    }

    [Test]
    public void AmaxAndAminReduceSeveralDimsAndShareTiedGradients()
    {
        var rng = new Random(12);
        int[] shape = [2, 3, 4];
        var v = Ref.Random(rng, 24, DType.Float64);
        foreach (var dims in new[] { new[] { 0, 2 }, new[] { 1 }, new[] { -1, 0 }, Array.Empty<int>() })
            foreach (bool keep in new[] { false, true })
                foreach (bool max in new[] { true, false })
                {
                    using var x = Leaf(v, shape);
                    using var y = max ? x.Amax(dims, keep) : x.Amin(dims, keep);
                    var nd = dims.Length == 0 ? new[] { 0, 1, 2 } : dims.Select(d => d < 0 ? d + 3 : d).ToArray();
                    var outShape = Enumerable.Range(0, 3).Where(i => keep || !nd.Contains(i)).Select(i => nd.Contains(i) ? 1 : shape[i]).ToArray();
                    var expected = new double[Ref.Numel(outShape)];
                    Array.Fill(expected, max ? double.NegativeInfinity : double.PositiveInfinity);
                    for (int f = 0; f < 24; f++)
                    {
                        var idx = Ref.Unravel(f, shape);
                        var o = Enumerable.Range(0, 3).Where(i => keep || !nd.Contains(i)).Select(i => nd.Contains(i) ? 0 : idx[i]).ToArray();
                        int k = Ref.Ravel(o, outShape);
                        expected[k] = max ? Math.Max(expected[k], v[f]) : Math.Min(expected[k], v[f]);
                    }
                    Assert.That(y.Shape, Is.EqualTo(outShape));
                    Assert.That(y.ToArray<double>(), Is.EqualTo(expected), $"{(max ? "Amax" : "Amin")} [{string.Join(",", dims)}] keep={keep}");
                    GradCheck.Check(t => max ? t[0].Amax(dims, keep) : t[0].Amin(dims, keep), [x]);
                }
        // Ties share the gradient evenly, as torch.amax.
        using var tied = Leaf([1.0, 3.0, 3.0, 2.0, 2.0, 0.0], 2, 3);
        using (var m = tied.Amax([1])) m.Backward(Tensor.Ones([2], DType.Float64));
        Assert.That(tied.Grad!.ToArray<double>(), Is.EqualTo(new[] { 0, 0.5, 0.5, 0.5, 0.5, 0 }));
        tied.Grad.Dispose();
        // Max()/Min() with keepDim keep every dim at size 1.
        using var mk = tied.Max(keepDim: true);
        Assert.That(mk.Shape, Is.EqualTo(new[] { 1, 1 }));
        Assert.That(mk.Item(), Is.EqualTo(3.0));
        using var mn = tied.Min(keepDim: true);
        Assert.That(mn.Shape, Is.EqualTo(new[] { 1, 1 }));
        using var empty = Tensor.Zeros([2, 0]);
        Assert.That(() => empty.Amax([1]), Throws.TypeOf<ShapeException>().With.Message.Contains("Amax"));
    }

    [Test]
    public void VarTakesAnyCorrection()
    {
        var rng = new Random(13);
        var v = Ref.Random(rng, 12, DType.Float64);
        foreach (var correction in new[] { 0.0, 1.0, 2.0, 0.5 })
            foreach (var dims in new[] { new[] { 1 }, new[] { 0, 1 } })
            {
                using var x = Leaf(v, 3, 4);
                using var y = x.Var(dims, correction);
                int n = dims.Length == 2 ? 12 : 4;
                var expected = dims.Length == 2
                    ? new[] { Variance(v, correction) }
                    : Enumerable.Range(0, 3).Select(r => Variance(v[(r * 4)..(r * 4 + 4)], correction)).ToArray();
                Ref.AssertClose(y.ToArray<double>(), expected, DType.Float64, $"Var correction {correction}");
                GradCheck.Check(t => t[0].Var(dims, correction), [x]);
                using var s = x.Std(dims, correction);
                Ref.AssertClose(s.ToArray<double>(), expected.Select(Math.Sqrt).ToArray(), DType.Float64, $"Std correction {correction}");
                Assert.That(n, Is.GreaterThan(correction));
            }
        using var a = Tensor.FromArray(v, [3, 4]);
        using var unbiased = a.Var(1, unbiased: true);
        using var c1 = a.Var(1, correction: 1);
        Assert.That(unbiased.ToArray<double>(), Is.EqualTo(c1.ToArray<double>()));
        // n ≤ correction gives ∞ (or NaN for equal values), as PyTorch.
        using var two = Tensor.FromArray(new[] { 1.0, 2.0 });
        using var inf = two.Var(correction: 2);
        Assert.That(double.IsPositiveInfinity(inf.Item()), Is.True);
        Assert.That(() => two.Var(correction: double.NaN), Throws.InstanceOf<EngineException>().With.Message.Contains("Var"));

        static double Variance(double[] x, double c)
        {
            double m = x.Average();
            return x.Sum(e => (e - m) * (e - m)) / (x.Length - c);
        }
    }

    [Test]
    public void EmbeddingPaddingRowGetsNoGradient()
    {
        var rng = new Random(14);
        var w = Ref.Random(rng, 12, DType.Float64);
        using var weight = Leaf(w, 4, 3);
        using var idx = Tensor.FromArray(new long[] { 1, 3, 1, 0, 3 }, [5]);
        foreach (int? pad in new int?[] { null, 1, -1 })
        {
            using var y = Tensor.Embedding(idx, weight, pad);
            Assert.That(y.ToArray<double>(), Is.EqualTo(new long[] { 1, 3, 1, 0, 3 }.SelectMany(r => w[(int)(r * 3)..(int)(r * 3 + 3)]).ToArray()),
                "the forward returns the padding row as it is, as PyTorch");
            var g = Ref.Random(rng, 15, DType.Float64);
            using var gt = Tensor.FromArray(g, [5, 3]);
            y.Backward(gt);
            int? row = pad is int p ? (p < 0 ? p + 4 : p) : null;
            var expected = new double[12];
            long[] rows = [1, 3, 1, 0, 3];
            for (int i = 0; i < 5; i++)
                if (rows[i] != row)
                    for (int j = 0; j < 3; j++) expected[rows[i] * 3 + j] += g[i * 3 + j];
            Ref.AssertClose(weight.Grad!.ToArray<double>(), expected, DType.Float64, $"Embedding padding {pad}");
            weight.Grad.Dispose();
            weight.Grad = null;
        }
        Assert.That(() => Tensor.Embedding(idx, weight, 4), Throws.TypeOf<ShapeException>().With.Message.Contains("paddingIdx"));
        // The module starts the padding row at zero.
        var m = new Embedding(5, 2, paddingIdx: 2);
        Assert.That(m.Weight.Select(0, 2).ToArray<float>(), Is.EqualTo(new[] { 0f, 0f }));
        Assert.That(m.PaddingIdx, Is.EqualTo(2));
    }

    [Test]
    public void BackwardOverSeveralRootsSumsTheirGradients()
    {
        using var x = Leaf([1.0, 2.0, 3.0], 3);
        using var a = x * x;            // d/dx = 2x
        using var b = (x * 3.0).Sum();  // d/dx = 3
        using var ga = Tensor.FromArray(new[] { 1.0, 0.5, 2.0 });
        Gradients.Backward([a, b], [ga, null]);
        Assert.That(x.Grad!.ToArray<double>(), Is.EqualTo(new[] { 2 * 1.0 * 1 + 3, 2 * 2.0 * 0.5 + 3, 2 * 3.0 * 2 + 3 }));
        x.Grad.Dispose();
        x.Grad = null;
        // A shared subgraph runs once: both roots through one intermediate.
        using var h = x.Exp();
        using var r1 = h.Sum();
        using var r2 = (h * 2.0).Sum();
        Gradients.Backward([r1, r2]);
        Ref.AssertClose(x.Grad!.ToArray<double>(), new[] { 1.0, 2, 3 }.Select(v => 3 * Math.Exp(v)).ToArray(), DType.Float64, "shared");
        x.Grad.Dispose();
        Assert.That(() => Gradients.Backward([a]), Throws.InstanceOf<EngineException>().With.Message.Contains("scalar"));
        Assert.That(() => Gradients.Backward([r1], [null, null]), Throws.InstanceOf<EngineException>());
    }

    [Test]
    public void NormsAcceptAHalfInputWithFloat32Parameters()
    {
        var rng = new Random(15);
        foreach (var dt in new[] { DType.BFloat16, DType.Float16 })
            foreach (bool rms in new[] { false, true })
            {
                using var x32 = Tensor.FromArray(Ref.Random(rng, 12, DType.Float32).Select(v => (float)Ref.RoundTo(v, dt)).ToArray(), [3, 4]);
                using var x = x32.To(dt);
                using var w = Tensor.FromArray(new[] { 1f, 0.5f, 2f, -1f }, [4], requiresGrad: true);
                using var b = Tensor.FromArray(new[] { 0.25f, 0f, -0.5f, 1f }, [4], requiresGrad: true);
                using var y = rms ? x.RmsNorm([4], w) : x.LayerNorm([4], w, b);
                Assert.That(y.DType, Is.EqualTo(dt), "the output has the input's dtype");
                using var wh = w.Detach().To(dt);
                using var bh = b.Detach().To(dt);
                using var same = rms ? x.RmsNorm([4], wh) : x.LayerNorm([4], wh, bh);
                Assert.That(y.ToArray<double>(), Is.EqualTo(same.ToArray<double>()), "as with the parameters in the input's dtype");
                using (var s = y.To(DType.Float32).Sum()) s.Backward();
                Assert.That(w.Grad!.DType, Is.EqualTo(DType.Float32), "the weight's gradient comes back in float32");
                if (!rms) Assert.That(b.Grad!.ToArray<float>(), Is.EqualTo(new[] { 3f, 3f, 3f, 3f }), "dBias = Σ dy");
                w.Grad.Dispose(); b.Grad?.Dispose();
            }
        using var xd = Tensor.Zeros([2, 4], DType.Float64);
        using var wf = Tensor.Ones([4]);
        Assert.That(() => xd.LayerNorm([4], wf), Throws.TypeOf<DTypeException>().With.Message.Contains("LayerNorm"));
    }
}

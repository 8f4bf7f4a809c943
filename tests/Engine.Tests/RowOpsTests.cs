using Engine.Autograd;
using Engine.Backends.Cpu;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// The fused row ops (softmax, log-softmax, layer norm, RMS norm, cross entropy) and MSE loss: forward and backward
/// against plain float64 references written below, on every float dtype and several layouts, plus error cases and
/// float64 finite-difference gradient checks.
/// </summary>
[TestFixture]
public class RowOpsTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];

    // ---------------- plain float64 references ----------------

    static int Prod(int[] s, int from, int to)
    {
        int p = 1;
        for (int i = from; i < to; i++) p *= s[i];
        return p;
    }

    static double[] RefSoftmax(double[] x, int[] shape, int dim, bool log)
    {
        int outer = Prod(shape, 0, dim), n = shape[dim], inner = Prod(shape, dim + 1, shape.Length);
        var y = new double[x.Length];
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++)
            {
                double max = double.NegativeInfinity;
                for (int j = 0; j < n; j++) max = Math.Max(max, x[(o * n + j) * inner + i]);
                double sum = 0;
                for (int j = 0; j < n; j++) sum += Math.Exp(x[(o * n + j) * inner + i] - max);
                for (int j = 0; j < n; j++)
                {
                    int k = (o * n + j) * inner + i;
                    y[k] = log ? x[k] - max - Math.Log(sum) : Math.Exp(x[k] - max) / sum;
                }
            }
        return y;
    }

    // softmax: dx = y·(g − Σ g·y); log-softmax: dx = g − eʸ·Σ g, along dim.
    static double[] RefSoftmaxBackward(double[] y, double[] g, int[] shape, int dim, bool log)
    {
        int outer = Prod(shape, 0, dim), n = shape[dim], inner = Prod(shape, dim + 1, shape.Length);
        var dx = new double[y.Length];
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++)
            {
                double s = 0;
                for (int j = 0; j < n; j++) { int k = (o * n + j) * inner + i; s += log ? g[k] : g[k] * y[k]; }
                for (int j = 0; j < n; j++)
                {
                    int k = (o * n + j) * inner + i;
                    dx[k] = log ? g[k] - Math.Exp(y[k]) * s : y[k] * (g[k] - s);
                }
            }
        return dx;
    }

    static (double[] Mean, double[] Rstd) RefStats(double[] x, int rows, int cols, double eps, bool rms)
    {
        var mean = new double[rows];
        var rstd = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double m = 0;
            if (!rms)
            {
                for (int c = 0; c < cols; c++) m += x[r * cols + c];
                m /= cols;
            }
            double v = 0;
            for (int c = 0; c < cols; c++) v += (x[r * cols + c] - m) * (x[r * cols + c] - m);
            v /= cols;
            mean[r] = m;
            rstd[r] = 1 / Math.Sqrt(v + eps);
        }
        return (mean, rstd);
    }

    static double[] RefNorm(double[] x, int rows, int cols, double[]? w, double[]? b, double eps, bool rms)
    {
        var (mean, rstd) = RefStats(x, rows, cols, eps, rms);
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                double v = (x[r * cols + c] - mean[r]) * rstd[r];
                if (w is not null) v *= w[c];
                if (b is not null) v += b[c];
                y[r * cols + c] = v;
            }
        return y;
    }

    // x̂ = (x − mean)·rstd, g = dy·w: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (no mean(g) for RMS), dw = Σ dy·x̂, db = Σ dy.
    static (double[] Dx, double[] Dw, double[] Db) RefNormBackward(double[] x, double[] dy, int rows, int cols, double[]? w, double eps, bool rms)
    {
        var (mean, rstd) = RefStats(x, rows, cols, eps, rms);
        var dx = new double[x.Length];
        var dw = new double[cols];
        var db = new double[cols];
        for (int r = 0; r < rows; r++)
        {
            double s1 = 0, s2 = 0;
            for (int c = 0; c < cols; c++)
            {
                int k = r * cols + c;
                double h = (x[k] - mean[r]) * rstd[r], g = dy[k] * (w?[c] ?? 1);
                s1 += g; s2 += g * h;
                dw[c] += dy[k] * h;
                db[c] += dy[k];
            }
            for (int c = 0; c < cols; c++)
            {
                int k = r * cols + c;
                double h = (x[k] - mean[r]) * rstd[r], g = dy[k] * (w?[c] ?? 1);
                dx[k] = rstd[r] * (g - (rms ? 0 : s1 / cols) - h * s2 / cols);
            }
        }
        return (dx, dw, db);
    }

    // Logits laid out as [n, classes, inner] (inner = 1 for [N, C], n = inner = 1 for [C]); sample s = n·inner + i.
    static double[] RefCrossEntropy(double[] x, long[] t, int n, int classes, int inner, long ignore, double eps)
    {
        var loss = new double[n * inner];
        for (int a = 0; a < n; a++)
            for (int i = 0; i < inner; i++)
            {
                long target = t[a * inner + i];
                if (target == ignore) continue;
                double max = double.NegativeInfinity;
                for (int c = 0; c < classes; c++) max = Math.Max(max, x[(a * classes + c) * inner + i]);
                double sum = 0;
                for (int c = 0; c < classes; c++) sum += Math.Exp(x[(a * classes + c) * inner + i] - max);
                double l = 0;
                for (int c = 0; c < classes; c++)
                {
                    double q = (c == target ? 1 - eps : 0) + eps / classes;
                    l -= q * (x[(a * classes + c) * inner + i] - max - Math.Log(sum));
                }
                loss[a * inner + i] = l;
            }
        return loss;
    }

    static double[] RefCrossEntropyGrad(double[] x, long[] t, double[] dloss, int n, int classes, int inner, long ignore, double eps)
    {
        var dx = new double[x.Length];
        for (int a = 0; a < n; a++)
            for (int i = 0; i < inner; i++)
            {
                long target = t[a * inner + i];
                if (target == ignore) continue;
                double max = double.NegativeInfinity;
                for (int c = 0; c < classes; c++) max = Math.Max(max, x[(a * classes + c) * inner + i]);
                double sum = 0;
                for (int c = 0; c < classes; c++) sum += Math.Exp(x[(a * classes + c) * inner + i] - max);
                for (int c = 0; c < classes; c++)
                {
                    int k = (a * classes + c) * inner + i;
                    double q = (c == target ? 1 - eps : 0) + eps / classes;
                    dx[k] = (Math.Exp(x[k] - max) / sum - q) * dloss[a * inner + i];
                }
            }
        return dx;
    }

    static double Sum(double[] v) { double s = 0; foreach (var x in v) s += x; return s; }

    static Tensor Leaf(double[] v, int[] shape, DType dt, Layouts.Kind kind = Layouts.Kind.Contiguous)
    {
        var t = Layouts.Make(v, shape, dt, kind);
        t.RequiresGrad = true;
        return t;
    }

    // ---------------- softmax ----------------

    [Test]
    public void SoftmaxMatchesReferenceOverEveryDimLayoutAndDType()
    {
        var rng = new Random(11);
        int[] shape = [3, 4, 5];
        foreach (var dt in Floats)
            foreach (var kind in Layouts.All)
                foreach (var dim in new[] { 0, 1, 2, -1 })
                    foreach (var log in new[] { false, true })
                    {
                        var x = Ref.Random(rng, 60, dt, -4, 4);
                        using var t = Layouts.Make(x, shape, dt, kind);
                        using var y = log ? t.LogSoftmax(dim) : t.Softmax(dim);
                        Assert.That(y.Shape, Is.EqualTo(shape));
                        Assert.That(y.DType, Is.EqualTo(dt));
                        var exp = RefSoftmax(x, shape, dim < 0 ? dim + 3 : dim, log);
                        Ref.AssertClose(y.ToArray<double>(), exp, dt, $"{(log ? "log" : "")}softmax {dt} {kind} dim {dim}");
                    }
    }

    [Test]
    public void SoftmaxHandlesSizeOneZeroAndScalarShapes()
    {
        var rng = new Random(12);
        foreach (var dt in Floats)
        {
            foreach (var (shape, dim) in new[] { (new[] { 4, 1 }, 1), (new[] { 1, 5 }, 1), (new[] { 1, 5 }, 0), (new[] { 1 }, 0), (new[] { 1, 1 }, 0) })
                foreach (var log in new[] { false, true })
                {
                    var x = Ref.Random(rng, Ref.Numel(shape), dt);
                    using var t = Layouts.Make(x, shape, dt, Layouts.Kind.Contiguous);
                    using var y = log ? t.LogSoftmax(dim) : t.Softmax(dim);
                    Ref.AssertClose(y.ToArray<double>(), RefSoftmax(x, shape, dim, log), dt, $"{dt} {Shape.Format(shape)} dim {dim}");
                }
            using var s = Tensor.Scalar(3.5, dt);
            using (var y = s.Softmax(0)) Assert.That(y.Item(), Is.EqualTo(1.0));
            using (var y = s.LogSoftmax(-1)) { Assert.That(y.Rank, Is.Zero); Assert.That(y.Item(), Is.EqualTo(0.0)); }
            using var e = Tensor.Zeros([0, 3], dt);
            using (var y = e.Softmax(1)) Assert.That(y.Shape, Is.EqualTo(new[] { 0, 3 }));
            using (var y = e.LogSoftmax(0)) Assert.That(y.Shape, Is.EqualTo(new[] { 0, 3 }));
        }
    }

    [Test]
    public void SoftmaxAndLogSoftmaxAreStableForLargeValues()
    {
        double[] x = [10000, 10001, 10002, -10000, -20000, -20001, -20003, 20000];
        int[] shape = [2, 4];
        foreach (var dt in new[] { DType.Float64, DType.Float32 })
        {
            using var t = Tensor.FromArray(x, shape).To(dt);
            using var ls = t.LogSoftmax(1);
            using var sm = t.Softmax(1);
            var lv = ls.ToArray<double>();
            Assert.That(lv.All(double.IsFinite), Is.True, $"{dt}: log-softmax must stay finite");
            Ref.AssertClose(lv, RefSoftmax(x, shape, 1, true), dt, $"log-softmax {dt}");
            Ref.AssertClose(sm.ToArray<double>(), RefSoftmax(x, shape, 1, false), dt, $"softmax {dt}");
        }
        // Half types: the largest representable magnitudes.
        double[] h = [60000, 60001, -60000, 0];
        foreach (var dt in new[] { DType.Float16, DType.BFloat16 })
        {
            var hv = h.Select(v => Ref.RoundTo(v, dt)).ToArray();
            using var t = Tensor.FromArray(hv, [1, 4]).To(dt);
            using var sm = t.Softmax(1);
            Ref.AssertClose(sm.ToArray<double>(), RefSoftmax(hv, [1, 4], 1, false), dt, $"softmax {dt}");
        }
    }

    [Test]
    public void SoftmaxRejectsIntegerInputsAndBadDims()
    {
        using var i = Tensor.FromArray(new long[] { 1, 2, 3 });
        var ex = Assert.Throws<DTypeException>(() => { using var _ = i.Softmax(0); });
        Assert.That(ex!.Message, Does.Contain("Softmax"));
        Assert.Throws<DTypeException>(() => { using var _ = i.LogSoftmax(0); });
        using var f = Tensor.Zeros([2, 3]);
        var sx = Assert.Throws<ShapeException>(() => { using var _ = f.Softmax(2); });
        Assert.That(sx!.Message, Does.Contain("Softmax"));
    }

    [Test]
    public void SoftmaxBackwardKernelMatchesReference()
    {
        var rng = new Random(13);
        int[] shape = [3, 4, 5];
        foreach (var dt in Floats)
            foreach (var dim in new[] { 0, 1, 2 })
                foreach (var log in new[] { false, true })
                {
                    var x = Ref.Random(rng, 60, dt);
                    var g = Ref.Random(rng, 60, dt);
                    using var xt = Layouts.Make(x, shape, dt, Layouts.Kind.Transposed);
                    using var y = log ? xt.LogSoftmax(dim) : xt.Softmax(dim);
                    using var gt = Layouts.Make(g, shape, dt, Layouts.Kind.Strided);
                    using var dx = Tensor.SoftmaxGradient(y, gt, dim, log);
                    var exp = RefSoftmaxBackward(y.ToArray<double>(), g, shape, dim, log);
                    Ref.AssertClose(dx.ToArray<double>(), exp, dt, $"{(log ? "log" : "")}softmax backward {dt} dim {dim}", scale: 2);
                }
    }

    [Test]
    public void SoftmaxGradientsThroughAutogradMatchReference()
    {
        var rng = new Random(14);
        int[] shape = [4, 6];
        foreach (var dt in Floats)
            foreach (var dim in new[] { 0, 1 })
                foreach (var log in new[] { false, true })
                {
                    var x = Ref.Random(rng, 24, dt);
                    var g = Ref.Random(rng, 24, dt);
                    using var xt = Leaf(x, shape, dt, Layouts.Kind.Transposed);
                    using var y = log ? xt.LogSoftmax(dim) : xt.Softmax(dim);
                    Assert.That(y.GradFn?.Op, Is.EqualTo(log ? "LogSoftmax" : "Softmax"));
                    using var gt = Layouts.Make(g, shape, dt, Layouts.Kind.Contiguous);
                    y.Backward(gt);
                    var yr = RefSoftmax(x, shape, dim, log);
                    var exp = RefSoftmaxBackward(yr, g, shape, dim, log);
                    Ref.AssertClose(xt.Grad!.ToArray<double>(), exp, dt, $"grad {dt} dim {dim} log {log}", scale: 4);
                    xt.Grad.Dispose();
                }
    }

    // ---------------- layer norm / RMS norm ----------------

    public sealed record NormCase(bool Rms, int[] NormalizedShape, bool Weight, bool Bias)
    {
        public override string ToString() => $"{(Rms ? "RmsNorm" : "LayerNorm")} {Shape.Format(NormalizedShape)}{(Weight ? " w" : "")}{(Bias ? " b" : "")}";
    }

    static readonly NormCase[] NormCases =
    [
        new(false, [5], false, false), new(false, [5], true, false), new(false, [5], true, true), new(false, [4, 5], true, true),
        new(false, [4, 5], false, true), new(true, [5], false, false), new(true, [5], true, false), new(true, [4, 5], true, false),
    ];

    static Tensor RunNorm(NormCase c, Tensor x, Tensor? w, Tensor? b, double eps) =>
        c.Rms ? x.RmsNorm(c.NormalizedShape, w, eps) : x.LayerNorm(c.NormalizedShape, w, b, eps);

    [Test]
    public void NormsMatchReference([ValueSource(nameof(NormCases))] NormCase c)
    {
        var rng = new Random(21);
        int[] shape = [3, 4, 5];
        int cols = Ref.Numel(c.NormalizedShape), rows = 60 / cols;
        foreach (var dt in Floats)
            foreach (var kind in Layouts.All)
            {
                var x = Ref.Random(rng, 60, dt, -3, 5);
                var w = c.Weight ? Ref.Random(rng, cols, dt) : null;
                var b = c.Bias ? Ref.Random(rng, cols, dt) : null;
                using var xt = Layouts.Make(x, shape, dt, kind);
                using var wt = w is null ? null : Layouts.Make(w, c.NormalizedShape, dt, Layouts.Kind.Strided);
                using var bt = b is null ? null : Layouts.Make(b, c.NormalizedShape, dt, Layouts.Kind.Offset);
                using var y = RunNorm(c, xt, wt, bt, 1e-5);
                Assert.That(y.Shape, Is.EqualTo(shape));
                Assert.That(y.DType, Is.EqualTo(dt));
                Ref.AssertClose(y.ToArray<double>(), RefNorm(x, rows, cols, w, b, 1e-5, c.Rms), dt, $"{c} {dt} {kind}", scale: 2);
            }
    }

    [Test]
    public void RmsNormDefaultEpsIsMachineEpsilon()
    {
        var rng = new Random(22);
        foreach (var (dt, eps) in new[] { (DType.Float64, Math.Pow(2, -52)), (DType.Float32, 1.1920928955078125e-07), (DType.Float16, 0.0009765625), (DType.BFloat16, 0.0078125) })
        {
            Assert.That(Tensor.MachineEpsilon(dt), Is.EqualTo(eps));
            // Small values, so eps matters.
            var x = Ref.Random(rng, 12, dt, -0.05, 0.05);
            using var t = Tensor.FromArray(x, [3, 4]).To(dt);
            using var y = t.RmsNorm([4]);
            Ref.AssertClose(y.ToArray<double>(), RefNorm(x, 3, 4, null, null, eps, rms: true), dt, $"rms default eps {dt}", scale: 2);
        }
    }

    [Test]
    public void NormsHandleSizeOneRowsAndColumns()
    {
        var rng = new Random(23);
        foreach (var dt in Floats)
            foreach (var (shape, ns) in new[] { (new[] { 4, 1 }, new[] { 1 }), (new[] { 1, 6 }, new[] { 6 }), (new[] { 6 }, new[] { 6 }), (new[] { 2, 1, 1 }, new[] { 1, 1 }) })
                foreach (var rms in new[] { false, true })
                {
                    int cols = Ref.Numel(ns), rows = Ref.Numel(shape) / cols;
                    var x = Ref.Random(rng, Ref.Numel(shape), dt);
                    var w = Ref.Random(rng, cols, dt);
                    var b = Ref.Random(rng, cols, dt);
                    using var xt = Tensor.FromArray(x, shape).To(dt);
                    using var wt = Tensor.FromArray(w, ns).To(dt);
                    using var bt = Tensor.FromArray(b, ns).To(dt);
                    using var y = rms ? xt.RmsNorm(ns, wt, 1e-5) : xt.LayerNorm(ns, wt, bt);
                    Ref.AssertClose(y.ToArray<double>(), RefNorm(x, rows, cols, w, rms ? null : b, 1e-5, rms), dt, $"{dt} {Shape.Format(shape)} rms {rms}", scale: 2);
                }
    }

    [Test]
    public void NormsRejectBadShapesAndDTypes()
    {
        using var x = Tensor.Zeros([2, 3, 4]);
        var ex = Assert.Throws<ShapeException>(() => { using var _ = x.LayerNorm([3]); });
        Assert.That(ex!.Message, Does.Contain("LayerNorm").And.Contain("[3]").And.Contain("[2, 3, 4]"));
        Assert.Throws<ShapeException>(() => { using var _ = x.LayerNorm([2, 3, 4, 5]); });
        Assert.Throws<ShapeException>(() => { using var _ = x.LayerNorm([]); });
        var rx = Assert.Throws<ShapeException>(() => { using var _ = x.RmsNorm([3, 5]); });
        Assert.That(rx!.Message, Does.Contain("RmsNorm"));
        using var w5 = Tensor.Ones([5]);
        var wx = Assert.Throws<ShapeException>(() => { using var _ = x.LayerNorm([4], w5); });
        Assert.That(wx!.Message, Does.Contain("weight"));
        using var b5 = Tensor.Ones([5]);
        using var w4 = Tensor.Ones([4]);
        Assert.Throws<ShapeException>(() => { using var _ = x.LayerNorm([4], w4, b5); });
        using var w4d = Tensor.Ones([4], DType.Float64);
        Assert.Throws<DTypeException>(() => { using var _ = x.LayerNorm([4], w4d); });
        using var xi = Tensor.Zeros([2, 4], DType.Int32);
        Assert.Throws<DTypeException>(() => { using var _ = xi.LayerNorm([4]); });
        Assert.Throws<DTypeException>(() => { using var _ = xi.RmsNorm([4]); });
    }

    [Test]
    public void NormGradientsThroughAutogradMatchReference([ValueSource(nameof(NormCases))] NormCase c)
    {
        var rng = new Random(24);
        int[] shape = [3, 4, 5];
        int cols = Ref.Numel(c.NormalizedShape), rows = 60 / cols;
        foreach (var dt in Floats)
        {
            var x = Ref.Random(rng, 60, dt, -2, 3);
            var g = Ref.Random(rng, 60, dt);
            var w = c.Weight ? Ref.Random(rng, cols, dt) : null;
            var b = c.Bias ? Ref.Random(rng, cols, dt) : null;
            using var xt = Leaf(x, shape, dt, Layouts.Kind.Transposed);
            using var wt = w is null ? null : Leaf(w, c.NormalizedShape, dt);
            using var bt = b is null ? null : Leaf(b, c.NormalizedShape, dt);
            using var y = RunNorm(c, xt, wt, bt, 1e-5);
            Assert.That(y.GradFn?.Op, Is.EqualTo(c.Rms ? "RmsNorm" : "LayerNorm"));
            using var gt = Tensor.FromArray(g, shape).To(dt);
            y.Backward(gt);
            var (dx, dw, db) = RefNormBackward(x, g, rows, cols, w, 1e-5, c.Rms);
            // Half types: the gradients sum products of rounded values, so allow a few more ulps.
            double scale = dt.IsHalf() ? 4 : 8;
            Ref.AssertClose(xt.Grad!.ToArray<double>(), dx, dt, $"{c} dx {dt}", scale);
            if (wt is not null) Ref.AssertClose(wt.Grad!.ToArray<double>(), dw, dt, $"{c} dw {dt}", scale);
            if (bt is not null) Ref.AssertClose(bt.Grad!.ToArray<double>(), db, dt, $"{c} db {dt}", scale);
            xt.Grad.Dispose(); wt?.Grad?.Dispose(); bt?.Grad?.Dispose();
        }
    }

    [Test]
    public void LayerNormBackwardKernelGivesAllGradientsAndIsThreadCountIndependent()
    {
        var rng = new Random(25);
        const int rows = 133, cols = 19;
        foreach (var dt in Floats)
            foreach (var rms in new[] { false, true })
            {
                var x = Ref.Random(rng, rows * cols, dt, -2, 2);
                var g = Ref.Random(rng, rows * cols, dt);
                var w = Ref.Random(rng, cols, dt);
                var (mean, rstd) = RefStats(x, rows, cols, 1e-5, rms);
                var stat = dt == DType.Float64 ? DType.Float64 : DType.Float32;
                using var xt = Tensor.FromArray(x, [rows, cols]).To(dt);
                using var gt = Tensor.FromArray(g, [rows, cols]).To(dt);
                using var wt = Tensor.FromArray(w, [cols]).To(dt);
                using var mt = Tensor.FromArray(mean, [rows]).To(stat);
                using var rt = Tensor.FromArray(rstd, [rows]).To(stat);
                var (dx, dw, db) = Tensor.LayerNormGradient(xt, wt, mt, rt, gt, 1, rms, weightGrad: true, biasGrad: true);
                using (dx) using (dw) using (db)
                {
                    var (edx, edw, edb) = RefNormBackward(x, g, rows, cols, w, 1e-5, rms);
                    // The column sums add 133 rounded products: scale the tolerance with the row count for float32.
                    Ref.AssertClose(dx.ToArray<double>(), edx, dt, $"dx {dt} rms {rms}", 4);
                    Ref.AssertClose(dw!.ToArray<double>(), edw, dt, $"dw {dt} rms {rms}", dt == DType.Float32 ? 20 : 4);
                    Ref.AssertClose(db!.ToArray<double>(), edb, dt, $"db {dt} rms {rms}", 4);
                    using var threads1 = CpuBackend.UseOptions(CpuBackend.Options with { Threads = 1 });
                    var (dx1, dw1, db1) = Tensor.LayerNormGradient(xt, wt, mt, rt, gt, 1, rms, true, true);
                    using (dx1) using (dw1) using (db1)
                    {
                        Assert.That(dx1.ToArray<double>().SequenceEqual(dx.ToArray<double>()), Is.True, "dx must not depend on the thread count");
                        Assert.That(dw1!.ToArray<double>().SequenceEqual(dw!.ToArray<double>()), Is.True, "dw must not depend on the thread count");
                        Assert.That(db1!.ToArray<double>().SequenceEqual(db!.ToArray<double>()), Is.True, "db must not depend on the thread count");
                    }
                }
            }
    }

    // ---------------- cross entropy ----------------

    static long[] RandomTargets(Random rng, int n, int classes, long ignore, int ignoredEvery)
    {
        var t = new long[n];
        for (int i = 0; i < n; i++) t[i] = ignoredEvery > 0 && i % ignoredEvery == 1 ? ignore : rng.Next(classes);
        return t;
    }

    static double Reduce(double[] perSample, long[] t, long ignore, Reduction r)
    {
        if (r == Reduction.Sum) return Sum(perSample);
        int count = t.Count(v => v != ignore);
        return Sum(perSample) / count;
    }

    public sealed record CeCase(int[] LogitsShape, long IgnoreIndex, int IgnoredEvery, double Smoothing)
    {
        public override string ToString() => $"{Shape.Format(LogitsShape)} ignore {IgnoreIndex}/{IgnoredEvery} eps {Smoothing}";
        public int N => LogitsShape.Length == 1 ? 1 : LogitsShape[0];
        public int C => LogitsShape.Length == 1 ? LogitsShape[0] : LogitsShape[1];
        public int Inner => LogitsShape.Length <= 2 ? 1 : Prod(LogitsShape, 2, LogitsShape.Length);
        public int[] TargetShape => LogitsShape.Length == 1 ? [] : [LogitsShape[0], .. LogitsShape[2..]];
    }

    static readonly CeCase[] CeCases =
    [
        new([6, 5], -100, 0, 0), new([6, 5], -100, 3, 0), new([6, 5], -100, 0, 0.1), new([6, 5], 2, 3, 0.2),
        new([2, 4, 3], -100, 2, 0), new([2, 4, 3, 2], -100, 5, 0.1), new([5], -100, 0, 0), new([5], -100, 0, 0.3),
        new([3, 1], -100, 0, 0), new([1, 7], -100, 0, 0.1),
    ];

    [Test]
    public void CrossEntropyMatchesReference([ValueSource(nameof(CeCases))] CeCase c)
    {
        var rng = new Random(31);
        foreach (var dt in Floats)
            foreach (var kind in new[] { Layouts.Kind.Contiguous, Layouts.Kind.Transposed })
                foreach (var red in new[] { Reduction.None, Reduction.Mean, Reduction.Sum })
                {
                    var x = Ref.Random(rng, Ref.Numel(c.LogitsShape), dt, -3, 3);
                    var t = RandomTargets(rng, c.N * c.Inner, c.C, c.IgnoreIndex, c.IgnoredEvery);
                    using var xt = Layouts.Make(x, c.LogitsShape, dt, kind);
                    using var tt = Tensor.FromArray(t, c.TargetShape);
                    using var loss = xt.CrossEntropy(tt, red, c.IgnoreIndex, c.Smoothing);
                    Assert.That(loss.DType, Is.EqualTo(dt));
                    var per = RefCrossEntropy(x, t, c.N, c.C, c.Inner, c.IgnoreIndex, c.Smoothing);
                    if (red == Reduction.None)
                    {
                        Assert.That(loss.Shape, Is.EqualTo(c.TargetShape));
                        Ref.AssertClose(loss.ToArray<double>(), per, dt, $"{c} {dt} {kind} none", 2);
                    }
                    else
                    {
                        Assert.That(loss.Rank, Is.Zero);
                        Ref.AssertClose([loss.Item()], [Reduce(per, t, c.IgnoreIndex, red)], dt, $"{c} {dt} {kind} {red}", 2);
                    }
                }
    }

    [Test]
    public void CrossEntropyWithEveryTargetIgnored()
    {
        using var x = Tensor.FromArray(new double[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        using var t = Tensor.FromArray(new long[] { -100, -100 });
        using (var m = x.CrossEntropy(t)) Assert.That(double.IsNaN(m.Item()), Is.True, "mean over no samples is NaN");
        using (var s = x.CrossEntropy(t, Reduction.Sum)) Assert.That(s.Item(), Is.EqualTo(0.0));
        using (var s = x.CrossEntropy(t, Reduction.None, labelSmoothing: 0.5)) Assert.That(s.ToArray<double>(), Is.EqualTo(new double[] { 0, 0 }));
        using var e = Tensor.Zeros([0, 3]);
        using var et = Tensor.Zeros([0], DType.Int64);
        using (var s = e.CrossEntropy(et, Reduction.Sum)) Assert.That(s.Item(), Is.EqualTo(0.0));
    }

    [Test]
    public void CrossEntropyRejectsBadTargetsAndLeavesInputsUntouched()
    {
        double[] xv = [0.5, -1, 2, 0.25, 3, -2];
        using var x = Tensor.FromArray(xv, [2, 3], requiresGrad: true);
        foreach (var bad in new long[] { 3, -1, 100 })
        {
            using var t = Tensor.FromArray(new long[] { 0, bad });
            var ex = Assert.Throws<ShapeException>(() => { using var _ = x.CrossEntropy(t); });
            Assert.That(ex!.Message, Does.Contain("CrossEntropy").And.Contain(bad.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            Assert.That(x.ToArray<double>(), Is.EqualTo(xv));
            Assert.That(t.ToArray<long>(), Is.EqualTo(new long[] { 0, bad }));
            Assert.That(x.Grad, Is.Null);
            Assert.That(x.Version, Is.Zero);
        }
        // The ignore index itself is fine even out of range; an in-range ignore index is skipped.
        using (var t = Tensor.FromArray(new long[] { 0, 7 }))
        using (var l = x.CrossEntropy(t, ignoreIndex: 7))
            Assert.That(l.Item(), Is.EqualTo(RefCrossEntropy(xv, [0, 7], 2, 3, 1, 7, 0)[0]).Within(1e-12));

        using var t32 = Tensor.FromArray(new[] { 0, 1 });
        var dx = Assert.Throws<DTypeException>(() => { using var _ = x.CrossEntropy(t32); });
        Assert.That(dx!.Message, Does.Contain("CrossEntropy").And.Contain("int32"));
        using var t3 = Tensor.FromArray(new long[] { 0, 1, 2 });
        var sx = Assert.Throws<ShapeException>(() => { using var _ = x.CrossEntropy(t3); });
        Assert.That(sx!.Message, Does.Contain("CrossEntropy").And.Contain("[2, 3]").And.Contain("[3]"));
        using var t0 = Tensor.FromArray(new long[] { 0, 1 });
        Assert.Throws<EngineException>(() => { using var _ = x.CrossEntropy(t0, labelSmoothing: 1.5); });
        using var xi = Tensor.FromArray(new long[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        Assert.Throws<DTypeException>(() => { using var _ = xi.CrossEntropy(t0); });
        using var s0 = Tensor.Scalar(1.0);
        Assert.Throws<ShapeException>(() => { using var _ = s0.CrossEntropy(t0); });
    }

    [Test]
    public void CrossEntropyGradientsThroughAutogradMatchReference([ValueSource(nameof(CeCases))] CeCase c)
    {
        var rng = new Random(32);
        foreach (var dt in Floats)
            foreach (var red in new[] { Reduction.None, Reduction.Mean, Reduction.Sum })
            {
                var x = Ref.Random(rng, Ref.Numel(c.LogitsShape), dt, -3, 3);
                var t = RandomTargets(rng, c.N * c.Inner, c.C, c.IgnoreIndex, c.IgnoredEvery);
                using var xt = Leaf(x, c.LogitsShape, dt, Layouts.Kind.Transposed);
                using var tt = Tensor.FromArray(t, c.TargetShape);
                using var loss = xt.CrossEntropy(tt, red, c.IgnoreIndex, c.Smoothing);
                Assert.That(loss.GradFn?.Op, Is.EqualTo("CrossEntropy"));
                int n = c.N * c.Inner;
                double[] dloss;
                if (red == Reduction.None)
                {
                    var g = Ref.Random(rng, n, dt);
                    using var gt = Tensor.FromArray(g, c.TargetShape).To(dt);
                    loss.Backward(gt);
                    dloss = g;
                }
                else
                {
                    loss.Backward();
                    double each = red == Reduction.Sum ? 1 : 1.0 / t.Count(v => v != c.IgnoreIndex);
                    dloss = Enumerable.Repeat(each, n).ToArray();
                }
                var exp = RefCrossEntropyGrad(x, t, dloss, c.N, c.C, c.Inner, c.IgnoreIndex, c.Smoothing);
                Ref.AssertClose(xt.Grad!.ToArray<double>(), exp, dt, $"{c} grad {dt} {red}", 4);
                xt.Grad.Dispose();
            }
    }

    // ---------------- MSE ----------------

    [Test]
    public void MseLossMatchesReference()
    {
        var rng = new Random(41);
        foreach (var dt in Floats)
            foreach (var red in new[] { Reduction.None, Reduction.Mean, Reduction.Sum })
            {
                var a = Ref.Random(rng, 12, dt);
                var b = Ref.Random(rng, 12, dt);
                using var at = Layouts.Make(a, [3, 4], dt, Layouts.Kind.Transposed);
                using var bt = Layouts.Make(b, [3, 4], dt, Layouts.Kind.Contiguous);
                using var l = at.MseLoss(bt, red);
                var sq = a.Zip(b, (p, q) => (p - q) * (p - q)).ToArray();
                if (red == Reduction.None) Ref.AssertClose(l.ToArray<double>(), sq, dt, $"mse {dt} none", 2);
                else Ref.AssertClose([l.Item()], [red == Reduction.Sum ? Sum(sq) : Sum(sq) / 12], dt, $"mse {dt} {red}", 4);
            }
        using var x = Tensor.Zeros([2, 3]);
        using var y = Tensor.Zeros([3, 2]);
        var ex = Assert.Throws<ShapeException>(() => { using var _ = x.MseLoss(y); });
        Assert.That(ex!.Message, Does.Contain("MseLoss").And.Contain("[2, 3]").And.Contain("[3, 2]"));
    }

    // ---------------- float64 finite-difference gradient checks ----------------

    static Tensor RandomLeaf(Random rng, int[] shape, double lo = -2, double hi = 2) =>
        Tensor.FromArray(Ref.Random(rng, Ref.Numel(shape), DType.Float64, lo, hi), shape, requiresGrad: true);

    [Test]
    public void GradCheckSoftmaxAndLogSoftmax()
    {
        var rng = new Random(51);
        using var x = RandomLeaf(rng, [3, 4]);
        using var x3 = RandomLeaf(rng, [2, 3, 2]);
        foreach (var dim in new[] { 0, 1 })
        {
            GradCheck.Check(v => v[0].Softmax(dim), [x]);
            GradCheck.Check(v => v[0].LogSoftmax(dim), [x]);
        }
        GradCheck.Check(v => v[0].Softmax(1), [x3]);
        GradCheck.Check(v => v[0].LogSoftmax(-1), [x3]);
    }

    [Test]
    public void GradCheckLayerNormAndRmsNorm()
    {
        var rng = new Random(52);
        using var x = RandomLeaf(rng, [3, 2, 4]);
        using var w = RandomLeaf(rng, [4]);
        using var b = RandomLeaf(rng, [4]);
        using var w2 = RandomLeaf(rng, [2, 4]);
        using var b2 = RandomLeaf(rng, [2, 4]);
        GradCheck.Check(v => v[0].LayerNorm([4]), [x]);
        GradCheck.Check(v => v[0].LayerNorm([4], v[1], v[2]), [x, w, b]);
        GradCheck.Check(v => v[0].LayerNorm([2, 4], v[1], v[2]), [x, w2, b2]);
        GradCheck.Check(v => v[0].LayerNorm([4], null, v[1]), [x, b]);
        GradCheck.Check(v => v[0].RmsNorm([4]), [x]);
        GradCheck.Check(v => v[0].RmsNorm([4], v[1], 1e-6), [x, w]);
        GradCheck.Check(v => v[0].RmsNorm([2, 4], v[1]), [x, w2]);
    }

    [Test]
    public void GradCheckCrossEntropyAndMse()
    {
        var rng = new Random(53);
        using var x = RandomLeaf(rng, [5, 4]);
        using var t = Tensor.FromArray(new long[] { 1, -100, 3, 0, 2 });
        using var t2 = Tensor.FromArray(new long[] { 1, 2, 3, 0, 2 });
        foreach (var red in new[] { Reduction.None, Reduction.Mean, Reduction.Sum })
        {
            GradCheck.Check(v => v[0].CrossEntropy(v[1], red), [x, t]);
            GradCheck.Check(v => v[0].CrossEntropy(v[1], red, labelSmoothing: 0.2), [x, t]);
            GradCheck.Check(v => v[0].CrossEntropy(v[1], red, ignoreIndex: 2, labelSmoothing: 0.1), [x, t2]);
        }
        using var x3 = RandomLeaf(rng, [2, 3, 2]);
        using var t3 = Tensor.FromArray(new long[] { 0, 2, -100, 1 }, [2, 2]);
        GradCheck.Check(v => v[0].CrossEntropy(v[1], Reduction.Mean, labelSmoothing: 0.1), [x3, t3]);
        using var x1 = RandomLeaf(rng, [4]);
        using var t1 = Tensor.FromArray(new long[] { 2 }, []);
        GradCheck.Check(v => v[0].CrossEntropy(v[1]), [x1, t1]);

        using var a = RandomLeaf(rng, [3, 2]);
        using var b = RandomLeaf(rng, [3, 2]);
        foreach (var red in new[] { Reduction.None, Reduction.Mean, Reduction.Sum })
            GradCheck.Check(v => v[0].MseLoss(v[1], red), [a, b]);
    }
}

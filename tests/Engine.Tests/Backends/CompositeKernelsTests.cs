using Engine.Backends;
using Engine.Backends.Cpu;
using NUnit.Framework;

namespace Engine.Tests.Backends;

/// <summary>
/// The backend contract's composite defaults (<see cref="CompositeKernels"/>) against the CPU backend's fused kernels,
/// for every fused capability, in float32 and bfloat16, on random inputs including size-1 dims. The composites run
/// through <see cref="CompositeOnlyBackend"/>: a backend that implements only the required kernels (by forwarding
/// them to the CPU backend), which is exactly what a new backend starts as.
/// </summary>
public class CompositeKernelsTests
{
    static readonly IBackend Fused = CpuBackend.Instance;
    static readonly IBackend Composite = new CompositeOnlyBackend();

    static readonly DType[] DTypes = [DType.Float32, DType.BFloat16];

    // Row shapes: size-1 rows and columns, one column, and a shape that is neither.
    static readonly (int Rows, int Cols)[] Shapes = [(1, 1), (1, 9), (6, 1), (5, 33)];

    static IEnumerable<TestCaseData> Cases() =>
        from dt in DTypes from s in Shapes select new TestCaseData(dt, s.Rows, s.Cols).SetArgDisplayNames(dt.Name(), $"{s.Rows}x{s.Cols}");

    // ---- the row kernels ----

    [TestCaseSource(nameof(Cases))]
    public void Softmax_MatchesFused(DType dt, int rows, int cols)
    {
        var x = Data(rows * cols, 1, -4, 4);
        foreach (bool log in new[] { false, true })
        {
            var (f, c) = Both(be =>
            {
                using var xs = Buf.Of(x, dt); using var y = Buf.New(dt, rows * cols);
                be.Softmax(xs, y, rows, cols, log);
                return [y.Read()];
            }, log ? "Softmax" : "Softmax");
            AssertClose(c[0], f[0], dt, $"log={log}");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void SoftmaxBackward_MatchesFused(DType dt, int rows, int cols)
    {
        var dy = Data(rows * cols, 2);
        foreach (bool log in new[] { false, true })
        {
            using var x = Buf.Of(Data(rows * cols, 3, -3, 3), dt);
            using var y = Buf.New(dt, rows * cols);
            Fused.Softmax(x, y, rows, cols, log);
            var yv = y.Read();
            var (f, c) = Both(be =>
            {
                using var ys = Buf.Of(yv, dt); using var g = Buf.Of(dy, dt); using var dx = Buf.New(dt, rows * cols);
                be.SoftmaxBackward(ys, g, dx, rows, cols, log);
                return [dx.Read()];
            }, "SoftmaxBackward");
            AssertClose(c[0], f[0], dt, $"log={log}");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void LayerNorm_MatchesFused(DType dt, int rows, int cols)
    {
        var x = Data(rows * cols, 4, -3, 5);
        var w = Data(cols, 5);
        var b = Data(cols, 6);
        var res = Data(rows * cols, 13, -2, 2);
        var stat = StatType(dt);
        foreach (bool rms in new[] { false, true })
            foreach (bool affine in new[] { true, false })
            foreach (bool residual in new[] { false, true })
            {
                var (f, c) = Both(be =>
                {
                    using var xs = Buf.Of(x, dt); using var ws = Buf.Of(w, dt); using var bs = Buf.Of(b, dt);
                    using var rs = Buf.Of(res, dt); using var sum = Buf.New(dt, rows * cols);
                    using var y = Buf.New(dt, rows * cols); using var mean = Buf.New(stat, rows); using var rstd = Buf.New(stat, rows);
                    be.LayerNorm(xs, residual ? rs : null, affine ? ws : null, affine ? bs : null, residual ? sum : null, y, mean, rstd, rows, cols, 1e-5, rms);
                    return [y.Read(), mean.Read(), rstd.Read(), residual ? sum.Read() : []];
                }, "LayerNorm");
                string what = $"rms={rms} affine={affine} residual={residual}";
                // The sum is one rounded add either way: the same bits.
                Assert.That(c[3], Is.EqualTo(f[3]), "sum " + what);
                AssertClose(c[0], f[0], dt, "y " + what);
                AssertClose(c[1], f[1], stat, "mean " + what);
                AssertClose(c[2], f[2], stat, "rstd " + what);
            }
    }

    [TestCaseSource(nameof(Cases))]
    public void LayerNormBackward_MatchesFused(DType dt, int rows, int cols)
    {
        var x = Data(rows * cols, 7, -3, 3);
        var w = Data(cols, 8);
        var dy = Data(rows * cols, 9);
        var add = Data(rows * cols, 14);
        var stat = StatType(dt);
        foreach (bool rms in new[] { false, true })
        foreach (bool withAdd in new[] { false, true })
        {
            using var xs0 = Buf.Of(x, dt); using var ws0 = Buf.Of(w, dt);
            using var y0 = Buf.New(dt, rows * cols); using var mean0 = Buf.New(stat, rows); using var rstd0 = Buf.New(stat, rows);
            Fused.LayerNorm(xs0, null, ws0, null, null, y0, mean0, rstd0, rows, cols, 1e-5, rms);
            var (mv, rv) = (mean0.Read(), rstd0.Read());
            var (f, c) = Both(be =>
            {
                using var xs = Buf.Of(x, dt); using var ws = Buf.Of(w, dt); using var g = Buf.Of(dy, dt);
                using var mean = Buf.Of(mv, stat); using var rstd = Buf.Of(rv, stat);
                using var dx = Buf.New(dt, rows * cols); using var dw = Buf.New(dt, cols); using var db = Buf.New(dt, cols);
                using var ad = Buf.Of(add, dt);
                be.LayerNormBackward(xs, ws, mean, rstd, g, withAdd ? ad : null, dx, dw, db, rows, cols, rms);
                return [dx.Read(), dw.Read(), db.Read()];
            }, "LayerNormBackward");
            AssertClose(c[0], f[0], dt, $"dx rms={rms} add={withAdd}");
            AssertClose(c[1], f[1], dt, $"dWeight rms={rms}");
            AssertClose(c[2], f[2], dt, $"dBias rms={rms}");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void CrossEntropy_AndBackward_MatchFused(DType dt, int rows, int cols)
    {
        var x = Data(rows * cols, 10, -4, 4);
        var rng = new Random(11);
        const long ignore = -100;
        // Every third row ignored (when there is more than one row), the others a random class.
        var t = Enumerable.Range(0, rows).Select(r => rows > 1 && r % 3 == 1 ? ignore : rng.Next(cols)).Select(v => (double)v).ToArray();
        var dloss = Data(rows, 12);
        foreach (double smoothing in new[] { 0.0, 0.1 })
        {
            var (f, c) = Both(be =>
            {
                using var xs = Buf.Of(x, dt); using var ts = Buf.Of(t, DType.Int64);
                using var loss = Buf.New(DType.Float32, rows); using var g = Buf.Of(dloss, DType.Float32); using var dx = Buf.New(dt, rows * cols);
                be.CrossEntropy(xs, ts, loss, rows, cols, ignore, smoothing);
                be.CrossEntropyBackward(xs, ts, g, dx, rows, cols, ignore, smoothing);
                return [loss.Read(), dx.Read()];
            }, "CrossEntropy");
            AssertClose(c[0], f[0], DType.Float32, $"loss smoothing={smoothing}", dt == DType.BFloat16 ? 4 : 1);
            AssertClose(c[1], f[1], dt, $"dlogits smoothing={smoothing}");
        }
    }

    [Test]
    public void CrossEntropy_RejectsABadTargetBeforeWriting()
    {
        using var x = Buf.Of(Data(6, 13), DType.Float32);
        using var t = Buf.Of([0, 3], DType.Int64);
        using var loss = Buf.Of([7, 7], DType.Float32);
        var e = Assert.Throws<ShapeException>(() => Composite.CrossEntropy(x, t, loss, 2, 3, -100, 0))!;
        Assert.That(e.Message, Does.Contain("target 3 (row 1)"));
        Assert.That(loss.Read(), Is.EqualTo(new double[] { 7, 7 }));
    }

    // ---- the optimizer steps ----

    static IEnumerable<TestCaseData> OptimizerCases() =>
        from dt in DTypes from n in new[] { 1, 37 } select new TestCaseData(dt, n).SetArgDisplayNames(dt.Name(), $"n={n}");

    [TestCaseSource(nameof(OptimizerCases))]
    public void AdamStep_MatchesFused(DType dt, int n)
    {
        var p = Data(n, 20); var g = Data(n, 21, -0.5, 0.5); var m = Data(n, 22, -0.1, 0.1); var v = Data(n, 23, 0, 0.1);
        var configs = new[]
        {
            new AdamConfig(1e-2, 0.9, 0.999, 1e-8, 0, false),
            new AdamConfig(1e-2, 0.9, 0.99, 1e-6, 0.1, false),
            new AdamConfig(3e-3, 0.8, 0.95, 1e-8, 0.1, true),
        };
        foreach (var config in configs)
            foreach (var (inv, found) in new (double?, double?)[] { (null, null), (0.25, 0), (0.25, 1) })
                foreach (var gradType in new[] { dt, DType.Float32 })
                {
                    var (f, c) = Both(be =>
                    {
                        using var ps = Buf.Of(p, dt); using var gs = Buf.Of(g, gradType); using var ms = Buf.Of(m, dt); using var vs = Buf.Of(v, dt);
                        using var step = Buf.Of([3], DType.Float32);
                        using var invS = inv is double i ? Buf.Of([i], DType.Float32) : null;
                        using var foundS = found is double fi ? Buf.Of([fi], DType.Float32) : null;
                        for (int k = 0; k < 2; k++) be.AdamStep(ps, gs, ms, vs, step, config, invS, foundS);
                        return [ps.Read(), ms.Read(), vs.Read(), step.Read()];
                    }, "AdamStep");
                    string what = $"{config} inv={inv} found={found} grad={gradType.Name()}";
                    for (int k = 0; k < 4; k++) AssertClose(c[k], f[k], k == 3 ? DType.Float32 : dt, $"{"pmvt"[k]} {what}");
                    if (found == 1) Assert.That(c[0], Is.EqualTo(Buf.RoundTrip(p, dt)), "a skipped step changes nothing");
                }
    }

    [TestCaseSource(nameof(OptimizerCases))]
    public void SgdStep_MatchesFused(DType dt, int n)
    {
        var p = Data(n, 30); var g = Data(n, 31, -0.5, 0.5); var b = Data(n, 32, -0.1, 0.1);
        var configs = new[]
        {
            new SgdConfig(0.1, 0, 0, 0, false),
            new SgdConfig(0.1, 0, 0, 0.01, false),
            new SgdConfig(0.05, 0.9, 0, 0.01, false),
            new SgdConfig(0.05, 0.9, 0.1, 0, true),
        };
        foreach (var config in configs)
            foreach (bool initialized in new[] { false, true })
                foreach (var (inv, found) in new (double?, double?)[] { (null, null), (0.5, 0), (0.5, 1) })
                {
                    var (f, c) = Both(be =>
                    {
                        using var ps = Buf.Of(p, dt); using var gs = Buf.Of(g, dt); using var bs = Buf.Of(b, dt);
                        using var invS = inv is double i ? Buf.Of([i], DType.Float32) : null;
                        using var foundS = found is double fi ? Buf.Of([fi], DType.Float32) : null;
                        be.SgdStep(ps, gs, config.Momentum != 0 ? bs : null, initialized, config, invS, foundS);
                        return [ps.Read(), bs.Read()];
                    }, "SgdStep");
                    string what = $"{config} initialized={initialized} inv={inv} found={found}";
                    AssertClose(c[0], f[0], dt, "param " + what);
                    AssertClose(c[1], f[1], dt, "momentum " + what);
                }
    }

    // ---- the AMP scaler kernels ----

    [TestCaseSource(nameof(OptimizerCases))]
    public void NonFiniteCheckAndUnscale_MatchesFused(DType dt, int n)
    {
        foreach (double bad in new[] { 0, double.PositiveInfinity, double.NegativeInfinity, double.NaN })
            foreach (float inv in new[] { 1f / 1024, 1f })
            {
                var a = Data(n, 40, -1000, 1000);
                var b = Data(3, 41, -1000, 1000);
                if (bad != 0) a[n / 2] = bad;
                var (f, c) = Both(be =>
                {
                    using var ga = Buf.Of(a, dt); using var gb = Buf.Of(b, DType.Float32); using var gc = Buf.New(dt, 0);
                    using var found = Buf.Of([0], DType.Float32); using var invS = Buf.Of([inv], DType.Float32);
                    be.NonFiniteCheckAndUnscale([ga, gb, gc], found, invS);
                    return [ga.Read(), gb.Read(), found.Read()];
                }, "NonFiniteCheckAndUnscale");
                string what = $"bad={bad} inv={inv}";
                Assert.That(c[0], Is.EqualTo(f[0]), "grad a " + what); // one float32 multiply per element, NaN equal to NaN
                Assert.That(c[1], Is.EqualTo(f[1]), "grad b " + what);
                Assert.That(c[2], Is.EqualTo(f[2]), "found-inf " + what);
                Assert.That(c[2][0], Is.EqualTo(bad == 0 ? 0 : 1), "found-inf " + what);
            }
    }

    [Test]
    public void NonFiniteCheckAndUnscale_NeverResetsFoundInf()
    {
        using var g = Buf.Of([1, 2], DType.BFloat16);
        using var found = Buf.Of([1], DType.Float32);
        using var inv = Buf.Of([0.5], DType.Float32);
        Composite.NonFiniteCheckAndUnscale([g], found, inv);
        Assert.That(found.Read(), Is.EqualTo(new double[] { 1 }));
        Assert.That(g.Read(), Is.EqualTo(new double[] { 0.5, 1 }));
    }

    [Test]
    public void UpdateScale_MatchesFused()
    {
        // Clean steps up to the growth interval, an Inf, a NaN flag, and a scale whose growth overflows float32.
        double[] flags = [0, 0, 0, 1, 0, double.NaN, 0, 0, 0, 0];
        foreach (double start in new[] { 1024.0, 3e38 })
        {
            var (f, c) = Both(be =>
            {
                using var scale = Buf.Of([start], DType.Float32); using var tracker = Buf.Of([0], DType.Int32); using var found = Buf.New(DType.Float32, 1);
                var trace = new List<double>();
                foreach (var flag in flags)
                {
                    found.Write([flag]);
                    be.UpdateScale(scale, tracker, found, 2.0, 0.3, 3);
                    trace.Add(scale.Read()[0]); trace.Add(tracker.Read()[0]);
                }
                return [trace.ToArray()];
            }, "UpdateScale");
            Assert.That(c[0], Is.EqualTo(f[0]), $"scale and tracker after each step from {start}");
        }
    }

    // ---- the counter sees which path ran ----

    [Test]
    public void CompositeBackend_LaunchesOnlyRequiredKernels()
    {
        using var x = Buf.Of(Data(12, 50), DType.Float32);
        using var y = Buf.New(DType.Float32, 12);
        using (var c = KernelCounter.Begin())
        {
            Fused.Softmax(x, y, 3, 4, log: false);
            Assert.That(c.Count(nameof(IBackend.Softmax)), Is.EqualTo(1));
            Assert.That(c.Launches, Is.EqualTo(1), c.ToString());
        }
        using (var c = KernelCounter.Begin())
        {
            Composite.Softmax(x, y, 3, 4, log: false);
            Assert.That(c.Count(nameof(IBackend.Softmax)), Is.Zero, "no fused kernel behind the composite");
            Assert.That(c.Count(nameof(IBackend.Reduce)), Is.EqualTo(2), c.ToString());
            Assert.That(c.Count(nameof(IBackend.Unary)), Is.EqualTo(1), c.ToString());
        }
    }

    // ---- helpers ----

    // ---- the multi-tensor kernels (one entry empty, one of one element) ----

    [TestCaseSource(nameof(OptimizerCases))]
    public void ForeachAdamStep_MatchesFused(DType dt, int n)
    {
        var sizes = new[] { n, 0, 1, 2 * n + 3 };
        var config = new AdamConfig(1e-2, 0.9, 0.99, 1e-6, 0.1, true);
        var (f, c) = Both(be =>
        {
            var bufs = sizes.Select((k, j) => (P: Buf.Of(Data(k, 40 + j), dt), G: Buf.Of(Data(k, 50 + j, -0.5, 0.5), DType.Float32),
                M: Buf.Of(Data(k, 60 + j, -0.1, 0.1), dt), V: Buf.Of(Data(k, 70 + j, 0, 0.1), dt), S: Buf.Of([j], DType.Float32))).ToList();
            using var inv = Buf.Of([0.5], DType.Float32);
            be.ForeachAdamStep(bufs.Select(b => (Storage)b.P).ToList(), bufs.Select(b => (Storage)b.G).ToList(), bufs.Select(b => (Storage)b.M).ToList(),
                bufs.Select(b => (Storage)b.V).ToList(), bufs.Select(b => (Storage)b.S).ToList(), config, inv, null);
            var r = bufs.SelectMany(b => new[] { b.P.Read(), b.M.Read(), b.V.Read(), b.S.Read() }).ToArray();
            foreach (var b in bufs) { b.P.Dispose(); b.G.Dispose(); b.M.Dispose(); b.V.Dispose(); b.S.Dispose(); }
            return r;
        }, "ForeachAdamStep");
        for (int k = 0; k < f.Length; k++) AssertClose(c[k], f[k], k % 4 == 3 ? DType.Float32 : dt, $"entry {k / 4} operand {k % 4}");
    }

    [TestCaseSource(nameof(OptimizerCases))]
    public void ForeachNormAndMul_MatchFused(DType dt, int n)
    {
        var sizes = new[] { n, 0, 1, 2 * n + 3 };
        foreach (double ord in new[] { 2.0, 1.0, 0.0, 3.0, double.PositiveInfinity })
        {
            var (f, c) = Both(be =>
            {
                var xs = sizes.Select((k, j) => Buf.Of(Data(k, 80 + j), dt)).ToList();
                var live = double.IsInfinity(ord) ? xs.Where((_, j) => sizes[j] > 0).ToList() : xs;
                using var norms = Buf.New(StatType(dt), live.Count + 1);
                be.ForeachNorm(live.Select(x => (Storage)x).ToList(), ord, norms, 1);
                using var s = Buf.Of([0.375], dt);
                be.ForeachMul(xs.Select(x => (Storage)x).ToList(), s);
                var r = new[] { norms.Read()[1..] }.Concat(xs.Select(x => x.Read())).ToArray();
                foreach (var x in xs) x.Dispose();
                return r;
            }, "ForeachNorm");
            for (int k = 0; k < f.Length; k++) AssertClose(c[k], f[k], k == 0 ? StatType(dt) : dt, $"ord {ord}, result {k}");
        }
    }

    [TestCaseSource(nameof(OptimizerCases))]
    public void ForeachCopy_MatchesFused(DType dt, int n)
    {
        // Entries of dt cast to each floating dtype (one of them dt itself), empty and one-element ones among them.
        var sizes = new[] { n, 0, 1, 2 * n + 3 };
        DType[] targets = [DType.BFloat16, DType.Float16, DType.Float32, DType.Float64];
        var (f, c) = Both(be =>
        {
            var xs = sizes.Select((k, j) => Buf.Of(Data(k, 90 + j, -70000, 70000), dt)).ToList();
            var ys = sizes.Select((k, j) => Buf.New(targets[j], k)).ToList();
            be.ForeachCopy(xs.Select(x => (Storage)x).ToList(), ys.Select(y => (Storage)y).ToList());
            var r = ys.Select(y => y.Read()).ToArray();
            foreach (var b in xs.Concat(ys)) b.Dispose();
            return r;
        }, "ForeachCopy");
        for (int k = 0; k < f.Length; k++) Assert.That(f[k], Is.EqualTo(c[k]), $"entry {k}: the bits of the composite's Copy");
    }

    // ---- scaled-dot-product attention (odd sizes, L ≠ S, causal and a shared or per-head additive mask) ----

    [TestCase(DType.Float32, false, 0), TestCase(DType.Float32, true, 0), TestCase(DType.Float32, false, 1), TestCase(DType.Float32, false, 2),
     TestCase(DType.BFloat16, true, 0), TestCase(DType.BFloat16, false, 2)]
    public void ScaledDotProductAttention_MatchesFused(DType dt, bool causal, int maskKind)
    {
        const int b = 3, l = 5, sk = 7, e = 4, ev = 3;
        var shape = new AttentionShape(b, l, sk, e, ev, 0.6, causal, maskKind == 1);
        double[] q = Data(b * l * e, 1), k = Data(b * sk * e, 2), v = Data(b * sk * ev, 3), g = Data(b * l * ev, 4);
        double[]? mask = maskKind == 0 ? null : Data((maskKind == 1 ? 1 : b) * l * sk, 5, -3, 1);
        var (f, c) = Both(be =>
        {
            using var qs = Buf.Of(q, dt); using var ks = Buf.Of(k, dt); using var vs = Buf.Of(v, dt);
            using var ms = mask is null ? null : Buf.Of(mask, DType.Float32);
            using var o = Buf.New(dt, b * l * ev); using var lse = Buf.New(DType.Float32, b * l);
            be.ScaledDotProductAttention(Dense(qs, l, e), Dense(ks, sk, e), Dense(vs, sk, ev), ms, Dense(o, l, ev), lse, shape);
            using var gs = Buf.Of(g, dt);
            using var dq = Buf.New(dt, b * l * e); using var dk = Buf.New(dt, b * sk * e); using var dv = Buf.New(dt, b * sk * ev);
            be.ScaledDotProductAttentionBackward(Dense(qs, l, e), Dense(ks, sk, e), Dense(vs, sk, ev), ms, Dense(o, l, ev), lse,
                Dense(gs, l, ev), Dense(dq, l, e), Dense(dk, sk, e), Dense(dv, sk, ev), shape);
            return [o.Read(), lse.Read(), dq.Read(), dk.Read(), dv.Read()];
        }, "ScaledDotProductAttention");
        string[] names = ["o", "lse", "dq", "dk", "dv"];
        for (int i = 0; i < f.Length; i++) AssertClose(c[i], f[i], i == 1 ? DType.Float32 : dt, names[i], i >= 2 ? 4 : 1);
    }

    // Every operand strided over two batch levels (2 batches × 3 heads): q rows padded, k and v interleaved in one
    // [b, S, 2, h, E] buffer (a fused key-value projection), o in [b, L, h, Ev] memory, dO padded, dk and dv written
    // interleaved into one buffer. The composite copies through the strides; the fused kernels read them in place.
    [TestCase(DType.Float32, false, 0), TestCase(DType.Float32, true, 0), TestCase(DType.Float32, false, 2), TestCase(DType.BFloat16, true, 0)]
    public void ScaledDotProductAttention_Strided_MatchesFused(DType dt, bool causal, int maskKind)
    {
        const int bo = 2, h = 3, b = bo * h, l = 5, sk = 7, e = 4;
        var shape = new AttentionShape(b, l, sk, e, e, 0.6, causal, false, h);
        double[] q = Data(bo * l * h * (e + 1), 1), kv = Data(bo * sk * 2 * h * e, 2), g = Data(bo * l * h * (e + 2), 4);
        double[]? mask = maskKind == 0 ? null : Data(b * l * sk, 5, -3, 1);
        var qa = (Offset: 0L, Batch: (long)l * h * (e + 1), Head: (long)e + 1, Row: (long)h * (e + 1));
        var ga = (Offset: 1L, Batch: (long)l * h * (e + 2), Head: (long)e + 2, Row: (long)h * (e + 2));
        long kvRow = 2L * h * e, kvBatch = sk * kvRow, oRow = (long)h * e, oBatch = l * oRow;
        var (f, c) = Both(be =>
        {
            using var qs = Buf.Of(q, dt); using var kvs = Buf.Of(kv, dt); using var gs = Buf.Of(g, dt);
            using var ms = mask is null ? null : Buf.Of(mask, DType.Float32);
            using var o = Buf.New(dt, bo * l * h * e); using var lse = Buf.New(DType.Float32, b * l);
            var qo = new AttentionOperand(qs, qa.Offset, qa.Batch, qa.Head, qa.Row);
            var ko = new AttentionOperand(kvs, 0, kvBatch, e, kvRow);
            var vo = new AttentionOperand(kvs, h * e, kvBatch, e, kvRow);
            var oo = new AttentionOperand(o, 0, oBatch, e, oRow);
            be.ScaledDotProductAttention(qo, ko, vo, ms, oo, lse, shape);
            using var dq = Buf.New(dt, bo * l * h * e); using var dkv = Buf.New(dt, bo * sk * 2 * h * e);
            be.ScaledDotProductAttentionBackward(qo, ko, vo, ms, oo, lse, new AttentionOperand(gs, ga.Offset, ga.Batch, ga.Head, ga.Row),
                new AttentionOperand(dq, 0, oBatch, e, oRow), new AttentionOperand(dkv, 0, kvBatch, e, kvRow), new AttentionOperand(dkv, h * e, kvBatch, e, kvRow), shape);
            return [o.Read(), lse.Read(), dq.Read(), dkv.Read()];
        }, "ScaledDotProductAttention");
        string[] names = ["o", "lse", "dq", "dk and dv"];
        for (int i = 0; i < f.Length; i++) AssertClose(c[i], f[i], i == 1 ? DType.Float32 : dt, names[i], i >= 2 ? 4 : 1);
    }

    static AttentionOperand Dense(Buf x, int rows, int cols) => AttentionOperand.Dense(x, rows, cols);

    // Runs f on the fused and on the composite backend; the counter checks that the composite ran no fused kernel.
    static (double[][] Fused, double[][] Composite) Both(Func<IBackend, double[][]> f, string kernel)
    {
        var fused = f(Fused);
        using var c = KernelCounter.Begin();
        var composite = f(Composite);
        Assert.That(c.Count(kernel), Is.Zero, $"the composite backend ran the fused {kernel}: {c}");
        return (fused, composite);
    }

    static DType StatType(DType dt) => dt == DType.Float64 ? DType.Float64 : DType.Float32;

    static double[] Data(int n, int seed, double lo = -2, double hi = 2)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => lo + (hi - lo) * rng.NextDouble()).ToArray();
    }

    // Composite and fused kernels round differently in the last place (another summation order, a division instead
    // of a multiplication by the reciprocal), so each value may differ by an ulp or two of its dtype, measured
    // against the largest value of its row set (cancellation makes tiny values absolute, not relative, errors).
    static void AssertClose(double[] actual, double[] expected, DType dt, string what, double scale = 1)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what);
        double eps = (dt == DType.BFloat16 ? Math.Pow(2, -7) : 4e-6) * scale;
        double max = expected.Where(double.IsFinite).Select(Math.Abs).DefaultIfEmpty(0).Max();
        for (int i = 0; i < actual.Length; i++)
        {
            if (double.IsNaN(expected[i])) { Assert.That(actual[i], Is.NaN, $"{what} [{i}]"); continue; }
            double tol = eps * (Math.Abs(expected[i]) + 0.05 * max) + 1e-12;
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(tol), $"{what} [{i}]");
        }
    }
}

/// <summary>
/// A backend with only the required kernels: each forwards to the CPU backend, and every fused capability is the
/// contract's composite default. What a third backend looks like on its first day.
/// </summary>
sealed class CompositeOnlyBackend : IBackend
{
    static readonly IBackend Cpu = CpuBackend.Instance;

    public DeviceType Type => DeviceType.Cpu;
    public Storage Allocate(Device device, DType dtype, long count) => Cpu.Allocate(device, dtype, count);
    public void CopyFromHost<T>(ReadOnlySpan<T> source, Storage destination) where T : unmanaged => Cpu.CopyFromHost(source, destination);
    public void CopyToHost<T>(Storage source, Span<T> destination) where T : unmanaged => Cpu.CopyToHost(source, destination);
    public void Copy(Storage x, Layout xLayout, Storage y, Layout yLayout) => Cpu.Copy(x, xLayout, y, yLayout);
    public void Fill(Storage y, Layout yLayout, double value) => Cpu.Fill(y, yLayout, value);
    public void Unary<TOp>(TOp op, Storage x, Layout xLayout, Storage y, Layout yLayout) where TOp : struct, Engine.Ops.IUnaryOp =>
        Cpu.Unary(op, x, xLayout, y, yLayout);
    public void Binary<TOp>(TOp op, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout) where TOp : struct, Engine.Ops.IBinaryOp =>
        Cpu.Binary(op, a, aLayout, b, bLayout, y, yLayout);
    public void Where(Storage cond, Layout condLayout, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout) =>
        Cpu.Where(cond, condLayout, a, aLayout, b, bLayout, y, yLayout);
    public void Reduce(ReduceOp op, Storage x, Layout xLayout, int reducedDims, Storage y, Storage? indices, double argument) =>
        Cpu.Reduce(op, x, xLayout, reducedDims, y, indices, argument);
    public void MatMul(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k) =>
        Cpu.MatMul(a, aLayout, b, bLayout, y, batch, m, n, k);
    public void Gather(Storage x, Layout xLayout, Storage index, Layout indexLayout, Storage y, int outer, int size, int count, int inner) =>
        Cpu.Gather(x, xLayout, index, indexLayout, y, outer, size, count, inner);
    public void ScatterAdd(Storage dy, Layout dyLayout, Storage index, Layout indexLayout, Storage dx, int outer, int size, int count, int inner) =>
        Cpu.ScatterAdd(dy, dyLayout, index, indexLayout, dx, outer, size, count, inner);
    public void Random(Storage y, ulong seed, ulong offset, bool normal, double a, double b) => Cpu.Random(y, seed, offset, normal, a, b);
    public void Synchronize() { }
}

/// <summary>A CPU storage held for one test, filled from and read back as float64.</summary>
sealed class Buf : IDisposable
{
    readonly Storage _s;

    Buf(Storage s) { _s = s; _s.AddRef(); }

    [return: System.Diagnostics.CodeAnalysis.NotNullIfNotNull(nameof(b))]
    public static implicit operator Storage?(Buf? b) => b?._s;

    public static Buf New(DType dtype, long count) => new(CpuBackend.Instance.Allocate(Device.Cpu, dtype, count));

    public static Buf Of(double[] values, DType dtype)
    {
        var b = New(dtype, values.Length);
        b.Write(values);
        return b;
    }

    /// <summary>The values as stored in a dtype and read back.</summary>
    public static double[] RoundTrip(double[] values, DType dtype)
    {
        using var b = Of(values, dtype);
        return b.Read();
    }

    public void Write(double[] values)
    {
        IBackend cpu = CpuBackend.Instance;
        using var wide = New(DType.Float64, values.Length);
        cpu.CopyFromHost<double>(values, wide);
        cpu.Copy(wide, Flat(values.Length), _s, Flat(values.Length));
    }

    public double[] Read()
    {
        IBackend cpu = CpuBackend.Instance;
        int n = (int)_s.Count;
        using var wide = New(DType.Float64, n);
        cpu.Copy(_s, Flat(n), wide, Flat(n));
        var result = new double[n];
        cpu.CopyToHost<double>(wide, result);
        return result;
    }

    static Layout Flat(int n) => new([n], [1], 0);

    public void Dispose() => _s.Release();
}

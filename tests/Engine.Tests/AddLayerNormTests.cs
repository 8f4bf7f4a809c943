using Engine.Autograd;
using Engine.Autograd.Nn;
using Engine.Backends;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// <see cref="Tensor.AddLayerNorm"/>, the residual add fused into the LayerNorm after it, and the LayerNorm backward
/// that adds its input's pending gradient (the residual stream's fan-out sum) inside its own kernel: against a
/// float64 reference written here, bit for bit against the unfused composition, by finite differences, by the
/// launches they save, and in the GPT that uses them. CPU vs CUDA parity is in CudaRowAndIndexParityTests.
/// </summary>
public class AddLayerNormTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];

    // sum = x + r rounded to the dtype, then LayerNorm of the rounded sum in float64.
    static (double[] Sum, double[] Y) RefAddNorm(double[] x, double[] r, int rows, int cols, double[]? w, double[]? b, double eps, DType dt)
    {
        var s = x.Select((v, i) => Ref.RoundTo(v + r[i], dt)).ToArray();
        var y = new double[s.Length];
        for (int row = 0; row < rows; row++)
        {
            double m = 0, v = 0;
            for (int c = 0; c < cols; c++) m += s[row * cols + c];
            m /= cols;
            for (int c = 0; c < cols; c++) v += (s[row * cols + c] - m) * (s[row * cols + c] - m);
            double rstd = 1 / Math.Sqrt(v / cols + eps);
            for (int c = 0; c < cols; c++)
                y[row * cols + c] = (s[row * cols + c] - m) * rstd * (w?[c] ?? 1) + (b?[c] ?? 0);
        }
        return (s, y);
    }

    // The gradient of x (and of r, the same) when Sum gets gs and Normalized gets gy: gs + LayerNorm's dx(gy);
    // dWeight = Σ gy·x̂, dBias = Σ gy.
    static (double[] Dx, double[] Dw, double[] Db) RefAddNormBackward(double[] s, double[] gs, double[] gy, int rows, int cols, double[]? w, double eps)
    {
        var dx = new double[s.Length];
        var dw = new double[cols];
        var db = new double[cols];
        for (int row = 0; row < rows; row++)
        {
            double m = 0, v = 0;
            for (int c = 0; c < cols; c++) m += s[row * cols + c];
            m /= cols;
            for (int c = 0; c < cols; c++) v += (s[row * cols + c] - m) * (s[row * cols + c] - m);
            double rstd = 1 / Math.Sqrt(v / cols + eps), s1 = 0, s2 = 0;
            for (int c = 0; c < cols; c++)
            {
                int k = row * cols + c;
                double h = (s[k] - m) * rstd, g = gy[k] * (w?[c] ?? 1);
                s1 += g; s2 += g * h;
                dw[c] += gy[k] * h; db[c] += gy[k];
            }
            for (int c = 0; c < cols; c++)
            {
                int k = row * cols + c;
                double h = (s[k] - m) * rstd, g = gy[k] * (w?[c] ?? 1);
                dx[k] = gs[k] + rstd * (g - s1 / cols - h * s2 / cols);
            }
        }
        return (dx, dw, db);
    }

    static Tensor Leaf(double[] v, int[] shape, DType dt, Layouts.Kind kind = Layouts.Kind.Contiguous)
    {
        var t = Layouts.Make(v, shape, dt, kind);
        t.RequiresGrad = true;
        return t;
    }

    [Test]
    public void AddLayerNorm_MatchesReference_AndTheUnfusedBits_OverLayoutsAndDTypes()
    {
        var rng = new Random(31);
        int[] shape = [3, 4, 6];
        const int rows = 12, cols = 6;
        foreach (var dt in Floats)
            foreach (var kind in Layouts.All)
                foreach (bool affine in new[] { true, false })
                {
                    var x = Ref.Random(rng, 72, dt, -3, 5);
                    var r = Ref.Random(rng, 72, dt);
                    var w = affine ? Ref.Random(rng, cols, dt, 0.5, 1.5) : null;
                    var b = affine ? Ref.Random(rng, cols, dt) : null;
                    using var xt = Layouts.Make(x, shape, dt, kind);
                    using var rt = Layouts.Make(r, shape, dt, kind == Layouts.Kind.Contiguous ? Layouts.Kind.Transposed : Layouts.Kind.Contiguous);
                    using var wt = w is null ? null : Layouts.Make(w, [cols], dt, Layouts.Kind.Strided);
                    using var bt = b is null ? null : Layouts.Make(b, [cols], dt, Layouts.Kind.Offset);
                    var (s, y) = xt.AddLayerNorm(rt, [cols], wt, bt);
                    using (s) using (y)
                    {
                        string what = $"{dt} {kind} affine {affine}";
                        Assert.That(s.Shape, Is.EqualTo(shape));
                        Assert.That(y.DType, Is.EqualTo(dt));
                        var (es, ey) = RefAddNorm(x, r, rows, cols, w, b, 1e-5, dt);
                        Assert.That(s.ToArray<double>(), Is.EqualTo(es), "sum " + what);
                        Ref.AssertClose(y.ToArray<double>(), ey, dt, "normalized " + what, scale: 2);
                        using var us = xt.Add(rt);
                        using var uy = us.LayerNorm([cols], wt, bt);
                        Assert.That(s.ToArray<double>(), Is.EqualTo(us.ToArray<double>()), "sum bits " + what);
                        Assert.That(y.ToArray<double>(), Is.EqualTo(uy.ToArray<double>()), "normalized bits " + what);
                    }
                }
    }

    [Test]
    public void AddLayerNorm_SizeOneAndEmptyRows()
    {
        var rng = new Random(32);
        foreach (var dt in Floats)
            foreach (var shape in new[] { new[] { 4, 1 }, new[] { 1, 6 }, new[] { 6 }, new[] { 0, 5 }, new[] { 3, 0 } })
            {
                int n = Ref.Numel(shape), cols = shape[^1];
                var x = Ref.Random(rng, n, dt);
                var r = Ref.Random(rng, n, dt);
                using var xt = Leaf(x, shape, dt);
                using var rt = Leaf(r, shape, dt);
                using var wt = Leaf(Ref.Random(rng, cols, dt), [cols], dt);
                using var bt = Leaf(Ref.Random(rng, cols, dt), [cols], dt);
                string what = $"{dt} {Shape.Format(shape)}";
                double[][] Run(bool fused)
                {
                    Tensor s, y;
                    if (fused) (s, y) = xt.AddLayerNorm(rt, [cols], wt, bt);
                    else { s = xt.Add(rt); y = s.LayerNorm([cols], wt, bt); }
                    using (s) using (y)
                    {
                        Assert.That(y.Shape, Is.EqualTo(shape), what);
                        using var ly = y.Mul(y);
                        using var loss = ly.Sum().Add(s.Sum());
                        loss.Backward();
                        double[][] r = [s.ToArray<double>(), y.ToArray<double>(), xt.Grad!.ToArray<double>(), rt.Grad!.ToArray<double>(),
                            wt.Grad!.ToArray<double>(), bt.Grad!.ToArray<double>()];
                        foreach (var p in new[] { xt, rt, wt, bt }) { p.Grad!.Dispose(); p.Grad = null; }
                        return r;
                    }
                }
                var f = Run(fused: true);
                var u = Run(fused: false);
                for (int i = 0; i < f.Length; i++) Assert.That(f[i], Is.EqualTo(u[i]), $"{what}: output {i} has the unfused bits");
                if (n > 0)
                {
                    var (_, ey) = RefAddNorm(x, r, n / cols, cols, wt.ToArray<double>(), bt.ToArray<double>(), 1e-5, dt);
                    Ref.AssertClose(f[1], ey, dt, what, scale: 2);
                }
                else Assert.That(f[4].Concat(f[5]).All(v => v == 0), Is.True, $"{what}: no rows give zero parameter gradients");
            }
    }

    [Test]
    public void AddLayerNorm_Gradients_MatchReference_AndTheUnfusedBits()
    {
        var rng = new Random(33);
        int[] shape = [5, 7];
        const int rows = 5, cols = 7;
        foreach (var dt in Floats)
        {
            var x = Ref.Random(rng, 35, dt, -2, 3);
            var r = Ref.Random(rng, 35, dt);
            var w = Ref.Random(rng, cols, dt, 0.5, 1.5);
            var b = Ref.Random(rng, cols, dt);
            var gs = Ref.Random(rng, 35, dt);
            var gy = Ref.Random(rng, 35, dt);
            double[][] Grads(bool fused)
            {
                using var xt = Leaf(x, shape, dt, Layouts.Kind.Transposed);
                using var rt = Leaf(r, shape, dt);
                using var wt = Leaf(w, [cols], dt);
                using var bt = Leaf(b, [cols], dt);
                Tensor s, y;
                if (fused) (s, y) = xt.AddLayerNorm(rt, [cols], wt, bt);
                else { s = xt.Add(rt); y = s.LayerNorm([cols], wt, bt); }
                using (s) using (y)
                {
                    Assert.That(y.GradFn?.Op, Is.EqualTo("LayerNorm"));
                    using var gst = Tensor.FromArray(gs, shape).To(dt);
                    using var gyt = Tensor.FromArray(gy, shape).To(dt);
                    // The loss's gradients are gs for the sum and gy for the normalized output, exactly. The sum's
                    // branch is processed first, so its share is pending when the norm's backward runs, which adds it:
                    // the backward's only Binary launches are the two products' gradients.
                    using var ly = y.Mul(gyt);
                    using var ls = s.Mul(gst);
                    using var loss = ly.Sum().Add(ls.Sum());
                    using var counter = KernelCounter.Begin();
                    loss.Backward();
                    Assert.That(counter.Count(nameof(IBackend.Binary)), Is.EqualTo(2), $"{dt} fused {fused}: {counter}");
                    return [xt.Grad!.ToArray<double>(), rt.Grad!.ToArray<double>(), wt.Grad!.ToArray<double>(), bt.Grad!.ToArray<double>()];
                }
            }
            var f = Grads(fused: true);
            var u = Grads(fused: false);
            var es = x.Select((v, i) => Ref.RoundTo(v + r[i], dt)).ToArray();
            var (edx, edw, edb) = RefAddNormBackward(es, gs, gy, rows, cols, w, 1e-5);
            double scale = dt.IsHalf() ? 4 : 8;
            Ref.AssertClose(f[0], edx, dt, $"dx {dt}", scale);
            Ref.AssertClose(f[1], edx, dt, $"dresidual {dt}", scale);
            Ref.AssertClose(f[2], edw, dt, $"dw {dt}", scale);
            Ref.AssertClose(f[3], edb, dt, $"db {dt}", scale);
            for (int i = 0; i < 4; i++) Assert.That(f[i], Is.EqualTo(u[i]), $"gradient {i} {dt}: the unfused composition's bits");
        }
    }

    [Test]
    public void LayerNormGradient_WithDxAdd_IsTheBitsOfTheGradientPlusAnAdd([Values("cpu", "cuda")] string device)
    {
        var dev = device == "cpu" ? Device.Cpu : EmulatedCuda();
        var rng = new Random(34);
        const int rows = 4, cols = 33;
        foreach (var dt in Floats)
            foreach (bool rms in new[] { false, true })
            {
                using var scope = Tensor.NewScope();
                var x = Tensor.FromArray(Ref.Random(rng, rows * cols, dt, -2, 2), [rows, cols], dev).To(dt);
                var w = Tensor.FromArray(Ref.Random(rng, cols, dt, 0.5, 1.5), [cols], dev).To(dt);
                var dy = Tensor.FromArray(Ref.Random(rng, rows * cols, dt), [rows, cols], dev).To(dt);
                var add = Tensor.FromArray(Ref.Random(rng, rows * cols, dt), [rows, cols], dev).To(dt);
                var stat = dt == DType.Float64 ? DType.Float64 : DType.Float32;
                var mean = Tensor.Zeros([rows], stat, dev);
                var rstd = Tensor.Zeros([rows], stat, dev);
                var y = Tensor.Empty([rows, cols], dt, dev);
                x.Backend.LayerNorm(x.Storage, null, w.Storage, null, null, y.Storage, mean.Storage, rstd.Storage, rows, cols, 1e-5, rms);
                var (dx, dw, _) = Tensor.LayerNormGradient(x, w, mean, rstd, dy, add, 1, rms, true, false);
                var (dx0, dw0, _) = Tensor.LayerNormGradient(x, w, mean, rstd, dy, 1, rms, true, false);
                var expected = add.Add(dx0);
                Assert.That(dx.ToArray<double>(), Is.EqualTo(expected.ToArray<double>()), $"{device} {dt} rms {rms}");
                Assert.That(dw!.ToArray<double>(), Is.EqualTo(dw0!.ToArray<double>()), $"{device} {dt} rms {rms}: dWeight unchanged");
            }
    }

    static Device EmulatedCuda()
    {
        Engine.Backends.Cuda.CudaBackend.EnableEmulation();
        return Engine.Backends.Cuda.CudaBackend.EmulatedDevice;
    }

    [Test]
    public void AddLayerNorm_GradCheck()
    {
        var rng = new Random(35);
        double[] R(int n) => Enumerable.Range(0, n).Select(_ => rng.NextDouble() * 4 - 2).ToArray();
        using var x = Tensor.FromArray(R(15), [3, 5], requiresGrad: true);
        using var r = Tensor.FromArray(R(15), [3, 5], requiresGrad: true);
        using var w = Tensor.FromArray(R(5), [5], requiresGrad: true);
        using var b = Tensor.FromArray(R(5), [5], requiresGrad: true);
        using var c = Tensor.FromArray(R(15), [3, 5]);
        // Both outputs used, the sum twice (as a residual stream: the norm and the next add).
        GradCheck.Check(v =>
        {
            var (s, y) = v[0].AddLayerNorm(v[1], [5], v[2], v[3]);
            using (s) using (y)
            {
                using var sc = s.Mul(c);
                using var y2 = y.Mul(y);
                using var t = s.Add(y2);
                return t.Add(sc);
            }
        }, [x, r, w, b]);
    }

    [Test]
    public void LayerNormBackward_FoldsTheResidualStreamsGradientSum()
    {
        // h feeds a LayerNorm and the residual add after it: its gradient from the add arrives first, and the norm's
        // backward kernel adds it, so the backward runs no Add of its own.
        var rng = new Random(36);
        using var a = Tensor.FromArray(Ref.Random(rng, 24, DType.Float32), [4, 6], requiresGrad: true);
        using var k = Tensor.FromArray(Ref.Random(rng, 24, DType.Float32), [4, 6]);
        using var h = a.Mul(2.0);
        using var n = h.LayerNorm([6]);
        using var m = n.Mul(k);
        using var o = h.Add(m);
        // A dense upstream gradient (a Sum's would be an expanded view, which the kernel does not read in place).
        var gv = Ref.Random(rng, 24, DType.Float32);
        using var gt = Tensor.FromArray(gv, [4, 6]).To(DType.Float32);
        using var counter = KernelCounter.Begin();
        o.Backward(gt);
        // Mul(k) one Binary, the norm one LayerNormBackward (with the add's share folded in), Mul(2) one Unary.
        Assert.That(counter.Count(nameof(IBackend.Binary)), Is.EqualTo(1), counter.ToString());
        Assert.That(counter.Count(nameof(IBackend.LayerNormBackward)), Is.EqualTo(1));
        var g = a.Grad!.ToArray<double>();
        // d/da = 2·(gt + LayerNorm's dx of gt·k).
        var hv = h.ToArray<double>();
        var gk = gv.Select((v, i) => v * k.ToArray<double>()[i]).ToArray();
        var (dx, _, _) = RefAddNormBackward(hv, gv, gk, 4, 6, null, 1e-5);
        Ref.AssertClose(g, dx.Select(v => 2 * v).ToArray(), DType.Float32, "grad", scale: 8);
    }

    [Test]
    public void FoldedGradientSum_IsTheSameInCaptureMode_AndSeesHooksOnTheStream()
    {
        // The residual pattern on a leaf (its pending gradient lives with the leaves) and on an intermediate with a
        // hook: Gradients.Grad and Backward agree, and the hook sees the whole (folded) gradient once.
        var rng = new Random(37);
        var av = Ref.Random(rng, 24, DType.Float64);
        var kv = Ref.Random(rng, 24, DType.Float64);
        var gv = Ref.Random(rng, 24, DType.Float64);
        using var k = Tensor.FromArray(kv, [4, 6]);
        using var gt = Tensor.FromArray(gv, [4, 6]);
        double[] viaBackward, viaGrad, hooked = [];
        int calls = 0;
        {
            using var a = Tensor.FromArray(av, [4, 6], requiresGrad: true);
            using var h = a.Mul(3.0);
            h.RegisterHook(g => { calls++; hooked = g.ToArray<double>(); return null; });
            using var n = h.LayerNorm([6]);
            using var m = n.Mul(k);
            using var o = h.Add(m);
            using var n2 = o.LayerNorm([6]);
            using var o2 = o.Add(n2);
            o2.Backward(gt);
            viaBackward = a.Grad!.ToArray<double>();
        }
        {
            using var a = Tensor.FromArray(av, [4, 6], requiresGrad: true);
            using var n = a.LayerNorm([6]);
            using var m = n.Mul(k);
            using var o = a.Add(m);
            using var n2 = o.LayerNorm([6]);
            using var o2 = o.Add(n2);
            var g = Gradients.Grad([o2], [a], [gt], retainGraph: true);
            viaGrad = g[0]!.ToArray<double>();
            g[0]!.Dispose();
            o2.Backward(gt);
            Assert.That(a.Grad!.ToArray<double>(), Is.EqualTo(viaGrad), "Grad and Backward on a leaf");
        }
        Assert.That(calls, Is.EqualTo(1), "the hook runs once, on the summed gradient");
        Assert.That(viaBackward, Is.EqualTo(hooked.Select(v => 3 * v).ToArray()), "the leaf's gradient is 3× what the hook saw");
        // The hooked gradient against float64: dO = g + LN'(g) for o, then dh = dO + LN'(dO·k).
        var hv = av.Select(v => 3 * v).ToArray();
        var ov = Enumerable.Range(0, 24).Select(i => 0.0).ToArray();
        using (var ht = Tensor.FromArray(hv, [4, 6])) using (var nt = ht.LayerNorm([6])) using (var mt = nt.Mul(k)) using (var oo = ht.Add(mt)) ov = oo.ToArray<double>();
        var (dO, _, _) = RefAddNormBackward(ov, gv, gv, 4, 6, null, 1e-5);
        var (dh, _, _) = RefAddNormBackward(hv, dO, dO.Select((v, i) => v * kv[i]).ToArray(), 4, 6, null, 1e-5);
        Ref.AssertClose(hooked, dh, DType.Float64, "hooked gradient", scale: 8);
    }

    [Test]
    public void AddLayerNorm_PromotesAndRejectsBadInputs()
    {
        using var x = Tensor.Zeros([2, 4]);
        using var r64 = Tensor.Ones([2, 4], DType.Float64);
        var (s, y) = x.AddLayerNorm(r64, [4]);
        using (s) using (y) Assert.That(s.DType, Is.EqualTo(DType.Float64), "dtypes promote as Add");
        using var r3 = Tensor.Zeros([2, 3]);
        var e = Assert.Throws<ShapeException>(() => x.AddLayerNorm(r3, [4]))!;
        Assert.That(e.Message, Does.Contain("AddLayerNorm").And.Contain("[2, 4]").And.Contain("[2, 3]"));
        using var xi = Tensor.Zeros([2, 4], DType.Int32);
        Assert.Throws<DTypeException>(() => xi.AddLayerNorm(xi, [4]));
        Assert.Throws<ShapeException>(() => x.AddLayerNorm(x, [3]));
        using var w5 = Tensor.Ones([5]);
        Assert.Throws<ShapeException>(() => x.AddLayerNorm(x, [4], w5));
    }

    static GptConfig Tiny => new(11, 8, 2, 2, 16);

    // The GPT of before: each block's residual adds as Adds, each norm a plain LayerNorm.
    static Tensor UnfusedForward(Gpt g, Tensor ids)
    {
        using var scope = Tensor.NewScope();
        using var pos = Tensor.Arange(ids.Size(1), ids.Device);
        var x = g.Wte.Forward(ids).Add(g.Wpe.Forward(pos));
        x = g.Drop.Forward(x);
        foreach (TransformerBlock b in g.Blocks.Layers)
        {
            x = x.Add(b.Attn.Forward(b.Ln1.Forward(x)));
            x = x.Add(b.Mlp.Forward(b.Ln2.Forward(x)));
        }
        return g.Head.Forward(g.LnF.Forward(x)).MoveToOuterScope();
    }

    [Test]
    public void Gpt_FusedResidualNorms_GiveTheUnfusedBits([Values("cpu", "cuda")] string device)
    {
        var dev = device == "cpu" ? Device.Cpu : EmulatedCuda();
        using var model = new Gpt(Tiny, dev, generator: new Generator(5));
        using var ids = Tensor.RandInt(0, 11, [2, 8], DType.Int64, dev, new Generator(6));
        using var targets = Tensor.RandInt(0, 11, [16], DType.Int64, dev, new Generator(7));
        (double[] Logits, Dictionary<string, double[]> Grads) Step(bool fused)
        {
            foreach (var p in model.Parameters()) { p.Grad?.Dispose(); p.Grad = null; }
            using var logits = fused ? model.Forward(ids) : UnfusedForward(model, ids);
            using var flat = logits.View(-1, 11);
            using var loss = flat.CrossEntropy(targets);
            loss.Backward();
            return (logits.ToArray<double>(), model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToArray<double>()));
        }
        var (fl, fg) = Step(fused: true);
        var (ul, ug) = Step(fused: false);
        Assert.That(fl, Is.EqualTo(ul), "logits");
        foreach (var (name, g) in ug) Assert.That(fg[name], Is.EqualTo(g), name);
        using var counter = KernelCounter.Begin();
        using (Engine.Graph.GradMode.NoGrad()) model.Forward(ids).Dispose();
        Assert.That(counter.Count(nameof(IBackend.LayerNorm)), Is.EqualTo(2 * Tiny.Layers + 1));
        Assert.That(counter.Count(nameof(IBackend.Binary)), Is.EqualTo(1), "only the embedding add: every residual add is inside a norm");
    }
}

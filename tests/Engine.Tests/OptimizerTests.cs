using Engine.Graph;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

public class OptimizerTests
{
    static double[] D(Tensor t) => NnTestUtil.D(t);

    [SetUp]
    public void NoScopeOpen() => Assert.That(DisposeScope.Current, Is.Null, "a test left a scope open");

    // One parameter of three elements and the gradient of each of three steps, chosen by hand.
    static readonly double[] P0 = [1.0, -2.0, 0.5];
    static readonly double[][] Grads = [[0.5, -1.0, 2.0], [0.25, 0.5, -1.5], [-0.75, 1.0, 0.125]];

    static Tensor Param(DType dt = DType.Float64, double[]? v = null)
    {
        using var t = Tensor.FromArray(v ?? P0, [3]);
        var p = t.To(dt).Clone();
        p.RequiresGrad = true;
        return p;
    }

    // Runs three steps with the hand-picked gradients; returns the parameter after each.
    static List<double[]> Run(Optimizer opt, Tensor p, Action<int>? beforeStep = null)
    {
        var r = new List<double[]>();
        for (int k = 0; k < Grads.Length; k++)
        {
            NnTestUtil.SetGrad(p, Grads[k]);
            beforeStep?.Invoke(k);
            opt.Step();
            r.Add(D(p));
        }
        opt.ZeroGrad();
        Assert.That(p.Grad, Is.Null);
        return r;
    }

    static void AssertSteps(List<double[]> got, List<double[]> want, string what, double rtol = 1e-14, double atol = 1e-15)
    {
        for (int k = 0; k < want.Count; k++) Ref.AssertClose(got[k], want[k], rtol, atol, $"{what}, step {k + 1}");
    }

    // ---------------------------------------------------------------- SGD by hand

    // torch.optim.SGD: d = g + wd·p; with momentum, buf = d on the first step, else μ·buf + (1−τ)·d; d = nesterov ? d + μ·buf : buf; p −= lr·d.
    static List<double[]> SgdByHand(double lr, double mu, double damp, double wd, bool nesterov)
    {
        var p = (double[])P0.Clone();
        var buf = new double[3];
        var r = new List<double[]>();
        for (int k = 0; k < 3; k++)
        {
            for (int i = 0; i < 3; i++)
            {
                double d = Grads[k][i] + wd * p[i];
                if (mu != 0)
                {
                    buf[i] = k == 0 ? d : mu * buf[i] + (1 - damp) * d;
                    d = nesterov ? d + mu * buf[i] : buf[i];
                }
                p[i] -= lr * d;
            }
            r.Add((double[])p.Clone());
        }
        return r;
    }

    [Test]
    public void SgdPlain()
    {
        using var p = Param();
        using var opt = new Sgd([p], lr: 0.1);
        // Written out: p1 = p0 − 0.1·g1 = [0.95, −1.9, 0.3].
        var got = Run(opt, p);
        Ref.AssertClose(got[0], [0.95, -1.9, 0.3], 1e-15, 1e-15, "first step written out");
        AssertSteps(got, SgdByHand(0.1, 0, 0, 0, false), "plain SGD");
        Assert.That(opt.StateDict().Tensors, Is.Empty, "no momentum buffer without momentum");
    }

    [Test]
    public void SgdMomentumWithDampening()
    {
        using var p = Param();
        using var opt = new Sgd([p], lr: 0.1, momentum: 0.9, dampening: 0.25);
        var got = Run(opt, p);
        // Step 2 written out for element 0: buf = 0.9·0.5 + 0.75·0.25 = 0.6375; p = 0.95 − 0.06375.
        Assert.That(got[1][0], Is.EqualTo(0.95 - 0.06375).Within(1e-15));
        AssertSteps(got, SgdByHand(0.1, 0.9, 0.25, 0, false), "momentum + dampening");
        Assert.That(opt.StateDict().Tensors.Keys, Is.EqualTo(new[] { "state.0.momentum_buffer" }));
    }

    [Test]
    public void SgdNesterov()
    {
        using var p = Param();
        using var opt = new Sgd([p], lr: 0.05, momentum: 0.8, nesterov: true);
        var got = Run(opt, p);
        // Step 1, element 1: buf = −1; d = −1 + 0.8·(−1) = −1.8; p = −2 + 0.09.
        Assert.That(got[0][1], Is.EqualTo(-1.91).Within(1e-15));
        AssertSteps(got, SgdByHand(0.05, 0.8, 0, 0, true), "nesterov");
        Assert.Throws<EngineException>(() => new Sgd([p], lr: 0.1, nesterov: true));
        Assert.Throws<EngineException>(() => new Sgd([p], lr: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true));
        Assert.Throws<EngineException>(() => new Sgd([p], lr: -0.1));
        Assert.Throws<EngineException>(() => new Sgd([p], lr: 0.1, momentum: -1));
    }

    [Test]
    public void SgdWeightDecay()
    {
        using var p = Param();
        using var opt = new Sgd([p], lr: 0.1, weightDecay: 0.2);
        var got = Run(opt, p);
        // Step 1, element 0: d = 0.5 + 0.2·1 = 0.7; p = 1 − 0.07.
        Assert.That(got[0][0], Is.EqualTo(0.93).Within(1e-15));
        AssertSteps(got, SgdByHand(0.1, 0, 0, 0.2, false), "weight decay");

        using var q = Param();
        using var opt2 = new Sgd([q], lr: 0.1, momentum: 0.5, weightDecay: 0.2);
        AssertSteps(Run(opt2, q), SgdByHand(0.1, 0.5, 0, 0.2, false), "weight decay + momentum");
    }

    [Test]
    public void SgdInFloat32MatchesTheFloat64Reference()
    {
        using var p = Param(DType.Float32);
        using var opt = new Sgd([p], lr: 0.1, momentum: 0.9, weightDecay: 0.01);
        var got = Run(opt, p);
        Assert.That(p.DType, Is.EqualTo(DType.Float32));
        AssertSteps(got, SgdByHand(0.1, 0.9, 0, 0.01, false), "float32 SGD", 1e-6, 1e-7);
    }

    // ---------------------------------------------------------------- Adam by hand

    // torch.optim.Adam(W): (AdamW: p ·= 1 − lr·wd) (Adam: g += wd·p); m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
    // p −= lr · (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + ε).
    static List<double[]> AdamByHand(double[] lrs, double b1, double b2, double eps, double wd, bool decoupled)
    {
        var p = (double[])P0.Clone();
        var m = new double[3];
        var v = new double[3];
        var r = new List<double[]>();
        for (int k = 0; k < 3; k++)
        {
            int t = k + 1;
            double lr = lrs[k];
            for (int i = 0; i < 3; i++)
            {
                double g = Grads[k][i];
                if (decoupled) p[i] *= 1 - lr * wd;
                else g += wd * p[i];
                m[i] = b1 * m[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                double mHat = m[i] / (1 - Math.Pow(b1, t));
                double vHat = v[i] / (1 - Math.Pow(b2, t));
                p[i] -= lr * mHat / (Math.Sqrt(vHat) + eps);
            }
            r.Add((double[])p.Clone());
        }
        return r;
    }

    [Test]
    public void AdamWithBiasCorrection()
    {
        using var p = Param();
        using var opt = new Adam([p], lr: 0.1);
        var got = Run(opt, p);
        // The first bias-corrected step is lr·sign(g) (up to ε): [0.9, −1.9, 0.4].
        Ref.AssertClose(got[0], [0.9, -1.9, 0.4], 1e-7, 1e-7, "first Adam step written out");
        AssertSteps(got, AdamByHand([0.1, 0.1, 0.1], 0.9, 0.999, 1e-8, 0, false), "Adam");
        var st = opt.StateDict();
        Assert.That(st.Tensors.Keys, Is.EqualTo(new[] { "state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step" }));
        Assert.That(st.Tensors["state.0.step"].Item(), Is.EqualTo(3.0));
        Assert.That(st.Scalars["param_groups.0.lr"], Is.EqualTo(0.1));
        Assert.That(st.Scalars["param_groups.0.beta2"], Is.EqualTo(0.999));
        // m after 3 steps by hand, element 0: ((0.1·0.5)·0.9 + 0.1·0.25)·0.9 + 0.1·(−0.75).
        Assert.That(D(st.Tensors["state.0.exp_avg"])[0], Is.EqualTo((0.05 * 0.9 + 0.025) * 0.9 - 0.075).Within(1e-15));
    }

    [Test]
    public void AdamWithL2WeightDecay()
    {
        using var p = Param();
        using var opt = new Adam([p], lr: 0.05, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.3);
        AssertSteps(Run(opt, p), AdamByHand([0.05, 0.05, 0.05], 0.8, 0.99, 1e-6, 0.3, false), "Adam + L2");
    }

    [Test]
    public void AdamWDecouplesTheDecay()
    {
        using var p = Param();
        using var opt = new AdamW([p], lr: 0.1, weightDecay: 0.5);
        var got = Run(opt, p);
        AssertSteps(got, AdamByHand([0.1, 0.1, 0.1], 0.9, 0.999, 1e-8, 0.5, true), "AdamW");
        // Decoupled: step 1 element 0 = 1·(1 − 0.05) − 0.1 (up to ε), not what L2 decay gives.
        Assert.That(got[0][0], Is.EqualTo(0.85).Within(1e-7));
        using var q = Param();
        using var l2 = new Adam([q], lr: 0.1, weightDecay: 0.5);
        Assert.That(Run(l2, q)[2], Is.Not.EqualTo(got[2]));
        using var r = Param();
        using var dflt = new AdamW([r]);
        Assert.That(dflt.ParamGroups[0].Options["weight_decay"], Is.EqualTo(0.01), "PyTorch's AdamW default");
        Assert.Throws<EngineException>(() => new Adam([r], beta1: 1.0));
        Assert.Throws<EngineException>(() => new Adam([r], beta2: -0.1));
        Assert.Throws<EngineException>(() => new Adam([r], lr: -1));
        Assert.Throws<EngineException>(() => new AdamW([r], weightDecay: -1));
    }

    [Test]
    public void AdamInFloat32MatchesTheFloat64Reference()
    {
        using var p = Param(DType.Float32);
        using var opt = new AdamW([p], lr: 0.1, weightDecay: 0.1);
        AssertSteps(Run(opt, p), AdamByHand([0.1, 0.1, 0.1], 0.9, 0.999, 1e-8, 0.1, true), "float32 AdamW", 1e-6, 1e-7);
        Assert.That(opt.StateDict().Tensors["state.0.exp_avg"].DType, Is.EqualTo(DType.Float32));
    }

    // The CPU kernel updates dense float32 parameters four at a time in float64 lanes; every element (the lanes and
    // the n mod 4 tail, across the parallel chunks) must have the bits of the one-element float64 update rounded
    // once, written out here in torch.optim's order.
    [TestCase(true, 0.01)]
    [TestCase(false, 0.2)]
    [TestCase(true, 0.0)]
    public void Float32AdamHasTheScalarFloat64UpdateBits(bool decoupled, double wd)
    {
        const int n = 3 * (1 << 14) + 7;
        const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8;
        var rng = new Random(11);
        double Wide() => (rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-30, 12));
        var p0 = new double[n];
        for (int i = 0; i < n; i++) p0[i] = (float)Wide();
        using var p0t = Tensor.FromArray(p0, [n]);
        using var p = p0t.To(DType.Float32).Clone();
        p.RequiresGrad = true;
        using Optimizer opt = decoupled ? new AdamW([p], lr, b1, b2, eps, wd) : new Adam([p], lr, b1, b2, eps, wd);
        float[] x = p0.Select(d => (float)d).ToArray(), m = new float[n], v = new float[n];
        for (int t = 1; t <= 3; t++)
        {
            var g = new double[n];
            for (int i = 0; i < n; i++) g[i] = (float)Wide();
            g[5] = 0; g[n - 1] = 1e30; // a zero and a huge gradient (its square overflows float32, not float64)
            NnTestUtil.SetGrad(p, g);
            opt.Step();
            double stepSize = lr / (1 - Math.Pow(b1, t)), sqrtBias2 = Math.Sqrt(1 - Math.Pow(b2, t));
            for (int i = 0; i < n; i++)
            {
                double xi = x[i], gi = (float)g[i];
                if (wd != 0) { if (decoupled) xi *= 1 - lr * wd; else gi += wd * xi; }
                double mi = b1 * m[i] + (1 - b1) * gi;
                double vi = b2 * v[i] + (1 - b2) * gi * gi;
                xi -= stepSize * mi / (Math.Sqrt(vi) / sqrtBias2 + eps);
                x[i] = (float)xi; m[i] = (float)mi; v[i] = (float)vi;
            }
            var got = p.ToArray<float>();
            for (int i = 0; i < n; i++)
                if (BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits(x[i]))
                    Assert.Fail($"step {t}, element {i} of {n}: {got[i]:R}, expected {x[i]:R}");
        }
    }

    [TestCase(DType.Float16)]
    [TestCase(DType.BFloat16)]
    public void HalfParametersKeepHalfMomentsAndRoundOnce(DType dt)
    {
        // Reference: the update in double from the stored (rounded) values, each result rounded once to the dtype.
        var p = P0.Select(v => Ref.RoundTo(v, dt)).ToArray();
        var m = new double[3];
        var v2 = new double[3];
        var want = new List<double[]>();
        for (int k = 0; k < 3; k++)
        {
            int t = k + 1;
            for (int i = 0; i < 3; i++)
            {
                double g = Grads[k][i], x = p[i] * (1 - 0.1 * 0.01);
                double mi = 0.9 * m[i] + 0.1 * g, vi = 0.999 * v2[i] + 0.001 * g * g;
                x -= 0.1 / (1 - Math.Pow(0.9, t)) * mi / (Math.Sqrt(vi) / Math.Sqrt(1 - Math.Pow(0.999, t)) + 1e-8);
                m[i] = Ref.RoundTo(mi, dt); v2[i] = Ref.RoundTo(vi, dt); p[i] = Ref.RoundTo(x, dt);
            }
            want.Add((double[])p.Clone());
        }
        using var param = Param(dt);
        using var opt = new AdamW([param], lr: 0.1, weightDecay: 0.01);
        var got = Run(opt, param);
        var (rtol, atol) = Ref.Tol(dt);
        AssertSteps(got, want, $"{dt} AdamW", rtol, atol);
        Assert.That(opt.StateDict().Tensors["state.0.exp_avg_sq"].DType, Is.EqualTo(dt));
        Ref.AssertClose(D(opt.StateDict().Tensors["state.0.exp_avg_sq"]), v2, rtol, atol, $"{dt} second moment");
    }

    [Test]
    public void LearningRateIsSettableBetweenSteps()
    {
        using var p = Param();
        using var opt = new Adam([p], lr: 0.1);
        double[] lrs = [0.1, 0.03, 0.2];
        var got = Run(opt, p, k => opt.ParamGroups[0].Lr = lrs[k]);
        AssertSteps(got, AdamByHand(lrs, 0.9, 0.999, 1e-8, 0, false), "Adam with a changing lr");
        Assert.That(opt.StateDict().Scalars["param_groups.0.lr"], Is.EqualTo(0.2));
    }

    [Test]
    public void ParamGroupsHaveTheirOwnOptions()
    {
        using var a = Param();
        using var b = Param();
        var g2 = new ParamGroup([b], new Dictionary<string, double> { ["lr"] = 0.01, ["momentum"] = 0.5 });
        using var opt = new Sgd([new ParamGroup([a]), g2], lr: 0.1);
        Assert.Multiple(() =>
        {
            Assert.That(opt.ParamGroups, Has.Count.EqualTo(2));
            Assert.That(opt.ParamGroups[0].Lr, Is.EqualTo(0.1));
            Assert.That(opt.ParamGroups[1].Lr, Is.EqualTo(0.01));
            Assert.That(opt.ParamGroups[1].Options["dampening"], Is.EqualTo(0.0), "missing options come from the defaults");
            Assert.That(opt.ParamGroups[0].Options["momentum"], Is.EqualTo(0.0));
        });
        var ra = new List<double[]>();
        var rb = new List<double[]>();
        for (int k = 0; k < 3; k++)
        {
            NnTestUtil.SetGrad(a, Grads[k]);
            NnTestUtil.SetGrad(b, Grads[k]);
            opt.Step();
            ra.Add(D(a)); rb.Add(D(b));
        }
        AssertSteps(ra, SgdByHand(0.1, 0, 0, 0, false), "group 0");
        AssertSteps(rb, SgdByHand(0.01, 0.5, 0, 0, false), "group 1");
        opt.ZeroGrad(setToNone: false);
        Assert.That(D(a.Grad!), Is.EqualTo(new[] { 0.0, 0.0, 0.0 }), "zero-filled in place");
        Assert.That(D(b.Grad!), Is.EqualTo(new[] { 0.0, 0.0, 0.0 }));
        opt.ZeroGrad();
        Assert.That(a.Grad, Is.Null);
        Assert.That(b.Grad, Is.Null);

        using var c = Param();
        opt.AddParamGroup(new ParamGroup([c], new Dictionary<string, double> { ["lr"] = 0.5 }));
        Assert.That(opt.ParamGroups[2].Options["momentum"], Is.EqualTo(0.0));
        var e = Assert.Throws<EngineException>(() => opt.AddParamGroup(new ParamGroup([a])));
        Assert.That(e!.Message, Does.Contain("more than one parameter group"));
        Assert.Throws<EngineException>(() => new Sgd(Array.Empty<Tensor>(), lr: 0.1));
    }

    [Test]
    public void ParametersWithoutGradAreSkipped()
    {
        using var a = Param();
        using var b = Param(v: [3.0, 4.0, 5.0]);
        using var opt = new Adam([a, b], lr: 0.1);
        for (int k = 0; k < 2; k++)
        {
            NnTestUtil.SetGrad(a, Grads[k]);
            opt.Step();
        }
        Assert.That(D(b), Is.EqualTo(new[] { 3.0, 4.0, 5.0 }), "no gradient, no change (not even weight decay)");
        Assert.That(opt.StateDict().Tensors.Keys.Any(k => k.StartsWith("state.1.", StringComparison.Ordinal)), Is.False, "no state for it");
        // Its first step later is a first step: bias correction uses its own count.
        NnTestUtil.SetGrad(b, [1.0, -1.0, 0.5]);
        NnTestUtil.SetGrad(a, Grads[2]);
        opt.Step();
        Ref.AssertClose(D(b), [2.9, 4.1, 4.9], 1e-7, 1e-7, "b's first step");
        Assert.That(opt.StateDict().Tensors["state.1.step"].Item(), Is.EqualTo(1.0));
        Assert.That(opt.StateDict().Tensors["state.0.step"].Item(), Is.EqualTo(3.0));
        opt.ZeroGrad();
    }

    // ---------------------------------------------------------------- checkpoints

    static Mlp Model(ulong seed) => new([2, 8, 3], "tanh", generator: new Generator(seed));

    static void TrainStep(Mlp m, Optimizer opt, int step)
    {
        using var scope = Tensor.NewScope();
        var rng = new Random(100 + step);
        var x = Tensor.FromArray(Ref.Random(rng, 12, DType.Float32), [6, 2]).To(DType.Float32);
        var t = Tensor.FromArray(new long[] { 0, 1, 2, 2, 1, 0 }, [6]);
        opt.ZeroGrad();
        m.Forward(x).CrossEntropy(t).Backward();
        opt.Step();
    }

    [TestCase("adamw")]
    [TestCase("sgd")]
    public void StateDictResumesBitForBit(string kind)
    {
        Optimizer Make(Mlp m, double lr) => kind == "adamw"
            ? new AdamW(m.Parameters(), lr: lr, weightDecay: 0.1)
            : new Sgd(m.Parameters(), lr: lr, momentum: 0.9, dampening: 0.1, weightDecay: 0.01);

        using var a = Model(1);
        using var optA = Make(a, 0.05);
        for (int s = 0; s < 5; s++) TrainStep(a, optA, s);

        using var b = Model(1);
        using var optB = Make(b, 0.05);
        for (int s = 0; s < 2; s++) TrainStep(b, optB, s);
        // A checkpoint: copies of the model and optimizer state.
        var modelState = b.StateDict().ToDictionary(kv => kv.Key, kv => kv.Value.Clone().DetachFromScopes());
        var saved = optB.StateDict();
        var optState = new OptimizerState(new OrderedDictionary<string, Tensor>(saved.Tensors.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.Clone().DetachFromScopes()))),
                                          new Dictionary<string, double>(saved.Scalars));
        try
        {
            using var c = Model(99);
            using var optC = Make(c, 0.7); // a different lr: the checkpoint's wins
            c.LoadStateDict(modelState);
            optC.LoadStateDict(optState);
            Assert.That(optC.ParamGroups[0].Lr, Is.EqualTo(0.05));
            for (int s = 2; s < 5; s++) TrainStep(c, optC, s);
            NnTestUtil.AssertSameBits(NnTestUtil.Snapshot(a), NnTestUtil.Snapshot(c), $"{kind} resumed vs uninterrupted");
            // The loaded state is a copy: changing the checkpoint afterwards does not reach the optimizer.
            Assert.That(optC.StateDict().Tensors.Values.Any(t => optState.Tensors.Values.Any(u => ReferenceEquals(t.Storage, u.Storage))), Is.False);
        }
        finally
        {
            foreach (var t in modelState.Values) t.Dispose();
            foreach (var t in optState.Tensors.Values) t.Dispose();
        }
        var bad = new OptimizerState(new OrderedDictionary<string, Tensor>(), new Dictionary<string, double>());
        using var z = Tensor.Zeros([3]);
        bad.Tensors["state.7.exp_avg"] = z;
        bad.Tensors["state.0." + (kind == "adamw" ? "exp_avg" : "momentum_buffer")] = z;
        var keep = optA.StateDict().Tensors.ToDictionary(kv => kv.Key, kv => D(kv.Value));
        var e = Assert.Throws<EngineException>(() => optA.LoadStateDict(bad));
        Assert.That(e!.Message, Does.Contain("state.7.exp_avg"));
        var now = optA.StateDict().Tensors.ToDictionary(kv => kv.Key, kv => D(kv.Value));
        Assert.That(now, Is.EqualTo(keep), "a failed load changes nothing");
        var badGroup = new OptimizerState(new OrderedDictionary<string, Tensor>(), new Dictionary<string, double> { ["param_groups.3.lr"] = 1 });
        Assert.Throws<EngineException>(() => optA.LoadStateDict(badGroup));

        // Loading replaces the state: an empty state is a fresh start (as PyTorch's load_state_dict).
        optA.LoadStateDict(new OptimizerState(new OrderedDictionary<string, Tensor>(), new Dictionary<string, double>()));
        Assert.That(optA.StateDict().Tensors, Is.Empty);
        Assert.That(optA.ParamGroups[0].Lr, Is.EqualTo(0.05), "options not in the state are kept");
    }

    [Test]
    public void GradientViewsAreAccepted()
    {
        // A gradient that is a view (contiguous with an offset, or strided) is read through a dense copy.
        using var p = Param();
        using var q = Param();
        using var optP = new Adam([p], lr: 0.1);
        using var optQ = new Adam([q], lr: 0.1);
        for (int k = 0; k < 3; k++)
        {
            var buf = new double[8];
            for (int i = 0; i < 3; i++) buf[4 + i] = Grads[k][i];
            using var big = Tensor.FromArray(buf);
            p.Grad?.Dispose();
            p.Grad = big.Narrow(0, 4, 3); // offset 4 into a storage of 8
            var sbuf = new double[7];
            for (int i = 0; i < 3; i++) sbuf[1 + 2 * i] = Grads[k][i];
            using var sbig = Tensor.FromArray(sbuf);
            NnTestUtil.SetGrad(q, Grads[k]);
            optP.Step();
            optQ.Step();
            Assert.That(NnTestUtil.BitsOf(D(p)), Is.EqualTo(NnTestUtil.BitsOf(D(q))), $"offset view, step {k + 1}");
            p.Grad.Dispose();
            p.Grad = sbig.Slice(0, 1, 7, 2);
            Assert.That(p.Grad.IsContiguous, Is.False);
        }
        optP.ZeroGrad(); optQ.ZeroGrad();
        AssertSteps([D(q)], [AdamByHand([0.1, 0.1, 0.1], 0.9, 0.999, 1e-8, 0, false)[2]], "reference");
    }

    // ---------------------------------------------------------------- AMP inputs

    static (double[] P, Dictionary<string, double[]> S) Capture(Tensor p, Optimizer opt) =>
        (D(p), opt.StateDict().Tensors.ToDictionary(kv => kv.Key, kv => D(kv.Value)));

    static void AssertSameState((double[] P, Dictionary<string, double[]> S) a, (double[] P, Dictionary<string, double[]> S) b, string what)
    {
        Assert.That(NnTestUtil.BitsOf(b.P), Is.EqualTo(NnTestUtil.BitsOf(a.P)), $"{what}: parameter");
        Assert.That(b.S.Keys, Is.EquivalentTo(a.S.Keys), what);
        foreach (var (k, v) in a.S) Assert.That(NnTestUtil.BitsOf(b.S[k]), Is.EqualTo(NnTestUtil.BitsOf(v)), $"{what}: {k}");
    }

    [TestCase("adam", DType.Float32)]
    [TestCase("adam", DType.Float64)]
    [TestCase("sgd", DType.Float32)]
    public void FoundInfSkipsAndInvScaleUnscales(string kind, DType dt)
    {
        Optimizer Make(Tensor p) => kind == "adam" ? new Adam([p], lr: 0.1, weightDecay: 0.01) : new Sgd([p], lr: 0.1, momentum: 0.9, weightDecay: 0.01);
        using var p = Param(dt);
        using var opt = Make(p);
        using var one = Tensor.Scalar(1.0);
        using var half = Tensor.Scalar(0.5);
        using var inf = Tensor.Scalar(1.0);
        using var noInf = Tensor.Scalar(0.0);
        for (int k = 0; k < 2; k++) { NnTestUtil.SetGrad(p, Grads[k]); opt.Step(); }
        var before = Capture(p, opt);
        NnTestUtil.SetGrad(p, [double.PositiveInfinity, double.NaN, 1.0]);
        opt.Step(one, inf);
        AssertSameState(before, Capture(p, opt), "a skipped step");
        if (kind == "adam") Assert.That(before.S["state.0.step"], Is.EqualTo(new[] { 2.0 }));

        // Stepping with scaled gradients and invScale 0.5 equals stepping with the gradients halved.
        using var q = Param(dt);
        using var optQ = Make(q);
        for (int k = 0; k < 2; k++) { NnTestUtil.SetGrad(q, Grads[k]); optQ.Step(); }
        NnTestUtil.SetGrad(p, Grads[2].Select(g => 2 * g).ToArray());
        opt.Step(half, noInf);
        NnTestUtil.SetGrad(q, Grads[2]);
        optQ.Step();
        AssertSameState(Capture(q, optQ), Capture(p, opt), "invScale 0.5 vs halved gradients");
        if (kind == "adam") Assert.That(opt.StateDict().Tensors["state.0.step"].Item(), Is.EqualTo(3.0));
        // A null foundInf with an invScale also unscales.
        NnTestUtil.SetGrad(p, Grads[0].Select(g => 2 * g).ToArray());
        opt.Step(half, null);
        NnTestUtil.SetGrad(q, Grads[0]);
        optQ.Step();
        AssertSameState(Capture(q, optQ), Capture(p, opt), "invScale without foundInf");

        using var wrong = Tensor.Scalar(1.0, DType.Float64);
        var e = Assert.Throws<DTypeException>(() => opt.Step(wrong, null));
        Assert.That(e!.Message, Does.Contain(kind == "adam" ? "AdamUpdate" : "SgdUpdate"));
        opt.ZeroGrad(); optQ.ZeroGrad();
    }

    [Test]
    public void FusedUpdatesCheckTheirOperands()
    {
        using var p = Param(DType.Float32);
        using var g = Tensor.Zeros([4]);
        using var m = Tensor.Zeros([3]);
        using var v = Tensor.Zeros([3]);
        using var step = Tensor.Zeros([]);
        var cfg = new Engine.Backends.AdamConfig(0.1, 0.9, 0.999, 1e-8, 0, false);
        var e = Assert.Throws<ShapeException>(() => Tensor.AdamUpdate(p, g, m, v, step, cfg));
        Assert.That(e!.Message, Does.Contain("AdamUpdate").And.Contain("[4]"));
        using var m64 = Tensor.Zeros([3], DType.Float64);
        Assert.Throws<DTypeException>(() => Tensor.AdamUpdate(p, m, m64, v, step, cfg));
        using var big = Tensor.Zeros([6]);
        using var strided = big.Slice(0, 0, 6, 2);
        Assert.Throws<ShapeException>(() => Tensor.AdamUpdate(p, strided, m, v, step, cfg));
        Assert.That(D(p), Is.EqualTo(P0), "a failed update changes nothing");
        Assert.That(step.Item(), Is.EqualTo(0.0));
        // A float16 gradient for a float32 parameter is accepted (read and converted in the kernel).
        using var gh = Tensor.FromArray(new[] { 0.5, -1.0, 2.0 }, [3]).To(DType.Float16);
        Tensor.AdamUpdate(p, gh, m, v, step, cfg);
        Ref.AssertClose(D(p), [0.9, -1.9, 0.4], 1e-6, 1e-6, "Adam step with a float16 gradient");
        Assert.That(step.Item(), Is.EqualTo(1.0));
    }

    // ---------------------------------------------------------------- schedules

    [Test]
    public void WarmupCosineValues()
    {
        using var a = Param();
        using var b = Param();
        using var opt = new Sgd([new ParamGroup([a]), new ParamGroup([b], new Dictionary<string, double> { ["lr"] = 0.5 })], lr: 1.0);
        var s = new WarmupCosineLr(opt, warmupSteps: 10, totalSteps: 110, minLr: 0.1);
        // Warm-up: (step + 1)/10 of the base rate, applied at construction for step 0.
        Assert.That(s.CurrentLr, Is.EqualTo(0.1).Within(1e-15));
        Assert.That(opt.ParamGroups[1].Lr, Is.EqualTo(0.05).Within(1e-15));
        var seen = new Dictionary<long, double> { [0] = s.CurrentLr };
        for (int i = 1; i <= 150; i++) { s.Step(); seen[s.LastStep] = s.CurrentLr; }
        Assert.Multiple(() =>
        {
            Assert.That(seen[4], Is.EqualTo(0.5).Within(1e-15));
            Assert.That(seen[9], Is.EqualTo(1.0).Within(1e-15));
            Assert.That(seen[10], Is.EqualTo(1.0).Within(1e-15), "cosine starts at the base rate");
            // A quarter of the way: 0.1 + 0.45·(1 + cos(π/4)).
            Assert.That(seen[35], Is.EqualTo(0.1 + 0.45 * (1 + Math.Sqrt(0.5))).Within(1e-12));
            Assert.That(seen[60], Is.EqualTo(0.55).Within(1e-12), "half way");
            Assert.That(seen[109], Is.EqualTo(0.1 + 0.45 * (1 + Math.Cos(Math.PI * 0.99))).Within(1e-12));
            Assert.That(seen[110], Is.EqualTo(0.1).Within(1e-15));
            Assert.That(seen[150], Is.EqualTo(0.1).Within(1e-15));
            Assert.That(s.LrAt(60, 0.5), Is.EqualTo(0.1 + 0.2 * 1).Within(1e-12));
        });
        for (int i = 11; i < 110; i++) Assert.That(seen[i], Is.LessThanOrEqualTo(seen[i - 1] + 1e-15), $"monotone decay at {i}");
        s.SetStep(60);
        Assert.That(opt.ParamGroups[0].Lr, Is.EqualTo(0.55).Within(1e-12));
        Assert.That(opt.ParamGroups[1].Lr, Is.EqualTo(0.1 + 0.2).Within(1e-12), "the second group decays from its own base to minLr");
        Assert.That(s.LastStep, Is.EqualTo(60));
    }

    [Test]
    public void StepLrValues()
    {
        using var a = Param();
        using var opt = new Adam([a], lr: 0.8);
        var s = new StepLr(opt, stepSize: 3, gamma: 0.5);
        var lrs = new List<double> { s.CurrentLr };
        for (int i = 0; i < 7; i++) { s.Step(); lrs.Add(opt.ParamGroups[0].Lr); }
        Assert.That(lrs, Is.EqualTo(new[] { 0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2, 0.2 }));
        Assert.That(s.Optimizer, Is.SameAs(opt));
    }

    // ---------------------------------------------------------------- clipping

    [Test]
    public void ClipGradNormMatchesAHandComputation()
    {
        using var a = Tensor.Zeros([2, 2], requiresGrad: true);
        using var b = Tensor.Zeros([3], requiresGrad: true);
        using var c = Tensor.Zeros([2], requiresGrad: true); // no gradient: ignored
        double[] ga = [3.0, -4.0, 1.0, 2.0], gb = [-2.0, 0.5, 1.5];
        void Reset() { NnTestUtil.SetGrad(a, ga); NnTestUtil.SetGrad(b, gb); }
        double total = Math.Sqrt(ga.Concat(gb).Sum(x => x * x)); // √36.5

        Reset();
        using (var n = ClipGrad.ClipGradNorm([a, b, c], maxNorm: 3.0))
        {
            Assert.That(n.Rank, Is.EqualTo(0));
            Assert.That(n.DType, Is.EqualTo(DType.Float32));
            Assert.That(n.Item(), Is.EqualTo(total).Within(1e-6 * total));
        }
        double coef = 3.0 / (total + 1e-6);
        Ref.AssertClose(D(a.Grad!), ga.Select(x => x * coef).ToArray(), DType.Float32, "clipped a");
        Ref.AssertClose(D(b.Grad!), gb.Select(x => x * coef).ToArray(), DType.Float32, "clipped b");
        double after = Math.Sqrt(D(a.Grad!).Concat(D(b.Grad!)).Sum(x => x * x));
        Assert.That(after, Is.EqualTo(3.0).Within(1e-5));
        Assert.That(c.Grad, Is.Null);

        // Below the limit: untouched bit for bit.
        Reset();
        using (var n = ClipGrad.ClipGradNorm([a, b], maxNorm: 100.0)) Assert.That(n.Item(), Is.EqualTo(total).Within(1e-6 * total));
        Assert.That(D(a.Grad!), Is.EqualTo(ga));
        Assert.That(D(b.Grad!), Is.EqualTo(gb));

        // The infinity norm is the largest magnitude.
        Reset();
        using (var n = ClipGrad.ClipGradNorm([a, b], maxNorm: 2.0, normType: double.PositiveInfinity))
            Assert.That(n.Item(), Is.EqualTo(4.0));
        Ref.AssertClose(D(a.Grad!), ga.Select(x => x * 2.0 / (4.0 + 1e-6)).ToArray(), DType.Float32, "inf-norm clipped a");

        // The 1-norm.
        Reset();
        using (var n = ClipGrad.ClipGradNorm([a, b], maxNorm: 100.0, normType: 1))
            Assert.That(n.Item(), Is.EqualTo(14.0).Within(1e-5));

        // A non-finite gradient makes the norm non-finite and it propagates into the gradients.
        NnTestUtil.SetGrad(a, [3.0, double.PositiveInfinity, 1.0, 2.0]);
        NnTestUtil.SetGrad(b, gb);
        using (var n = ClipGrad.ClipGradNorm([a, b], maxNorm: 1.0))
            Assert.That(double.IsPositiveInfinity(n.Item()), Is.True);
        Assert.That(D(a.Grad!).Concat(D(b.Grad!)).Any(x => !double.IsFinite(x)), Is.True);
        NnTestUtil.SetGrad(a, [3.0, double.NaN, 1.0, 2.0]);
        using (var n = ClipGrad.ClipGradNorm([a, b], maxNorm: 1.0))
            Assert.That(double.IsNaN(n.Item()), Is.True);
        Assert.That(D(a.Grad!).Any(double.IsNaN), Is.True);

        // No gradients at all: a zero norm.
        a.Grad!.Dispose(); a.Grad = null; b.Grad!.Dispose(); b.Grad = null;
        using (var n = ClipGrad.ClipGradNorm([a, b, c], maxNorm: 1.0))
        {
            Assert.That(n.Rank, Is.EqualTo(0));
            Assert.That(n.Item(), Is.EqualTo(0.0));
        }
    }

    [Test]
    public void ClipGradNormOnFloat64GradientsKeepsTheirPrecision()
    {
        using var a = Tensor.Zeros([4], DType.Float64, requiresGrad: true);
        using var b = Tensor.Zeros([1], DType.Float32, requiresGrad: true);
        NnTestUtil.SetGrad(a, [1.0, 2.0, 2.0, 4.0]); // norm 5
        using (var n = ClipGrad.ClipGradNorm([a], 2.5))
        {
            Assert.That(n.DType, Is.EqualTo(DType.Float64));
            Assert.That(n.Item(), Is.EqualTo(5.0).Within(1e-15));
        }
        Assert.That(a.Grad!.DType, Is.EqualTo(DType.Float64));
        Ref.AssertClose(D(a.Grad!), new[] { 0.5, 1.0, 1.0, 2.0 }.Select(v => v * 5 / (5 + 1e-6)).ToArray(), 1e-14, 1e-15, "float64 clipped");

        // Beyond float32's range: the norm is still finite and the gradients are scaled, not turned into NaN.
        NnTestUtil.SetGrad(a, [3e100, 4e100, 0, 0]);
        NnTestUtil.SetGrad(b, [0.0]);
        using (var n = ClipGrad.ClipGradNorm([a, b], 1.0))
            Assert.That(n.Item(), Is.EqualTo(5e100).Within(1e86));
        Ref.AssertClose(D(a.Grad!), [0.6, 0.8, 0, 0], 1e-12, 1e-15, "huge float64 gradients clipped");
        Assert.That(D(b.Grad!), Is.EqualTo(new[] { 0.0 }));
        a.Grad!.Dispose(); a.Grad = null; b.Grad!.Dispose(); b.Grad = null;
    }

    // ---------------------------------------------------------------- data loading

    [Test]
    public void DataLoaderCoversEveryRowOncePerEpochReproducibly()
    {
        const int n = 10;
        var x = new double[n * 2];
        for (int i = 0; i < n; i++) { x[2 * i] = 10 * i; x[2 * i + 1] = 10 * i + 1; }
        using var inputs = Tensor.FromArray(x, [n, 2]);
        using var targets = Tensor.FromArray(Enumerable.Range(0, n).Select(i => (long)i).ToArray(), [n]);

        List<long> Order(DataLoader dl, int epoch)
        {
            var order = new List<long>();
            foreach (var (bx, by) in dl.Epoch(epoch))
            {
                using (bx) using (by)
                {
                    var xs = D(bx); var ys = by.ToArray<long>();
                    Assert.That(bx.Shape, Is.EqualTo(new[] { ys.Length, 2 }));
                    for (int r = 0; r < ys.Length; r++)
                        Assert.That(xs[2 * r], Is.EqualTo(10.0 * ys[r]), "inputs and targets stay paired");
                    order.AddRange(ys);
                }
            }
            return order;
        }

        var dl1 = new DataLoader(inputs, targets, 3, shuffle: true, seed: 5);
        Assert.That(dl1.Count, Is.EqualTo(4));
        Assert.That(dl1.BatchSize, Is.EqualTo(3));
        var e0 = Order(dl1, 0);
        var e1 = Order(dl1, 1);
        Assert.That(e0, Is.EquivalentTo(Enumerable.Range(0, n).Select(i => (long)i)), "every row once");
        Assert.That(e1, Is.EquivalentTo(e0));
        Assert.That(e1, Is.Not.EqualTo(e0), "epochs are shuffled differently");
        Assert.That(e0, Is.Not.EqualTo(Enumerable.Range(0, n).Select(i => (long)i)), "shuffled");
        var again = new DataLoader(inputs, targets, 3, shuffle: true, seed: 5);
        Assert.That(Order(again, 0), Is.EqualTo(e0), "same seed, same order");
        Assert.That(Order(again, 1), Is.EqualTo(e1));
        var other = new DataLoader(inputs, targets, 3, shuffle: true, seed: 6);
        Assert.That(Order(other, 0), Is.Not.EqualTo(e0), "another seed, another order");

        var plain = new DataLoader(inputs, targets, 4, shuffle: false);
        Assert.That(Order(plain, 0), Is.EqualTo(Enumerable.Range(0, n).Select(i => (long)i)));
        var drop = new DataLoader(inputs, targets, 4, shuffle: true, seed: 1, dropLast: true);
        Assert.That(drop.Count, Is.EqualTo(2));
        var dropped = Order(drop, 0);
        Assert.That(dropped, Has.Count.EqualTo(8));
        Assert.That(dropped, Is.Unique);

        Assert.Throws<EngineException>(() => new DataLoader(inputs, targets, 0));
        using var shortTargets = Tensor.FromArray(new long[] { 1, 2 }, [2]);
        var bad = new DataLoader(inputs, shortTargets, 2);
        Assert.Throws<ShapeException>(() => bad.Epoch().ToList());
    }
}

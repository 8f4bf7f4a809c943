using Engine.Amp;
using Engine.Autocast;
using Engine.Autograd;
using Engine.Backends.Cpu;
using Engine.Backends.Cpu.Gemm;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Autograd;

/// <summary>
/// <see cref="Tensor.ScaledDotProductAttention"/>: forward and backward against a float64 reference written here and
/// against the unfused matmul/softmax composition, float64 gradcheck, masks (Bool and additive, broadcast), causal,
/// scale, broadcast batch dims, L ≠ S, size-1 and empty dims, non-contiguous operands, dropout, bf16, errors and
/// independence from the thread count.
/// </summary>
public class SdpaTests
{
    // o = softmax(q·kᵀ·scale + mask)·v per head and the gradients for an upstream g, in float64; q [B, L, E] etc.
    // mask is additive [B, L, S] (−∞ hides) or null.
    static (double[] O, double[] Dq, double[] Dk, double[] Dv) Reference(double[] q, double[] k, double[] v, double[]? mask, double[] g,
        int b, int l, int s, int e, int ev, double scale, bool causal)
    {
        var o = new double[b * l * ev]; var dq = new double[b * l * e]; var dk = new double[b * s * e]; var dv = new double[b * s * ev];
        for (int h = 0; h < b; h++)
            for (int i = 0; i < l; i++)
            {
                var sc = new double[s];
                double max = double.NegativeInfinity;
                for (int j = 0; j < s; j++)
                {
                    double d = 0;
                    for (int x = 0; x < e; x++) d += q[(h * l + i) * e + x] * k[(h * s + j) * e + x];
                    d *= scale;
                    if (mask is not null) d += mask[(h * l + i) * s + j];
                    if (causal && j > i) d = double.NegativeInfinity;
                    sc[j] = d; max = Math.Max(max, d);
                }
                double sum = 0;
                var p = new double[s];
                for (int j = 0; j < s; j++) sum += p[j] = Math.Exp(sc[j] - max);
                for (int j = 0; j < s; j++) p[j] /= sum;
                for (int c = 0; c < ev; c++)
                    for (int j = 0; j < s; j++) o[(h * l + i) * ev + c] += p[j] * v[(h * s + j) * ev + c];
                // dP = g·vᵀ, dS = P∘(dP − Σ P∘dP), then the three products.
                var dp = new double[s];
                double dot = 0;
                for (int j = 0; j < s; j++)
                {
                    for (int c = 0; c < ev; c++) dp[j] += g[(h * l + i) * ev + c] * v[(h * s + j) * ev + c];
                    dot += p[j] * dp[j];
                }
                for (int j = 0; j < s; j++)
                {
                    double ds = p[j] * (dp[j] - dot) * scale;
                    for (int x = 0; x < e; x++)
                    {
                        dq[(h * l + i) * e + x] += ds * k[(h * s + j) * e + x];
                        dk[(h * s + j) * e + x] += ds * q[(h * l + i) * e + x];
                    }
                    for (int c = 0; c < ev; c++) dv[(h * s + j) * ev + c] += p[j] * g[(h * l + i) * ev + c];
                }
            }
        return (o, dq, dk, dv);
    }

    static double[] Rand(int n, int seed, double lo = -1.5, double hi = 1.5)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => lo + (hi - lo) * rng.NextDouble()).ToArray();
    }

    static Tensor Leaf(double[] v, int[] shape, DType dt)
    {
        using var t = Tensor.FromArray(v, shape);
        var c = t.To(dt);
        c.RequiresGrad = true;
        return c;
    }

    // Runs the op (fused, or the explicit composition) and backward with upstream g; returns o, dq, dk, dv as float64.
    static (double[] O, double[] Dq, double[] Dk, double[] Dv) Run(Func<Tensor, Tensor, Tensor, Tensor> f, double[] q, int[] qs, double[] k, int[] ks,
        double[] v, int[] vs, double[] g, DType dt)
    {
        using var scope = Tensor.NewScope();
        var tq = Leaf(q, qs, dt); var tk = Leaf(k, ks, dt); var tv = Leaf(v, vs, dt);
        var o = f(tq, tk, tv);
        var tg = Tensor.FromArray(g, o.Layout.Shape.ToArray()).To(dt);
        o.Mul(tg).Sum().Backward();
        return (o.ToArray<double>(), tq.Grad!.ToArray<double>(), tk.Grad!.ToArray<double>(), tv.Grad!.ToArray<double>());
    }

    static Tensor Explicit(Tensor q, Tensor k, Tensor v, Tensor? addMask, bool causal, double scale)
    {
        var att = q.MatMul(k.Transpose(-2, -1)).Mul(scale);
        if (addMask is not null) att = att.Add(addMask);
        if (causal)
        {
            using var ones = Tensor.Ones([q.Size(-2), k.Size(-2)]);
            using var lower = ones.Tril();
            using var future = lower.Eq(0);
            att = att.MaskedFill(future, double.NegativeInfinity);
        }
        return att.Softmax(-1).MatMul(v);
    }

    static void Close(double[] actual, double[] expected, double tol, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what);
        double max = expected.Select(Math.Abs).DefaultIfEmpty(0).Max();
        for (int i = 0; i < actual.Length; i++)
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(tol * (Math.Abs(expected[i]) + 0.1 * max) + 1e-12), $"{what} [{i}]");
    }

    static void Compare((double[] O, double[] Dq, double[] Dk, double[] Dv) got, (double[] O, double[] Dq, double[] Dk, double[] Dv) want, double tol, string what)
    {
        Close(got.O, want.O, tol, what + " o");
        Close(got.Dq, want.Dq, tol, what + " dq");
        Close(got.Dk, want.Dk, tol, what + " dk");
        Close(got.Dv, want.Dv, tol, what + " dv");
    }

    // Sizes beyond one CPU tile (32 queries, 64 keys) and odd ones; L ≠ S both ways; size-1 dims; head sizes as a GPT's
    // (64) and ones that leave vector tails in the tile GEMMs (33, 17).
    static readonly (int B, int L, int S, int E, int Ev)[] Sizes =
        [(2, 5, 7, 4, 3), (1, 1, 1, 1, 1), (3, 9, 4, 5, 6), (2, 37, 70, 8, 5), (2, 100, 130, 64, 48), (1, 45, 67, 33, 17)];

    static IEnumerable<TestCaseData> Cases() =>
        from dt in new[] { DType.Float32, DType.Float64 }
        from z in Sizes
        from mode in new[] { "none", "causal", "additive", "bool" }
        select new TestCaseData(dt, z.B, z.L, z.S, z.E, z.Ev, mode).SetArgDisplayNames(dt.Name(), $"{z.B}x{z.L}x{z.S}x{z.E}x{z.Ev}", mode);

    [TestCaseSource(nameof(Cases))]
    public void ForwardAndBackward_MatchFloat64ReferenceAndComposition(DType dt, int b, int l, int s, int e, int ev, string mode)
    {
        double[] q = Rand(b * l * e, 1), k = Rand(b * s * e, 2), v = Rand(b * s * ev, 3), g = Rand(b * l * ev, 4);
        double scale = mode == "additive" ? 0.7 : 1 / Math.Sqrt(e);
        bool causal = mode == "causal";
        // Bool mask: keep about 3/4, and always key 0 so no row is fully hidden.
        var keep = Rand(b * l * s, 5, 0, 1).Select((x, i) => x < 0.75 || i % s == 0).ToArray();
        double[]? add = mode switch
        {
            "additive" => Rand(b * l * s, 6, -2, 1),
            "bool" => keep.Select(x => x ? 0.0 : double.NegativeInfinity).ToArray(),
            _ => null,
        };
        using var maskScope = Tensor.NewScope();
        Tensor? mask = mode switch
        {
            "additive" => Tensor.FromArray(add!, [b, l, s]).To(dt),
            "bool" => Tensor.FromArray(keep, [b, l, s]),
            _ => null,
        };
        using var addT = add is null ? null : Tensor.FromArray(add, [b, l, s]).To(dt);
        var want = Reference(q, k, v, add, g, b, l, s, e, ev, scale, causal);
        int[] qs = [b, l, e], ks = [b, s, e], vs = [b, s, ev];
        double? sc = mode == "additive" ? scale : null;
        var fused = Run((x, y, z) => Tensor.ScaledDotProductAttention(x, y, z, mask, isCausal: causal, scale: sc), q, qs, k, ks, v, vs, g, dt);
        var comp = Run((x, y, z) => Explicit(x, y, z, addT, causal, scale), q, qs, k, ks, v, vs, g, dt);
        double tol = dt == DType.Float64 ? 1e-10 : 2e-5;
        Compare(fused, want, tol, "fused vs float64");
        Compare(fused, comp, tol, "fused vs composition");
    }

    [Test]
    public void GradCheck_Float64()
    {
        foreach (bool causal in new[] { false, true })
        {
            var q = Leaf(Rand(2 * 3 * 4, 11), [2, 3, 4], DType.Float64);
            var k = Leaf(Rand(2 * 5 * 4, 12), [2, 5, 4], DType.Float64);
            var v = Leaf(Rand(2 * 5 * 2, 13), [2, 5, 2], DType.Float64);
            using var mask = Tensor.FromArray(Rand(3 * 5, 14, -1, 1), [3, 5], requiresGrad: false).To(DType.Float64);
            GradCheck.Check(t => Tensor.ScaledDotProductAttention(t[0], t[1], t[2], causal ? null : mask, isCausal: causal, scale: 0.8), [q, k, v]);
            q.Dispose(); k.Dispose(); v.Dispose();
        }
    }

    // As Gpt produces them: [b, t, h, d] views transposed to [b, h, t, d]; a mask broadcast over batch and heads; q's
    // batch dims broadcast against k's and v's.
    [Test]
    public void NonContiguousAndBroadcast_MatchComposition()
    {
        int b = 2, t = 6, h = 3, d = 4;
        double[] qv = Rand(b * t * h * d, 21), kv = Rand(t * h * d, 22), vv = Rand(t * h * 5, 23), g = Rand(b * h * t * 5, 24);
        using var maskT = Tensor.FromArray(Rand(t, 25, 0, 1).Select(x => x < 0.8).ToArray(), [1, t]);
        using var addT = maskT.Eq(0).To(DType.Float32).Mul(-1e30);
        Func<Tensor, Tensor> heads4 = x => x.View(b, t, h, d).Transpose(1, 2);                       // [b, h, t, d]
        Func<Tensor, Tensor> heads3 = x => x.View(t, h, x.Size(-1) / h).Transpose(0, 1);             // [h, t, ·]
        var fused = Run((x, y, z) => Tensor.ScaledDotProductAttention(heads4(x), heads3(y), heads3(z), maskT),
            qv, [b, t, h * d], kv, [t, h * d], vv, [t, h * 5], g, DType.Float32);
        var comp = Run((x, y, z) => Explicit(heads4(x), heads3(y), heads3(z), addT, false, 1 / Math.Sqrt(d)),
            qv, [b, t, h * d], kv, [t, h * d], vv, [t, h * 5], g, DType.Float32);
        Compare(fused, comp, 2e-5, "views");
        // Causal on the transposed views too.
        var fusedC = Run((x, y, z) => Tensor.ScaledDotProductAttention(heads4(x), heads3(y), heads3(z), isCausal: true),
            qv, [b, t, h * d], kv, [t, h * d], vv, [t, h * 5], g, DType.Float32);
        var compC = Run((x, y, z) => Explicit(heads4(x), heads3(y), heads3(z), null, true, 1 / Math.Sqrt(d)),
            qv, [b, t, h * d], kv, [t, h * d], vv, [t, h * 5], g, DType.Float32);
        Compare(fusedC, compC, 2e-5, "views, causal");
    }

    [Test]
    public void EmptyDims()
    {
        // S = 0: the empty sum (zeros), as q·kᵀ·v gives; L = 0 and a zero batch: empty outputs, zero gradients.
        using var q = Tensor.Ones([2, 3, 4], requiresGrad: true);
        using var k = Tensor.Ones([2, 0, 4], requiresGrad: true);
        using var v = Tensor.Ones([2, 0, 5], requiresGrad: true);
        using var o = Tensor.ScaledDotProductAttention(q, k, v);
        Assert.That(o.Layout.Shape.ToArray(), Is.EqualTo(new[] { 2, 3, 5 }));
        Assert.That(o.ToArray<float>(), Is.All.EqualTo(0f));
        using (var loss = o.Sum()) loss.Backward();
        Assert.That(q.Grad!.ToArray<float>(), Is.All.EqualTo(0f));
        using var q0 = Tensor.Ones([0, 2, 0, 4]);
        using var k0 = Tensor.Ones([0, 2, 3, 4]);
        using var v0 = Tensor.Ones([0, 2, 3, 1]);
        using var o0 = Tensor.ScaledDotProductAttention(q0, k0, v0, isCausal: true);
        Assert.That(o0.Layout.Shape.ToArray(), Is.EqualTo(new[] { 0, 2, 0, 1 }));
    }

    [Test]
    public void Dropout_ZeroIsNoDropout_AndPositiveMatchesTheExplicitPath()
    {
        double[] q = Rand(2 * 5 * 4, 31), k = Rand(2 * 6 * 4, 32), v = Rand(2 * 6 * 3, 33), g = Rand(2 * 5 * 3, 34);
        var none = Run((x, y, z) => Tensor.ScaledDotProductAttention(x, y, z), q, [2, 5, 4], k, [2, 6, 4], v, [2, 6, 3], g, DType.Float32);
        var zero = Run((x, y, z) => Tensor.ScaledDotProductAttention(x, y, z, dropoutP: 0, generator: new Generator(7)), q, [2, 5, 4], k, [2, 6, 4], v, [2, 6, 3], g, DType.Float32);
        Compare(zero, none, 0, "p = 0");
        // With p > 0 the mask comes from the generator: the same state gives the explicit path's result.
        var drop = Run((x, y, z) => Tensor.ScaledDotProductAttention(x, y, z, dropoutP: 0.3, generator: new Generator(7)), q, [2, 5, 4], k, [2, 6, 4], v, [2, 6, 3], g, DType.Float32);
        var expl = Run((x, y, z) => x.MatMul(y.Transpose(-2, -1)).Mul(0.5).Softmax(-1).Dropout(0.3, true, new Generator(7)).MatMul(z), q, [2, 5, 4], k, [2, 6, 4], v, [2, 6, 3], g, DType.Float32);
        Compare(drop, expl, 1e-6, "p = 0.3");
        Assert.That(drop.O, Is.Not.EqualTo(none.O), "dropout changed nothing");
    }

    [TestCase(DType.BFloat16), TestCase(DType.Float16)]
    public void HalfTypes_WithinTolerance(DType dt)
    {
        int b = 2, l = 9, s = 11, e = 8, ev = 4;
        // Inputs representable in the type, so the float64 reference sees what the kernel sees.
        double[] q = Rand(b * l * e, 41).Select(x => Ref.RoundTo(x, dt)).ToArray(), k = Rand(b * s * e, 42).Select(x => Ref.RoundTo(x, dt)).ToArray();
        double[] v = Rand(b * s * ev, 43).Select(x => Ref.RoundTo(x, dt)).ToArray(), g = Rand(b * l * ev, 44).Select(x => Ref.RoundTo(x, dt)).ToArray();
        var want = Reference(q, k, v, null, g, b, l, s, e, ev, 1 / Math.Sqrt(e), true);
        var got = Run((x, y, z) => Tensor.ScaledDotProductAttention(x, y, z, isCausal: true), q, [b, l, e], k, [b, s, e], v, [b, s, ev], g, dt);
        Compare(got, want, dt == DType.BFloat16 ? 2e-2 : 3e-3, dt.Name());
    }

    // The CPU kernel runs its tile products on the GEMM's micro-kernel family; each one the machine has must agree
    // with the float64 reference (the default is only the widest).
    [TestCase(GemmKernelKind.Vector512), TestCase(GemmKernelKind.Vector256), TestCase(GemmKernelKind.Scalar)]
    public void EveryGemmKernelFamily_MatchesFloat64Reference(GemmKernelKind kind)
    {
        if (!GemmKernelSelection.IsSupported(kind)) Assert.Ignore($"{kind} is not supported here");
        int b = 2, l = 40, s = 70, e = 20, ev = 24;
        double[] q = Rand(b * l * e, 61), k = Rand(b * s * e, 62), v = Rand(b * s * ev, 63), g = Rand(b * l * ev, 64);
        using var _ = CpuBackend.UseOptions(CpuBackend.Options with { Float32Gemm = kind });
        foreach (bool causal in new[] { false, true })
        {
            var want = Reference(q, k, v, null, g, b, l, s, e, ev, 1 / Math.Sqrt(e), causal);
            foreach (var dt in new[] { DType.Float32, DType.Float64 })
            {
                var got = Run((x, y, z) => Tensor.ScaledDotProductAttention(x, y, z, isCausal: causal), q, [b, l, e], k, [b, s, e], v, [b, s, ev], g, dt);
                Compare(got, want, dt == DType.Float64 ? 1e-10 : 2e-5, $"{kind} {dt.Name()} causal={causal}");
            }
        }
    }

    [Test]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        int b = 3, l = 70, s = 130, e = 8, ev = 6;
        double[] q = Rand(b * l * e, 51), k = Rand(b * s * e, 52), v = Rand(b * s * ev, 53), g = Rand(b * l * ev, 54);
        (double[] O, double[] Dq, double[] Dk, double[] Dv) At(int threads, bool causal)
        {
            using var _ = CpuBackend.UseOptions(CpuBackend.Options with { Threads = threads });
            return Run((x, y, z) => Tensor.ScaledDotProductAttention(x, y, z, isCausal: causal), q, [b, l, e], k, [b, s, e], v, [b, s, ev], g, DType.Float32);
        }
        foreach (bool causal in new[] { false, true })
        {
            var one = At(1, causal); var two = At(2, causal);
            Assert.That(two.O, Is.EqualTo(one.O)); Assert.That(two.Dq, Is.EqualTo(one.Dq));
            Assert.That(two.Dk, Is.EqualTo(one.Dk)); Assert.That(two.Dv, Is.EqualTo(one.Dv));
        }
    }

    [Test]
    public void OneFusedKernelEachWay()
    {
        using var q = Tensor.Ones([2, 3, 4], requiresGrad: true);
        using var k = Tensor.Ones([2, 5, 4], requiresGrad: true);
        using var v = Tensor.Ones([2, 5, 2], requiresGrad: true);
        using var c = Engine.Backends.KernelCounter.Begin();
        using var o = Tensor.ScaledDotProductAttention(q, k, v, isCausal: true);
        using (var loss = o.Sum()) loss.Backward();
        Assert.That(c.Count("ScaledDotProductAttention"), Is.EqualTo(1), c.ToString());
        Assert.That(c.Count("ScaledDotProductAttentionBackward"), Is.EqualTo(1), c.ToString());
        Assert.That(c.Count("MatMul") + c.Count("Softmax"), Is.Zero, c.ToString());
    }

    [Test]
    public void Errors_NameTheOpAndShapes()
    {
        using var q = Tensor.Ones([2, 3, 4]);
        using var k5 = Tensor.Ones([2, 5, 5]);
        using var k = Tensor.Ones([2, 5, 4]);
        using var v = Tensor.Ones([2, 5, 2]);
        using var v6 = Tensor.Ones([2, 6, 2]);
        var ex = Assert.Throws<ShapeException>(() => Tensor.ScaledDotProductAttention(q, k5, v).Dispose())!;
        Assert.That(ex.Message, Does.Contain("ScaledDotProductAttention").And.Contain("[2, 3, 4]").And.Contain("[2, 5, 5]"));
        ex = Assert.Throws<ShapeException>(() => Tensor.ScaledDotProductAttention(q, k, v6).Dispose())!;
        Assert.That(ex.Message, Does.Contain("ScaledDotProductAttention").And.Contain("[2, 6, 2]"));
        using var badMask = Tensor.Ones([4, 5]);
        ex = Assert.Throws<ShapeException>(() => Tensor.ScaledDotProductAttention(q, k, v, badMask).Dispose())!;
        Assert.That(ex.Message, Does.Contain("ScaledDotProductAttention").And.Contain("[4, 5]").And.Contain("[2, 3, 5]"));
        using var qh = Tensor.Ones([2, 3, 4], DType.Float64);
        Assert.Catch<DTypeException>(() => Tensor.ScaledDotProductAttention(qh, k, v).Dispose());
        using var mask = Tensor.Ones([3, 5]);
        Assert.Catch<EngineException>(() => Tensor.ScaledDotProductAttention(q, k, v, mask, isCausal: true).Dispose());
    }

    // PyTorch's CPU and CUDA autocast both run scaled_dot_product_attention in the lower precision.
    [Test]
    public void Autocast_RunsInTheLowerPrecisionOnEveryDevice()
    {
        foreach (var d in new[] { DeviceType.Cpu, DeviceType.Cuda })
        {
            Assert.That(AutocastPolicy.CategoryOf(typeof(Tensor.ScaledDotProductAttentionBackward), d), Is.EqualTo(AutocastCategory.LowerPrecision), d.ToString());
            Assert.That(AutocastPolicy.TargetDType(typeof(Tensor.ScaledDotProductAttentionBackward), d, DType.BFloat16), Is.EqualTo(DType.BFloat16), d.ToString());
        }
        using var q = Tensor.Ones([2, 3, 4], requiresGrad: true);
        using (AutocastMode.Autocast(DType.BFloat16, DeviceType.Cpu))
        {
            using var o = Tensor.ScaledDotProductAttention(q, q, q, isCausal: true);
            Assert.That(o.DType, Is.EqualTo(DType.BFloat16));
            using var loss = o.To(DType.Float32).Sum();
            loss.Backward();
        }
        Assert.That(q.Grad!.DType, Is.EqualTo(DType.Float32));
    }
}

using Engine.Amp;
using Engine.Autograd.Optim;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Behaviours aligned with PyTorch (see CHANGELOG.md, "PyTorch parity"), each against a plain float64 reference or
/// the exact values PyTorch gives: index ops refuse negative indices, optimizers step every parameter that has a
/// gradient, the GradScaler's pass-through reports one scale, the gradient norm can be taken without clipping, and
/// half tensors expose their raw bits.
/// </summary>
[TestFixture]
public class ParityTests
{
    // ---------------- 1. negative indices ----------------

    static readonly double[] X23 = [1, 2, 3, 4, 5, 6];

    static void AssertRefused(Action op, string opName, long value, string range)
    {
        var e = Assert.Throws<ShapeException>(() => op())!;
        Assert.That(e, Is.InstanceOf<EngineException>());
        Assert.That(e.Op, Is.EqualTo(opName));
        Assert.That(e.Message, Does.StartWith(opName + ":").And.Contain($"index {value} ").And.Contain(range));
    }

    [Test]
    public void Gather_NegativeIndex_Throws_NamingOpValueAndRange_InputsUntouched([Values(DType.Int64, DType.Int32)] DType indexType)
    {
        using var x = Tensor.FromArray(X23, [2, 3]);
        using var i64 = Tensor.FromArray(new long[] { 0, -1, 2, 1 }, [2, 2]);
        using var index = i64.To(indexType);
        AssertRefused(() => x.Gather(1, index).Dispose(), "Gather", -1, "valid indices are 0 to 2");
        Assert.That(x.ToArray<double>(), Is.EqualTo(X23));
        Assert.That(index.ToArray<long>(), Is.EqualTo(new long[] { 0, -1, 2, 1 }));
        // dim 0 has size 2: -1 is refused there too, with that range.
        using var i0 = Tensor.FromArray(new long[] { 1, 0, -1 }, [1, 3]);
        AssertRefused(() => x.Gather(0, i0).Dispose(), "Gather", -1, "valid indices are 0 to 1");
    }

    [Test]
    public void Gather_ValidIndices_MatchPlainReference()
    {
        using var x = Tensor.FromArray(X23, [2, 3]);
        using var index = Tensor.FromArray(new long[] { 2, 2, 0, 1 }, [2, 2]);
        using var y = x.Gather(1, index);
        // out[i, j] = x[i, index[i, j]]
        Assert.That(y.ToArray<double>(), Is.EqualTo(new double[] { 3, 3, 4, 5 }));
    }

    [Test]
    public void Embedding_NegativeOrTooLargeIndex_Throws_WeightUntouched()
    {
        var w = Enumerable.Range(0, 15).Select(i => (double)i).ToArray();
        using var weight = Tensor.FromArray(w, [5, 3], requiresGrad: true);
        using var neg = Tensor.FromArray(new long[] { 0, -1, 3 }, [3]);
        AssertRefused(() => Tensor.Embedding(neg, weight).Dispose(), "Embedding", -1, "valid indices are 0 to 4");
        using var big = Tensor.FromArray(new long[] { 5 }, [1]);
        AssertRefused(() => Tensor.Embedding(big, weight).Dispose(), "Embedding", 5, "valid indices are 0 to 4");
        Assert.That(weight.ToArray<double>(), Is.EqualTo(w));
        Assert.That(weight.Grad, Is.Null);

        using var ok = Tensor.FromArray(new long[] { 4, 0, 4 }, [3]);
        using var y = Tensor.Embedding(ok, weight);
        Assert.That(y.ToArray<double>(), Is.EqualTo(new double[] { 12, 13, 14, 0, 1, 2, 12, 13, 14 }));
    }

    [Test]
    public void IndexSelect_IndexAdd_ScatterAdd_RefuseNegativeIndices_AsPyTorch()
    {
        using var x = Tensor.FromArray(X23, [2, 3]);
        using var neg = Tensor.FromArray(new long[] { 0, -1 }, [2]);
        AssertRefused(() => x.IndexSelect(1, neg).Dispose(), "IndexSelect", -1, "valid indices are 0 to 2");
        using var src = Tensor.Ones([2, 2], DType.Float64);
        AssertRefused(() => x.IndexAdd(1, neg, src).Dispose(), "IndexAdd", -1, "valid indices are 0 to 2");
        using var neg2 = Tensor.FromArray(new long[] { 0, -3, 1, 1 }, [2, 2]);
        AssertRefused(() => x.ScatterAdd(1, neg2, src).Dispose(), "ScatterAdd", -3, "valid indices are 0 to 2");
        Assert.That(x.ToArray<double>(), Is.EqualTo(X23));

        // The valid forms against plain references.
        using var sel = Tensor.FromArray(new long[] { 2, 0 }, [2]);
        using var s = x.IndexSelect(1, sel);
        Assert.That(s.ToArray<double>(), Is.EqualTo(new double[] { 3, 1, 6, 4 }));
        using var sa = x.ScatterAdd(1, Tensor.FromArray(new long[] { 0, 0, 2, 1 }, [2, 2]), src);
        Assert.That(sa.ToArray<double>(), Is.EqualTo(new double[] { 3, 2, 3, 4, 6, 7 }));
    }

    // ---------------- 2. optimizers step every parameter with a gradient ----------------

    static (Tensor P, double[] P0, double[] G) FrozenWithGrad()
    {
        double[] p0 = [0.5, -1.25, 2.0], g = [0.1, -0.4, 0.03];
        var p = Tensor.FromArray(p0, [3]); // RequiresGrad false
        p.Grad = Tensor.FromArray(g, [3]);
        return (p, p0, g);
    }

    [Test]
    public void Sgd_UpdatesAParameterWithAGradient_EvenIfItDoesNotRequireGrad()
    {
        var (p, p0, g) = FrozenWithGrad();
        using var _ = p;
        using var __ = p.Grad;
        using var opt = new Sgd([p], lr: 0.1);
        opt.Step();
        var expected = p0.Select((v, i) => v - 0.1 * g[i]).ToArray();
        Assert.That(p.ToArray<double>(), Is.EqualTo(expected).Within(1e-15));
    }

    [Test]
    public void Adam_UpdatesAParameterWithAGradient_EvenIfItDoesNotRequireGrad()
    {
        var (p, p0, g) = FrozenWithGrad();
        using var _ = p;
        using var __ = p.Grad;
        using var opt = new Adam([p], lr: 0.01);
        opt.Step();
        // First step: m̂ = g, v̂ = g², so p −= lr·g/(|g| + eps).
        var expected = p0.Select((v, i) => v - 0.01 * g[i] / (Math.Abs(g[i]) + 1e-8)).ToArray();
        Assert.That(p.ToArray<double>(), Is.EqualTo(expected).Within(1e-12));
        // Without a gradient a parameter is still skipped.
        using var q = Tensor.FromArray(new double[] { 1, 2 }, [2], requiresGrad: true);
        using var opt2 = new Adam([q], lr: 0.01);
        opt2.Step();
        Assert.That(q.ToArray<double>(), Is.EqualTo(new double[] { 1, 2 }));
    }

    // ---------------- 3. GradScaler: one scale in the bfloat16 pass-through ----------------

    static void BFloat16Iteration(GradScaler scaler, Tensor w, Optimizer opt)
    {
        using (var sq = w.Mul(w))
        using (var loss = sq.Sum())
        using (var scaled = scaler.Scale(loss))
            scaled.Backward();
        scaler.Step(opt);
        scaler.Update();
        opt.ZeroGrad();
    }

    [Test]
    public void GradScaler_BFloat16PassThrough_GetScaleAndStateDictAgree_AsADisabledScaler()
    {
        using var w64 = Tensor.FromArray(new double[] { 0.5, -1, 2 }, [3]);
        using var w = w64.To(DType.BFloat16);
        w.RequiresGrad = true;
        using var opt = new Sgd([w], lr: 0.1);
        using var scaler = new GradScaler();
        BFloat16Iteration(scaler, w, opt);
        Assert.That(scaler.IsBFloat16PassThrough, Is.True);
        Assert.That(scaler.GetScale(), Is.EqualTo(1.0));
        Assert.That(scaler.StateDict(), Is.Empty, "as PyTorch's disabled scaler: get_scale() 1.0, state_dict() {}");

        // The pass-through's empty state restores nothing, on it and on a fresh scaler resuming the run.
        scaler.LoadStateDict(scaler.StateDict());
        using var resumed = new GradScaler();
        resumed.LoadStateDict(new Dictionary<string, double>());
        BFloat16Iteration(resumed, w, opt);
        Assert.That(resumed.GetScale(), Is.EqualTo(1.0));
        Assert.That(resumed.StateDict(), Is.Empty);
    }

    [Test]
    public void GradScaler_Disabled_LoadsAnyStateAsANoOp_EnabledWithAScaleRefusesAnEmptyOne()
    {
        using var off = new GradScaler(enabled: false);
        off.LoadStateDict(new Dictionary<string, double>());
        // PyTorch's load_state_dict returns at once on a disabled scaler, whatever the state.
        off.LoadStateDict(new Dictionary<string, double> { ["scale"] = 8, ["growth_factor"] = 2, ["backoff_factor"] = 0.5, ["growth_interval"] = 10, ["_growth_tracker"] = 0 });
        Assert.That(off.GetScale(), Is.EqualTo(1.0));
        Assert.That(off.StateDict(), Is.Empty);

        // A float16 scaler that holds a scale: an empty state would silently keep it, so it throws as PyTorch's.
        using var w32 = Tensor.FromArray(new float[] { 0.5f, -1f }, [2]);
        using var w = w32.To(DType.Float16);
        w.RequiresGrad = true;
        using var opt = new Sgd([w], lr: 0.1);
        using var fp16 = new GradScaler(initScale: 256);
        BFloat16Iteration(fp16, w, opt);
        Assert.That(fp16.IsBFloat16PassThrough, Is.False);
        Assert.That(fp16.StateDict()["scale"], Is.EqualTo(fp16.GetScale()));
        var e = Assert.Throws<EngineException>(() => fp16.LoadStateDict(new Dictionary<string, double>()))!;
        Assert.That(e.Message, Does.Contain("empty"));
    }

    // ---------------- 4. GetTotalNorm and ClipGradsWithNorm ----------------

    static readonly double[] GA = [3, -4, 1], GB = [0.5, 2];

    static (Tensor A, Tensor B) Params(double[] ga, double[] gb)
    {
        var a = Tensor.Zeros([ga.Length], DType.Float64, requiresGrad: true);
        var b = Tensor.Zeros([gb.Length], DType.Float64, requiresGrad: true);
        a.Grad = Tensor.FromArray(ga);
        b.Grad = Tensor.FromArray(gb);
        return (a, b);
    }

    static void Free(params Tensor[] ps) { foreach (var p in ps) { p.Grad?.Dispose(); p.Dispose(); } }

    static double PlainNorm(double p, params double[][] xs)
    {
        var all = xs.SelectMany(v => v).Select(Math.Abs).ToArray();
        return double.IsPositiveInfinity(p) ? all.Max() : Math.Pow(all.Sum(v => Math.Pow(v, p)), 1 / p);
    }

    [TestCase(2.0)]
    [TestCase(1.0)]
    [TestCase(3.0)]
    [TestCase(double.PositiveInfinity)]
    public void GetTotalNorm_IsThePlainNorm_AndLeavesTheGradientsAlone(double p)
    {
        var (a, b) = Params(GA, GB);
        try
        {
            using var n = ClipGrad.GetTotalNorm([a.Grad!, b.Grad!], p);
            Assert.That(n.Rank, Is.Zero);
            Assert.That(n.Item(), Is.EqualTo(PlainNorm(p, GA, GB)).Within(1e-12));
            Assert.That(a.Grad!.ToArray<double>(), Is.EqualTo(GA));
            using var none = ClipGrad.GetTotalNorm([], p);
            Assert.That(none.Item(), Is.Zero);
        }
        finally { Free(a, b); }
    }

    [TestCase(2.0)]
    [TestCase(double.PositiveInfinity)]
    public void ClipGradNorm_IsGetTotalNormThenClipGradsWithNorm(double p)
    {
        const double maxNorm = 1.5;
        var (a, b) = Params(GA, GB);
        var (c, d) = Params(GA, GB);
        try
        {
            using var total = ClipGrad.ClipGradNorm([a, b], maxNorm, p);
            double expectedNorm = PlainNorm(p, GA, GB), coef = Math.Min(1, maxNorm / (expectedNorm + 1e-6));
            Assert.That(total.Item(), Is.EqualTo(expectedNorm).Within(1e-12));
            Assert.That(a.Grad!.ToArray<double>(), Is.EqualTo(GA.Select(v => v * coef).ToArray()).Within(1e-12));
            Assert.That(b.Grad!.ToArray<double>(), Is.EqualTo(GB.Select(v => v * coef).ToArray()).Within(1e-12));

            using var n = ClipGrad.GetTotalNorm([c.Grad!, d.Grad!], p);
            ClipGrad.ClipGradsWithNorm([c, d], maxNorm, n);
            Assert.That(c.Grad!.ToArray<double>(), Is.EqualTo(a.Grad!.ToArray<double>()));
            Assert.That(d.Grad!.ToArray<double>(), Is.EqualTo(b.Grad!.ToArray<double>()));
        }
        finally { Free(a, b, c, d); }
    }

    [Test]
    public void ClipGradsWithNorm_UsesTheGivenNorm_AndNeverScalesUp()
    {
        var (a, b) = Params(GA, GB);
        try
        {
            using var given = Tensor.Scalar(10.0, DType.Float32);
            ClipGrad.ClipGradsWithNorm([a, b], 2.0, given);
            double coef = 2.0 / (10.0 + 1e-6);
            Assert.That(a.Grad!.ToArray<double>(), Is.EqualTo(GA.Select(v => v * (double)(float)coef).ToArray()).Within(1e-7));
            using var small = Tensor.Scalar(0.1, DType.Float64);
            var before = b.Grad!.ToArray<double>();
            ClipGrad.ClipGradsWithNorm([a, b], 2.0, small);
            Assert.That(b.Grad!.ToArray<double>(), Is.EqualTo(before), "the factor is clamped to 1");
        }
        finally { Free(a, b); }
    }

    [Test]
    public void NonFiniteGradient_ErrorIfNonfinite_ThrowsBeforeClipping_OtherwisePropagates()
    {
        var (a, b) = Params([3, double.PositiveInfinity, 1], GB);
        try
        {
            var e = Assert.Throws<EngineException>(() => ClipGrad.ClipGradNorm([a, b], 1.0, errorIfNonfinite: true))!;
            Assert.That(e.Op, Is.EqualTo("GetTotalNorm"));
            Assert.That(e.Message, Does.Contain("non-finite").And.Contain("order 2"));
            Assert.That(b.Grad!.ToArray<double>(), Is.EqualTo(GB), "nothing clipped");
            Assert.Throws<EngineException>(() => ClipGrad.GetTotalNorm([a.Grad!, b.Grad!], double.PositiveInfinity, errorIfNonfinite: true));

            // As PyTorch with error_if_nonfinite=False: norm inf, factor max/(inf + 1e-6) = 0: finite entries become 0, inf·0 NaN.
            using var total = ClipGrad.ClipGradNorm([a, b], 1.0);
            Assert.That(double.IsPositiveInfinity(total.Item()), Is.True);
            var ga = a.Grad!.ToArray<double>();
            Assert.That(ga[0], Is.Zero);
            Assert.That(double.IsNaN(ga[1]), Is.True);
            Assert.That(b.Grad!.ToArray<double>(), Is.EqualTo(new double[] { 0, 0 }));
        }
        finally { Free(a, b); }
    }

    // ---------------- 5. raw bits of half tensors ----------------

    // Zeros, the smallest and largest subnormals, the smallest normal, one, infinities, quiet and signalling NaNs with payloads.
    static readonly ushort[] F16Bits = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0x7D55, 0xFE2A, 0xFFFF];
    static readonly ushort[] Bf16Bits = [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x0080, 0x3F80, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0x7FAA, 0xFFD5, 0xFFFF];

    [TestCase(DType.Float16)]
    [TestCase(DType.BFloat16)]
    public void RawBits_RoundTripExactly_IncludingNaNPayloadsAndSubnormals(DType dtype)
    {
        var bits = dtype == DType.Float16 ? F16Bits : Bf16Bits;
        using var t = Tensor.FromBits(bits, dtype, [3, 5]);
        Assert.That(t.DType, Is.EqualTo(dtype));
        Assert.That(t.Shape, Is.EqualTo(new[] { 3, 5 }));
        Assert.That(t.ToArray<ushort>(), Is.EqualTo(bits));
        // A non-contiguous view reads its elements' bits in row-major order.
        using var tt = t.Transpose(0, 1);
        var expectedT = Enumerable.Range(0, 15).Select(f => bits[(f % 3) * 5 + f / 3]).ToArray();
        Assert.That(tt.ToArray<ushort>(), Is.EqualTo(expectedT));
        Assert.That(t[1, 2].Item<ushort>(), Is.EqualTo(bits[7]));
        // The values agree with the typed reads: subnormals are values, not flushed.
        var doubles = t.ToArray<double>();
        Assert.That(doubles[2], Is.EqualTo(dtype == DType.Float16 ? Math.Pow(2, -24) : Math.Pow(2, -133)));
        if (dtype == DType.Float16)
            Assert.That(t.ToArray<Half>().Select(BitConverter.HalfToUInt16Bits), Is.EqualTo(bits));
        else
            Assert.That(t.ToArray<BFloat16>().Select(v => System.Runtime.CompilerServices.Unsafe.BitCast<BFloat16, ushort>(v)), Is.EqualTo(bits));
    }

    [Test]
    public void RawBits_OtherDTypes_AreRefused()
    {
        using var f = Tensor.Zeros([2], DType.Float32);
        Assert.That(() => f.ToArray<ushort>(), Throws.TypeOf<DTypeException>().With.Message.Contains("float16 or bfloat16"));
        Assert.That(() => Tensor.FromBits([1, 2], DType.Float32), Throws.TypeOf<DTypeException>().With.Message.Contains("FromBits"));
        Assert.That(() => Tensor.FromBits([1, 2, 3], DType.Float16, [2, 2]), Throws.TypeOf<ShapeException>());
        Assert.That(() => Tensor.FromArray(new ushort[] { 1 }), Throws.TypeOf<DTypeException>().With.Message.Contains("FromBits"));
    }
}

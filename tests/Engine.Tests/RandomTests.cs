using Engine.Autograd;
using Engine.Backends.Cpu;
using Engine.Graph;
using Engine.Ops;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

public class RandomTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];

    // Philox4x32-10 written plainly, as Random123's loop: round, then bump the key before the next round.
    static uint[] RefPhilox(uint[] counter, uint k0, uint k1)
    {
        var c = (uint[])counter.Clone();
        for (int round = 0; round < 10; round++)
        {
            if (round > 0) { k0 += 0x9E3779B9; k1 += 0xBB67AE85; }
            ulong p0 = 0xD2511F53UL * c[0], p1 = 0xCD9E8D57UL * c[2];
            c = [(uint)(p1 >> 32) ^ c[1] ^ k0, (uint)p1, (uint)(p0 >> 32) ^ c[3] ^ k1, (uint)p0];
        }
        return c;
    }

    // The 32-bit word of element i of a draw at (seed, offset), from the reference.
    static uint RefWord(ulong seed, ulong offset, long i)
    {
        ulong ctr = offset + (ulong)(i / 4);
        return RefPhilox([(uint)ctr, (uint)(ctr >> 32), 0, 0], (uint)seed, (uint)(seed >> 32))[i % 4];
    }

    // Random123 kat_vectors, philox4x32 10.
    static readonly (uint[] ctr, uint[] key, uint[] expected)[] Kat =
    [
        ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
        ([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
        ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
    ];

    [Test]
    public void PhiloxMatchesKnownAnswers()
    {
        foreach (var (c, k, e) in Kat)
        {
            Philox.Block(c[0], c[1], c[2], c[3], k[0], k[1], out uint r0, out uint r1, out uint r2, out uint r3);
            Assert.That(new[] { r0, r1, r2, r3 }, Is.EqualTo(e), $"Philox.Block for counter {c[0]:x8}");
            Assert.That(RefPhilox(c, k[0], k[1]), Is.EqualTo(e), $"test reference for counter {c[0]:x8}");
        }
        // The 64-bit convenience overload is the same block with c2 = c3 = 0.
        Philox.Block(0x0000000500000007UL, 0x0000000B0000000DUL, out uint a0, out uint a1, out uint a2, out uint a3);
        Assert.That(new[] { a0, a1, a2, a3 }, Is.EqualTo(RefPhilox([7, 5, 0, 0], 13, 11)));
    }

    [Test]
    public void PhiloxHelpersMapWordsToTheirRanges()
    {
        Assert.That(Philox.ToFloat(0), Is.EqualTo(0f));
        Assert.That(Philox.ToFloat(uint.MaxValue), Is.EqualTo(1 - Math.Pow(2, -24)));
        Assert.That(Philox.ToFloat(uint.MaxValue, 8), Is.EqualTo(1 - 1.0 / 256));
        Assert.That(Philox.ToDouble(uint.MaxValue), Is.EqualTo(1 - Math.Pow(2, -32)));
        Assert.That(Philox.ToDouble(1u << 31), Is.EqualTo(0.5));
        // log(0) is guarded: the smallest word gives the largest finite radius.
        Philox.BoxMuller(0, 0, out float f0, out float f1);
        Philox.BoxMuller(0, 0, out double d0, out double d1);
        Assert.That(f0, Is.EqualTo(Math.Sqrt(-2 * Math.Log(Math.Pow(2, -24)))).Within(1e-5));
        Assert.That(d0, Is.EqualTo(Math.Sqrt(-2 * Math.Log(Math.Pow(2, -32)))).Within(1e-12));
        Assert.That(f1, Is.EqualTo(0f));
        Assert.That(d1, Is.EqualTo(0.0));
        Philox.BoxMuller(uint.MaxValue, 0, out double one, out _);
        Assert.That(one, Is.EqualTo(0.0));
    }

    [Test]
    public void ElementsFollowTheCounterLayout()
    {
        // Element i takes counter offset + i/4 and lane i%4; the generator advances by ceil(n/4) counters per draw.
        var g = new Generator(0x1234_5678_9ABC_DEF0UL);
        using var first = Tensor.Rand([5], DType.Float64, generator: g);
        Assert.That(g.Offset, Is.EqualTo(2UL));
        using var u = Tensor.Rand([3, 7], DType.Float64, generator: g);
        Assert.That(g.Offset, Is.EqualTo(2UL + 6));
        var got = u.ToArray<double>();
        for (int i = 0; i < got.Length; i++)
            Assert.That(got[i], Is.EqualTo(RefWord(g.Seed, 2, i) / 4294967296.0), $"element {i}");

        // Float32 keeps the top 24 bits; half types the top bits of their significand.
        g.SetState(new GeneratorState(99, 1UL << 33));
        using var f = Tensor.Rand([9], DType.Float32, generator: g);
        g.SetState(new GeneratorState(99, 1UL << 33));
        using var b = Tensor.Rand([9], DType.BFloat16, generator: g);
        var fv = f.ToArray<double>(); var bv = b.ToArray<double>();
        for (int i = 0; i < 9; i++)
        {
            uint w = RefWord(99, 1UL << 33, i);
            Assert.That(fv[i], Is.EqualTo((w >> 8) / 16777216.0), $"float32 element {i}");
            Assert.That(bv[i], Is.EqualTo((w >> 24) / 256.0), $"bfloat16 element {i}");
        }
    }

    [Test]
    public void NormalsAreBoxMullerOfLanePairs()
    {
        var g = new Generator(5);
        using var z64 = Tensor.Randn([10], DType.Float64, generator: g);
        using var z32 = Tensor.Randn([10], DType.Float32, generator: g);
        var v64 = z64.ToArray<double>(); var v32 = z32.ToArray<double>();
        for (int i = 0; i < 10; i++)
        {
            int pair = i & ~1;
            // float64: u1 = (w + 1)·2^-32 in (0, 1], theta = 2π·w'·2^-32.
            double u1 = (RefWord(5, 0, pair) + 1.0) / 4294967296.0, u2 = RefWord(5, 0, pair + 1) / 4294967296.0;
            double r = Math.Sqrt(-2 * Math.Log(u1)), e = i % 2 == 0 ? r * Math.Cos(2 * Math.PI * u2) : r * Math.Sin(2 * Math.PI * u2);
            Assert.That(v64[i], Is.EqualTo(e).Within(1e-12), $"float64 element {i}");
            // float32: 24-bit uniforms from the next three counters.
            u1 = ((RefWord(5, 3, pair) >> 8) + 1.0) / 16777216.0; u2 = (RefWord(5, 3, pair + 1) >> 8) / 16777216.0;
            r = Math.Sqrt(-2 * Math.Log(u1)); e = i % 2 == 0 ? r * Math.Cos(2 * Math.PI * u2) : r * Math.Sin(2 * Math.PI * u2);
            Assert.That(v32[i], Is.EqualTo(e).Within(1e-5), $"float32 element {i}");
        }
    }

    [Test]
    public void SameSeedSameNumbersDifferentSeedsDiffer()
    {
        foreach (var dt in Floats)
        {
            using var a = Tensor.Randn([257], dt, generator: new Generator(42));
            using var b = Tensor.Randn([257], dt, generator: new Generator(42));
            using var c = Tensor.Randn([257], dt, generator: new Generator(43));
            Assert.That(a.ToArray<double>(), Is.EqualTo(b.ToArray<double>()), $"{dt} same seed");
            Assert.That(a.ToArray<double>(), Is.Not.EqualTo(c.ToArray<double>()), $"{dt} other seed");
        }
        Tensor.ManualSeed(7);
        using var d1 = Tensor.Rand([33]);
        using var d2 = Tensor.Rand([33]);
        Assert.That(Generator.Default.GetState(), Is.EqualTo(new GeneratorState(7, 18)));
        Tensor.ManualSeed(7);
        using var d3 = Tensor.Rand([33]);
        Assert.That(d3.ToArray<float>(), Is.EqualTo(d1.ToArray<float>()));
        Assert.That(d2.ToArray<float>(), Is.Not.EqualTo(d1.ToArray<float>()), "consecutive draws differ");
        Tensor.ManualSeed(0);
    }

    [Test]
    public void NumbersDoNotDependOnThreadCount()
    {
        foreach (var dt in Floats)
            foreach (bool normal in new[] { false, true })
            {
                var results = new List<double[]>();
                foreach (int threads in new[] { 1, 2 })
                {
                    using var threads1 = CpuBackend.UseOptions(CpuBackend.Options with { Threads = threads });
                    var g = new Generator(11);
                    // 10,001 counters: three chunks of the kernel's 4096-counter grain.
                    using var t = normal ? Tensor.Randn([40_003], dt, generator: g) : Tensor.Rand([40_003], dt, generator: g);
                    results.Add(t.ToArray<double>());
                }
                Assert.That(results[1].SequenceEqual(results[0]), Is.True, $"{dt} normal={normal}");
            }
    }

    // Largest gap between the empirical CDF on bins and the model CDF.
    static double BinnedKs(double[] v, double lo, double hi, int bins, Func<double, double> cdf)
    {
        var counts = new long[bins];
        foreach (var x in v)
        {
            int b = (int)Math.Floor((x - lo) / (hi - lo) * bins);
            counts[Math.Clamp(b, 0, bins - 1)]++;
        }
        double worst = 0, cum = 0;
        long below = v.LongCount(x => x < lo);
        cum = below;
        for (int b = 0; b < bins - 1; b++)
        {
            cum += counts[b] - (b == 0 ? below : 0);
            double edge = lo + (hi - lo) * (b + 1) / bins;
            worst = Math.Max(worst, Math.Abs(cum / v.Length - cdf(edge)));
        }
        return worst;
    }

    // Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7), enough for a 1e6-sample check.
    static double NormalCdf(double x)
    {
        double z = Math.Abs(x) / Math.Sqrt(2), t = 1 / (1 + 0.3275911 * z);
        double erf = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.Exp(-z * z);
        return x >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
    }

    static (double mean, double var) Moments(double[] v)
    {
        double m = v.Average(), s = 0;
        foreach (var x in v) s += (x - m) * (x - m);
        return (m, s / (v.Length - 1));
    }

    [Test]
    public void RandIsUniformInUnitInterval()
    {
        foreach (var (dt, bits) in new[] { (DType.Float64, 32), (DType.Float32, 24), (DType.Float16, 11), (DType.BFloat16, 8) })
        {
            int n = dt.IsHalf() ? 250_000 : 1_000_000;
            using var t = Tensor.Rand([n / 1000, 1000], dt, generator: new Generator(3));
            var v = t.ToArray<double>();
            Assert.That(v.Min(), Is.GreaterThanOrEqualTo(0.0), $"{dt} min");
            Assert.That(v.Max(), Is.LessThan(1.0), $"{dt} max");
            var (mean, variance) = Moments(v);
            // On a grid of step h the mean is (1 − h)/2 and the variance (1 − h²)/12.
            double h = Math.Pow(2, -bits), se = Math.Sqrt(1.0 / 12 / n);
            Assert.That(mean, Is.EqualTo((1 - h) / 2).Within(5 * se), $"{dt} mean");
            Assert.That(variance, Is.EqualTo((1 - h * h) / 12).Within(5 * Math.Sqrt(1.0 / 180 / n)), $"{dt} variance");
            // Binned KS at the 1e-4 level (1.95/√n), on bins that are whole grid cells for every type.
            Assert.That(BinnedKs(v, 0, 1, 256, x => x), Is.LessThan(1.95 / Math.Sqrt(n)), $"{dt} KS");
        }
    }

    [Test]
    public void RandnIsStandardNormal()
    {
        const int n = 1_000_000;
        foreach (var dt in new[] { DType.Float64, DType.Float32 })
        {
            using var t = Tensor.Randn([n], dt, generator: new Generator(4));
            var v = t.ToArray<double>();
            Assert.That(v.All(double.IsFinite), Is.True);
            var (mean, variance) = Moments(v);
            Assert.That(mean, Is.EqualTo(0).Within(5 / Math.Sqrt(n)), $"{dt} mean");
            Assert.That(variance, Is.EqualTo(1).Within(5 * Math.Sqrt(2.0 / n)), $"{dt} variance");
            Assert.That(BinnedKs(v, -4, 4, 200, NormalCdf), Is.LessThan(1.95 / Math.Sqrt(n)), $"{dt} KS");
            double tail = v.Count(x => Math.Abs(x) > 3) / (double)n, p3 = 2 * (1 - NormalCdf(3));
            Assert.That(tail, Is.EqualTo(p3).Within(5 * Math.Sqrt(p3 / n)), $"{dt} tail");
        }
        foreach (var dt in new[] { DType.Float16, DType.BFloat16 })
        {
            using var t = Tensor.Randn([100_000], dt, generator: new Generator(4));
            var (mean, variance) = Moments(t.ToArray<double>());
            Assert.That(mean, Is.EqualTo(0).Within(0.02), $"{dt} mean");
            Assert.That(variance, Is.EqualTo(1).Within(0.03), $"{dt} variance");
        }
    }

    [Test]
    public void UniformAndNormalUseTheirParameters()
    {
        const int n = 200_000;
        foreach (var dt in Floats)
        {
            using var u = Tensor.Uniform([n], -3, 5, dt, generator: new Generator(8));
            var v = u.ToArray<double>();
            Assert.That(v.Min(), Is.GreaterThanOrEqualTo(-3.0));
            Assert.That(v.Max(), Is.LessThan(5.0));
            Assert.That(v.Average(), Is.EqualTo(1).Within(0.05), $"{dt} uniform mean");
            using var z = Tensor.Normal([n], 2, 0.5, dt, generator: new Generator(8));
            var (mean, variance) = Moments(z.ToArray<double>());
            Assert.That(mean, Is.EqualTo(2).Within(0.01), $"{dt} normal mean");
            Assert.That(Math.Sqrt(variance), Is.EqualTo(0.5).Within(0.01), $"{dt} normal std");
        }
        using var g = Tensor.Uniform([4], 1, 1, DType.Float32);
        Assert.That(g.ToArray<float>(), Is.All.EqualTo(1f), "an empty range gives low");
        using var r = Tensor.Rand([2, 3], requiresGrad: true);
        Assert.That(r.RequiresGrad && r.IsLeaf, Is.True);
    }

    [Test]
    public void RandIntCoversItsRange()
    {
        using var t = Tensor.RandInt(-3, 5, [20_000], generator: new Generator(9));
        Assert.That(t.DType, Is.EqualTo(DType.Int64));
        var v = t.ToArray<long>();
        var counts = new int[8];
        foreach (var x in v)
        {
            Assert.That(x, Is.InRange(-3L, 4L));
            counts[x + 3]++;
        }
        foreach (var c in counts) Assert.That(c, Is.EqualTo(2500).Within(5 * Math.Sqrt(2500)));

        using var one = Tensor.RandInt(7, 8, [100], DType.Int32);
        Assert.That(one.ToArray<int>(), Is.All.EqualTo(7));
        using var f = Tensor.RandInt(0, 3, [1000], DType.Float32, generator: new Generator(1));
        var fv = f.ToArray<float>();
        Assert.That(fv.Distinct().Order().ToArray(), Is.EqualTo(new[] { 0f, 1f, 2f }));
        using var big = Tensor.RandInt(-(1L << 40), 1L << 40, [1000], generator: new Generator(2));
        var bv = big.ToArray<long>();
        Assert.That(bv.All(x => x >= -(1L << 40) && x < 1L << 40), Is.True);
        Assert.That(bv.Count(x => x < 0), Is.InRange(400, 600));

        var ex = Assert.Throws<EngineException>(() => Tensor.RandInt(5, 5, [3]));
        Assert.That(ex!.Message, Does.Contain("RandInt"));
    }

    [Test]
    public void GeneratorStateSavesAndRestoresTheStream()
    {
        var g = new Generator(1234);
        Assert.That(g.GetState(), Is.EqualTo(new GeneratorState(1234, 0)));
        using var a = Tensor.Randn([10], generator: g);
        Assert.That(g.Offset, Is.EqualTo(3UL));
        var state = g.GetState();
        using var b = Tensor.Randn([10], generator: g);
        using var b2 = Tensor.Rand([3], generator: g);
        Assert.That(b.ToArray<float>(), Is.Not.EqualTo(a.ToArray<float>()));
        g.SetState(state);
        using var c = Tensor.Randn([10], generator: g);
        using var c2 = Tensor.Rand([3], generator: g);
        Assert.That(c.ToArray<float>(), Is.EqualTo(b.ToArray<float>()));
        Assert.That(c2.ToArray<float>(), Is.EqualTo(b2.ToArray<float>()));
        Assert.That(g.GetState(), Is.EqualTo(new GeneratorState(1234, 7)));
        g.ManualSeed(1234);
        Assert.That(g.GetState(), Is.EqualTo(new GeneratorState(1234, 0)));
        using var empty = Tensor.Rand([0, 3], generator: g);
        Assert.That(g.Offset, Is.EqualTo(0UL), "an empty draw reserves nothing");
    }

    [Test]
    public void ConcurrentDrawsGetDisjointCounters()
    {
        var g = new Generator(77);
        var starts = new System.Collections.Concurrent.ConcurrentBag<ulong>();
        Parallel.For(0, 64, _ => starts.Add(g.Reserve(10).Offset));
        Assert.That(starts.Order().ToArray(), Is.EqualTo(Enumerable.Range(0, 64).Select(i => (ulong)i * 3).ToArray()));
        Assert.That(g.Offset, Is.EqualTo(192UL));
    }

    [Test]
    public void InPlaceFillsMatchFreshDrawsAndFollowTheWriteRules()
    {
        foreach (var kind in Layouts.All)
        {
            using var x = Layouts.Make(new double[12], [3, 4], DType.Float32, kind);
            int version = x.Version;
            x.UniformInPlace(-1, 1, new Generator(21));
            using var fresh = Tensor.Uniform([3, 4], -1, 1, generator: new Generator(21));
            Assert.That(x.ToArray<float>(), Is.EqualTo(fresh.ToArray<float>()), $"{kind} uniform");
            Assert.That(x.Version, Is.GreaterThan(version));
            x.NormalInPlace(0, 2, new Generator(22));
            using var freshN = Tensor.Normal([3, 4], 0, 2, generator: new Generator(22));
            Assert.That(x.ToArray<float>(), Is.EqualTo(freshN.ToArray<float>()), $"{kind} normal");
        }

        using var w = Tensor.Zeros([4, 4], requiresGrad: true);
        var ex = Assert.Throws<EngineException>(() => w.UniformInPlace(0, 1));
        Assert.That(ex!.Message, Does.Contain("UniformInPlace"));
        using (GradMode.NoGrad()) w.NormalInPlace(0, 1, new Generator(1));
        Assert.That(w.ToArray<float>().Any(v => v != 0), Is.True);
        Assert.That(w.IsLeaf, Is.True);

        using var ints = Tensor.Zeros([3], DType.Int64);
        Assert.Throws<DTypeException>(() => ints.UniformInPlace(0, 1));
        using var f = Tensor.Zeros([3]);
        Assert.Throws<EngineException>(() => f.UniformInPlace(1, 0));
        Assert.Throws<EngineException>(() => f.NormalInPlace(0, -1));
        using var e = f.Expand(2, 3);
        Assert.Throws<ShapeException>(() => e.UniformInPlace(0, 1));
    }

    [Test]
    public void CreationErrorsNameTheOp()
    {
        var ex = Assert.Throws<DTypeException>(() => Tensor.Rand([2], DType.Int64));
        Assert.That(ex!.Message, Does.Contain("Rand"));
        ex = Assert.Throws<DTypeException>(() => Tensor.Randn([2], DType.Bool));
        Assert.That(ex!.Message, Does.Contain("Randn"));
        var sx = Assert.Throws<ShapeException>(() => Tensor.Rand([2, -1]));
        Assert.That(sx!.Message, Does.Contain("Rand"));
        var ux = Assert.Throws<EngineException>(() => Tensor.Uniform([2], 3, 1));
        Assert.That(ux!.Message, Does.Contain("Uniform"));
        ux = Assert.Throws<EngineException>(() => Tensor.Normal([2], 0, double.NaN));
        Assert.That(ux!.Message, Does.Contain("Normal"));
    }

    [Test]
    public void DropoutScalesKeptElementsAndZeroesAboutP()
    {
        const double p = 0.3;
        var rng = new Random(12);
        foreach (var dt in Floats)
        {
            var values = Ref.Random(rng, 200 * 100, dt, 0.5, 2);
            using var x = Tensor.FromArray(values, [200, 100]).To(dt);
            using var y = x.Dropout(p, generator: new Generator(31));
            Assert.That(y.DType, Is.EqualTo(dt));
            var v = y.ToArray<double>();
            int zeros = 0;
            var kept = new List<double>(); var expected = new List<double>();
            for (int i = 0; i < v.Length; i++)
            {
                if (v[i] == 0) { zeros++; continue; }
                kept.Add(v[i]);
                expected.Add(Ref.RoundTo(values[i] / (1 - p), dt));
            }
            // One rounding of the float32 product (x · fl(1/(1 − p))) on store: within an ulp or two of x/(1 − p).
            Ref.AssertClose([.. kept], [.. expected], dt, $"{dt} kept elements", 4);
            Assert.That(zeros / (double)v.Length, Is.EqualTo(p).Within(5 * Math.Sqrt(p * (1 - p) / v.Length)), $"{dt} zero fraction");

            // The mask is the same for the same generator state, whatever the dtype.
            using var y2 = x.Dropout(p, generator: new Generator(31));
            Assert.That(y2.ToArray<double>().SequenceEqual(v), Is.True, $"{dt} same mask for the same generator state");
        }
    }

    [Test]
    public void DropoutIdentityCasesAndErrors()
    {
        using var x = Tensor.FromArray(new float[] { 1, -2, 3, float.NaN }, requiresGrad: true);
        foreach (var y in new[] { x.Dropout(0.5, training: false), x.Dropout(0) })
        {
            Assert.That(y.ToArray<float>(), Is.EqualTo(x.ToArray<float>()));
            Assert.That(y, Is.Not.SameAs(x));
            Assert.That(y.GradFn, Is.Not.Null, "recorded as an alias");
            y.Dispose();
        }
        using var z = x.Dropout(1);
        var zv = z.ToArray<float>();
        Assert.That(zv.Take(3), Is.All.EqualTo(0f));
        Assert.That(float.IsNaN(zv[3]), Is.True, "x·0 as PyTorch");

        foreach (var p in new[] { -0.1, 1.5, double.NaN })
        {
            var ex = Assert.Throws<EngineException>(() => x.Dropout(p));
            Assert.That(ex!.Message, Does.Contain("Dropout"));
        }
        using var ints = Tensor.FromArray(new long[] { 1, 2 });
        Assert.Throws<DTypeException>(() => ints.Dropout(0.5));
        using var same = ints.Dropout(0.5, training: false);
        Assert.That(same.ToArray<long>(), Is.EqualTo(new long[] { 1, 2 }));
    }

    [Test]
    public void DropoutGradientFlowsOnlyThroughKeptElements()
    {
        const double p = 0.4;
        var rng = new Random(5);
        var xv = Ref.Random(rng, 64, DType.Float64, 0.5, 2);
        var gv = Ref.Random(rng, 64, DType.Float64);
        using var x = Tensor.FromArray(xv, [8, 8], requiresGrad: true);
        using var y = x.Dropout(p, generator: new Generator(6));
        using var gy = Tensor.FromArray(gv, [8, 8]);
        y.Backward(gy);
        var yv = y.ToArray<double>();
        var grad = x.Grad!.ToArray<double>();
        var expected = new double[64];
        for (int i = 0; i < 64; i++) expected[i] = yv[i] != 0 ? gv[i] / (1 - p) : 0;
        Ref.AssertClose(grad, expected, DType.Float64, "dropout gradient");
        x.Grad!.Dispose();
    }
}

using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>Factories, host transfers, dtype conversions and copies.</summary>
[TestFixture]
public class CreationAndDataTests
{
    static readonly DType[] AllTypes = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16, DType.Int32, DType.Int64, DType.Bool];
    static readonly int[][] Shapes = [[], [0], [1], [5], [2, 3], [2, 0, 4], [1, 1, 3]];

    /// <summary>A value of <paramref name="v"/> converted to <paramref name="dt"/> as plain C# casts do (truncation toward zero for ints).</summary>
    static double Conv(double v, DType dt) => dt switch
    {
        DType.Float64 => v,
        DType.Float32 => (float)v,
        DType.Float16 => (double)(Half)v,
        DType.BFloat16 => BFloat16RneFromDouble(v),
        DType.Int32 => (int)v,
        DType.Int64 => (long)v,
        _ => v != 0 ? 1 : 0,
    };

    /// <summary>Round-to-nearest-even of a finite double to bfloat16's 8 significant bits, written on the bits.</summary>
    static double BFloat16RneFromDouble(double v)
    {
        if (double.IsNaN(v) || double.IsInfinity(v) || v == 0) return v;
        long bits = BitConverter.DoubleToInt64Bits(v);
        // 52 fraction bits of which bfloat16 keeps 7: drop 45 with round-half-even.
        long lsb = (bits >> 45) & 1;
        bits += (1L << 44) - 1 + lsb;
        bits &= ~((1L << 45) - 1);
        double r = BitConverter.Int64BitsToDouble(bits);
        return Math.Abs(r) > 3.3895313892515355e38 ? Math.CopySign(double.PositiveInfinity, v) : r; // beyond bf16 max
    }

    static ushort Bf16RneFromFloatBits(float f)
    {
        uint b = BitConverter.SingleToUInt32Bits(f);
        return (ushort)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
    }

    [Test]
    public void ZerosOnesFullOnEveryDTypeAndShape()
    {
        foreach (var dt in AllTypes)
            foreach (var shape in Shapes)
            {
                using var z = Tensor.Zeros(shape, dt);
                using var o = Tensor.Ones(shape, dt);
                using var f = Tensor.Full(shape, 2.75, dt);
                using var fn = Tensor.Full(shape, -1.5, dt);
                int n = Ref.Numel(shape);
                foreach (var (t, v) in new[] { (z, 0.0), (o, 1.0), (f, 2.75), (fn, -1.5) })
                {
                    Assert.That(t.Shape, Is.EqualTo(shape));
                    Assert.That(t.DType, Is.EqualTo(dt));
                    Assert.That(t.Numel, Is.EqualTo(n));
                    Assert.That(t.Rank, Is.EqualTo(shape.Length));
                    Assert.That(t.IsContiguous, Is.True);
                    Assert.That(t.ToArray<double>(), Is.EqualTo(Enumerable.Repeat(Conv(v, dt), n).ToArray()), $"{dt} {Shape.Format(shape)} fill {v}");
                }
            }
        using var x = Tensor.Full([2, 3], 4, DType.Int64);
        using var zl = x.ZerosLike(); using var ol = x.OnesLike(); using var fl = x.FullLike(9); using var el = x.EmptyLike();
        foreach (var t in new[] { zl, ol, fl, el })
        {
            Assert.That(t.Shape, Is.EqualTo(new[] { 2, 3 }));
            Assert.That(t.DType, Is.EqualTo(DType.Int64));
        }
        Assert.That(fl.ToArray<long>(), Is.All.EqualTo(9L));
        Assert.That(ol.ToArray<long>(), Is.All.EqualTo(1L));
        Assert.That(zl.ToArray<long>(), Is.All.EqualTo(0L));
        using var g = Tensor.Full([2], 1.5, DType.Float32, requiresGrad: true);
        Assert.That(g.RequiresGrad, Is.True);
        using var gz = Tensor.Zeros([2], DType.Float64, requiresGrad: true);
        Assert.That(gz.RequiresGrad, Is.True);
    }

    [Test]
    public void Arange()
    {
        using var a = Tensor.Arange(5);
        Assert.That(a.DType, Is.EqualTo(DType.Int64));
        Assert.That(a.ToArray<long>(), Is.EqualTo(new long[] { 0, 1, 2, 3, 4 }));
        using var e = Tensor.Arange(0);
        Assert.That(e.Shape, Is.EqualTo(new[] { 0 }));
        var cases = new (double Start, double End, double Step, double[] Want)[]
        {
            (0, 1, 0.25, [0, 0.25, 0.5, 0.75]),
            (1, 2.5, 0.5, [1, 1.5, 2]),
            (1, 2.6, 0.5, [1, 1.5, 2, 2.5]),
            (5, 0, -1.5, [5, 3.5, 2, 0.5]),
            (3, -1, -1, [3, 2, 1, 0]),
            (-2, 2, 1, [-2, -1, 0, 1]),
            (2, 2, 1, []),
            (2, 5, -1, []),
            (5, 2, 1, []),
        };
        foreach (var (s, en, st, want) in cases)
            foreach (var dt in new[] { DType.Float64, DType.Float32, DType.Float16, DType.BFloat16 })
            {
                using var t = Tensor.Arange(s, en, st, dt);
                Assert.That(t.DType, Is.EqualTo(dt));
                Assert.That(t.ToArray<double>(), Is.EqualTo(want), $"arange({s}, {en}, {st}) {dt}");
            }
        using var ten = Tensor.Arange(0, 1, 0.1, DType.Float64);
        Assert.That(ten.Numel, Is.EqualTo(10));
        Ref.AssertClose(ten.ToArray<double>(), Enumerable.Range(0, 10).Select(i => i * 0.1).ToArray(), DType.Float64, "arange 0.1");
        using var ints = Tensor.Arange(10, 0, -3, DType.Int32);
        Assert.That(ints.ToArray<int>(), Is.EqualTo(new[] { 10, 7, 4, 1 }));
        using var longs = Tensor.Arange(-3, 3, 2, DType.Int64);
        Assert.That(longs.ToArray<long>(), Is.EqualTo(new long[] { -3, -1, 1 }));
        Assert.That(() => Tensor.Arange(0, 1, 0), Throws.TypeOf<ShapeException>().With.Message.Contains("Arange"));
        Assert.That(() => Tensor.Arange(0, double.PositiveInfinity, 1), Throws.TypeOf<ShapeException>());
    }

    [Test]
    public void Eye()
    {
        foreach (var (n, m) in new (int, int?)[] { (3, null), (2, 4), (4, 2), (1, null), (0, null), (0, 3), (3, 0) })
            foreach (var dt in AllTypes)
            {
                using var t = Tensor.Eye(n, m, dt);
                int cols = m ?? n;
                Assert.That(t.Shape, Is.EqualTo(new[] { n, cols }));
                Assert.That(t.DType, Is.EqualTo(dt));
                var exp = new double[n * cols];
                for (int i = 0; i < n; i++) for (int j = 0; j < cols; j++) exp[i * cols + j] = i == j ? 1 : 0;
                Assert.That(t.ToArray<double>(), Is.EqualTo(exp), $"eye({n}, {m}) {dt}");
            }
    }

    [Test]
    public void FromArrayAllElementTypesRoundTrip()
    {
        RoundTrip(new[] { 1.5, -2, double.MaxValue, double.Epsilon, double.NaN }, DType.Float64);
        RoundTrip(new[] { 1.5f, -2, float.MaxValue, float.Epsilon, float.NegativeInfinity, 1e-40f }, DType.Float32);
        RoundTrip(new[] { (Half)1.5, (Half)(-2), Half.MaxValue, Half.Epsilon }, DType.Float16);
        RoundTrip(new[] { (BFloat16)1.5f, (BFloat16)(-2f), BFloat16.MaxValue, BFloat16.Epsilon }, DType.BFloat16);
        RoundTrip(new[] { 1, -2, int.MaxValue, int.MinValue }, DType.Int32);
        RoundTrip(new[] { 1L, -2, long.MaxValue, long.MinValue }, DType.Int64);
        RoundTrip(new[] { true, false, true, true }, DType.Bool);
        using var s = Tensor.FromArray(new[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        Assert.That(s.Shape, Is.EqualTo(new[] { 2, 3 }));
        using var empty = Tensor.FromArray(Array.Empty<float>());
        Assert.That(empty.Shape, Is.EqualTo(new[] { 0 }));
        using var zeroD = Tensor.FromArray(new[] { 7.0 }, []);
        Assert.That(zeroD.Rank, Is.Zero);
        Assert.That(zeroD.Item(), Is.EqualTo(7));
        Assert.That(() => Tensor.FromArray(new[] { 1, 2, 3 }, [2, 2]), Throws.TypeOf<ShapeException>().With.Message.Contains("FromArray"));
        Assert.That(() => Tensor.FromArray(new byte[] { 1 }), Throws.TypeOf<DTypeException>());
        Assert.That(Tensor.DTypeOf<double>(), Is.EqualTo(DType.Float64));
        Assert.That(Tensor.DTypeOf<Half>(), Is.EqualTo(DType.Float16));
        Assert.That(Tensor.DTypeOf<bool>(), Is.EqualTo(DType.Bool));
    }

    static void RoundTrip<T>(T[] data, DType dt) where T : unmanaged
    {
        using var t = Tensor.FromArray(data);
        Assert.That(t.DType, Is.EqualTo(dt));
        Assert.That(t.Shape, Is.EqualTo(new[] { data.Length }));
        Assert.That(t.ToArray<T>(), Is.EqualTo(data), dt.ToString());
        data[0] = default; // FromArray copied
        Assert.That(t.ToArray<T>()[0], Is.Not.EqualTo(default(T)), dt + " copy");
    }

    [Test]
    public void ToArrayConvertsBetweenAllDTypes()
    {
        var values = new double[] { 0, 1, -2, 3.75, -0.5, 100, -7.25, 0.125 };
        foreach (var src in AllTypes)
            foreach (var kind in new[] { Layouts.Kind.Contiguous, Layouts.Kind.Strided })
            {
                var stored = values.Select(v => Conv(v, src)).ToArray();
                using var t = Layouts.Make(values, [2, 4], src, kind);
                Assert.That(t.ToArray<double>(), Is.EqualTo(stored), $"{src} as double");
                Assert.That(t.ToArray<float>(), Is.EqualTo(stored.Select(v => (float)v).ToArray()), $"{src} as float");
                Assert.That(t.ToArray<Half>(), Is.EqualTo(stored.Select(v => (Half)v).ToArray()), $"{src} as Half");
                Assert.That(t.ToArray<BFloat16>().Select(b => (double)b), Is.EqualTo(stored.Select(BFloat16RneFromDouble)), $"{src} as BFloat16");
                Assert.That(t.ToArray<int>(), Is.EqualTo(stored.Select(v => (int)v).ToArray()), $"{src} as int (truncation)");
                Assert.That(t.ToArray<long>(), Is.EqualTo(stored.Select(v => (long)v).ToArray()), $"{src} as long");
                Assert.That(t.ToArray<bool>(), Is.EqualTo(stored.Select(v => v != 0).ToArray()), $"{src} as bool");
                foreach (var dst in AllTypes)
                {
                    using var c = t.To(dst);
                    Assert.That(c.DType, Is.EqualTo(dst));
                    Assert.That(c.ToArray<double>(), Is.EqualTo(stored.Select(v => Conv(v, dst)).ToArray()), $"{src}.To({dst}) {kind}");
                }
            }
        using var nan = Tensor.FromArray(new[] { double.NaN, 0.0 });
        Assert.That(nan.ToArray<bool>(), Is.EqualTo(new[] { true, false }), "NaN is truthy");
    }

    [Test]
    public void ItemAndScalar()
    {
        foreach (var dt in AllTypes)
        {
            using var s = Tensor.Scalar(1, dt);
            Assert.That(s.Rank, Is.Zero);
            Assert.That(s.Shape, Is.Empty);
            Assert.That(s.Numel, Is.EqualTo(1));
            Assert.That(s.DType, Is.EqualTo(dt));
            Assert.That(s.Item(), Is.EqualTo(1.0));
        }
        using var f = Tensor.Scalar(-3.5, DType.Float64);
        Assert.That(f.Item<float>(), Is.EqualTo(-3.5f));
        Assert.That(f.Item<int>(), Is.EqualTo(-3));
        Assert.That(f.Item<bool>(), Is.True);
        using var one = Tensor.FromArray(new[] { 4 }, [1, 1]);
        Assert.That(one.Item<long>(), Is.EqualTo(4L));
        using var x = Tensor.FromArray(new[] { 1.0, 2, 3 });
        using var x2 = x[2];
        Assert.That(x2.Item(), Is.EqualTo(3));
        Assert.That(() => x.Item(), Throws.TypeOf<ShapeException>().With.Message.Contains("Item"));
        using var e = Tensor.Zeros([0]);
        Assert.That(() => e.Item(), Throws.TypeOf<ShapeException>());
    }

    [Test]
    public void BFloat16AndHalfRoundTripsAreExact()
    {
        // Every bfloat16 and every half: widen, then narrow back: the same bits (NaNs stay NaN).
        var bad = new List<string>();
        var bf = new BFloat16[65536];
        for (int i = 0; i < bf.Length; i++) bf[i] = BFloat16.FromBits((ushort)i);
        using var tb = Tensor.FromArray(bf);
        foreach (var wide in new[] { DType.Float32, DType.Float64 })
        {
            using var w = tb.To(wide);
            var wv = w.ToArray<double>();
            using var back = w.To(DType.BFloat16);
            var bb = back.ToArray<BFloat16>();
            for (int i = 0; i < bf.Length; i++)
            {
                if (BFloat16.IsNaN(bf[i]))
                {
                    if (!double.IsNaN(wv[i]) || !BFloat16.IsNaN(bb[i])) bad.Add($"bf16 NaN {i:X4} via {wide}");
                    continue;
                }
                if (wv[i] != BitConverter.UInt32BitsToSingle((uint)i << 16)) bad.Add($"bf16 {i:X4} widened to {wide}: {wv[i]}");
                if (bb[i].Bits != bf[i].Bits) bad.Add($"bf16 {i:X4} via {wide}: {bb[i].Bits:X4}");
            }
        }
        var h = new Half[65536];
        for (int i = 0; i < h.Length; i++) h[i] = BitConverter.UInt16BitsToHalf((ushort)i);
        using var th = Tensor.FromArray(h);
        foreach (var wide in new[] { DType.Float32, DType.Float64, DType.BFloat16 })
        {
            using var w = th.To(wide);
            using var back = w.To(DType.Float16);
            var hb = back.ToArray<Half>();
            for (int i = 0; i < h.Length; i++)
            {
                if (Half.IsNaN(h[i])) { if (!Half.IsNaN(hb[i])) bad.Add($"half NaN {i:X4} via {wide}"); continue; }
                // Through bfloat16 a half keeps its value only when its significand fits 8 bits and it is normal in bf16.
                if (wide == DType.BFloat16) { if (hb[i] != (Half)(float)BFloat16RneFromDouble((double)h[i])) bad.Add($"half {i:X4} via bf16"); continue; }
                if (BitConverter.HalfToUInt16Bits(hb[i]) != (ushort)i) bad.Add($"half {i:X4} via {wide}: {BitConverter.HalfToUInt16Bits(hb[i]):X4}");
            }
        }
        Assert.That(bad, Is.Empty, string.Join("; ", bad.Take(10)));
    }

    [Test]
    public void NarrowingConversionsRoundToNearestEvenOnce()
    {
        // float32 → bfloat16, on the dense bulk path and the strided path, against round-half-even on the bits.
        var rng = new Random(31);
        var f = new float[4096];
        for (int i = 0; i < f.Length; i++) f[i] = BitConverter.UInt32BitsToSingle((uint)rng.Next() & 0x7F7FFFFF | (uint)(i & 1) << 31);
        f[0] = 1 + MathF.Pow(2, -8); f[1] = 1 + 3 * MathF.Pow(2, -8); f[2] = 1 + MathF.Pow(2, -8) + MathF.Pow(2, -20);
        using var tf = Tensor.FromArray(f);
        using var dense = tf.To(DType.BFloat16);
        using var tf2 = Tensor.FromArray(f, [64, 64]);
        using var tt = tf2.T;
        using var strided = tt.To(DType.BFloat16);
        var db = dense.ToArray<BFloat16>();
        var sb = strided.ToArray<BFloat16>();
        var bad = new List<string>();
        for (int i = 0; i < f.Length; i++)
        {
            if (db[i].Bits != Bf16RneFromFloatBits(f[i])) bad.Add($"dense {f[i]:R}: {db[i].Bits:X4}");
            int r = i / 64, c = i % 64;
            if (sb[i].Bits != Bf16RneFromFloatBits(f[c * 64 + r])) bad.Add($"strided {f[c * 64 + r]:R}: {sb[i].Bits:X4}");
        }
        Assert.That(bad, Is.Empty, string.Join("; ", bad.Take(10)));
        // float64 → bfloat16 and float64 → float16 round once, not through float32.
        double tie = 1 + Math.Pow(2, -8), above = tie + Math.Pow(2, -30);
        using var d = Tensor.FromArray(new[] { tie, above, -above });
        using var d16 = d.To(DType.BFloat16);
        Assert.That(d16.ToArray<double>(), Is.EqualTo(new[] { 1.0, 1 + Math.Pow(2, -7), -1 - Math.Pow(2, -7) }));
        double htie = 1 + Math.Pow(2, -11), habove = htie + Math.Pow(2, -40);
        using var dh = Tensor.FromArray(new[] { htie, habove });
        using var h16 = dh.To(DType.Float16);
        Assert.That(h16.ToArray<double>(), Is.EqualTo(new[] { 1.0, 1 + Math.Pow(2, -10) }));
        using var big = Tensor.FromArray(new[] { 1e300, -1e300, 70000.0 });
        using var bigh = big.To(DType.Float16);
        Assert.That(bigh.ToArray<double>(), Is.EqualTo(new[] { double.PositiveInfinity, double.NegativeInfinity, double.PositiveInfinity }));
        using var bigb = big.To(DType.BFloat16);
        Assert.That(bigb.ToArray<double>().Take(2), Is.EqualTo(new[] { double.PositiveInfinity, double.NegativeInfinity }));
    }

    [Test]
    public void CloneIsIndependent()
    {
        foreach (var dt in AllTypes)
            foreach (var kind in Layouts.All)
            {
                var v = new double[] { 1, 0, 3, 4, 0, 6 };
                using var x = Layouts.Make(v, [2, 3], dt, kind);
                using var c = x.Clone();
                Assert.That(c.IsContiguous, Is.True);
                Assert.That(ReferenceEquals(c.Storage, x.Storage), Is.False);
                Assert.That(c.ToArray<double>(), Is.EqualTo(x.ToArray<double>()));
                c.FillInPlace(1);
                Assert.That(x.ToArray<double>(), Is.EqualTo(v.Select(a => Conv(a, dt)).ToArray()), $"{dt} {kind}: clone write leaked");
                x.ZeroInPlace();
                Assert.That(c.ToArray<double>(), Is.All.EqualTo(1.0));
            }
    }

    [Test]
    public void ToSameDTypeAndDetachShareStorage()
    {
        using var x = Tensor.FromArray(new[] { 1f, 2, 3 }, requiresGrad: true);
        using var same = x.To(DType.Float32);
        Assert.That(ReferenceEquals(same.Storage, x.Storage), Is.True);
        using var dev = x.To(Device.Cpu);
        Assert.That(ReferenceEquals(dev.Storage, x.Storage), Is.True);
        using var both = x.To(Device.Cpu, DType.Float64);
        Assert.That(both.DType, Is.EqualTo(DType.Float64));
        Assert.That(both.ToArray<double>(), Is.EqualTo(new[] { 1.0, 2, 3 }));
        using var d = x.Detach();
        Assert.That(ReferenceEquals(d.Storage, x.Storage), Is.True);
        Assert.That(d.RequiresGrad, Is.False);
        Assert.That(d.IsLeaf, Is.True);
        Assert.That(x.RequiresGrad, Is.True);
    }

    [Test]
    public void EmptyAndSizeAccessors()
    {
        using var t = Tensor.Empty([2, 3, 4], DType.Int64);
        Assert.That(t.Shape, Is.EqualTo(new[] { 2, 3, 4 }));
        Assert.That(t.Size(0), Is.EqualTo(2));
        Assert.That(t.Size(-1), Is.EqualTo(4));
        Assert.That(t.Numel, Is.EqualTo(24));
        Assert.That(t.Device, Is.EqualTo(Device.Cpu));
        Assert.That(t.Storage.ByteLength, Is.EqualTo(24 * 8));
        var s = t.Shape.ToArray(); s[0] = 99;
        Assert.That(t.Shape[0], Is.EqualTo(2), "Shape.ToArray returns a copy");
        Assert.That(() => t.Size(3), Throws.TypeOf<ShapeException>().With.Message.Contains("Size"));
        Assert.That(() => Tensor.Empty([2, -1]), Throws.TypeOf<ShapeException>().With.Message.Contains("Empty"));
        using var sc = Tensor.Scalar(1);
        Assert.That(() => sc.Size(0), Throws.TypeOf<ShapeException>());
    }

    [Test]
    public void DTypeAndDeviceFacts()
    {
        Assert.That(AllTypes.Select(t => t.ElementSize()), Is.EqualTo(new[] { 8, 4, 2, 2, 4, 8, 1 }));
        Assert.That(AllTypes.Select(t => t.Name()), Is.EqualTo(new[] { "float64", "float32", "float16", "bfloat16", "int32", "int64", "bool" }));
        Assert.That(AllTypes.Select(t => t.IsFloatingPoint()), Is.EqualTo(new[] { true, true, true, true, false, false, false }));
        Assert.That(AllTypes.Select(t => t.IsHalf()), Is.EqualTo(new[] { false, false, true, true, false, false, false }));
        foreach (var t in AllTypes) Assert.That(DTypes.Parse(t.Name()), Is.EqualTo(t));
        Assert.That(DTypes.Parse(" Half "), Is.EqualTo(DType.Float16));
        Assert.That(DTypes.Parse("bf16"), Is.EqualTo(DType.BFloat16));
        Assert.That(DTypes.Parse("long"), Is.EqualTo(DType.Int64));
        Assert.That(() => DTypes.Parse("float8"), Throws.TypeOf<FormatException>());
        Assert.That(Device.Parse("cpu"), Is.EqualTo(Device.Cpu));
        Assert.That(Device.Parse("CUDA:2"), Is.EqualTo(Device.Cuda(2)));
        Assert.That(Device.Parse("cuda"), Is.EqualTo(Device.Cuda(0)));
        Assert.That(Device.Cuda(1).ToString(), Is.EqualTo("cuda:1"));
        Assert.That(Device.Cpu.ToString(), Is.EqualTo("cpu"));
        Assert.That(() => Device.Parse("tpu"), Throws.TypeOf<FormatException>());
        Assert.That(() => Device.Parse("cuda:-1"), Throws.TypeOf<FormatException>());
    }
}

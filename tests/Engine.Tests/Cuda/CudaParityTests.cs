using Engine.Backends;
using Engine.Backends.Cuda;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The CUDA kernels against the CPU backend, written once and run per device: each test runs the same Tensor op on a
/// CPU tensor and on its copy on <see cref="Device"/> (in contiguous, transposed, strided, offset and broadcast
/// layouts built on the device) and compares the results: bit for bit for copies, fills, casts and uniform random
/// numbers, within a per-dtype tolerance otherwise (NaN only matches NaN).
/// </summary>
public abstract class CudaParityTests
{
    /// <summary>The device under test.</summary>
    protected abstract Device Device { get; }

    /// <summary>The length of the last dim of most test shapes (small on the emulator, larger on a GPU).</summary>
    protected abstract int Width { get; }

    /// <summary>
    /// True where the device's math library is not .NET's: on a GPU, ILGPU maps float32 exp/log/sin/cos/tanh/pow to
    /// PTX's approximate instructions (tanh.approx.f32 has a relative error near 2⁻¹¹) and float64 ones to CORDIC
    /// routines (relative errors up to ~1e-11 near the zeros of sin, cos and log). Transcendental results then get
    /// looser tolerances; exact operations keep theirs.
    /// </summary>
    protected virtual bool ApproximateMath => false;

    /// <summary>Relative and absolute tolerance for a transcendental result of <paramref name="dtype"/>.</summary>
    protected (double Rtol, double Atol) MathTolerance(DType dtype) => (dtype, ApproximateMath) switch
    {
        (DType.Float32, true) => (1e-3, 1e-5),
        (DType.Float64, true) => (1e-10, 1e-13),
        _ => Tolerance(dtype),
    };

    static readonly DType[] Floats = [DType.Float32, DType.Float64, DType.Float16, DType.BFloat16];
    static readonly DType[] All = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16, DType.Int32, DType.Int64, DType.Bool];

    /// <summary>Where a test's input sits on the device.</summary>
    protected enum Kind { Contiguous, Transposed, Strided, Offset }

    // ---- helpers ----

    /// <summary>
    /// The same values (row-major, shape <paramref name="shape"/>) as a CPU tensor and a device tensor, both in
    /// layout <paramref name="kind"/>: the base buffer is built on the CPU, copied to the device, and viewed there.
    /// </summary>
    protected (Tensor Cpu, Tensor Dev) Pair(double[] values, int[] shape, DType dtype, Kind kind = Kind.Contiguous)
    {
        int n = Ref.Numel(shape);
        double[] buf;
        int[] baseShape;
        Func<Tensor, Tensor> view;
        switch (kind)
        {
            case Kind.Transposed when shape.Length >= 2:
            {
                int r = shape.Length;
                baseShape = (int[])shape.Clone();
                (baseShape[r - 1], baseShape[r - 2]) = (baseShape[r - 2], baseShape[r - 1]);
                buf = new double[n];
                for (int f = 0; f < n; f++)
                {
                    var idx = Ref.Unravel(f, shape);
                    (idx[r - 1], idx[r - 2]) = (idx[r - 2], idx[r - 1]);
                    buf[Ref.Ravel(idx, baseShape)] = values[f];
                }
                view = t => t.Transpose(-1, -2);
                break;
            }
            case Kind.Strided when shape.Length >= 1:
            {
                baseShape = (int[])shape.Clone();
                baseShape[^1] *= 2;
                buf = new double[Ref.Numel(baseShape)];
                for (int f = 0; f < n; f++)
                {
                    var idx = Ref.Unravel(f, shape);
                    idx[^1] *= 2;
                    buf[Ref.Ravel(idx, baseShape)] = values[f];
                }
                int w = baseShape[^1];
                view = t => t.Slice(-1, 0, w, 2);
                break;
            }
            case Kind.Offset:
            {
                baseShape = [n + 3];
                buf = new double[n + 3];
                Array.Copy(values, 0, buf, 3, n);
                view = t => { using var s = t.Narrow(0, 3, n); return s.View(shape); };
                break;
            }
            default:
                baseShape = shape; buf = values; view = t => t.Detach();
                break;
        }
        using var b64 = Tensor.FromArray(buf, baseShape);
        using var baseCpu = b64.To(dtype);
        using var baseDev = baseCpu.To(Device);
        return (view(baseCpu), view(baseDev));
    }

    /// <summary>Random values rounded to the dtype, in [lo, hi).</summary>
    protected double[] Values(Random rng, int n, DType dtype, double lo = -3, double hi = 3) =>
        dtype == DType.Bool ? Enumerable.Range(0, n).Select(_ => (double)rng.Next(2)).ToArray() : Ref.Random(rng, n, dtype, lo, hi);

    /// <summary>The values of a tensor on any device, as float64, read back through the CPU.</summary>
    protected static double[] Read(Tensor t)
    {
        if (t.Device.Type == DeviceType.Cpu) return t.ToArray<double>();
        using var c = t.To(Device.Cpu);
        return c.ToArray<double>();
    }

    /// <summary>Asserts the device result equals the CPU result: same shape and dtype, values within the dtype's tolerance.</summary>
    protected static void AssertParity(Tensor cpu, Tensor dev, string what, double rtol = -1, double atol = -1)
    {
        Assert.That(dev.Device.Type, Is.EqualTo(DeviceType.Cuda), what);
        Assert.That(dev.Layout.Shape, Is.EqualTo(cpu.Layout.Shape), $"{what}: shape");
        Assert.That(dev.DType, Is.EqualTo(cpu.DType), $"{what}: dtype");
        var (r, a) = Tolerance(cpu.DType);
        Ref.AssertClose(Read(dev), Read(cpu), rtol >= 0 ? rtol : r, atol >= 0 ? atol : a, what);
    }

    /// <summary>Asserts bit-identical values (compared as float64: exact for every dtype; NaN matches NaN; −0 is not +0).</summary>
    protected static void AssertIdentical(Tensor cpu, Tensor dev, string what)
    {
        Assert.That(dev.Layout.Shape, Is.EqualTo(cpu.Layout.Shape), $"{what}: shape");
        Assert.That(dev.DType, Is.EqualTo(cpu.DType), $"{what}: dtype");
        var c = Read(cpu); var d = Read(dev);
        for (int i = 0; i < c.Length; i++)
        {
            bool same = double.IsNaN(c[i]) ? double.IsNaN(d[i]) : BitConverter.DoubleToInt64Bits(c[i]) == BitConverter.DoubleToInt64Bits(d[i]);
            if (!same) Assert.Fail($"{what}: [{i}] device {d[i]:R}, CPU {c[i]:R}");
        }
    }

    static (double rtol, double atol) Tolerance(DType dtype) => dtype switch
    {
        DType.Float64 => (1e-12, 1e-12),
        DType.Float32 => (2e-5, 1e-6),
        DType.Float16 => (2e-3, 1e-4),
        DType.BFloat16 => (1.6e-2, 1e-3),
        _ => (0, 0),
    };

    // ---- copies, casts, fills ----

    [Test]
    public void Cast_BetweenAllDTypes_IsBitIdentical()
    {
        var rng = new Random(1);
        int n = 3 * Width;
        var raw = new double[n];
        for (int i = 0; i < n; i++) raw[i] = Math.Round((rng.NextDouble() - 0.5) * 600, rng.Next(4));
        double[] special = [double.NaN, double.PositiveInfinity, double.NegativeInfinity, -0.0, 1e10, -1e10, 65519.9, 3e38, 1e-40, 0.5, -2.5, 2147483648.0];
        Array.Copy(special, raw, special.Length);
        foreach (var from in All)
        {
            var (cpu, dev) = Pair(raw, [3, Width], from, from == DType.Float32 ? Kind.Transposed : Kind.Contiguous);
            using (cpu) using (dev)
                foreach (var to in All)
                {
                    using var c = cpu.To(to);
                    using var d = dev.To(to);
                    AssertIdentical(c, d, $"{from.Name()} -> {to.Name()}");
                }
        }
    }

    [Test]
    public void Copy_IntoStridedViews_IsBitIdentical()
    {
        var rng = new Random(2);
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16, DType.Int64, DType.Bool })
        {
            var v = Values(rng, 4 * Width, dtype);
            var (srcCpu, srcDev) = Pair(v, [4, Width], dtype, Kind.Strided);
            using var dstCpu = Tensor.Zeros([Width, 4], dtype);
            using var dstDev = Tensor.Zeros([Width, 4], dtype, Device);
            using (srcCpu) using (srcDev)
            using (var tc = dstCpu.Transpose(0, 1)) using (var td = dstDev.Transpose(0, 1))
            {
                tc.CopyInPlace(srcCpu).Dispose();
                td.CopyInPlace(srcDev).Dispose();
            }
            AssertIdentical(dstCpu, dstDev, $"copy {dtype.Name()}");
        }
    }

    [Test]
    public void Fill_AllDTypes_IsBitIdentical()
    {
        foreach (var dtype in All)
            foreach (var value in new[] { 3.7, -0.0, 0.0, 1e10, double.NaN, -2.5 })
            {
                if (!dtype.IsFloatingPoint() && double.IsNaN(value)) continue;
                using var c = Tensor.Full([5, Width], value, dtype);
                using var d = Tensor.Full([5, Width], value, dtype, Device);
                AssertIdentical(c, d, $"fill {dtype.Name()} {value}");
                // A strided fill of every other column.
                using (var vc = c.Slice(1, 0, Width, 2)) vc.FillInPlace(1.25).Dispose();
                using (var vd = d.Slice(1, 0, Width, 2)) vd.FillInPlace(1.25).Dispose();
                AssertIdentical(c, d, $"strided fill {dtype.Name()}");
            }
    }

    [Test]
    public void Float32ToBFloat16_AllPatternsAndTies_MatchTheCpuBits()
    {
        // Every bf16 pattern widened, and with low bits that round down, tie, round up (ties to even both ways).
        ushort[] lows = [0x0000, 0x7FFF, 0x8000, 0x8001, 0xFFFF];
        var floats = new float[65536 * lows.Length];
        int k = 0;
        for (int h = 0; h < 65536; h++)
            foreach (var lo in lows) floats[k++] = BitConverter.UInt32BitsToSingle(((uint)h << 16) | lo);
        using var cpu = Tensor.FromArray(floats, [floats.Length]);
        using var dev = cpu.To(Device);
        using var c = cpu.To(DType.BFloat16);
        using var d = dev.To(DType.BFloat16);
        using var back = d.To(Device.Cpu);
        var cb = c.ToArray<BFloat16>(); var db = back.ToArray<BFloat16>();
        for (int i = 0; i < cb.Length; i++)
            if (cb[i].Bits != db[i].Bits) Assert.Fail($"float {BitConverter.SingleToUInt32Bits(floats[i]):X8}: device bf16 {db[i].Bits:X4}, CPU {cb[i].Bits:X4}");
    }

    [Test]
    public void RandomFloatsAndDoubles_ToHalfTypes_MatchTheCpuBits()
    {
        var rng = new Random(3);
        int n = 16 * Width;
        var floats = new float[n];
        var doubles = new double[n];
        for (int i = 0; i < n; i++)
        {
            floats[i] = BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32));
            doubles[i] = BitConverter.UInt64BitsToDouble((ulong)rng.NextInt64() ^ ((ulong)rng.Next(2) << 63)) * (i % 3 == 0 ? 1 : 0) + (i % 3 == 0 ? 0 : (rng.NextDouble() - 0.5) * Math.Pow(2, rng.Next(-30, 30)));
        }
        using var fc = Tensor.FromArray(floats, [n]);
        using var dc = Tensor.FromArray(doubles, [n]);
        using var fd = fc.To(Device);
        using var dd = dc.To(Device);
        foreach (var to in new[] { DType.BFloat16, DType.Float16 })
        {
            using (var c = fc.To(to)) using (var d = fd.To(to)) AssertIdentical(c, d, $"float32 -> {to.Name()}");
            using (var c = dc.To(to)) using (var d = dd.To(to)) AssertIdentical(c, d, $"float64 -> {to.Name()}");
        }
    }

    // ---- elementwise ----

    static readonly (string Name, Func<Tensor, Tensor> Op, double Lo, double Hi, bool Transcendental)[] UnaryOps =
    [
        ("Neg", t => t.Neg(), -3, 3, false),
        ("Abs", t => t.Abs(), -3, 3, false),
        ("Exp", t => t.Exp(), -4, 4, true),
        ("Log", t => t.Log(), 0.05, 5, true),
        ("Sqrt", t => t.Sqrt(), 0, 5, false),
        ("Rsqrt", t => t.Rsqrt(), 0.05, 5, false),
        ("Sin", t => t.Sin(), -3, 3, true),
        ("Cos", t => t.Cos(), -3, 3, true),
        ("Tanh", t => t.Tanh(), -3, 3, true),
        ("Sigmoid", t => t.Sigmoid(), -6, 6, true),
        ("Relu", t => t.Relu(), -3, 3, false),
        ("Gelu", t => t.Gelu(), -4, 4, true),
        ("GeluTanh", t => t.Gelu(approximateTanh: true), -4, 4, true),
        ("Silu", t => t.Silu(), -4, 4, true),
        ("Erf", t => t.Erf(), -4, 4, true),
        ("Square", t => t.Square(), -3, 3, false),
        ("Pow1.5", t => t.Pow(1.5), 0, 4, true),
        ("Clamp", t => t.Clamp(-1, 0.5), -3, 3, false),
        ("Affine", t => { using var m = t.Mul(2.5); return m.Add(-1); }, -3, 3, false),
    ];

    static IEnumerable<string> UnaryNames() => UnaryOps.Select(o => o.Name);

    [TestCaseSource(nameof(UnaryNames))]
    public void Unary_MatchesCpu_InEveryFloatDTypeAndLayout(string name)
    {
        var (_, op, lo, hi, transcendental) = UnaryOps.First(o => o.Name == name);
        var rng = new Random(name.GetHashCode(StringComparison.Ordinal) & 0xFFFF);
        (DType, Kind)[] cases = [(DType.Float32, Kind.Contiguous), (DType.Float32, Kind.Offset), (DType.Float64, Kind.Transposed), (DType.Float16, Kind.Strided), (DType.BFloat16, Kind.Transposed)];
        foreach (var (dtype, kind) in cases)
        {
            var v = Values(rng, 3 * Width, dtype, lo, hi);
            var (cpu, dev) = Pair(v, [3, Width], dtype, kind);
            using (cpu) using (dev)
            using (var c = op(cpu)) using (var d = op(dev))
            {
                var (rtol, atol) = transcendental ? MathTolerance(dtype) : (-1, -1);
                AssertParity(c, d, $"{name} {dtype.Name()} {kind}", rtol, atol);
            }
        }
    }

    [Test]
    public void Unary_OnIntegers_MatchesCpu()
    {
        var rng = new Random(4);
        foreach (var dtype in new[] { DType.Int32, DType.Int64 })
        {
            var v = Values(rng, 2 * Width, dtype, -50, 50);
            var (cpu, dev) = Pair(v, [2, Width], dtype, Kind.Transposed);
            using (cpu) using (dev)
            {
                using (var c = cpu.Abs()) using (var d = dev.Abs()) AssertIdentical(c, d, $"Abs {dtype.Name()}");
                using (var c = cpu.Neg()) using (var d = dev.Neg()) AssertIdentical(c, d, $"Neg {dtype.Name()}");
                var (rtol, atol) = MathTolerance(DType.Float32);
                using (var c = cpu.Exp()) using (var d = dev.Exp()) AssertParity(c, d, $"Exp {dtype.Name()} (promoted)", rtol, atol);
            }
        }
    }

    static readonly (string Name, Func<Tensor, Tensor, Tensor> Op)[] BinaryOps =
    [
        ("Add", (a, b) => a.Add(b)),
        ("Sub", (a, b) => a.Sub(b)),
        ("Mul", (a, b) => a.Mul(b)),
        ("Div", (a, b) => a.Div(b)),
        ("Maximum", (a, b) => a.Maximum(b)),
        ("Minimum", (a, b) => a.Minimum(b)),
        ("Eq", (a, b) => a.Eq(b)),
        ("Ne", (a, b) => a.Ne(b)),
        ("Lt", (a, b) => a.Lt(b)),
        ("Le", (a, b) => a.Le(b)),
        ("Gt", (a, b) => a.Gt(b)),
        ("Ge", (a, b) => a.Ge(b)),
    ];

    static IEnumerable<string> BinaryNames() => BinaryOps.Select(o => o.Name);

    [TestCaseSource(nameof(BinaryNames))]
    public void Binary_MatchesCpu_WithBroadcastingAndSpecialValues(string name)
    {
        var op = BinaryOps.First(o => o.Name == name).Op;
        var rng = new Random(name.GetHashCode(StringComparison.Ordinal) & 0xFFFF);
        foreach (var dtype in new[] { DType.Float32, DType.Float64, DType.Float16, DType.BFloat16, DType.Int32 })
        {
            // Same shape (the dense float32 path), then [2, 1, W] with [3, 1] broadcast to [2, 3, W].
            var va = Values(rng, 3 * Width, dtype); var vb = Values(rng, 3 * Width, dtype);
            if (dtype.IsFloatingPoint())
            {
                va[0] = double.NaN; vb[1] = double.NaN; va[2] = vb[2] = 1.5; va[3] = -0.0; vb[3] = 0.0;
                va[4] = double.PositiveInfinity; vb[5] = double.NegativeInfinity;
            }
            else for (int i = 0; i < vb.Length; i++) if (vb[i] == 0) vb[i] = 1;
            var (ac, ad) = Pair(va, [3, Width], dtype);
            var (bc, bd) = Pair(vb, [3, Width], dtype, dtype == DType.Float32 ? Kind.Contiguous : Kind.Transposed);
            using (ac) using (ad) using (bc) using (bd)
            using (var c = op(ac, bc)) using (var d = op(ad, bd))
                AssertParity(c, d, $"{name} {dtype.Name()}");
            var (xc, xd) = Pair(Values(rng, 2 * Width, dtype, 0.5, 3), [2, 1, Width], dtype, Kind.Strided);
            var (yc, yd) = Pair(Values(rng, 3, dtype, 0.5, 3), [3, 1], dtype);
            using (xc) using (xd) using (yc) using (yd)
            using (var c = op(xc, yc)) using (var d = op(xd, yd))
                AssertParity(c, d, $"{name} {dtype.Name()} broadcast");
        }
    }

    [Test]
    public void MaximumMinimumClamp_WithNaNAndSignedZeros_AreBitIdenticalToCpu()
    {
        // The shared NaNMath rules: maximum/minimum propagate NaN and order −0 below +0; clamp propagates a NaN in x or
        // in a bound. PTX's own max/min would return the non-NaN operand, so these fail on a GPU if a kernel used them.
        double[] a = [double.NaN, 1, double.NaN, -0.0, 0.0, double.NegativeInfinity, 2, -1];
        double[] b = [1, double.NaN, double.NaN, 0.0, -0.0, 3, double.PositiveInfinity, -1];
        foreach (var dtype in Floats)
            foreach (var kind in new[] { Kind.Contiguous, Kind.Strided, Kind.Offset })
            {
                var (ac, ad) = Pair(a, [2, 4], dtype, kind);
                var (bc, bd) = Pair(b, [2, 4], dtype, kind == Kind.Contiguous ? Kind.Contiguous : Kind.Transposed);
                using (ac) using (ad) using (bc) using (bd)
                {
                    string at = $"{dtype.Name()} {kind}";
                    using (var c = ac.Maximum(bc)) using (var d = ad.Maximum(bd)) AssertIdentical(c, d, "Maximum " + at);
                    using (var c = ac.Minimum(bc)) using (var d = ad.Minimum(bd)) AssertIdentical(c, d, "Minimum " + at);
                    using (var c = ac.Clamp(-0.5, 1.5)) using (var d = ad.Clamp(-0.5, 1.5)) AssertIdentical(c, d, "Clamp " + at);
                    using (var c = ac.Clamp(double.NaN, 1)) using (var d = ad.Clamp(double.NaN, 1)) AssertIdentical(c, d, "Clamp(NaN, 1) " + at);
                    using (var c = ac.Clamp(0, double.NaN)) using (var d = ad.Clamp(0, double.NaN)) AssertIdentical(c, d, "Clamp(0, NaN) " + at);
                    using var cpuNaN = ac.Clamp(max: double.NaN);
                    Assert.That(Read(cpuNaN).All(double.IsNaN), "a NaN bound makes every element NaN, as PyTorch's clamp");
                }
            }
    }

    [Test]
    public void Pow_MatchesCpu()
    {
        var rng = new Random(5);
        foreach (var dtype in Floats)
        {
            var (ac, ad) = Pair(Values(rng, 3 * Width, dtype, 0.1, 3), [3, Width], dtype);
            var (bc, bd) = Pair(Values(rng, Width, dtype, -2, 2), [Width], dtype);
            using (ac) using (ad) using (bc) using (bd)
            using (var c = ac.Pow(bc)) using (var d = ad.Pow(bd))
            {
                var (rtol, atol) = MathTolerance(dtype);
                AssertParity(c, d, $"Pow {dtype.Name()}", rtol, atol);
            }
        }
    }

    [Test]
    public void Where_MatchesCpu_ForEveryElementSize()
    {
        var rng = new Random(6);
        var (condSrcC, condSrcD) = Pair(Values(rng, 3 * Width, DType.Float32), [3, 1, Width], DType.Float32);
        using var zc = Tensor.Scalar(0); using var zd = Tensor.Scalar(0, device: Device);
        using (condSrcC) using (condSrcD)
        using (var cc = condSrcC.Gt(zc)) using (var cd = condSrcD.Gt(zd))
            foreach (var dtype in new[] { DType.Float64, DType.Float32, DType.BFloat16, DType.Bool })
            {
                var (ac, ad) = Pair(Values(rng, 2 * Width, dtype), [2, 1, 1, Width], dtype, Kind.Strided);
                var (bc, bd) = Pair(Values(rng, 3 * Width, dtype), [3, 1, Width], dtype, Kind.Transposed);
                using (ac) using (ad) using (bc) using (bd)
                using (var c = Tensor.Where(cc, ac, bc)) using (var d = Tensor.Where(cd, ad, bd))
                    AssertIdentical(c, d, $"Where {dtype.Name()}");
            }
    }

    // ---- reductions ----

    static readonly (string Name, Func<Tensor, Tensor> Op, bool FloatOnly)[] Reductions =
    [
        ("Sum(all)", t => t.Sum(), false),
        ("Sum(-1)", t => t.Sum(-1), false),
        ("Sum(0)", t => t.Sum(0), false),
        ("Mean(1,keep)", t => t.Mean(1, keepDim: true), true),
        ("Max(all)", t => t.Max(), false),
        ("Min(0)", t => { var (v, i) = t.Min(0); i.Dispose(); return v; }, false),
        ("ArgMax(-1)", t => t.ArgMax(-1), false),
        ("ArgMin(0)", t => t.ArgMin(0), false),
        ("Var(-1)", t => t.Var(-1), true),
        ("Var(0,biased)", t => t.Var(0, unbiased: false), true),
        ("Var(all)", t => t.Var(), true),
        ("LogSumExp(-1)", t => t.LogSumExp(-1), true),
        ("LogSumExp(0)", t => t.LogSumExp(0), true),
        ("Norm2", t => t.Norm(2, [1]), true),
        ("Norm1", t => t.Norm(1, [0]), true),
        ("Norm0", t => t.Norm(0, [1]), true),
        ("Norm3", t => t.Norm(3), true),
        ("NormInf", t => t.Norm(double.PositiveInfinity, [1]), true),
        ("NormNegInf", t => t.Norm(double.NegativeInfinity, [0]), true),
    ];

    static IEnumerable<string> ReductionNames() => Reductions.Select(o => o.Name);

    [TestCaseSource(nameof(ReductionNames))]
    public void Reduce_MatchesCpu(string name)
    {
        var (_, op, floatOnly) = Reductions.First(o => o.Name == name);
        var rng = new Random(name.GetHashCode(StringComparison.Ordinal) & 0xFFFF);
        DType[] dtypes = floatOnly ? Floats : [.. Floats, DType.Int32, DType.Int64];
        // [7, W]: blocks of W (one group per output) and of 7 (one thread per output); transposed and strided too.
        foreach (var dtype in dtypes)
            foreach (var kind in new[] { Kind.Contiguous, Kind.Transposed })
            {
                var v = Values(rng, 7 * Width, dtype, dtype.IsFloatingPoint() ? -3 : -40, dtype.IsFloatingPoint() ? 3 : 40);
                if (dtype == DType.Float64 && kind == Kind.Transposed) v[5] = 0; // a zero for Norm0 to skip
                var (cpu, dev) = Pair(v, [7, Width], dtype, kind);
                using (cpu) using (dev)
                using (var c = op(cpu)) using (var d = op(dev))
                {
                    // Sums accumulate in float32 on the device and float64 on the CPU: allow for cancellation.
                    var (rtol, atol) = name.StartsWith("LogSumExp", StringComparison.Ordinal) || name == "Norm3" ? MathTolerance(dtype) : (-1, -1);
                    if (dtype == DType.Float32) atol = Math.Max(atol, 1e-5 * Width);
                    AssertParity(c, d, $"{name} {dtype.Name()} {kind}", rtol, atol);
                }
            }
    }

    [Test]
    public void Reduce_ManyOutputs_AndNaN_AndTies_MatchCpu()
    {
        var rng = new Random(9);
        // Enough outputs to take the one-thread-per-output path with long blocks.
        int rows = 600, cols = 40;
        var v = Values(rng, rows * cols, DType.Float32);
        v[7] = double.NaN; v[cols + 3] = v[cols + 9] = 10; // a NaN row, a tie for the maximum
        var (cpu, dev) = Pair(v, [rows, cols], DType.Float32);
        using (cpu) using (dev)
        {
            using (var c = cpu.Sum(-1)) using (var d = dev.Sum(-1)) AssertParity(c, d, "row sums", atol: 1e-5);
            var (cv, ci) = cpu.Max(-1); var (dv, di) = dev.Max(-1);
            using (cv) using (ci) using (dv) using (di)
            {
                AssertIdentical(cv, dv, "row max");
                AssertIdentical(ci, di, "row argmax");
            }
            using (var c = cpu.ArgMin(0)) using (var d = dev.ArgMin(0)) AssertIdentical(c, d, "column argmin");
        }
    }

    [Test]
    public void Reduce_IsBitStableAcrossRuns()
    {
        var rng = new Random(10);
        using var x = Tensor.FromArray(Values(rng, 5 * 4 * Width, DType.Float32), [5, 4 * Width]);
        using var d = x.To(Device);
        using var a = d.Sum(-1); using var b = d.Sum(-1);
        using var va = d.Var(); using var vb = d.Var();
        AssertIdentical(a, b, "sum twice");
        AssertIdentical(va, vb, "var twice");
    }

    [Test]
    public void Reduce_BoolAndIntegerSums_AreExact()
    {
        var rng = new Random(11);
        var v = Values(rng, 3 * Width, DType.Bool);
        var (cpu, dev) = Pair(v, [3, Width], DType.Bool, Kind.Transposed);
        using (cpu) using (dev)
        using (var c = cpu.Sum(-1)) using (var d = dev.Sum(-1))
            AssertIdentical(c, d, "bool sum");
        var big = Enumerable.Range(0, 2 * Width).Select(i => (double)(1L << 40) + i).ToArray();
        var (bc, bd) = Pair(big, [2, Width], DType.Int64);
        using (bc) using (bd)
        using (var c = bc.Sum(-1)) using (var d = bd.Sum(-1))
            AssertIdentical(c, d, "int64 sum beyond 2^53 partials");
    }

    // ---- random ----

    [Test]
    public void Rand_IsBitIdenticalToCpu_AndRandnClose()
    {
        foreach (var dtype in Floats)
        {
            int n = 4 * Width + 3; // not a multiple of 4: the last counter is partly used
            using var c = Tensor.Rand([n], dtype, Device.Cpu, new Generator(42));
            using var d = Tensor.Rand([n], dtype, Device, new Generator(42));
            AssertIdentical(c, d, $"Rand {dtype.Name()}");
            using var cu = Tensor.Uniform([n], -2, 5, dtype, Device.Cpu, new Generator(43));
            using var du = Tensor.Uniform([n], -2, 5, dtype, Device, new Generator(43));
            AssertParity(cu, du, $"Uniform {dtype.Name()}", rtol: 1e-15, atol: 0);
            using var cn = Tensor.Normal([n], 1, 3, dtype, Device.Cpu, new Generator(44));
            using var dn = Tensor.Normal([n], 1, 3, dtype, Device, new Generator(44));
            // Box–Muller takes log, sin and cos: near u₁ = 1 an approximate log moves small samples by up to ~1e-3.
            double atol = ApproximateMath ? 2e-3 : dtype == DType.Float32 ? 1e-5 : -1;
            AssertParity(cn, dn, $"Normal {dtype.Name()}", ApproximateMath ? 1e-3 : -1, atol);
        }
    }

    // ---- optimizers ----

    [Test]
    public void AdamUpdate_MatchesCpu_WithDecay_Unscale_AndSkip()
    {
        var rng = new Random(12);
        foreach (var (dtype, decoupled) in new[] { (DType.Float32, false), (DType.Float32, true), (DType.BFloat16, true), (DType.Float64, false) })
        {
            var config = new AdamConfig(1e-2, 0.9, 0.999, 1e-8, 0.1, decoupled);
            var (pc, pd) = Pair(Values(rng, 2 * Width, dtype), [2, Width], dtype);
            using var mc = Tensor.Zeros([2, Width], dtype); using var md = Tensor.Zeros([2, Width], dtype, Device);
            using var vc = Tensor.Zeros([2, Width], dtype); using var vd = Tensor.Zeros([2, Width], dtype, Device);
            using var sc = Tensor.Zeros([1], DType.Float32); using var sd = Tensor.Zeros([1], DType.Float32, Device);
            using var ic = Tensor.Full([1], 0.5, DType.Float32); using var id = Tensor.Full([1], 0.5, DType.Float32, Device);
            using (pc) using (pd)
                for (int step = 0; step < 4; step++)
                {
                    var (gc, gd) = Pair(Values(rng, 2 * Width, DType.Float32), [2, Width], DType.Float32);
                    // Step 2 has an inf found: nothing may change, not even the step count.
                    using var fc = Tensor.Full([1], step == 2 ? 1 : 0, DType.Float32);
                    using var fd = Tensor.Full([1], step == 2 ? 1 : 0, DType.Float32, Device);
                    using (gc) using (gd)
                    {
                        Tensor.AdamUpdate(pc, gc, mc, vc, sc, config, ic, fc);
                        Tensor.AdamUpdate(pd, gd, md, vd, sd, config, id, fd);
                    }
                    string what = $"Adam {dtype.Name()} decoupled={decoupled} step {step}";
                    AssertParity(sc, sd, what + " count");
                    AssertParity(pc, pd, what + " param", rtol: dtype == DType.Float32 ? 1e-5 : -1);
                    AssertParity(mc, md, what + " m");
                    AssertParity(vc, vd, what + " v", rtol: dtype == DType.Float32 ? 1e-5 : -1);
                }
        }
    }

    [Test]
    public void SgdUpdate_MatchesCpu_WithMomentum_Nesterov_Unscale_AndSkip()
    {
        var rng = new Random(13);
        foreach (var (dtype, nesterov) in new[] { (DType.Float32, false), (DType.Float32, true), (DType.Float16, false), (DType.Float64, true) })
        {
            var config = new SgdConfig(0.1, 0.9, nesterov ? 0 : 0.1, 0.01, nesterov);
            var (pc, pd) = Pair(Values(rng, 2 * Width, dtype), [2, Width], dtype);
            using var bc = Tensor.Zeros([2, Width], dtype); using var bd = Tensor.Zeros([2, Width], dtype, Device);
            using var ic = Tensor.Full([1], 0.25, DType.Float32); using var id = Tensor.Full([1], 0.25, DType.Float32, Device);
            using (pc) using (pd)
                for (int step = 0; step < 3; step++)
                {
                    var (gc, gd) = Pair(Values(rng, 2 * Width, DType.BFloat16), [2, Width], DType.BFloat16);
                    using var fc = Tensor.Full([1], step == 1 ? 1 : 0, DType.Float32);
                    using var fd = Tensor.Full([1], step == 1 ? 1 : 0, DType.Float32, Device);
                    bool initialized = step > 0;
                    using (gc) using (gd)
                    {
                        Tensor.SgdUpdate(pc, gc, bc, initialized, config, ic, fc);
                        Tensor.SgdUpdate(pd, gd, bd, initialized, config, id, fd);
                    }
                    AssertParity(pc, pd, $"SGD {dtype.Name()} nesterov={nesterov} step {step} param");
                    AssertParity(bc, bd, $"SGD {dtype.Name()} nesterov={nesterov} step {step} momentum");
                }
        }
    }

    // ---- memory and synchronization ----

    [Test]
    public void CreatingAndDisposingTensors_LeavesNoLiveStorage()
    {
        GC.Collect(); GC.WaitForPendingFinalizers(); // tensors other tests leaked must not be freed during the count
        long baseline = Storage.LiveCount(DeviceType.Cuda);
        var backend = (CudaBackend)BackendRegistry.Get(Device);
        long allocated = backend.Allocator.Allocated;
        for (int i = 0; i < 3; i++)
        {
            using var a = Tensor.Ones([3, Width], DType.Float32, Device);
            using var b = a.Exp();
            using var s = b.Add(a);
            using var c = s.Sum(-1);
            using var t = a.Transpose(0, 1);
            using var u = t.To(DType.BFloat16);
        }
        Assert.That(Storage.LiveCount(DeviceType.Cuda), Is.EqualTo(baseline));
        Assert.That(backend.Allocator.Allocated, Is.EqualTo(allocated));
    }

    [Test]
    public void LeakedTensors_ComeBackToThePoolIntact()
    {
        // Tensors dropped without Dispose are freed by their finalizers, in the same collection as the device
        // buffers' own finalizers: the pool must keep its blocks alive, or a dead block is handed out again.
        using var w = Tensor.Ones([4, Width], DType.Float32, Device);
        for (int i = 0; i < 30; i++)
        {
            using var y = w.Mul(w).Tanh(); // the product is leaked on purpose
            using var s = y.Sum(-1, keepDim: true);
            if (i % 10 == 9) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        }
        using var total = w.Sum();
        Assert.That(total.Item(), Is.EqualTo(4 * Width));
    }

    [Test]
    public void ARepeatedStep_DoesNoDeviceAllocation_AndNoHostSynchronization()
    {
        var backend = (CudaBackend)BackendRegistry.Get(Device);
        using var w = Tensor.Ones([4, Width], DType.Float32, Device);
        using var m = Tensor.Zeros([4, Width], DType.Float32, Device);
        using var v = Tensor.Zeros([4, Width], DType.Float32, Device);
        using var step = Tensor.Zeros([1], DType.Float32, Device);
        var config = new AdamConfig(1e-3, 0.9, 0.999, 1e-8, 0, false);
        void Step()
        {
            using var sq = w.Mul(w);
            using var y = sq.Tanh();
            using var s = y.Sum(-1, keepDim: true);
            using var g = y.Sub(s);
            Tensor.AdamUpdate(w, g, m, v, step, config);
        }
        Step();
        long mallocs = backend.Allocator.DeviceAllocations, syncs = CudaBackend.HostSynchronizations;
        for (int i = 0; i < 3; i++) Step();
        Assert.That(backend.Allocator.DeviceAllocations, Is.EqualTo(mallocs), "device allocations after the first step");
        Assert.That(CudaBackend.HostSynchronizations, Is.EqualTo(syncs), "host synchronizations in steps");
        Assert.That(step.Item(), Is.EqualTo(4));
        Assert.That(CudaBackend.HostSynchronizations, Is.GreaterThan(syncs), "reading a value synchronizes");
    }

    [Test]
    public void Uploads_AreStagedThroughPinnedMemory_WithoutWaiting_AndKeepTheirValues()
    {
        var backend = (CudaBackend)BackendRegistry.Get(Device);
        using var warm = Tensor.FromArray(new float[] { 1 }, device: Device);
        using (var r = warm.Sum()) r.Item(); // a read: every buffer queued before is free
        long syncs = CudaBackend.HostSynchronizations, staged = backend.StagedUploads;
        // More uploads than staging buffers, of several sizes, with no read in between; the caller's array is reused
        // (overwritten) after every upload, which must not change what was uploaded.
        int n = PinnedUploads.MaxBuffers + 9;
        var host = new float[Width + 40];
        var uploaded = new List<Tensor>();
        try
        {
            for (int i = 0; i < n; i++)
            {
                int len = Width + i % 5 * 10;
                for (int j = 0; j < len; j++) host[j] = i * 1000 + j;
                uploaded.Add(Tensor.FromArray(host.AsSpan(0, len).ToArray(), device: Device));
                Array.Fill(host, -1f);
            }
            Assert.That(backend.StagedUploads - staged, Is.GreaterThanOrEqualTo(PinnedUploads.MaxBuffers), "uploads staged through pinned memory");
            long waited = CudaBackend.HostSynchronizations - syncs;
            Assert.That(waited, Is.LessThanOrEqualTo(n - PinnedUploads.MaxBuffers), "only uploads that found every buffer in flight waited");
            for (int i = 0; i < n; i++)
            {
                var got = uploaded[i].ToArray<float>();
                Assert.That(got, Has.Length.EqualTo(Width + i % 5 * 10));
                for (int j = 0; j < got.Length; j++)
                    if (got[j] != i * 1000 + j) Assert.Fail($"upload {i} element {j}: {got[j]}, want {i * 1000 + j}");
            }
        }
        finally { foreach (var t in uploaded) t.Dispose(); }
    }

    [Test]
    public void ABatchUploadedEachStep_DoesNotWaitForTheDevice()
    {
        using var w = Tensor.Ones([4, Width], DType.Float32, Device);
        var batch = new float[4 * Width];
        void Step(int s)
        {
            for (int i = 0; i < batch.Length; i++) batch[i] = s + i % 7;
            using var x = Tensor.FromArray(batch, new Shape([4, Width]), Device);
            using var y = w.Mul(x);
            w.AddInPlace(y, alpha: 1e-3);
        }
        Step(0);
        using (var r = w.Sum()) r.Item();
        long syncs = CudaBackend.HostSynchronizations;
        for (int s = 1; s <= 3; s++) Step(s);
        Assert.That(CudaBackend.HostSynchronizations, Is.EqualTo(syncs), "a step that uploads its batch waits for nothing");
        // The same arithmetic on the CPU: the batches arrived intact and in order.
        using var wc = Tensor.Ones([4, Width]);
        for (int s = 0; s <= 3; s++)
        {
            for (int i = 0; i < batch.Length; i++) batch[i] = s + i % 7;
            using var x = Tensor.FromArray(batch, new Shape([4, Width]));
            using var y = wc.Mul(x);
            wc.AddInPlace(y, alpha: 1e-3);
        }
        Assert.That(w.ToArray<float>(), Is.EqualTo(wc.ToArray<float>()).Within(1e-5f));
    }

    [Test]
    public void OutOfMemory_FreesTheCacheRetriesAndThenThrowsWithStatistics()
    {
        var backend = (CudaBackend)BackendRegistry.Get(Device);
        var alloc = backend.Allocator;
        using (Tensor.Zeros([1 << 16], DType.Float32, Device)) { } // a cached 256 KiB block
        alloc.EmptyCache();
        try
        {
            using (Tensor.Zeros([1 << 16], DType.Float32, Device)) { }
            Assert.That(alloc.Cached, Is.GreaterThanOrEqualTo(256 * 1024));
            // Room for the cached block only: a different class must free the cache to fit, then fits.
            alloc.Limit = alloc.Reserved;
            using (Tensor.Zeros([1 << 15], DType.Float32, Device)) { }
            Assert.That(alloc.Reserved, Is.LessThanOrEqualTo(alloc.Limit));
            alloc.Limit = alloc.Reserved + 1024;
            long live = Storage.LiveCount(DeviceType.Cuda);
            long liveBytes = Storage.LiveBytes(DeviceType.Cuda), allocated = alloc.Allocated, peak = alloc.Peak, mallocs = alloc.DeviceAllocations;
            var e = Assert.Throws<EngineOutOfMemoryException>(() => Tensor.Zeros([1 << 24], DType.Float32, Device).Dispose())!;
            Assert.That(e.Message, Does.StartWith($"Zeros: out of memory for a tensor of shape [16777216], dtype float32 on {Device}: 67108864 bytes (64 MiB)"));
            Assert.That(e.Message, Does.Contain("out of memory").And.Contain("allocated").And.Contain("reserved").And.Contain("peak"));
            Assert.That(Storage.LiveCount(DeviceType.Cuda), Is.EqualTo(live), "a failed allocation leaves no live storage");
            Assert.That(Storage.LiveBytes(DeviceType.Cuda), Is.EqualTo(liveBytes));
            Assert.That((alloc.Allocated, alloc.Peak, alloc.DeviceAllocations), Is.EqualTo((allocated, peak, mallocs)), "the allocator's counters");
        }
        finally
        {
            alloc.Limit = null;
        }
    }
}

/// <summary>The parity tests on ILGPU's CPU accelerator standing in for a GPU (runs everywhere, in CI).</summary>
[TestFixture]
[NonParallelizable] // process-wide counters (host synchronizations, live storages)
public class EmulatedCudaParityTests : CudaParityTests
{
    [OneTimeSetUp]
    public void EnableEmulation() => CudaBackend.EnableEmulation();

    /// <inheritdoc/>
    protected override Device Device => CudaBackend.EmulatedDevice;

    /// <inheritdoc/>
    protected override int Width => 37;
}

/// <summary>The parity tests on a real GPU (cuda:0); skipped where ILGPU finds none.</summary>
[TestFixture]
[Category("Gpu")]
[NonParallelizable]
public class GpuCudaParityTests : CudaParityTests
{
    [OneTimeSetUp]
    public void RequireGpu()
    {
        if (CudaBackend.RealDeviceCount == 0) Assert.Ignore("no CUDA device: ILGPU found none");
    }

    /// <inheritdoc/>
    protected override Device Device => Device.Cuda(0);

    /// <inheritdoc/>
    protected override int Width => 4099;

    /// <inheritdoc/>
    protected override bool ApproximateMath => true;
}

using Engine.Backends.Cpu;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// An erf written for the tests, independent of the engine's: the Maclaurin series below 2.5 and the Laplace continued
/// fraction of erfc above, both in float64 (about 1e-14 absolute).
/// </summary>
public static class RefErf
{
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return double.NaN;
        if (double.IsInfinity(x)) return Math.Sign(x);
        double ax = Math.Abs(x);
        double r;
        if (ax < 2.5)
        {
            // erf(x) = 2/√π Σ (−1)ⁿ x^(2n+1) / (n! (2n+1))
            double sum = 0, p = ax; // p = (−1)ⁿ x^(2n+1) / n!
            for (int n = 0; n < 120; n++)
            {
                double term = p / (2 * n + 1);
                sum += term;
                if (Math.Abs(term) < 1e-18) break;
                p *= -ax * ax / (n + 1);
            }
            r = 2 / Math.Sqrt(Math.PI) * sum;
        }
        else
        {
            // erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))), evaluated from the tail.
            double t = ax;
            for (int n = 120; n >= 1; n--) t = ax + n / 2.0 / t;
            r = 1 - Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / t;
        }
        return Math.CopySign(r, x);
    }

    public static double Gelu(double x) => 0.5 * x * (1 + Erf(x / Math.Sqrt(2)));

    public static double GeluTanh(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    public static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));
}

/// <summary>Every unary and binary elementwise op against a float64 reference, on every dtype and layout.</summary>
[TestFixture]
public class ElementwiseTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];

    static readonly int[][] UnaryShapes = [[], [1], [0], [7], [3, 5], [2, 1, 4], [2, 0, 3], [4, 1]];

    public sealed record UnaryCase(string Name, Func<Tensor, Tensor> Op, Func<double, double> F, double Lo, double Hi)
    {
        public override string ToString() => Name;
    }

    public static readonly UnaryCase[] Unaries =
    [
        new("Neg", x => x.Neg(), x => -x, -3, 3),
        new("Abs", x => x.Abs(), Math.Abs, -3, 3),
        new("Exp", x => x.Exp(), Math.Exp, -3, 3),
        new("Log", x => x.Log(), Math.Log, 0.05, 4),
        new("Sqrt", x => x.Sqrt(), Math.Sqrt, 0, 4),
        new("Rsqrt", x => x.Rsqrt(), x => 1 / Math.Sqrt(x), 0.05, 4),
        new("Sin", x => x.Sin(), Math.Sin, -3, 3),
        new("Cos", x => x.Cos(), Math.Cos, -3, 3),
        new("Tanh", x => x.Tanh(), Math.Tanh, -3, 3),
        new("Sigmoid", x => x.Sigmoid(), RefErf.Sigmoid, -8, 8),
        new("Relu", x => x.Relu(), x => double.IsNaN(x) ? x : x > 0 ? x : 0, -3, 3),
        new("Gelu", x => x.Gelu(), RefErf.Gelu, -5, 5),
        new("GeluTanh", x => x.Gelu(approximateTanh: true), RefErf.GeluTanh, -5, 5),
        new("Silu", x => x.Silu(), x => x * RefErf.Sigmoid(x), -8, 8),
        new("Erf", x => x.Erf(), RefErf.Erf, -4, 4),
        new("Pow0.5", x => x.Pow(0.5), x => Math.Pow(x, 0.5), 0, 4),
        new("Pow2", x => x.Pow(2), x => x * x, -3, 3),
        new("Pow3", x => x.Pow(3), x => x * x * x, -2, 2),
        new("Pow-1", x => x.Pow(-1), x => 1 / x, 0.2, 3),
        new("Pow1.5", x => x.Pow(1.5), x => Math.Pow(x, 1.5), 0, 3),
        new("Square", x => x.Square(), x => x * x, -3, 3),
        new("ClampMin", x => x.Clamp(min: -0.5), x => Math.Max(x, -0.5), -2, 2),
        new("ClampMax", x => x.Clamp(max: 0.75), x => Math.Min(x, 0.75), -2, 2),
        new("ClampBoth", x => x.Clamp(-0.5, 0.75), x => Math.Min(Math.Max(x, -0.5), 0.75), -2, 2),
    ];

    static double[] Expected(double[] x, Func<double, double> f, DType dt) => x.Select(v => Ref.RoundTo(f(v), dt)).ToArray();

    [Test]
    public void ReferenceErfMatchesKnownValues()
    {
        // Values from Abramowitz & Stegun / high-precision tables.
        Assert.That(RefErf.Erf(0.5), Is.EqualTo(0.5204998778130465).Within(1e-15));
        Assert.That(RefErf.Erf(1), Is.EqualTo(0.8427007929497149).Within(1e-15));
        Assert.That(RefErf.Erf(2), Is.EqualTo(0.9953222650189527).Within(1e-15));
        Assert.That(RefErf.Erf(2.5), Is.EqualTo(0.9995930479825550).Within(1e-15));
        Assert.That(RefErf.Erf(3), Is.EqualTo(0.9999779095030014).Within(1e-15));
        Assert.That(RefErf.Erf(-1), Is.EqualTo(-0.8427007929497149).Within(1e-15));
        Assert.That(RefErf.Erf(3.5), Is.EqualTo(0.9999992569016276).Within(1e-15));
        Assert.That(RefErf.Erf(5), Is.EqualTo(1 - 1.5374597944280349e-12).Within(2e-16));
        Assert.That(RefErf.Erf(1e-3), Is.EqualTo(1.1283787909692363e-3).Within(1e-18));
    }

    [TestCaseSource(nameof(Unaries))]
    public void UnaryMatchesReferenceOnEveryDTypeLayoutAndShape(UnaryCase c)
    {
        var rng = new Random(c.Name.Length * 31 + 7);
        foreach (var dt in Floats)
            foreach (var shape in UnaryShapes)
                foreach (var kind in Layouts.All)
                {
                    var x = Ref.Random(rng, Ref.Numel(shape), dt, c.Lo, c.Hi);
                    using var t = Layouts.Make(x, shape, dt, kind);
                    using var y = c.Op(t);
                    Assert.That(y.Shape, Is.EqualTo(shape), $"{c.Name} {dt} {kind} shape");
                    Assert.That(y.DType, Is.EqualTo(dt), $"{c.Name} {dt} dtype");
                    Assert.That(y.IsContiguous, Is.True);
                    Ref.AssertClose(y.ToArray<double>(), Expected(x, c.F, dt), dt, $"{c.Name} {dt} {kind} {Shape.Format(shape)}");
                    // The input is untouched.
                    Assert.That(t.ToArray<double>(), Is.EqualTo(x));
                }
    }

    [TestCaseSource(nameof(Unaries))]
    public void UnaryLargeContiguousFloat32UsesFastPathAndChunks(UnaryCase c)
    {
        // 200 003 elements: several 64 Ki chunks of the TensorPrimitives path plus a ragged tail.
        var rng = new Random(3);
        var x = Ref.Random(rng, 200_003, DType.Float32, c.Lo, c.Hi);
        using var t = Tensor.FromArray(x.Select(v => (float)v).ToArray());
        using var y = c.Op(t);
        Ref.AssertClose(y.ToArray<double>(), Expected(x, c.F, DType.Float32), DType.Float32, c.Name + " large");
    }

    [TestCaseSource(nameof(Unaries))]
    public void UnaryLargeStridedUsesParallelRows(UnaryCase c)
    {
        var rng = new Random(4);
        var x = Ref.Random(rng, 300 * 257, DType.Float32, c.Lo, c.Hi);
        using var t = Layouts.Make(x, [300, 257], DType.Float32, Layouts.Kind.Transposed);
        using var y = c.Op(t);
        Ref.AssertClose(y.ToArray<double>(), Expected(x, c.F, DType.Float32), DType.Float32, c.Name + " large strided");
    }

    [Test]
    public void ResultsDoNotDependOnThreadCount()
    {
        var rng = new Random(5);
        const int N = 70_001; // two 64 Ki chunks of the dense path
        var x = Ref.Random(rng, N, DType.Float32, -3, 3).Select(v => (float)v).ToArray();
        using var t = Tensor.FromArray(x);
        using var col = Tensor.FromArray(x, [N, 1]);
        using var tt = col.Expand(N, 3);
        float[] Run()
        {
            using var a = t.Exp(); using var b = t.Gelu(); using var c = t * 1.5 + 0.25;
            using var d = tt.Sigmoid(); using var e = t + t;
            return [.. a.ToArray<float>(), .. b.ToArray<float>(), .. c.ToArray<float>(), .. d.ToArray<float>(), .. e.ToArray<float>()];
        }
        using var threads1 = CpuBackend.UseOptions(CpuBackend.Options with { Threads = 1 });
        var one = Run();
        using var threads2 = CpuBackend.UseOptions(CpuBackend.Options with { Threads = 8 });
        var many = Run();
        Assert.That(many, Is.EqualTo(one));
    }

    // ---- special values ----

    static readonly double[] Specials = [double.NaN, double.PositiveInfinity, double.NegativeInfinity, 0.0, -0.0, 1, -1, 0.5, -2, 100, -100];

    [TestCaseSource(nameof(Unaries))]
    public void UnarySpecialValues(UnaryCase c)
    {
        bool infOk = c.Name is not ("Gelu" or "GeluTanh" or "Silu"); // x·0 at −∞: not a meaningful value
        var vals = Specials.Where(v => infOk || !double.IsInfinity(v)).ToArray();
        foreach (var dt in Floats)
            foreach (var kind in new[] { Layouts.Kind.Contiguous, Layouts.Kind.Strided })
            {
                var x = vals.Select(v => Ref.RoundTo(v, dt)).ToArray();
                using var t = Layouts.Make(x, [x.Length], dt, kind);
                using var y = c.Op(t);
                Ref.AssertClose(y.ToArray<double>(), Expected(x, c.F, dt), dt, $"{c.Name} specials {dt} {kind}");
            }
    }

    [Test]
    public void NaNStaysNaNThroughReluAndClamp()
    {
        foreach (var dt in Floats)
        {
            using var t = Tensor.FromArray(new[] { double.NaN, -1.0, 2.0 }).To(dt);
            using var r = t.Relu();
            using var c1 = t.Clamp(min: 0);
            using var c2 = t.Clamp(max: 0);
            using var c3 = t.Clamp(-0.5, 0.5);
            foreach (var y in new[] { r, c1, c2, c3 }) Assert.That(double.IsNaN(y.ToArray<double>()[0]), Is.True, dt.ToString());
            Assert.That(c3.ToArray<double>().Skip(1), Is.EqualTo(new[] { -0.5, 0.5 }));
        }
    }

    [Test]
    public void SigmoidOfLargeMagnitudeSaturatesWithoutNaN()
    {
        foreach (var dt in Floats)
            foreach (var kind in new[] { Layouts.Kind.Contiguous, Layouts.Kind.Strided })
            {
                double big = dt == DType.Float16 ? 60000 : 1e30;
                var x = new[] { big, -big, 89, -89, 200, -200, double.PositiveInfinity, double.NegativeInfinity }.Select(v => Ref.RoundTo(v, dt)).ToArray();
                using var t = Layouts.Make(x, [x.Length], dt, kind);
                using var y = t.Sigmoid();
                var r = y.ToArray<double>();
                Assert.That(r, Is.EqualTo(new double[] { 1, 0, 1, 0, 1, 0, 1, 0 }).Within(1e-30), $"{dt} {kind}");
                using var s = t.Silu();
                var rs = s.ToArray<double>();
                Assert.That(rs.Take(6).Any(double.IsNaN), Is.False, $"silu {dt} {kind}");
            }
    }

    [Test]
    public void ClampWithMinAboveMaxGivesMax()
    {
        using var t = Tensor.FromArray(new[] { -1.0, 0.5, 3 });
        using var y = t.Clamp(2, 1);
        Assert.That(y.ToArray<double>(), Is.EqualTo(new[] { 1.0, 1, 1 }));
    }

    [Test]
    public void IntegerUnaryKeepOrPromoteDType()
    {
        foreach (var dt in new[] { DType.Int32, DType.Int64 })
        {
            var x = new double[] { -3, -1, 0, 2, 5 };
            using var t = Tensor.FromArray(x).To(dt);
            void Same(Tensor y, Func<double, double> f, string what)
            {
                Assert.That(y.DType, Is.EqualTo(dt), what);
                Assert.That(y.ToArray<double>(), Is.EqualTo(x.Select(f).ToArray()), what);
                y.Dispose();
            }
            Same(t.Neg(), v => -v, "neg");
            Same(t.Abs(), Math.Abs, "abs");
            Same(t.Relu(), v => Math.Max(v, 0), "relu");
            Same(t.Square(), v => v * v, "square");
            Same(t.Pow(3), v => v * v * v, "pow3");
            Same(t.Clamp(-1, 2), v => Math.Clamp(v, -1, 2), "clamp");
            Same(-t, v => -v, "operator -");
            using var e = t.Exp();
            Assert.That(e.DType, Is.EqualTo(DType.Float32));
            Ref.AssertClose(e.ToArray<double>(), x.Select(v => (double)(float)Math.Exp(v)).ToArray(), DType.Float32, "int exp");
            using var s = t.Sigmoid();
            Assert.That(s.DType, Is.EqualTo(DType.Float32));
            using var p = t.Pow(0.5);
            Assert.That(p.DType, Is.EqualTo(DType.Float32));
        }
        using var b = Tensor.FromArray(new[] { true, false });
        using var bs = b.Sqrt();
        Assert.That(bs.DType, Is.EqualTo(DType.Float32));
        Assert.That(bs.ToArray<double>(), Is.EqualTo(new[] { 1.0, 0 }));
    }

    // ---- binary ----

    public sealed record BinaryCase(string Name, Func<Tensor, Tensor, Tensor> Op, Func<double, double, double> F,
        double ALo, double AHi, double BLo, double BHi, bool Comparison = false)
    {
        public override string ToString() => Name;
    }

    static double B(bool v) => v ? 1 : 0;

    public static readonly BinaryCase[] Binaries =
    [
        new("Add", (a, b) => a.Add(b), (a, b) => a + b, -3, 3, -3, 3),
        new("operator+", (a, b) => a + b, (a, b) => a + b, -3, 3, -3, 3),
        new("Sub", (a, b) => a.Sub(b), (a, b) => a - b, -3, 3, -3, 3),
        new("operator-", (a, b) => a - b, (a, b) => a - b, -3, 3, -3, 3),
        new("Mul", (a, b) => a.Mul(b), (a, b) => a * b, -3, 3, -3, 3),
        new("operator*", (a, b) => a * b, (a, b) => a * b, -3, 3, -3, 3),
        new("Div", (a, b) => a.Div(b), (a, b) => a / b, -3, 3, 0.5, 2.5),
        new("operator/", (a, b) => a / b, (a, b) => a / b, -3, 3, -2.5, -0.5),
        new("Pow", (a, b) => a.Pow(b), Math.Pow, 0.25, 2.5, -2, 2),
        new("Maximum", (a, b) => a.Maximum(b), Math.Max, -3, 3, -3, 3),
        new("Minimum", (a, b) => a.Minimum(b), Math.Min, -3, 3, -3, 3),
        new("Add(alpha)", (a, b) => a.Add(b, 0.5), (a, b) => a + 0.5 * b, -3, 3, -3, 3),
        new("Eq", (a, b) => a.Eq(b), (a, b) => B(a == b), -2, 2, -2, 2, true),
        new("Ne", (a, b) => a.Ne(b), (a, b) => B(a != b), -2, 2, -2, 2, true),
        new("Lt", (a, b) => a.Lt(b), (a, b) => B(a < b), -2, 2, -2, 2, true),
        new("Le", (a, b) => a.Le(b), (a, b) => B(a <= b), -2, 2, -2, 2, true),
        new("Gt", (a, b) => a.Gt(b), (a, b) => B(a > b), -2, 2, -2, 2, true),
        new("Ge", (a, b) => a.Ge(b), (a, b) => B(a >= b), -2, 2, -2, 2, true),
        new("operator<", (a, b) => a < b, (a, b) => B(a < b), -2, 2, -2, 2, true),
        new("operator<=", (a, b) => a <= b, (a, b) => B(a <= b), -2, 2, -2, 2, true),
        new("operator>", (a, b) => a > b, (a, b) => B(a > b), -2, 2, -2, 2, true),
        new("operator>=", (a, b) => a >= b, (a, b) => B(a >= b), -2, 2, -2, 2, true),
    ];

    static readonly (int[] A, int[] B)[] BroadcastPairs =
    [
        ([3, 1, 4], [2, 4]), ([2, 4], [3, 1, 4]), ([], [3, 4]), ([3, 4], []), ([], []), ([2, 0, 3], [3]), ([2, 0, 3], [1, 1]),
        ([0], [1]), ([4, 1], [1, 5]), ([5], [5]), ([2, 3], [2, 3]), ([1], [2, 3]), ([2, 1, 3], [2, 4, 1]), ([6, 1], [6, 5]),
    ];

    internal static double[] RefBinary(double[] a, int[] sa, double[] b, int[] sb, Func<double, double, double> f, out int[] shape)
    {
        shape = Ref.BroadcastShape(sa, sb);
        int n = Ref.Numel(shape);
        var r = new double[n];
        for (int i = 0; i < n; i++)
        {
            var idx = Ref.Unravel(i, shape);
            r[i] = f(Ref.Broadcast(a, sa, idx), Ref.Broadcast(b, sb, idx));
        }
        return r;
    }

    static double[] RandomSmallGrid(Random rng, int n)
    {
        // Values on a coarse grid so that comparisons meet equal operands often.
        var r = new double[n];
        for (int i = 0; i < n; i++) r[i] = rng.Next(-4, 5) * 0.5;
        return r;
    }

    [TestCaseSource(nameof(Binaries))]
    public void BinaryMatchesReferenceWithBroadcastingLayoutsAndDTypes(BinaryCase c)
    {
        var rng = new Random(c.Name.GetHashCode(StringComparison.Ordinal) & 0xffff);
        foreach (var dt in Floats)
            foreach (var (sa, sb) in BroadcastPairs)
                for (int k = 0; k < Layouts.All.Length; k++)
                {
                    var ka = Layouts.All[k];
                    var kb = Layouts.All[(k + 1) % Layouts.All.Length];
                    var a = c.Comparison ? RandomSmallGrid(rng, Ref.Numel(sa)) : Ref.Random(rng, Ref.Numel(sa), dt, c.ALo, c.AHi);
                    var b = c.Comparison ? RandomSmallGrid(rng, Ref.Numel(sb)) : Ref.Random(rng, Ref.Numel(sb), dt, c.BLo, c.BHi);
                    if (c.Name == "Add(alpha)") b = b.Select(v => Ref.RoundTo(v, dt)).ToArray();
                    using var ta = Layouts.Make(a, sa, dt, ka);
                    using var tb = Layouts.Make(b, sb, dt, kb);
                    int va = ta.Version, vb = tb.Version;
                    using var y = c.Op(ta, tb);
                    var exp = RefBinary(a, sa, b, sb, c.F, out var shape).Select(v => Ref.RoundTo(v, dt)).ToArray();
                    string what = $"{c.Name} {dt} {Shape.Format(sa)}({ka}) with {Shape.Format(sb)}({kb})";
                    Assert.That(y.Shape, Is.EqualTo(shape), what);
                    Assert.That(y.DType, Is.EqualTo(c.Comparison ? DType.Bool : dt), what);
                    // Add(alpha) multiplies b by alpha in the dtype first, then adds: two roundings for the half types.
                    Ref.AssertClose(y.ToArray<double>(), exp, dt, what, c.Name == "Add(alpha)" ? 2 : 1);
                    Assert.That(ta.ToArray<double>(), Is.EqualTo(a), what + " input a untouched");
                    Assert.That(tb.ToArray<double>(), Is.EqualTo(b), what + " input b untouched");
                    Assert.That(ta.Version, Is.EqualTo(va));
                    Assert.That(tb.Version, Is.EqualTo(vb));
                }
    }

    // The large checks need one case per kernel path, not per operator spelling.
    public static IEnumerable<BinaryCase> LargeBinaries => Binaries.Where(c => c.Name is "Add" or "Sub" or "Mul" or "Div" or "Pow" or "Maximum" or "Minimum" or "Add(alpha)" or "Lt" or "Eq");

    [TestCaseSource(nameof(LargeBinaries))]
    public void BinaryLargeContiguousFloat32(BinaryCase c)
    {
        var rng = new Random(9);
        int n = 200_000;
        var a = c.Comparison ? RandomSmallGrid(rng, n) : Ref.Random(rng, n, DType.Float32, c.ALo, c.AHi);
        var b = c.Comparison ? RandomSmallGrid(rng, n) : Ref.Random(rng, n, DType.Float32, c.BLo, c.BHi);
        using var ta = Tensor.FromArray(a.Select(v => (float)v).ToArray());
        using var tb = Tensor.FromArray(b.Select(v => (float)v).ToArray());
        using var y = c.Op(ta, tb);
        var exp = new double[n];
        for (int i = 0; i < n; i++) exp[i] = Ref.RoundTo(c.F(a[i], b[i]), DType.Float32);
        Ref.AssertClose(y.ToArray<double>(), exp, DType.Float32, c.Name + " large", c.Name == "Add(alpha)" ? 2 : 1);
        // Broadcast row operand: the strided path in parallel rows.
        using var a2 = ta.View(400, -1);
        using var brow = tb.Narrow(0, 0, 500);
        using var y2 = c.Op(a2, brow);
        var exp2 = new double[n];
        for (int i = 0; i < n; i++) exp2[i] = Ref.RoundTo(c.F(a[i], b[i % 500]), DType.Float32);
        Ref.AssertClose(y2.ToArray<double>(), exp2, DType.Float32, c.Name + " large broadcast", c.Name == "Add(alpha)" ? 2 : 1);
    }

    [Test]
    public void MaximumMinimumPropagateNaN()
    {
        var a = new[] { double.NaN, 1, double.NaN, 2, double.NegativeInfinity, 3 };
        var b = new[] { 1, double.NaN, double.NaN, double.PositiveInfinity, 5, 3 };
        foreach (var dt in Floats)
            foreach (var kind in Layouts.All)
            {
                using var ta = Layouts.Make(a, [2, 3], dt, kind);
                using var tb = Layouts.Make(b, [2, 3], dt, Layouts.Kind.Contiguous);
                using var mx = ta.Maximum(tb);
                using var mn = ta.Minimum(tb);
                Ref.AssertClose(mx.ToArray<double>(), [double.NaN, double.NaN, double.NaN, double.PositiveInfinity, 5, 3], dt, $"max {dt} {kind}");
                Ref.AssertClose(mn.ToArray<double>(), [double.NaN, double.NaN, double.NaN, 2, double.NegativeInfinity, 3], dt, $"min {dt} {kind}");
            }
    }

    [Test]
    public void BinarySpecialValues()
    {
        var a = new[] { 1.0, -1, 0, double.PositiveInfinity, double.NaN, 0, double.PositiveInfinity, 2 };
        var b = new[] { 0.0, 0, 0, double.NegativeInfinity, 1, double.NaN, double.PositiveInfinity, double.PositiveInfinity };
        foreach (var dt in Floats)
            foreach (var kind in new[] { Layouts.Kind.Contiguous, Layouts.Kind.Offset })
            {
                using var ta = Layouts.Make(a, [8], dt, kind);
                using var tb = Layouts.Make(b, [8], dt, kind);
                using var s = ta + tb; using var d = ta / tb; using var m = ta * tb;
                using var lt = ta.Lt(tb); using var eq = ta.Eq(tb); using var ne = ta.Ne(tb); using var ge = ta.Ge(tb);
                Ref.AssertClose(s.ToArray<double>(), a.Zip(b, (x, y) => x + y).ToArray(), dt, "add specials");
                Ref.AssertClose(d.ToArray<double>(), a.Zip(b, (x, y) => x / y).ToArray(), dt, "div specials");
                Ref.AssertClose(m.ToArray<double>(), a.Zip(b, (x, y) => x * y).ToArray(), dt, "mul specials");
                Assert.That(lt.ToArray<bool>(), Is.EqualTo(a.Zip(b, (x, y) => x < y).ToArray()));
                Assert.That(eq.ToArray<bool>(), Is.EqualTo(a.Zip(b, (x, y) => x == y).ToArray()));
                Assert.That(ne.ToArray<bool>(), Is.EqualTo(a.Zip(b, (x, y) => x != y).ToArray()));
                Assert.That(ge.ToArray<bool>(), Is.EqualTo(a.Zip(b, (x, y) => x >= y).ToArray()));
            }
    }

    [Test]
    public void ScalarForms()
    {
        var rng = new Random(11);
        var forms = new (string Name, Func<Tensor, Tensor> Op, Func<double, double> F)[]
        {
            ("x + 2.5", x => x + 2.5, x => x + 2.5),
            ("2.5 + x", x => 2.5 + x, x => x + 2.5),
            ("x - 2.5", x => x - 2.5, x => x - 2.5),
            ("2.5 - x", x => 2.5 - x, x => 2.5 - x),
            ("x * 2.5", x => x * 2.5, x => x * 2.5),
            ("2.5 * x", x => 2.5 * x, x => x * 2.5),
            ("x / 2", x => x / 2, x => x / 2),
            ("x / 0.25", x => x / 0.25, x => x / 0.25),
            ("2 / x", x => 2 / x, x => 2 / x),
            ("Add(-1)", x => x.Add(-1), x => x - 1),
            ("Sub(0.5)", x => x.Sub(0.5), x => x - 0.5),
            ("Mul(-3)", x => x.Mul(-3), x => -3 * x),
            ("Div(4)", x => x.Div(4), x => x / 4),
            ("-x", x => -x, x => -x),
            ("x < 0.5", x => x < 0.5, x => B(x < 0.5)),
            ("x <= 0.5", x => x <= 0.5, x => B(x <= 0.5)),
            ("x > 0.5", x => x > 0.5, x => B(x > 0.5)),
            ("x >= 0.5", x => x >= 0.5, x => B(x >= 0.5)),
            ("Eq(0.5)", x => x.Eq(0.5), x => B(x == 0.5)),
            ("Ne(0.5)", x => x.Ne(0.5), x => B(x != 0.5)),
        };
        foreach (var (name, op, f) in forms)
            foreach (var dt in Floats)
                foreach (var shape in new[] { new int[0], [5], [3, 4], [2, 0] })
                    foreach (var kind in Layouts.All)
                    {
                        var x = Ref.Random(rng, Ref.Numel(shape), dt, 0.25, 3);
                        for (int i = 0; i < x.Length; i += 3) x[i] = 0.5; // meets the comparisons' scalar
                        using var t = Layouts.Make(x, shape, dt, kind);
                        using var y = op(t);
                        bool cmp = name.Contains('<') || name.Contains('>') || name.StartsWith("Eq", StringComparison.Ordinal) || name.StartsWith("Ne", StringComparison.Ordinal);
                        Assert.That(y.DType, Is.EqualTo(cmp ? DType.Bool : dt), name);
                        Assert.That(y.Shape, Is.EqualTo(shape), name);
                        Ref.AssertClose(y.ToArray<double>(), Expected(x, f, dt), dt, $"{name} {dt} {kind}");
                    }
    }

    [Test]
    public void ScalarMultiplyKeepsSignOfZero()
    {
        // PyTorch: -0.0 * 2 = -0.0 and 0.0 * -1 = -0.0 on every path.
        foreach (var dt in Floats)
            foreach (var kind in new[] { Layouts.Kind.Contiguous, Layouts.Kind.Strided })
            {
                using var t = Layouts.Make([-0.0, 0.0, 1], [3], dt, kind);
                using var y = t * 2;
                using var z = t * -1;
                var ry = y.ToArray<double>(); var rz = z.ToArray<double>();
                Assert.That(double.IsNegative(ry[0]), Is.True, $"-0*2 {dt} {kind}");
                Assert.That(double.IsNegative(rz[1]), Is.True, $"0*-1 {dt} {kind}");
            }
    }

    [Test]
    public void IntegerAndBoolBinaryOps()
    {
        var a = new double[] { -3, -1, 0, 2, 7, 4 };
        var b = new double[] { 2, 2, -5, 2, 3, 4 };
        foreach (var dt in new[] { DType.Int32, DType.Int64 })
            foreach (var kind in Layouts.All)
            {
                using var ta = Layouts.Make(a, [2, 3], dt, kind);
                using var tb = Layouts.Make(b, [2, 3], dt, Layouts.Kind.Contiguous);
                void Check(Tensor y, DType want, Func<double, double, double> f, string what)
                {
                    Assert.That(y.DType, Is.EqualTo(want), what);
                    Ref.AssertClose(y.ToArray<double>(), a.Zip(b, f).ToArray(), want, $"{what} {dt} {kind}");
                    y.Dispose();
                }
                Check(ta + tb, dt, (x, y) => x + y, "add");
                Check(ta - tb, dt, (x, y) => x - y, "sub");
                Check(ta * tb, dt, (x, y) => x * y, "mul");
                Check(ta / tb, DType.Float32, (x, y) => (float)(x / y), "div");
                Check(ta.Maximum(tb), dt, Math.Max, "max");
                Check(ta.Minimum(tb), dt, Math.Min, "min");
                Check(ta.Pow(tb.Abs()), dt, (x, y) => Math.Pow(x, Math.Abs(y)), "pow");
                Check(ta.Lt(tb), DType.Bool, (x, y) => B(x < y), "lt");
                Check(ta.Eq(tb), DType.Bool, (x, y) => B(x == y), "eq");
                Check(ta + 2, dt, (x, _) => x + 2, "x + 2");
                Check(ta * -3, dt, (x, _) => x * -3, "x * -3");
                Check(5 - ta, dt, (x, _) => 5 - x, "5 - x");
                Check(ta + 2.5, DType.Float32, (x, _) => x + 2.5, "x + 2.5");
                Check(ta * 0.5, DType.Float32, (x, _) => x * 0.5, "x * 0.5");
                Check(ta / 2, DType.Float32, (x, _) => x / 2, "x / 2");
                Check(2 / tb, DType.Float32, (_, y) => (float)(2 / y), "2 / x");
                Check(ta > 1, DType.Bool, (x, _) => B(x > 1), "x > 1");
                Check(ta > 1.5, DType.Bool, (x, _) => B(x > 1.5), "x > 1.5");
            }
    }

    [Test]
    public void BoolOperands()
    {
        using var a = Tensor.FromArray(new[] { true, true, false, false });
        using var b = Tensor.FromArray(new[] { true, false, true, false });
        using var i = Tensor.FromArray(new[] { 5, 6, 7, 8 });
        using var eq = a.Eq(b);
        Assert.That(eq.DType, Is.EqualTo(DType.Bool));
        Assert.That(eq.ToArray<bool>(), Is.EqualTo(new[] { true, false, false, true }));
        using var lt = a.Lt(b);
        Assert.That(lt.ToArray<bool>(), Is.EqualTo(new[] { false, false, true, false }));
        using var mul = a * b; // logical and
        Assert.That(mul.DType, Is.EqualTo(DType.Bool));
        Assert.That(mul.ToArray<bool>(), Is.EqualTo(new[] { true, false, false, false }));
        using var add = a + b; // logical or
        Assert.That(add.ToArray<bool>(), Is.EqualTo(new[] { true, true, true, false }));
        using var bi = a + i;
        Assert.That(bi.DType, Is.EqualTo(DType.Int32));
        Assert.That(bi.ToArray<int>(), Is.EqualTo(new[] { 6, 7, 7, 8 }));
        using var b2 = a + 2;
        Assert.That(b2.DType, Is.EqualTo(DType.Int64));
        Assert.That(b2.ToArray<long>(), Is.EqualTo(new long[] { 3, 3, 2, 2 }));
        using var bf = a * 0.5;
        Assert.That(bf.DType, Is.EqualTo(DType.Float32));
        Assert.That(bf.ToArray<float>(), Is.EqualTo(new[] { 0.5f, 0.5f, 0, 0 }));
        using var ff = Tensor.FromArray(new[] { 1.5f, 2, 3, 4 });
        using var fb = ff * a;
        Assert.That(fb.DType, Is.EqualTo(DType.Float32));
        Assert.That(fb.ToArray<float>(), Is.EqualTo(new[] { 1.5f, 2, 0, 0 }));
    }

    [Test]
    public void MixedDTypeBinaryComputesInPromotedType()
    {
        var rng = new Random(12);
        var pairs = new (DType A, DType B, DType R)[]
        {
            (DType.Float16, DType.BFloat16, DType.Float32), (DType.Float32, DType.Float64, DType.Float64),
            (DType.Float16, DType.Float32, DType.Float32), (DType.Int32, DType.Float16, DType.Float16),
            (DType.Int64, DType.BFloat16, DType.BFloat16), (DType.Int32, DType.Int64, DType.Int64),
            (DType.Bool, DType.Float64, DType.Float64),
        };
        foreach (var (da, db, dr) in pairs)
        {
            var a = Ref.Random(rng, 12, da, -3, 3);
            var b = Ref.Random(rng, 4, db, -3, 3);
            using var ta = Layouts.Make(a, [3, 4], da, Layouts.Kind.Transposed);
            using var tb = Layouts.Make(b, [4], db, Layouts.Kind.Strided);
            using var y = ta * tb;
            using var y2 = tb - ta;
            Assert.That(y.DType, Is.EqualTo(dr), $"{da}*{db}");
            Assert.That(y2.DType, Is.EqualTo(dr), $"{db}-{da}");
            Ref.AssertClose(y.ToArray<double>(), RefBinary(a, [3, 4], b, [4], (x, z) => Ref.RoundTo(x * z, dr), out _), dr, $"{da}*{db}");
            Ref.AssertClose(y2.ToArray<double>(), RefBinary(b, [4], a, [3, 4], (x, z) => Ref.RoundTo(x - z, dr), out _), dr, $"{db}-{da}");
        }
    }

    // ---- Where / MaskedFill ----

    [Test]
    public void WhereBroadcastsAllThreeAndPromotes()
    {
        var rng = new Random(13);
        var cases = new (int[] C, int[] A, int[] B)[]
        {
            ([2, 3], [2, 3], [2, 3]), ([3], [2, 3], []), ([2, 1], [1, 3], [3]), ([], [4], [4]), ([2, 0], [1], [2, 1]), ([3, 1, 2], [4, 1], [1, 2]),
        };
        foreach (var dt in new[] { DType.Float64, DType.Float32, DType.Float16, DType.BFloat16, DType.Int32, DType.Int64, DType.Bool })
            foreach (var (sc, sa, sb) in cases)
                foreach (var kind in Layouts.All)
                {
                    var c = Enumerable.Range(0, Ref.Numel(sc)).Select(_ => rng.Next(2) == 1 ? 1.0 : 0.0).ToArray();
                    var a = Ref.Random(rng, Ref.Numel(sa), dt, -3, 3);
                    var b = Ref.Random(rng, Ref.Numel(sb), dt, -3, 3);
                    using var tc = Layouts.Make(c, sc, DType.Bool, kind);
                    using var ta = Layouts.Make(a, sa, dt, Layouts.Kind.Offset);
                    using var tb = Layouts.Make(b, sb, dt, kind);
                    using var y = Tensor.Where(tc, ta, tb);
                    var shape = Ref.BroadcastShape(Ref.BroadcastShape(sc, sa), sb);
                    var exp = new double[Ref.Numel(shape)];
                    for (int i = 0; i < exp.Length; i++)
                    {
                        var idx = Ref.Unravel(i, shape);
                        exp[i] = Ref.Broadcast(c, sc, idx) != 0 ? Ref.Broadcast(a, sa, idx) : Ref.Broadcast(b, sb, idx);
                    }
                    Assert.That(y.Shape, Is.EqualTo(shape));
                    Assert.That(y.DType, Is.EqualTo(dt));
                    Assert.That(y.ToArray<double>(), Is.EqualTo(exp), $"where {dt} {kind}");
                }
        // Mixed dtypes promote.
        using var cond = Tensor.FromArray(new[] { true, false });
        using var i32 = Tensor.FromArray(new[] { 1, 2 });
        using var f16 = Tensor.FromArray(new[] { (Half)0.5, (Half)1.5 });
        using var w = Tensor.Where(cond, i32, f16);
        Assert.That(w.DType, Is.EqualTo(DType.Float16));
        Assert.That(w.ToArray<double>(), Is.EqualTo(new[] { 1, 1.5 }));
        using var s = Tensor.Scalar(7, DType.Float64);
        using var w2 = Tensor.Where(cond, s, f16);
        Assert.That(w2.DType, Is.EqualTo(DType.Float16), "0-d float64 does not upcast a float16 tensor");
        Assert.That(w2.ToArray<double>(), Is.EqualTo(new[] { 7, 1.5 }));
    }

    [Test]
    public void MaskedFillWithBroadcastMask()
    {
        var rng = new Random(14);
        foreach (var dt in new[] { DType.Float64, DType.Float32, DType.Float16, DType.BFloat16, DType.Int32, DType.Int64 })
            foreach (var (sx, sm) in new (int[], int[])[] { ([2, 3], [2, 3]), ([2, 3], [3]), ([4, 1, 3], [2, 1]), ([3], []), ([0, 2], [2]) })
                foreach (var kind in Layouts.All)
                {
                    var x = Ref.Random(rng, Ref.Numel(sx), dt, -3, 3);
                    var m = Enumerable.Range(0, Ref.Numel(sm)).Select(_ => rng.Next(2) == 1 ? 1.0 : 0.0).ToArray();
                    if (sx.Length == 3 && sm.Length == 2) continue; // mask [2,1] vs x [4,1,3] broadcasts x up: an error, tested below
                    using var tx = Layouts.Make(x, sx, dt, kind);
                    using var tm = Layouts.Make(m, sm, DType.Bool, Layouts.Kind.Contiguous);
                    using var y = tx.MaskedFill(tm, -1.5);
                    var exp = new double[x.Length];
                    for (int i = 0; i < exp.Length; i++)
                        exp[i] = Ref.Broadcast(m, sm, Ref.Unravel(i, sx)) != 0 ? Ref.RoundTo(-1.5, dt) : x[i];
                    if (dt is DType.Int32 or DType.Int64)
                        for (int i = 0; i < exp.Length; i++) if (Ref.Broadcast(m, sm, Ref.Unravel(i, sx)) != 0) exp[i] = -1; // truncation
                    Assert.That(y.DType, Is.EqualTo(dt));
                    Assert.That(y.ToArray<double>(), Is.EqualTo(exp), $"masked fill {dt} {kind}");
                    Assert.That(tx.ToArray<double>(), Is.EqualTo(x));
                }
        using var t = Tensor.Zeros([3]);
        using var bigMask = Tensor.Ones([2, 3], DType.Bool);
        Assert.That(() => t.MaskedFill(bigMask, 1), Throws.TypeOf<ShapeException>().With.Message.Contains("MaskedFill"));
        using var intMask = Tensor.Ones([3], DType.Int32);
        Assert.That(() => t.MaskedFill(intMask, 1), Throws.TypeOf<DTypeException>().With.Message.Contains("MaskedFill"));
    }

    [Test]
    public void MapAppliesWithoutRecording()
    {
        using var x = Tensor.FromArray(new[] { 1.0, -2, 3 }, requiresGrad: true);
        using var y = Tensor.Map(new Engine.Ops.NegOp(), x);
        Assert.That(y.ToArray<double>(), Is.EqualTo(new[] { -1.0, 2, -3 }));
        Assert.That(y.RequiresGrad, Is.False);
        using var z = Tensor.Map(new Engine.Ops.MulOp(), x, x);
        Assert.That(z.ToArray<double>(), Is.EqualTo(new[] { 1.0, 4, 9 }));
        Assert.That(z.RequiresGrad, Is.False);
        using var f = Tensor.Ones([3], DType.Float32);
        Assert.That(() => Tensor.Map(new Engine.Ops.MulOp(), x, f), Throws.TypeOf<DTypeException>());
        using var r = x.Exp();
        Assert.That(r.RequiresGrad, Is.True);
        Assert.That(r.GradFn!.Op, Is.EqualTo("Exp"));
    }
}

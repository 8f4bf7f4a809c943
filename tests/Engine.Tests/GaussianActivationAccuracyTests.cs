using Engine.Ops;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// GELU (exact and tanh), SiLU: VectorMath's kernels within 2 ulp of the correctly rounded float32 value and the float32
/// scalar path (CPU strided, CUDA) within 24 ulp (it was 2× off at x = −5.54), over stratified samples of every exponent and both signs, the
/// negative tails down to the underflow, and special values. The reference is an independent float64 computation.
/// </summary>
public class GaussianActivationAccuracyTests
{
    // Φ(x) in float64: Marsaglia's positive series Φ = ½ + φ(x)·Σ x^(2n+1)/(1·3·…·(2n+1)) for |x| < 3, the continued
    // fraction Φ(−a) = φ(a)/(a + 1/(a + 2/(a + 3/(a + …)))) below −3; x² is exact in float64 for a float32 x.
    static double Phi(double x)
    {
        if (x > 3) return 1 - Phi(-x);
        double pdf = Math.Exp(-0.5 * x * x) / Math.Sqrt(2 * Math.PI);
        if (x >= -3)
        {
            double term = x, sum = x;
            for (int n = 1; n < 200 && Math.Abs(term) > 1e-18 * Math.Abs(sum); n++) { term *= x * x / (2 * n + 1); sum += term; }
            return 0.5 + pdf * sum;
        }
        double a = -x, cf = a;
        for (int k = 300; k >= 1; k--) cf = a + k / cf;
        return pdf / cf;
    }

    static double GeluRef(float x) => float.IsNegativeInfinity(x) ? -0.0 : float.IsPositiveInfinity(x) ? x : x * Phi(x);
    static double SiluRef(float x) => float.IsNegativeInfinity(x) ? -0.0 : x / (1 + Math.Exp(-(double)x));
    static double GeluTanhRef(float x)
    {
        if (float.IsNegativeInfinity(x)) return -0.0;
        double z = 0.7978845608028654 * (x + 0.044715 * (double)x * x * x);
        return x / (1 + Math.Exp(-2 * z));
    }

    static long Ulps(float a, float b)
    {
        if (float.IsNaN(a) || float.IsNaN(b)) return float.IsNaN(a) && float.IsNaN(b) ? 0 : long.MaxValue;
        static long Key(float v) { int i = BitConverter.SingleToInt32Bits(v); return i < 0 ? int.MinValue - (long)i : i; }
        return Math.Abs(Key(a) - Key(b));
    }

    static float[] Samples()
    {
        var rng = new Random(9);
        var xs = new List<float>();
        for (int sign = 0; sign < 2; sign++)
            for (int e = 0; e < 255; e++)
                for (int k = 0; k < 4096; k++)
                    xs.Add(BitConverter.Int32BitsToSingle((sign << 31) | (e << 23) | rng.Next(1 << 23)));
        for (int k = 0; k < 200_000; k++) xs.Add(-5f - 12f * k / 200_000f); // the tail down past the underflow (−14.1)
        xs.AddRange([0f, -0f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, float.Epsilon, -float.Epsilon,
            float.MaxValue, -float.MaxValue, 1.17549435e-38f, -1.17549435e-38f, -5f, -5.54f, -10f]);
        return xs.ToArray();
    }

    static (long worst, float at) Check(float[] xs, float[] ys, Func<float, double> reference)
    {
        long worst = 0; float at = 0;
        for (int i = 0; i < xs.Length; i++)
        {
            long d = Ulps(ys[i], (float)reference(xs[i]));
            if (d > worst) { worst = d; at = xs[i]; }
        }
        return (worst, at);
    }

    static void Vector(Action<float[], float[]> kernel, Func<float, double> reference, long bound)
    {
        var xs = Samples();
        var ys = new float[xs.Length];
        kernel(xs, ys);
        var (worst, at) = Check(xs, ys, reference);
        TestContext.Out.WriteLine($"worst {worst} ulp at {at:R}");
        Assert.That(worst, Is.LessThanOrEqualTo(bound), $"{worst} ulp at x = {at:R}");
    }

    [Test] public void GeluVectorWithin2Ulp() => Vector((x, y) => VectorMath.Gelu(x, y), GeluRef, 2);
    [Test] public void GeluTanhVectorWithin2Ulp() => Vector((x, y) => VectorMath.GeluTanh(x, y), GeluTanhRef, 2);
    [Test] public void SiluVectorWithin2Ulp() => Vector((x, y) => VectorMath.Silu(x, y), SiluRef, 2);

    [Test]
    public void GeluScalarFloat32PathIsAccurateInTheTail()
    {
        var xs = Samples();
        var ys = xs.Select(SpecialFunctions.Gelu).ToArray();
        var (worst, at) = Check(xs, ys, GeluRef);
        TestContext.Out.WriteLine($"worst {worst} ulp at {at:R}");
        // 18 ulp measured, near x = −13: the float32 Clenshaw sum loses ~4 bits where erfcx is ~0.06 and the series terms ~0.5.
        Assert.That(worst, Is.LessThanOrEqualTo(24), $"{worst} ulp at x = {at:R}");
        Assert.That(SpecialFunctions.Gelu(-5.54f), Is.EqualTo((float)GeluRef(-5.54f)).Within(2e-6 * 8.4e-8));
    }

    [Test]
    public void TailValuesThatUsedToCancel()
    {
        float[] xs = [-5f, -5.54f, -8f, -10f, -13f];
        var ys = new float[xs.Length];
        VectorMath.Gelu(xs, ys);
        for (int i = 0; i < xs.Length; i++)
            Assert.That(Ulps(ys[i], (float)GeluRef(xs[i])), Is.LessThanOrEqualTo(2), $"Gelu({xs[i]})");
    }

    [Test, Category("Exhaustive"), Explicit("all 2^32 floats: minutes on two cores")]
    public void GeluVectorExhaustive()
    {
        const int Chunk = 1 << 20;
        var xs = new float[Chunk]; var ys = new float[Chunk];
        long worst = 0; float at = 0;
        for (long start = 0; start < 1L << 32; start += Chunk)
        {
            for (int i = 0; i < Chunk; i++) xs[i] = BitConverter.Int32BitsToSingle((int)(uint)(start + i));
            VectorMath.Gelu(xs, ys);
            var (w, a) = Check(xs, ys, GeluRef);
            if (w > worst) { worst = w; at = a; }
        }
        TestContext.Out.WriteLine($"worst {worst} ulp at {at:R}");
        Assert.That(worst, Is.LessThanOrEqualTo(2), $"{worst} ulp at x = {at:R}");
    }
}

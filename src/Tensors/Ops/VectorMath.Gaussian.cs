using System.Runtime.CompilerServices;

namespace Engine.Ops;

// The Gaussian- and logistic-weighted activations (GELU exact and tanh-approximate, SiLU). Each float32 kernel runs in
// float64 lanes (the widening is exact) and rounds once at the end, so the result is the correctly rounded value of a
// float64 computation accurate to ~1e-10 relative: within 1 ulp of float32 everywhere, including the negative tails
// where x·Φ(x) falls to the subnormals. The tails are computed directly from e^(−x²/2) (Φ) or e^(−2z) (σ), never
// as 1 + erf or 1 + tanh, which cancel for x < 0 (the reason 0.5·x·(1 + erf(x/√2)) was 2× off at x = −5.5).
public static unsafe partial class VectorMath
{
    /// <summary>Exact GELU x·Φ(x) elementwise in float32, accurate in relative terms down to where it underflows
    /// (x ≈ −14.1); GELU(−∞) = −0, GELU(+∞) = +∞, NaN stays NaN.</summary>
    public static void Gelu(ReadOnlySpan<float> x, Span<float> y) => MapFloat<InDouble<GeluDouble>>(x, y, "VectorMath.Gelu");

    /// <summary>The tanh approximation of GELU, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), elementwise in float32,
    /// evaluated as x·σ(2z) (the same function) so the negative tail keeps its relative accuracy.</summary>
    public static void GeluTanh(ReadOnlySpan<float> x, Span<float> y) => MapFloat<InDouble<GeluTanhDouble>>(x, y, "VectorMath.GeluTanh");

    /// <summary>SiLU x·σ(x) elementwise in float32; SiLU(−∞) = −0.</summary>
    public static void Silu(ReadOnlySpan<float> x, Span<float> y) => MapFloat<InDouble<SiluDouble>>(x, y, "VectorMath.Silu");

    /// <summary>A float64 kernel as a float32 kernel: widen, apply, round once.</summary>
    readonly struct InDouble<TK> : IFloatKernel where TK : struct, IDoubleKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL> => TL.InDouble<TK>(x);
    }

    // Φ(x) for float32 inputs held in float64 lanes, from the scaled complementary error function
    // erfcx(u) = e^(u²)·erfc(u), u = |x|/√2: Φ(−|x|) = ½·erfcx(u)·e^(−x²/2), and Φ(|x|) = 1 − that. erfcx is smooth and
    // between 0.05 and 1 on [0, 11.5], so a Chebyshev series in t = 2/(2 + u) (degree 14, 7e-11 relative, see
    // SpecialFunctions.ErfcxCheb) serves the whole range without branches, and an error in u barely moves it; x² is
    // exact in float64 (x has 24 bits), so e^(−x²/2) is as accurate as ExpDouble. |x| is clamped to 16, beyond which
    // the result is 0 or 1 in float32 either way.
    static class NormalCdf
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Lower<TL>(TL a) where TL : unmanaged, IDoubleLanes<TL>
        {
            var u = a * TL.Splat(SpecialFunctions.InvSqrt2);
            var t = TL.Splat(2.0) / (TL.Splat(2.0) + u);
            var s = TL.Fma(t, TL.Splat(SpecialFunctions.ErfcxScale), TL.Splat(SpecialFunctions.ErfcxOffset));
            var s2 = s + s;
            var b1 = TL.Splat(SpecialFunctions.ErfcxC14);
            var b2 = TL.Splat(0.0);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC13);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC12);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC11);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC10);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC9);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC8);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC7);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC6);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC5);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC4);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC3);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC2);
            Step(ref b1, ref b2, s2, SpecialFunctions.ErfcxC1);
            var f = TL.Fma(s, b1, TL.Splat(SpecialFunctions.ErfcxC0) - b2);
            var e = ExpDouble.Apply(a * a * TL.Splat(-0.5));
            return TL.Splat(0.5) * f * e;
        }

        // One Clenshaw step: b₁ ← 2s·b₁ − b₂ + c, b₂ ← b₁.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Step<TL>(ref TL b1, ref TL b2, TL s2, double c) where TL : unmanaged, IDoubleLanes<TL>
        {
            var b = TL.Fma(s2, b1, TL.Splat(c) - b2);
            b2 = b1;
            b1 = b;
        }
    }

    readonly struct GeluDouble : IDoubleKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IDoubleLanes<TL>
        {
            // −∞ becomes −16, whose GELU (−1e-56) rounds to −0 in float32; +∞ stays, times Φ = 1.
            var xq = TL.Max(x, TL.Splat(-16.0));
            var a = TL.Min(xq & TL.SplatLong(long.MaxValue), TL.Splat(16.0));
            var lower = NormalCdf.Lower(a);
            var phi = TL.Select(TL.LessThan(x, TL.Splat(0.0)), lower, TL.Splat(1.0) - lower);
            return TL.Select(TL.IsNaN(x), x, xq * phi);
        }
    }

    // x·σ(2z) = x / (1 + e^(−2z)), z = √(2/π)·(x + 0.044715·x³): for x ≤ −20 e^(−2z) is ~1e261 and the quotient rounds
    // to −0 in float32, so x is clamped there (−∞ would give −∞/∞).
    readonly struct GeluTanhDouble : IDoubleKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IDoubleLanes<TL>
        {
            var xq = TL.Max(x, TL.Splat(-20.0));
            var x2 = xq * xq;
            var m2z = xq * TL.Fma(x2, TL.Splat(-2 * SpecialFunctions.GeluTanhC * SpecialFunctions.GeluTanhK), TL.Splat(-2 * SpecialFunctions.GeluTanhC));
            var y = xq / (TL.Splat(1.0) + ExpDouble.Apply(m2z));
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }

    // x / (1 + e^(−x)); x clamped at −200 (e^200 is finite, the result rounds to −0 in float32).
    readonly struct SiluDouble : IDoubleKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IDoubleLanes<TL>
        {
            var xq = TL.Max(x, TL.Splat(-200.0));
            var y = xq / (TL.Splat(1.0) + ExpDouble.Apply(TL.Splat(0.0) - xq));
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }
}

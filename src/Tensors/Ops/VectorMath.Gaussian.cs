using System.Runtime.CompilerServices;

namespace Engine.Ops;

// The Gaussian- and logistic-weighted activations (GELU exact and tanh-approximate, SiLU) and their backward
// dx = dy·f'(x). The costly parts run in float32 lanes (16 per AVX-512 vector): e^w as the unrounded pair
// (hi + lo)·2ⁿ (ExpParts), and for GELU a polynomial for erfcx and one for erf. The pieces are then joined in float64
// (IFloatLanes.CombineInDouble, a dozen operations) and rounded once, so no float32 rounding falls between them:
// every result is within 2 ulp of the correctly rounded float32 value (1 ulp is the largest error over all 2³²
// inputs, GaussianActivationAccuracyTests and benchmarks/RESULTS.md), including the negative tails down to where they
// underflow. The tails are computed from e^(−x²/2) or e^(−|2z|) directly, never as 1 + erf or 1 + tanh, which cancel
// for x < 0 (the reason 0.5·x·(1 + erf(x/√2)) was 2× off at x = −5.5).
public static unsafe partial class VectorMath
{
    /// <summary>Exact GELU x·Φ(x) elementwise in float32, accurate in relative terms down to where it underflows
    /// (x ≈ −14.1); GELU(−∞) = −0, GELU(+∞) = +∞, NaN stays NaN.</summary>
    public static void Gelu(ReadOnlySpan<float> x, Span<float> y) => MapFloat<GeluFloat>(x, y, "VectorMath.Gelu", pairs: false);

    /// <summary>The tanh approximation of GELU, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), elementwise in float32,
    /// evaluated as x·σ(2z) (the same function) so the negative tail keeps its relative accuracy.</summary>
    public static void GeluTanh(ReadOnlySpan<float> x, Span<float> y) => MapFloat<GeluTanhFloat>(x, y, "VectorMath.GeluTanh", pairs: false);

    /// <summary>SiLU x·σ(x) elementwise in float32; SiLU(−∞) = −0.</summary>
    public static void Silu(ReadOnlySpan<float> x, Span<float> y) => MapFloat<SiluFloat>(x, y, "VectorMath.Silu", pairs: false);

    /// <summary>The GELU backward dx = dy·(Φ(x) + x·φ(x)) in one pass; dx may be x or dy (in place).</summary>
    public static void GeluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) =>
        MapFloat2<GeluGradFloat>(x, dy, dx, "VectorMath.GeluBackward");

    /// <summary>The tanh-GELU backward dx = dy·(σ + 2x·σ(1 − σ)·√(2/π)(1 + 3·0.044715·x²)), σ = σ(2z), in one pass.</summary>
    public static void GeluTanhBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) =>
        MapFloat2<GeluTanhGradFloat>(x, dy, dx, "VectorMath.GeluTanhBackward");

    /// <summary>The SiLU backward dx = dy·(σ(x) + x·σ(x)(1 − σ(x))) in one pass.</summary>
    public static void SiluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) =>
        MapFloat2<SiluGradFloat>(x, dy, dx, "VectorMath.SiluBackward");

    // e^(w + wl) for w ∈ [−206, 0] (a float32) and a small correction |wl| ≤ 2⁻²⁰·|w|, as (hi + lo)·2ⁿ: ExpFloat's
    // reduction and polynomial with wl folded into the low part of r, but left unrounded, hi = 1 + rhi exactly and
    // |lo| < 0.07, so their float64 sum is within 0.1 ulp (float32) of e^(w + wl). n is an integer held in a float;
    // 2ⁿ is made in float64 (Pow2), where it cannot underflow, so a subnormal result is rounded once, at the end.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void ExpParts<TL>(TL w, TL wl, out TL hi, out TL lo, out TL n) where TL : unmanaged, IFloatLanes<TL>
    {
        var z = TL.Fma(w, TL.Splat(ExpFloat.Log2E), TL.Splat(ExpFloat.Shift));
        n = z - TL.Splat(ExpFloat.Shift);
        // Exact: where n ≠ 0, |w| > 1/3 is a multiple of 2⁻²⁵ and n·Ln2Hi (|n| < 2⁹) one of 2⁻²⁴ inside the fused
        // operation, and their difference is below 1/2 in magnitude; where n = 0 it is w.
        var rhi = TL.Fma(n, TL.Splat(-ExpFloat.Ln2Hi), w);
        var rlo = TL.Fma(n, TL.Splat(-ExpFloat.Ln2Lo), wl);
        var r = rhi + rlo;
        var q = TL.Fma(TL.Splat(ExpFloat.C6), r, TL.Splat(ExpFloat.C5));
        q = TL.Fma(q, r, TL.Splat(ExpFloat.C4));
        q = TL.Fma(q, r, TL.Splat(ExpFloat.C3));
        q = TL.Fma(q, r, TL.Splat(ExpFloat.C2));
        var a = TL.Fma(r * r, q, rlo);
        var one = TL.Splat(1f);
        hi = one + rhi;
        lo = ((one - hi) + rhi) + a;
    }

    // 2ⁿ in float64 for an integer n (|n| < 1022) held in a double: adding 1.5·2⁵² puts n in the low bits.
    const double Shift52 = 6755399441055744.0;
    const long Shift52Bits = 0x4338000000000000;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static TD Pow2<TD>(TD n) where TD : unmanaged, IDoubleLanes<TD> =>
        TD.ShiftLeftLong(TD.SubLong(n + TD.Splat(Shift52), TD.SplatLong(Shift52Bits - 1023)), 52);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static TD AbsD<TD>(TD x) where TD : unmanaged, IDoubleLanes<TD> => x & TD.SplatLong(long.MaxValue);

    // ---------------- GELU: Φ from erf near 0, from e^(−x²/2)·erfcx beyond ----------------

    // For |x| < 1, Φ(x) = ½ + x·P(x²), P the Taylor series of erf(x/√2)/(2x) to degree 8 in v = x² (the next term,
    // 1.1e-10, is 0.05 ulp of Φ(−1) = 0.159): P0 and P1 in float64, the rest (PS, 0.01 of P) in float32. For |x| ≥ 1,
    // Φ(−|x|) = t·G(t)·e^(−x²/2), t = 1/(1 + |x|/2), G(t) = erfcx(|x|/√2)/(2t) a polynomial in s = t − 3/16 of degree
    // 10 (fitted at Chebyshev nodes on |x| ∈ [1, 20], 8e-10 relative with G2…G10 rounded to float32): G0 and G1 in
    // float64, the rest (gs, under 0.07 of G) in float32. 20 rather than the forward's underflow (14.1): the backward's
    // dy·x·φ(x) stays representable a little further for a large dy. x² = h + l exactly (l by a fused multiply-add), so
    // e^(−x²/2) carries no rounding of x², which the exponent would amplify (one ulp of x²/2 is 40 ulp of the result at
    // x = −10). t is the rounded quotient, whose error corr (d + dl is 1 + |x|/2 exactly, r the quotient's residual)
    // is applied in float64; s = t − 3/16 is exact on the range (|s| < 1/8 where t < 1/8). Φ(|x|) = 1 − Φ(−|x|).
    const double GeluP0 = 0.3989422804014327, GeluP1 = -0.06649038006690546;
    const float GeluP2 = 9.973556735e-03f, GeluP3 = -1.187328249e-03f, GeluP4 = 1.154346901e-04f, GeluP5 = -9.444655916e-06f,
        GeluP6 = 6.659693668e-07f, GeluP7 = -4.122667363e-08f, GeluP8 = 2.273529809e-09f;
    const double GeluG0 = 0.24235699411675618, GeluG1 = 0.2584981421364427;
    const float GeluG2 = 1.573045552e-01f, GeluG3 = -3.329675272e-02f, GeluG4 = -1.445053220e-01f, GeluG5 = -1.939869486e-02f,
        GeluG6 = 1.797541976e-01f, GeluG7 = 6.547894329e-02f, GeluG8 = -4.602923095e-01f, GeluG9 = 4.779260159e-01f,
        GeluG10 = -1.757812202e-01f;
    const float GeluTailFrom = 1f, GeluTailTo = 20f, GeluS0 = 0.1875f;

    // The float32 pieces of Φ at a = σ·m, m = |x| (σ = 1 for GELU, √2 for erf: Φ(√2·x) = (1 + erf x)/2): ps (the erf
    // polynomial's tail, at v = a² = σ²m²), e^(−a²/2) = e^(−(σ²/2)·m²) = (hi + lo)·2ⁿ from m² = h + l exactly (σ² is 1 or
    // 2, so the scaling is exact and no rounding of a enters the exponent), s and gs (the erfcx polynomial's argument and
    // tail) and corr (t's relative correction; d + dl is 1 + a/2 = 1 + (σ/2)·m to 2⁻⁴⁸, halfHi + halfLo = σ/2 split in
    // two floats). Every lane gets finite pieces: m is clamped into each polynomial's range (nearTo = 1/σ; tailTo = 20/σ
    // for e, beyond which nothing changes in float32; 2⁻²⁰ below, so m² stays normal) and the combine picks. The
    // parameters are constants at every call, folded after inlining.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PhiParts<TL>(TL m, float sigma2, float halfHi, float halfLo, float nearTo, float tailTo,
        out TL ps, out TL hi, out TL lo, out TL n, out TL s, out TL gs, out TL corr)
        where TL : unmanaged, IFloatLanes<TL>
    {
        var am = TL.Max(TL.Min(m, TL.Splat(nearTo)), TL.Splat(9.5367431640625e-07f)); // 2⁻²⁰: x² stays normal
        var v = am * am;
        if (sigma2 != 1f) v *= TL.Splat(sigma2);
        ps = TL.Fma(TL.Splat(GeluP8), v, TL.Splat(GeluP7));
        ps = TL.Fma(ps, v, TL.Splat(GeluP6));
        ps = TL.Fma(ps, v, TL.Splat(GeluP5));
        ps = TL.Fma(ps, v, TL.Splat(GeluP4));
        ps = TL.Fma(ps, v, TL.Splat(GeluP3));
        ps = TL.Fma(ps, v, TL.Splat(GeluP2));

        var ae = TL.Min(TL.Max(m, TL.Splat(9.5367431640625e-07f)), TL.Splat(tailTo));
        var h = ae * ae;
        var l = TL.Fma(ae, ae, TL.Splat(0f) - h);
        ExpParts(h * TL.Splat(-0.5f * sigma2), l * TL.Splat(-0.5f * sigma2), out hi, out lo, out n);

        var at = TL.Max(ae, TL.Splat(nearTo));
        var one = TL.Splat(1f);
        var d = TL.Fma(at, TL.Splat(halfHi), one);
        var dl = TL.Fma(at, TL.Splat(halfHi), one - d); // 1 − d is exact; for σ = 1 so is the fused result (d's rounding error)
        if (halfLo != 0f) dl = TL.Fma(at, TL.Splat(halfLo), dl);
        var t = one / d;
        corr = TL.Fma(TL.Splat(0f) - dl, t, TL.Fma(TL.Splat(0f) - d, t, one));
        s = t - TL.Splat(GeluS0);
        gs = TL.Fma(TL.Splat(GeluG10), s, TL.Splat(GeluG9));
        gs = TL.Fma(gs, s, TL.Splat(GeluG8));
        gs = TL.Fma(gs, s, TL.Splat(GeluG7));
        gs = TL.Fma(gs, s, TL.Splat(GeluG6));
        gs = TL.Fma(gs, s, TL.Splat(GeluG5));
        gs = TL.Fma(gs, s, TL.Splat(GeluG4));
        gs = TL.Fma(gs, s, TL.Splat(GeluG3));
        gs = TL.Fma(gs, s, TL.Splat(GeluG2));
    }

    // GELU's pieces: Φ at a = |x|.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void GeluParts<TL>(TL a, out TL ps, out TL hi, out TL lo, out TL n, out TL s, out TL gs, out TL corr)
        where TL : unmanaged, IFloatLanes<TL> =>
        PhiParts(a, 1f, 0.5f, 0f, GeluTailFrom, GeluTailTo, out ps, out hi, out lo, out n, out s, out gs, out corr);

    // Φ(x) in float64 from the pieces; e = e^(−x²/2) without t's correction, which the tail applies itself.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static TD GeluPhi<TD>(TD x, TD ps, TD e, TD s, TD gs, TD corr) where TD : unmanaged, IDoubleLanes<TD>
    {
        var x2 = x * x;
        var near = TD.Fma(x, TD.Fma(x2, TD.Fma(x2, ps, TD.Splat(GeluP1)), TD.Splat(GeluP0)), TD.Splat(0.5));
        var t = s + TD.Splat(GeluS0);
        var g = TD.Fma(s, TD.Fma(s, gs, TD.Splat(GeluG1)), TD.Splat(GeluG0));
        var lower = TD.Fma(t, corr, t) * g * e; // Φ(−|x|)
        var far = TD.Select(TD.LessThan(x, TD.Splat(0.0)), lower, TD.Splat(1.0) - lower);
        return TD.Select(TD.LessThan(AbsD(x), TD.Splat((double)GeluTailFrom)), near, far);
    }

    readonly struct GeluFloat : IFloatKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL>
        {
            GeluParts(x & TL.SplatInt(int.MaxValue), out var ps, out var hi, out var lo, out var n, out var s, out var gs, out var corr);
            var y = TL.CombineInDouble<GeluCombine>(x, x, ps, hi, lo, n, s, gs, corr);
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }

    readonly struct GeluCombine : IDoubleCombine
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TD Apply<TD>(TD x, TD dy, TD ps, TD hi, TD lo, TD n, TD s, TD gs, TD corr) where TD : unmanaged, IDoubleLanes<TD>
        {
            var phi = GeluPhi(x, ps, (hi + lo) * Pow2(n), s, gs, corr);
            // −∞ becomes −20, whose GELU (20·Φ(−20) ≈ 1e-87) rounds to −0; +∞ stays, times Φ = 1.
            return TD.Max(x, TD.Splat(-20.0)) * phi;
        }
    }

    readonly struct GeluGradFloat : IFloatKernel2
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x, TL dy) where TL : unmanaged, IFloatLanes<TL>
        {
            GeluParts(x & TL.SplatInt(int.MaxValue), out var ps, out var hi, out var lo, out var n, out var s, out var gs, out var corr);
            var g = TL.CombineInDouble<GeluGradCombine>(x, dy, ps, hi, lo, n, s, gs, corr);
            return TL.Select(TL.IsNaN(x), x, g);
        }
    }

    // Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π); x clamped to ±20 in the second term (e is 0 there in float32 terms), so
    // ±∞ give 1 and 0, not ∞·0.
    readonly struct GeluGradCombine : IDoubleCombine
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TD Apply<TD>(TD x, TD dy, TD ps, TD hi, TD lo, TD n, TD s, TD gs, TD corr) where TD : unmanaged, IDoubleLanes<TD>
        {
            var e = (hi + lo) * Pow2(n);
            var phi = GeluPhi(x, ps, e, s, gs, corr);
            var xc = TD.Min(TD.Max(x, TD.Splat(-20.0)), TD.Splat(20.0));
            return dy * TD.Fma(xc * TD.Splat(SpecialFunctions.InvSqrt2Pi), e, phi);
        }
    }

    // ---------------- erf: Φ at √2·x, 2/√π·e^(−x²) ----------------

    // erf x = 2Φ(√2·x) − 1: GELU's pieces at a = √2·|x| (PhiParts with σ = √2), joined in float64. Near 0 the odd series
    // 2a·P(a²) directly (never ½ + … − 1, which would lose everything below 2⁻²⁵); beyond, ±(1 − 2Φ(−|a|)). The largest
    // error over all 2³² inputs is in benchmarks/RESULTS.md. The backward 2/√π·e^(−x²) is ExpParts on x² = h + l exactly.
    const float ErfHalfHi = (float)SpecialFunctions.InvSqrt2, ErfHalfLo = (float)(SpecialFunctions.InvSqrt2 - (double)ErfHalfHi);
    const float ErfNearTo = (float)SpecialFunctions.InvSqrt2, ErfTailTo = (float)(GeluTailTo * SpecialFunctions.InvSqrt2);
    const double Sqrt2 = 1.4142135623730951, TwoOverSqrtPi = 1.1283791670955126;

    /// <summary>erf elementwise in float32, within 2 ulp of the correctly rounded value (subnormal inputs included);
    /// erf(±∞) = ±1, erf(±0) = ±0, NaN stays NaN.</summary>
    public static void Erf(ReadOnlySpan<float> x, Span<float> y) => MapFloat<ErfFloat>(x, y, "VectorMath.Erf", pairs: false);

    /// <summary>The erf backward dx = dy·2/√π·e^(−x²) in one pass; dx may be x or dy (in place).</summary>
    public static void ErfBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) =>
        MapFloat2<ErfGradFloat>(x, dy, dx, "VectorMath.ErfBackward");

    readonly struct ErfFloat : IFloatKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL>
        {
            PhiParts(x & TL.SplatInt(int.MaxValue), 2f, ErfHalfHi, ErfHalfLo, ErfNearTo, ErfTailTo,
                out var ps, out var hi, out var lo, out var n, out var s, out var gs, out var corr);
            var y = TL.CombineInDouble<ErfCombine>(x, x, ps, hi, lo, n, s, gs, corr);
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }

    readonly struct ErfCombine : IDoubleCombine
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TD Apply<TD>(TD x, TD dy, TD ps, TD hi, TD lo, TD n, TD s, TD gs, TD corr) where TD : unmanaged, IDoubleLanes<TD>
        {
            var a = x * TD.Splat(Sqrt2);
            var a2 = a * a;
            var near = (a + a) * TD.Fma(a2, TD.Fma(a2, ps, TD.Splat(GeluP1)), TD.Splat(GeluP0));
            var t = s + TD.Splat(GeluS0);
            var g = TD.Fma(s, TD.Fma(s, gs, TD.Splat(GeluG1)), TD.Splat(GeluG0));
            var erfc = TD.Fma(t, corr, t) * g * ((hi + lo) * Pow2(n)) * TD.Splat(2.0); // erfc |x| = 2Φ(−|a|)
            var one = TD.Splat(1.0);
            var far = TD.Select(TD.LessThan(x, TD.Splat(0.0)), erfc - one, one - erfc);
            return TD.Select(TD.LessThan(AbsD(a), one), near, far);
        }
    }

    // |x| is clamped into [2⁻²⁰, 14.2]: below, e^(−x²) is 1 to 2⁻⁴⁰; above, e^(−x²) < 2⁻²⁸⁸ makes
    // dy·2/√π·e^(−x²) round to 0 for any finite float32 dy.
    readonly struct ErfGradFloat : IFloatKernel2
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x, TL dy) where TL : unmanaged, IFloatLanes<TL>
        {
            var m = TL.Min(TL.Max(x & TL.SplatInt(int.MaxValue), TL.Splat(9.5367431640625e-07f)), TL.Splat(ErfTailTo));
            var h = m * m;
            var zero = TL.Splat(0f);
            ExpParts(zero - h, zero - TL.Fma(m, m, zero - h), out var hi, out var lo, out var n);
            var g = TL.CombineInDouble<ErfGradCombine>(x, dy, hi, lo, n, x, x, x, x);
            return TL.Select(TL.IsNaN(x), x, g);
        }
    }

    readonly struct ErfGradCombine : IDoubleCombine
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TD Apply<TD>(TD x, TD dy, TD hi, TD lo, TD n, TD p3, TD p4, TD p5, TD p6) where TD : unmanaged, IDoubleLanes<TD> =>
            dy * TD.Splat(TwoOverSqrtPi) * ((hi + lo) * Pow2(n));
    }

    // ---------------- SiLU and tanh-GELU: x·σ(w) from E = e^(−|w|) ≤ 1 ----------------

    // σ(w) = 1/(1 + E) for w ≥ 0 and E/(1 + E) below, σ(1 − σ) = E/(1 + E)² either way: nothing overflows, and the lower
    // tail keeps its relative accuracy; E's error (0.1 ulp) and the final rounding remain.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static TD SigmoidOf<TD>(TD negative, TD e, out TD sigmaOneMinus) where TD : unmanaged, IDoubleLanes<TD>
    {
        var r = TD.Splat(1.0) / (TD.Splat(1.0) + e);
        sigmaOneMinus = e * r * r;
        return TD.Select(negative, e * r, r);
    }

    // x ≤ −120 gives −0 either way (120·e^−120 ≈ 1e-50); the clamp keeps n in range and −∞ from ∞·0. |x| below 2⁻³⁰
    // is raised to it (e^−|x| moves by 2⁻³⁰, σ by a 2⁻³²-th) so that r² in ExpParts stays normal: a float32 multiply
    // with a subnormal result costs a microcode assist.
    const float SiluClamp = 120f, TwoM30 = 9.31322575e-10f;

    readonly struct SiluFloat : IFloatKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL>
        {
            var a = TL.Min(TL.Max(x & TL.SplatInt(int.MaxValue), TL.Splat(TwoM30)), TL.Splat(SiluClamp));
            ExpParts(TL.Splat(0f) - a, TL.Splat(0f), out var hi, out var lo, out var n);
            var y = TL.CombineInDouble<SiluCombine>(x, x, hi, lo, n, x, x, x, x);
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }

    readonly struct SiluCombine : IDoubleCombine
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TD Apply<TD>(TD x, TD dy, TD hi, TD lo, TD n, TD p3, TD p4, TD p5, TD p6) where TD : unmanaged, IDoubleLanes<TD>
        {
            var sigma = SigmoidOf(TD.LessThan(x, TD.Splat(0.0)), (hi + lo) * Pow2(n), out _);
            return TD.Max(x, TD.Splat(-(double)SiluClamp)) * sigma;
        }
    }

    readonly struct SiluGradFloat : IFloatKernel2
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x, TL dy) where TL : unmanaged, IFloatLanes<TL>
        {
            var a = TL.Min(TL.Max(x & TL.SplatInt(int.MaxValue), TL.Splat(TwoM30)), TL.Splat(SiluClamp));
            ExpParts(TL.Splat(0f) - a, TL.Splat(0f), out var hi, out var lo, out var n);
            var g = TL.CombineInDouble<SiluGradCombine>(x, dy, hi, lo, n, x, x, x, x);
            return TL.Select(TL.IsNaN(x), x, g);
        }
    }

    readonly struct SiluGradCombine : IDoubleCombine
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TD Apply<TD>(TD x, TD dy, TD hi, TD lo, TD n, TD p3, TD p4, TD p5, TD p6) where TD : unmanaged, IDoubleLanes<TD>
        {
            var sigma = SigmoidOf(TD.LessThan(x, TD.Splat(0.0)), (hi + lo) * Pow2(n), out var s1s);
            var xc = TD.Min(TD.Max(x, TD.Splat(-(double)SiluClamp)), TD.Splat((double)SiluClamp));
            return dy * TD.Fma(xc, s1s, sigma);
        }
    }

    // tanh-GELU is x·σ(2z), 2z = x·(C2 + K2·x²), C2 = 2√(2/π), K2 = C2·0.044715. |2z| is taken in float64 and split
    // into float32 hi + lo: its rounding would be amplified by the exponent (at x = −10, 2z ≈ −87 and one float32 ulp of
    // it is 8 ulp of the result). |x| is clamped to 12 (|2z| ≤ 143, e^−143 ≈ 0 in float32 terms).
    const double GeluTanhC2 = 2 * SpecialFunctions.GeluTanhC, GeluTanhK2 = 2 * SpecialFunctions.GeluTanhC * SpecialFunctions.GeluTanhK;
    const float GeluTanhClamp = 12f;

    readonly struct TwoZ : IDoubleKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TD Apply<TD>(TD a) where TD : unmanaged, IDoubleLanes<TD> =>
            a * TD.Fma(a * a, TD.Splat(GeluTanhK2), TD.Splat(GeluTanhC2));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void GeluTanhParts<TL>(TL x, out TL hi, out TL lo, out TL n) where TL : unmanaged, IFloatLanes<TL>
    {
        var a = TL.Min(TL.Max(x & TL.SplatInt(int.MaxValue), TL.Splat(TwoM30)), TL.Splat(GeluTanhClamp));
        TL.SplitInDouble<TwoZ>(a, out var wh, out var wl);
        var zero = TL.Splat(0f);
        ExpParts(zero - wh, zero - wl, out hi, out lo, out n);
    }

    readonly struct GeluTanhFloat : IFloatKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL>
        {
            GeluTanhParts(x, out var hi, out var lo, out var n);
            var y = TL.CombineInDouble<GeluTanhCombine>(x, x, hi, lo, n, x, x, x, x);
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }

    readonly struct GeluTanhCombine : IDoubleCombine
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TD Apply<TD>(TD x, TD dy, TD hi, TD lo, TD n, TD p3, TD p4, TD p5, TD p6) where TD : unmanaged, IDoubleLanes<TD>
        {
            var sigma = SigmoidOf(TD.LessThan(x, TD.Splat(0.0)), (hi + lo) * Pow2(n), out _);
            return TD.Max(x, TD.Splat(-(double)GeluTanhClamp)) * sigma;
        }
    }

    readonly struct GeluTanhGradFloat : IFloatKernel2
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x, TL dy) where TL : unmanaged, IFloatLanes<TL>
        {
            GeluTanhParts(x, out var hi, out var lo, out var n);
            var g = TL.CombineInDouble<GeluTanhGradCombine>(x, dy, hi, lo, n, x, x, x, x);
            return TL.Select(TL.IsNaN(x), x, g);
        }
    }

    // d/dx x·σ(2z) = σ + x·σ(1 − σ)·(C2 + 3·K2·x²).
    readonly struct GeluTanhGradCombine : IDoubleCombine
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TD Apply<TD>(TD x, TD dy, TD hi, TD lo, TD n, TD p3, TD p4, TD p5, TD p6) where TD : unmanaged, IDoubleLanes<TD>
        {
            var sigma = SigmoidOf(TD.LessThan(x, TD.Splat(0.0)), (hi + lo) * Pow2(n), out var s1s);
            var xc = TD.Min(TD.Max(x, TD.Splat(-(double)GeluTanhClamp)), TD.Splat((double)GeluTanhClamp));
            var slope = TD.Fma(xc * xc, TD.Splat(3 * GeluTanhK2), TD.Splat(GeluTanhC2));
            return dy * TD.Fma(xc * s1s, slope, sigma);
        }
    }
}

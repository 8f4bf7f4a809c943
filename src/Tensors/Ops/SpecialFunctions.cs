namespace Engine.Ops;

/// <summary>Functions .NET's Math lacks, in the precision each path needs.</summary>
public static class SpecialFunctions
{
    /// <summary>
    /// erf in float64, to about 1e-15 relative: erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)),
    /// a series of positive terms (no cancellation); erf(x) rounds to ±1 beyond |x| = 6.
    /// </summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return x;
        double ax = Math.Abs(x);
        if (ax > 6) return Math.CopySign(1.0, x);
        double x2 = ax * ax, term = ax, sum = ax;
        for (int n = 0; n < 200; n++)
        {
            term *= 2 * x2 / (2 * n + 3);
            sum += term;
            if (term < sum * 1e-17) break;
        }
        return Math.CopySign(2 / Math.Sqrt(Math.PI) * Math.Exp(-x2) * sum, x);
    }

    internal const double InvSqrt2 = 0.7071067811865476, InvSqrt2Pi = 0.3989422804014327;
    internal const double GeluTanhC = 0.7978845608028654, GeluTanhK = 0.044715;

    // Chebyshev coefficients of erfcx(u) = e^(u²)·erfc(u) in s ∈ [−1, 1], s = ErfcxScale·t + ErfcxOffset,
    // t = 2/(2 + u), u ∈ [0, 11.5] (interpolated at 60 Chebyshev nodes from erfc and exp in float64; degree 12 is
    // within 2.4e-10 relative): the float32 scalar path's. (VectorMath's kernels have their own float32 fit.)
    internal const double ErfcxScale = 2.3478260869565215, ErfcxOffset = -1.3478260869565217;
    internal const double ErfcxC0 = 0.42444397626856667;
    internal const double ErfcxC1 = 0.46436440697935705;
    internal const double ErfcxC2 = 0.10009690052391657;
    internal const double ErfcxC3 = 0.011369383813096207;
    internal const double ErfcxC4 = -0.00010244995655343975;
    internal const double ErfcxC5 = -0.00017574798844437005;
    internal const double ErfcxC6 = 1.1211039742387019e-09;
    internal const double ErfcxC7 = 3.771260630643092e-06;
    internal const double ErfcxC8 = -1.6639810497357891e-07;
    internal const double ErfcxC9 = -8.897599128819082e-08;
    internal const double ErfcxC10 = 1.2451249044772201e-08;
    internal const double ErfcxC11 = 1.4381997183454676e-09;
    internal const double ErfcxC12 = -5.78694254553073e-10;

    /// <summary>
    /// Exact GELU x·Φ(x) in float32 arithmetic only (the scalar path of every backend, CUDA included: no float64, no
    /// fused multiply-add, no arrays). Φ(−|x|) = ½·erfcx(|x|/√2)·e^(−x²/2), with erfcx from its Chebyshev series and
    /// x² split exactly (Veltkamp) so that e^(−x²/2) is not spoiled by the rounding of x² (at x = −10, one ulp of x²/2
    /// is 40 ulp of the result); e^(−h) is taken as e^(64 − h)·e^(−64) past h = 64 so it stays normal. Accurate in
    /// relative terms (up to 18 ulp near x = −13, where the float32 Clenshaw sum cancels) down to the underflow, where
    /// 0.5·x·(1 + erf(x/√2)) cancelled (2× off at x = −5.54).
    /// </summary>
    public static float Gelu(float x)
    {
        if (!(x >= -16f)) return float.IsNaN(x) ? x : -0f;
        return x < 0 ? NormalCdfLower(-x, x) : x * (1f - NormalCdfLower(x, 1f));
    }

    /// <summary>Φ(x) in float32 arithmetic, as in <see cref="Gelu(float)"/>.</summary>
    public static float NormalCdf(float x)
    {
        if (float.IsNaN(x)) return x;
        return x < 0 ? NormalCdfLower(-x, 1f) : 1f - NormalCdfLower(x, 1f);
    }

    // m·Φ(−a) for a ≥ 0, the scale e^(−64) of a deep tail applied last so that a subnormal result is rounded once
    // (no out parameter: ILGPU would give the kernel a stack frame for it).
    static float NormalCdfLower(float a, float m)
    {
        if (a > 16f) a = 16f;
        float u = a * (float)InvSqrt2;
        float t = 2f / (2f + u);
        float s = t * (float)ErfcxScale + (float)ErfcxOffset;
        float b1 = (float)ErfcxC12, b2 = 0f, b;
        b = 2f * s * b1 - b2 + (float)ErfcxC11; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC10; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC9; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC8; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC7; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC6; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC5; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC4; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC3; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC2; b2 = b1; b1 = b;
        b = 2f * s * b1 - b2 + (float)ErfcxC1; b2 = b1; b1 = b;
        float f = s * b1 - b2 + (float)ErfcxC0;
        float c = 4097f * a, ah = c - (c - a), al = a - ah;
        float h = 0.5f * ah * ah, l = 0.5f * al * (a + ah);
        float scale = 1f;
        if (h > 64f) { h -= 64f; scale = 1.60381089e-28f; } // exact (Sterbenz: h ≤ 128); e^(−64)
        return m * 0.5f * f * MathF.Exp(-h) * MathF.Exp(-l) * scale;
    }

    /// <summary>
    /// erf in float32 (absolute error below 2e-7): Abramowitz &amp; Stegun 7.1.26 evaluated in float, cheap enough for
    /// exact GELU over millions of elements.
    /// </summary>
    public static float Erf(float x)
    {
        float ax = MathF.Abs(x);
        if (ax < 0.5f)
        {
            // Near 0 the A&S form loses relative accuracy; a short odd series is exact to float precision here.
            float x2 = x * x;
            return x * (1.1283791671f + x2 * (-0.3761263890f + x2 * (0.1128379167f + x2 * (-0.0268661706f + x2 * (0.0052239776f - x2 * 0.0008548327f)))));
        }
        float t = 1f / (1f + 0.3275911f * ax);
        float y = 1f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t * MathF.Exp(-ax * ax);
        return MathF.CopySign(y, x);
    }
}

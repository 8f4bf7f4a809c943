namespace Engine.Ops;

/// <summary>Functions .NET's Math lacks, in the precision each path needs.</summary>
public static class SpecialFunctions
{
    internal const double TwoOverSqrtPi = 1.1283791670955126, InvSqrtPi = 0.5641895835477563;

    /// <summary>
    /// erf in float64, within 4 ulp (measured against 120-bit values at 140 000 points): below |x| = 1.5 the series of
    /// positive terms erf x = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)), summed with compensation (its small terms
    /// would otherwise all be rounded away, a bias of −6 ulp) and corrected for the rounding of x² in the powers; above,
    /// 1 − erfc x from the continued fraction erfc x = e^(−x²)/√π · 1/(x + (1/2)/(x + (2/2)/(x + (3/2)/(x + …)))) by
    /// Lentz's method (91 steps at 1.5, 57 at 2, fewer beyond); ±1 from |x| = 6, where 1 − erf x &lt; 2⁻⁵⁶. e^(−x²)
    /// comes from x² = h + l split exactly, so the rounding of x² (amplified by x², up to 36 ulp) does not reach it. No
    /// arrays, no fused multiply-add: the float32 scalar path of every backend, CUDA included, is this function rounded
    /// once.
    /// </summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return x;
        double ax = Math.Abs(x);
        if (ax >= 6) return Math.CopySign(1.0, x);
        double h = ax * ax, l = SquareError(ax, h), e = ExpMinusSquare(h, l);
        if (ax < 1.5)
        {
            // term n is ax·(2h)ⁿ/(2n+1)!!; the exact x² = h + l scales it by 1 + n·l/h, hence the correction Σ n·term·l/h.
            double term = ax, sum = ax, lost = 0, moments = 0;
            for (int n = 1; n < 100 && term > sum * 1e-17; n++)
            {
                term *= 2 * h / (2 * n + 1);
                double next = sum + term;
                lost += term - (next - sum); // exact: sum ≥ term
                sum = next;
                moments += n * term;
            }
            if (h > 0) lost += l / h * moments;
            return Math.CopySign(TwoOverSqrtPi * e * (sum + lost), x);
        }
        // Modified Lentz: f = x + a₁/(x + a₂/(x + …)), aₖ = k/2, as the product of the ratios of successive convergents.
        double f = ax, c = ax, d = 0;
        for (int k = 1; k < 200; k++)
        {
            double ak = 0.5 * k;
            d = 1 / (ax + ak * d);
            c = ax + ak / c;
            double delta = c * d;
            f *= delta;
            if (Math.Abs(delta - 1) < 1e-16) break;
        }
        return Math.CopySign(1 - InvSqrtPi * e / f, x);
    }

    /// <summary>d erf / dx = 2/√π · e^(−x²) in float64, e^(−x²) without the rounding of x².</summary>
    public static double ErfDerivative(double x)
    {
        double ax = Math.Abs(x), h = ax * ax;
        return TwoOverSqrtPi * ExpMinusSquare(h, SquareError(ax, h));
    }

    // x·x − h exactly for h = x·x rounded (Dekker's product from Veltkamp's split), 0 where the split would overflow; no
    // out parameters, which would give a CUDA kernel a stack frame.
    static double SquareError(double x, double h)
    {
        if (!(Math.Abs(x) < 1e150)) return 0;
        double c = 134217729.0 * x, xh = c - (c - x), xl = x - xh;
        return ((xh * xh - h) + 2 * xh * xl) + xl * xl;
    }

    // e^(−(h + l)) = e^(−h)·(1 − l) for |l| ≤ 2⁻⁵³·h; h = ∞ gives 0, NaN stays NaN.
    static double ExpMinusSquare(double h, double l)
    {
        double e = Math.Exp(-h);
        return e - e * l;
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

    // The Maclaurin coefficients of erf x / x in v = x², 2/√π·(−1)ⁿ/(n!(2n+1)); for |x| < 1 the next term is below 2⁻³³
    // of the result, and the alternating sum loses at most one bit (Σ|terms| / erf x &lt; 2). The two leading ones carry
    // their float32 rounding as a second float (T0's alone is 0.9 ulp of erf x near 0).
    const float ErfT0 = (float)TwoOverSqrtPi, ErfT1 = (float)(-TwoOverSqrtPi / 3), ErfT2 = (float)(TwoOverSqrtPi / 10),
        ErfT3 = (float)(-TwoOverSqrtPi / 42), ErfT4 = (float)(TwoOverSqrtPi / 216), ErfT5 = (float)(-TwoOverSqrtPi / 1320),
        ErfT6 = (float)(TwoOverSqrtPi / 9360), ErfT7 = (float)(-TwoOverSqrtPi / 75600), ErfT8 = (float)(TwoOverSqrtPi / 685440),
        ErfT0Lo = (float)(TwoOverSqrtPi - (double)ErfT0), ErfT1Lo = (float)(-TwoOverSqrtPi / 3 - (double)ErfT1),
        ErfT9 = (float)(-TwoOverSqrtPi / 6894720), ErfT10 = (float)(TwoOverSqrtPi / 76204800), ErfT11 = (float)(-TwoOverSqrtPi / 918086400);

    /// <summary>
    /// erf in float32 arithmetic only (the scalar path of every backend, CUDA included: no float64, no fused multiply-add,
    /// no arrays): the Maclaurin series below |x| = 1, beyond it ±(1 − 2Φ(−√2·|x|)) from GELU's erfcx series
    /// (<see cref="NormalCdfLower"/>), which keeps x² exact in the exponent. Within 2 ulp of the correctly rounded value
    /// (ErfTests); VectorMath.Erf is the dense path.
    /// </summary>
    public static float Erf(float x)
    {
        if (float.IsNaN(x)) return x;
        float ax = MathF.Abs(x);
        if (ax < 1f)
        {
            float v = x * x;
            float q = ErfT11;
            q = q * v + ErfT10; q = q * v + ErfT9; q = q * v + ErfT8; q = q * v + ErfT7; q = q * v + ErfT6; q = q * v + ErfT5; q = q * v + ErfT4;
            q = q * v + ErfT3; q = q * v + ErfT2;
            q = (q * v + ErfT1Lo) + ErfT1;
            q = (q * v + ErfT0Lo) + ErfT0;
            return x * q;
        }
        return MathF.CopySign(1f - NormalCdfLower(ax * 1.41421354f, 2f), x);
    }

    /// <summary>2/√π·e^(−x²) in float32 arithmetic only, x² split exactly (Veltkamp) so that its rounding, amplified by
    /// x² in the exponent (50 ulp at x = 7), does not reach the result.</summary>
    public static float ErfDerivative(float x)
    {
        float a = MathF.Abs(x);
        if (!(a < 16f)) return float.IsNaN(x) ? x : 0f; // e^(−256) is 0 in float32
        float c = 4097f * a, ah = c - (c - a), al = a - ah;
        float h = ah * ah, l = al * (a + ah);
        return (float)TwoOverSqrtPi * MathF.Exp(-h) * MathF.Exp(-l);
    }
}

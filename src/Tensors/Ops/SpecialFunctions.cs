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

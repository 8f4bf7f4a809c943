namespace Engine.Ops;

/// <summary>
/// The NaN and signed-zero semantics of max, min and clamp, written once in plain comparisons so that every backend
/// computes the same thing: the CPU loops, and ILGPU kernels, where <c>MathF.Max</c>/<c>Min</c> become PTX's
/// <c>max.f32</c>/<c>min.f32</c>, which return the non-NaN operand (C's fmax). Branches and bit tests only: no
/// allocation, no call that ILGPU cannot compile (it maps <see cref="BitConverter"/>'s bit casts).
/// <list type="bullet">
/// <item><see cref="Maximum(float, float)"/> and <see cref="Minimum(float, float)"/> propagate NaN, as PyTorch's
/// <c>maximum</c>/<c>minimum</c> and IEEE 754-2019 maximum/minimum (and .NET's <c>MathF.Max</c>/<c>Min</c>); +0 is
/// greater than −0.</item>
/// <item><see cref="MaximumNumber(float, float)"/> and <see cref="MinimumNumber(float, float)"/> ignore a NaN operand,
/// as PyTorch's <c>fmax</c>/<c>fmin</c> (IEEE maximumNumber/minimumNumber): NaN only when both are NaN.</item>
/// <item><see cref="Clamp(float, float, float)"/> is <c>Minimum(Maximum(x, lo), hi)</c>: NaN in x or in a bound gives
/// NaN, as PyTorch's <c>clamp</c>; with lo &gt; hi every element becomes hi.</item>
/// </list>
/// </summary>
public static class NaNMath
{
    /// <summary>max(a, b); NaN if either is NaN; +0 beats −0.</summary>
    public static float Maximum(float a, float b) =>
        a != b ? (float.IsNaN(a) ? a : b < a ? a : b) : (BitConverter.SingleToInt32Bits(b) < 0 ? a : b);

    /// <summary>max(a, b); NaN if either is NaN; +0 beats −0.</summary>
    public static double Maximum(double a, double b) =>
        a != b ? (double.IsNaN(a) ? a : b < a ? a : b) : (BitConverter.DoubleToInt64Bits(b) < 0 ? a : b);

    /// <summary>min(a, b); NaN if either is NaN; −0 beats +0.</summary>
    public static float Minimum(float a, float b) =>
        a != b ? (float.IsNaN(a) ? a : a < b ? a : b) : (BitConverter.SingleToInt32Bits(a) < 0 ? a : b);

    /// <summary>min(a, b); NaN if either is NaN; −0 beats +0.</summary>
    public static double Minimum(double a, double b) =>
        a != b ? (double.IsNaN(a) ? a : a < b ? a : b) : (BitConverter.DoubleToInt64Bits(a) < 0 ? a : b);

    /// <summary>max(a, b) ignoring a NaN operand (fmax); +0 beats −0.</summary>
    public static float MaximumNumber(float a, float b) => float.IsNaN(a) ? b : float.IsNaN(b) ? a : Maximum(a, b);

    /// <summary>max(a, b) ignoring a NaN operand (fmax); +0 beats −0.</summary>
    public static double MaximumNumber(double a, double b) => double.IsNaN(a) ? b : double.IsNaN(b) ? a : Maximum(a, b);

    /// <summary>min(a, b) ignoring a NaN operand (fmin); −0 beats +0.</summary>
    public static float MinimumNumber(float a, float b) => float.IsNaN(a) ? b : float.IsNaN(b) ? a : Minimum(a, b);

    /// <summary>min(a, b) ignoring a NaN operand (fmin); −0 beats +0.</summary>
    public static double MinimumNumber(double a, double b) => double.IsNaN(a) ? b : double.IsNaN(b) ? a : Minimum(a, b);

    /// <summary>min(max(x, lo), hi); NaN in x, lo or hi gives NaN.</summary>
    public static float Clamp(float x, float lo, float hi) => Minimum(Maximum(x, lo), hi);

    /// <summary>min(max(x, lo), hi); NaN in x, lo or hi gives NaN.</summary>
    public static double Clamp(double x, double lo, double hi) => Minimum(Maximum(x, lo), hi);
}

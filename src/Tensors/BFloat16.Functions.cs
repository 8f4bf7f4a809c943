namespace Engine;

// Elementary functions (IExponentialFunctions, ILogarithmicFunctions, IPowerFunctions, IRootFunctions,
// IHyperbolicFunctions, ITrigonometricFunctions): computed in float and rounded to bfloat16 once.
public readonly partial struct BFloat16
{
    // ------------------------------------------------------------------ IExponentialFunctions

    /// <summary>e raised to <paramref name="x"/>.</summary>
    /// <param name="x">The exponent.</param>
    public static BFloat16 Exp(BFloat16 x) => (BFloat16)MathF.Exp(x.AsSingle());

    /// <summary><c>e^x - 1</c>.</summary>
    /// <param name="x">The exponent.</param>
    public static BFloat16 ExpM1(BFloat16 x) => (BFloat16)float.ExpM1(x.AsSingle());

    /// <summary>2 raised to <paramref name="x"/>.</summary>
    /// <param name="x">The exponent.</param>
    public static BFloat16 Exp2(BFloat16 x) => (BFloat16)float.Exp2(x.AsSingle());

    /// <summary><c>2^x - 1</c>.</summary>
    /// <param name="x">The exponent.</param>
    public static BFloat16 Exp2M1(BFloat16 x) => (BFloat16)float.Exp2M1(x.AsSingle());

    /// <summary>10 raised to <paramref name="x"/>.</summary>
    /// <param name="x">The exponent.</param>
    public static BFloat16 Exp10(BFloat16 x) => (BFloat16)float.Exp10(x.AsSingle());

    /// <summary><c>10^x - 1</c>.</summary>
    /// <param name="x">The exponent.</param>
    public static BFloat16 Exp10M1(BFloat16 x) => (BFloat16)float.Exp10M1(x.AsSingle());

    // ------------------------------------------------------------------ ILogarithmicFunctions

    /// <summary>The natural logarithm.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Log(BFloat16 x) => (BFloat16)MathF.Log(x.AsSingle());

    /// <summary>The logarithm in base <paramref name="newBase"/>.</summary>
    /// <param name="x">The value.</param>
    /// <param name="newBase">The base.</param>
    public static BFloat16 Log(BFloat16 x, BFloat16 newBase) => (BFloat16)MathF.Log(x.AsSingle(), newBase.AsSingle());

    /// <summary><c>ln(x + 1)</c>.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 LogP1(BFloat16 x) => (BFloat16)float.LogP1(x.AsSingle());

    /// <summary>The base-2 logarithm.</summary>
    /// <param name="value">The value.</param>
    public static BFloat16 Log2(BFloat16 value) => (BFloat16)MathF.Log2(value.AsSingle());

    /// <summary><c>log2(x + 1)</c>.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Log2P1(BFloat16 x) => (BFloat16)float.Log2P1(x.AsSingle());

    /// <summary>The base-10 logarithm.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Log10(BFloat16 x) => (BFloat16)MathF.Log10(x.AsSingle());

    /// <summary><c>log10(x + 1)</c>.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Log10P1(BFloat16 x) => (BFloat16)float.Log10P1(x.AsSingle());

    // ------------------------------------------------------------------ IPowerFunctions / IRootFunctions

    /// <summary><paramref name="x"/> raised to <paramref name="y"/>.</summary>
    /// <param name="x">The base.</param>
    /// <param name="y">The exponent.</param>
    public static BFloat16 Pow(BFloat16 x, BFloat16 y) => (BFloat16)MathF.Pow(x.AsSingle(), y.AsSingle());

    /// <summary>The cube root.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Cbrt(BFloat16 x) => (BFloat16)MathF.Cbrt(x.AsSingle());

    /// <summary><c>sqrt(x^2 + y^2)</c> without undue overflow.</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 Hypot(BFloat16 x, BFloat16 y) => (BFloat16)float.Hypot(x.AsSingle(), y.AsSingle());

    /// <summary>The <paramref name="n"/>-th root.</summary>
    /// <param name="x">The value.</param>
    /// <param name="n">The degree of the root.</param>
    public static BFloat16 RootN(BFloat16 x, int n) => (BFloat16)float.RootN(x.AsSingle(), n);

    /// <summary>The square root (correctly rounded).</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Sqrt(BFloat16 x) => (BFloat16)MathF.Sqrt(x.AsSingle());

    // ------------------------------------------------------------------ IHyperbolicFunctions

    /// <summary>The hyperbolic arc-cosine.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Acosh(BFloat16 x) => (BFloat16)MathF.Acosh(x.AsSingle());

    /// <summary>The hyperbolic arc-sine.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Asinh(BFloat16 x) => (BFloat16)MathF.Asinh(x.AsSingle());

    /// <summary>The hyperbolic arc-tangent.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Atanh(BFloat16 x) => (BFloat16)MathF.Atanh(x.AsSingle());

    /// <summary>The hyperbolic cosine.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Cosh(BFloat16 x) => (BFloat16)MathF.Cosh(x.AsSingle());

    /// <summary>The hyperbolic sine.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Sinh(BFloat16 x) => (BFloat16)MathF.Sinh(x.AsSingle());

    /// <summary>The hyperbolic tangent.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Tanh(BFloat16 x) => (BFloat16)MathF.Tanh(x.AsSingle());

    // ------------------------------------------------------------------ ITrigonometricFunctions

    /// <summary>The arc-cosine, in radians.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Acos(BFloat16 x) => (BFloat16)MathF.Acos(x.AsSingle());

    /// <summary>The arc-cosine divided by pi.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 AcosPi(BFloat16 x) => (BFloat16)float.AcosPi(x.AsSingle());

    /// <summary>The arc-sine, in radians.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Asin(BFloat16 x) => (BFloat16)MathF.Asin(x.AsSingle());

    /// <summary>The arc-sine divided by pi.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 AsinPi(BFloat16 x) => (BFloat16)float.AsinPi(x.AsSingle());

    /// <summary>The arc-tangent, in radians.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Atan(BFloat16 x) => (BFloat16)MathF.Atan(x.AsSingle());

    /// <summary>The arc-tangent divided by pi.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 AtanPi(BFloat16 x) => (BFloat16)float.AtanPi(x.AsSingle());

    /// <summary>The cosine of an angle in radians.</summary>
    /// <param name="x">The angle.</param>
    public static BFloat16 Cos(BFloat16 x) => (BFloat16)MathF.Cos(x.AsSingle());

    /// <summary>The cosine of <c>x * pi</c>.</summary>
    /// <param name="x">The angle in half-turns.</param>
    public static BFloat16 CosPi(BFloat16 x) => (BFloat16)float.CosPi(x.AsSingle());

    /// <summary>The sine of an angle in radians.</summary>
    /// <param name="x">The angle.</param>
    public static BFloat16 Sin(BFloat16 x) => (BFloat16)MathF.Sin(x.AsSingle());

    /// <summary>The sine of <c>x * pi</c>.</summary>
    /// <param name="x">The angle in half-turns.</param>
    public static BFloat16 SinPi(BFloat16 x) => (BFloat16)float.SinPi(x.AsSingle());

    /// <summary>The tangent of an angle in radians.</summary>
    /// <param name="x">The angle.</param>
    public static BFloat16 Tan(BFloat16 x) => (BFloat16)MathF.Tan(x.AsSingle());

    /// <summary>The tangent of <c>x * pi</c>.</summary>
    /// <param name="x">The angle in half-turns.</param>
    public static BFloat16 TanPi(BFloat16 x) => (BFloat16)float.TanPi(x.AsSingle());

    /// <summary>The sine and cosine of an angle in radians.</summary>
    /// <param name="x">The angle.</param>
    public static (BFloat16 Sin, BFloat16 Cos) SinCos(BFloat16 x)
    {
        (float sin, float cos) = MathF.SinCos(x.AsSingle());
        return ((BFloat16)sin, (BFloat16)cos);
    }

    /// <summary>The sine and cosine of <c>x * pi</c>.</summary>
    /// <param name="x">The angle in half-turns.</param>
    public static (BFloat16 SinPi, BFloat16 CosPi) SinCosPi(BFloat16 x)
    {
        (float sin, float cos) = float.SinCosPi(x.AsSingle());
        return ((BFloat16)sin, (BFloat16)cos);
    }

    /// <summary>Converts degrees to radians.</summary>
    /// <param name="degrees">The angle in degrees.</param>
    public static BFloat16 DegreesToRadians(BFloat16 degrees) => (BFloat16)float.DegreesToRadians(degrees.AsSingle());

    /// <summary>Converts radians to degrees.</summary>
    /// <param name="radians">The angle in radians.</param>
    public static BFloat16 RadiansToDegrees(BFloat16 radians) => (BFloat16)float.RadiansToDegrees(radians.AsSingle());
}

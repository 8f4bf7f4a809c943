using System.Numerics;

namespace Engine;

// Generic-math members (INumber, IFloatingPointIeee754, the function interfaces, IBinaryNumber ...).
// Functions compute in float (bfloat16 -> float is exact) and round the result to bfloat16 once.
public readonly partial struct BFloat16
{
    // ------------------------------------------------------------------ INumberBase / INumber / ISignedNumber

    static int INumberBase<BFloat16>.Radix => 2;

    static BFloat16 IBinaryNumber<BFloat16>.AllBitsSet => new(0xFFFF);

    static bool INumberBase<BFloat16>.IsCanonical(BFloat16 value) => true;

    static bool INumberBase<BFloat16>.IsComplexNumber(BFloat16 value) => false;

    static bool INumberBase<BFloat16>.IsImaginaryNumber(BFloat16 value) => false;

    /// <summary>The absolute value (clears the sign bit, also for NaN).</summary>
    /// <param name="value">The value.</param>
    public static BFloat16 Abs(BFloat16 value) => new((ushort)(value._bits & MagnitudeMask));

    /// <summary>Clamps <paramref name="value"/> to [<paramref name="min"/>, <paramref name="max"/>] (NaN propagates).</summary>
    /// <param name="value">The value.</param>
    /// <param name="min">The inclusive lower bound.</param>
    /// <param name="max">The inclusive upper bound.</param>
    /// <exception cref="ArgumentException"><paramref name="min"/> is greater than <paramref name="max"/>.</exception>
    public static BFloat16 Clamp(BFloat16 value, BFloat16 min, BFloat16 max)
    {
        if (min > max)
        {
            throw new ArgumentException($"'{min}' cannot be greater than {max}.", nameof(min));
        }

        return Min(Max(value, min), max);
    }

    /// <summary>Clamps using the platform's native min/max behaviour (here identical to <see cref="Clamp"/> without the argument check).</summary>
    /// <param name="value">The value.</param>
    /// <param name="min">The inclusive lower bound.</param>
    /// <param name="max">The inclusive upper bound.</param>
    public static BFloat16 ClampNative(BFloat16 value, BFloat16 min, BFloat16 max) => MinNative(MaxNative(value, min), max);

    /// <summary>Returns <paramref name="value"/> with the sign of <paramref name="sign"/>.</summary>
    /// <param name="value">The magnitude source.</param>
    /// <param name="sign">The sign source.</param>
    public static BFloat16 CopySign(BFloat16 value, BFloat16 sign) =>
        new((ushort)((value._bits & MagnitudeMask) | (sign._bits & SignMask)));

    /// <summary>IEEE maximum: NaN propagates; +0 is greater than -0.</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 Max(BFloat16 x, BFloat16 y)
    {
        if (x != y)
        {
            return IsNaN(x) ? x : (y < x ? x : y);
        }

        return IsNegative(y) ? x : y;
    }

    /// <summary>IEEE minimum: NaN propagates; -0 is less than +0.</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 Min(BFloat16 x, BFloat16 y)
    {
        if (x != y)
        {
            return IsNaN(x) ? x : (x < y ? x : y);
        }

        return IsNegative(x) ? x : y;
    }

    /// <summary>Maximum preferring numbers: a NaN operand is ignored in favour of the other.</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 MaxNumber(BFloat16 x, BFloat16 y)
    {
        if (x != y)
        {
            return IsNaN(y) ? x : (y < x ? x : y);
        }

        return IsNegative(y) ? x : y;
    }

    /// <summary>Minimum preferring numbers: a NaN operand is ignored in favour of the other.</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 MinNumber(BFloat16 x, BFloat16 y)
    {
        if (x != y)
        {
            return IsNaN(y) ? x : (x < y ? x : y);
        }

        return IsNegative(x) ? x : y;
    }

    /// <summary>Maximum with platform-native NaN/zero handling (<c>x &gt; y ? x : y</c>).</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 MaxNative(BFloat16 x, BFloat16 y) => x > y ? x : y;

    /// <summary>Minimum with platform-native NaN/zero handling (<c>x &lt; y ? x : y</c>).</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 MinNative(BFloat16 x, BFloat16 y) => x < y ? x : y;

    /// <summary>The operand with the larger magnitude (NaN propagates; ties prefer the positive one).</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 MaxMagnitude(BFloat16 x, BFloat16 y)
    {
        BFloat16 ax = Abs(x);
        BFloat16 ay = Abs(y);
        if (ax > ay || IsNaN(ax))
        {
            return x;
        }

        if (ax == ay)
        {
            return IsNegative(x) ? y : x;
        }

        return y;
    }

    /// <summary>The operand with the larger magnitude, ignoring a NaN operand.</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 MaxMagnitudeNumber(BFloat16 x, BFloat16 y)
    {
        BFloat16 ax = Abs(x);
        BFloat16 ay = Abs(y);
        if (ax > ay || IsNaN(ay))
        {
            return x;
        }

        if (ax == ay)
        {
            return IsNegative(x) ? y : x;
        }

        return y;
    }

    /// <summary>The operand with the smaller magnitude (NaN propagates; ties prefer the negative one).</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 MinMagnitude(BFloat16 x, BFloat16 y)
    {
        BFloat16 ax = Abs(x);
        BFloat16 ay = Abs(y);
        if (ax < ay || IsNaN(ax))
        {
            return x;
        }

        if (ax == ay)
        {
            return IsNegative(x) ? x : y;
        }

        return y;
    }

    /// <summary>The operand with the smaller magnitude, ignoring a NaN operand.</summary>
    /// <param name="x">The first value.</param>
    /// <param name="y">The second value.</param>
    public static BFloat16 MinMagnitudeNumber(BFloat16 x, BFloat16 y)
    {
        BFloat16 ax = Abs(x);
        BFloat16 ay = Abs(y);
        if (ax < ay || IsNaN(ay))
        {
            return x;
        }

        if (ax == ay)
        {
            return IsNegative(x) ? x : y;
        }

        return y;
    }

    /// <summary>The sign: -1, 0 or +1.</summary>
    /// <param name="value">The value.</param>
    /// <exception cref="ArithmeticException"><paramref name="value"/> is NaN.</exception>
    public static int Sign(BFloat16 value) => MathF.Sign(value.AsSingle());

    /// <summary>Computes <c>(left * right) + addend</c> in float and rounds once (an estimate; may not be fused).</summary>
    /// <param name="left">The first factor.</param>
    /// <param name="right">The second factor.</param>
    /// <param name="addend">The addend.</param>
    public static BFloat16 MultiplyAddEstimate(BFloat16 left, BFloat16 right, BFloat16 addend) =>
        (BFloat16)((left.AsSingle() * right.AsSingle()) + addend.AsSingle());

    // ------------------------------------------------------------------ IFloatingPoint (rounding, exponent/significand access)

    /// <summary>Rounds toward positive infinity.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Ceiling(BFloat16 x) => (BFloat16)MathF.Ceiling(x.AsSingle());

    /// <summary>Rounds toward negative infinity.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Floor(BFloat16 x) => (BFloat16)MathF.Floor(x.AsSingle());

    /// <summary>Rounds to the nearest integer, ties to even.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Round(BFloat16 x) => (BFloat16)MathF.Round(x.AsSingle());

    /// <summary>Rounds to <paramref name="digits"/> fractional decimal digits, ties to even.</summary>
    /// <param name="x">The value.</param>
    /// <param name="digits">The number of fractional digits.</param>
    public static BFloat16 Round(BFloat16 x, int digits) => (BFloat16)MathF.Round(x.AsSingle(), digits);

    /// <summary>Rounds to an integer using <paramref name="mode"/>.</summary>
    /// <param name="x">The value.</param>
    /// <param name="mode">The rounding mode.</param>
    public static BFloat16 Round(BFloat16 x, MidpointRounding mode) => (BFloat16)MathF.Round(x.AsSingle(), mode);

    /// <summary>Rounds to <paramref name="digits"/> fractional decimal digits using <paramref name="mode"/>.</summary>
    /// <param name="x">The value.</param>
    /// <param name="digits">The number of fractional digits.</param>
    /// <param name="mode">The rounding mode.</param>
    public static BFloat16 Round(BFloat16 x, int digits, MidpointRounding mode) => (BFloat16)MathF.Round(x.AsSingle(), digits, mode);

    /// <summary>Rounds toward zero.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 Truncate(BFloat16 x) => (BFloat16)MathF.Truncate(x.AsSingle());

    private sbyte Exponent => (sbyte)(((_bits & ExponentMask) >> 7) - ExponentBias);

    private byte Significand
    {
        get
        {
            int trailing = _bits & TrailingSignificandMask;
            return (byte)((_bits & ExponentMask) != 0 ? trailing | 0x80 : trailing);
        }
    }

    int IFloatingPoint<BFloat16>.GetExponentByteCount() => sizeof(sbyte);

    int IFloatingPoint<BFloat16>.GetExponentShortestBitLength()
    {
        sbyte exponent = Exponent;
        return exponent >= 0
            ? (sizeof(sbyte) * 8) - sbyte.LeadingZeroCount(exponent)
            : (sizeof(sbyte) * 8) + 1 - sbyte.LeadingZeroCount((sbyte)~exponent);
    }

    int IFloatingPoint<BFloat16>.GetSignificandByteCount() => sizeof(byte);

    int IFloatingPoint<BFloat16>.GetSignificandBitLength() => 8;

    bool IFloatingPoint<BFloat16>.TryWriteExponentBigEndian(Span<byte> destination, out int bytesWritten) => TryWriteByte(destination, (byte)Exponent, out bytesWritten);

    bool IFloatingPoint<BFloat16>.TryWriteExponentLittleEndian(Span<byte> destination, out int bytesWritten) => TryWriteByte(destination, (byte)Exponent, out bytesWritten);

    bool IFloatingPoint<BFloat16>.TryWriteSignificandBigEndian(Span<byte> destination, out int bytesWritten) => TryWriteByte(destination, Significand, out bytesWritten);

    bool IFloatingPoint<BFloat16>.TryWriteSignificandLittleEndian(Span<byte> destination, out int bytesWritten) => TryWriteByte(destination, Significand, out bytesWritten);

    private static bool TryWriteByte(Span<byte> destination, byte value, out int bytesWritten)
    {
        if (destination.IsEmpty)
        {
            bytesWritten = 0;
            return false;
        }

        destination[0] = value;
        bytesWritten = 1;
        return true;
    }

    // ------------------------------------------------------------------ IFloatingPointIeee754

    /// <summary>The four-quadrant arctangent of <paramref name="y"/>/<paramref name="x"/>.</summary>
    /// <param name="y">The y coordinate.</param>
    /// <param name="x">The x coordinate.</param>
    public static BFloat16 Atan2(BFloat16 y, BFloat16 x) => (BFloat16)MathF.Atan2(y.AsSingle(), x.AsSingle());

    /// <summary>The four-quadrant arctangent of <paramref name="y"/>/<paramref name="x"/> divided by pi.</summary>
    /// <param name="y">The y coordinate.</param>
    /// <param name="x">The x coordinate.</param>
    public static BFloat16 Atan2Pi(BFloat16 y, BFloat16 x) => (BFloat16)float.Atan2Pi(y.AsSingle(), x.AsSingle());

    /// <summary>The next representable value toward negative infinity.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 BitDecrement(BFloat16 x)
    {
        ushort bits = x._bits;
        if ((bits & ExponentMask) >= ExponentMask)
        {
            // NaN returns NaN; -Inf returns -Inf; +Inf returns MaxValue.
            return bits == PositiveInfinityBits ? MaxValue : x;
        }

        if (bits == 0)
        {
            return -Epsilon; // +0 -> -Epsilon
        }

        // Negative values grow in magnitude; positive ones shrink.
        return new((ushort)((short)bits < 0 ? bits + 1 : bits - 1));
    }

    /// <summary>The next representable value toward positive infinity.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 BitIncrement(BFloat16 x)
    {
        ushort bits = x._bits;
        if ((bits & ExponentMask) >= ExponentMask)
        {
            // NaN returns NaN; +Inf returns +Inf; -Inf returns MinValue.
            return bits == NegativeInfinityBits ? MinValue : x;
        }

        if (bits == SignMask)
        {
            return Epsilon; // -0 -> +Epsilon
        }

        return new((ushort)((short)bits < 0 ? bits - 1 : bits + 1));
    }

    /// <summary>Computes <c>(left * right) + addend</c> with a single rounding to bfloat16.</summary>
    /// <param name="left">The first factor.</param>
    /// <param name="right">The second factor.</param>
    /// <param name="addend">The addend.</param>
    public static BFloat16 FusedMultiplyAdd(BFloat16 left, BFloat16 right, BFloat16 addend)
    {
        // The 16-bit product is exact in double; the sum is rounded to double with round-to-odd
        // (sticky last bit from the exact TwoSum error), which makes the final rounding to 8 bits correct.
        double p = (double)left.AsSingle() * right.AsSingle();
        double c = addend.AsSingle();
        double s = p + c;
        if (double.IsFinite(s))
        {
            double bp = s - c;
            double err = (p - bp) + (c - (s - bp));
            ulong bits = BitConverter.DoubleToUInt64Bits(s);
            if (err != 0 && (bits & 1) == 0)
            {
                // Move one ulp toward the exact value: up in magnitude when err has the sign of s.
                s = BitConverter.UInt64BitsToDouble((err > 0) == (s > 0) ? bits + 1 : bits - 1);
            }
        }

        return (BFloat16)s;
    }

    /// <summary>The IEEE 754 remainder <c>left - right * round(left / right)</c> (exact).</summary>
    /// <param name="left">The dividend.</param>
    /// <param name="right">The divisor.</param>
    public static BFloat16 Ieee754Remainder(BFloat16 left, BFloat16 right) => (BFloat16)MathF.IEEERemainder(left.AsSingle(), right.AsSingle());

    /// <summary>The unbiased base-2 exponent (as <see cref="MathF.ILogB"/>).</summary>
    /// <param name="x">The value.</param>
    public static int ILogB(BFloat16 x) => MathF.ILogB(x.AsSingle());

    /// <summary>Linear interpolation <c>value1 + (value2 - value1) * amount</c>, computed in float and rounded once.</summary>
    /// <param name="value1">The start value.</param>
    /// <param name="value2">The end value.</param>
    /// <param name="amount">The interpolation weight.</param>
    public static BFloat16 Lerp(BFloat16 value1, BFloat16 value2, BFloat16 amount) =>
        (BFloat16)float.Lerp(value1.AsSingle(), value2.AsSingle(), amount.AsSingle());

    /// <summary>An estimate of <c>1 / x</c>.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 ReciprocalEstimate(BFloat16 x) => (BFloat16)(1.0f / x.AsSingle());

    /// <summary>An estimate of <c>1 / sqrt(x)</c>.</summary>
    /// <param name="x">The value.</param>
    public static BFloat16 ReciprocalSqrtEstimate(BFloat16 x) => (BFloat16)(1.0f / MathF.Sqrt(x.AsSingle()));

    /// <summary>Computes <c>x * 2^n</c> with a single rounding.</summary>
    /// <param name="x">The value.</param>
    /// <param name="n">The power of two.</param>
    public static BFloat16 ScaleB(BFloat16 x, int n) => (BFloat16)Math.ScaleB(x.AsSingle(), n);
}

using System.Numerics;
using System.Runtime.CompilerServices;

namespace Engine;

// Conversions to and from the primitive numeric types (operators and the generic-math Create/TryConvert members).
// Every conversion into bfloat16 rounds exactly once (to nearest, ties to even).
public readonly partial struct BFloat16
{
    /// <summary>Rounds an unsigned 64-bit magnitude to bfloat16 once.</summary>
    private static BFloat16 RoundMagnitude(ulong magnitude, bool negative)
    {
        if (magnitude == 0)
        {
            return Zero;
        }

        int msb = 63 - BitOperations.LeadingZeroCount(magnitude);
        ulong q;
        if (msb <= 7)
        {
            q = magnitude << (7 - msb);
        }
        else
        {
            int shift = msb - 7;
            q = magnitude >> shift;
            ulong rem = magnitude & ((1UL << shift) - 1);
            ulong half = 1UL << (shift - 1);
            if (rem > half || (rem == half && (q & 1) != 0))
            {
                q++;
            }
        }

        uint bits = ((uint)(msb + ExponentBias - 1) << 7) + (uint)q;
        return new((ushort)(bits | (negative ? SignMask : 0u)));
    }

    /// <summary>Rounds an unsigned 128-bit magnitude to bfloat16 once (overflows to infinity).</summary>
    private static BFloat16 RoundMagnitude(UInt128 magnitude, bool negative)
    {
        if ((magnitude >> 64) == UInt128.Zero)
        {
            return RoundMagnitude((ulong)magnitude, negative);
        }

        int msb = 127 - (int)UInt128.LeadingZeroCount(magnitude);
        int shift = msb - 7;
        ulong q = (ulong)(magnitude >> shift);
        UInt128 rem = magnitude & ((UInt128.One << shift) - UInt128.One);
        UInt128 half = UInt128.One << (shift - 1);
        if (rem > half || (rem == half && (q & 1) != 0))
        {
            q++;
        }

        uint bits = ((uint)(msb + ExponentBias - 1) << 7) + (uint)q; // msb 127 rounding up gives 0x7F80 = infinity
        return new((ushort)(bits | (negative ? SignMask : 0u)));
    }

    // ------------------------------------------------------------------ conversions into BFloat16

    /// <summary>Converts a float to bfloat16, rounding to nearest, ties to even; NaN stays NaN (quieted, sign kept).</summary>
    /// <param name="value">The value to convert.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static explicit operator BFloat16(float value) => new(RoundSingleBits(BitConverter.SingleToUInt32Bits(value)));

    /// <summary>Converts a double to bfloat16 with a single rounding (nearest, ties to even).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(double value) => new(RoundDoubleBits(value));

    /// <summary>Converts a <see cref="Half"/> to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(Half value) => (BFloat16)(float)value;

    /// <summary>Converts a decimal to bfloat16 (via <see cref="double"/>, as <see cref="Half"/> does).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(decimal value) => (BFloat16)(double)value;

    /// <summary>Converts a byte to bfloat16 (exact).</summary>
    /// <param name="value">The value to convert.</param>
    public static implicit operator BFloat16(byte value) => (BFloat16)(float)value;

    /// <summary>Converts a signed byte to bfloat16 (exact).</summary>
    /// <param name="value">The value to convert.</param>
    public static implicit operator BFloat16(sbyte value) => (BFloat16)(float)value;

    /// <summary>Converts a 16-bit integer to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(short value) => (BFloat16)(float)value;

    /// <summary>Converts an unsigned 16-bit integer to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(ushort value) => (BFloat16)(float)value;

    /// <summary>Converts a UTF-16 code unit to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(char value) => (BFloat16)(float)value;

    /// <summary>Converts a 32-bit integer to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(int value) => new(RoundDoubleBits(value));

    /// <summary>Converts an unsigned 32-bit integer to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(uint value) => new(RoundDoubleBits(value));

    /// <summary>Converts a 64-bit integer to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(long value) =>
        value < 0 ? RoundMagnitude(unchecked((ulong)-value), true) : RoundMagnitude((ulong)value, false);

    /// <summary>Converts an unsigned 64-bit integer to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(ulong value) => RoundMagnitude(value, false);

    /// <summary>Converts a native-sized integer to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(nint value) => (BFloat16)(long)value;

    /// <summary>Converts an unsigned native-sized integer to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(nuint value) => (BFloat16)(ulong)value;

    /// <summary>Converts a 128-bit integer to bfloat16, rounding once.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(Int128 value) =>
        Int128.IsNegative(value) ? RoundMagnitude(unchecked((UInt128)(-value)), true) : RoundMagnitude((UInt128)value, false);

    /// <summary>Converts an unsigned 128-bit integer to bfloat16, rounding once (large values become infinity).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator BFloat16(UInt128 value) => RoundMagnitude(value, false);

    // ------------------------------------------------------------------ conversions out of BFloat16

    /// <summary>Converts to float (exact).</summary>
    /// <param name="value">The value to convert.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static explicit operator float(BFloat16 value) => BitConverter.UInt32BitsToSingle((uint)value._bits << 16);

    /// <summary>Converts to double (exact).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator double(BFloat16 value) => value.AsSingle();

    /// <summary>Converts to <see cref="Half"/>, rounding once (to nearest, ties to even; out-of-range values become infinity).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator Half(BFloat16 value) => (Half)value.AsSingle();

    /// <summary>Converts to decimal (throws <see cref="OverflowException"/> for NaN, infinities and out-of-range values).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator decimal(BFloat16 value) => (decimal)value.AsSingle();

    /// <summary>Converts to byte as <see cref="Half"/> does: truncates toward zero to <see cref="int"/> (saturating, NaN gives 0), then keeps the low bits.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator byte(BFloat16 value) => (byte)value.AsSingle();

    /// <summary>Converts to byte, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked byte(BFloat16 value) => checked((byte)value.AsSingle());

    /// <summary>Converts to signed byte as <see cref="Half"/> does: truncates toward zero to <see cref="int"/> (saturating, NaN gives 0), then keeps the low bits.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator sbyte(BFloat16 value) => (sbyte)value.AsSingle();

    /// <summary>Converts to signed byte, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked sbyte(BFloat16 value) => checked((sbyte)value.AsSingle());

    /// <summary>Converts to a 16-bit integer as <see cref="Half"/> does: truncates toward zero to <see cref="int"/> (saturating, NaN gives 0), then keeps the low bits.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator short(BFloat16 value) => (short)value.AsSingle();

    /// <summary>Converts to a 16-bit integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked short(BFloat16 value) => checked((short)value.AsSingle());

    /// <summary>Converts to an unsigned 16-bit integer as <see cref="Half"/> does: truncates toward zero to <see cref="int"/> (saturating, NaN gives 0), then keeps the low bits.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator ushort(BFloat16 value) => (ushort)value.AsSingle();

    /// <summary>Converts to an unsigned 16-bit integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked ushort(BFloat16 value) => checked((ushort)value.AsSingle());

    /// <summary>Converts to a UTF-16 code unit as <see cref="Half"/> does: truncates toward zero to <see cref="int"/> (saturating, NaN gives 0), then keeps the low bits.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator char(BFloat16 value) => (char)value.AsSingle();

    /// <summary>Converts to a UTF-16 code unit, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked char(BFloat16 value) => checked((char)value.AsSingle());

    /// <summary>Converts to a 32-bit integer, truncating toward zero and saturating (NaN gives 0).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator int(BFloat16 value) => (int)value.AsSingle();

    /// <summary>Converts to a 32-bit integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked int(BFloat16 value) => checked((int)value.AsSingle());

    /// <summary>Converts to an unsigned 32-bit integer, truncating toward zero and saturating (NaN gives 0).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator uint(BFloat16 value) => (uint)value.AsSingle();

    /// <summary>Converts to an unsigned 32-bit integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked uint(BFloat16 value) => checked((uint)value.AsSingle());

    /// <summary>Converts to a 64-bit integer, truncating toward zero and saturating (NaN gives 0).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator long(BFloat16 value) => (long)value.AsSingle();

    /// <summary>Converts to a 64-bit integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked long(BFloat16 value) => checked((long)value.AsSingle());

    /// <summary>Converts to an unsigned 64-bit integer, truncating toward zero and saturating (NaN gives 0).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator ulong(BFloat16 value) => (ulong)value.AsSingle();

    /// <summary>Converts to an unsigned 64-bit integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked ulong(BFloat16 value) => checked((ulong)value.AsSingle());

    /// <summary>Converts to a native-sized integer, truncating toward zero and saturating (NaN gives 0).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator nint(BFloat16 value) => (nint)value.AsSingle();

    /// <summary>Converts to a native-sized integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked nint(BFloat16 value) => checked((nint)value.AsSingle());

    /// <summary>Converts to an unsigned native-sized integer, truncating toward zero and saturating (NaN gives 0).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator nuint(BFloat16 value) => (nuint)value.AsSingle();

    /// <summary>Converts to an unsigned native-sized integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked nuint(BFloat16 value) => checked((nuint)value.AsSingle());

    /// <summary>Converts to a 128-bit integer, truncating toward zero and saturating (NaN gives 0).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator Int128(BFloat16 value) => (Int128)value.AsSingle();

    /// <summary>Converts to a 128-bit integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked Int128(BFloat16 value) => checked((Int128)value.AsSingle());

    /// <summary>Converts to an unsigned 128-bit integer, truncating toward zero and saturating (NaN gives 0).</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator UInt128(BFloat16 value) => (UInt128)value.AsSingle();

    /// <summary>Converts to an unsigned 128-bit integer, throwing <see cref="OverflowException"/> when out of range or NaN.</summary>
    /// <param name="value">The value to convert.</param>
    public static explicit operator checked UInt128(BFloat16 value) => checked((UInt128)value.AsSingle());

    // ------------------------------------------------------------------ generic conversions

    /// <summary>Creates a bfloat16 from any number, throwing when the value cannot be represented.</summary>
    /// <typeparam name="TOther">The source type.</typeparam>
    /// <param name="value">The value.</param>
    /// <exception cref="NotSupportedException">The conversion is not supported.</exception>
    public static BFloat16 CreateChecked<TOther>(TOther value) where TOther : INumberBase<TOther>
    {
        if (typeof(TOther) == typeof(BFloat16))
        {
            return (BFloat16)(object)value;
        }

        if (!TryConvertFromCore(value, out BFloat16 result) && !TOther.TryConvertToChecked(value, out result))
        {
            throw new NotSupportedException($"Conversion from {typeof(TOther)} to BFloat16 is not supported.");
        }

        return result;
    }

    /// <summary>Creates a bfloat16 from any number, saturating out-of-range values.</summary>
    /// <typeparam name="TOther">The source type.</typeparam>
    /// <param name="value">The value.</param>
    /// <exception cref="NotSupportedException">The conversion is not supported.</exception>
    public static BFloat16 CreateSaturating<TOther>(TOther value) where TOther : INumberBase<TOther>
    {
        if (typeof(TOther) == typeof(BFloat16))
        {
            return (BFloat16)(object)value;
        }

        if (!TryConvertFromCore(value, out BFloat16 result) && !TOther.TryConvertToSaturating(value, out result))
        {
            throw new NotSupportedException($"Conversion from {typeof(TOther)} to BFloat16 is not supported.");
        }

        return result;
    }

    /// <summary>Creates a bfloat16 from any number, truncating out-of-range values.</summary>
    /// <typeparam name="TOther">The source type.</typeparam>
    /// <param name="value">The value.</param>
    /// <exception cref="NotSupportedException">The conversion is not supported.</exception>
    public static BFloat16 CreateTruncating<TOther>(TOther value) where TOther : INumberBase<TOther>
    {
        if (typeof(TOther) == typeof(BFloat16))
        {
            return (BFloat16)(object)value;
        }

        if (!TryConvertFromCore(value, out BFloat16 result) && !TOther.TryConvertToTruncating(value, out result))
        {
            throw new NotSupportedException($"Conversion from {typeof(TOther)} to BFloat16 is not supported.");
        }

        return result;
    }

    static bool INumberBase<BFloat16>.TryConvertFromChecked<TOther>(TOther value, out BFloat16 result) => TryConvertFromCore(value, out result);

    static bool INumberBase<BFloat16>.TryConvertFromSaturating<TOther>(TOther value, out BFloat16 result) => TryConvertFromCore(value, out result);

    static bool INumberBase<BFloat16>.TryConvertFromTruncating<TOther>(TOther value, out BFloat16 result) => TryConvertFromCore(value, out result);

    // Floating-point targets never throw: out-of-range values become infinity.
    private static bool TryConvertFromCore<TOther>(TOther value, out BFloat16 result) where TOther : INumberBase<TOther>
    {
        if (typeof(TOther) == typeof(float)) { result = (BFloat16)(float)(object)value; return true; }
        if (typeof(TOther) == typeof(double)) { result = (BFloat16)(double)(object)value; return true; }
        if (typeof(TOther) == typeof(Half)) { result = (BFloat16)(Half)(object)value; return true; }
        if (typeof(TOther) == typeof(decimal)) { result = (BFloat16)(decimal)(object)value; return true; }
        if (typeof(TOther) == typeof(byte)) { result = (byte)(object)value; return true; }
        if (typeof(TOther) == typeof(sbyte)) { result = (sbyte)(object)value; return true; }
        if (typeof(TOther) == typeof(short)) { result = (BFloat16)(short)(object)value; return true; }
        if (typeof(TOther) == typeof(ushort)) { result = (BFloat16)(ushort)(object)value; return true; }
        if (typeof(TOther) == typeof(char)) { result = (BFloat16)(char)(object)value; return true; }
        if (typeof(TOther) == typeof(int)) { result = (BFloat16)(int)(object)value; return true; }
        if (typeof(TOther) == typeof(uint)) { result = (BFloat16)(uint)(object)value; return true; }
        if (typeof(TOther) == typeof(long)) { result = (BFloat16)(long)(object)value; return true; }
        if (typeof(TOther) == typeof(ulong)) { result = (BFloat16)(ulong)(object)value; return true; }
        if (typeof(TOther) == typeof(nint)) { result = (BFloat16)(nint)(object)value; return true; }
        if (typeof(TOther) == typeof(nuint)) { result = (BFloat16)(nuint)(object)value; return true; }
        if (typeof(TOther) == typeof(Int128)) { result = (BFloat16)(Int128)(object)value; return true; }
        if (typeof(TOther) == typeof(UInt128)) { result = (BFloat16)(UInt128)(object)value; return true; }

        result = default;
        return false;
    }

    static bool INumberBase<BFloat16>.TryConvertToChecked<TOther>(BFloat16 value, out TOther result)
    {
        object? boxed;
        if (typeof(TOther) == typeof(byte)) boxed = checked((byte)value);
        else if (typeof(TOther) == typeof(sbyte)) boxed = checked((sbyte)value);
        else if (typeof(TOther) == typeof(short)) boxed = checked((short)value);
        else if (typeof(TOther) == typeof(ushort)) boxed = checked((ushort)value);
        else if (typeof(TOther) == typeof(char)) boxed = checked((char)value);
        else if (typeof(TOther) == typeof(int)) boxed = checked((int)value);
        else if (typeof(TOther) == typeof(uint)) boxed = checked((uint)value);
        else if (typeof(TOther) == typeof(long)) boxed = checked((long)value);
        else if (typeof(TOther) == typeof(ulong)) boxed = checked((ulong)value);
        else if (typeof(TOther) == typeof(nint)) boxed = checked((nint)value);
        else if (typeof(TOther) == typeof(nuint)) boxed = checked((nuint)value);
        else if (typeof(TOther) == typeof(Int128)) boxed = checked((Int128)value);
        else if (typeof(TOther) == typeof(UInt128)) boxed = checked((UInt128)value);
        else if (typeof(TOther) == typeof(decimal)) boxed = (decimal)value;
        else return TryConvertToFloating(value, out result);

        result = (TOther)boxed;
        return true;
    }

    static bool INumberBase<BFloat16>.TryConvertToSaturating<TOther>(BFloat16 value, out TOther result) => TryConvertToSaturatingCore(value, out result);

    static bool INumberBase<BFloat16>.TryConvertToTruncating<TOther>(BFloat16 value, out TOther result) => TryConvertToSaturatingCore(value, out result);

    // Saturating and truncating conversions both saturate (NaN gives 0), as Half's do. Float-to-int/long/Int128 casts
    // saturate natively in .NET 9+; the explicit operators to the narrower types wrap (like Half's), so clamp those.
    private static bool TryConvertToSaturatingCore<TOther>(BFloat16 value, out TOther result) where TOther : INumberBase<TOther>
    {
        object? boxed;
        if (typeof(TOther) == typeof(byte)) boxed = (byte)Math.Clamp((int)value, byte.MinValue, byte.MaxValue);
        else if (typeof(TOther) == typeof(sbyte)) boxed = (sbyte)Math.Clamp((int)value, sbyte.MinValue, sbyte.MaxValue);
        else if (typeof(TOther) == typeof(short)) boxed = (short)Math.Clamp((int)value, short.MinValue, short.MaxValue);
        else if (typeof(TOther) == typeof(ushort)) boxed = (ushort)Math.Clamp((int)value, ushort.MinValue, ushort.MaxValue);
        else if (typeof(TOther) == typeof(char)) boxed = (char)Math.Clamp((int)value, char.MinValue, char.MaxValue);
        else if (typeof(TOther) == typeof(int)) boxed = (int)value;
        else if (typeof(TOther) == typeof(uint)) boxed = (uint)value;
        else if (typeof(TOther) == typeof(long)) boxed = (long)value;
        else if (typeof(TOther) == typeof(ulong)) boxed = (ulong)value;
        else if (typeof(TOther) == typeof(nint)) boxed = (nint)value;
        else if (typeof(TOther) == typeof(nuint)) boxed = (nuint)value;
        else if (typeof(TOther) == typeof(Int128)) boxed = (Int128)value;
        else if (typeof(TOther) == typeof(UInt128)) boxed = (UInt128)value;
        else if (typeof(TOther) == typeof(decimal))
        {
            float f = value.AsSingle();
            boxed = float.IsNaN(f) ? 0m
                : f >= 79228162514264337593543950335.0f ? decimal.MaxValue
                : f <= -79228162514264337593543950335.0f ? decimal.MinValue
                : (decimal)f;
        }
        else return TryConvertToFloating(value, out result);

        result = (TOther)boxed;
        return true;
    }

    private static bool TryConvertToFloating<TOther>(BFloat16 value, out TOther result) where TOther : INumberBase<TOther>
    {
        if (typeof(TOther) == typeof(float)) { result = (TOther)(object)value.AsSingle(); return true; }
        if (typeof(TOther) == typeof(double)) { result = (TOther)(object)(double)value; return true; }
        if (typeof(TOther) == typeof(Half)) { result = (TOther)(object)(Half)value; return true; }

        result = default!;
        return false;
    }

    /// <summary>Converts to an integer type, truncating toward zero and saturating (NaN gives 0).</summary>
    /// <typeparam name="TInteger">The integer type.</typeparam>
    /// <param name="value">The value.</param>
    public static TInteger ConvertToInteger<TInteger>(BFloat16 value) where TInteger : IBinaryInteger<TInteger> =>
        TInteger.CreateSaturating(value.AsSingle());

    /// <summary>Converts to an integer type with platform-specific overflow behaviour (here: saturating).</summary>
    /// <typeparam name="TInteger">The integer type.</typeparam>
    /// <param name="value">The value.</param>
    public static TInteger ConvertToIntegerNative<TInteger>(BFloat16 value) where TInteger : IBinaryInteger<TInteger> =>
        TInteger.CreateSaturating(value.AsSingle());
}

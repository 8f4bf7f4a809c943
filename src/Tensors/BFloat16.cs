using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Engine;

/// <summary>
/// The bfloat16 ("brain floating point") number: a 16-bit floating-point value with float32's
/// 8-bit exponent (same range) and a 7-bit trailing significand (8 significant bits).
/// Conversions into bfloat16 round to nearest, ties to even, exactly once; conversion to
/// <see cref="float"/> is exact. Arithmetic is carried out in <see cref="float"/> and rounded once.
/// </summary>
/// <remarks>
/// Bit layout: sign (1) | exponent (8, bias 127) | trailing significand (7): the upper half of the
/// corresponding float32. Behaviour mirrors <see cref="Half"/>: IEEE comparison operators (NaN unordered,
/// -0 == +0), while <see cref="Equals(BFloat16)"/> and <see cref="CompareTo(BFloat16)"/> treat all NaNs as equal
/// and sort NaN below every other value.
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
public readonly partial struct BFloat16
    : IBinaryFloatingPointIeee754<BFloat16>,
      IEquatable<BFloat16>,
      IComparable,
      IComparable<BFloat16>,
      ISpanFormattable,
      IUtf8SpanFormattable,
      ISpanParsable<BFloat16>,
      IUtf8SpanParsable<BFloat16>
{
    private const ushort SignMask = 0x8000;
    private const ushort MagnitudeMask = 0x7FFF;
    private const ushort ExponentMask = 0x7F80;
    private const ushort TrailingSignificandMask = 0x007F;
    private const ushort QuietBit = 0x0040;
    private const ushort PositiveInfinityBits = 0x7F80;
    private const ushort NegativeInfinityBits = 0xFF80;
    private const ushort PositiveQNaNBits = 0x7FC0;
    private const ushort MaxValueBits = 0x7F7F;
    private const ushort MinValueBits = 0xFF7F;
    private const ushort EpsilonBits = 0x0001;
    private const ushort OneBits = 0x3F80;
    private const ushort NegativeOneBits = 0xBF80;
    private const ushort EBits = 0x402E;   // e   = 2.71875 after rounding
    private const ushort PiBits = 0x4049;  // pi  = 3.140625 after rounding
    private const ushort TauBits = 0x40C9; // tau = 6.28125 after rounding
    private const int ExponentBias = 127;

    private readonly ushort _bits;

    private BFloat16(ushort bits) => _bits = bits;

    /// <summary>Reinterprets 16 raw bits as a bfloat16 value (no conversion).</summary>
    /// <param name="bits">The raw IEEE-style bit pattern.</param>
    /// <returns>The bfloat16 value with exactly these bits.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static BFloat16 FromBits(ushort bits) => new(bits);

    /// <summary>The raw 16-bit pattern of this value.</summary>
    public ushort Bits
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _bits;
    }

    // ------------------------------------------------------------------ constants

    /// <summary>The smallest positive value, a subnormal (bits 0x0001, 2^-133).</summary>
    public static BFloat16 Epsilon => new(EpsilonBits);

    /// <summary>Positive infinity (bits 0x7F80).</summary>
    public static BFloat16 PositiveInfinity => new(PositiveInfinityBits);

    /// <summary>Negative infinity (bits 0xFF80).</summary>
    public static BFloat16 NegativeInfinity => new(NegativeInfinityBits);

    /// <summary>A quiet not-a-number (bits 0x7FC0).</summary>
    public static BFloat16 NaN => new(PositiveQNaNBits);

    /// <summary>The smallest finite value, -MaxValue (bits 0xFF7F).</summary>
    public static BFloat16 MinValue => new(MinValueBits);

    /// <summary>The largest finite value, (2 - 2^-7) * 2^127 (bits 0x7F7F).</summary>
    public static BFloat16 MaxValue => new(MaxValueBits);

    /// <summary>Positive zero.</summary>
    public static BFloat16 Zero => new(0);

    /// <summary>Negative zero (bits 0x8000).</summary>
    public static BFloat16 NegativeZero => new(SignMask);

    /// <summary>One.</summary>
    public static BFloat16 One => new(OneBits);

    /// <summary>Minus one.</summary>
    public static BFloat16 NegativeOne => new(NegativeOneBits);

    /// <summary>Euler's number e rounded to bfloat16 (2.71875).</summary>
    public static BFloat16 E => new(EBits);

    /// <summary>Pi rounded to bfloat16 (3.140625).</summary>
    public static BFloat16 Pi => new(PiBits);

    /// <summary>Tau (2 pi) rounded to bfloat16 (6.28125).</summary>
    public static BFloat16 Tau => new(TauBits);

    /// <summary>The additive identity (zero).</summary>
    public static BFloat16 AdditiveIdentity => new(0);

    /// <summary>The multiplicative identity (one).</summary>
    public static BFloat16 MultiplicativeIdentity => new(OneBits);

    // ------------------------------------------------------------------ core float <-> bf16

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private float AsSingle() => BitConverter.UInt32BitsToSingle((uint)_bits << 16);

    /// <summary>Rounds a float's bit pattern to bfloat16 bits: nearest, ties to even; NaN is quieted keeping sign and top payload bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort RoundSingleBits(uint bits)
    {
        uint rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
        uint quiet = (bits >> 16) | QuietBit;
        return (ushort)((bits & 0x7FFF_FFFFu) > 0x7F80_0000u ? quiet : rounded);
    }

    /// <summary>Rounds a double directly to bfloat16 bits (a single rounding, nearest, ties to even).</summary>
    internal static ushort RoundDoubleBits(double value)
    {
        ulong bits = BitConverter.DoubleToUInt64Bits(value);
        uint sign = (uint)(bits >> 48) & SignMask;
        ulong abs = bits & 0x7FFF_FFFF_FFFF_FFFFUL;
        if (abs >= 0x7FF0_0000_0000_0000UL)
        {
            // Infinity, or NaN: quiet it and keep the sign and the top 7 payload bits (as double -> float does).
            return abs == 0x7FF0_0000_0000_0000UL
                ? (ushort)(sign | PositiveInfinityBits)
                : (ushort)(sign | PositiveQNaNBits | (uint)((abs >> 45) & TrailingSignificandMask));
        }

        int e = (int)(abs >> 52) - 1023; // unbiased exponent; double subnormals give -1023 and fall below the cut
        if (e >= 128)
        {
            return (ushort)(sign | PositiveInfinityBits);
        }

        if (e < -134)
        {
            return (ushort)sign; // |x| < 2^-134, half of the smallest subnormal: rounds to (signed) zero
        }

        ulong significand = (abs & 0x000F_FFFF_FFFF_FFFFUL) | (1UL << 52);
        // Normal results keep 8 significant bits (drop 45); subnormal results are multiples of 2^-133.
        int shift = e >= -126 ? 45 : 45 - 126 - e;
        uint exponentBase = e >= -126 ? (uint)(e + 126) << 7 : 0u;
        ulong q = significand >> shift;
        ulong rem = significand & ((1UL << shift) - 1);
        ulong half = 1UL << (shift - 1);
        if (rem > half || (rem == half && (q & 1) != 0))
        {
            q++;
        }

        // q includes the implicit bit (0x80) for normals, so exponentBase + q carries naturally into the
        // exponent, into the normal range from subnormals, and into infinity above MaxValue.
        return (ushort)(sign | (exponentBase + (uint)q));
    }

    // ------------------------------------------------------------------ arithmetic operators

    /// <summary>Adds two values, correctly rounded (the float result has more than 2*8+2 bits, so rounding it again to bfloat16 is innocuous).</summary>
    /// <param name="left">The first addend.</param>
    /// <param name="right">The second addend.</param>
    public static BFloat16 operator +(BFloat16 left, BFloat16 right) => (BFloat16)(left.AsSingle() + right.AsSingle());

    /// <summary>Subtracts two values, correctly rounded (the float result has more than 2*8+2 bits, so rounding it again to bfloat16 is innocuous).</summary>
    /// <param name="left">The minuend.</param>
    /// <param name="right">The subtrahend.</param>
    public static BFloat16 operator -(BFloat16 left, BFloat16 right) => (BFloat16)(left.AsSingle() - right.AsSingle());

    /// <summary>Multiplies two values, correctly rounded (the float result has more than 2*8+2 bits, so rounding it again to bfloat16 is innocuous).</summary>
    /// <param name="left">The first factor.</param>
    /// <param name="right">The second factor.</param>
    public static BFloat16 operator *(BFloat16 left, BFloat16 right) => (BFloat16)(left.AsSingle() * right.AsSingle());

    /// <summary>Divides two values, correctly rounded (the float result has more than 2*8+2 bits, so rounding it again to bfloat16 is innocuous).</summary>
    /// <param name="left">The dividend.</param>
    /// <param name="right">The divisor.</param>
    public static BFloat16 operator /(BFloat16 left, BFloat16 right) => (BFloat16)(left.AsSingle() / right.AsSingle());

    /// <summary>The truncated-division remainder (C# <c>%</c> semantics; exact).</summary>
    /// <param name="left">The dividend.</param>
    /// <param name="right">The divisor.</param>
    public static BFloat16 operator %(BFloat16 left, BFloat16 right) => (BFloat16)(left.AsSingle() % right.AsSingle());

    /// <summary>Returns the value unchanged.</summary>
    /// <param name="value">The operand.</param>
    public static BFloat16 operator +(BFloat16 value) => value;

    /// <summary>Negates the value (flips the sign bit, also for NaN and zero).</summary>
    /// <param name="value">The operand.</param>
    public static BFloat16 operator -(BFloat16 value) => new((ushort)(value._bits ^ SignMask));

    /// <summary>Adds one.</summary>
    /// <param name="value">The operand.</param>
    public static BFloat16 operator ++(BFloat16 value) => value + One;

    /// <summary>Subtracts one.</summary>
    /// <param name="value">The operand.</param>
    public static BFloat16 operator --(BFloat16 value) => value - One;

    /// <summary>Bitwise AND of the raw bit patterns.</summary>
    /// <param name="left">The first operand.</param>
    /// <param name="right">The second operand.</param>
    public static BFloat16 operator &(BFloat16 left, BFloat16 right) => new((ushort)(left._bits & right._bits));

    /// <summary>Bitwise OR of the raw bit patterns.</summary>
    /// <param name="left">The first operand.</param>
    /// <param name="right">The second operand.</param>
    public static BFloat16 operator |(BFloat16 left, BFloat16 right) => new((ushort)(left._bits | right._bits));

    /// <summary>Bitwise XOR of the raw bit patterns.</summary>
    /// <param name="left">The first operand.</param>
    /// <param name="right">The second operand.</param>
    public static BFloat16 operator ^(BFloat16 left, BFloat16 right) => new((ushort)(left._bits ^ right._bits));

    /// <summary>Bitwise complement of the raw bit pattern.</summary>
    /// <param name="value">The operand.</param>
    public static BFloat16 operator ~(BFloat16 value) => new((ushort)~value._bits);

    // ------------------------------------------------------------------ IEEE comparison operators

    /// <summary>IEEE equality: NaN is unequal to everything (itself included); -0 equals +0.</summary>
    /// <param name="left">The first operand.</param>
    /// <param name="right">The second operand.</param>
    public static bool operator ==(BFloat16 left, BFloat16 right) => left.AsSingle() == right.AsSingle();

    /// <summary>IEEE inequality: true when either operand is NaN.</summary>
    /// <param name="left">The first operand.</param>
    /// <param name="right">The second operand.</param>
    public static bool operator !=(BFloat16 left, BFloat16 right) => left.AsSingle() != right.AsSingle();

    /// <summary>IEEE less-than (false when either operand is NaN).</summary>
    /// <param name="left">The first operand.</param>
    /// <param name="right">The second operand.</param>
    public static bool operator <(BFloat16 left, BFloat16 right) => left.AsSingle() < right.AsSingle();

    /// <summary>IEEE less-than-or-equal (false when either operand is NaN).</summary>
    /// <param name="left">The first operand.</param>
    /// <param name="right">The second operand.</param>
    public static bool operator <=(BFloat16 left, BFloat16 right) => left.AsSingle() <= right.AsSingle();

    /// <summary>IEEE greater-than (false when either operand is NaN).</summary>
    /// <param name="left">The first operand.</param>
    /// <param name="right">The second operand.</param>
    public static bool operator >(BFloat16 left, BFloat16 right) => left.AsSingle() > right.AsSingle();

    /// <summary>IEEE greater-than-or-equal (false when either operand is NaN).</summary>
    /// <param name="left">The first operand.</param>
    /// <param name="right">The second operand.</param>
    public static bool operator >=(BFloat16 left, BFloat16 right) => left.AsSingle() >= right.AsSingle();

    // ------------------------------------------------------------------ equality, ordering, hashing

    /// <summary>Value equality as <see cref="Half.Equals(Half)"/>: NaN equals NaN and +0 equals -0.</summary>
    /// <param name="other">The value to compare with.</param>
    /// <returns>True when both are NaN or compare equal.</returns>
    public bool Equals(BFloat16 other) =>
        _bits == other._bits
        || ((_bits | other._bits) & MagnitudeMask) == 0
        || (IsNaN(this) && IsNaN(other));

    /// <summary>Value equality with a boxed <see cref="BFloat16"/> (see <see cref="Equals(BFloat16)"/>).</summary>
    /// <param name="obj">The object to compare with.</param>
    /// <returns>True when <paramref name="obj"/> is an equal bfloat16.</returns>
    public override bool Equals(object? obj) => obj is BFloat16 other && Equals(other);

    /// <summary>A hash consistent with <see cref="Equals(BFloat16)"/> (all NaNs hash alike, as do both zeros).</summary>
    /// <returns>The hash code.</returns>
    public override int GetHashCode()
    {
        int magnitude = _bits & MagnitudeMask;
        if (magnitude == 0)
        {
            return 0;
        }

        return magnitude > PositiveInfinityBits ? PositiveQNaNBits : _bits;
    }

    /// <summary>Total-ish ordering as <see cref="Half.CompareTo(Half)"/>: NaN sorts below everything and equals NaN; -0 equals +0.</summary>
    /// <param name="other">The value to compare with.</param>
    /// <returns>Negative, zero or positive.</returns>
    public int CompareTo(BFloat16 other)
    {
        float a = AsSingle();
        float b = other.AsSingle();
        if (a < b)
        {
            return -1;
        }

        if (a > b)
        {
            return 1;
        }

        if (a == b)
        {
            return 0;
        }

        // At least one is NaN.
        if (float.IsNaN(a))
        {
            return float.IsNaN(b) ? 0 : -1;
        }

        return 1;
    }

    /// <summary>Compares with a boxed <see cref="BFloat16"/>; null sorts first.</summary>
    /// <param name="obj">The object to compare with.</param>
    /// <returns>Negative, zero or positive.</returns>
    /// <exception cref="ArgumentException"><paramref name="obj"/> is not a <see cref="BFloat16"/>.</exception>
    public int CompareTo(object? obj)
    {
        if (obj is BFloat16 other)
        {
            return CompareTo(other);
        }

        if (obj is null)
        {
            return 1;
        }

        throw new ArgumentException("Object must be of type BFloat16.", nameof(obj));
    }

    // ------------------------------------------------------------------ classification

    /// <summary>True when the value is NaN.</summary>
    /// <param name="value">The value to test.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsNaN(BFloat16 value) => (value._bits & MagnitudeMask) > PositiveInfinityBits;

    /// <summary>True when the value is positive or negative infinity.</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsInfinity(BFloat16 value) => (value._bits & MagnitudeMask) == PositiveInfinityBits;

    /// <summary>True when the value is positive infinity.</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsPositiveInfinity(BFloat16 value) => value._bits == PositiveInfinityBits;

    /// <summary>True when the value is negative infinity.</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsNegativeInfinity(BFloat16 value) => value._bits == NegativeInfinityBits;

    /// <summary>True when the value is neither infinite nor NaN.</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsFinite(BFloat16 value) => (value._bits & MagnitudeMask) < PositiveInfinityBits;

    /// <summary>True when the sign bit is set (including -0 and negative NaNs).</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsNegative(BFloat16 value) => (short)value._bits < 0;

    /// <summary>True when the sign bit is clear (including +0 and positive NaNs).</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsPositive(BFloat16 value) => (short)value._bits >= 0;

    /// <summary>True when the value is a normal number (not zero, subnormal, infinite or NaN).</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsNormal(BFloat16 value)
    {
        uint exponent = (uint)(value._bits & ExponentMask);
        return exponent != 0 && exponent != ExponentMask;
    }

    /// <summary>True when the value is subnormal (zero exponent, nonzero significand).</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsSubnormal(BFloat16 value) =>
        (value._bits & ExponentMask) == 0 && (value._bits & TrailingSignificandMask) != 0;

    /// <summary>True when the value is +0 or -0.</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsZero(BFloat16 value) => (value._bits & MagnitudeMask) == 0;

    /// <summary>True when the value is not NaN.</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsRealNumber(BFloat16 value) => !IsNaN(value);

    /// <summary>True when the value is a finite integer.</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsInteger(BFloat16 value) => float.IsInteger(value.AsSingle());

    /// <summary>True when the value is an even integer.</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsEvenInteger(BFloat16 value) => float.IsEvenInteger(value.AsSingle());

    /// <summary>True when the value is an odd integer.</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsOddInteger(BFloat16 value) => float.IsOddInteger(value.AsSingle());

    /// <summary>True when the value is a positive power of two (subnormal powers included).</summary>
    /// <param name="value">The value to test.</param>
    public static bool IsPow2(BFloat16 value) => float.IsPow2(value.AsSingle());
}

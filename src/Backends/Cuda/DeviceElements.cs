using System.Runtime.CompilerServices;
using ILGPU;

namespace Engine.Backends.Cuda;

/// <summary>
/// The dtype codes kernels receive as plain ints (the values of <see cref="DType"/>), and the loads and stores every
/// kernel shares. Storages are byte views; an element is read through a typed cast of the view. Float16 and BFloat16
/// are 16-bit words converted here with integer bit tricks, because kernels cannot call the managed conversions:
/// each reproduces .NET's (and <see cref="BFloat16"/>'s) result bit for bit, NaN payloads included.
/// Compute types follow the CPU backend: Float32 and the half types compute in float32 ("narrow"); Float64, the
/// integer types and Bool compute in float64 ("wide").
/// </summary>
static class DeviceElements
{
    public const int F64 = (int)DType.Float64, F32 = (int)DType.Float32, F16 = (int)DType.Float16, BF16 = (int)DType.BFloat16,
        I32 = (int)DType.Int32, I64 = (int)DType.Int64, B8 = (int)DType.Bool;

    /// <summary>True when the type computes in float64 (as the CPU backend's IElement.Wide).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsWide(int t) => t == F64 || t == I32 || t == I64 || t == B8;

    /// <summary>Element <paramref name="i"/> widened to float32 (exact for the narrow types).</summary>
    public static float LoadFloat(ArrayView<byte> v, int t, long i)
    {
        if (t == F32) return v.Cast<float>()[i];
        if (t == BF16) return Bf16ToFloat(v.Cast<ushort>()[i]);
        if (t == F16) return HalfToFloat(v.Cast<ushort>()[i]);
        return (float)LoadDouble(v, t, i);
    }

    /// <summary>Element <paramref name="i"/> as float64 (exact for every type but Int64 beyond 2^53, as the CPU's).</summary>
    public static double LoadDouble(ArrayView<byte> v, int t, long i)
    {
        if (t == F64) return v.Cast<double>()[i];
        if (t == F32) return v.Cast<float>()[i];
        if (t == I32) return v.Cast<int>()[i];
        if (t == I64) return v.Cast<long>()[i];
        if (t == B8) return v[i] != 0 ? 1.0 : 0.0;
        if (t == BF16) return Bf16ToFloat(v.Cast<ushort>()[i]);
        return HalfToFloat(v.Cast<ushort>()[i]);
    }

    /// <summary>Element <paramref name="i"/> of an integer or Bool storage as Int64, exactly.</summary>
    public static long LoadLong(ArrayView<byte> v, int t, long i)
    {
        if (t == I64) return v.Cast<long>()[i];
        if (t == I32) return v.Cast<int>()[i];
        return v[i] != 0 ? 1 : 0;
    }

    /// <summary>Stores a float32 result, rounding once to the element type (narrow types; wide ones go through float64).</summary>
    public static void StoreFloat(ArrayView<byte> v, int t, long i, float x)
    {
        if (t == F32) v.Cast<float>()[i] = x;
        else if (t == BF16) v.Cast<ushort>()[i] = FloatToBf16(Interop.FloatAsInt(x));
        else if (t == F16) v.Cast<ushort>()[i] = FloatToHalf(Interop.FloatAsInt(x));
        else if (t == B8) v[i] = x != 0 ? (byte)1 : (byte)0;
        else StoreDouble(v, t, i, x);
    }

    /// <summary>Stores a float64 result, rounding once (integer stores truncate and saturate, NaN gives 0, as .NET's casts).</summary>
    public static void StoreDouble(ArrayView<byte> v, int t, long i, double x)
    {
        if (t == F64) v.Cast<double>()[i] = x;
        else if (t == F32) v.Cast<float>()[i] = (float)x;
        else if (t == I32) v.Cast<int>()[i] = DoubleToInt(x);
        else if (t == I64) v.Cast<long>()[i] = DoubleToLong(x);
        else if (t == B8) v[i] = x != 0 ? (byte)1 : (byte)0;
        else if (t == BF16) v.Cast<ushort>()[i] = DoubleToBf16(x);
        else v.Cast<ushort>()[i] = DoubleToHalf(x);
    }

    /// <summary>Stores an exact Int64 result into an integer or Bool storage (Int32 wraps, as the CPU's).</summary>
    public static void StoreLong(ArrayView<byte> v, int t, long i, long x)
    {
        if (t == I64) v.Cast<long>()[i] = x;
        else if (t == I32) v.Cast<int>()[i] = unchecked((int)x);
        else v[i] = x != 0 ? (byte)1 : (byte)0;
    }

    /// <summary>Copies the raw bits of one element of <paramref name="size"/> bytes.</summary>
    public static void CopyRaw(ArrayView<byte> x, long xi, ArrayView<byte> y, long yi, int size)
    {
        if (size == 4) y.Cast<uint>()[yi] = x.Cast<uint>()[xi];
        else if (size == 2) y.Cast<ushort>()[yi] = x.Cast<ushort>()[xi];
        else if (size == 8) y.Cast<ulong>()[yi] = x.Cast<ulong>()[xi];
        else y[yi] = x[xi];
    }

    /// <summary>Writes raw bits (the low <paramref name="size"/> bytes of <paramref name="bits"/>).</summary>
    public static void StoreRaw(ArrayView<byte> y, long yi, int size, ulong bits)
    {
        if (size == 4) y.Cast<uint>()[yi] = (uint)bits;
        else if (size == 2) y.Cast<ushort>()[yi] = (ushort)bits;
        else if (size == 8) y.Cast<ulong>()[yi] = bits;
        else y[yi] = (byte)bits;
    }

    /// <summary>One element converted between two dtypes exactly as the CPU backend's Copy does (one rounding).</summary>
    public static void Convert(ArrayView<byte> x, int xt, long xi, ArrayView<byte> y, int yt, long yi)
    {
        if (xt == F32 && yt == BF16) y.Cast<ushort>()[yi] = FloatToBf16(x.Cast<uint>()[xi]); // on the bits: NaN payloads survive
        else if (xt == BF16 && yt == F32) y.Cast<uint>()[yi] = (uint)x.Cast<ushort>()[xi] << 16;
        else if (IsWide(xt) || IsWide(yt)) StoreDouble(y, yt, yi, LoadDouble(x, xt, xi));
        else StoreFloat(y, yt, yi, LoadFloat(x, xt, xi));
    }

    // ---- integer conversions: .NET's saturating casts (NaN → 0); PTX's cvt.rzi does the same, spelled out for clarity ----

    public static int DoubleToInt(double x) =>
        double.IsNaN(x) ? 0 : x >= 2147483647.0 ? int.MaxValue : x <= -2147483648.0 ? int.MinValue : (int)x;

    public static long DoubleToLong(double x) =>
        double.IsNaN(x) ? 0 : x >= 9223372036854775807.0 ? long.MaxValue : x <= -9223372036854775808.0 ? long.MinValue : (long)x;

    // ---- bfloat16 ----

    /// <summary>bfloat16 bits to float32: the upper half of the float's bits (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Bf16ToFloat(ushort h) => Interop.IntAsFloat((uint)h << 16);

    /// <summary>BFloat16.RoundSingleBits: round to nearest even on the float's bits; NaN quieted keeping sign and top payload.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FloatToBf16(uint bits)
    {
        uint rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
        uint quiet = (bits >> 16) | 0x0040u;
        return (ushort)((bits & 0x7FFF_FFFFu) > 0x7F80_0000u ? quiet : rounded);
    }

    /// <summary>BFloat16.RoundDoubleBits: one rounding from float64 (nearest even), NaN quieted keeping sign and top payload.</summary>
    public static ushort DoubleToBf16(double value)
    {
        ulong bits = Interop.FloatAsInt(value);
        uint sign = (uint)(bits >> 48) & 0x8000u;
        ulong abs = bits & 0x7FFF_FFFF_FFFF_FFFFUL;
        if (abs >= 0x7FF0_0000_0000_0000UL)
            return abs == 0x7FF0_0000_0000_0000UL ? (ushort)(sign | 0x7F80u) : (ushort)(sign | 0x7FC0u | (uint)((abs >> 45) & 0x7Fu));
        int e = (int)(abs >> 52) - 1023;
        if (e >= 128) return (ushort)(sign | 0x7F80u);
        if (e < -134) return (ushort)sign;
        ulong significand = (abs & 0x000F_FFFF_FFFF_FFFFUL) | (1UL << 52);
        int shift = e >= -126 ? 45 : 45 - 126 - e;
        uint exponentBase = e >= -126 ? (uint)(e + 126) << 7 : 0u;
        ulong q = significand >> shift;
        ulong rem = significand & ((1UL << shift) - 1);
        ulong half = 1UL << (shift - 1);
        if (rem > half || (rem == half && (q & 1) != 0)) q++;
        return (ushort)(sign | (exponentBase + (uint)q));
    }

    // ---- IEEE binary16: the algorithms of .NET's Half (Berkeley SoftFloat's roundPackToF16), on integers ----

    /// <summary>Half bits to float32, exactly; NaN keeps sign and payload with the quiet bit set (as .NET's).</summary>
    public static float HalfToFloat(ushort h)
    {
        uint sign = (uint)(h & 0x8000) << 16;
        int exp = (h >> 10) & 0x1F;
        uint sig = (uint)(h & 0x3FF);
        if (exp == 0x1F) return Interop.IntAsFloat(sig != 0 ? sign | 0x7FC0_0000u | (sig << 13) : sign | 0x7F80_0000u);
        if (exp == 0)
        {
            if (sig == 0) return Interop.IntAsFloat(sign);
            // Subnormal: normalize (the value is sig·2^-24).
            int shift = 0;
            while ((sig & 0x400) == 0) { sig <<= 1; shift++; }
            sig &= 0x3FF;
            return Interop.IntAsFloat(sign | (uint)(127 - 15 + 1 - shift) << 23 | (sig << 13));
        }
        return Interop.IntAsFloat(sign | (uint)(exp + 127 - 15) << 23 | (sig << 13));
    }

    /// <summary>float32 bits to Half bits, one rounding to nearest even (as .NET's explicit conversion).</summary>
    public static ushort FloatToHalf(uint bits)
    {
        bool sign = (bits >> 31) != 0;
        int exp = (int)((bits >> 23) & 0xFF);
        uint sig = bits & 0x7F_FFFF;
        if (exp == 0xFF)
            return sig != 0 ? (ushort)((sign ? 0x8000u : 0u) | 0x7E00u | (sig >> 13)) : (ushort)(sign ? 0xFC00u : 0x7C00u);
        uint sigHalf = (sig >> 9) | ((sig & 0x1FFu) != 0 ? 1u : 0u);
        if ((exp | (int)sigHalf) == 0) return (ushort)(sign ? 0x8000u : 0u);
        return RoundPackToHalf(sign, exp - 0x71, sigHalf | 0x4000u);
    }

    /// <summary>float64 to Half bits, one rounding to nearest even (as .NET's explicit conversion, not via float32).</summary>
    public static ushort DoubleToHalf(double value)
    {
        ulong bits = Interop.FloatAsInt(value);
        bool sign = (bits >> 63) != 0;
        int exp = (int)((bits >> 52) & 0x7FF);
        ulong sig = bits & 0xF_FFFF_FFFF_FFFFUL;
        if (exp == 0x7FF)
            return sig != 0 ? (ushort)((sign ? 0x8000u : 0u) | 0x7E00u | (uint)(sig >> 42)) : (ushort)(sign ? 0xFC00u : 0x7C00u);
        uint sigHalf = (uint)ShiftRightJam(sig, 38);
        if ((exp | (int)sigHalf) == 0) return (ushort)(sign ? 0x8000u : 0u);
        return RoundPackToHalf(sign, exp - 0x3F1, sigHalf | 0x4000u);
    }

    static ushort RoundPackToHalf(bool sign, int exp, uint sig)
    {
        uint roundBits = sig & 0xF;
        if ((uint)exp >= 0x1D)
        {
            if (exp < 0)
            {
                sig = ShiftRightJam(sig, -exp);
                exp = 0;
                roundBits = sig & 0xF;
            }
            else if (exp > 0x1D || sig + 0x8 >= 0x8000)
            {
                return sign ? (ushort)0xFC00 : (ushort)0x7C00;
            }
        }
        sig = (sig + 0x8) >> 4;
        if ((roundBits ^ 8) == 0) sig &= ~1u; // a tie: to even
        if (sig == 0) exp = 0;
        // A sum, not an or: a carry out of the significand moves into the exponent.
        return (ushort)((sign ? 0x8000u : 0u) + ((uint)exp << 10) + sig);
    }

    static uint ShiftRightJam(uint i, int dist) => dist < 31 ? (i >> dist) | ((i << (-dist & 31)) != 0 ? 1u : 0u) : (i != 0 ? 1u : 0u);

    static ulong ShiftRightJam(ulong l, int dist) => dist < 63 ? (l >> dist) | ((l << (-dist & 63)) != 0 ? 1UL : 0UL) : (l != 0 ? 1UL : 0UL);
}

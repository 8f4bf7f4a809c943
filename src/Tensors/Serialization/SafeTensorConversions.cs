using System.Runtime.InteropServices;

namespace Engine.Serialization;

/// <summary>
/// Element conversions between the stored types of a safetensors file and the engine's dtypes: the widening ones done
/// on load (always exact) and the exact-or-fail ones done on save. Both 8-bit float formats are tables of their 256
/// values, which is also their reference: every code decodes by its definition, and encoding looks the value up.
/// </summary>
internal static class SafeTensorConversions
{
    /// <summary>The value of each F8_E4M3 (fn) code: bias 7, subnormals m·2⁻⁹, no infinities, S.1111.111 is NaN.</summary>
    internal static readonly double[] E4M3 = Table(b =>
    {
        int e = (b >> 3) & 0xF, m = b & 7;
        return e == 15 && m == 7 ? double.NaN : e == 0 ? Math.ScaleB(m, -9) : Math.ScaleB(8 + m, e - 10);
    });

    /// <summary>The value of each F8_E5M2 code: float16's top byte (bias 15, infinities, NaNs).</summary>
    internal static readonly double[] E5M2 = Table(b => Math.Abs((double)BitConverter.UInt16BitsToHalf((ushort)(b << 8))));

    // Every E4M3 value is a float16 normal or zero (its smallest, 2⁻⁹, is above float16's normal minimum 2⁻¹⁴).
    static readonly ushort[] s_e4m3Half = [.. E4M3.Select(v => BitConverter.HalfToUInt16Bits((Half)v))];
    static readonly Dictionary<long, byte> s_e4m3Codes = Codes(E4M3), s_e5m2Codes = Codes(E5M2);

    static double[] Table(Func<int, double> magnitude)
    {
        var t = new double[256];
        for (int b = 0; b < 256; b++) t[b] = (b & 0x80) != 0 ? -magnitude(b & 0x7F) : magnitude(b);
        return t;
    }

    static Dictionary<long, byte> Codes(double[] table)
    {
        var d = new Dictionary<long, byte>();
        for (int b = 0; b < 256; b++)
            if (!double.IsNaN(table[b])) d[BitConverter.DoubleToInt64Bits(table[b])] = (byte)b;
        return d;
    }

    /// <summary>True when loading the stored type rewrites its bytes (a wider engine type), not just copies them.</summary>
    internal static bool Widens(SafeTensorDType t) => t.ElementSize() != t.LoadsAs().ElementSize();

    /// <summary>Widens stored elements into the engine type <see cref="SafeTensorDTypes.LoadsAs"/> gives; exact for every value.</summary>
    internal static void Widen(SafeTensorDType from, ReadOnlySpan<byte> input, Span<byte> output)
    {
        switch (from)
        {
            case SafeTensorDType.U8: { var o = MemoryMarshal.Cast<byte, int>(output); for (int i = 0; i < input.Length; i++) o[i] = input[i]; break; }
            case SafeTensorDType.I8: { var o = MemoryMarshal.Cast<byte, int>(output); for (int i = 0; i < input.Length; i++) o[i] = (sbyte)input[i]; break; }
            case SafeTensorDType.I16: { var s = MemoryMarshal.Cast<byte, short>(input); var o = MemoryMarshal.Cast<byte, int>(output); for (int i = 0; i < s.Length; i++) o[i] = s[i]; break; }
            case SafeTensorDType.U16: { var s = MemoryMarshal.Cast<byte, ushort>(input); var o = MemoryMarshal.Cast<byte, int>(output); for (int i = 0; i < s.Length; i++) o[i] = s[i]; break; }
            case SafeTensorDType.U32: { var s = MemoryMarshal.Cast<byte, uint>(input); var o = MemoryMarshal.Cast<byte, long>(output); for (int i = 0; i < s.Length; i++) o[i] = s[i]; break; }
            case SafeTensorDType.F8E4M3: { var o = MemoryMarshal.Cast<byte, ushort>(output); for (int i = 0; i < input.Length; i++) o[i] = s_e4m3Half[input[i]]; break; }
            case SafeTensorDType.F8E5M2: { var o = MemoryMarshal.Cast<byte, ushort>(output); for (int i = 0; i < input.Length; i++) o[i] = (ushort)(input[i] << 8); break; }
            default: throw new System.Diagnostics.UnreachableException($"{from} does not widen");
        }
    }

    /// <summary>
    /// The first element whose bytes the engine type cannot hold as they are (a BOOL byte other than 0 or 1, a U64
    /// above <see cref="long.MaxValue"/>), or -1. Such types load by copying their bytes once they pass this check.
    /// </summary>
    internal static int FirstInvalid(SafeTensorDType t, ReadOnlySpan<byte> input)
    {
        if (t == SafeTensorDType.Bool) return input.IndexOfAnyExcept((byte)0, (byte)1);
        if (t != SafeTensorDType.U64) return -1;
        var s = MemoryMarshal.Cast<byte, ulong>(input);
        for (int i = 0; i < s.Length; i++) if (s[i] > long.MaxValue) return i;
        return -1;
    }

    /// <summary>An element of stored bytes, formatted for an error message.</summary>
    internal static string FormatStored(SafeTensorDType t, ReadOnlySpan<byte> input, int i) => t switch
    {
        SafeTensorDType.U64 => MemoryMarshal.Read<ulong>(input[(8 * i)..]).ToString(System.Globalization.CultureInfo.InvariantCulture),
        _ => $"byte 0x{input[i * t.ElementSize()]:X2}",
    };

    /// <summary>
    /// Converts elements of engine dtype <paramref name="from"/> to stored type <paramref name="to"/>; returns the index
    /// of the first element that <paramref name="to"/> cannot hold exactly (nothing is rounded), or -1.
    /// </summary>
    internal static int Narrow(DType from, ReadOnlySpan<byte> input, SafeTensorDType to, Span<byte> output)
    {
        int n = input.Length / from.ElementSize();
        if (from.IsFloatingPoint())
        {
            for (int i = 0; i < n; i++) if (!TryEncode(ReadDouble(from, input, i), to, output, i)) return i;
        }
        else
        {
            for (int i = 0; i < n; i++) if (!TryEncode(ReadLong(from, input, i), to, output, i)) return i;
        }
        return -1;
    }

    /// <summary>An element of engine bytes, formatted for an error message.</summary>
    internal static string FormatEngine(DType t, ReadOnlySpan<byte> input, int i) =>
        t.IsFloatingPoint() ? ReadDouble(t, input, i).ToString("R", System.Globalization.CultureInfo.InvariantCulture)
                            : ReadLong(t, input, i).ToString(System.Globalization.CultureInfo.InvariantCulture);

    static double ReadDouble(DType t, ReadOnlySpan<byte> s, int i) => t switch
    {
        DType.Float64 => MemoryMarshal.Read<double>(s[(8 * i)..]),
        DType.Float32 => MemoryMarshal.Read<float>(s[(4 * i)..]),
        DType.Float16 => (double)MemoryMarshal.Read<Half>(s[(2 * i)..]),
        _ => BitConverter.UInt32BitsToSingle((uint)MemoryMarshal.Read<ushort>(s[(2 * i)..]) << 16),
    };

    static long ReadLong(DType t, ReadOnlySpan<byte> s, int i) => t switch
    {
        DType.Int64 => MemoryMarshal.Read<long>(s[(8 * i)..]),
        DType.Int32 => MemoryMarshal.Read<int>(s[(4 * i)..]),
        _ => s[i],
    };

    static bool TryEncode(long v, SafeTensorDType to, Span<byte> o, int i)
    {
        switch (to)
        {
            case SafeTensorDType.Bool or SafeTensorDType.U8: if ((ulong)v > (to == SafeTensorDType.Bool ? 1UL : byte.MaxValue)) return false; o[i] = (byte)v; return true;
            case SafeTensorDType.I8: if (v is < sbyte.MinValue or > sbyte.MaxValue) return false; o[i] = (byte)(sbyte)v; return true;
            case SafeTensorDType.I16: if (v is < short.MinValue or > short.MaxValue) return false; Put(o, i, (short)v); return true;
            case SafeTensorDType.U16: if (v is < 0 or > ushort.MaxValue) return false; Put(o, i, (ushort)v); return true;
            case SafeTensorDType.I32: if (v is < int.MinValue or > int.MaxValue) return false; Put(o, i, (int)v); return true;
            case SafeTensorDType.U32: if (v is < 0 or > uint.MaxValue) return false; Put(o, i, (uint)v); return true;
            case SafeTensorDType.I64: Put(o, i, v); return true;
            case SafeTensorDType.U64: if (v < 0) return false; Put(o, i, (ulong)v); return true;
            default:
                // An int64 above 2⁵³ may have no double; 2⁶³ itself is what long.MaxValue rounds to, so it is excluded.
                double d = v;
                return d < 9223372036854775808.0 && (long)d == v && TryEncode(d, to, o, i);
        }
    }

    static bool TryEncode(double x, SafeTensorDType to, Span<byte> o, int i)
    {
        switch (to)
        {
            case SafeTensorDType.F64: Put(o, i, x); return true;
            case SafeTensorDType.F32: { float f = (float)x; Put(o, i, f); return Same(f, x); }
            case SafeTensorDType.F16: { var h = (Half)x; Put(o, i, h); return Same((double)h, x); }
            case SafeTensorDType.BF16:
                {
                    ushort bits = BFloat16.RoundDoubleBits(x);
                    Put(o, i, bits);
                    return Same(BitConverter.UInt32BitsToSingle((uint)bits << 16), x);
                }
            case SafeTensorDType.F8E4M3 or SafeTensorDType.F8E5M2:
                {
                    bool e4 = to == SafeTensorDType.F8E4M3;
                    if (double.IsNaN(x)) { o[i] = e4 ? (byte)0x7F : (byte)0x7E; return true; }
                    if (!(e4 ? s_e4m3Codes : s_e5m2Codes).TryGetValue(BitConverter.DoubleToInt64Bits(x), out byte code)) return false;
                    o[i] = code;
                    return true;
                }
            case SafeTensorDType.U64:
                if (!(x >= 0 && x < 18446744073709551616.0 && x == Math.Floor(x))) return false;
                Put(o, i, (ulong)x);
                return true;
            default:
                return x >= -9223372036854775808.0 && x < 9223372036854775808.0 && x == Math.Floor(x) && TryEncode((long)x, to, o, i);
        }
    }

    // Equal values, telling −0 from +0 (a float format keeps the sign of zero); any NaN matches any NaN.
    static bool Same(double a, double b) => a == b ? a != 0 || double.IsNegative(a) == double.IsNegative(b) : double.IsNaN(a) && double.IsNaN(b);

    static void Put<T>(Span<byte> o, int i, T value) where T : unmanaged => MemoryMarshal.Write(o[(i * System.Runtime.CompilerServices.Unsafe.SizeOf<T>())..], in value);
}

using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Unicode;

namespace Engine;

// Formatting and parsing. The default ("G", "R" or no format) output is the shortest "G<n>" rendering of the
// value that parses back to the same bfloat16; any other format string is applied to the exact float value.
// Parsing reads a double and rounds it to bfloat16 once.
public readonly partial struct BFloat16
{
    private const NumberStyles DefaultParseStyle = NumberStyles.Float | NumberStyles.AllowThousands;

    // ------------------------------------------------------------------ formatting

    /// <summary>The shortest string (current culture) that parses back to this exact value.</summary>
    /// <returns>The formatted value.</returns>
    public override string ToString() => ToString(null, null);

    /// <summary>Formats with a numeric format string (current culture); "G"/"R"/empty give the shortest round-trip form.</summary>
    /// <param name="format">A standard or custom numeric format string.</param>
    /// <returns>The formatted value.</returns>
    public string ToString(string? format) => ToString(format, null);

    /// <summary>The shortest round-trip string using the given culture.</summary>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <returns>The formatted value.</returns>
    public string ToString(IFormatProvider? provider) => ToString(null, provider);

    /// <summary>Formats with a numeric format string and culture; "G"/"R"/empty give the shortest round-trip form.</summary>
    /// <param name="format">A standard or custom numeric format string.</param>
    /// <param name="formatProvider">Culture-specific formatting information.</param>
    /// <returns>The formatted value.</returns>
    public string ToString(string? format, IFormatProvider? formatProvider)
    {
        if (!IsShortestFormat(format, out char g))
        {
            return AsSingle().ToString(format, formatProvider);
        }

        Span<char> buffer = stackalloc char[64];
        return TryFormatShortest(buffer, out int written, g, formatProvider)
            ? new string(buffer[..written])
            : ShortestString(g, formatProvider);
    }

    /// <summary>Formats into a character span.</summary>
    /// <param name="destination">The span to write into.</param>
    /// <param name="charsWritten">The number of characters written.</param>
    /// <param name="format">A standard or custom numeric format string; empty, "G" or "R" give the shortest round-trip form.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <returns>False when <paramref name="destination"/> is too small.</returns>
    public bool TryFormat(Span<char> destination, out int charsWritten, ReadOnlySpan<char> format = default, IFormatProvider? provider = null)
    {
        if (!IsShortestFormat(format, out char g))
        {
            return AsSingle().TryFormat(destination, out charsWritten, format, provider);
        }

        if (TryFormatShortest(destination, out charsWritten, g, provider))
        {
            return true;
        }

        // Either the destination is too small or the culture's symbols are unusually long.
        string s = ShortestString(g, provider);
        if (s.TryCopyTo(destination))
        {
            charsWritten = s.Length;
            return true;
        }

        charsWritten = 0;
        return false;
    }

    /// <summary>Formats into a UTF-8 byte span.</summary>
    /// <param name="utf8Destination">The span to write into.</param>
    /// <param name="bytesWritten">The number of bytes written.</param>
    /// <param name="format">A standard or custom numeric format string; empty, "G" or "R" give the shortest round-trip form.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <returns>False when <paramref name="utf8Destination"/> is too small.</returns>
    public bool TryFormat(Span<byte> utf8Destination, out int bytesWritten, ReadOnlySpan<char> format = default, IFormatProvider? provider = null)
    {
        if (!IsShortestFormat(format, out char g))
        {
            return AsSingle().TryFormat(utf8Destination, out bytesWritten, format, provider);
        }

        Span<char> buffer = stackalloc char[64];
        ReadOnlySpan<char> chars = TryFormatShortest(buffer, out int charsWritten, g, provider)
            ? buffer[..charsWritten]
            : ShortestString(g, provider).AsSpan();
        if (Utf8.FromUtf16(chars, utf8Destination, out _, out bytesWritten) == OperationStatus.Done)
        {
            return true;
        }

        bytesWritten = 0;
        return false;
    }

    private static bool IsShortestFormat(ReadOnlySpan<char> format, out char g)
    {
        g = 'G';
        if (format.IsEmpty)
        {
            return true;
        }

        char c = format[0];
        bool isGeneral = c is 'G' or 'g' or 'R' or 'r';
        if (!isGeneral || (format.Length > 1 && !(format.Length == 2 && format[1] == '0' && c is 'G' or 'g')))
        {
            return false;
        }

        g = c is 'g' or 'r' ? 'g' : 'G';
        return true;
    }

    // Tries G1..G9 of the exact float value; G9 always round-trips a float, so a bfloat16 as well.
    private bool TryFormatShortest(Span<char> destination, out int charsWritten, char g, IFormatProvider? provider)
    {
        float f = AsSingle();
        if (!float.IsFinite(f))
        {
            return f.TryFormat(destination, out charsWritten, default, provider);
        }

        Span<char> format = [g, '1'];
        for (int precision = 1; precision <= 9; precision++)
        {
            format[1] = (char)('0' + precision);
            if (!f.TryFormat(destination, out charsWritten, format, provider))
            {
                return false;
            }

            if (double.TryParse(destination[..charsWritten], DefaultParseStyle, provider, out double parsed)
                && RoundDoubleBits(parsed) == _bits)
            {
                return true;
            }
        }

        return f.TryFormat(destination, out charsWritten, "R", provider);
    }

    private string ShortestString(char g, IFormatProvider? provider)
    {
        float f = AsSingle();
        if (!float.IsFinite(f))
        {
            return f.ToString(provider);
        }

        for (int precision = 1; precision <= 9; precision++)
        {
            string s = f.ToString(g + precision.ToString(CultureInfo.InvariantCulture), provider);
            if (double.TryParse(s, DefaultParseStyle, provider, out double parsed) && RoundDoubleBits(parsed) == _bits)
            {
                return s;
            }
        }

        return f.ToString("R", provider);
    }

    // ------------------------------------------------------------------ parsing (string)

    /// <summary>Parses a number (current culture), rounding once to bfloat16.</summary>
    /// <param name="s">The text.</param>
    /// <returns>The parsed value.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="s"/> is null.</exception>
    /// <exception cref="FormatException"><paramref name="s"/> is not a number.</exception>
    public static BFloat16 Parse(string s) => (BFloat16)double.Parse(s, DefaultParseStyle, null);

    /// <summary>Parses a number with the given styles (current culture), rounding once to bfloat16.</summary>
    /// <param name="s">The text.</param>
    /// <param name="style">The permitted number styles.</param>
    /// <returns>The parsed value.</returns>
    public static BFloat16 Parse(string s, NumberStyles style) => (BFloat16)double.Parse(s, style, null);

    /// <summary>Parses a number with the given culture, rounding once to bfloat16.</summary>
    /// <param name="s">The text.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <returns>The parsed value.</returns>
    public static BFloat16 Parse(string s, IFormatProvider? provider) => (BFloat16)double.Parse(s, DefaultParseStyle, provider);

    /// <summary>Parses a number with the given styles and culture, rounding once to bfloat16.</summary>
    /// <param name="s">The text.</param>
    /// <param name="style">The permitted number styles.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <returns>The parsed value.</returns>
    public static BFloat16 Parse(string s, NumberStyles style, IFormatProvider? provider) => (BFloat16)double.Parse(s, style, provider);

    /// <summary>Tries to parse a number (current culture), rounding once to bfloat16.</summary>
    /// <param name="s">The text.</param>
    /// <param name="result">The parsed value, or zero on failure.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse([NotNullWhen(true)] string? s, out BFloat16 result) => TryParse(s, DefaultParseStyle, null, out result);

    /// <summary>Tries to parse a number with the given culture, rounding once to bfloat16.</summary>
    /// <param name="s">The text.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <param name="result">The parsed value, or zero on failure.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse([NotNullWhen(true)] string? s, IFormatProvider? provider, out BFloat16 result) =>
        TryParse(s, DefaultParseStyle, provider, out result);

    /// <summary>Tries to parse a number with the given styles and culture, rounding once to bfloat16.</summary>
    /// <param name="s">The text.</param>
    /// <param name="style">The permitted number styles.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <param name="result">The parsed value, or zero on failure.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse([NotNullWhen(true)] string? s, NumberStyles style, IFormatProvider? provider, out BFloat16 result)
    {
        bool ok = double.TryParse(s, style, provider, out double d);
        result = ok ? (BFloat16)d : default;
        return ok;
    }

    // ------------------------------------------------------------------ parsing (UTF-16 spans)

    /// <summary>Parses a number from characters, rounding once to bfloat16.</summary>
    /// <param name="s">The text.</param>
    /// <param name="style">The permitted number styles.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <returns>The parsed value.</returns>
    public static BFloat16 Parse(ReadOnlySpan<char> s, NumberStyles style = DefaultParseStyle, IFormatProvider? provider = null) =>
        (BFloat16)double.Parse(s, style, provider);

    /// <summary>Parses a number from characters with the given culture, rounding once to bfloat16.</summary>
    /// <param name="s">The text.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <returns>The parsed value.</returns>
    public static BFloat16 Parse(ReadOnlySpan<char> s, IFormatProvider? provider) => (BFloat16)double.Parse(s, DefaultParseStyle, provider);

    /// <summary>Tries to parse a number from characters (current culture).</summary>
    /// <param name="s">The text.</param>
    /// <param name="result">The parsed value, or zero on failure.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse(ReadOnlySpan<char> s, out BFloat16 result) => TryParse(s, DefaultParseStyle, null, out result);

    /// <summary>Tries to parse a number from characters with the given culture.</summary>
    /// <param name="s">The text.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <param name="result">The parsed value, or zero on failure.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse(ReadOnlySpan<char> s, IFormatProvider? provider, out BFloat16 result) =>
        TryParse(s, DefaultParseStyle, provider, out result);

    /// <summary>Tries to parse a number from characters with the given styles and culture.</summary>
    /// <param name="s">The text.</param>
    /// <param name="style">The permitted number styles.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <param name="result">The parsed value, or zero on failure.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse(ReadOnlySpan<char> s, NumberStyles style, IFormatProvider? provider, out BFloat16 result)
    {
        bool ok = double.TryParse(s, style, provider, out double d);
        result = ok ? (BFloat16)d : default;
        return ok;
    }

    // ------------------------------------------------------------------ parsing (UTF-8)

    /// <summary>Parses a number from UTF-8 text, rounding once to bfloat16.</summary>
    /// <param name="utf8Text">The UTF-8 text.</param>
    /// <param name="style">The permitted number styles.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <returns>The parsed value.</returns>
    public static BFloat16 Parse(ReadOnlySpan<byte> utf8Text, NumberStyles style = DefaultParseStyle, IFormatProvider? provider = null) =>
        (BFloat16)double.Parse(utf8Text, style, provider);

    /// <summary>Parses a number from UTF-8 text with the given culture, rounding once to bfloat16.</summary>
    /// <param name="utf8Text">The UTF-8 text.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <returns>The parsed value.</returns>
    public static BFloat16 Parse(ReadOnlySpan<byte> utf8Text, IFormatProvider? provider) => (BFloat16)double.Parse(utf8Text, DefaultParseStyle, provider);

    /// <summary>Tries to parse a number from UTF-8 text (current culture).</summary>
    /// <param name="utf8Text">The UTF-8 text.</param>
    /// <param name="result">The parsed value, or zero on failure.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse(ReadOnlySpan<byte> utf8Text, out BFloat16 result) => TryParse(utf8Text, DefaultParseStyle, null, out result);

    /// <summary>Tries to parse a number from UTF-8 text with the given culture.</summary>
    /// <param name="utf8Text">The UTF-8 text.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <param name="result">The parsed value, or zero on failure.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse(ReadOnlySpan<byte> utf8Text, IFormatProvider? provider, out BFloat16 result) =>
        TryParse(utf8Text, DefaultParseStyle, provider, out result);

    /// <summary>Tries to parse a number from UTF-8 text with the given styles and culture.</summary>
    /// <param name="utf8Text">The UTF-8 text.</param>
    /// <param name="style">The permitted number styles.</param>
    /// <param name="provider">Culture-specific formatting information.</param>
    /// <param name="result">The parsed value, or zero on failure.</param>
    /// <returns>True on success.</returns>
    public static bool TryParse(ReadOnlySpan<byte> utf8Text, NumberStyles style, IFormatProvider? provider, out BFloat16 result)
    {
        bool ok = double.TryParse(utf8Text, style, provider, out double d);
        result = ok ? (BFloat16)d : default;
        return ok;
    }
}

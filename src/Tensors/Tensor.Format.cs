using System.Globalization;
using System.Numerics;
using System.Text;

namespace Engine;

public sealed partial class Tensor
{
    // PyTorch's print options: precision 4, threshold 1000, edgeitems 3, linewidth 80.
    const int PrintPrecision = 4, PrintThreshold = 1000, PrintEdgeItems = 3, PrintLineWidth = 80;

    /// <summary>
    /// The values as PyTorch prints them (<c>torch._tensor_str</c>): <c>tensor([[ 0.1000, -2.0000], ...], dtype=float64)</c>,
    /// floats with 4 decimals (integral floats as <c>1.</c>, scientific when the magnitudes demand), more than 1000
    /// elements summarized to the first and last 3 per dim, then the dtype when not float32/int64/bool, the device when
    /// not cpu, and <c>grad_fn=&lt;...&gt;</c> or <c>requires_grad=True</c>. Differs from PyTorch: dtypes print as
    /// <c>float64</c>, not <c>torch.float64</c>. Synchronizes.
    /// </summary>
    public override string ToString() => ToString(PrintThreshold);

    /// <summary>As <see cref="ToString()"/>, summarizing when the tensor has more than <paramref name="maxElements"/> elements.</summary>
    public string ToString(int maxElements)
    {
        if (IsDisposed) return "tensor(<disposed>)";
        const string prefix = "tensor(";
        int indent = prefix.Length;
        var suffixes = new List<string>();
        if (Device.Type != DeviceType.Cpu) suffixes.Add($"device='{Device}'");
        string body;
        if (Numel == 0)
        {
            // As NumPy: the shape is printed unless it is (0,); an empty tensor shows any non-default dtype.
            if (Rank != 1) suffixes.Add("size=(" + string.Join(", ", Layout.Shape) + ")");
            if (DType != DType.Float32) suffixes.Add("dtype=" + DType.Name());
            body = "[]";
        }
        else
        {
            if (DType is not (DType.Float32 or DType.Int64 or DType.Bool)) suffixes.Add("dtype=" + DType.Name());
            body = FormatValues(maxElements, indent);
        }
        if (GradFn is not null) suffixes.Add($"grad_fn=<{GradFn}>");
        else if (RequiresGrad) suffixes.Add("requires_grad=True");
        return AddSuffixes(prefix + body, suffixes, indent);
    }

    static string AddSuffixes(string text, List<string> suffixes, int indent)
    {
        var sb = new StringBuilder(text);
        int lastLineLength = text.Length - text.LastIndexOf('\n') + 1; // PyTorch's count, off by two as it is
        foreach (var s in suffixes)
        {
            if (lastLineLength + s.Length + 2 > PrintLineWidth)
            {
                sb.Append(",\n").Append(' ', indent).Append(s);
                lastLineLength = indent + s.Length;
            }
            else
            {
                sb.Append(", ").Append(s);
                lastLineLength += s.Length + 2;
            }
        }
        return sb.Append(')').ToString();
    }

    string FormatValues(int threshold, int indent)
    {
        int rank = Rank;
        bool summarize = Numel > threshold;
        var elided = new bool[rank];
        var shape = new int[rank];
        for (int d = 0; d < rank; d++)
        {
            elided[d] = summarize && Layout.Shape[d] > 2 * PrintEdgeItems;
            shape[d] = elided[d] ? 2 * PrintEdgeItems : Layout.Shape[d];
        }
        var tokens = DType == DType.Int64 ? IntegerTokens(ReadSummarized<long>(elided, shape), out int width)
            : DType.IsFloatingPoint() ? FloatTokens(ReadSummarized<double>(elided, shape), out width)
            : IntegerTokens(Array.ConvertAll(ReadSummarized<double>(elided, shape), v => (long)v), out width, DType == DType.Bool);
        for (int i = 0; i < tokens.Length; i++) tokens[i] = tokens[i].PadLeft(width);
        if (rank == 0) return tokens[0];
        var sb = new StringBuilder();
        AppendDim(sb, tokens, shape, elided, Shape.ContiguousStrides(shape), 0, 0, indent, width);
        return sb.ToString();
    }

    // The summarized elements (first and last edge items of each elided dim) in row-major order, read block by block
    // so a huge tensor copies only what is printed.
    T[] ReadSummarized<T>(bool[] elided, int[] shape) where T : unmanaged
    {
        int rank = Rank;
        var outStrides = Shape.ContiguousStrides(shape);
        var result = new T[Shape.Numel(shape)];
        int elidedDims = elided.Count(e => e);
        for (int mask = 0; mask < 1 << elidedDims; mask++)
        {
            var layout = Layout;
            var dstStart = new int[rank];
            for (int d = 0, bit = 0; d < rank; d++)
            {
                if (!elided[d]) continue;
                bool tail = (mask >> bit++ & 1) != 0;
                layout = layout.Narrow(d, tail ? Layout.Shape[d] - PrintEdgeItems : 0, PrintEdgeItems);
                dstStart[d] = tail ? PrintEdgeItems : 0;
            }
            using var block = NewView(layout);
            var values = block.ToArray<T>();
            var idx = new int[rank];
            for (int i = 0; i < values.Length; i++)
            {
                long dst = 0;
                for (int d = 0; d < rank; d++) dst += (dstStart[d] + idx[d]) * outStrides[d];
                result[dst] = values[i];
                for (int d = rank - 1; d >= 0; d--)
                {
                    if (++idx[d] < layout.Shape[d]) break;
                    idx[d] = 0;
                }
            }
        }
        return result;
    }

    static string[] IntegerTokens(long[] values, out int width, bool boolean = false)
    {
        var t = new string[values.Length];
        width = 1;
        for (int i = 0; i < t.Length; i++)
        {
            t[i] = boolean ? (values[i] != 0 ? "True" : "False") : values[i].ToString(CultureInfo.InvariantCulture);
            width = Math.Max(width, t[i].Length);
        }
        return t;
    }

    // PyTorch's _Formatter: the mode and the width come from the nonzero finite values only.
    static string[] FloatTokens(double[] values, out int width)
    {
        bool intMode = true, sci = false, any = false;
        double min = double.PositiveInfinity, max = 0;
        foreach (var v in values)
        {
            if (!double.IsFinite(v) || v == 0) continue;
            any = true;
            double a = Math.Abs(v);
            min = Math.Min(min, a); max = Math.Max(max, a);
            if (v != Math.Ceiling(v)) intMode = false;
        }
        width = 1;
        if (any)
        {
            sci = max / min > 1000.0 || max > 1.0e8 || !intMode && min < 1.0e-4;
            foreach (var v in values)
            {
                if (!double.IsFinite(v) || v == 0) continue;
                int len = sci ? FormatScientific(v, PrintPrecision).Length : intMode ? FormatFixed(v, 0).Length + 1 : FormatFixed(v, PrintPrecision).Length;
                width = Math.Max(width, len);
            }
        }
        var t = new string[values.Length];
        for (int i = 0; i < t.Length; i++)
        {
            double v = values[i];
            t[i] = sci ? FormatScientific(v, PrintPrecision)
                : intMode ? FormatFixed(v, 0) + (double.IsFinite(v) ? "." : "")
                : FormatFixed(v, PrintPrecision);
        }
        return t;
    }

    void AppendDim(StringBuilder sb, string[] tokens, int[] shape, bool[] elided, long[] strides, int d, long offset, int indent, int width)
    {
        int rank = shape.Length;
        sb.Append('[');
        if (d == rank - 1)
        {
            var items = new List<string>();
            for (int i = 0; i < shape[d]; i++)
            {
                if (elided[d] && i == PrintEdgeItems) items.Add(" ...");
                items.Add(tokens[offset + i * strides[d]]);
            }
            int perLine = Math.Max(1, (PrintLineWidth - indent) / (width + 2));
            for (int i = 0; i < items.Count; i++)
            {
                if (i > 0) sb.Append(i % perLine == 0 ? ",\n" + new string(' ', indent + 1) : ", ");
                sb.Append(items[i]);
            }
        }
        else
        {
            string separator = "," + new string('\n', rank - d - 1) + new string(' ', indent + 1);
            for (int i = 0; i < shape[d]; i++)
            {
                if (i > 0) sb.Append(separator);
                if (elided[d] && i == PrintEdgeItems) sb.Append("...").Append(separator);
                AppendDim(sb, tokens, shape, elided, strides, d + 1, offset + i * strides[d], indent + 1, width);
            }
        }
        sb.Append(']');
    }

    // Python's '{:.Nf}': the exact binary value rounded half to even (.NET rounds ties away from zero).
    static string FormatFixed(double v, int digits)
    {
        if (!double.IsFinite(v)) return NonFinite(v);
        var s = RoundScaled(Math.Abs(v), digits).ToString(CultureInfo.InvariantCulture);
        if (digits > 0)
        {
            s = s.PadLeft(digits + 1, '0');
            s = s[..^digits] + "." + s[^digits..];
        }
        return double.IsNegative(v) ? "-" + s : s;
    }

    // Python's '{:.Ne}': d.dddde±XX, at least two exponent digits.
    static string FormatScientific(double v, int digits)
    {
        if (!double.IsFinite(v)) return NonFinite(v);
        double a = Math.Abs(v);
        int e = 0;
        BigInteger q = 0, lo = BigInteger.Pow(10, digits), hi = lo * 10;
        if (a != 0)
        {
            e = (int)Math.Floor(Math.Log10(a));
            q = RoundScaled(a, digits - e);
            while (q >= hi) q = RoundScaled(a, digits - ++e);
            while (q < lo) q = RoundScaled(a, digits - --e);
        }
        var m = q.ToString(CultureInfo.InvariantCulture).PadLeft(digits + 1, '0');
        var mantissa = digits > 0 ? m[..1] + "." + m[1..] : m;
        var exponent = (e < 0 ? "-" : "+") + Math.Abs(e).ToString("00", CultureInfo.InvariantCulture);
        return (double.IsNegative(v) ? "-" : "") + mantissa + "e" + exponent;
    }

    static string NonFinite(double v) => double.IsNaN(v) ? "nan" : v > 0 ? "inf" : "-inf";

    // round_half_even(a · 10^pow10) for finite a >= 0, exactly: a = m·2^e as a rational.
    static BigInteger RoundScaled(double a, int pow10)
    {
        long bits = BitConverter.DoubleToInt64Bits(a);
        int exp = (int)(bits >> 52 & 0x7FF);
        long mant = bits & ((1L << 52) - 1);
        if (exp == 0) exp = 1; else mant |= 1L << 52;
        int e2 = exp - 1075;
        BigInteger num = mant, den = BigInteger.One;
        if (e2 > 0) num <<= e2; else den <<= -e2;
        if (pow10 >= 0) num *= BigInteger.Pow(10, pow10); else den *= BigInteger.Pow(10, -pow10);
        var q = BigInteger.DivRem(num, den, out var r);
        int c = (r * 2).CompareTo(den);
        if (c > 0 || c == 0 && !q.IsEven) q += 1;
        return q;
    }
}

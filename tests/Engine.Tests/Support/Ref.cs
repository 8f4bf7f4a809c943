using NUnit.Framework;

namespace Engine.Tests.Support;

/// <summary>
/// Plain float64 helpers for reference computations written in the tests: the engine's own code is never used to
/// compute an expected value. Data goes in and out through ToArray/FromArray only.
/// </summary>
public static class Ref
{
    /// <summary>Row-major strides of a shape.</summary>
    public static int[] Strides(int[] shape)
    {
        var s = new int[shape.Length];
        int acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
        return s;
    }

    /// <summary>Number of elements.</summary>
    public static int Numel(int[] shape) { int n = 1; foreach (var d in shape) n *= d; return n; }

    /// <summary>Multi-index of flat row-major position <paramref name="flat"/>.</summary>
    public static int[] Unravel(int flat, int[] shape)
    {
        var idx = new int[shape.Length];
        for (int i = shape.Length - 1; i >= 0; i--) { idx[i] = shape[i] == 0 ? 0 : flat % shape[i]; flat = shape[i] == 0 ? 0 : flat / shape[i]; }
        return idx;
    }

    /// <summary>Flat row-major position of a multi-index.</summary>
    public static int Ravel(int[] idx, int[] shape)
    {
        int f = 0;
        for (int i = 0; i < shape.Length; i++) f = f * shape[i] + idx[i];
        return f;
    }

    /// <summary>Element of a row-major array <paramref name="data"/> of shape <paramref name="shape"/> read at a broadcast index of shape <paramref name="outShape"/>.</summary>
    public static double Broadcast(double[] data, int[] shape, int[] outIdx)
    {
        int lead = outIdx.Length - shape.Length, f = 0;
        for (int i = 0; i < shape.Length; i++) f = f * shape[i] + (shape[i] == 1 ? 0 : outIdx[lead + i]);
        return data[f];
    }

    /// <summary>Broadcast shape written plainly.</summary>
    public static int[] BroadcastShape(int[] a, int[] b)
    {
        int n = Math.Max(a.Length, b.Length);
        var r = new int[n];
        for (int i = 0; i < n; i++)
        {
            int da = i - (n - a.Length) >= 0 ? a[i - (n - a.Length)] : 1;
            int db = i - (n - b.Length) >= 0 ? b[i - (n - b.Length)] : 1;
            r[i] = da == 1 ? db : da;
        }
        return r;
    }

    /// <summary>Tolerance for comparing a result of <paramref name="dtype"/> with a float64 reference: |a−r| ≤ atol + rtol·|r|.</summary>
    public static (double rtol, double atol) Tol(DType dtype) => dtype switch
    {
        DType.Float64 => (1e-12, 1e-12),
        DType.Float32 => (2e-5, 1e-6),
        DType.Float16 => (2e-3, 1e-4),
        DType.BFloat16 => (1.6e-2, 1e-3),
        _ => (0, 0),
    };

    /// <summary>
    /// Asserts elementwise closeness (NaN matches only NaN, infinities must be equal), printing the first
    /// mismatches and the largest difference, as llm.c's validator.
    /// </summary>
    public static void AssertClose(double[] actual, double[] expected, DType dtype, string what, double scale = 1)
    {
        var (rtol, atol) = Tol(dtype);
        AssertClose(actual, expected, rtol * scale, atol * scale, what);
    }

    /// <summary>Asserts elementwise closeness with explicit tolerances.</summary>
    public static void AssertClose(double[] actual, double[] expected, double rtol, double atol, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), $"{what}: length");
        var bad = new List<string>();
        double worst = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double a = actual[i], e = expected[i];
            bool ok = double.IsNaN(e) ? double.IsNaN(a)
                : double.IsInfinity(e) ? a == e
                : !double.IsNaN(a) && Math.Abs(a - e) <= atol + rtol * Math.Abs(e);
            if (!double.IsNaN(a) && !double.IsNaN(e) && !double.IsInfinity(e)) worst = Math.Max(worst, Math.Abs(a - e));
            if (!ok && bad.Count < 5) bad.Add($"[{i}] got {a:R}, expected {e:R}");
            else if (!ok) bad.Add("");
        }
        Assert.That(bad, Is.Empty, $"{what}: {bad.Count} mismatches (max |diff| {worst:G3}, rtol {rtol}, atol {atol}): {string.Join("; ", bad.Where(b => b.Length > 0))}");
    }

    /// <summary>A value exactly representable in <paramref name="dtype"/>, for inputs: rounds a float64 through the dtype.</summary>
    public static double RoundTo(double v, DType dtype) => dtype switch
    {
        DType.Float32 => (float)v,
        DType.Float16 => (double)(Half)v,
        DType.BFloat16 => (double)(BFloat16)v,
        DType.Int32 or DType.Int64 => Math.Round(v),
        DType.Bool => v > 0 ? 1 : 0,
        _ => v,
    };

    /// <summary>Random values in [lo, hi) already rounded to <paramref name="dtype"/>.</summary>
    public static double[] Random(Random rng, int n, DType dtype, double lo = -2, double hi = 2)
    {
        var r = new double[n];
        for (int i = 0; i < n; i++) r[i] = RoundTo(lo + (hi - lo) * rng.NextDouble(), dtype);
        return r;
    }
}

/// <summary>
/// Builds engine tensors holding given row-major values in several physical layouts: contiguous, transposed
/// (stored column-major then transposed back), sliced out of a larger buffer with a step, and, for shapes with a
/// size-1 dim, expanded. The logical values are the same in every case.
/// </summary>
public static class Layouts
{
    /// <summary>The kinds of layout a test can ask for.</summary>
    public enum Kind { Contiguous, Transposed, Strided, Offset }

    /// <summary>All kinds.</summary>
    public static readonly Kind[] All = [Kind.Contiguous, Kind.Transposed, Kind.Strided, Kind.Offset];

    /// <summary>A tensor of <paramref name="dtype"/> with the values <paramref name="values"/> (row-major, shape <paramref name="shape"/>) in the given layout.</summary>
    public static Tensor Make(double[] values, int[] shape, DType dtype, Kind kind)
    {
        int n = Ref.Numel(shape);
        switch (kind)
        {
            case Kind.Transposed when shape.Length >= 2:
            {
                // Store with the last two dims swapped, then transpose the view back.
                int r = shape.Length;
                var sw = (int[])shape.Clone();
                (sw[r - 1], sw[r - 2]) = (sw[r - 2], sw[r - 1]);
                var buf = new double[n];
                for (int f = 0; f < n; f++)
                {
                    var idx = Ref.Unravel(f, shape);
                    (idx[r - 1], idx[r - 2]) = (idx[r - 2], idx[r - 1]);
                    buf[Ref.Ravel(idx, sw)] = values[f];
                }
                using var t = Tensor.FromArray(buf, sw).To(dtype);
                return t.Transpose(-1, -2);
            }
            case Kind.Strided when shape.Length >= 1:
            {
                // Every other element of the last dim of a buffer twice as wide.
                var wide = (int[])shape.Clone();
                wide[^1] = shape[^1] * 2;
                var buf = new double[Ref.Numel(wide)];
                for (int f = 0; f < n; f++)
                {
                    var idx = Ref.Unravel(f, shape);
                    idx[^1] *= 2;
                    buf[Ref.Ravel(idx, wide)] = values[f];
                }
                using var t = Tensor.FromArray(buf, wide).To(dtype);
                return t.Slice(-1, 0, wide[^1], 2);
            }
            case Kind.Offset:
            {
                var buf = new double[n + 3];
                Array.Copy(values, 0, buf, 3, n);
                using var t = Tensor.FromArray(buf).To(dtype);
                using var s = t.Narrow(0, 3, n);
                return s.View(shape);
            }
            default:
            {
                using var t = Tensor.FromArray(values, shape);
                return t.To(dtype);
            }
        }
    }

    /// <summary>The tensor's values as float64, row-major.</summary>
    public static double[] Values(Tensor t) => t.ToArray<double>();
}

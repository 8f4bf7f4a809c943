namespace Engine;

/// <summary>Shape arithmetic shared by every op: element counts, dim normalization, broadcasting, formatting.</summary>
public static class Shape
{
    /// <summary>Number of elements of a shape (1 for the 0-d shape).</summary>
    public static long Numel(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        return n;
    }

    /// <summary>Formats a shape as PyTorch prints it: <c>[2, 3]</c>.</summary>
    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    /// <summary>Maps a possibly negative dim into [0, rank), or throws naming <paramref name="op"/>.</summary>
    public static int NormalizeDim(int dim, int rank, string op)
    {
        int r = Math.Max(rank, 1); // a 0-d tensor accepts dim 0 and -1, as in PyTorch
        if (dim < -r || dim >= r)
            throw new ShapeException(op, $"dim {dim} is out of range for a tensor of rank {rank} (expected in [{-r}, {r - 1}])");
        return dim < 0 ? dim + r : dim;
    }

    /// <summary>The broadcast shape of two shapes (NumPy rules), or throws naming <paramref name="op"/>.</summary>
    public static int[] Broadcast(ReadOnlySpan<int> a, ReadOnlySpan<int> b, string op)
    {
        int n = Math.Max(a.Length, b.Length);
        var r = new int[n];
        for (int i = 0; i < n; i++)
        {
            int da = i < n - a.Length ? 1 : a[i - (n - a.Length)];
            int db = i < n - b.Length ? 1 : b[i - (n - b.Length)];
            if (da != db && da != 1 && db != 1)
                throw new ShapeException(op, $"shapes {Format(a)} and {Format(b)} cannot be broadcast together (dim {i}: {da} vs {db})");
            r[i] = da == 1 ? db : da;
        }
        return r;
    }

    /// <summary>Contiguous (row-major) strides for a shape.</summary>
    public static long[] ContiguousStrides(ReadOnlySpan<int> shape)
    {
        var s = new long[shape.Length];
        long acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--) { s[i] = acc; acc *= Math.Max(shape[i], 1); }
        return s;
    }

    /// <summary>Resolves one <c>-1</c> in a requested shape against an element count, validating the total.</summary>
    public static int[] Infer(ReadOnlySpan<int> requested, long numel, string op)
    {
        var r = requested.ToArray();
        int infer = -1;
        long known = 1;
        for (int i = 0; i < r.Length; i++)
        {
            if (r[i] == -1)
            {
                if (infer >= 0) throw new ShapeException(op, $"only one dimension can be inferred in {Format(requested)}");
                infer = i;
            }
            else if (r[i] < 0) throw new ShapeException(op, $"invalid shape dimension {r[i]} in {Format(requested)}");
            else known *= r[i];
        }
        if (infer >= 0)
        {
            if (known == 0 || numel % known != 0)
                throw new ShapeException(op, $"shape {Format(requested)} is invalid for input of size {numel}");
            r[infer] = (int)(numel / known);
        }
        else if (known != numel)
            throw new ShapeException(op, $"shape {Format(requested)} is invalid for input of size {numel}");
        return r;
    }
}

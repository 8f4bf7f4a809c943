namespace Engine;

/// <summary>
/// Where a tensor's elements sit in its storage: shape, element strides and a start offset. Immutable: every view
/// (transpose, narrow, expand, reshape without copy) is a new layout over the same storage. Backends read layouts;
/// they never see a tensor.
/// </summary>
public sealed class Layout
{
    readonly long[] _strides;

    /// <summary>Extent of each dim.</summary>
    public Shape Shape { get; }

    /// <summary>Element stride of each dim (0 for a broadcast dim), read-only.</summary>
    public ReadOnlySpan<long> Strides => _strides;

    /// <summary>Element offset of the first element in the storage.</summary>
    public long Offset { get; }

    /// <summary>Creates a layout from copies of <paramref name="shape"/> and <paramref name="strides"/> (one stride per dim).</summary>
    public Layout(ReadOnlySpan<int> shape, ReadOnlySpan<long> strides, long offset)
        : this(Shape.Own(shape.ToArray()), strides.ToArray(), offset) { }

    // Takes the arrays as they are: only for arrays the caller has just built and never writes again.
    Layout(Shape shape, long[] strides, long offset)
    {
        if (strides.Length != shape.Rank)
            throw new ArgumentException($"a layout needs one stride per dim: shape {shape}, strides [{string.Join(", ", strides)}]", nameof(strides));
        Shape = shape; _strides = strides; Offset = offset;
    }

    /// <summary>A layout over a shape and a strides array the caller has just built and never writes again: no copy.</summary>
    internal static Layout Own(Shape shape, long[] strides, long offset) => new(shape, strides, offset);

    /// <summary>The row-major contiguous layout of a shape at offset 0.</summary>
    public static Layout Contiguous(Shape shape) => new(shape, Shape.ContiguousStrides(shape), 0);

    /// <summary>Number of dims.</summary>
    public int Rank => Shape.Rank;

    /// <summary>Number of elements.</summary>
    public long Numel => Shape.Numel();

    /// <summary>True when the elements are row-major and dense (size-1 dims may have any stride).</summary>
    public bool IsContiguous
    {
        get
        {
            foreach (var d in Shape) if (d == 0) return true; // no elements: contiguous whatever the strides, as PyTorch
            long expected = 1;
            for (int i = Shape.Rank - 1; i >= 0; i--)
            {
                if (Shape[i] == 1) continue;
                if (Strides[i] != expected) return false;
                expected *= Shape[i];
            }
            return true;
        }
    }

    /// <summary>True when two elements share one storage slot (a dim of size &gt; 1 with stride 0): such a view cannot be written.</summary>
    public bool HasOverlap
    {
        get
        {
            for (int i = 0; i < Shape.Rank; i++) if (Shape[i] > 1 && Strides[i] == 0) return true;
            return false;
        }
    }

    /// <summary>The largest storage index this layout touches, plus one (0 when empty).</summary>
    public long StorageExtent
    {
        get
        {
            long max = Offset;
            for (int i = 0; i < Shape.Rank; i++)
            {
                if (Shape[i] == 0) return 0;
                max += (Shape[i] - 1) * Math.Max(Strides[i], 0);
            }
            return max + 1;
        }
    }

    /// <summary>Swaps two dims.</summary>
    public Layout Transpose(int d0, int d1)
    {
        var sh = Shape.ToArray(); var st = Strides.ToArray();
        (sh[d0], sh[d1]) = (sh[d1], sh[d0]);
        (st[d0], st[d1]) = (st[d1], st[d0]);
        return Own(Shape.Own(sh), st, Offset);
    }

    /// <summary>Reorders dims: result dim i is source dim <paramref name="perm"/>[i].</summary>
    public Layout Permute(ReadOnlySpan<int> perm)
    {
        var sh = new int[perm.Length]; var st = new long[perm.Length];
        for (int i = 0; i < perm.Length; i++) { sh[i] = Shape[perm[i]]; st[i] = Strides[perm[i]]; }
        return Own(Shape.Own(sh), st, Offset);
    }

    /// <summary>Keeps elements [start, start+length) of one dim.</summary>
    public Layout Narrow(int dim, int start, int length)
    {
        var sh = Shape.ToArray();
        sh[dim] = length;
        return Own(Shape.Own(sh), _strides, Offset + (length == 0 ? 0 : start * Strides[dim])); // strides shared: never written
    }

    /// <summary>Keeps every <paramref name="step"/>-th element of one dim from <paramref name="start"/>, <paramref name="count"/> of them.</summary>
    public Layout Slice(int dim, int start, int count, int step)
    {
        var sh = Shape.ToArray(); var st = Strides.ToArray();
        sh[dim] = count;
        // With two or more elements stride·step lies within the storage; with one or none the stride is never used,
        // and a huge step must not wrap it into nonsense.
        Int128 stepped = (Int128)Strides[dim] * step;
        st[dim] = stepped >= long.MinValue && stepped <= long.MaxValue ? (long)stepped : Strides[dim];
        return Own(Shape.Own(sh), st, Offset + (count == 0 ? 0 : start * Strides[dim]));
    }

    /// <summary>Removes one dim by fixing its index.</summary>
    public Layout Select(int dim, int index)
    {
        var sh = new int[Rank - 1]; var st = new long[Rank - 1];
        for (int i = 0, j = 0; i < Rank; i++) if (i != dim) { sh[j] = Shape[i]; st[j++] = Strides[i]; }
        return Own(Shape.Own(sh), st, Offset + index * Strides[dim]);
    }

    /// <summary>Inserts a size-1 dim at <paramref name="dim"/>.</summary>
    public Layout Unsqueeze(int dim)
    {
        var sh = new List<int>(Shape.AsSpan().ToArray()); var st = new List<long>(_strides);
        long stride = dim < Rank ? Strides[dim] * Shape[dim] : 1;
        sh.Insert(dim, 1); st.Insert(dim, stride);
        return Own(Shape.Own(sh.ToArray()), st.ToArray(), Offset);
    }

    /// <summary>Removes the given size-1 dims.</summary>
    public Layout Squeeze(ReadOnlySpan<int> dims)
    {
        var drop = new bool[Rank];
        foreach (var d in dims) if (Shape[d] == 1) drop[d] = true;
        var sh = new List<int>(); var st = new List<long>();
        for (int i = 0; i < Rank; i++) if (!drop[i]) { sh.Add(Shape[i]); st.Add(Strides[i]); }
        return Own(Shape.Own(sh.ToArray()), st.ToArray(), Offset);
    }

    /// <summary>Broadcasts to <paramref name="shape"/> (leading dims added, size-1 dims stretched with stride 0), or null if impossible.</summary>
    public Layout? TryBroadcastTo(ReadOnlySpan<int> shape)
    {
        int n = shape.Length, lead = n - Rank;
        if (lead < 0) return null;
        var st = new long[n];
        for (int i = 0; i < n; i++)
        {
            if (i < lead) { st[i] = 0; continue; }
            int d = Shape[i - lead];
            if (d == shape[i]) st[i] = Strides[i - lead];
            else if (d == 1) st[i] = 0;
            else return null;
        }
        return Own(new Shape(shape), st, Offset);
    }

    /// <summary>
    /// The same elements under a new shape without copying, when the strides allow it (as <c>torch.view</c>);
    /// null when a copy is needed.
    /// </summary>
    public Layout? TryView(Shape newShape)
    {
        if (IsContiguous) return Own(newShape, Shape.ContiguousStrides(newShape), Offset);
        // Merge the old dims into chunks of mutually contiguous dims, then split each chunk into the new dims
        // (the algorithm of PyTorch's computeStride).
        var newStrides = new long[newShape.Rank];
        if (Numel == 0) return Own(newShape, Shape.ContiguousStrides(newShape), Offset);
        int viewD = newShape.Rank - 1;
        long chunkBaseStride = Strides.Length > 0 ? Strides[^1] : 1;
        long tensorNumel = 1, viewNumel = 1;
        for (int tensorD = Rank - 1; tensorD >= 0; tensorD--)
        {
            tensorNumel *= Shape[tensorD];
            if (tensorD == 0 || (Shape[tensorD - 1] != 1 && Strides[tensorD - 1] != tensorNumel * chunkBaseStride))
            {
                while (viewD >= 0 && (viewNumel < tensorNumel || newShape[viewD] == 1))
                {
                    newStrides[viewD] = viewNumel * chunkBaseStride;
                    viewNumel *= newShape[viewD];
                    viewD--;
                }
                if (viewNumel != tensorNumel) return null;
                if (tensorD > 0) { chunkBaseStride = Strides[tensorD - 1]; tensorNumel = 1; viewNumel = 1; }
            }
        }
        if (viewD != -1) return null;
        return Own(newShape, newStrides, Offset);
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"shape {Shape}, strides [{string.Join(", ", _strides)}], offset {Offset}";
}

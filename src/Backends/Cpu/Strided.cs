namespace Engine.Backends.Cpu;

/// <summary>
/// Iteration over several operands laid out at one shape: dims that are contiguous in every operand are merged,
/// size-1 dims dropped, and the innermost dim is walked by a tight loop with one stride per operand. Operand 0 is
/// conventionally the output. A merged dim never passes <see cref="int.MaxValue"/> elements, so a tensor of more
/// elements than that is walked as several rows (every kernel loops over rows of at most that many), never as one
/// span whose length would wrap.
/// </summary>
public sealed class StridedPlan
{
    readonly int[] _outerShape;
    readonly long[][] _outerStrides;

    /// <summary>Base offset of each operand.</summary>
    public long[] Offsets { get; }

    /// <summary>Inner stride of each operand.</summary>
    public long[] InnerStrides { get; }

    /// <summary>Length of the innermost (merged) dim.</summary>
    public int Inner { get; }

    /// <summary>Number of inner rows.</summary>
    public long Outer { get; }

    /// <summary>True when every operand is dense with unit inner stride and one row covers everything.</summary>
    public bool IsDense => Outer == 1 && InnerStrides.All(s => s == 1);

    /// <summary>Plans the walk; every layout must have the shape of the first.</summary>
    public StridedPlan(params Layout[] layouts)
    {
        int n = layouts.Length;
        var shape = layouts[0].Shape;
        Offsets = layouts.Select(l => l.Offset).ToArray();
        // Built innermost first, merging each dim into the one inside it while it continues it in every operand: from
        // the inside out, the cap leaves the inner row as long as it can be.
        var dims = new List<int>();
        var strides = new List<long[]>();
        for (int d = shape.Length - 1; d >= 0; d--)
        {
            if (shape[d] == 1) continue;
            var s = new long[n];
            for (int k = 0; k < n; k++) s[k] = layouts[k].Strides[d];
            if (dims.Count > 0)
            {
                int last = dims.Count - 1;
                bool merge = (long)dims[last] * shape[d] <= int.MaxValue;
                for (int k = 0; k < n && merge; k++) merge = s[k] == strides[last][k] * dims[last];
                if (merge) { dims[last] *= shape[d]; continue; }
            }
            dims.Add(shape[d]); strides.Add(s);
        }
        dims.Reverse(); strides.Reverse();
        if (shape.Any(d => d == 0)) { dims.Clear(); dims.Add(0); strides.Clear(); strides.Add(new long[n]); }
        if (dims.Count == 0) { dims.Add(1); strides.Add(new long[n]); }
        Inner = dims[^1];
        InnerStrides = strides[^1];
        _outerShape = dims.Take(dims.Count - 1).ToArray();
        _outerStrides = strides.Take(strides.Count - 1).ToArray();
        long outer = 1;
        foreach (var d in _outerShape) outer *= d;
        Outer = Inner == 0 ? 0 : outer;
    }

    /// <summary>Writes each operand's element offset at the start of inner row <paramref name="row"/>.</summary>
    public void RowOffsets(long row, Span<long> offsets)
    {
        Offsets.CopyTo(offsets);
        for (int d = _outerShape.Length - 1; d >= 0 && row > 0; d--)
        {
            long i = row % _outerShape[d];
            row /= _outerShape[d];
            var s = _outerStrides[d];
            for (int k = 0; k < offsets.Length; k++) offsets[k] += i * s[k];
        }
    }

    /// <summary>Runs <paramref name="rowBody"/>(offsets) for every inner row, in parallel chunks for large work.</summary>
    public void ForEachRow(RowAction rowBody)
    {
        const long GrainElements = 1 << 15;
        long grain = Math.Max(1, GrainElements / Math.Max(Inner, 1));
        int n = Offsets.Length;
        CpuParallel.For(Outer, grain, (s, e) =>
        {
            Span<long> offs = stackalloc long[n];
            for (long r = s; r < e; r++) { RowOffsets(r, offs); rowBody(offs); }
        });
    }

    /// <summary>The body of one inner row: receives each operand's element offset.</summary>
    public delegate void RowAction(ReadOnlySpan<long> offsets);
}

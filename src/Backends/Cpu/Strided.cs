namespace Engine.Backends.Cpu;

/// <summary>
/// Iteration over several operands laid out at one shape, as rows: the shared <see cref="StridePlan"/> merges and
/// drops dims, and the innermost merged dim is walked by a tight loop with one stride per operand. Operand 0 is
/// conventionally the output. A merged dim never passes <see cref="int.MaxValue"/> elements, so a tensor of more
/// elements than that is walked as several rows (every kernel loops over rows of at most that many), never as one
/// span whose length would wrap.
/// </summary>
public sealed class StridedPlan
{
    readonly long[] _outerShape;
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
        var plan = StridePlan.Of(layouts, int.MaxValue);
        int n = layouts.Length;
        Offsets = plan.Offsets;
        if (plan.Rank == 0)
        {
            // One element (a row of one) or none (no rows).
            Inner = plan.Count == 0 ? 0 : 1;
            InnerStrides = new long[n];
            _outerShape = [];
            _outerStrides = [];
            Outer = plan.Count == 0 ? 0 : 1;
            return;
        }
        Inner = (int)plan.Dims[^1];
        InnerStrides = plan.Strides[^1];
        _outerShape = plan.Dims[..^1];
        _outerStrides = plan.Strides[..^1];
        Outer = plan.Count / Inner;
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

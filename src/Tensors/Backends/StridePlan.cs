namespace Engine.Backends;

/// <summary>
/// How to walk several operands laid out at one shape, planned once on the host for every backend: size-1 dims are
/// dropped and each dim that continues the one inside it in every operand (its stride is the inner dim's stride times
/// the inner dim's size) is merged into it. What is left is usually one or two dims, so a kernel needs one division
/// per element or none. Operand 0 is the output by convention. Each backend turns the plan into its own walk: the
/// CPU's <c>StridedPlan</c> (a tight inner loop per row) and CUDA's <c>Geometry</c> (a kernel parameter).
/// <para>
/// Merging goes from the inside out and stops at <c>maxDim</c> elements per merged dim, so that the inner dim stays as
/// long as it can be under the cap (the CPU walks rows of at most <see cref="int.MaxValue"/> elements). Without a cap
/// the order of merging does not matter: merging is transitive.
/// </para>
/// </summary>
public sealed class StridePlan
{
    /// <summary>Extent of each merged dim, outermost first; empty when the walk covers at most one element. Do not mutate.</summary>
    public long[] Dims { get; }

    /// <summary>For each merged dim (outermost first), each operand's element stride. Do not mutate.</summary>
    public long[][] Strides { get; }

    /// <summary>Each operand's element offset of the first element. Do not mutate.</summary>
    public long[] Offsets { get; }

    /// <summary>Number of elements walked (the product of the shape: 0 for an empty shape, 1 for a scalar).</summary>
    public long Count { get; }

    /// <summary>Number of merged dims.</summary>
    public int Rank => Dims.Length;

    /// <summary>Number of operands.</summary>
    public int Operands => Offsets.Length;

    StridePlan(long[] dims, long[][] strides, long[] offsets, long count)
    {
        Dims = dims; Strides = strides; Offsets = offsets; Count = count;
    }

    /// <summary>
    /// Plans the walk over <paramref name="layouts"/>, which must all have the shape of the first; no merged dim
    /// exceeds <paramref name="maxDim"/> elements (a dim already larger is kept as it is).
    /// </summary>
    public static StridePlan Of(ReadOnlySpan<Layout> layouts, long maxDim = long.MaxValue)
    {
        int n = layouts.Length;
        if (n == 0) throw new ArgumentException("a stride plan needs at least one operand", nameof(layouts));
        var shape = layouts[0].Shape;
        var offsets = new long[n];
        for (int k = 0; k < n; k++)
        {
            if (layouts[k].Rank != shape.Rank)
                throw new ArgumentException($"operand {k} has rank {layouts[k].Rank}, operand 0 has rank {shape.Rank}", nameof(layouts));
            offsets[k] = layouts[k].Offset;
        }
        long count = Shape.Numel(shape);
        if (count <= 1) return new StridePlan([], [], offsets, count);

        // Innermost first while building, so that a dim merges into the one inside it.
        var dims = new List<long>(shape.Rank);
        var strides = new List<long[]>(shape.Rank);
        for (int d = shape.Rank - 1; d >= 0; d--)
        {
            if (shape[d] == 1) continue;
            var s = new long[n];
            for (int k = 0; k < n; k++) s[k] = layouts[k].Strides[d];
            if (dims.Count > 0)
            {
                int last = dims.Count - 1;
                bool merge = dims[last] <= maxDim / shape[d];
                for (int k = 0; k < n && merge; k++) merge = s[k] == strides[last][k] * dims[last];
                if (merge) { dims[last] *= shape[d]; continue; }
            }
            dims.Add(shape[d]); strides.Add(s);
        }
        dims.Reverse(); strides.Reverse();
        return new StridePlan([.. dims], [.. strides], offsets, count);
    }

    /// <summary>Each operand's element offset at row-major position <paramref name="index"/> of the walk (the plain reference walk).</summary>
    public void OffsetsAt(long index, Span<long> offsets)
    {
        Offsets.CopyTo(offsets);
        for (int d = Dims.Length - 1; d >= 0 && index > 0; d--)
        {
            long i = index % Dims[d];
            index /= Dims[d];
            var s = Strides[d];
            for (int k = 0; k < offsets.Length; k++) offsets[k] += i * s[k];
        }
    }
}

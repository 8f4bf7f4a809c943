namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// A reduction's geometry: the outer (kept) dims, one output each, and the reduced block walked in row-major order
/// as rows of a <see cref="StridedPlan"/> (contiguous reduced dims merged, so a dense block is one row).
/// </summary>
sealed class ReducePlan
{
    readonly int[] _outerShape;
    readonly long[] _outerStrides;
    readonly long _offset;

    public ReducePlan(Layout x, int reducedDims)
    {
        int kept = x.Rank - reducedDims;
        _outerShape = x.Shape.AsSpan()[..kept].ToArray();
        _outerStrides = x.Strides[..kept].ToArray();
        _offset = x.Offset;
        OuterCount = Shape.Numel(_outerShape);
        var blockShape = x.Shape[kept..];
        BlockSize = Shape.Numel(blockShape);
        Block = new StridedPlan(new Layout(blockShape, x.Strides[kept..], 0));
    }

    /// <summary>Number of outputs.</summary>
    public long OuterCount { get; }

    /// <summary>Elements reduced into each output.</summary>
    public long BlockSize { get; }

    /// <summary>The walk of one block (offsets relative to the block's start).</summary>
    public StridedPlan Block { get; }

    /// <summary>Element offset of the first element of output <paramref name="o"/>'s block.</summary>
    public long OuterOffset(long o)
    {
        long off = _offset;
        for (int d = _outerShape.Length - 1; d >= 0 && o > 0; d--)
        {
            off += o % _outerShape[d] * _outerStrides[d];
            o /= _outerShape[d];
        }
        return off;
    }

    /// <summary>The x stride of the innermost kept dim: the distance between neighbouring outputs' blocks (0 when there is none).</summary>
    public long LastOuterStride => _outerShape.Length == 0 ? 0 : _outerStrides[^1];

    /// <summary>Extent of the innermost kept dim (1 when there is none).</summary>
    public int LastOuterSize => _outerShape.Length == 0 ? 1 : _outerShape[^1];

    /// <summary>
    /// True when neighbouring outputs are closer in memory than neighbouring block elements (a reduction over a
    /// leading dim): the column walk then reads memory in order where the row walk would stride through it.
    /// </summary>
    public bool UseColumns => LastOuterSize >= 8 && BlockSize > 1 && Math.Abs(LastOuterStride) < Math.Abs(Block.InnerStrides[0]);
}

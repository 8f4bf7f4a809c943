using Engine.Graph;
namespace Engine;

/// <summary>One index of the tensor indexer: an integer (removes the dim), a range (keeps it), <see cref="All"/> or <see cref="NewAxis"/>.</summary>
public readonly struct TensorIndex
{
    internal enum Kind { Int, Range, NewAxis }
    internal Kind K { get; }
    internal int Int { get; }
    internal Range Range { get; }
    internal int Step { get; }
    internal bool FromEnd { get; }

    TensorIndex(Kind k, int i, Range r, int step, bool fromEnd = false) { K = k; Int = i; Range = r; Step = step; FromEnd = fromEnd; }

    /// <summary>An integer index (negative counts from the end).</summary>
    public static implicit operator TensorIndex(int i) => new(Kind.Int, i, default, 1);

    /// <summary>A C# index: <c>^1</c> is the last element (as Python's <c>-1</c>).</summary>
    public static implicit operator TensorIndex(Index i) => new(Kind.Int, i.Value, default, 1, i.IsFromEnd);

    /// <summary>A range (as Python's <c>a:b</c>).</summary>
    public static implicit operator TensorIndex(Range r) => new(Kind.Range, 0, r, 1);

    /// <summary>A range with a step (as Python's <c>a:b:step</c>), step &gt; 0.</summary>
    public static TensorIndex Slice(Range r, int step) => new(Kind.Range, 0, r, step);

    /// <summary>The whole dim (Python's <c>:</c>).</summary>
    public static TensorIndex All => new(Kind.Range, 0, Range.All, 1);

    /// <summary>Inserts a size-1 dim (Python's <c>None</c>).</summary>
    public static TensorIndex NewAxis => new(Kind.NewAxis, 0, default, 1);
}

public sealed partial class Tensor
{
    /// <summary>Indexes dims from the left: integers select, ranges slice, NewAxis inserts; the result is a view.</summary>
    [System.Runtime.CompilerServices.IndexerName("At")]
    public Tensor this[params TensorIndex[] indices]
    {
        get
        {
            var t = NewView(Layout).RecordIdentity(this);
            int dim = 0;
            try
            {
                foreach (var idx in indices)
                {
                    Tensor next;
                    switch (idx.K)
                    {
                        case TensorIndex.Kind.Int:
                            if (dim >= t.Rank) throw new ShapeException("Index", $"too many indices for a tensor of rank {Rank}");
                            int index = idx.Int;
                            if (idx.FromEnd)
                            {
                                // ^k counts from the end; ^0 and ^(size+1) are out of range (not wrapped).
                                int size0 = t.Layout.Shape[dim];
                                if (index < 1 || index > size0)
                                    throw new ShapeException("Index", $"index ^{index} is out of bounds for dim {dim} with size {size0}");
                                index = size0 - index;
                            }
                            next = t.Select(dim, index);
                            break;
                        case TensorIndex.Kind.NewAxis:
                            next = t.Unsqueeze(dim++);
                            break;
                        default:
                            if (dim >= t.Rank) throw new ShapeException("Index", $"too many indices for a tensor of rank {Rank}");
                            int size = t.Layout.Shape[dim];
                            var (start, len) = ClampRange(idx.Range, size);
                            next = t.Slice(dim++, start, start + len, idx.Step);
                            break;
                    }
                    t.Dispose();
                    t = next;
                }
            }
            catch
            {
                t.Dispose();
                throw;
            }
            return t;
        }
    }

    static (int, int) ClampRange(Range r, int size)
    {
        int s = r.Start.IsFromEnd ? size - r.Start.Value : r.Start.Value;
        int e = r.End.IsFromEnd ? size - r.End.Value : r.End.Value;
        s = Math.Clamp(s, 0, size); e = Math.Clamp(e, 0, size);
        return (s, Math.Max(0, e - s));
    }

    /// <summary>Swaps two dims (a view).</summary>
    public Tensor Transpose(int dim0, int dim1)
    {
        int a = Shape.NormalizeDim(dim0, Rank, "Transpose"), b = Shape.NormalizeDim(dim1, Rank, "Transpose");
        if (Rank == 0) return NewView(Layout).RecordIdentity(this);
        var v = NewView(Layout.Transpose(a, b));
        return ShouldRecord(this) ? v.Record(new TransposeBackward(a, b), this) : v;
    }

    /// <summary>The transpose of a matrix (a view); for other ranks, the dims reversed, as PyTorch's <c>.T</c>.</summary>
    public Tensor T => Rank <= 2 ? (Rank < 2 ? NewView(Layout).RecordIdentity(this) : Transpose(0, 1)) : Permute(Enumerable.Range(0, Rank).Reverse().ToArray());

    /// <summary>Reorders dims (a view): result dim i is input dim <paramref name="dims"/>[i].</summary>
    public Tensor Permute(params int[] dims)
    {
        if (dims.Length != Rank) throw new ShapeException("Permute", $"number of dims {dims.Length} does not match the rank {Rank} of {Describe()}");
        var perm = new int[Rank];
        var seen = new bool[Rank];
        for (int i = 0; i < Rank; i++)
        {
            perm[i] = Shape.NormalizeDim(dims[i], Rank, "Permute");
            if (seen[perm[i]]) throw new ShapeException("Permute", $"repeated dim in [{string.Join(", ", dims)}]");
            seen[perm[i]] = true;
        }
        var v = NewView(Layout.Permute(perm));
        return ShouldRecord(this) ? v.Record(new PermuteBackward(perm), this) : v;
    }

    /// <summary>Elements [start, start+length) of a dim (a view), as <c>torch.narrow</c>.</summary>
    public Tensor Narrow(int dim, int start, int length)
    {
        int d = Shape.NormalizeDim(dim, Rank, "Narrow");
        int size = Layout.Shape[d];
        if (start < 0) start += size;
        if (start < 0 || length < 0 || start + length > size)
            throw new ShapeException("Narrow", $"start {start} and length {length} are out of range for dim {d} of size {size} ({Describe()})");
        var v = NewView(Layout.Narrow(d, start, length));
        return ShouldRecord(this) ? v.Record(new SliceBackward(d, start, length, 1), this) : v;
    }

    /// <summary>Elements start, start+step, ... below end of a dim (a view), as Python's <c>x[start:end:step]</c>; bounds are clamped.</summary>
    public Tensor Slice(int dim, int start, int end, int step = 1)
    {
        int d = Shape.NormalizeDim(dim, Rank, "Slice");
        if (step <= 0) throw new ShapeException("Slice", $"slice step must be positive, got {step}");
        int size = Layout.Shape[d];
        if (start < 0) start += size;
        if (end < 0) end += size;
        start = Math.Clamp(start, 0, size); end = Math.Clamp(end, start, size);
        int count = (end - start + step - 1) / step;
        var v = NewView(Layout.Slice(d, start, count, step));
        return ShouldRecord(this) ? v.Record(new SliceBackward(d, start, count, step), this) : v;
    }

    /// <summary>Fixes one dim at an index, removing it (a view), as <c>torch.select</c>.</summary>
    public Tensor Select(int dim, int index)
    {
        int d = Shape.NormalizeDim(dim, Rank, "Select");
        if (Rank == 0) throw new ShapeException("Select", "cannot index a 0-d tensor");
        int size = Layout.Shape[d];
        if (index < -size || index >= size)
            throw new ShapeException("Select", $"index {index} is out of bounds for dim {d} with size {size} ({Describe()})");
        if (index < 0) index += size;
        var v = NewView(Layout.Select(d, index));
        return ShouldRecord(this) ? v.Record(new SelectBackward(d, index), this) : v;
    }

    /// <summary>Inserts a size-1 dim at <paramref name="dim"/> (a view; dim may equal the rank).</summary>
    public Tensor Unsqueeze(int dim)
    {
        int d = Shape.NormalizeDim(dim, Rank + 1, "Unsqueeze");
        return NewView(Layout.Unsqueeze(d)).RecordReshape(this);
    }

    /// <summary>Removes every size-1 dim (a view).</summary>
    public Tensor Squeeze() => NewView(Layout.Squeeze(Enumerable.Range(0, Rank).ToArray())).RecordReshape(this);

    /// <summary>Removes <paramref name="dim"/> if its size is 1 (a view).</summary>
    public Tensor Squeeze(int dim)
    {
        if (Rank == 0) return NewView(Layout).RecordIdentity(this);
        int d = Shape.NormalizeDim(dim, Rank, "Squeeze");
        return NewView(Layout.Squeeze([d])).RecordReshape(this);
    }

    /// <summary>The same elements under a new shape, without copying; one dim may be −1. Throws when the strides do not allow a view (use <see cref="Reshape"/>).</summary>
    public Tensor View(params ReadOnlySpan<int> shape)
    {
        var s = Shape.Own(Shape.Infer(shape, Numel, "View"));
        var l = Layout.TryView(s) ?? throw new ShapeException("View",
            $"view size {Shape.Format(s)} is not compatible with input tensor's size and stride ({Layout}); use Reshape instead");
        return NewView(l).RecordReshape(this);
    }

    /// <summary>The same elements under a new shape: a view when possible, a copy otherwise (as <c>torch.reshape</c>).</summary>
    public Tensor Reshape(params ReadOnlySpan<int> shape)
    {
        var s = Shape.Own(Shape.Infer(shape, Numel, "Reshape"));
        var l = Layout.TryView(s);
        if (l is not null) return NewView(l).RecordReshape(this);
        using var c = CastCopy(DType, Device, "Reshape");
        return new Tensor(c.Storage, Layout.Contiguous(s)).RecordReshape(this); // owns the copy: not a view
    }

    /// <summary>Merges dims <paramref name="startDim"/>..<paramref name="endDim"/> into one.</summary>
    public Tensor Flatten(int startDim = 0, int endDim = -1)
    {
        if (Rank == 0) return Reshape(1);
        int s = Shape.NormalizeDim(startDim, Rank, "Flatten"), e = Shape.NormalizeDim(endDim, Rank, "Flatten");
        if (s > e) throw new ShapeException("Flatten", $"startDim {startDim} cannot come after endDim {endDim}");
        var shape = new List<int>();
        for (int i = 0; i < s; i++) shape.Add(Layout.Shape[i]);
        long m = 1;
        for (int i = s; i <= e; i++) m *= Layout.Shape[i];
        if (m > int.MaxValue)
            throw new ShapeException("Flatten", $"merging dims {s}..{e} of {Describe()} gives a dim of {m}, more than a dim can hold ({int.MaxValue})");
        shape.Add((int)m);
        for (int i = e + 1; i < Rank; i++) shape.Add(Layout.Shape[i]);
        return Reshape([.. shape]);
    }

    /// <summary>Broadcasts size-1 dims (and new leading dims) to <paramref name="shape"/> without copying; −1 keeps a dim.</summary>
    public Tensor Expand(params ReadOnlySpan<int> shape)
    {
        var target = shape.ToArray();
        int lead = target.Length - Rank;
        for (int i = 0; i < target.Length; i++)
            if (target[i] == -1)
            {
                if (i < lead) throw new ShapeException("Expand", $"-1 is not allowed in a leading, non-existing dimension of {Shape.Format(shape)}");
                target[i] = Layout.Shape[i - lead];
            }
            else if (target[i] < 0) throw new ShapeException("Expand", $"invalid size {target[i]} in {Shape.Format(shape)}");
        Shape.CheckedNumel(target, "Expand"); // a view too must have a countable number of elements
        var l = Layout.TryBroadcastTo(target) ?? throw new ShapeException("Expand",
            $"the expanded size {Shape.Format(target)} must match the existing size {Shape.Format(Layout.Shape)} at non-singleton dims");
        var v = NewView(l);
        return ShouldRecord(this) ? v.Record(new ExpandBackward(), this) : v;
    }

    /// <summary>Expands to another tensor's shape.</summary>
    public Tensor ExpandAs(Tensor other) => Expand(other.Layout.Shape);

    /// <summary>Records a view or copy under another shape (View, Reshape, Flatten, Unsqueeze, Squeeze).</summary>
    Tensor RecordReshape(Tensor input) => ShouldRecord(input) ? Record(new ReshapeBackward(), input) : this;

    // Autograd definitions of the views: the gradient of a view is the inverse view of the gradient (no copy) or,
    // for views that drop elements (Slice, Select), the gradient written into zeros of the input's shape.

    internal sealed class TransposeBackward(int dim0, int dim1) : GradFunction
    {
        internal (int Dim0, int Dim1) Dims => (dim0, dim1);
        protected internal override Tensor?[] Backward(Tensor grad) => [grad.Transpose(dim0, dim1)];
    }

    // Result dim i is input dim perm[i], so input dim perm[i] is gradient dim i.
    internal sealed class PermuteBackward(int[] perm) : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var inverse = new int[perm.Length];
            for (int i = 0; i < perm.Length; i++) inverse[perm[i]] = i;
            return [grad.Permute(inverse)];
        }
    }

    // Also recorded by Narrow (step 1) and the indexer's ranges.
    internal sealed class SliceBackward(int dim, int start, int count, int step) : GradFunction
    {
        // Which part of the input the slice is (the executor recognises gradients that already tile the input).
        internal (int Dim, int Start, int Count, int Step) Region => (dim, start, count, step);

        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var z = Zeros(Input(0).Shape, grad.DType, grad.Device);
            if (count > 0) z.Slice(dim, start, start + (count - 1) * step + 1, step).CopyInPlace(grad);
            return [z];
        }

        protected internal override bool TryAccumulateInto(Tensor accumulated, Tensor grad)
        {
            if (count == 0) return true;
            using var region = accumulated.Slice(dim, start, start + (count - 1) * step + 1, step);
            region.AddInPlace(grad);
            return true;
        }
    }

    internal sealed class SelectBackward(int dim, int index) : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var z = Zeros(Input(0).Shape, grad.DType, grad.Device);
            z.Select(dim, index).CopyInPlace(grad);
            return [z];
        }

        protected internal override bool TryAccumulateInto(Tensor accumulated, Tensor grad)
        {
            using var region = accumulated.Select(dim, index);
            region.AddInPlace(grad);
            return true;
        }
    }

    // A copy only when the gradient's strides do not allow a view.
    internal sealed class ReshapeBackward : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad) => [grad.Reshape(Input(0).Shape)];
    }

    // Broadcasting without copying: the executor sums the gradient over the broadcast dims.
    internal sealed class ExpandBackward : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad) => [grad];
    }
}

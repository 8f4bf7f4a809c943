using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    // ---- gather / scatter ----

    /// <summary>
    /// Picks values along <paramref name="dim"/> by index, as <c>torch.gather</c>: out[..., j, ...] =
    /// x[..., index[..., j, ...], ...]. The index has the input's rank, index.Size(d) ≤ Size(d) for d ≠ dim, and the
    /// result has the index's shape. An int32 index is accepted too. An index outside [0, Size(dim)), negative ones
    /// included, throws <see cref="ShapeException"/> as PyTorch's, before any kernel runs (on a device index: at the
    /// next synchronization, by the kernel, which still wraps negative indices).
    /// </summary>
    public Tensor Gather(int dim, Tensor index)
    {
        const string op = "Gather";
        CheckSameDevice(op, this, index);
        CheckIndexType(op, index);
        int d = Shape.NormalizeDim(dim, Rank, op);
        var xl = AtLeast1D(Layout);
        var il = AtLeast1D(index.Layout);
        if (il.Rank != xl.Rank)
            throw new ShapeException(op, $"index {Shape.Format(index.Layout.Shape)} must have the same number of dims as the input {Describe()}");
        for (int k = 0; k < xl.Rank; k++)
            if (k != d && il.Shape[k] > xl.Shape[k])
                throw new ShapeException(op, $"size does not match at dim {k}: expected index {Shape.Format(index.Layout.Shape)} to be no larger than the input {Shape.Format(Layout.Shape)} apart from dim {d}");
        CheckIndexRange(op, index, d, xl.Shape[d]);
        var (outer, count, inner) = Split3(op, il.Shape, d);
        // The input seen at the index's extent in every dim but dim: a view, so the kernel's [outer, size, inner] lines up.
        var xs = il.Shape.ToArray();
        xs[d] = xl.Shape[d];
        var xv = new Layout(xs, xl.Strides, xl.Offset);
        using var idx = IndexAsInt64(op, index);
        var y = Empty(op, index.Layout.Shape, DType, Device);
        try
        {
            Backend.Gather(Storage, xv, idx.Storage, AtLeast1D(idx.Layout), y.Storage, outer, xl.Shape[d], count, inner);
        }
        catch (ShapeException e)
        {
            y.Dispose();
            throw Rename(op, e, d);
        }
        return ShouldRecord(this) ? y.Record(new GatherBackward(d, idx), this) : y;
    }

    /// <summary>
    /// This tensor plus <paramref name="source"/>'s values added at the positions <paramref name="index"/> names
    /// along <paramref name="dim"/>, as <c>torch.scatter_add</c> (out of place): out[..., index[..., j, ...], ...] +=
    /// source[..., j, ...]. The index has the input's rank, index.Size(d) ≤ source.Size(d) for every d and ≤ Size(d)
    /// for d ≠ dim; source has this tensor's dtype. Duplicate indices accumulate in a fixed order (deterministic).
    /// </summary>
    public Tensor ScatterAdd(int dim, Tensor index, Tensor source)
    {
        const string op = "ScatterAdd";
        CheckSameDevice(op, this, index);
        CheckSameDevice(op, this, source);
        CheckIndexType(op, index);
        if (source.DType != DType)
            throw new DTypeException(op, $"expected the source's dtype {source.DType.Name()} to equal the input's {DType.Name()}");
        int d = Shape.NormalizeDim(dim, Rank, op);
        var xl = AtLeast1D(Layout);
        var il = AtLeast1D(index.Layout);
        var sl = AtLeast1D(source.Layout);
        if (il.Rank != xl.Rank || sl.Rank != xl.Rank)
            throw new ShapeException(op, $"index {Shape.Format(index.Layout.Shape)} and source {Shape.Format(source.Layout.Shape)} must have the same number of dims as the input {Describe()}");
        for (int k = 0; k < xl.Rank; k++)
            if (il.Shape[k] > sl.Shape[k] || k != d && il.Shape[k] > xl.Shape[k])
                throw new ShapeException(op, $"size does not match at dim {k}: expected index {Shape.Format(index.Layout.Shape)} to be no larger than the source {Shape.Format(source.Layout.Shape)}, and than the input {Shape.Format(Layout.Shape)} apart from dim {d}");
        CheckIndexRange(op, index, d, xl.Shape[d]);
        var (outer, count, inner) = Split3(op, il.Shape, d);
        using var idx = IndexAsInt64(op, index);
        var y = CastCopy(DType, Device, op);
        try
        {
            // The kernel adds into a dense [outer, size, inner] block: the whole result when the index spans every
            // other dim, else a dense copy of the region it reaches, copied back afterwards.
            var rs = il.Shape.ToArray();
            rs[d] = xl.Shape[d];
            var yl = AtLeast1D(y.Layout);
            var region = new Layout(rs, yl.Strides, 0);
            var sv = new Layout(il.Shape.ToArray(), sl.Strides, sl.Offset);
            if (rs.AsSpan().SequenceEqual(yl.Shape))
                Backend.ScatterAdd(source.Storage, sv, idx.Storage, AtLeast1D(idx.Layout), y.Storage, outer, xl.Shape[d], count, inner);
            else
            {
                using var block = Empty(op, rs, DType, Device);
                Backend.Copy(y.Storage, region, block.Storage, block.Layout);
                Backend.ScatterAdd(source.Storage, sv, idx.Storage, AtLeast1D(idx.Layout), block.Storage, outer, xl.Shape[d], count, inner);
                Backend.Copy(block.Storage, block.Layout, y.Storage, region);
            }
        }
        catch (ShapeException e)
        {
            y.Dispose();
            throw Rename(op, e, d);
        }
        return ShouldRecord(this, source) ? y.Record(new ScatterAddBackward(d, idx), this, source) : y;
    }

    /// <summary>
    /// The slices of this tensor along <paramref name="dim"/> named by a 1-D int64 or int32 index, in its order, as
    /// <c>torch.index_select</c>; the result has the input's shape with Size(dim) replaced by the index's length.
    /// Indices must lie in [0, Size(dim)), as PyTorch's (negative ones throw <see cref="ShapeException"/>).
    /// </summary>
    public Tensor IndexSelect(int dim, Tensor index)
    {
        const string op = "IndexSelect";
        CheckSameDevice(op, this, index);
        CheckIndexType(op, index);
        if (index.Rank > 1) throw new ShapeException(op, $"the index must be a vector, got {index.Describe()}");
        int d = Shape.NormalizeDim(dim, Rank, op);
        int n = checked((int)index.Numel);
        if (Rank == 0 && n != 1) throw new ShapeException(op, $"a 0-d input takes an index of one element, got {index.Describe()}");
        var xl = AtLeast1D(Layout);
        CheckIndexRange(op, index, d, xl.Shape[d]);
        var ys = xl.Shape.ToArray();
        ys[d] = n;
        var (outer, _, inner) = Split3(op, ys, d);
        using var idx = IndexAsInt64(op, index);
        var y = Empty(op, Rank == 0 ? [] : ys, DType, Device);
        try
        {
            Backend.Gather(Storage, xl, idx.Storage, AlongDim(idx, ys, d), y.Storage, outer, xl.Shape[d], n, inner);
        }
        catch (ShapeException e)
        {
            y.Dispose();
            throw Rename(op, e, d);
        }
        return ShouldRecord(this) ? y.Record(new IndexSelectBackward(d, idx), this) : y;
    }

    /// <summary>
    /// This tensor plus <paramref name="source"/>'s slices added along <paramref name="dim"/> at the positions of a
    /// 1-D index, as <c>torch.index_add</c> (out of place, alpha 1): out.Select(dim, index[k]) += source.Select(dim, k).
    /// source has this tensor's shape with Size(dim) replaced by the index's length, and this tensor's dtype.
    /// Duplicate indices accumulate in a fixed order.
    /// </summary>
    public Tensor IndexAdd(int dim, Tensor index, Tensor source)
    {
        const string op = "IndexAdd";
        CheckSameDevice(op, this, index);
        CheckSameDevice(op, this, source);
        CheckIndexType(op, index);
        if (index.Rank > 1) throw new ShapeException(op, $"the index must be a vector, got {index.Describe()}");
        if (source.DType != DType)
            throw new DTypeException(op, $"expected the source's dtype {source.DType.Name()} to equal the input's {DType.Name()}");
        int d = Shape.NormalizeDim(dim, Rank, op);
        int n = checked((int)index.Numel);
        var xl = AtLeast1D(Layout);
        var sl = AtLeast1D(source.Layout);
        var expect = xl.Shape.ToArray();
        expect[d] = n;
        if (!sl.Shape.AsSpan().SequenceEqual(expect))
            throw new ShapeException(op, $"source {Shape.Format(source.Layout.Shape)} must be {Shape.Format(expect)}: the input {Shape.Format(Layout.Shape)} with dim {d} the index's length {n}");
        CheckIndexRange(op, index, d, xl.Shape[d]);
        var (outer, _, inner) = Split3(op, expect, d);
        using var idx = IndexAsInt64(op, index);
        var y = CastCopy(DType, Device, op);
        try
        {
            Backend.ScatterAdd(source.Storage, sl, idx.Storage, AlongDim(idx, expect, d), y.Storage, outer, xl.Shape[d], n, inner);
        }
        catch (ShapeException e)
        {
            y.Dispose();
            throw Rename(op, e, d);
        }
        return ShouldRecord(this, source) ? y.Record(new IndexAddBackward(d, idx), this, source) : y;
    }

    /// <summary>
    /// Looks up rows of a 2-D <paramref name="weight"/> [V, D] by integer <paramref name="indices"/> of any shape, as
    /// <c>torch.nn.functional.embedding(input, weight, padding_idx)</c>; the result has shape indices.shape + [D]. Its
    /// gradient adds each output row's gradient into its weight row, except for the row
    /// <paramref name="paddingIdx"/> (negative counts from the end), which gets none (no max norm).
    /// Indices must lie in [0, V), as PyTorch's (negative ones throw <see cref="ShapeException"/>).
    /// </summary>
    public static Tensor Embedding(Tensor indices, Tensor weight, int? paddingIdx = null)
    {
        const string op = "Embedding";
        CheckSameDevice(op, weight, indices);
        CheckIndexType(op, indices);
        if (weight.Rank != 2) throw new ShapeException(op, $"the weight must be 2-D, got {weight.Describe()}");
        int v = weight.Layout.Shape[0], dm = weight.Layout.Shape[1];
        if (paddingIdx is int p)
        {
            if (p < -v || p >= v) throw new ShapeException(op, $"paddingIdx {p} must be within the {v} rows of the weight {weight.Describe()}");
            paddingIdx = p < 0 ? p + v : p;
        }
        if (indices.Numel > int.MaxValue)
            throw new ShapeException(op, $"the indices {indices.Describe()} have {indices.Numel} elements, more than the {int.MaxValue} one lookup takes");
        CheckIndexRange(op, indices, 0, v);
        int n = (int)indices.Numel;
        // A flat int64 index, read by the kernel at every column of the row (stride 0 along D).
        using var flat = indices.DType == DType.Int64 && indices.IsContiguous ? indices.Alias() : indices.CastCopy(DType.Int64, indices.Device);
        using var flat1 = flat.NewView(new Layout([n], [1], flat.Layout.Offset));
        var y = Empty(op, [.. indices.Layout.Shape, dm], weight.DType, weight.Device);
        try
        {
            weight.Backend.Gather(weight.Storage, weight.Layout, flat1.Storage, new Layout([n, dm], [1, 0], flat1.Layout.Offset), y.Storage, 1, v, n, dm);
        }
        catch (ShapeException e)
        {
            y.Dispose();
            throw RenameFor(op, e, 0, weight.Describe());
        }
        return ShouldRecord(weight) ? y.Record(new EmbeddingBackward(paddingIdx, flat1), weight) : y;
    }

    // ---- joining and splitting ----

    /// <summary>
    /// Concatenates tensors along <paramref name="dim"/>, as <c>torch.cat</c>: all of one rank with equal sizes
    /// except in dim, on one device; the dtype is their promoted type. As in PyTorch, 1-D empty tensors (shape [0])
    /// are skipped whatever the others' shapes (they still take part in type promotion).
    /// </summary>
    public static Tensor Cat(Tensor[] tensors, int dim = 0)
    {
        const string op = "Cat";
        ArgumentNullException.ThrowIfNull(tensors);
        if (tensors.Length == 0) throw new ShapeException(op, "expected a non-empty list of tensors");
        var dt = tensors[0].DType;
        int first = -1;
        for (int i = 0; i < tensors.Length; i++)
        {
            var t = tensors[i];
            if (t.Rank == 0) throw new ShapeException(op, $"zero-dimensional tensor (at position {i}) cannot be concatenated");
            CheckSameDevice(op, tensors[0], t);
            dt = DTypes.Promote(dt, t.DType);
            if (first < 0 && !IsSkippedInCat(t)) first = i;
        }
        var refShape = first < 0 ? new Shape(0) : tensors[first].Layout.Shape;
        int d = Shape.NormalizeDim(dim, refShape.Rank, op);
        long total = 0;
        var sizes = new int[tensors.Length];
        for (int i = 0; i < tensors.Length; i++)
        {
            var t = tensors[i];
            if (first < 0 || IsSkippedInCat(t)) { sizes[i] = -1; continue; }
            var s = t.Layout.Shape;
            if (s.Rank != refShape.Rank)
                throw new ShapeException(op, $"tensors must have the same number of dims: tensor {first} is {Shape.Format(refShape)} but tensor {i} is {Shape.Format(s)}");
            for (int k = 0; k < s.Rank; k++)
                if (k != d && s[k] != refShape[k])
                    throw new ShapeException(op, $"sizes of tensors must match except in dim {d}: expected size {refShape[k]} but got size {s[k]} in dim {k} for tensor {i} ({Shape.Format(refShape)} and {Shape.Format(s)})");
            sizes[i] = s[d];
            total += s[d];
        }
        var shape = refShape.ToArray();
        if (total > int.MaxValue)
            throw new ShapeException(op, $"the concatenated dim {d} would have {total} elements, more than a dim can hold ({int.MaxValue})");
        shape[d] = first < 0 ? 0 : (int)total;
        var y = Empty(op, shape, dt, tensors[0].Device);
        int start = 0;
        for (int i = 0; i < tensors.Length; i++)
        {
            if (sizes[i] < 0) continue;
            using var part = y.Narrow(d, start, sizes[i]);
            tensors[i].CopyInto(part);
            start += sizes[i];
        }
        return ShouldRecord(tensors) ? y.Record(new CatBackward(d, sizes), tensors) : y;
    }

    static bool IsSkippedInCat(Tensor t) => t.Rank == 1 && t.Layout.Shape[0] == 0;

    /// <summary>Copies this tensor's values into <paramref name="destination"/> (a view of the same shape), converting dtype. Not recorded.</summary>
    internal void CopyInto(Tensor destination)
    {
        if (!destination.Layout.Shape.AsSpan().SequenceEqual(Layout.Shape))
            throw new ShapeException("Copy", $"cannot copy {Describe()} into {destination.Describe()}");
        CheckSameDevice("Copy", this, destination);
        Backend.Copy(Storage, Layout, destination.Storage, destination.Layout);
    }

    /// <summary>Joins tensors of one shape along a new dim <paramref name="dim"/> (in [−rank−1, rank]), as <c>torch.stack</c>.</summary>
    public static Tensor Stack(Tensor[] tensors, int dim = 0)
    {
        const string op = "Stack";
        ArgumentNullException.ThrowIfNull(tensors);
        if (tensors.Length == 0) throw new ShapeException(op, "expected a non-empty list of tensors");
        var s0 = tensors[0].Layout.Shape;
        for (int i = 1; i < tensors.Length; i++)
            if (tensors[i].Layout.Shape != s0)
                throw new ShapeException(op, $"expects each tensor to be equal size, but got {Shape.Format(s0)} at entry 0 and {Shape.Format(tensors[i].Layout.Shape)} at entry {i}");
        int d = Shape.NormalizeDim(dim, s0.Rank + 1, op);
        var parts = new Tensor[tensors.Length];
        try
        {
            for (int i = 0; i < tensors.Length; i++) parts[i] = tensors[i].Unsqueeze(d);
            return Cat(parts, d);
        }
        finally
        {
            foreach (var p in parts) p?.Dispose();
        }
    }

    /// <summary>
    /// Views of consecutive pieces of <paramref name="splitSize"/> along <paramref name="dim"/> (the last may be
    /// smaller), as <c>torch.split</c>. A size-0 dim gives one empty piece.
    /// </summary>
    public Tensor[] Split(int splitSize, int dim = 0)
    {
        const string op = "Split";
        if (Rank == 0) throw new ShapeException(op, "expects at least a 1-dimensional tensor");
        int d = Shape.NormalizeDim(dim, Rank, op);
        int size = Layout.Shape[d];
        if (splitSize < 0 || splitSize == 0 && size != 0)
            throw new ShapeException(op, $"split size must be positive (0 only for an empty dim), got {splitSize} for dim {d} of size {size}");
        int n = splitSize == 0 ? 1 : Math.Max(1, (size + splitSize - 1) / splitSize);
        var sizes = new int[n];
        for (int i = 0; i < n; i++) sizes[i] = Math.Min(splitSize, size - i * splitSize);
        return Pieces(d, sizes);
    }

    /// <summary>Views of consecutive pieces of the given sizes along <paramref name="dim"/> (they must sum to its size), as <c>torch.split</c> with a list.</summary>
    public Tensor[] Split(int[] sizes, int dim = 0)
    {
        const string op = "Split";
        ArgumentNullException.ThrowIfNull(sizes);
        if (Rank == 0) throw new ShapeException(op, "expects at least a 1-dimensional tensor");
        int d = Shape.NormalizeDim(dim, Rank, op);
        long sum = 0;
        foreach (var s in sizes)
        {
            if (s < 0) throw new ShapeException(op, $"split sizes must be non-negative, got [{string.Join(", ", sizes)}]");
            sum += s;
        }
        if (sum != Layout.Shape[d])
            throw new ShapeException(op, $"split sizes [{string.Join(", ", sizes)}] must sum exactly to {Layout.Shape[d]}, the size of dim {d} ({Describe()})");
        return Pieces(d, sizes);
    }

    /// <summary>
    /// Splits into up to <paramref name="chunks"/> views along <paramref name="dim"/>, each of ceil(size/chunks)
    /// but the last, as <c>torch.chunk</c>: fewer pieces when that size leaves nothing for the rest (10 in 6 chunks
    /// gives 5 pieces of 2); an empty dim gives <paramref name="chunks"/> empty pieces.
    /// </summary>
    public Tensor[] Chunk(int chunks, int dim = 0)
    {
        const string op = "Chunk";
        if (Rank == 0) throw new ShapeException(op, "expects at least a 1-dimensional tensor");
        if (chunks <= 0) throw new ShapeException(op, $"expects the number of chunks to be greater than 0, got {chunks}");
        int d = Shape.NormalizeDim(dim, Rank, op);
        int size = Layout.Shape[d];
        if (size == 0) return Pieces(d, new int[chunks]);
        return Split((size + chunks - 1) / chunks, d);
    }

    Tensor[] Pieces(int d, int[] sizes)
    {
        var r = new Tensor[sizes.Length];
        int start = 0;
        try
        {
            for (int i = 0; i < sizes.Length; i++) { r[i] = Narrow(d, start, sizes[i]); start += sizes[i]; }
        }
        catch
        {
            foreach (var t in r) t?.Dispose();
            throw;
        }
        return r;
    }

    // ---- triangles ----

    /// <summary>
    /// The lower triangle of the last two dims (batched), zeros elsewhere, as <c>torch.tril</c>: keeps (i, j) with
    /// j − i ≤ <paramref name="diagonal"/>. Differentiable (through <see cref="Where"/>).
    /// </summary>
    public Tensor Tril(int diagonal = 0) => Triangle("Tril", diagonal, lower: true);

    /// <summary>
    /// The upper triangle of the last two dims (batched), zeros elsewhere, as <c>torch.triu</c>: keeps (i, j) with
    /// j − i ≥ <paramref name="diagonal"/>. Differentiable (through <see cref="Where"/>).
    /// </summary>
    public Tensor Triu(int diagonal = 0) => Triangle("Triu", diagonal, lower: false);

    Tensor Triangle(string op, int diagonal, bool lower)
    {
        if (Rank < 2) throw new ShapeException(op, $"input tensor must have at least 2 dims, got {Describe()}");
        int n = Layout.Shape[^2], m = Layout.Shape[^1];
        using var rows = Arange(0, n, 1, DType.Int64, Device);
        using var rowCol = rows.View(n, 1);
        using var shifted = rowCol.Add(diagonal);
        using var cols = Arange(0, m, 1, DType.Int64, Device);
        using var mask = lower ? cols.Le(shifted) : cols.Ge(shifted);
        using var zero = Scalar(0, DType, Device);
        return Where(mask, this, zero);
    }

    // ---- helpers ----

    static void CheckIndexType(string op, Tensor index)
    {
        if (index.DType is not (DType.Int64 or DType.Int32))
            throw new DTypeException(op, $"expected an int64 or int32 index, got {index.Describe()}");
    }

    // PyTorch's gather, scatter_add, index_select, index_add and embedding take indices in [0, size) only; the kernels
    // also accept [−size, 0) (counting from the end), so the front end refuses those, naming the first bad value.
    // Checked only where the index is in host memory: reading a device index would wait for the device, which the
    // training step must never do; there the kernel reports an index outside [−size, size) at the next synchronization.
    static void CheckIndexRange(string op, Tensor index, int dim, int size)
    {
        if (index.Device.Type != DeviceType.Cpu || index.Numel == 0) return;
        var values = index.ToArray<long>();
        for (int i = 0; i < values.Length; i++)
            if ((ulong)values[i] >= (ulong)size)
                throw new ShapeException(op, $"index {values[i]} (element {i} of the index {index.Describe()}) is out of bounds for dim {dim} with size {size}: {(size == 0 ? "the dim is empty, so no index is valid" : $"valid indices are 0 to {size - 1}")}, as in PyTorch (negative indices do not count from the end)");
    }

    // The index as int64: a new handle when it already is, a converted copy otherwise.
    static Tensor IndexAsInt64(string op, Tensor index)
    {
        CheckIndexType(op, index);
        return index.DType == DType.Int64 ? index.Alias() : index.CastCopy(DType.Int64, index.Device);
    }

    // A 0-d layout as one element of a 1-D layout (PyTorch's gather and scatter treat 0-d as 1-d).
    static Layout AtLeast1D(Layout l) => l.Rank == 0 ? new Layout([1], [0], l.Offset) : l;

    // A 1-D index laid out at `shape`, varying along dim d only (stride 0 elsewhere).
    static Layout AlongDim(Tensor index, ReadOnlySpan<int> shape, int d)
    {
        var st = new long[shape.Length];
        st[d] = index.Rank == 1 ? index.Layout.Strides[0] : 0;
        return new Layout(shape, st, index.Layout.Offset);
    }

    // (outer, count, inner) of a shape around dim d.
    static (int, int, int) Split3(string op, ReadOnlySpan<int> shape, int d)
    {
        long outer = 1, inner = 1;
        for (int k = 0; k < d; k++) outer *= shape[k];
        for (int k = d + 1; k < shape.Length; k++) inner *= shape[k];
        if (outer > int.MaxValue || inner > int.MaxValue)
            throw new ShapeException(op, $"shape {Shape.Format(shape)} is too large around dim {d}");
        return ((int)outer, shape[d], (int)inner);
    }

    // A kernel's index error renamed for the op the user called, with the dim and input it applies to.
    ShapeException Rename(string op, ShapeException e, int d) => RenameFor(op, e, d, Describe());

    static ShapeException RenameFor(string op, ShapeException e, int d, string what)
    {
        var body = e.Message.StartsWith(e.Op + ": ", StringComparison.Ordinal) ? e.Message[(e.Op.Length + 2)..] : e.Message;
        return new ShapeException(op, $"{body}, in dim {d} of the input {what}");
    }

    // Autograd definitions of the indexing and joining ops, written with tensor ops: a gather's adjoint is a
    // scatter-add into zeros and the other way round, a concatenation's a slice per input. The indices are saved as
    // the int64 copies the kernels read.

    internal sealed class GatherBackward : GradFunction
    {
        readonly int _dim;
        readonly SavedTensor _index;
        internal GatherBackward(int dim, Tensor index) { _dim = dim; _index = Save(index); }
        protected internal override Tensor?[] Backward(Tensor grad) =>
            [Zeros(Input(0).Shape, grad.DType, grad.Device).ScatterAdd(_dim, _index.Value, grad)];
    }

    // The source may be larger than the index: its elements the index does not reach get zeros.
    internal sealed class ScatterAddBackward : GradFunction
    {
        readonly int _dim;
        readonly SavedTensor _index;
        internal ScatterAddBackward(int dim, Tensor index) { _dim = dim; _index = Save(index); }
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            if (!NeedsGrad(1)) return [grad, null];
            var source = Input(1).Shape;
            var g = grad.Gather(_dim, _index.Value);
            for (int d = 0; d < source.Rank; d++)
            {
                int have = g.Layout.Shape[d];
                if (have == source[d]) continue;
                var padShape = g.Shape.ToArray();
                padShape[d] = source[d] - have;
                g = Cat([g, Zeros(padShape, g.DType, g.Device)], d);
            }
            return [grad, g];
        }
    }

    internal sealed class IndexSelectBackward : GradFunction
    {
        readonly int _dim;
        readonly SavedTensor _index;
        internal IndexSelectBackward(int dim, Tensor index) { _dim = dim; _index = Save(index); }
        protected internal override Tensor?[] Backward(Tensor grad) =>
            [Zeros(Input(0).Shape, grad.DType, grad.Device).IndexAdd(_dim, _index.Value, grad)];
    }

    internal sealed class IndexAddBackward : GradFunction
    {
        readonly int _dim;
        readonly SavedTensor _index;
        internal IndexAddBackward(int dim, Tensor index) { _dim = dim; _index = Save(index); }
        protected internal override Tensor?[] Backward(Tensor grad) => [grad, NeedsGrad(1) ? grad.IndexSelect(_dim, _index.Value) : null];
    }

    // Each output row's gradient added into its weight row; the padding row's gradients are dropped first.
    internal sealed class EmbeddingBackward : GradFunction
    {
        readonly int? _paddingIdx;
        readonly SavedTensor _index;
        internal EmbeddingBackward(int? paddingIdx, Tensor flatIndex) { _paddingIdx = paddingIdx; _index = Save(flatIndex); }
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var weight = Input(0);
            var index = _index.Value;
            var rows = grad.Reshape((int)index.Numel, weight.Shape[1]);
            if (_paddingIdx is int p) rows = rows.MaskedFill(index.Eq(p).Unsqueeze(1), 0);
            return [Zeros(weight.Shape, weight.DType, weight.Device).IndexAdd(0, index, rows)];
        }
    }

    // sizes[i] is input i's extent along dim, −1 for a skipped 1-D empty input.
    internal sealed class CatBackward(int dim, int[] sizes) : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var r = new Tensor?[sizes.Length];
            int start = 0;
            for (int i = 0; i < sizes.Length; i++)
            {
                if (sizes[i] < 0) { r[i] = NeedsGrad(i) ? Zeros(Input(i).Shape, grad.DType, grad.Device) : null; continue; }
                if (NeedsGrad(i)) r[i] = grad.Narrow(dim, start, sizes[i]);
                start += sizes[i];
            }
            return r;
        }
    }
}

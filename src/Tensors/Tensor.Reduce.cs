using Engine.Backends;

namespace Engine;

public sealed partial class Tensor
{
    // Reductions: the reduced dims are permuted to the end of the layout (a view, no copy) and the backend reduces
    // the trailing block of each output. Graph records carry the normalized dims (ascending) and keepDim, so the
    // rules in src/Autograd/Rules/Reduce.cs can unsqueeze the gradient back without looking at the forward call.

    /// <summary>
    /// Normalizes reduction dims: negative dims count from the end, null or empty means every dim (as
    /// <c>torch.sum(x, dim=[])</c>), repeated dims throw. Returns them ascending; a 0-d tensor reduces no dims (its
    /// dims 0 and −1 are accepted).
    /// </summary>
    int[] ReductionDims(string op, int[]? dims)
    {
        if (dims is null || dims.Length == 0) return Enumerable.Range(0, Rank).ToArray();
        var seen = new bool[Math.Max(Rank, 1)];
        foreach (var d in dims)
        {
            int n = Engine.Shape.NormalizeDim(d, Rank, op);
            if (seen[n]) throw new ShapeException(op, $"dim {n} appears multiple times in the list of dims [{string.Join(", ", dims)}]");
            seen[n] = true;
        }
        if (Rank == 0) return [];
        var r = new List<int>();
        for (int i = 0; i < Rank; i++) if (seen[i]) r.Add(i);
        return [.. r];
    }

    /// <summary>The output shape of a reduction over the (normalized) dims.</summary>
    int[] ReducedShape(int[] dims, bool keepDim)
    {
        var shape = new List<int>();
        for (int i = 0; i < Rank; i++)
        {
            if (Array.IndexOf(dims, i) < 0) shape.Add(Layout.Shape[i]);
            else if (keepDim) shape.Add(1);
        }
        return [.. shape];
    }

    /// <summary>Runs the backend reduction over normalized dims, unrecorded; Max/Min optionally write Int64 indices.</summary>
    (Tensor Values, Tensor? Indices) ReduceRaw(ReduceOp op, int[] dims, bool keepDim, double argument, bool indices)
    {
        var perm = new int[Rank];
        int k = 0;
        for (int i = 0; i < Rank; i++) if (Array.IndexOf(dims, i) < 0) perm[k++] = i;
        foreach (var d in dims) perm[k++] = d;
        var shape = ReducedShape(dims, keepDim);
        var y = Empty(op.ToString(), shape, DType, Device);
        var idx = indices ? Empty(op.ToString(), shape, DType.Int64, Device) : null;
        try
        {
            // keepDim's size-1 dims do not move any element: y is contiguous over the kept dims either way.
            Backend.Reduce(op, Storage, Layout.Permute(perm), dims.Length, y.Storage, idx?.Storage, argument);
        }
        catch
        {
            y.Dispose(); idx?.Dispose();
            throw;
        }
        return (y, idx);
    }

    /// <summary>Throws naming the op when a reduced block is empty and the op has no identity (max, min, ∞-norm).</summary>
    void CheckNonEmpty(string op, int[] dims)
    {
        foreach (var d in dims)
            if (Layout.Shape[d] == 0)
                throw new ShapeException(op, $"expected reduction dim {d} to have non-zero size, got {Describe()} (the reduction has no identity)");
        if (Numel == 0 && dims.Length == Rank)
            throw new ShapeException(op, $"cannot reduce an empty tensor {Describe()} (the reduction has no identity)");
    }

    // ---- Sum / Mean ----

    /// <summary>The sum of all elements (0-d). Int and Bool tensors sum to Int64, as PyTorch.</summary>
    public Tensor Sum() => Sum([], false);

    /// <summary>The sum over one dim.</summary>
    public Tensor Sum(int dim, bool keepDim = false) => Sum([dim], keepDim);

    /// <summary>
    /// The sum over several dims (null or empty: all dims, as <c>torch.sum(x, dim=[])</c>); keepDim leaves them
    /// with size 1. Int and Bool tensors sum to Int64 (exactly, wrapping on overflow); float types accumulate in
    /// float64 and round once.
    /// </summary>
    public Tensor Sum(int[] dims, bool keepDim = false)
    {
        if (AutocastDispatch.TryAutocast("Sum", this, out var ac)) using (ac) return ac[0].Sum(dims, keepDim);
        var d = ReductionDims("Sum", dims);
        if (!DType.IsFloatingPoint() && DType != DType.Int64)
        {
            using var l = To(DType.Int64);
            return l.Sum(dims, keepDim);
        }
        var (y, _) = ReduceRaw(ReduceOp.Sum, d, keepDim, 0, false);
        return y.Record("Sum", this, (d, keepDim));
    }

    /// <summary>The mean of all elements (0-d); floating-point tensors only.</summary>
    public Tensor Mean() => Mean([], false);

    /// <summary>The mean over one dim.</summary>
    public Tensor Mean(int dim, bool keepDim = false) => Mean([dim], keepDim);

    /// <summary>
    /// The mean over several dims (null or empty: all). Floating-point tensors only (integer tensors throw
    /// <see cref="DTypeException"/>, as PyTorch); the mean of an empty block is NaN.
    /// </summary>
    public Tensor Mean(int[] dims, bool keepDim = false)
    {
        if (!DType.IsFloatingPoint())
            throw new DTypeException("Mean", $"could not infer output dtype: input dtype must be a floating point type, got {DType.Name()}");
        var d = ReductionDims("Mean", dims);
        var (y, _) = ReduceRaw(ReduceOp.Mean, d, keepDim, 0, false);
        return y.Record("Mean", this, (d, keepDim));
    }

    // ---- Max / Min / ArgMax / ArgMin ----

    /// <summary>
    /// The largest element (0-d); NaN if any element is NaN. Throws on an empty tensor. Its gradient is shared
    /// evenly among tied maxima, as PyTorch's <c>max()</c>.
    /// </summary>
    public Tensor Max() => Extremum("Max", ReduceOp.Max);

    /// <summary>The smallest element (0-d); NaN if any element is NaN. Throws on an empty tensor.</summary>
    public Tensor Min() => Extremum("Min", ReduceOp.Min);

    Tensor Extremum(string op, ReduceOp kind)
    {
        var d = ReductionDims(op, null);
        CheckNonEmpty(op, d);
        var (y, _) = ReduceRaw(kind, d, false, 0, false);
        return y.Record(op, this, null, [this, y]);
    }

    /// <summary>
    /// The maximum along a dim and the (Int64) index of its first occurrence; NaN counts as the maximum. The
    /// gradient flows to the returned index only, as PyTorch's <c>max(dim)</c>. Throws when the dim is empty.
    /// </summary>
    public (Tensor Values, Tensor Indices) Max(int dim, bool keepDim = false) => Extremum("Max", ReduceOp.Max, dim, keepDim);

    /// <summary>The minimum along a dim and the (Int64) index of its first occurrence; NaN counts as the minimum.</summary>
    public (Tensor Values, Tensor Indices) Min(int dim, bool keepDim = false) => Extremum("Min", ReduceOp.Min, dim, keepDim);

    (Tensor, Tensor) Extremum(string op, ReduceOp kind, int dim, bool keepDim)
    {
        var d = ReductionDims(op, [dim]);
        CheckNonEmpty(op, d);
        var (y, idx) = ReduceRaw(kind, d, keepDim, 0, true);
        // The record's dim is the normalized one (0 for a 0-d input, which reduces nothing).
        y.Record(op, this, (Rank == 0 ? 0 : d[0], keepDim), [idx!]);
        return (y, idx!);
    }

    /// <summary>
    /// The index of the first maximum: along <paramref name="dim"/>, or into the flattened tensor when dim is null
    /// (keepDim then gives all dims size 1). Int64, not differentiable.
    /// </summary>
    public Tensor ArgMax(int? dim = null, bool keepDim = false) => ArgExtremum("ArgMax", ReduceOp.Max, dim, keepDim);

    /// <summary>The index of the first minimum (see <see cref="ArgMax"/>).</summary>
    public Tensor ArgMin(int? dim = null, bool keepDim = false) => ArgExtremum("ArgMin", ReduceOp.Min, dim, keepDim);

    Tensor ArgExtremum(string op, ReduceOp kind, int? dim, bool keepDim)
    {
        var d = ReductionDims(op, dim is int one ? [one] : null);
        CheckNonEmpty(op, d);
        var (y, idx) = ReduceRaw(kind, d, keepDim, 0, true);
        y.Dispose();
        return idx!;
    }

    // ---- Var / LogSumExp / Norm ----

    /// <summary>
    /// The variance over dims (null or empty: all), Σ(x − mean)² / (n − correction) with correction 1 when
    /// <paramref name="unbiased"/>. Fewer elements than the correction allows give NaN or ∞, as PyTorch.
    /// Floating-point tensors only.
    /// </summary>
    public Tensor Var(int[]? dims = null, bool unbiased = true, bool keepDim = false)
    {
        if (!DType.IsFloatingPoint())
            throw new DTypeException("Var", $"std and var only support floating point dtypes, got {DType.Name()}");
        var d = ReductionDims("Var", dims);
        double correction = unbiased ? 1 : 0;
        var (y, _) = ReduceRaw(ReduceOp.Var, d, keepDim, correction, false);
        return y.Record("Var", this, (d, correction, keepDim), [this]);
    }

    /// <summary>The variance over one dim.</summary>
    public Tensor Var(int dim, bool unbiased = true, bool keepDim = false) => Var([dim], unbiased, keepDim);

    /// <summary>log Σ eˣ over one dim, computed stably (max-shifted).</summary>
    public Tensor LogSumExp(int dim, bool keepDim = false) => LogSumExp([dim], keepDim);

    /// <summary>
    /// log Σ eˣ over dims (empty: all), computed as m + log Σ e^(x−m); all −∞ gives −∞, an empty block −∞.
    /// Integer tensors are promoted to float32, as PyTorch.
    /// </summary>
    public Tensor LogSumExp(int[] dims, bool keepDim = false)
    {
        if (AutocastDispatch.TryAutocast("LogSumExp", this, out var ac)) using (ac) return ac[0].LogSumExp(dims, keepDim);
        if (!DType.IsFloatingPoint())
        {
            ReductionDims("LogSumExp", dims);
            using var f = To(DType.Float32);
            return f.LogSumExp(dims, keepDim);
        }
        var d = ReductionDims("LogSumExp", dims);
        var (y, _) = ReduceRaw(ReduceOp.LogSumExp, d, keepDim, 0, false);
        return y.Record("LogSumExp", this, (d, keepDim), [this, y]);
    }

    /// <summary>
    /// The vector p-norm over dims (null: all), as <c>torch.linalg.vector_norm</c>: (Σ|x|ᵖ)^(1/p); p = ∞ gives
    /// max |x|, −∞ min |x|, 0 the number of non-zeros. Floating-point tensors only. An empty block gives 0 (the ±∞
    /// norms throw, having no identity).
    /// </summary>
    public Tensor Norm(double p = 2, int[]? dims = null, bool keepDim = false)
    {
        if (AutocastDispatch.TryAutocast("Norm", this, out var ac)) using (ac) return ac[0].Norm(p, dims, keepDim);
        if (!DType.IsFloatingPoint())
            throw new DTypeException("Norm", $"expected a floating point tensor as input, got {DType.Name()}");
        if (double.IsNaN(p)) throw new EngineException("Norm", "p must not be NaN");
        var d = ReductionDims("Norm", dims);
        if (double.IsInfinity(p)) CheckNonEmpty("Norm", d);
        var (y, _) = ReduceRaw(ReduceOp.Norm, d, keepDim, p, false);
        return y.Record("Norm", this, (d, keepDim, p), [this, y]);
    }
}

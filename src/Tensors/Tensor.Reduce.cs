using Engine.Autocast;
using Engine.Backends;
using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    // Reductions: the reduced dims are permuted to the end of the layout (a view, no copy) and the backend reduces
    // the trailing block of each output. Every reduction takes its dims first (null or empty: all dims), then its own
    // options, then keepDim. The autograd definitions carry the normalized dims (ascending), so a backward puts the
    // output gradient back at the keepDim shape (KeptShape) from where it broadcasts against the input.

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
            int n = Shape.NormalizeDim(d, Rank, op);
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

    /// <summary>The sum over one dim.</summary>
    public Tensor Sum(int dim, bool keepDim = false) => Sum([dim], keepDim);

    /// <summary>
    /// The sum over dims (null or empty: all dims, as <c>torch.sum(x, dim=[])</c>); keepDim leaves them with size 1.
    /// Int and Bool tensors sum to Int64 (exactly, wrapping on overflow); float types accumulate in float64 and round
    /// once.
    /// </summary>
    public Tensor Sum(int[]? dims = null, bool keepDim = false)
    {
        if (AutocastDispatch.TryAutocast(typeof(SumBackward), this, out var ac)) using (ac) return ac[0].Sum(dims, keepDim);
        var d = ReductionDims("Sum", dims);
        if (!DType.IsFloatingPoint() && DType != DType.Int64)
        {
            using var l = To(DType.Int64);
            return l.Sum(dims, keepDim);
        }
        var (y, _) = ReduceRaw(ReduceOp.Sum, d, keepDim, 0, false);
        return ShouldRecord(this) ? y.Record(new SumBackward(d), this) : y;
    }

    internal sealed class SumBackward(int[] dims) : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad) => [grad.Reshape(KeptShape(Input(0).Shape, dims))];
    }

    /// <summary>The mean over one dim.</summary>
    public Tensor Mean(int dim, bool keepDim = false) => Mean([dim], keepDim);

    /// <summary>
    /// The mean over dims (null or empty: all). Floating-point tensors only (integer tensors throw
    /// <see cref="DTypeException"/>, as PyTorch); the mean of an empty block is NaN.
    /// </summary>
    public Tensor Mean(int[]? dims = null, bool keepDim = false)
    {
        if (!DType.IsFloatingPoint())
            throw new DTypeException("Mean", $"could not infer output dtype: input dtype must be a floating point type, got {DType.Name()}");
        var d = ReductionDims("Mean", dims);
        var (y, _) = ReduceRaw(ReduceOp.Mean, d, keepDim, 0, false);
        return ShouldRecord(this) ? y.Record(new MeanBackward(d), this) : y;
    }

    internal sealed class MeanBackward(int[] dims) : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var shape = Input(0).Shape;
            return [grad.Reshape(KeptShape(shape, dims)) / Count(shape, dims)];
        }
    }

    /// <summary>
    /// This tensor summed down to <paramref name="shape"/>, as PyTorch's <c>sum_to_size</c>: over the leading dims it
    /// has beyond <paramref name="shape"/> and over the dims where <paramref name="shape"/> has size 1 but this tensor
    /// does not — the backward of broadcasting. A new handle on the same data when the shapes already match.
    /// </summary>
    public Tensor SumToSize(params ReadOnlySpan<int> shape)
    {
        var g = Layout.Shape;
        int lead = g.Rank - shape.Length;
        if (lead < 0)
            throw new ShapeException("SumToSize", $"cannot sum {Describe()} to the larger-rank shape {Shape.Format(shape)}");
        var dims = new List<int>();
        for (int i = 0; i < lead; i++) dims.Add(i);
        for (int i = 0; i < shape.Length; i++)
        {
            int have = g[lead + i];
            if (have == shape[i]) continue;
            if (shape[i] != 1)
                throw new ShapeException("SumToSize", $"shape {Shape.Format(shape)} is not expandable to {Describe()} (dim {i}: {shape[i]} vs {have})");
            dims.Add(lead + i);
        }
        if (dims.Count == 0) return Reshape(shape);
        using var s = Sum([.. dims], keepDim: true);
        return s.Reshape(shape);
    }

    /// <summary>The input shape with the reduced dims set to 1: where a reduction's gradient broadcasts from.</summary>
    static int[] KeptShape(ReadOnlySpan<int> input, int[] dims)
    {
        var s = input.ToArray();
        foreach (var d in dims) s[d] = 1;
        return s;
    }

    static long Count(ReadOnlySpan<int> input, int[] dims)
    {
        long n = 1;
        foreach (var d in dims) n *= input[d];
        return n;
    }

    // ---- Max / Min / Amax / Amin / ArgMax / ArgMin ----

    /// <summary>
    /// The largest element (0-d, or all dims of size 1 with keepDim); NaN if any element is NaN. Throws on an empty
    /// tensor. Its gradient is shared evenly among tied maxima, as PyTorch's <c>max()</c>.
    /// </summary>
    public Tensor Max(bool keepDim = false) => Extremum("Max", ReduceOp.Max, null, keepDim);

    /// <summary>The smallest element (0-d, or all dims of size 1 with keepDim); NaN if any element is NaN. Throws on an empty tensor.</summary>
    public Tensor Min(bool keepDim = false) => Extremum("Min", ReduceOp.Min, null, keepDim);

    /// <summary>
    /// The maximum over dims (null or empty: all), as <c>torch.amax</c>: NaN propagates, the gradient is shared evenly
    /// among the elements equal to the maximum. Throws when a reduced dim is empty.
    /// </summary>
    public Tensor Amax(int[]? dims = null, bool keepDim = false) => Extremum("Amax", ReduceOp.Max, dims, keepDim);

    /// <summary>The maximum over one dim (see <see cref="Amax(int[], bool)"/>).</summary>
    public Tensor Amax(int dim, bool keepDim = false) => Amax([dim], keepDim);

    /// <summary>The minimum over dims (null or empty: all), as <c>torch.amin</c> (see <see cref="Amax(int[], bool)"/>).</summary>
    public Tensor Amin(int[]? dims = null, bool keepDim = false) => Extremum("Amin", ReduceOp.Min, dims, keepDim);

    /// <summary>The minimum over one dim (see <see cref="Amin(int[], bool)"/>).</summary>
    public Tensor Amin(int dim, bool keepDim = false) => Amin([dim], keepDim);

    Tensor Extremum(string op, ReduceOp kind, int[]? dims, bool keepDim)
    {
        var d = ReductionDims(op, dims);
        CheckNonEmpty(op, d);
        var (y, _) = ReduceRaw(kind, d, keepDim, 0, false);
        return ShouldRecord(this) ? y.Record(new AmaxBackward(op, d, this, y), this) : y;
    }

    // The gradient is shared evenly among the elements equal to the result (the NaNs when the result is NaN), as
    // PyTorch's evenly_distribute_backward / amax_backward.
    internal sealed class AmaxBackward : GradFunction
    {
        readonly string _name;
        readonly int[] _dims;
        readonly SavedTensor _x, _y;
        internal AmaxBackward(string name, int[] dims, Tensor x, Tensor y) { _name = name; _dims = dims; _x = Save(x); _y = Save(y); }
        public override string Name => _name;
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var kept = KeptShape(Input(0).Shape, _dims);
            var x = _x.Value;
            var y = _y.Value.Reshape(kept);
            var mask = Where(y.Ne(y), x.Ne(x), x.Eq(y));
            var share = grad.Reshape(kept) / mask.Sum(_dims, keepDim: true).To(grad.DType);
            return [Where(mask, share, Scalar(0, grad.DType, grad.Device))];
        }
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
        if (ShouldRecord(this)) y.Record(new MaxBackward(op, d, idx!), this);
        return (y, idx!);
    }

    // Along a dim: the gradient goes to the returned index only, picked by comparing each position along the dim with
    // the index (a one-hot mask built by broadcasting, no scatter kernel needed). A 0-d input reduces nothing.
    internal sealed class MaxBackward : GradFunction
    {
        readonly string _name;
        readonly int[] _dims;
        readonly SavedTensor _indices;
        internal MaxBackward(string name, int[] dims, Tensor indices) { _name = name; _dims = dims; _indices = Save(indices); }
        public override string Name => _name;
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var shape = Input(0).Shape;
            if (shape.Rank == 0) return [grad];
            int dim = _dims[0];
            var kept = KeptShape(shape, _dims);
            var positionsShape = new int[shape.Rank - dim];
            Array.Fill(positionsShape, 1);
            positionsShape[0] = shape[dim];
            var hit = Arange(shape[dim], grad.Device).Reshape(positionsShape).Eq(_indices.Value.Reshape(kept));
            return [Where(hit, grad.Reshape(kept), Scalar(0, grad.DType, grad.Device))];
        }
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

    // ---- Var / Std / LogSumExp / Norm ----

    /// <summary>
    /// The variance over dims (null or empty: all), Σ(x − mean)² / (n − correction), as <c>torch.var(x, dim,
    /// correction=...)</c>: correction 1 (the default) is Bessel's unbiased estimate, 0 the population variance, any
    /// other value is allowed. n ≤ correction gives ∞ or NaN, as PyTorch. Floating-point tensors only.
    /// </summary>
    public Tensor Var(int[]? dims = null, double correction = 1, bool keepDim = false)
    {
        if (!DType.IsFloatingPoint())
            throw new DTypeException("Var", $"std and var only support floating point dtypes, got {DType.Name()}");
        if (!double.IsFinite(correction)) throw new EngineException("Var", $"correction must be finite, got {correction}");
        var d = ReductionDims("Var", dims);
        var (y, _) = ReduceRaw(ReduceOp.Var, d, keepDim, correction, false);
        return ShouldRecord(this) ? y.Record(new VarBackward(d, correction, this), this) : y;
    }

    /// <summary>The variance over dims with correction 1 (<paramref name="unbiased"/>) or 0, as PyTorch's older <c>unbiased</c> argument.</summary>
    public Tensor Var(int[]? dims, bool unbiased, bool keepDim = false) => Var(dims, unbiased ? 1.0 : 0.0, keepDim);

    /// <summary>The variance over one dim (see <see cref="Var(int[], double, bool)"/>).</summary>
    public Tensor Var(int dim, double correction = 1, bool keepDim = false) => Var([dim], correction, keepDim);

    /// <summary>The variance over one dim with correction 1 (<paramref name="unbiased"/>) or 0.</summary>
    public Tensor Var(int dim, bool unbiased, bool keepDim = false) => Var([dim], unbiased ? 1.0 : 0.0, keepDim);

    // d/dx Σ(x − mean)²/(n − c) = 2(x − mean)/(n − c); n ≤ c gives ∞ (or NaN where x equals the mean), as PyTorch.
    internal sealed class VarBackward : GradFunction
    {
        readonly int[] _dims;
        readonly double _correction;
        readonly SavedTensor _x;
        internal VarBackward(int[] dims, double correction, Tensor x) { _dims = dims; _correction = correction; _x = Save(x); }
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var shape = Input(0).Shape;
            var x = _x.Value;
            var dev = x - x.Mean(_dims, keepDim: true);
            return [dev * grad.Reshape(KeptShape(shape, _dims)) * (2.0 / (Count(shape, _dims) - _correction))];
        }
    }

    /// <summary>The standard deviation over dims, √Var (see <see cref="Var(int[], double, bool)"/>), as <c>torch.std</c>.</summary>
    public Tensor Std(int[]? dims = null, double correction = 1, bool keepDim = false)
    {
        using var v = Var(dims, correction, keepDim);
        return v.Sqrt();
    }

    /// <summary>log Σ eˣ over one dim, computed stably (max-shifted).</summary>
    public Tensor LogSumExp(int dim, bool keepDim = false) => LogSumExp([dim], keepDim);

    /// <summary>
    /// log Σ eˣ over dims (null or empty: all), computed as m + log Σ e^(x−m); all −∞ gives −∞, an empty block −∞.
    /// Integer tensors are promoted to float32, as PyTorch.
    /// </summary>
    public Tensor LogSumExp(int[]? dims = null, bool keepDim = false)
    {
        if (AutocastDispatch.TryAutocast(typeof(LogSumExpBackward), this, out var ac)) using (ac) return ac[0].LogSumExp(dims, keepDim);
        if (!DType.IsFloatingPoint())
        {
            ReductionDims("LogSumExp", dims);
            using var f = To(DType.Float32);
            return f.LogSumExp(dims, keepDim);
        }
        var d = ReductionDims("LogSumExp", dims);
        var (y, _) = ReduceRaw(ReduceOp.LogSumExp, d, keepDim, 0, false);
        return ShouldRecord(this) ? y.Record(new LogSumExpBackward(d, this, y), this) : y;
    }

    // d/dx log Σ eˣ = softmax(x) = e^(x − y).
    internal sealed class LogSumExpBackward : GradFunction
    {
        readonly int[] _dims;
        readonly SavedTensor _x, _y;
        internal LogSumExpBackward(int[] dims, Tensor x, Tensor y) { _dims = dims; _x = Save(x); _y = Save(y); }
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var kept = KeptShape(Input(0).Shape, _dims);
            return [(_x.Value - _y.Value.Reshape(kept)).Exp() * grad.Reshape(kept)];
        }
    }

    /// <summary>
    /// The vector p-norm over dims (null or empty: all), as <c>torch.linalg.vector_norm</c>: (Σ|x|ᵖ)^(1/p); p = ∞
    /// gives max |x|, −∞ min |x|, 0 the number of non-zeros. Floating-point tensors only. An empty block gives 0 (the
    /// ±∞ norms throw, having no identity). <paramref name="p"/> comes first, as in PyTorch's <c>tensor.norm(p, dim)</c>
    /// and <c>vector_norm(x, ord, dim)</c>, so <c>x.Norm(2)</c> means what it means there.
    /// </summary>
    public Tensor Norm(double p = 2, int[]? dims = null, bool keepDim = false)
    {
        if (AutocastDispatch.TryAutocast(typeof(NormBackward), this, out var ac)) using (ac) return ac[0].Norm(p, dims, keepDim);
        if (!DType.IsFloatingPoint())
            throw new DTypeException("Norm", $"expected a floating point tensor as input, got {DType.Name()}");
        if (double.IsNaN(p)) throw new EngineException("Norm", "p must not be NaN");
        var d = ReductionDims("Norm", dims);
        if (double.IsInfinity(p)) CheckNonEmpty("Norm", d);
        var (y, _) = ReduceRaw(ReduceOp.Norm, d, keepDim, p, false);
        return ShouldRecord(this) ? y.Record(new NormBackward(d, p, this, y), this) : y;
    }

    internal sealed class NormBackward : GradFunction
    {
        readonly int[] _dims;
        readonly double _p;
        readonly SavedTensor _x, _y;
        internal NormBackward(int[] dims, double p, Tensor x, Tensor y) { _dims = dims; _p = p; _x = Save(x); _y = Save(y); }

        protected internal override Tensor?[] Backward(Tensor grad)
        {
            double p = _p;
            var kept = KeptShape(Input(0).Shape, _dims);
            var x = _x.Value;
            var norm = _y.Value.Reshape(kept);
            var g = grad.Reshape(kept);
            if (p == 0) return [x.ZerosLike()];
            var sign = Sign(x);
            if (p == 1) return [sign * g];
            if (p == 2) return [x * (g / norm).MaskedFill(norm.Eq(0), 0)]; // x·g/‖x‖, 0 where ‖x‖ = 0 (PyTorch's subgradient)
            var abs = x.Abs();
            if (double.IsInfinity(p))
            {
                // The gradient of max |x| (or min |x|), shared evenly among the tied elements and the NaNs.
                var mask = abs.Eq(norm).To(x.DType) + abs.Ne(abs).To(x.DType);
                return [sign * mask * (g / mask.Sum(_dims, keepDim: true))];
            }
            // sgn(x)·|x|^(p−1)·g·‖x‖^(1−p), with 0 where x is 0.
            if (p < 1) return [sign * abs.Pow(p - 1).MaskedFill(x.Eq(0), 0) * (g * norm.Pow(1 - p))];
            // x·|x|^(p−2)·g/‖x‖^(p−1) (written sgn(x)·|x|^(p−1) for p < 2), with 0 where the norm is 0.
            var scaled = (p < 2 ? sign : x) * abs.Pow(p < 2 ? p - 1 : p - 2);
            return [scaled * (g / norm.Pow(p - 1)).MaskedFill(norm.Eq(0), 0)];
        }

        // sign(x) as x's dtype: −1, 0 or 1.
        static Tensor Sign(Tensor x) => x.Gt(0).To(x.DType) - x.Lt(0).To(x.DType);
    }
}

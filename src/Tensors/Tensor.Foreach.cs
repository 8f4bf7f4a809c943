using Engine.Backends;

namespace Engine;

public sealed partial class Tensor
{
    // Multi-tensor ("foreach") operations over lists of whole contiguous tensors, as PyTorch's torch._foreach_*: one
    // backend launch per MultiTensor.MaxTensors tensors of one device and dtype instead of one per tensor. Not
    // recorded by autograd, but for ForeachTo, whose outputs are casts like To's. Gradient clipping is built on them
    // (ClipGrad in Engine.Autograd), and autocast fills its cast cache with ForeachTo (AutocastDispatch.PreCast).

    static void CheckWhole(string op, Tensor t, int index)
    {
        if (!t.DType.IsFloatingPoint())
            throw new DTypeException(op, $"tensor {index} must be floating point, got {t.Describe()}");
        if (!t.IsContiguous || t.Layout.Offset != 0 || t.Storage.Count != t.Numel)
            throw new ShapeException(op, $"tensor {index} must be a whole contiguous tensor, got {t.Describe()} with layout {t.Layout}");
    }

    /// <summary>
    /// The <paramref name="ord"/>-norm of each tensor, as a 1-D tensor on their device: element j is
    /// <c>tensors[j].Norm(ord)</c> (the same value, bit for bit on the CPU), float64 when the tensors are float64 and
    /// float32 otherwise (float16/bfloat16 tensors are measured in float32, as their total norm is). As PyTorch's
    /// <c>torch._foreach_norm</c>, but one tensor. The tensors are whole contiguous tensors on one device, all float64
    /// or none; an infinite <paramref name="ord"/> needs every tensor non-empty.
    /// </summary>
    public static Tensor ForeachNorm(IReadOnlyList<Tensor> tensors, double ord = 2)
    {
        const string op = "ForeachNorm";
        ArgumentNullException.ThrowIfNull(tensors);
        if (tensors.Count == 0) throw new EngineException(op, "expected at least one tensor");
        if (double.IsNaN(ord)) throw new EngineException(op, "ord must not be NaN");
        var first = tensors[0];
        var dtype = first.DType == DType.Float64 ? DType.Float64 : DType.Float32;
        for (int j = 0; j < tensors.Count; j++)
        {
            var t = tensors[j];
            CheckWhole(op, t, j);
            CheckSameDevice(op, first, t);
            if ((t.DType == DType.Float64) != (dtype == DType.Float64))
                throw new DTypeException(op, $"tensor {j} is {t.DType.Name()} and tensor 0 {first.DType.Name()}: float64 tensors are measured apart from the others");
            if (double.IsInfinity(ord) && t.Numel == 0)
                throw new EngineException(op, $"tensor {j} is empty: its norm of order {ord} (a maximum or minimum) is undefined");
        }
        var norms = Empty(op, [tensors.Count], dtype, first.Device);
        foreach (var (start, count) in MultiTensor.Chunks(tensors.Count, j => tensors[j].DType))
        {
            var xs = new Storage[count];
            for (int j = 0; j < count; j++) xs[j] = tensors[start + j].Storage;
            first.Backend.ForeachNorm(xs, ord, norms.Storage, start);
        }
        return norms;
    }

    /// <summary>
    /// Multiplies each tensor in place by <paramref name="scalar"/> (a one-element tensor on their device, read there:
    /// nothing comes back to the host), as <c>t.MulInPlace(scalar.To(t.DType))</c> would, with one launch per chunk of
    /// tensors of one dtype (PyTorch's <c>torch._foreach_mul_</c> by a tensor). The tensors are whole contiguous
    /// floating tensors, none sharing a storage with another. Not recorded by autograd.
    /// </summary>
    public static void ForeachMulInPlace(IReadOnlyList<Tensor> tensors, Tensor scalar)
    {
        const string op = "ForeachMulInPlace";
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(scalar);
        if (scalar.Numel != 1) throw new ShapeException(op, $"the scalar must have one element, got {Shape.Format(scalar.Layout.Shape)}");
        var seen = new HashSet<Storage>(ReferenceEqualityComparer.Instance);
        for (int j = 0; j < tensors.Count; j++)
        {
            var t = tensors[j];
            CheckWhole(op, t, j);
            CheckSameDevice(op, scalar, t);
            if (!seen.Add(t.Storage)) throw new EngineException(op, $"tensor {j} shares its storage with an earlier one; it would be scaled twice");
        }
        var cast = new Dictionary<DType, Tensor>();
        try
        {
            foreach (var (start, count) in MultiTensor.Chunks(tensors.Count, j => tensors[j].DType))
            {
                var dtype = tensors[start].DType;
                if (!cast.TryGetValue(dtype, out var s))
                {
                    // The kernel reads element 0 of the storage: a scalar that is a view into a larger one is copied.
                    using var view = scalar.Reshape();
                    s = view.To(dtype);
                    if (s.Layout.Offset != 0) { var c = s.Clone(); s.Dispose(); s = c; }
                    cast[dtype] = s;
                }
                var xs = new Storage[count];
                for (int j = 0; j < count; j++) xs[j] = tensors[start + j].Storage;
                scalar.Backend.ForeachMul(xs, s.Storage);
            }
        }
        finally { foreach (var s in cast.Values) s.Dispose(); }
        foreach (var t in tensors) t.Storage.BumpVersion();
    }

    /// <summary>
    /// Each tensor as <paramref name="dtype"/>, as <c>tensors[j].To(dtype)</c> gives it (the same bits: one rounding to
    /// nearest even, NaN and infinities kept, float16 overflow to ±∞), with one backend launch per
    /// <see cref="MultiTensor.MaxTensors"/> tensors that need converting instead of one each (PyTorch's
    /// <c>torch._foreach_copy_</c> into fresh tensors). Differentiable: every output is recorded as its own cast, so
    /// gradients reach each input in its dtype. A tensor already of <paramref name="dtype"/> comes back as a new handle
    /// (no copy), and one that is not a whole contiguous tensor (a view) is converted by its own
    /// <see cref="To(DType)"/>. The tensors are floating, on one device; the outputs belong to the current scope.
    /// </summary>
    public static Tensor[] ForeachTo(IReadOnlyList<Tensor> tensors, DType dtype)
    {
        const string op = "ForeachTo";
        ArgumentNullException.ThrowIfNull(tensors);
        if (!dtype.IsFloatingPoint()) throw new DTypeException(op, $"the target dtype must be floating point, got {dtype.Name()}");
        for (int j = 0; j < tensors.Count; j++)
        {
            var t = tensors[j] ?? throw new ArgumentNullException(nameof(tensors), $"{op}: tensor {j} is null");
            if (!t.DType.IsFloatingPoint()) throw new DTypeException(op, $"tensor {j} must be floating point, got {t.Describe()}");
            CheckSameDevice(op, tensors[0], t);
        }
        var ys = new Tensor[tensors.Count];
        var batched = new List<int>();
        try
        {
            for (int j = 0; j < tensors.Count; j++)
            {
                var t = tensors[j];
                if (t.DType == dtype || !t.IsContiguous || t.Layout.Offset != 0 || t.Storage.Count != t.Numel) ys[j] = t.To(dtype);
                else { ys[j] = Empty(op, t.Layout.Shape, dtype, t.Device); batched.Add(j); }
            }
            // One device, and the kernel reads each entry's dtype: any run of entries shares one launch.
            foreach (var (start, count) in MultiTensor.Chunks(batched.Count, _ => 0))
            {
                var xs = new Storage[count];
                var outs = new Storage[count];
                for (int i = 0; i < count; i++) { xs[i] = tensors[batched[start + i]].Storage; outs[i] = ys[batched[start + i]].Storage; }
                tensors[0].Backend.ForeachCopy(xs, outs);
            }
        }
        catch
        {
            foreach (var y in ys) y?.Dispose();
            throw;
        }
        foreach (int j in batched) ys[j].RecordCast(tensors[j]);
        return ys;
    }
}

using Engine.Autocast;
using Engine.Backends;
using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// PyTorch's <c>scaled_dot_product_attention</c>: softmax(q·kᵀ·scale + mask)·v with q [..., L, E], k [..., S, E],
    /// v [..., S, Ev] (batch dims broadcast) giving [..., L, Ev]. <paramref name="attnMask"/> is Bool (true = attend)
    /// or an additive float mask, broadcastable to [..., L, S]; <paramref name="isCausal"/> hides key j from query i
    /// when j &gt; i (top-left aligned, as PyTorch; not together with a mask). <paramref name="scale"/> defaults to
    /// 1/√E. Without dropout it is one fused backend kernel (flash-style on the CPU) recorded as
    /// <see cref="ScaledDotProductAttentionBackward"/>, which saves q, k, v, the output and the per-row logsumexp only;
    /// with <paramref name="dropoutP"/> &gt; 0 it is the explicit composition of recorded ops (matmul, softmax,
    /// <see cref="Dropout"/> drawing from <paramref name="generator"/>, matmul). The mask gets no gradient.
    /// </summary>
    public static Tensor ScaledDotProductAttention(Tensor query, Tensor key, Tensor value, Tensor? attnMask = null, double dropoutP = 0,
        bool isCausal = false, double? scale = null, Generator? generator = null)
    {
        const string op = "ScaledDotProductAttention";
        if (AutocastDispatch.TryAutocast(typeof(ScaledDotProductAttentionBackward), query, key, value, out var ac))
            using (ac) return ScaledDotProductAttention(ac[0], ac[1], ac[2], attnMask, dropoutP, isCausal, scale, generator);
        var (batch, l, s, e, ev) = CheckAttention(op, query, key, value, attnMask, dropoutP, isCausal);
        double sc = scale ?? 1 / Math.Sqrt(e);
        if (dropoutP > 0) return AttentionComposite(query, key, value, attnMask, dropoutP, isCausal, sc, generator);

        var dtype = query.DType;
        var work = dtype == DType.Float64 ? DType.Float64 : DType.Float32;
        long heads = Shape.Numel(batch);
        if (heads * Math.Max(l, s) > int.MaxValue)
            throw new ShapeException(op, $"{heads} heads of {Math.Max(l, s)} rows are more than one kernel takes");
        int b = (int)heads;
        using var qd = DenseAs(query, [.. batch, l, e], dtype);
        using var kd = DenseAs(key, [.. batch, s, e], dtype);
        using var vd = DenseAs(value, [.. batch, s, ev], dtype);
        bool shared = false;
        using var md = attnMask is null ? null : AdditiveMask(attnMask, batch, l, s, work, out shared);
        var shape = new AttentionShape(b, l, s, e, ev, sc, isCausal, shared);
        var om = Empty(op, [.. batch, l, ev], dtype, query.Device);
        using var lse = Empty(op, [.. batch, l], work, query.Device);
        try
        {
            query.Backend.ScaledDotProductAttention(qd.Storage, kd.Storage, vd.Storage, md?.Storage, om.Storage, lse.Storage, shape);
        }
        catch
        {
            om.Dispose();
            throw;
        }
        if (!ShouldRecord([query, key, value])) return om;
        return om.Record(new ScaledDotProductAttentionBackward(qd, kd, vd, md, om, lse, shape), query, key, value);
    }

    // dq, dk, dv from the fused backward kernel; the executor sums them down to broadcast inputs' shapes.
    internal sealed class ScaledDotProductAttentionBackward : GradFunction
    {
        readonly SavedTensor _q, _k, _v, _o, _lse;
        readonly SavedTensor? _mask;
        readonly AttentionShape _shape;

        internal ScaledDotProductAttentionBackward(Tensor q, Tensor k, Tensor v, Tensor? mask, Tensor o, Tensor lse, AttentionShape shape)
        {
            _q = Save(q); _k = Save(k); _v = Save(v); _o = Save(o); _lse = Save(lse);
            _mask = mask is null ? null : Save(mask);
            _shape = shape;
        }

        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var (dq, dk, dv) = ScaledDotProductAttentionGradient(_q.Value, _k.Value, _v.Value, _mask?.Value, _o.Value, _lse.Value, grad, _shape);
            return [dq, dk, dv];
        }
    }

    /// <summary>
    /// The gradients of <see cref="ScaledDotProductAttention"/> (without dropout) from its dense operands, output,
    /// logsumexp and the output gradient <paramref name="dO"/>, by the fused backward kernel, which recomputes the
    /// scores from the logsumexp. Shapes as the forward's dense operands; not recorded (no double backward).
    /// </summary>
    public static (Tensor Dq, Tensor Dk, Tensor Dv) ScaledDotProductAttentionGradient(Tensor q, Tensor k, Tensor v, Tensor? mask, Tensor o, Tensor lse, Tensor dO, AttentionShape shape)
    {
        const string op = "ScaledDotProductAttentionBackward";
        q.CheckFloating(op);
        CheckSameDevice(op, q, dO);
        if (!o.Layout.Shape.AsSpan().SequenceEqual(dO.Layout.Shape))
            throw new ShapeException(op, $"the output {o.Describe()} and its gradient {dO.Describe()} must have one shape");
        using var g = dO.DenseRows(q.DType);
        var dq = Empty(op, q.Layout.Shape, q.DType, q.Device);
        var dk = Empty(op, k.Layout.Shape, q.DType, q.Device);
        var dv = Empty(op, v.Layout.Shape, q.DType, q.Device);
        try
        {
            q.Backend.ScaledDotProductAttentionBackward(q.Storage, k.Storage, v.Storage, mask?.Storage, o.Storage, lse.Storage, g.Storage,
                dq.Storage, dk.Storage, dv.Storage, shape);
        }
        catch
        {
            dq.Dispose(); dk.Dispose(); dv.Dispose();
            throw;
        }
        return (dq, dk, dv);
    }

    // ---- plumbing ----

    static (int[] Batch, int L, int S, int E, int Ev) CheckAttention(string op, Tensor q, Tensor k, Tensor v, Tensor? mask, double dropoutP, bool isCausal)
    {
        CheckSameDevice(op, q, k);
        CheckSameDevice(op, q, v);
        if (mask is not null) CheckSameDevice(op, q, mask);
        if (!q.DType.IsFloatingPoint() || k.DType != q.DType || v.DType != q.DType)
            throw new DTypeException(op, $"expected query, key and value of one floating point dtype, got {q.Describe()}, {k.Describe()} and {v.Describe()}");
        string shapes = $"query {Shape.Format(q.Layout.Shape)}, key {Shape.Format(k.Layout.Shape)}, value {Shape.Format(v.Layout.Shape)}";
        if (q.Rank < 2 || k.Rank < 2 || v.Rank < 2)
            throw new ShapeException(op, $"expected query [..., L, E], key [..., S, E] and value [..., S, Ev], got {shapes}");
        int l = q.Layout.Shape[^2], e = q.Layout.Shape[^1], s = k.Layout.Shape[^2];
        if (k.Layout.Shape[^1] != e)
            throw new ShapeException(op, $"query and key must have one embedding size E, got {shapes}");
        if (v.Layout.Shape[^2] != s)
            throw new ShapeException(op, $"key and value must have one sequence length S, got {shapes}");
        var batch = Shape.Broadcast(Shape.Broadcast(q.Layout.Shape[..^2], k.Layout.Shape[..^2], op), v.Layout.Shape[..^2], op);
        if (!(dropoutP >= 0 && dropoutP < 1)) throw new EngineException(op, $"dropout probability has to be in [0, 1), got {dropoutP}");
        if (mask is not null)
        {
            if (isCausal) throw new EngineException(op, "an explicit attention mask should not be set when isCausal is true");
            if (mask.DType != DType.Bool && !mask.DType.IsFloatingPoint())
                throw new DTypeException(op, $"expected a Bool or floating point mask, got {mask.Describe()}");
            if (mask.Layout.TryBroadcastTo([.. batch, l, s]) is null)
                throw new ShapeException(op, $"the mask {Shape.Format(mask.Layout.Shape)} does not broadcast to the scores {Shape.Format([.. batch, l, s])} ({shapes})");
        }
        return (batch, l, s, e, v.Layout.Shape[^1]);
    }

    // t broadcast to shape, dense from element 0 as dtype (an alias when already so). Not recorded.
    static Tensor DenseAs(Tensor t, int[] shape, DType dtype)
    {
        if (t.Layout.Shape.AsSpan().SequenceEqual(shape)) return t.DenseRows(dtype);
        using var x = t.NewView(t.Layout.TryBroadcastTo(shape)!);
        return x.DenseRows(dtype);
    }

    // The mask as additive scores in the work dtype (Bool: 0 where kept, −∞ elsewhere): one [L, S] matrix when it
    // does not vary over the batch dims, else dense [..., L, S].
    static Tensor AdditiveMask(Tensor mask, int[] batch, int l, int s, DType work, out bool shared)
    {
        using var _ = GradMode.NoGrad();
        int lead = mask.Rank - 2;
        shared = true;
        for (int i = 0; i < lead; i++) if (mask.Layout.Shape[i] != 1) shared = false;
        Tensor m = mask;
        Tensor? squeezed = null;
        if (shared && mask.Rank > 2)
        {
            // Only size-1 dims lead: drop them so the matrix broadcasts to [L, S].
            squeezed = mask.Reshape(mask.Layout.Shape[^2], mask.Layout.Shape[^1]);
            m = squeezed;
        }
        try
        {
            int[] shape = shared ? [l, s] : [.. batch, l, s];
            if (m.DType != DType.Bool) return DenseAs(m, shape, work);
            using var zero = Scalar(0, work, mask.Device);
            using var hidden = Scalar(double.NegativeInfinity, work, mask.Device);
            using var add = Where(m, zero, hidden);
            return DenseAs(add, shape, work);
        }
        finally { squeezed?.Dispose(); }
    }

    // The explicit path (the dropout case): every step a recorded op, the mask drawn by Dropout.
    static Tensor AttentionComposite(Tensor q, Tensor k, Tensor v, Tensor? mask, double dropoutP, bool isCausal, double scale, Generator? generator)
    {
        using var kt = k.Transpose(-2, -1);
        using var raw = q.MatMul(kt);
        var scores = raw.Mul(scale);
        try
        {
            if (mask is not null || isCausal)
            {
                Tensor next;
                if (isCausal)
                {
                    int l = q.Layout.Shape[^2], s = k.Layout.Shape[^2];
                    using var ones = Ones([l, s], DType.Float32, q.Device);
                    using var lower = ones.Tril();
                    using var future = lower.Eq(0);
                    next = scores.MaskedFill(future, double.NegativeInfinity);
                }
                else if (mask!.DType == DType.Bool)
                {
                    using var hidden = mask.Eq(0);
                    next = scores.MaskedFill(hidden, double.NegativeInfinity);
                }
                else next = scores.Add(mask);
                scores.Dispose();
                scores = next;
            }
            using var p = scores.Softmax(-1);
            using var dropped = p.Dropout(dropoutP, true, generator);
            return dropped.MatMul(v);
        }
        finally { scores.Dispose(); }
    }
}

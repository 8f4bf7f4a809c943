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
        // q, k, v are read in place through their strides (the transposed views of a fused projection need no copy);
        // o is written in q's [..., L, h, Ev] memory order when q has it, so o.Transpose(-3, -2) is a free view.
        var qv = AttentionInput(query, [.. batch, l, e]);
        var kv = AttentionInput(key, [.. batch, s, e]);
        var vv = AttentionInput(value, [.. batch, s, ev]);
        Tensor? om = null, md = null, lse = null;
        try
        {
            om = AttentionOutput(op, qv, batch, l, ev);
            int split = BatchSplit(batch, [qv, kv, vv, om]);
            if (split < 0)
            {
                // Batch dims that fold into no two levels: the dense copies fold at any point.
                Densify(ref qv); Densify(ref kv); Densify(ref vv);
                split = BatchSplit(batch, [qv, kv, vv, om]);
            }
            bool shared = false;
            md = attnMask is null ? null : AdditiveMask(attnMask, batch, l, s, work, out shared);
            var shape = new AttentionShape((int)heads, l, s, e, ev, sc, isCausal, shared, Heads(batch, split));
            lse = Empty(op, [.. batch, l], work, query.Device);
            query.Backend.ScaledDotProductAttention(Operand(qv, split), Operand(kv, split), Operand(vv, split), md?.Storage, Operand(om, split), lse.Storage, shape);
            if (!ShouldRecord([query, key, value])) return om;
            return om.Record(new ScaledDotProductAttentionBackward(qv, kv, vv, md, om, lse, shape), query, key, value);
        }
        catch
        {
            om?.Dispose();
            throw;
        }
        finally
        {
            qv.Dispose(); kv.Dispose(); vv.Dispose(); md?.Dispose(); lse?.Dispose();
        }
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
    /// The gradients of <see cref="ScaledDotProductAttention"/> (without dropout) from its operands (q, k, v and the
    /// output at the broadcast batch shape, any strides with adjacent columns), logsumexp and the output gradient
    /// <paramref name="dO"/>, by the fused backward kernel, which recomputes the scores from the logsumexp and reads
    /// dO in place. When q, k and v are equal-strided, non-overlapping parts of one storage that they tile (the
    /// Split of a fused [b, t, 3C] projection), dq, dk and dv are the same parts of one new buffer, so the
    /// projection's gradient is that buffer with no copy (see GraphExecutor's slice accumulation); otherwise each is
    /// contiguous. Not recorded (no double backward).
    /// </summary>
    public static (Tensor Dq, Tensor Dk, Tensor Dv) ScaledDotProductAttentionGradient(Tensor q, Tensor k, Tensor v, Tensor? mask, Tensor o, Tensor lse, Tensor dO, AttentionShape shape)
    {
        const string op = "ScaledDotProductAttentionBackward";
        q.CheckFloating(op);
        CheckSameDevice(op, q, dO);
        if (!o.Layout.Shape.AsSpan().SequenceEqual(dO.Layout.Shape))
            throw new ShapeException(op, $"the output {o.Describe()} and its gradient {dO.Describe()} must have one shape");
        int n = q.Rank - 2;
        var batch = q.Layout.Shape.ToArray()[..Math.Max(n, 0)];
        if (n < 0 || k.Rank != q.Rank || v.Rank != q.Rank || o.Rank != q.Rank || !k.Layout.Shape[..n].AsSpan().SequenceEqual(batch)
            || !v.Layout.Shape[..n].AsSpan().SequenceEqual(batch) || !o.Layout.Shape[..n].AsSpan().SequenceEqual(batch))
            throw new ShapeException(op, $"expected q, k, v and the output at one batch shape, got {q.Describe()}, {k.Describe()}, {v.Describe()} and {o.Describe()}");
        var qv = AttentionInput(q, q.Layout.Shape);
        var kv = AttentionInput(k, k.Layout.Shape);
        var vv = AttentionInput(v, v.Layout.Shape);
        var ov = AttentionInput(o, o.Layout.Shape);
        var g = dO.DType == q.DType ? AttentionInput(dO, dO.Layout.Shape) : dO.DenseRows(q.DType);
        Tensor? dq = null, dk = null, dv = null;
        try
        {
            (dq, dk, dv) = GradientBuffers(op, qv, kv, vv);
            int split = BatchSplit(batch, [qv, kv, vv, ov, g, dq, dk, dv]);
            if (split < 0) { Densify(ref g); split = BatchSplit(batch, [qv, kv, vv, ov, g, dq, dk, dv]); }
            if (split < 0)
            {
                Densify(ref qv); Densify(ref kv); Densify(ref vv); Densify(ref ov);
                dq.Dispose(); dk.Dispose(); dv.Dispose();
                (dq, dk, dv) = GradientBuffers(op, qv, kv, vv);
                split = BatchSplit(batch, [qv, kv, vv, ov, g, dq, dk, dv]);
            }
            q.Backend.ScaledDotProductAttentionBackward(Operand(qv, split), Operand(kv, split), Operand(vv, split), mask?.Storage, Operand(ov, split), lse.Storage,
                Operand(g, split), Operand(dq, split), Operand(dk, split), Operand(dv, split), shape with { Heads = Heads(batch, split) });
            return (dq, dk, dv);
        }
        catch
        {
            dq?.Dispose(); dk?.Dispose(); dv?.Dispose();
            throw;
        }
        finally { qv.Dispose(); kv.Dispose(); vv.Dispose(); ov.Dispose(); g.Dispose(); }
    }

    // dq, dk, dv: the same parts of one new buffer when q, k, v tile one storage (see ScaledDotProductAttentionGradient),
    // else contiguous tensors of their shapes.
    static (Tensor, Tensor, Tensor) GradientBuffers(string op, Tensor q, Tensor k, Tensor v)
    {
        if (TilesOneStorage(q, k, v))
        {
            using var buffer = Empty(op, [(int)(3 * q.Numel)], q.DType, q.Device);
            return (buffer.NewView(q.Layout), buffer.NewView(k.Layout), buffer.NewView(v.Layout));
        }
        var dq = Empty(op, q.Layout.Shape, q.DType, q.Device);
        Tensor? dk = null;
        try
        {
            dk = Empty(op, k.Layout.Shape, q.DType, q.Device);
            return (dq, dk, Empty(op, v.Layout.Shape, q.DType, q.Device));
        }
        catch { dq.Dispose(); dk?.Dispose(); throw; }
    }

    // True when q, k, v cover elements [0, 3·numel) of one storage exactly once each: one shape and strides, offsets
    // 0, d, 2d (in some order), and the layout with the offsets as one more dim of size 3 and stride d injective
    // (each stride past the reach of the smaller ones) with 3·numel as its extent.
    static bool TilesOneStorage(Tensor q, Tensor k, Tensor v)
    {
        if (q.Storage != k.Storage || q.Storage != v.Storage || q.Numel == 0 || 3 * q.Numel > int.MaxValue) return false;
        if (!q.Layout.Shape.AsSpan().SequenceEqual(k.Layout.Shape) || !q.Layout.Shape.AsSpan().SequenceEqual(v.Layout.Shape)
            || !q.Layout.Strides.SequenceEqual(k.Layout.Strides) || !q.Layout.Strides.SequenceEqual(v.Layout.Strides))
            return false;
        long[] off = [q.Layout.Offset, k.Layout.Offset, v.Layout.Offset];
        Array.Sort(off);
        long d = off[1] - off[0];
        if (d <= 0 || off[2] - off[1] != d) return false;
        var dims = new List<(long Stride, long Size)> { (d, 3) };
        for (int i = 0; i < q.Rank; i++)
            if (q.Layout.Shape[i] > 1)
            {
                if (q.Layout.Strides[i] <= 0) return false;
                dims.Add((q.Layout.Strides[i], q.Layout.Shape[i]));
            }
        dims.Sort((x, y) => x.Stride.CompareTo(y.Stride));
        long reach = 0; // the largest index the smaller dims reach
        foreach (var (stride, size) in dims)
        {
            if (stride <= reach) return false;
            reach += stride * (size - 1);
        }
        return off[0] == 0 && reach + 1 == 3 * q.Numel;
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

    // t broadcast to shape as a new handle on its storage when its columns are adjacent (what an AttentionOperand
    // needs), else a dense copy. Not recorded.
    static Tensor AttentionInput(Tensor t, ReadOnlySpan<int> shape)
    {
        var x = t.Layout.Shape.AsSpan().SequenceEqual(shape) ? t.Alias() : t.NewView(t.Layout.TryBroadcastTo(shape)!);
        if (shape[^1] <= 1 || x.Layout.Strides[^1] == 1) return x;
        Densify(ref x);
        return x;
    }

    // Replaces x by a dense copy from element 0 (itself when already so).
    static void Densify(ref Tensor x)
    {
        var d = x.DenseRows(x.DType);
        x.Dispose();
        x = d;
    }

    // The output [..., L, Ev]: in [..., L, h, Ev] memory (h the last batch dim) when q's rows are further apart than
    // its heads, as the [b, h, t, d] views of a [b, t, h·d] projection are, so that o.Transpose(-3, -2) is the dense
    // [..., L, h, Ev] (PyTorch's flash attention does the same); else contiguous.
    static Tensor AttentionOutput(string op, Tensor q, int[] batch, int l, int ev)
    {
        int n = batch.Length;
        if (n == 0 || batch[^1] <= 1 || l <= 1 || q.Layout.Strides[n - 1] >= q.Layout.Strides[n])
            return Empty(op, [.. batch, l, ev], q.DType, q.Device);
        using var memory = Empty(op, [.. batch[..^1], l, batch[^1], ev], q.DType, q.Device);
        var perm = new int[n + 2];
        for (int i = 0; i < n - 1; i++) perm[i] = i;
        perm[n - 1] = n; perm[n] = n - 1; perm[n + 1] = n + 1;
        return new Tensor(memory.Storage, memory.Layout.Permute(perm));
    }

    // Where the batch dims split into the two levels of an AttentionOperand ([0, g) and [g, n)) so that each folds
    // into one stride in every operand; −1 when no split does.
    static int BatchSplit(int[] batch, ReadOnlySpan<Tensor> operands)
    {
        for (int g = 0; g <= batch.Length; g++)
        {
            bool ok = true;
            foreach (var x in operands) ok = ok && Folds(x.Layout, batch, 0, g) && Folds(x.Layout, batch, g, batch.Length);
            if (ok) return g;
        }
        return -1;
    }

    // Whether batch dims [lo, hi) of x step as one dim (size-1 dims have no stride to match).
    static bool Folds(Layout x, int[] batch, int lo, int hi)
    {
        long next = -1; // the stride the next outer dim of size > 1 must have
        for (int i = hi - 1; i >= lo; i--)
        {
            if (batch[i] == 1) continue;
            if (next >= 0 && x.Strides[i] != next) return false;
            next = x.Strides[i] * batch[i];
        }
        return true;
    }

    // The stride of batch dims [lo, hi) folded (that of the innermost of size > 1; 0 when none).
    static long FoldedStride(Layout x, int lo, int hi)
    {
        for (int i = hi - 1; i >= lo; i--) if (x.Shape[i] != 1) return x.Strides[i];
        return 0;
    }

    // The inner level's count: the product of batch dims [split, n), at least 1.
    static int Heads(int[] batch, int split)
    {
        long h = 1;
        for (int i = split; i < batch.Length; i++) h *= batch[i];
        return (int)Math.Max(h, 1);
    }

    // x ([..., rows, cols], adjacent columns) as the backend's operand with its batch dims split at split.
    static AttentionOperand Operand(Tensor x, int split)
    {
        int n = x.Rank - 2;
        return new(x.Storage, x.Layout.Offset, FoldedStride(x.Layout, 0, split), FoldedStride(x.Layout, split, n), x.Layout.Strides[n]);
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

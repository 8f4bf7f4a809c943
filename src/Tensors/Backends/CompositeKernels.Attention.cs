using Engine.Ops;

namespace Engine.Backends;

public static partial class CompositeKernels
{
    // ---- scaled-dot-product attention: the explicit matmul/softmax path, the reference of the fused kernels ----

    /// <summary>
    /// <see cref="IBackend.ScaledDotProductAttention"/> composed: s = q·kᵀ·scale + mask (+ the causal mask),
    /// lse = max + log Σ exp(s − max) per row, P = exp(s − lse), o = P·v. Keeps the [batch, L, S] scores in a
    /// temporary, which is what the fused kernels avoid; strided operands are copied to contiguous work-dtype ones.
    /// </summary>
    public static void ScaledDotProductAttention(IBackend backend, AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse, AttentionShape a)
    {
        ContractChecks.Floating("ScaledDotProductAttention", q.Data.DType);
        int b = a.Batch, l = a.Queries, sk = a.Keys, e = a.HeadDim, ev = a.ValueDim;
        if ((long)b * l == 0) return;
        var w = Work(q.Data.DType);
        using var s = new Scratch(backend, q.Data.Device);
        if (sk == 0)
        {
            backend.Fill(lse, Vector(b * l), double.NegativeInfinity);
            if (ev > 0) backend.Fill(o.Data, o.ToLayout(a, l, ev), 0);
            return;
        }
        var qw = DenseIn(backend, s, q, w, a, l, e);
        var kw = DenseIn(backend, s, k, w, a, sk, e);
        var p = Probabilities(backend, s, qw, kw, mask, lse, a, w, writeLse: true);
        if (ev == 0) return;
        var vw = DenseIn(backend, s, v, w, a, sk, ev);
        var ow = DenseOut(s, o, w, a, l, ev);
        backend.MatMul(p, Cube(b, l, sk), vw, Cube(b, sk, ev), ow, b, l, ev, sk);
        Store(backend, ow, o, a, l, ev);
    }

    /// <summary>
    /// <see cref="IBackend.ScaledDotProductAttentionBackward"/> composed: P recomputed from the saved logsumexp,
    /// dP = dO·vᵀ, D = rowsum(dO∘o), dS = P∘(dP − D); dq = scale·dS·k, dk = scale·dSᵀ·q, dv = Pᵀ·dO.
    /// </summary>
    public static void ScaledDotProductAttentionBackward(IBackend backend, AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse,
        AttentionOperand dO, AttentionOperand dq, AttentionOperand dk, AttentionOperand dv, AttentionShape a)
    {
        ContractChecks.Floating("ScaledDotProductAttentionBackward", q.Data.DType);
        int b = a.Batch, l = a.Queries, sk = a.Keys, e = a.HeadDim, ev = a.ValueDim;
        if (b == 0) return;
        if (l == 0 || sk == 0)
        {
            // No score: every gradient that has elements is zero.
            if (l > 0 && e > 0) backend.Fill(dq.Data, dq.ToLayout(a, l, e), 0);
            if (sk > 0 && e > 0) backend.Fill(dk.Data, dk.ToLayout(a, sk, e), 0);
            if (sk > 0 && ev > 0) backend.Fill(dv.Data, dv.ToLayout(a, sk, ev), 0);
            return;
        }
        var w = Work(q.Data.DType);
        using var s = new Scratch(backend, q.Data.Device);
        var qw = DenseIn(backend, s, q, w, a, l, e);
        var kw = DenseIn(backend, s, k, w, a, sk, e);
        var p = Probabilities(backend, s, qw, kw, mask, lse, a, w, writeLse: false);
        var scores = Cube(b, l, sk);
        var vw = DenseIn(backend, s, v, w, a, sk, ev);
        var gw = DenseIn(backend, s, dO, w, a, l, ev);
        var ow = DenseIn(backend, s, o, w, a, l, ev);
        var ds = s.New(w, scores);
        if (ev > 0)
        {
            backend.MatMul(gw, Cube(b, l, ev), vw, Transposed(b, sk, ev), ds, b, l, sk, ev);      // dP
            var prod = s.New(w, (long)b * l * ev);
            backend.Binary(new MulOp(), gw, Matrix(b * l, ev), ow, Matrix(b * l, ev), prod, Matrix(b * l, ev));
            var delta = s.New(w, (long)b * l);
            backend.Reduce(ReduceOp.Sum, prod, Matrix(b * l, ev), 1, delta, null, 0);
            backend.Binary(new SubOp(), ds, Matrix(b * l, sk), delta, PerRow(b * l, sk), ds, Matrix(b * l, sk));
            backend.Binary(new MulOp(), p, scores, ds, scores, ds, scores);                      // dS
        }
        else backend.Fill(ds, scores, 0);
        var scale = s.Constant(w, a.Scale);
        if (e > 0)
        {
            var dqw = DenseOut(s, dq, w, a, l, e);
            backend.MatMul(ds, scores, kw, Cube(b, sk, e), dqw, b, l, e, sk);
            backend.Binary(new MulOp(), dqw, Matrix(b * l, e), scale, Broadcast2(b * l, e), dqw, Matrix(b * l, e));
            Store(backend, dqw, dq, a, l, e);
            var dkw = DenseOut(s, dk, w, a, sk, e);
            backend.MatMul(ds, Transposed(b, l, sk), qw, Cube(b, l, e), dkw, b, sk, e, l);
            backend.Binary(new MulOp(), dkw, Matrix(b * sk, e), scale, Broadcast2(b * sk, e), dkw, Matrix(b * sk, e));
            Store(backend, dkw, dk, a, sk, e);
        }
        if (ev > 0)
        {
            var dvw = DenseOut(s, dv, w, a, sk, ev);
            backend.MatMul(p, Transposed(b, l, sk), gw, Cube(b, l, ev), dvw, b, sk, ev, l);
            Store(backend, dvw, dv, a, sk, ev);
        }
    }

    // True when the operand is contiguous [batch, rows, cols] from element 0, so the composite uses it as it is.
    static bool IsDense(AttentionOperand x, AttentionShape a, int rows, int cols)
    {
        var layout = x.ToLayout(a, rows, cols);
        return layout.Offset == 0 && layout.IsContiguous;
    }

    // The operand as contiguous [batch·rows, cols] in dtype w: itself when it already is, else a copy.
    static Storage DenseIn(IBackend backend, Scratch s, AttentionOperand x, DType w, AttentionShape a, int rows, int cols)
    {
        if (x.Data.DType == w && IsDense(x, a, rows, cols)) return x.Data;
        var layout = x.ToLayout(a, rows, cols);
        var y = s.New(w, layout.Numel);
        if (layout.Numel > 0) backend.Copy(x.Data, layout, y, Layout.Contiguous(layout.Shape));
        return y;
    }

    // Where a result is computed: the output itself when it is contiguous in dtype w, else a temporary for Store.
    static Storage DenseOut(Scratch s, AttentionOperand x, DType w, AttentionShape a, int rows, int cols) =>
        x.Data.DType == w && IsDense(x, a, rows, cols) ? x.Data : s.New(w, (long)a.Batch * rows * cols);

    // Writes a result computed in a DenseOut temporary through the output's strides (nothing when it was the output).
    static void Store(IBackend backend, Storage computed, AttentionOperand x, AttentionShape a, int rows, int cols)
    {
        if (computed == x.Data) return;
        var layout = x.ToLayout(a, rows, cols);
        if (layout.Numel > 0) backend.Copy(computed, Layout.Contiguous(layout.Shape), x.Data, layout);
    }

    // P = exp(s − lse) in the work dtype, s the scaled, masked scores of the contiguous work-dtype q and k; the
    // forward also writes lse (from max and Σ).
    static Storage Probabilities(IBackend backend, Scratch s, Storage q, Storage k, Storage? mask, Storage lse, AttentionShape a, DType w, bool writeLse)
    {
        int b = a.Batch, l = a.Queries, sk = a.Keys, e = a.HeadDim, rows = b * l;
        var scores = Cube(b, l, sk);
        var m = Matrix(rows, sk);
        var sc = s.New(w, scores);
        if (e == 0) backend.Fill(sc, scores, 0);
        else backend.MatMul(q, Cube(b, l, e), k, Transposed(b, sk, e), sc, b, l, sk, e);
        backend.Binary(new MulOp(), sc, m, s.Constant(w, a.Scale), Broadcast2(rows, sk), sc, m);
        if (mask is not null)
            backend.Binary(new AddOp(), sc, scores, mask, a.SharedMask ? new Layout([b, l, sk], [0, sk, 1], 0) : scores, sc, scores);
        if (a.Causal)
        {
            var causal = s.New(w, (long)l * sk);
            var host = new double[l * sk];
            for (int i = 0; i < l; i++)
                for (int j = i + 1; j < sk; j++) host[i * sk + j] = double.NegativeInfinity;
            if (w == DType.Float64) backend.CopyFromHost<double>(host, causal);
            else backend.CopyFromHost<float>(Array.ConvertAll(host, x => (float)x), causal);
            backend.Binary(new AddOp(), sc, scores, causal, new Layout([b, l, sk], [0, sk, 1], 0), sc, scores);
        }
        if (writeLse)
        {
            var max = s.New(w, rows);
            backend.Reduce(ReduceOp.Max, sc, m, 1, max, null, 0);
            var shifted = s.New(w, m);
            backend.Binary(new SubOp(), sc, m, max, PerRow(rows, sk), shifted, m);
            backend.Unary(new ExpOp(), shifted, m, shifted, m);
            var sum = s.New(w, rows);
            backend.Reduce(ReduceOp.Sum, shifted, m, 1, sum, null, 0);
            backend.Unary(new LogOp(), sum, Vector(rows), sum, Vector(rows));
            backend.Binary(new AddOp(), max, Vector(rows), sum, Vector(rows), lse, Vector(rows));
        }
        backend.Binary(new SubOp(), sc, m, lse, PerRow(rows, sk), sc, m);
        backend.Unary(new ExpOp(), sc, m, sc, m);
        return sc;
    }

    static Layout Cube(int b, int rows, int cols) => Layout.Contiguous([b, rows, cols]);

    // The transpose [b, cols, rows] of a contiguous [b, rows, cols].
    static Layout Transposed(int b, int rows, int cols) => new([b, cols, rows], [(long)rows * cols, 1, cols], 0);

    // One element broadcast to [rows, cols].
    static Layout Broadcast2(int rows, int cols) => new([rows, cols], [0, 0], 0);
}

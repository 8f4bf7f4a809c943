using Engine.Autocast;
using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// Matrix product with <c>torch.matmul</c> semantics: 1-D·1-D is a dot product (0-d), a 1-D operand is treated
    /// as a row (left) or column (right) vector and that dim removed from the result, and batch dims of N-D operands
    /// broadcast. Computed by the backend's cache-blocked GEMM, which reads transposed and broadcast operands in place.
    /// </summary>
    public Tensor MatMul(Tensor other)
    {
        const string op = "MatMul";
        if (AutocastDispatch.TryAutocast(typeof(MatMulBackward), this, other, out var ac)) using (ac) return ac[0].MatMul(ac[1]);
        CheckSameDevice(op, this, other);
        if (Rank == 0 || other.Rank == 0)
            throw new ShapeException(op, $"both arguments to MatMul need to be at least 1-D, got {Shape.Format(Layout.Shape)} and {Shape.Format(other.Layout.Shape)}");
        int k = Layout.Shape[^1];
        int kb = other.Rank == 1 ? other.Layout.Shape[0] : other.Layout.Shape[^2];
        if (k != kb)
            throw new ShapeException(op, $"shapes {Shape.Format(Layout.Shape)} and {Shape.Format(other.Layout.Shape)} cannot be multiplied ({k} != {kb})");
        var dt = DTypes.Promote(DType, other.DType);
        if (dt == DType.Bool) dt = DType.Int64;
        var a = DType == dt ? this : To(dt);
        var b = other.DType == dt ? other : other.To(dt);
        try
        {
            var y = Multiply(a, b);
            return ShouldRecord(a, b) ? y.Record(new MatMulBackward(a, b), a, b) : y;
        }
        finally
        {
            if (!ReferenceEquals(a, this)) a.Dispose();
            if (!ReferenceEquals(b, other)) b.Dispose();
        }
    }

    // For C = A·B: dA = dC·Bᵀ and dB = Aᵀ·dC, with a 1-D operand treated as a row (a) or column (b) vector as in the
    // forward; the executor sums broadcast batch dims back. The transposes are views: the GEMM reads any strides.
    internal sealed class MatMulBackward : GradFunction
    {
        readonly SavedTensor _a, _b;
        internal MatMulBackward(Tensor a, Tensor b) { _a = Save(a); _b = Save(b); }

        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var (a, b) = (_a.Value, _b.Value);
            if (a.Rank == 1 && b.Rank == 1)
                return [NeedsGrad(0) ? grad * b : null, NeedsGrad(1) ? grad * a : null];   // a dot product; grad is 0-d
            var a2 = a.Rank == 1 ? a.Unsqueeze(0) : a;                                        // [.., m, k]
            var b2 = b.Rank == 1 ? b.Unsqueeze(1) : b;                                        // [.., k, n]
            var g2 = a.Rank == 1 ? grad.Unsqueeze(-2) : b.Rank == 1 ? grad.Unsqueeze(-1) : grad; // [.., m, n]
            Tensor? da = null, db = null;
            // A gradient is computed in its input's layout when that input is a column-major matrix (as PyTorch's
            // mm_mat2_backward): for y = x·Wᵀ, dWᵀ comes out as a transposed view, so the transpose's backward hands
            // the weight a contiguous gradient, which the executor takes over instead of copying.
            if (NeedsGrad(0))
            {
                if (a.Rank == 2 && b.Rank == 2 && IsColumnMajor(a))
                    da = b2.MatMul(g2.Transpose(0, 1)).Transpose(0, 1);                      // (b·gᵀ)ᵀ: [m, k], a's strides
                else
                {
                    da = g2.MatMul(b2.Transpose(-1, -2));                                    // [batch.., m, k]
                    if (a.Rank == 1) da = da.Squeeze(-2);
                }
            }
            if (NeedsGrad(1))
            {
                if (b.Rank == 2 && a2.Rank >= 2 && IsColumnMajor(b))
                {
                    int k = a2.Layout.Shape[^1], n = g2.Layout.Shape[^1];
                    db = g2.Reshape(-1, n).Transpose(0, 1).MatMul(a2.Reshape(-1, k)).Transpose(0, 1); // (gᵀ·a)ᵀ: [k, n], b's strides
                }
                else if (b.Rank == 2 && a2.Rank > 2)
                {
                    // The Linear case: fold a's batch dims into rows, one GEMM straight to [k, n].
                    int k = a2.Layout.Shape[^1], n = g2.Layout.Shape[^1];
                    db = a2.Reshape(-1, k).Transpose(0, 1).MatMul(g2.Reshape(-1, n));
                }
                else
                {
                    db = a2.Transpose(-1, -2).MatMul(g2);                                    // [batch.., k, n]
                    if (b.Rank == 1) db = db.Squeeze(-1);
                }
            }
            return [da, db];
        }
    }

    // A matrix stored column by column (a transposed view of a contiguous one); size-1 dims make the layout ambiguous.
    static bool IsColumnMajor(Tensor t)
    {
        var l = t.Layout;
        return l.Rank == 2 && l.Shape[0] > 1 && l.Shape[1] > 1 && l.Strides[0] == 1 && l.Strides[1] == l.Shape[0];
    }

    // The unrecorded product of two tensors of one dtype.
    static Tensor Multiply(Tensor a, Tensor b)
    {
        var al = a.Rank == 1 ? a.Layout.Unsqueeze(0) : a.Layout;          // [.., m, k]
        var bl = b.Rank == 1 ? b.Layout.Unsqueeze(1) : b.Layout;          // [.., k, n]
        int m = al.Shape[^2], k = al.Shape[^1], n = bl.Shape[^1];
        var batchA = al.Shape[..^2];
        var batchB = bl.Shape[..^2];
        var batch = Shape.Broadcast(batchA, batchB, "MatMul");
        // Result shape: the broadcast batch, then m unless a was 1-D, then n unless b was 1-D.
        var outShape = new List<int>(batch);
        if (a.Rank > 1) outShape.Add(m);
        if (b.Rank > 1) outShape.Add(n);
        // The GEMM contract counts batches and folded rows in 32 bits.
        long batches = Shape.Numel(batch), rowsAll = Shape.Numel(al.Shape) / Math.Max(k, 1);
        if (batches > int.MaxValue || bl.Rank == 2 && rowsAll > int.MaxValue)
            throw new ShapeException("MatMul", $"shapes {Shape.Format(a.Layout.Shape)} and {Shape.Format(b.Layout.Shape)} make {(bl.Rank == 2 ? rowsAll : batches)} {(bl.Rank == 2 ? "rows" : "batches")}, more than one product takes ({int.MaxValue})");

        Layout a3, b3;
        int nb;
        Tensor? aCopy = null, bCopy = null;
        try
        {
            if (bl.Rank == 2)
            {
                // The common Linear case: fold every batch dim of a into the rows of one GEMM.
                var folded = al.TryView([(int)rowsAll, k]);
                if (k == 0 || folded is null)
                {
                    aCopy = a.CastCopy(a.DType, a.Device);
                    folded = Layout.Contiguous([(int)rowsAll, k]);
                }
                int rows = folded.Shape[0];
                a3 = new Layout([1, rows, k], [0, folded.Strides[0], folded.Strides[1]], folded.Offset);
                b3 = new Layout([1, k, n], [0, bl.Strides[0], bl.Strides[1]], bl.Offset);
                m = rows;
                nb = 1;
            }
            else
            {
                int batchCount = (int)batches;
                a3 = Batched(a, al, batch, m, k, batchCount, ref aCopy);
                b3 = Batched(b, bl, batch, k, n, batchCount, ref bCopy);
                nb = batchCount;
            }
            var y = Empty("MatMul", [.. outShape], a.DType, a.Device);
            if (y.Numel > 0)
            {
                if (k == 0) y.Backend.Fill(y.Storage, y.Layout, 0);
                else a.Backend.MatMul((aCopy ?? a).Storage, a3, (bCopy ?? b).Storage, b3, y.Storage, nb, m, n, k);
            }
            return y;
        }
        finally { aCopy?.Dispose(); bCopy?.Dispose(); }
    }

    // Lays an operand out as [batch, rows, cols]: a view when the (broadcast) batch dims merge into one stride,
    // otherwise a contiguous copy of the broadcast operand.
    static Layout Batched(Tensor t, Layout l, int[] batch, int rows, int cols, int batchCount, ref Tensor? copy)
    {
        int[] full = [.. batch, rows, cols];
        var expanded = l.TryBroadcastTo(full)!;
        var v = expanded.TryView([batchCount, rows, cols]);
        if (v is not null) return v;
        var src = new Tensor(t.Storage, expanded);
        try { copy = src.CastCopy(t.DType, t.Device); }
        finally { src.DetachFromScopes(); src.Dispose(); }
        return Layout.Contiguous([batchCount, rows, cols]);
    }
}

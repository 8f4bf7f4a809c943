using Engine.Graph;

namespace Engine.Autograd.Rules;

// Backward of MatMul (src/Tensors/Tensor.MatMul.cs; inputs [a, b], saved [a, b], one dtype): for C = A·B,
// dA = dC·Bᵀ and dB = Aᵀ·dC, with a 1-D operand treated as a row (a) or column (b) vector as in the forward, and
// broadcast batch dims summed back. The transposes are views: the GEMM reads any strides.
static class MatMulRules
{
    [BackwardRule("MatMul")]
    static Tensor?[] MatMul(GradNode node, Tensor grad)
    {
        bool wantA = node.Edges[0].IsLive, wantB = node.Edges[1].IsLive;
        var a = node.Saved(0);
        var b = node.Saved(1);
        if (a.Rank == 1 && b.Rank == 1)
            return [wantA ? grad.Mul(b) : null, wantB ? grad.Mul(a) : null];   // a dot product; grad is 0-d

        using var a2 = a.Rank == 1 ? a.Unsqueeze(0) : a.Detach();            // [.., m, k]
        using var b2 = b.Rank == 1 ? b.Unsqueeze(1) : b.Detach();            // [.., k, n]
        using var g2 = a.Rank == 1 ? grad.Unsqueeze(-2) : b.Rank == 1 ? grad.Unsqueeze(-1) : grad.Detach(); // [.., m, n]

        Tensor? da = null, db = null;
        try
        {
            if (wantA)
            {
                using var bt = b2.Transpose(-1, -2);
                using var full = g2.MatMul(bt);                                // [batch.., m, k]
                using var squeezed = a.Rank == 1 ? full.Squeeze(-2) : full.Detach();
                da = Broadcasting.SumToShape(squeezed, a.Layout.Shape);
            }
            if (wantB)
            {
                if (b.Rank == 2 && a2.Rank > 2)
                {
                    // The Linear case: fold a's batch dims into rows, one GEMM straight to [k, n].
                    int k = a2.Layout.Shape[^1], n = g2.Layout.Shape[^1];
                    using var af = a2.Reshape(-1, k);
                    using var gf = g2.Reshape(-1, n);
                    using var aft = af.Transpose(0, 1);
                    db = aft.MatMul(gf);
                }
                else
                {
                    using var at = a2.Transpose(-1, -2);
                    using var full = at.MatMul(g2);                            // [batch.., k, n]
                    using var squeezed = b.Rank == 1 ? full.Squeeze(-1) : full.Detach();
                    db = Broadcasting.SumToShape(squeezed, b.Layout.Shape);
                }
            }
        }
        catch
        {
            da?.Dispose();
            throw;
        }
        return [da, db];
    }
}

using Engine.Graph;

namespace Engine.Autograd.Rules;

/// <summary>
/// Backward rules of LayerNorm and RmsNorm (Tensor.Normalization.cs): one fused kernel gives dx, dWeight and dBias
/// from the saved input, weight and per-row mean and rstd.
/// </summary>
static class NormRules
{
    [BackwardRule("LayerNorm")]
    [BackwardRule("RmsNorm")]
    static Tensor?[] Norm(GradNode node, Tensor grad)
    {
        var a = (NormAttributes)node.Attributes!;
        int s = 0;
        var x = node.Saved(s++);
        var w = a.HasWeight ? node.Saved(s++) : null;
        var mean = node.Saved(s++);
        var rstd = node.Saved(s);
        // Inputs are [x, weight?, bias?].
        int wi = a.HasWeight ? 1 : -1, bi = a.HasBias ? (a.HasWeight ? 2 : 1) : -1;
        bool wantW = wi > 0 && node.Edges[wi].IsLive, wantB = bi > 0 && node.Edges[bi].IsLive;
        var (dx, dw, db) = Tensor.LayerNormBackward(x, w, mean, rstd, grad, a.NormalizedShape.Length, a.Rms, wantW, wantB);
        var r = new Tensor?[node.Inputs.Length];
        if (node.Edges[0].IsLive) r[0] = dx;
        else dx.Dispose();
        if (wi > 0) r[wi] = dw;
        if (bi > 0) r[bi] = db;
        return r;
    }
}

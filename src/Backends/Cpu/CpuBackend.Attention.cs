using Engine.Backends.Cpu.Kernels;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void ScaledDotProductAttention(Storage q, Storage k, Storage v, Storage? mask, Storage o, Storage lse, AttentionShape shape)
    {
        RowKernels.CheckFloat("ScaledDotProductAttention", q.DType);
        var vis = new AttentionVisitor { Q = P(q), K = P(k), V = P(v), Mask = mask is null ? 0 : P(mask), O = P(o), Lse = P(lse), Shape = shape };
        DTypeDispatch.Visit(q.DType, ref vis);
    }

    /// <inheritdoc/>
    public void ScaledDotProductAttentionBackward(Storage q, Storage k, Storage v, Storage? mask, Storage o, Storage lse, Storage dO,
        Storage dq, Storage dk, Storage dv, AttentionShape shape)
    {
        RowKernels.CheckFloat("ScaledDotProductAttentionBackward", q.DType);
        var vis = new AttentionBackwardVisitor
        {
            Q = P(q), K = P(k), V = P(v), Mask = mask is null ? 0 : P(mask), O = P(o), Lse = P(lse), DO = P(dO),
            DQ = P(dq), DK = P(dk), DV = P(dv), Shape = shape,
        };
        DTypeDispatch.Visit(q.DType, ref vis);
    }

    struct AttentionVisitor : IDTypeVisitor
    {
        public nint Q, K, V, Mask, O, Lse; public AttentionShape Shape;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            if (TE.Wide) AttentionKernels.Forward<T, TE, double>(Q, K, V, Mask, O, Lse, Shape);
            else AttentionKernels.Forward<T, TE, float>(Q, K, V, Mask, O, Lse, Shape);
        }
    }

    struct AttentionBackwardVisitor : IDTypeVisitor
    {
        public nint Q, K, V, Mask, O, Lse, DO, DQ, DK, DV; public AttentionShape Shape;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            if (TE.Wide) AttentionKernels.Backward<T, TE, double>(Q, K, V, Mask, O, Lse, DO, DQ, DK, DV, Shape);
            else AttentionKernels.Backward<T, TE, float>(Q, K, V, Mask, O, Lse, DO, DQ, DK, DV, Shape);
        }
    }
}

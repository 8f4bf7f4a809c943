using Engine.Backends.Cpu.Kernels;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void ScaledDotProductAttention(AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse, AttentionShape shape)
    {
        RowKernels.CheckFloat("ScaledDotProductAttention", q.Data.DType);
        var vis = new AttentionVisitor { Q = Op(q), K = Op(k), V = Op(v), Mask = mask is null ? 0 : P(mask), O = Op(o), Lse = P(lse), Shape = shape };
        DTypeDispatch.Visit(q.Data.DType, ref vis);
    }

    /// <inheritdoc/>
    public void ScaledDotProductAttentionBackward(AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse,
        AttentionOperand dO, AttentionOperand dq, AttentionOperand dk, AttentionOperand dv, AttentionShape shape)
    {
        RowKernels.CheckFloat("ScaledDotProductAttentionBackward", q.Data.DType);
        var vis = new AttentionBackwardVisitor
        {
            Q = Op(q), K = Op(k), V = Op(v), Mask = mask is null ? 0 : P(mask), O = Op(o), Lse = P(lse), DO = Op(dO),
            DQ = Op(dq), DK = Op(dk), DV = Op(dv), Shape = shape,
        };
        DTypeDispatch.Visit(q.Data.DType, ref vis);
    }

    // The operand as the kernels' pointer form (its offset folded into the base).
    static AttentionKernels.Operand Op(AttentionOperand x) =>
        new(P(x.Data) + (nint)(x.Offset * x.Data.DType.ElementSize()), x.BatchStride, x.HeadStride, x.RowStride);

    struct AttentionVisitor : IDTypeVisitor
    {
        public AttentionKernels.Operand Q, K, V, O; public nint Mask, Lse; public AttentionShape Shape;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            if (TE.Wide) AttentionKernels.Forward<T, TE, double>(Q, K, V, Mask, O, Lse, Shape);
            else AttentionKernels.Forward<T, TE, float>(Q, K, V, Mask, O, Lse, Shape);
        }
    }

    struct AttentionBackwardVisitor : IDTypeVisitor
    {
        public AttentionKernels.Operand Q, K, V, O, DO, DQ, DK, DV; public nint Mask, Lse; public AttentionShape Shape;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            if (TE.Wide) AttentionKernels.Backward<T, TE, double>(Q, K, V, Mask, O, Lse, DO, DQ, DK, DV, Shape);
            else AttentionKernels.Backward<T, TE, float>(Q, K, V, Mask, O, Lse, DO, DQ, DK, DV, Shape);
        }
    }
}

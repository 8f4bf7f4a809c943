using Engine.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // Scaled-dot-product attention, counted as one call each way however many launches it makes. Heads up to
    // FlashGpuTile.Width (64) wide run the tiled kernels (Kernels/FlashAttentionKernels.cs): one launch forward; Delta
    // (Kernels/AttentionKernels.cs), dq and dk/dv backward. Wider heads run the one-thread-per-element kernels
    // (Kernels/AttentionKernels.cs): two launches forward, three backward. The emulator runs the tiled kernels with
    // FlashEmulatorTile (its groups hold at most 64 threads). Float64 runs the composite (its float64 math would cost
    // the float32 kernels registers; nothing in a training step uses it).

    static AttentionArgs AttentionArgsOf(string op, AttentionOperand q, AttentionShape s, bool hasMask)
    {
        long widest = (long)s.Batch * Math.Max(s.Queries, s.Keys) * Math.Max(1, s.HeadDim + s.ValueDim);
        if (widest > int.MaxValue) throw new ShapeException(op, $"{s.Batch} heads of [{s.Queries}, {s.Keys}] × {s.HeadDim + s.ValueDim} are more than one launch takes");
        return new AttentionArgs
        {
            Batch = s.Batch, Heads = Math.Max(s.Heads, 1), L = s.Queries, S = s.Keys, E = s.HeadDim, Ev = s.ValueDim, Type = (int)q.Data.DType,
            Causal = s.Causal ? 1 : 0, SharedMask = s.SharedMask ? 1 : 0, HasMask = hasMask ? 1 : 0, Scale = (float)s.Scale, Q = View(q),
        };
    }

    // Heads up to the tiles' width run the flash kernels (Kernels/FlashAttentionKernels.cs); wider ones the
    // one-thread-per-element kernels (Kernels/AttentionKernels.cs), which take any width.
    static bool FlashTiled(AttentionShape s) => s.HeadDim <= default(FlashGpuTile).Width && s.ValueDim <= default(FlashGpuTile).Width;

    void FlashForward<TTile>(AttentionOperand q, AttentionOperand k, AttentionOperand v, ArrayView<byte> mask, AttentionOperand o, Storage lse, AttentionArgs a, AttentionShape shape)
        where TTile : struct, IFlashTile
    {
        int rows = FlashAttentionKernels<TTile>.Rows;
        long groups = (long)shape.Batch * ((shape.Queries + rows - 1) / rows);
        Kernel("FlashAttentionForward", typeof(TTile), x => x.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, AttentionArgs>(FlashAttentionKernels<TTile>.Forward))
            (new KernelConfig(checked((int)groups), default(TTile).Threads), V(q.Data), V(k.Data), V(v.Data), mask, V(lse), V(o.Data), a);
    }

    // dq (per query block) and dk, dv (per key block), after Delta.
    void FlashBackward<TTile>(AttentionOperand q, AttentionOperand k, AttentionOperand v, ArrayView<byte> mask, Storage lse, AttentionOperand dO, Storage delta,
        AttentionOperand dq, AttentionOperand dk, AttentionOperand dv, AttentionArgs a, AttentionShape shape) where TTile : struct, IFlashTile
    {
        int rows = FlashAttentionKernels<TTile>.Rows, threads = default(TTile).Threads;
        if ((long)shape.Batch * shape.Queries > 0 && shape.HeadDim > 0)
            Kernel("FlashAttentionGradQuery", typeof(TTile), x => x.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, AttentionArgs>(FlashAttentionKernels<TTile>.GradQuery))
                (new KernelConfig(checked((int)((long)shape.Batch * ((shape.Queries + rows - 1) / rows))), threads), V(q.Data), V(k.Data), V(v.Data), mask, V(lse), V(dO.Data), V(delta), V(dq.Data), a);
        if ((long)shape.Batch * shape.Keys > 0 && shape.HeadDim + shape.ValueDim > 0)
            Kernel("FlashAttentionGradKeyValue", typeof(TTile), x => x.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, AttentionArgs>(FlashAttentionKernels<TTile>.GradKeyValue))
                (new KernelConfig(checked((int)((long)shape.Batch * ((shape.Keys + rows - 1) / rows))), threads), V(q.Data), V(k.Data), V(v.Data), mask, V(lse), V(dO.Data), V(delta), V(dk.Data), V(dv.Data), a);
    }

    static AttentionView View(AttentionOperand x) => new() { Offset = x.Offset, Batch = x.BatchStride, Head = x.HeadStride, Row = x.RowStride };

    /// <inheritdoc/>
    public void ScaledDotProductAttention(AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse, AttentionShape shape)
    {
        const string op = "ScaledDotProductAttention";
        ContractChecks.Floating(op, q.Data.DType);
        if (q.Data.DType == DType.Float64) { CompositeKernels.ScaledDotProductAttention(this, q, k, v, mask, o, lse, shape); return; }
        var a = AttentionArgsOf(op, q, shape, mask is not null);
        a.K = View(k); a.V = View(v); a.O = View(o);
        long rows = (long)shape.Batch * shape.Queries;
        if (rows == 0) return;
        var mv = V(mask ?? lse);
        if (FlashTiled(shape))
        {
            if (IsEmulated) FlashForward<FlashEmulatorTile>(q, k, v, mv, o, lse, a, shape);
            else FlashForward<FlashGpuTile>(q, k, v, mv, o, lse, a, shape);
            return;
        }
        Kernel("AttentionRowStats", null, x => x.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, AttentionArgs>(AttentionKernels.RowStats))
            (Grid(rows), V(q.Data), V(k.Data), mv, V(lse), a);
        if (shape.ValueDim == 0) return;
        Kernel("AttentionOutput", null, x => x.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, AttentionArgs>(AttentionKernels.Output))
            (Grid(rows * shape.ValueDim), V(q.Data), V(k.Data), V(v.Data), mv, V(lse), V(o.Data), a);
    }

    /// <inheritdoc/>
    public void ScaledDotProductAttentionBackward(AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse,
        AttentionOperand dO, AttentionOperand dq, AttentionOperand dk, AttentionOperand dv, AttentionShape shape)
    {
        const string op = "ScaledDotProductAttentionBackward";
        ContractChecks.Floating(op, q.Data.DType);
        if (q.Data.DType == DType.Float64) { CompositeKernels.ScaledDotProductAttentionBackward(this, q, k, v, mask, o, lse, dO, dq, dk, dv, shape); return; }
        var a = AttentionArgsOf(op, q, shape, mask is not null);
        a.K = View(k); a.V = View(v); a.O = View(o); a.G = View(dO); a.DQ = View(dq); a.DK = View(dk); a.DV = View(dv);
        long rows = (long)shape.Batch * shape.Queries, keys = (long)shape.Batch * shape.Keys;
        var mv = V(mask ?? lse);
        var delta = Allocate(Device, DType.Float32, Math.Max(rows, 1));
        delta.AddRef();
        try
        {
            if (rows > 0)
                Kernel("AttentionDelta", null, x => x.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, AttentionArgs>(AttentionKernels.Delta))
                    (Grid(rows), V(o.Data), V(dO.Data), V(delta), a);
            if (FlashTiled(shape))
            {
                if (IsEmulated) FlashBackward<FlashEmulatorTile>(q, k, v, mv, lse, dO, delta, dq, dk, dv, a, shape);
                else FlashBackward<FlashGpuTile>(q, k, v, mv, lse, dO, delta, dq, dk, dv, a, shape);
                return;
            }
            if (rows > 0 && shape.HeadDim > 0)
                Kernel("AttentionGradQuery", null, x => x.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, AttentionArgs>(AttentionKernels.GradQuery))
                    (Grid(rows * shape.HeadDim), V(q.Data), V(k.Data), V(v.Data), mv, V(lse), V(dO.Data), V(delta), V(dq.Data), a);
            if (keys > 0 && shape.HeadDim + shape.ValueDim > 0)
                Kernel("AttentionGradKeyValue", null, x => x.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, AttentionArgs>(AttentionKernels.GradKeyValue))
                    (Grid(keys * (shape.HeadDim + shape.ValueDim)), V(q.Data), V(k.Data), V(v.Data), mv, V(lse), V(dO.Data), V(delta), V(dk.Data), V(dv.Data), a);
        }
        finally { delta.Release(); }
    }
}

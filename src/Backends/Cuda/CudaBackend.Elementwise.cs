using Engine.Backends.Cuda.Kernels;
using Engine.Ops;
using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    public void Copy(Storage x, Layout xLayout, Storage y, Layout yLayout)
    {
        var g = Geometry.Of("Copy", yLayout, xLayout);
        if (g.Count == 0) return;
        var xv = V(x); var yv = V(y);
        int size = x.DType.ElementSize();
        if (x.DType == y.DType && g.IsDense)
        {
            Bind();
            xv.SubView(g.OffA * size, g.Count * size).CopyTo(Accelerator.DefaultStream, yv.SubView(g.OffY * size, g.Count * size));
            return;
        }
        Kernel("Copy", null, a => a.LoadStreamKernel<Geometry, ArrayView<byte>, ArrayView<byte>, int, int>(ElementwiseKernels.Copy))
            (Grid(g.Count), g, xv, yv, (int)x.DType, (int)y.DType);
    }

    /// <inheritdoc/>
    public void Fill(Storage y, Layout yLayout, double value)
    {
        var g = Geometry.Of("Fill", yLayout);
        if (g.Count == 0) return;
        // The value is converted once on the host with the CPU backend's conversions, so every element gets its bits.
        ulong bits = y.DType switch
        {
            DType.Float64 => BitConverter.DoubleToUInt64Bits(value),
            DType.Float32 => BitConverter.SingleToUInt32Bits((float)value),
            DType.Float16 => BitConverter.HalfToUInt16Bits((System.Half)value),
            DType.BFloat16 => ((BFloat16)value).Bits,
            DType.Int32 => unchecked((uint)(int)value),
            DType.Int64 => unchecked((ulong)(long)value),
            _ => value != 0 ? 1UL : 0UL,
        };
        int size = y.DType.ElementSize();
        var yv = V(y);
        if (bits == 0 && g.IsDense)
        {
            Bind();
            yv.SubView(g.OffY * size, g.Count * size).MemSetToZero(Accelerator.DefaultStream);
            return;
        }
        Kernel("Fill", null, a => a.LoadStreamKernel<Geometry, ArrayView<byte>, int, ulong>(ElementwiseKernels.Fill))
            (Grid(g.Count), g, yv, size, bits);
    }

    /// <inheritdoc/>
    public void Unary<TOp>(TOp op, Storage x, Layout xLayout, Storage y, Layout yLayout) where TOp : struct, IUnaryOp
    {
        var g = Geometry.Of(op.Name, yLayout, xLayout);
        if (g.Count == 0) return;
        var xv = V(x); var yv = V(y);
        int vector = 0;
        if (x.DType == DType.Float32 && y.DType == DType.Float32 && g.IsDense && g.OffA % 4 == 0 && g.OffY % 4 == 0)
        {
            // Dense float32: 16-byte loads and stores through F4 views of the operands' element ranges.
            xv = xv.SubView(g.OffA * 4, g.Count * 4); yv = yv.SubView(g.OffY * 4, g.Count * 4);
            vector = 1;
        }
        var config = Grid(vector == 1 ? (g.Count + 3) / 4 : g.Count);
        if (IsWide((int)x.DType))
            Kernel("UnaryWide", typeof(TOp), a => a.LoadStreamKernel<Geometry, TOp, ArrayView<byte>, ArrayView<byte>, int, int>(ElementwiseKernels.Unary<TOp, Wide>))
                (config, g, op, xv, yv, (int)x.DType, vector);
        else
            Kernel("Unary", typeof(TOp), a => a.LoadStreamKernel<Geometry, TOp, ArrayView<byte>, ArrayView<byte>, int, int>(ElementwiseKernels.Unary<TOp, Narrow>))
                (config, g, op, xv, yv, (int)x.DType, vector);
    }

    /// <inheritdoc/>
    public void Binary<TOp>(TOp op, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout) where TOp : struct, IBinaryOp
    {
        var g = Geometry.Of(op.Name, yLayout, aLayout, bLayout);
        if (g.Count == 0) return;
        var av = V(a); var bv = V(b); var yv = V(y);
        int vector = 0;
        if (a.DType == DType.Float32 && y.DType == DType.Float32 && g.IsDense && g.OffA % 4 == 0 && g.OffB % 4 == 0 && g.OffY % 4 == 0)
        {
            av = av.SubView(g.OffA * 4, g.Count * 4); bv = bv.SubView(g.OffB * 4, g.Count * 4); yv = yv.SubView(g.OffY * 4, g.Count * 4);
            vector = 1;
        }
        var config = Grid(vector == 1 ? (g.Count + 3) / 4 : g.Count);
        if (IsWide((int)a.DType))
            Kernel("BinaryWide", typeof(TOp), k => k.LoadStreamKernel<Geometry, TOp, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, int, int, int>(ElementwiseKernels.Binary<TOp, Wide>))
                (config, g, op, av, bv, yv, (int)a.DType, (int)y.DType, vector);
        else
            Kernel("Binary", typeof(TOp), k => k.LoadStreamKernel<Geometry, TOp, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, int, int, int>(ElementwiseKernels.Binary<TOp, Narrow>))
                (config, g, op, av, bv, yv, (int)a.DType, (int)y.DType, vector);
    }

    /// <inheritdoc/>
    public void Where(Storage cond, Layout condLayout, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout)
    {
        var g = Geometry.Of("Where", yLayout, aLayout, bLayout, condLayout);
        if (g.Count == 0) return;
        Kernel("Where", null, k => k.LoadStreamKernel<Geometry, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, int>(ElementwiseKernels.Where))
            (Grid(g.Count), g, V(cond), V(a), V(b), V(y), a.DType.ElementSize());
    }
}

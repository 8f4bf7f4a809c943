using ILGPU;
using ILGPU.Runtime;
using Engine.Ops;
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

/// <summary>Which arithmetic a kernel instantiation carries: the float32 path (with the dense vector path) or the float64 one.</summary>
public interface IComputeWidth
{
    /// <summary>True for float64 arithmetic (Float64, the integer types, Bool).</summary>
    static abstract bool Wide { get; }
}

/// <summary>Float32 arithmetic: Float32, Float16, BFloat16.</summary>
public readonly struct Narrow : IComputeWidth
{
    /// <inheritdoc/>
    public static bool Wide => false;
}

/// <summary>Float64 arithmetic: Float64, Int32, Int64, Bool.</summary>
public readonly struct Wide : IComputeWidth
{
    /// <inheritdoc/>
    static bool IComputeWidth.Wide => true;
}

/// <summary>
/// The elementwise kernels: grid-stride loops over the linear index of a <see cref="Geometry"/>, with a dense float32
/// path of 16-byte vectors where the host found all operands dense and aligned. Unary and binary kernels are compiled
/// once per op and compute width, so the float32 instantiation carries none of the float64 math (which on PTX is
/// software, with calls and stack frames that would cost every float32 launch registers).
/// </summary>
static class ElementwiseKernels
{
    static int SizeOf(int t) => t == F64 || t == I64 ? 8 : t == F32 || t == I32 ? 4 : t == B8 ? 1 : 2;

    public static void Copy(Geometry g, ArrayView<byte> x, ArrayView<byte> y, int xt, int yt)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        int size = SizeOf(yt);
        for (long i = Grid.GlobalIndex.X; i < g.Count; i += stride)
        {
            g.Offsets(i, out long yo, out long xo, out _, out _);
            if (xt == yt) CopyRaw(x, xo, y, yo, size);
            else Convert(x, xt, xo, y, yt, yo);
        }
    }

    public static void Fill(Geometry g, ArrayView<byte> y, int size, ulong bits)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < g.Count; i += stride)
        {
            g.Offsets(i, out long yo, out _, out _, out _);
            StoreRaw(y, yo, size, bits);
        }
    }

    public static void Unary<TOp, TW>(Geometry g, TOp op, ArrayView<byte> x, ArrayView<byte> y, int t, int vector)
        where TOp : struct, IUnaryOp where TW : struct, IComputeWidth
    {
        long stride = (long)Grid.DimX * Group.DimX;
        long start = Grid.GlobalIndex.X;
        if (TW.Wide)
        {
            for (long i = start; i < g.Count; i += stride)
            {
                g.Offsets(i, out long yo, out long xo, out _, out _);
                StoreDouble(y, t, yo, op.Apply(LoadDouble(x, t, xo)));
            }
            return;
        }
        if (vector != 0)
        {
            var xv = x.Cast<F4>(); var yv = y.Cast<F4>();
            long n4 = g.Count >> 2;
            for (long i = start; i < n4; i += stride)
            {
                var v = xv[i];
                v.X = op.Apply(v.X); v.Y = op.Apply(v.Y); v.Z = op.Apply(v.Z); v.W = op.Apply(v.W);
                yv[i] = v;
            }
            var xs = x.Cast<float>(); var ys = y.Cast<float>();
            for (long i = (n4 << 2) + start; i < g.Count; i += stride) ys[i] = op.Apply(xs[i]);
            return;
        }
        for (long i = start; i < g.Count; i += stride)
        {
            g.Offsets(i, out long yo, out long xo, out _, out _);
            StoreFloat(y, t, yo, op.Apply(LoadFloat(x, t, xo)));
        }
    }

    public static void Binary<TOp, TW>(Geometry g, TOp op, ArrayView<byte> a, ArrayView<byte> b, ArrayView<byte> y, int t, int yt, int vector)
        where TOp : struct, IBinaryOp where TW : struct, IComputeWidth
    {
        long stride = (long)Grid.DimX * Group.DimX;
        long start = Grid.GlobalIndex.X;
        if (TW.Wide)
        {
            for (long i = start; i < g.Count; i += stride)
            {
                g.Offsets(i, out long yo, out long ao, out long bo, out _);
                StoreDouble(y, yt, yo, op.Apply(LoadDouble(a, t, ao), LoadDouble(b, t, bo)));
            }
            return;
        }
        if (vector != 0)
        {
            var av = a.Cast<F4>(); var bv = b.Cast<F4>(); var yv = y.Cast<F4>();
            long n4 = g.Count >> 2;
            for (long i = start; i < n4; i += stride)
            {
                var u = av[i]; var v = bv[i];
                u.X = op.Apply(u.X, v.X); u.Y = op.Apply(u.Y, v.Y); u.Z = op.Apply(u.Z, v.Z); u.W = op.Apply(u.W, v.W);
                yv[i] = u;
            }
            var @as = a.Cast<float>(); var bs = b.Cast<float>(); var ys = y.Cast<float>();
            for (long i = (n4 << 2) + start; i < g.Count; i += stride) ys[i] = op.Apply(@as[i], bs[i]);
            return;
        }
        for (long i = start; i < g.Count; i += stride)
        {
            g.Offsets(i, out long yo, out long ao, out long bo, out _);
            StoreFloat(y, yt, yo, op.Apply(LoadFloat(a, t, ao), LoadFloat(b, t, bo)));
        }
    }

    public static void Where(Geometry g, ArrayView<byte> c, ArrayView<byte> a, ArrayView<byte> b, ArrayView<byte> y, int size)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < g.Count; i += stride)
        {
            g.Offsets(i, out long yo, out long ao, out long bo, out long co);
            if (c[co] != 0) CopyRaw(a, ao, y, yo, size);
            else CopyRaw(b, bo, y, yo, size);
        }
    }
}

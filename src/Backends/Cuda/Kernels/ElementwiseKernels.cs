using ILGPU;
using ILGPU.Runtime;
using Engine.Ops;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

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

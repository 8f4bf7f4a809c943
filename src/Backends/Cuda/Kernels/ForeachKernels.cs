using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>Whether a norm kernel carries the general p-norm's float64 pow (its own instantiation, so the others do not).</summary>
public interface INormPower
{
    /// <summary>True for the instantiation that computes Σ|x|ᵖ and its 1/p-th power.</summary>
    static abstract bool General { get; }
}

/// <summary>p ∈ {0, 1, 2, ±∞}: no pow, no stack frame.</summary>
public readonly struct PlainNorm : INormPower
{
    /// <inheritdoc/>
    public static bool General => false;
}

/// <summary>Any other p (clip_grad_norm_ with an unusual norm_type): float64 Math.Pow, which needs a stack frame on PTX.</summary>
public readonly struct PowerNorm : INormPower
{
    /// <inheritdoc/>
    static bool INormPower.General => true;
}

/// <summary>
/// The multi-tensor norm, multiply and copy (PyTorch's <c>_foreach_norm</c>, <c>_foreach_mul_</c>,
/// <c>_foreach_copy_</c>), each over a <see cref="TensorList"/>. The norm takes two launches with one count: every group reduces one part of one entry
/// (a grid-stride slice, combined in a fixed tree), then one thread per entry combines that entry's parts in order,
/// so a result does not change from run to run. It accumulates in float64 for every dtype.
/// </summary>
static class ForeachKernels
{
    /// <summary>What a norm accumulates: the count of non-zeros (p = 0), Σ|x|, Σx², Σ|x|ᵖ, max |x| (p = ∞), min |x| (p = −∞).</summary>
    public const int NonZeros = 0, L1 = 1, L2 = 2, General = 3, MaxAbs = 4, MinAbs = 5;

    const int MaxWarps = 32;

    public static int KindOf(double ord) =>
        ord == 0 ? NonZeros : ord == 1 ? L1 : ord == 2 ? L2 : double.IsPositiveInfinity(ord) ? MaxAbs : double.IsNegativeInfinity(ord) ? MinAbs : General;

    static double Identity(int kind) => kind == MinAbs ? double.PositiveInfinity : 0.0;

    // The extrema propagate NaN, as the Reduce kernels' (a NaN anywhere makes the ∞-norm NaN).
    static double Combine(int kind, double a, double b)
    {
        if (kind == MaxAbs || kind == MinAbs)
        {
            if (double.IsNaN(a) || double.IsNaN(b)) return double.NaN;
            return kind == MaxAbs ? (b > a ? b : a) : (b < a ? b : a);
        }
        return a + b;
    }

    static double Term<TP>(int kind, double x, double p) where TP : struct, INormPower
    {
        double a = Math.Abs(x);
        if (TP.General) return Math.Pow(a, p);
        if (kind == NonZeros) return a > 0 || double.IsNaN(a) ? 1.0 : 0.0;
        if (kind == L2) return x * x;
        return a;
    }

    /// <summary>Combines a group's values (warp shuffles, then the warps through shared memory); thread 0 ends with the result.</summary>
    static double GroupCombine(int kind, double v)
    {
        var shared = SharedMemory.Allocate<double>(MaxWarps);
        for (int o = Warp.WarpSize / 2; o > 0; o >>= 1) v = Combine(kind, v, Warp.ShuffleDown(v, o));
        if (Warp.LaneIdx == 0) shared[Warp.WarpIdx] = v;
        Group.Barrier();
        if (Warp.WarpIdx == 0)
        {
            int warps = Group.DimX / Warp.WarpSize;
            v = Warp.LaneIdx < warps ? shared[Warp.LaneIdx] : Identity(kind);
            for (int o = Warp.WarpSize / 2; o > 0; o >>= 1) v = Combine(kind, v, Warp.ShuffleDown(v, o));
        }
        return v;
    }

    /// <summary>Pass 1: group g reduces part g % parts of entry g / parts into partials[g] (float64).</summary>
    public static void NormPartials<TP>(TensorList xs, ArrayView<byte> partials, int parts, int kind, double p) where TP : struct, INormPower
    {
        int g = Grid.IdxX, j = g / parts, part = g % parts;
        double acc = Identity(kind);
        if (j < xs.Count)
        {
            var x = xs[j];
            int t = xs.Type(j);
            long n = xs.Length(j), stride = (long)parts * Group.DimX;
            for (long i = (long)part * Group.DimX + Group.IdxX; i < n; i += stride) acc = Combine(kind, acc, Term<TP>(kind, LoadDouble(x, t, i), p));
        }
        acc = GroupCombine(kind, acc);
        if (Group.IdxX == 0) partials.Cast<double>()[g] = acc;
    }

    /// <summary>Pass 2: thread j combines entry j's parts in order and stores its norm, rounded once to the norms' type.</summary>
    public static void NormFinish<TP>(ArrayView<byte> partials, int parts, int count, ArrayView<byte> norms, int normsType, int offset, int kind, double p)
        where TP : struct, INormPower
    {
        int j = Grid.GlobalIndex.X;
        if (j >= count) return;
        var ps = partials.Cast<double>();
        double acc = ps[j * parts];
        for (int b = 1; b < parts; b++) acc = Combine(kind, acc, ps[j * parts + b]);
        double r = TP.General ? Math.Pow(acc, 1 / p) : kind == L2 ? Math.Sqrt(acc) : acc;
        StoreDouble(norms, normsType, offset + j, r);
    }

    /// <summary>x ← x·s for every entry; s is element 0 of <paramref name="scalar"/>, of the entries' type (Binary's multiply: float32 for half types, rounded once).</summary>
    public static void Mul(TensorList xs, ArrayView<byte> scalar)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (int j = 0; j < xs.Count; j++)
        {
            var x = xs[j];
            int t = xs.Type(j);
            long n = xs.Length(j);
            if (t == F64)
            {
                double s = LoadDouble(scalar, t, 0);
                for (long i = Grid.GlobalIndex.X; i < n; i += stride) StoreDouble(x, t, i, LoadDouble(x, t, i) * s);
            }
            else
            {
                float s = LoadFloat(scalar, t, 0);
                for (long i = Grid.GlobalIndex.X; i < n; i += stride) StoreFloat(x, t, i, LoadFloat(x, t, i) * s);
            }
        }
    }

    /// <summary>ys[j] ← xs[j] converted to ys[j]'s type for every entry, element by element as the Copy kernel converts (one rounding).</summary>
    public static void Copy(TensorList xs, TensorList ys)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (int j = 0; j < xs.Count; j++)
        {
            var x = xs[j];
            var y = ys[j];
            int xt = xs.Type(j), yt = ys.Type(j);
            long n = xs.Length(j);
            for (long i = Grid.GlobalIndex.X; i < n; i += stride)
            {
                if (xt == yt) CopyRaw(x, i, y, i, xt == F64 ? 8 : xt == F32 ? 4 : 2); // floating entries only
                else Convert(x, xt, i, y, yt, i);
            }
        }
    }
}

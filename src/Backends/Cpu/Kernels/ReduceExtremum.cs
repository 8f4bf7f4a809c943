using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Backends.Cpu.Kernels;

// max/min with the index of the first extremum (NaN wins, as PyTorch), and the extremum of |x| for the ±∞ norms.

static unsafe partial class ReduceKernels
{
    /// <summary>
    /// The first extremum of a contiguous run and its index, PyTorch's rule (the first NaN wins; ties keep the first):
    /// one vector pass for the extremum and any NaN, a second for the first element equal to it (so −0 and +0, which
    /// compare equal, resolve to the first of them, as the scalar walk does).
    /// </summary>
    internal static (double Value, int Index) Extremum<TF, TOrder>(TF* p, int n)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF> where TOrder : struct, IOrder
    {
        int lanes = Vector256<TF>.Count, i = lanes;
        var best = Vector256.Load(p);
        var nan = ~Vector256.Equals(best, best);
        for (; i <= n - lanes; i += lanes)
        {
            var v = Vector256.Load(p + i);
            nan |= ~Vector256.Equals(v, v);
            best = Vector256.ConditionalSelect(typeof(TOrder) == typeof(Greater) ? Vector256.GreaterThan(v, best) : Vector256.LessThan(v, best), v, best);
        }
        bool anyNaN = nan != Vector256<TF>.Zero;
        TF m = best.GetElement(0);
        for (int k = 1; k < lanes; k++) if (Beats<TF, TOrder>(best.GetElement(k), m)) m = best.GetElement(k);
        for (; i < n; i++)
        {
            if (TF.IsNaN(p[i])) anyNaN = true;
            else if (Beats<TF, TOrder>(p[i], m)) m = p[i];
        }
        if (anyNaN)
        {
            for (int k = 0; k < n; k++) if (TF.IsNaN(p[k])) return (double.NaN, k);
        }
        var mv = Vector256.Create(m);
        for (i = 0; i <= n - lanes; i += lanes)
        {
            uint bits = Vector256.Equals(Vector256.Load(p + i), mv).ExtractMostSignificantBits();
            if (bits != 0) { int k = i + BitOperations.TrailingZeroCount(bits); return (double.CreateTruncating(p[k]), k); }
        }
        for (; i < n; i++) if (p[i] == m) return (double.CreateTruncating(p[i]), i);
        return (double.CreateTruncating(m), 0); // unreachable: m is one of the elements
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool Beats<TF, TOrder>(TF a, TF b) where TF : IBinaryFloatingPointIeee754<TF> where TOrder : struct, IOrder =>
        typeof(TOrder) == typeof(Greater) ? a > b : a < b;
}

/// <summary>Orders for extrema: whether a beats b.</summary>
interface IOrder
{
    static abstract bool Beats(double a, double b);
    static abstract bool Beats(long a, long b);
}

readonly struct Greater : IOrder
{
    public static bool Beats(double a, double b) => a > b;
    public static bool Beats(long a, long b) => a > b;
}

readonly struct Less : IOrder
{
    public static bool Beats(double a, double b) => a < b;
    public static bool Beats(long a, long b) => a < b;
}

/// <summary>
/// The first extremum and its flat index. NaN beats everything (the first NaN wins and ends the search), as
/// PyTorch's max/min; equal values keep the earlier index. Int64 compares exactly.
/// </summary>
unsafe struct ExtremumAcc<TOrder> : IAccumulator<ExtremumAcc<TOrder>> where TOrder : struct, IOrder
{
    public double V;
    public long L;
    public long Index;
    public bool Has;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (n <= 0) return;
        if (stride == 1 && n >= 32 && (typeof(T) == typeof(float) || typeof(T) == typeof(double)))
        {
            var (v, k) = typeof(T) == typeof(float) ? ReduceKernels.Extremum<float, TOrder>((float*)p, n) : ReduceKernels.Extremum<double, TOrder>((double*)p, n);
            if (!Has) { V = v; L = 0; Index = first + k; Has = true; }
            else if (!double.IsNaN(V) && (double.IsNaN(v) || TOrder.Beats(v, V))) { V = v; Index = first + k; }
            return;
        }
        int i = 0;
        if (!Has) { V = TE.ToDouble(p[0]); L = typeof(T) == typeof(long) ? ReduceKernels.ToLong(p[0]) : 0; Index = first; Has = true; i = 1; }
        if (typeof(T) == typeof(long))
        {
            long best = L, idx = Index;
            for (; i < n; i++)
            {
                long v = ReduceKernels.ToLong(p[i * stride]);
                if (TOrder.Beats(v, best)) { best = v; idx = first + i; }
            }
            L = best; V = best; Index = idx;
            return;
        }
        double b = V;
        long at = Index;
        if (!double.IsNaN(b))
            for (; i < n; i++)
            {
                double v = TE.ToDouble(p[i * stride]);
                if (TOrder.Beats(v, b)) { b = v; at = first + i; }
                else if (double.IsNaN(v)) { b = v; at = first + i; break; }
            }
        V = b; Index = at;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        if (!Has) { V = TE.ToDouble(v); L = typeof(T) == typeof(long) ? ReduceKernels.ToLong(v) : 0; Index = index; Has = true; return; }
        if (typeof(T) == typeof(long))
        {
            long l = ReduceKernels.ToLong(v);
            if (TOrder.Beats(l, L)) { L = l; V = l; Index = index; }
            return;
        }
        if (double.IsNaN(V)) return;
        double d = TE.ToDouble(v);
        if (TOrder.Beats(d, V) || double.IsNaN(d)) { V = d; Index = index; }
    }

    public void Merge(in ExtremumAcc<TOrder> later)
    {
        if (!later.Has) return;
        if (!Has) { this = later; return; }
        if (double.IsNaN(V)) return;
        // Int64 values beyond 2^53 are compared exactly through L (0 for the other types); V is then their rounding.
        bool wins = double.IsNaN(later.V) || (V == later.V ? TOrder.Beats(later.L, L) : TOrder.Beats(later.V, V));
        if (wins) { V = later.V; L = later.L; Index = later.Index; }
    }
}

/// <summary>The extremum of |x| (NaN propagates), for the ±∞ norms.</summary>
unsafe struct AbsExtremumAcc<TOrder> : IAccumulator<AbsExtremumAcc<TOrder>> where TOrder : struct, IOrder
{
    public double V;
    public bool Has;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (n <= 0) return;
        int i = 0;
        if (!Has) { V = Math.Abs(TE.ToDouble(p[0])); Has = true; i = 1; }
        double b = V;
        if (!double.IsNaN(b))
            for (; i < n; i++)
            {
                double v = Math.Abs(TE.ToDouble(p[i * stride]));
                if (TOrder.Beats(v, b)) b = v;
                else if (double.IsNaN(v)) { b = v; break; }
            }
        V = b;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        double d = Math.Abs(TE.ToDouble(v));
        if (!Has) { V = d; Has = true; }
        else if (!double.IsNaN(V) && (TOrder.Beats(d, V) || double.IsNaN(d))) V = d;
    }

    public void Merge(in AbsExtremumAcc<TOrder> later)
    {
        if (!later.Has) return;
        if (!Has || double.IsNaN(later.V) || !double.IsNaN(V) && TOrder.Beats(later.V, V)) { V = later.V; Has = true; }
    }
}

unsafe struct ExtremumSink<T, TE, TOrder> : IReduceSink<ExtremumAcc<TOrder>>
    where T : unmanaged where TE : struct, IElement<T> where TOrder : struct, IOrder
{
    public T* Y;
    public long* Indices;

    public readonly ExtremumAcc<TOrder> Seed(long o) => default;

    public readonly void Store(long o, in ExtremumAcc<TOrder> acc)
    {
        Y[o] = typeof(T) == typeof(long) ? ReduceKernels.FromLong<T>(acc.L) : TE.FromDouble(acc.V);
        if (Indices != null) Indices[o] = acc.Index;
    }
}

unsafe struct AbsExtremumSink<T, TE, TOrder> : IReduceSink<AbsExtremumAcc<TOrder>>
    where T : unmanaged where TE : struct, IElement<T> where TOrder : struct, IOrder
{
    public T* Y;
    public readonly AbsExtremumAcc<TOrder> Seed(long o) => default;
    public readonly void Store(long o, in AbsExtremumAcc<TOrder> acc) => Y[o] = TE.FromDouble(acc.V);
}

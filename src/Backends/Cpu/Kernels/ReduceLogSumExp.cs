using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Backends.Cpu.Kernels;

// log Σ eˣ as m + log Σ e^(x−m): a max pass (the row maxima as stats), then the sum of exponentials.

static unsafe partial class ReduceKernels
{
    /// <summary>Σ e^(x−m) over a contiguous run, with the vectorized float64 exponential.</summary>
    internal static double ExpSumF32(float* p, int n, double m)
    {
        int i = 0;
        double s = 0;
        if (n >= 8)
        {
            var mv = Vector256.Create(m);
            Vector256<double> s0 = default, s1 = default;
            for (; i <= n - 8; i += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(p + i));
                s0 += Vector256.Exp(lo - mv); s1 += Vector256.Exp(hi - mv);
            }
            s = HorizontalSum(s0 + s1);
        }
        for (; i < n; i++) s += Math.Exp(p[i] - m);
        return s;
    }

    internal static double ExpSumF64(double* p, int n, double m)
    {
        int i = 0;
        double s = 0;
        if (n >= 8)
        {
            var mv = Vector256.Create(m);
            Vector256<double> s0 = default, s1 = default;
            for (; i <= n - 8; i += 8)
            {
                s0 += Vector256.Exp(Vector256.Load(p + i) - mv); s1 += Vector256.Exp(Vector256.Load(p + i + 4) - mv);
            }
            s = HorizontalSum(s0 + s1);
        }
        for (; i < n; i++) s += Math.Exp(p[i] - m);
        return s;
    }
}

/// <summary>Σ e^(x − M) for a fixed M (the second pass of log-sum-exp).</summary>
unsafe struct ExpSumAcc : IAccumulator<ExpSumAcc>
{
    public double M, S;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (stride == 1 && typeof(T) == typeof(float)) { S += ReduceKernels.ExpSumF32((float*)p, n, M); return; }
        if (stride == 1 && typeof(T) == typeof(double)) { S += ReduceKernels.ExpSumF64((double*)p, n, M); return; }
        double m = M, s = S;
        for (int i = 0; i < n; i++) s += Math.Exp(TE.ToDouble(p[i * stride]) - m);
        S = s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T> => S += Math.Exp(TE.ToDouble(v) - M);

    public void Merge(in ExpSumAcc later) => S += later.S;
}

struct MaxStatSink : IReduceSink<ExtremumAcc<Greater>>
{
    public double[] Stats;
    public readonly ExtremumAcc<Greater> Seed(long o) => default;
    public readonly void Store(long o, in ExtremumAcc<Greater> acc) => Stats[o] = acc.Has ? acc.V : double.NegativeInfinity;
}

unsafe struct LogSumExpSink<T, TE> : IReduceSink<ExpSumAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public double[] Max;

    // An infinite maximum is replaced by 0 (as PyTorch does): all −∞ give log 0 = −∞, a +∞ gives +∞.
    public readonly ExpSumAcc Seed(long o) => new() { M = double.IsInfinity(Max[o]) ? 0 : Max[o] };

    public readonly void Store(long o, in ExpSumAcc acc) => Y[o] = TE.FromDouble(Math.Log(acc.S) + acc.M);
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Backends.Cpu.Kernels;

// Variance (a mean pass, then squared deviations with a compensation term) and the p-norms (Σ|x|ᵖ).

static unsafe partial class ReduceKernels
{
    internal static double SumSquaresF32(float* p, int n)
    {
        int i = 0;
        double r = 0;
        if (n >= 16)
        {
            Vector256<double> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i <= n - 16; i += 16)
            {
                var (l0, h0) = Vector256.Widen(Vector256.Load(p + i));
                var (l1, h1) = Vector256.Widen(Vector256.Load(p + i + 8));
                a0 += l0 * l0; a1 += h0 * h0; a2 += l1 * l1; a3 += h1 * h1;
            }
            r = HorizontalSum((a0 + a1) + (a2 + a3));
        }
        for (; i < n; i++) r += (double)p[i] * p[i];
        return r;
    }

    /// <summary>(Σ(x−m)², Σ(x−m)) over a contiguous run, 8 float64 lanes.</summary>
    internal static (double S, double C) SquaredDeviationsF32(float* p, int n, double m)
    {
        int i = 0;
        double s = 0, c = 0;
        if (n >= 8)
        {
            var mv = Vector256.Create(m);
            Vector256<double> s0 = default, s1 = default, c0 = default, c1 = default;
            for (; i <= n - 8; i += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(p + i));
                lo -= mv; hi -= mv;
                s0 += lo * lo; s1 += hi * hi; c0 += lo; c1 += hi;
            }
            s = HorizontalSum(s0 + s1); c = HorizontalSum(c0 + c1);
        }
        for (; i < n; i++) { double d = p[i] - m; s += d * d; c += d; }
        return (s, c);
    }

    internal static (double S, double C) SquaredDeviationsF64(double* p, int n, double m)
    {
        int i = 0;
        double s = 0, c = 0;
        if (n >= 8)
        {
            var mv = Vector256.Create(m);
            Vector256<double> s0 = default, s1 = default, c0 = default, c1 = default;
            for (; i <= n - 8; i += 8)
            {
                var lo = Vector256.Load(p + i) - mv;
                var hi = Vector256.Load(p + i + 4) - mv;
                s0 += lo * lo; s1 += hi * hi; c0 += lo; c1 += hi;
            }
            s = HorizontalSum(s0 + s1); c = HorizontalSum(c0 + c1);
        }
        for (; i < n; i++) { double d = p[i] - m; s += d * d; c += d; }
        return (s, c);
    }
}

/// <summary>Σd² and Σd for d = x − mean (the second pass of the variance).</summary>
unsafe struct SquaredDeviationAcc : IAccumulator<SquaredDeviationAcc>
{
    public double Mean, S, C;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (stride == 1 && (typeof(T) == typeof(float) || typeof(T) == typeof(double)))
        {
            var (ds, dc) = typeof(T) == typeof(float) ? ReduceKernels.SquaredDeviationsF32((float*)p, n, Mean) : ReduceKernels.SquaredDeviationsF64((double*)p, n, Mean);
            S += ds; C += dc;
            return;
        }
        double m = Mean, s = S, c = C;
        for (int i = 0; i < n; i++)
        {
            double d = TE.ToDouble(p[i * stride]) - m;
            s += d * d; c += d;
        }
        S = s; C = c;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        double d = TE.ToDouble(v) - Mean;
        S += d * d; C += d;
    }

    public void Merge(in SquaredDeviationAcc later) { S += later.S; C += later.C; }
}

/// <summary>Σ|x|ᵖ (p = 0 counts non-zeros).</summary>
unsafe struct PowerSumAcc : IAccumulator<PowerSumAcc>
{
    public double P, S;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        double s = S;
        if (P == 2)
        {
            if (typeof(T) == typeof(float) && stride == 1) s += ReduceKernels.SumSquaresF32((float*)p, n);
            else for (int i = 0; i < n; i++) { double v = TE.ToDouble(p[i * stride]); s += v * v; }
        }
        else if (P == 1) for (int i = 0; i < n; i++) s += Math.Abs(TE.ToDouble(p[i * stride]));
        else if (P == 0) for (int i = 0; i < n; i++) s += TE.ToDouble(p[i * stride]) != 0 ? 1 : 0;
        else for (int i = 0; i < n; i++) s += Math.Pow(Math.Abs(TE.ToDouble(p[i * stride])), P);
        S = s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        double a = Math.Abs(TE.ToDouble(v));
        S += P switch { 2 => a * a, 1 => a, 0 => a != 0 ? 1 : 0, _ => Math.Pow(a, P) };
    }

    public void Merge(in PowerSumAcc later) => S += later.S;
}

struct StatSink<T> : IReduceSink<SumAcc> where T : unmanaged
{
    public double[] Stats;
    public long Divisor;
    public readonly SumAcc Seed(long o) => default;
    public readonly void Store(long o, in SumAcc acc) => Stats[o] = acc.S / Divisor;
}

unsafe struct VarSink<T, TE> : IReduceSink<SquaredDeviationAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public double[] Means;
    public long N;
    public double Correction;

    public readonly SquaredDeviationAcc Seed(long o) => new() { Mean = Means[o] };

    // Σd² − (Σd)²/n removes the error of the rounded mean; the divisor is max(0, n − correction) as PyTorch's, so
    // too few elements give NaN (0/0) or ∞.
    public readonly void Store(long o, in SquaredDeviationAcc acc) =>
        Y[o] = TE.FromDouble(Math.Max(0, acc.S - acc.C * acc.C / N) / Math.Max(0, N - Correction));
}

unsafe struct NormSink<T, TE> : IReduceSink<PowerSumAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public double P;

    public readonly PowerSumAcc Seed(long o) => new() { P = P };

    public readonly void Store(long o, in PowerSumAcc acc) =>
        Y[o] = TE.FromDouble(P switch { 0 or 1 => acc.S, 2 => Math.Sqrt(acc.S), _ => Math.Pow(acc.S, 1 / P) });
}

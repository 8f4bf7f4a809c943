using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Engine.Backends.Cpu.Kernels;

// Σx and the mean: the contiguous float32/float64 fast paths, the accumulators (float64, and exact int64 for integers)
// and their sinks.

static unsafe partial class ReduceKernels
{
    // ---- contiguous fast paths: a fixed lane structure (float64 partial sums in Vector256 lanes, combined in a fixed
    // order), so a sum is the same on every machine (Vector256 is emulated where AVX is missing, with the same
    // arithmetic); the vectorized exponential may differ from Math.Exp in the last bit ----

    internal static double SumF32(float* p, int n)
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
                a0 += l0; a1 += h0; a2 += l1; a3 += h1;
            }
            r = HorizontalSum((a0 + a1) + (a2 + a3));
        }
        for (; i < n; i++) r += p[i];
        return r;
    }

    internal static double SumF64(double* p, int n)
    {
        int i = 0;
        double r = 0;
        if (n >= 16)
        {
            Vector256<double> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i <= n - 16; i += 16)
            {
                a0 += Vector256.Load(p + i); a1 += Vector256.Load(p + i + 4);
                a2 += Vector256.Load(p + i + 8); a3 += Vector256.Load(p + i + 12);
            }
            r = HorizontalSum((a0 + a1) + (a2 + a3));
        }
        for (; i < n; i++) r += p[i];
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double HorizontalSum(Vector256<double> v) => (v.GetElement(0) + v.GetElement(1)) + (v.GetElement(2) + v.GetElement(3));
}

/// <summary>Σx in float64.</summary>
unsafe struct SumAcc : IAccumulator<SumAcc>
{
    public double S;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T> => S += TE.ToDouble(v);

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (typeof(T) == typeof(float) && stride == 1) S += ReduceKernels.SumF32((float*)p, n);
        else if (typeof(T) == typeof(double) && stride == 1) S += ReduceKernels.SumF64((double*)p, n);
        else
        {
            double s = S;
            for (int i = 0; i < n; i++) s += TE.ToDouble(p[i * stride]);
            S = s;
        }
    }

    public void Merge(in SumAcc later) => S += later.S;

    // Lane q adds its element exactly as Push would (one widening, one float64 add), so the vector form changes
    // nothing but speed.
    public static void AddAcross<T, TE>(Span<SumAcc> accs, T* p, long laneStride, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        var d = MemoryMarshal.Cast<SumAcc, double>(accs);
        ref double d0 = ref MemoryMarshal.GetReference(d);
        int q = 0;
        if (typeof(T) == typeof(float) && laneStride == 1)
            for (; q <= d.Length - 8; q += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load((float*)p + q));
                (Vector256.LoadUnsafe(ref d0, (nuint)q) + lo).StoreUnsafe(ref d0, (nuint)q);
                (Vector256.LoadUnsafe(ref d0, (nuint)q + 4) + hi).StoreUnsafe(ref d0, (nuint)q + 4);
            }
        else if (typeof(T) == typeof(double) && laneStride == 1)
            for (; q <= d.Length - 4; q += 4)
                (Vector256.LoadUnsafe(ref d0, (nuint)q) + Vector256.Load((double*)p + q)).StoreUnsafe(ref d0, (nuint)q);
        for (; q < d.Length; q++) d[q] += TE.ToDouble(p[q * laneStride]);
    }
}

/// <summary>Σx exactly in int64 (wrapping on overflow, as PyTorch) for integer and Bool elements.</summary>
unsafe struct IntSumAcc : IAccumulator<IntSumAcc>
{
    public long I;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T> => I += ReduceKernels.ToLong(v);

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        long s = I;
        for (int i = 0; i < n; i++) s += ReduceKernels.ToLong(p[i * stride]);
        I = s;
    }

    public void Merge(in IntSumAcc later) => I += later.I;
}

unsafe struct SumSink<T, TE> : IReduceSink<SumAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public bool Mean;
    public long N;

    public readonly SumAcc Seed(long o) => default;

    // An empty mean is 0/0 = NaN, as PyTorch's.
    public readonly void Store(long o, in SumAcc acc) => Y[o] = TE.FromDouble(Mean ? acc.S / N : acc.S);
}

unsafe struct IntSumSink<T, TE> : IReduceSink<IntSumAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public bool Mean;
    public long N;

    public readonly IntSumAcc Seed(long o) => default;

    public readonly void Store(long o, in IntSumAcc acc) =>
        Y[o] = Mean ? TE.FromDouble((double)acc.I / N) : ReduceKernels.FromLong<T>(acc.I);
}

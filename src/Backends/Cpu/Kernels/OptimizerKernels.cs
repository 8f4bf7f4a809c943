using System.Runtime.Intrinsics.X86;
using Engine.Ops;

namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// Optimizer updates: the per-element math is the shared AdamMath/SgdMath (src/Tensors/Ops), computed in double for
/// every dtype from the stored values (parameter, gradient, moments), each result rounded once on store; moments
/// are stored in the parameter's dtype. Each element is independent, so chunks run in parallel without changing results.
/// </summary>
static unsafe class OptimizerKernels
{
    /// <summary>One Adam(W) step over <paramref name="n"/> parameters of type T with gradients of type TG.</summary>
    public static void Adam<T, TE, TG, TEG>(nint pp, nint pg, nint pm, nint pv, long n, AdamMath math)
        where T : unmanaged where TE : struct, IElement<T> where TG : unmanaged where TEG : struct, IElement<TG>
    {
        CpuParallel.For(n, 1 << 14, (s, e) =>
        {
            T* p = (T*)pp; TG* g = (TG*)pg; T* m = (T*)pm; T* v = (T*)pv;
            if (typeof(T) == typeof(float) && typeof(TG) == typeof(float) && Avx.IsSupported)
                s = AdamFloat32x4((float*)pp, (float*)pg, (float*)pm, (float*)pv, s, e, math);
            for (long i = s; i < e; i++)
            {
                double x = TE.ToDouble(p[i]), mi = TE.ToDouble(m[i]), vi = TE.ToDouble(v[i]);
                math.Update(ref x, TEG.ToDouble(g[i]), ref mi, ref vi);
                m[i] = TE.FromDouble(mi); v[i] = TE.FromDouble(vi); p[i] = TE.FromDouble(x);
            }
        });
    }

    // Float32 parameters and gradients, four at a time widened to float64 (the scalar loop's bits, see AdamMath's
    // vector Update): a scalar float64 loop with two divisions and a square root per element was as slow as the MLP
    // step's GEMMs. Returns where the scalar loop takes over (the last n mod 4 elements).
    static long AdamFloat32x4(float* p, float* g, float* m, float* v, long s, long e, in AdamMath math)
    {
        long i = s;
        for (; i + 4 <= e; i += 4)
        {
            var x = Avx.ConvertToVector256Double(Sse.LoadVector128(p + i));
            var mi = Avx.ConvertToVector256Double(Sse.LoadVector128(m + i));
            var vi = Avx.ConvertToVector256Double(Sse.LoadVector128(v + i));
            math.Update(ref x, Avx.ConvertToVector256Double(Sse.LoadVector128(g + i)), ref mi, ref vi);
            Sse.Store(m + i, Avx.ConvertToVector128Single(mi));
            Sse.Store(v + i, Avx.ConvertToVector128Single(vi));
            Sse.Store(p + i, Avx.ConvertToVector128Single(x));
        }
        return i;
    }

    /// <summary>One SGD step over <paramref name="n"/> parameters; <paramref name="pb"/> is the momentum buffer (0: none).</summary>
    public static void Sgd<T, TE, TG, TEG>(nint pp, nint pg, nint pb, long n, SgdMath math)
        where T : unmanaged where TE : struct, IElement<T> where TG : unmanaged where TEG : struct, IElement<TG>
    {
        CpuParallel.For(n, 1 << 14, (s, e) =>
        {
            T* p = (T*)pp; TG* g = (TG*)pg; T* b = (T*)pb;
            for (long i = s; i < e; i++)
            {
                double x = TE.ToDouble(p[i]), buf = math.ReadsBuffer ? TE.ToDouble(b[i]) : 0;
                math.Update(ref x, TEG.ToDouble(g[i]), ref buf);
                if (math.UsesBuffer) b[i] = TE.FromDouble(buf);
                p[i] = TE.FromDouble(x);
            }
        });
    }
}

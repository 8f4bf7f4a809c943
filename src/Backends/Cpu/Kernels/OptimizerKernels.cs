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
            for (long i = s; i < e; i++)
            {
                double x = TE.ToDouble(p[i]), mi = TE.ToDouble(m[i]), vi = TE.ToDouble(v[i]);
                math.Update(ref x, TEG.ToDouble(g[i]), ref mi, ref vi);
                m[i] = TE.FromDouble(mi); v[i] = TE.FromDouble(vi); p[i] = TE.FromDouble(x);
            }
        });
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

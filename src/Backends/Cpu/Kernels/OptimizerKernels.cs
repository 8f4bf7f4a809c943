using Engine.Ops;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // Optimizer updates: the per-element math is the shared AdamMath/SgdMath (src/Tensors/Ops), computed in double for
    // every dtype from the stored values (parameter, gradient, moments), each result rounded once on store; moments
    // are stored in the parameter's dtype. Each element is independent, so chunks run in parallel without changing results.

    /// <inheritdoc/>
    public void AdamStep(Storage param, Storage grad, Storage expAvg, Storage expAvgSq, Storage step, AdamConfig config, Storage? invScale, Storage? foundInf)
    {
        float* stepP = (float*)P(step);
        if (foundInf is not null && *(float*)P(foundInf) != 0) return;
        double inv = invScale is null ? 1.0 : *(float*)P(invScale);
        float t = *stepP + 1;
        *stepP = t;
        var v = new AdamVisitor { P = P(param), G = P(grad), M = P(expAvg), V = P(expAvgSq), N = param.Count, C = config, Step = t, Inv = inv, GradType = grad.DType };
        DTypeDispatch.Visit(param.DType, ref v);
    }

    struct AdamVisitor : IDTypeVisitor
    {
        public nint P, G, M, V; public long N; public AdamConfig C; public float Step; public double Inv; public DType GradType;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            var g = new AdamGrad<T, TE> { Outer = this };
            DTypeDispatch.Visit(GradType, ref g);
        }
    }

    struct AdamGrad<T, TE> : IDTypeVisitor where T : unmanaged where TE : struct, IElement<T>
    {
        public AdamVisitor Outer;
        public void Visit<TG, TEG>() where TG : unmanaged where TEG : struct, IElement<TG>
        {
            var o = Outer;
            var math = new AdamMath(o.C.Lr, o.C.Beta1, o.C.Beta2, o.C.Eps, o.C.WeightDecay, o.C.Decoupled,
                AdamMath.StepSize(o.C.Lr, o.C.Beta1, o.Step), AdamMath.SqrtBias2(o.C.Beta2, o.Step), o.Inv);
            nint pp = o.P, pg = o.G, pm = o.M, pv = o.V;
            CpuParallel.For(o.N, 1 << 14, (s, e) =>
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
    }

    /// <inheritdoc/>
    public void SgdStep(Storage param, Storage grad, Storage? momentum, bool momentumInitialized, SgdConfig config, Storage? invScale, Storage? foundInf)
    {
        if (foundInf is not null && *(float*)P(foundInf) != 0) return;
        double inv = invScale is null ? 1.0 : *(float*)P(invScale);
        var v = new SgdVisitor { P = P(param), G = P(grad), B = momentum is null ? 0 : P(momentum), N = param.Count, C = config, Inv = inv, Init = momentumInitialized, GradType = grad.DType };
        DTypeDispatch.Visit(param.DType, ref v);
    }

    struct SgdVisitor : IDTypeVisitor
    {
        public nint P, G, B; public long N; public SgdConfig C; public double Inv; public bool Init; public DType GradType;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            var g = new SgdGrad<T, TE> { Outer = this };
            DTypeDispatch.Visit(GradType, ref g);
        }
    }

    struct SgdGrad<T, TE> : IDTypeVisitor where T : unmanaged where TE : struct, IElement<T>
    {
        public SgdVisitor Outer;
        public void Visit<TG, TEG>() where TG : unmanaged where TEG : struct, IElement<TG>
        {
            var o = Outer;
            var math = new SgdMath(o.C.Lr, o.C.Momentum, o.C.Dampening, o.C.WeightDecay, o.C.Nesterov, o.B != 0, o.Init, o.Inv);
            nint pp = o.P, pg = o.G, pb = o.B;
            CpuParallel.For(o.N, 1 << 14, (s, e) =>
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
}

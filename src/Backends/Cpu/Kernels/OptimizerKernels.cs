namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // Optimizer updates computed in double for every dtype from the stored values (parameter, gradient, moments),
    // each result rounded once on store; moments are stored in the parameter's dtype. Each element is independent,
    // so chunks run in parallel without changing results.

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
            double bc1 = 1 - Math.Pow(o.C.Beta1, o.Step), bc2 = 1 - Math.Pow(o.C.Beta2, o.Step);
            double lr = o.C.Lr, b1 = o.C.Beta1, b2 = o.C.Beta2, eps = o.C.Eps, wd = o.C.WeightDecay, inv = o.Inv;
            bool decoupled = o.C.Decoupled;
            double stepSize = lr / bc1, sqrtBc2 = Math.Sqrt(bc2);
            nint pp = o.P, pg = o.G, pm = o.M, pv = o.V;
            CpuParallel.For(o.N, 1 << 14, (s, e) =>
            {
                T* p = (T*)pp; TG* g = (TG*)pg; T* m = (T*)pm; T* v = (T*)pv;
                for (long i = s; i < e; i++)
                {
                    // Same order of operations as torch.optim.Adam(W)'s single-tensor path.
                    double x = TE.ToDouble(p[i]), gi = TEG.ToDouble(g[i]) * inv;
                    if (wd != 0) { if (decoupled) x *= 1 - lr * wd; else gi += wd * x; }
                    double mi = b1 * TE.ToDouble(m[i]) + (1 - b1) * gi;
                    double vi = b2 * TE.ToDouble(v[i]) + (1 - b2) * gi * gi;
                    x -= stepSize * mi / (Math.Sqrt(vi) / sqrtBc2 + eps);
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
            double lr = o.C.Lr, mu = o.C.Momentum, damp = o.C.Dampening, wd = o.C.WeightDecay, inv = o.Inv;
            bool nesterov = o.C.Nesterov, init = o.Init;
            nint pp = o.P, pg = o.G, pb = o.B;
            CpuParallel.For(o.N, 1 << 14, (s, e) =>
            {
                T* p = (T*)pp; TG* g = (TG*)pg; T* b = (T*)pb;
                for (long i = s; i < e; i++)
                {
                    double x = TE.ToDouble(p[i]), d = TEG.ToDouble(g[i]) * inv;
                    if (wd != 0) d += wd * x;
                    if (mu != 0)
                    {
                        double buf = init ? mu * TE.ToDouble(b[i]) + (1 - damp) * d : d;
                        b[i] = TE.FromDouble(buf);
                        d = nesterov ? d + mu * buf : buf;
                    }
                    p[i] = TE.FromDouble(x - lr * d);
                }
            });
        }
    }
}

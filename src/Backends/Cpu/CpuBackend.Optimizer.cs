using Engine.Backends.Cpu.Kernels;
using Engine.Ops;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // Optimizer updates (Kernels/OptimizerKernels.cs). The step count, the inverse scale and the found-inf flag are
    // read here; the per-element update runs in the kernels.

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
            OptimizerKernels.Adam<T, TE, TG, TEG>(o.P, o.G, o.M, o.V, o.N, math);
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
            OptimizerKernels.Sgd<T, TE, TG, TEG>(o.P, o.G, o.B, o.N, math);
        }
    }
}

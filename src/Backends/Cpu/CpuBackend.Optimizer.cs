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

    // The multi-tensor updates: the single-tensor kernels once per entry, so every parameter gets the very bits its
    // own AdamStep/SgdStep would give it; on the CPU a launch costs nothing, the saving is the GPU's.

    /// <inheritdoc/>
    public void ForeachAdamStep(IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage> expAvg, IReadOnlyList<Storage> expAvgSq,
        IReadOnlyList<Storage> step, AdamConfig config, Storage? invScale, Storage? foundInf)
    {
        ContractChecks.Foreach(nameof(ForeachAdamStep), param.Count, grad.Count, expAvg.Count, expAvgSq.Count, step.Count);
        for (int j = 0; j < param.Count; j++) AdamStep(param[j], grad[j], expAvg[j], expAvgSq[j], step[j], config, invScale, foundInf);
    }

    /// <inheritdoc/>
    public void ForeachSgdStep(IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage>? momentum, bool momentumInitialized,
        SgdConfig config, Storage? invScale, Storage? foundInf)
    {
        ContractChecks.Foreach(nameof(ForeachSgdStep), param.Count, grad.Count, momentum?.Count ?? param.Count);
        for (int j = 0; j < param.Count; j++) SgdStep(param[j], grad[j], momentum?[j], momentumInitialized, config, invScale, foundInf);
    }

    /// <inheritdoc/>
    public void ForeachNorm(IReadOnlyList<Storage> xs, double ord, Storage norms, int offset)
    {
        ContractChecks.Foreach(nameof(ForeachNorm), xs.Count);
        // Each norm is the Reduce kernel's, on the same values in the same order (half types widened first, as the
        // per-tensor total norm widens them), so it has the bits of the norm of that one tensor.
        foreach (var (x, j) in xs.Select((x, j) => (x, j)))
        {
            ContractChecks.Floating(nameof(ForeachNorm), x.DType);
            var plan = new ReducePlan(new Layout([checked((int)x.Count)], [1], 0), 1);
            if (x.DType == DType.Float64)
                ReduceKernels.Run<double, F64>(ReduceOp.Norm, (double*)P(x), plan, (double*)P(norms) + offset + j, null, ord);
            else if (x.DType == DType.Float32)
                ReduceKernels.Run<float, F32>(ReduceOp.Norm, (float*)P(x), plan, (float*)P(norms) + offset + j, null, ord);
            else
            {
                var wide = new float[x.Count];
                var v = new WidenVisitor { X = P(x), N = x.Count, Y = wide };
                DTypeDispatch.Visit(x.DType, ref v);
                fixed (float* w = wide) ReduceKernels.Run<float, F32>(ReduceOp.Norm, w, plan, (float*)P(norms) + offset + j, null, ord);
            }
        }
    }

    struct WidenVisitor : IDTypeVisitor
    {
        public nint X; public long N; public float[] Y;
        public readonly void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            T* x = (T*)X;
            for (long i = 0; i < N; i++) Y[i] = TE.ToFloat(x[i]);
        }
    }

    /// <inheritdoc/>
    public void ForeachMul(IReadOnlyList<Storage> xs, Storage scalar)
    {
        ContractChecks.Foreach(nameof(ForeachMul), xs.Count);
        // The Binary kernel's multiply by a broadcast scalar, per entry: the same bits as x.MulInPlace(s).
        foreach (var x in xs)
        {
            if (x.Count == 0) continue;
            var v = new Layout([checked((int)x.Count)], [1], 0);
            var b = new BinaryVisitor<MulOp> { Op = new MulOp(), A = P(x), AL = v, B = P(scalar), BL = new Layout([(int)x.Count], [0], 0), Y = P(x), YL = v };
            DTypeDispatch.Visit(x.DType, ref b); // the Binary kernel itself, uncounted: this call is one launch
        }
    }

    /// <inheritdoc/>
    public void ForeachCopy(IReadOnlyList<Storage> xs, IReadOnlyList<Storage> ys)
    {
        ContractChecks.Foreach(nameof(ForeachCopy), xs.Count, ys.Count);
        // The Copy kernel itself per entry, uncounted (this call is one launch): the bits of each per-tensor cast.
        for (int j = 0; j < xs.Count; j++)
        {
            ContractChecks.ForeachCopyEntry(nameof(ForeachCopy), xs[j], ys[j]);
            if (xs[j].Count == 0) continue;
            var v = new Layout([checked((int)xs[j].Count)], [1], 0);
            CopyUncounted(xs[j], v, ys[j], v);
        }
    }
}

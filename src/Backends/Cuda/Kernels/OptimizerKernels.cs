using Engine.Ops;
using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>The scalars of one optimizer launch (Adam: betas in Beta1/Beta2; SGD: momentum and dampening there).</summary>
public struct OptimizerParams
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public long N;
    public int ParamType, GradType, Flags;
    public double Lr, Beta1, Beta2, Eps, WeightDecay;
#pragma warning restore CS1591
}

static class OptimizerKernels
{
    public const int HasFound = 1, HasInvScale = 2, Decoupled = 4, HasMomentum = 8, MomentumInitialized = 16, Nesterov = 32;

    // Scratch layout (float64): [0] skip flag, [1] step size lr/(1 − β1ᵗ), [2] √(1 − β2ᵗ), [3] the inverse scale.
    public static void AdamPrepare(ArrayView<byte> step, ArrayView<byte> found, ArrayView<byte> invScale, ArrayView<byte> scratch,
        int flags, double lr, double beta1, double beta2)
    {
        var s = scratch.Cast<double>();
        if ((flags & HasFound) != 0 && found.Cast<float>()[0] != 0)
        {
            s[0] = 1;
            return;
        }
        var st = step.Cast<float>();
        float t = st[0] + 1;
        st[0] = t;
        s[0] = 0;
        s[1] = AdamMath.StepSize(lr, beta1, t);
        s[2] = AdamMath.SqrtBias2(beta2, t);
        s[3] = (flags & HasInvScale) != 0 ? invScale.Cast<float>()[0] : 1.0;
    }

    public static void Adam(ArrayView<byte> param, ArrayView<byte> grad, ArrayView<byte> m, ArrayView<byte> v, ArrayView<byte> scratch, OptimizerParams p)
    {
        var s = scratch.Cast<double>();
        if (s[0] != 0) return;
        var math = new AdamMath(p.Lr, p.Beta1, p.Beta2, p.Eps, p.WeightDecay, (p.Flags & Decoupled) != 0, s[1], s[2], s[3]);
        long stride = (long)Grid.DimX * Group.DimX;
        int pt = p.ParamType, gt = p.GradType;
        if (pt == F64)
        {
            for (long i = Grid.GlobalIndex.X; i < p.N; i += stride)
            {
                double x = LoadDouble(param, pt, i), mi = LoadDouble(m, pt, i), vi = LoadDouble(v, pt, i);
                math.Update(ref x, LoadDouble(grad, gt, i), ref mi, ref vi);
                StoreDouble(m, pt, i, mi); StoreDouble(v, pt, i, vi); StoreDouble(param, pt, i, x);
            }
            return;
        }
        for (long i = Grid.GlobalIndex.X; i < p.N; i += stride)
        {
            float x = LoadFloat(param, pt, i), mi = LoadFloat(m, pt, i), vi = LoadFloat(v, pt, i);
            math.Update(ref x, LoadFloat(grad, gt, i), ref mi, ref vi);
            StoreFloat(m, pt, i, mi); StoreFloat(v, pt, i, vi); StoreFloat(param, pt, i, x);
        }
    }

    public static void Sgd(ArrayView<byte> param, ArrayView<byte> grad, ArrayView<byte> buf, ArrayView<byte> found, ArrayView<byte> invScale, OptimizerParams p)
    {
        if ((p.Flags & HasFound) != 0 && found.Cast<float>()[0] != 0) return;
        double inv = (p.Flags & HasInvScale) != 0 ? invScale.Cast<float>()[0] : 1.0;
        var math = new SgdMath(p.Lr, p.Beta1, p.Beta2, p.WeightDecay, (p.Flags & Nesterov) != 0, (p.Flags & HasMomentum) != 0,
            (p.Flags & MomentumInitialized) != 0, inv);
        long stride = (long)Grid.DimX * Group.DimX;
        int pt = p.ParamType, gt = p.GradType;
        if (pt == F64)
        {
            for (long i = Grid.GlobalIndex.X; i < p.N; i += stride)
            {
                double x = LoadDouble(param, pt, i), b = math.ReadsBuffer ? LoadDouble(buf, pt, i) : 0;
                math.Update(ref x, LoadDouble(grad, gt, i), ref b);
                if (math.UsesBuffer) StoreDouble(buf, pt, i, b);
                StoreDouble(param, pt, i, x);
            }
            return;
        }
        for (long i = Grid.GlobalIndex.X; i < p.N; i += stride)
        {
            float x = LoadFloat(param, pt, i), b = math.ReadsBuffer ? LoadFloat(buf, pt, i) : 0;
            math.Update(ref x, LoadFloat(grad, gt, i), ref b);
            if (math.UsesBuffer) StoreFloat(buf, pt, i, b);
            StoreFloat(param, pt, i, x);
        }
    }

    // ---- multi-tensor forms: one launch over a TensorList per operand ----

    // Foreach scratch layout (float64): [0] skip flag, [1] the inverse scale, then per entry j [2 + 2j] the step size
    // and [3 + 2j] √(1 − β2ᵗ) of that parameter's own step count.
    public const int ForeachScratchDoubles = 2 + 2 * MultiTensor.MaxTensors;

    /// <summary>One group of MaxTensors threads: thread j advances step j and computes its bias corrections.</summary>
    public static void ForeachAdamPrepare(TensorList steps, ArrayView<byte> found, ArrayView<byte> invScale, ArrayView<byte> scratch,
        int flags, double lr, double beta1, double beta2)
    {
        var s = scratch.Cast<double>();
        int j = Grid.GlobalIndex.X;
        bool skip = (flags & HasFound) != 0 && found.Cast<float>()[0] != 0;
        if (j == 0)
        {
            s[0] = skip ? 1 : 0;
            s[1] = (flags & HasInvScale) != 0 ? invScale.Cast<float>()[0] : 1.0;
        }
        if (skip || j >= steps.Count) return;
        var st = steps[j].Cast<float>();
        float t = st[0] + 1;
        st[0] = t;
        s[2 + 2 * j] = AdamMath.StepSize(lr, beta1, t);
        s[3 + 2 * j] = AdamMath.SqrtBias2(beta2, t);
    }

    /// <summary>Adam over every entry: each thread grid-strides through entry 0, then entry 1, ... (the per-tensor kernel's loop).</summary>
    public static void ForeachAdam(TensorList param, TensorList grad, TensorList m, TensorList v, ArrayView<byte> scratch, OptimizerParams p)
    {
        var s = scratch.Cast<double>();
        if (s[0] != 0) return;
        long stride = (long)Grid.DimX * Group.DimX;
        for (int j = 0; j < param.Count; j++)
        {
            var math = new AdamMath(p.Lr, p.Beta1, p.Beta2, p.Eps, p.WeightDecay, (p.Flags & Decoupled) != 0, s[2 + 2 * j], s[3 + 2 * j], s[1]);
            var pv = param[j]; var gv = grad[j]; var mv = m[j]; var vv = v[j];
            int pt = param.Type(j), gt = grad.Type(j);
            long n = param.Length(j);
            if (pt == F64)
            {
                for (long i = Grid.GlobalIndex.X; i < n; i += stride)
                {
                    double x = LoadDouble(pv, pt, i), mi = LoadDouble(mv, pt, i), vi = LoadDouble(vv, pt, i);
                    math.Update(ref x, LoadDouble(gv, gt, i), ref mi, ref vi);
                    StoreDouble(mv, pt, i, mi); StoreDouble(vv, pt, i, vi); StoreDouble(pv, pt, i, x);
                }
                continue;
            }
            for (long i = Grid.GlobalIndex.X; i < n; i += stride)
            {
                float x = LoadFloat(pv, pt, i), mi = LoadFloat(mv, pt, i), vi = LoadFloat(vv, pt, i);
                math.Update(ref x, LoadFloat(gv, gt, i), ref mi, ref vi);
                StoreFloat(mv, pt, i, mi); StoreFloat(vv, pt, i, vi); StoreFloat(pv, pt, i, x);
            }
        }
    }

    /// <summary>SGD over every entry; <paramref name="buf"/> is ignored without HasMomentum.</summary>
    public static void ForeachSgd(TensorList param, TensorList grad, TensorList buf, ArrayView<byte> found, ArrayView<byte> invScale, OptimizerParams p)
    {
        if ((p.Flags & HasFound) != 0 && found.Cast<float>()[0] != 0) return;
        double inv = (p.Flags & HasInvScale) != 0 ? invScale.Cast<float>()[0] : 1.0;
        var math = new SgdMath(p.Lr, p.Beta1, p.Beta2, p.WeightDecay, (p.Flags & Nesterov) != 0, (p.Flags & HasMomentum) != 0,
            (p.Flags & MomentumInitialized) != 0, inv);
        long stride = (long)Grid.DimX * Group.DimX;
        for (int j = 0; j < param.Count; j++)
        {
            var pv = param[j]; var gv = grad[j]; var bv = buf[j];
            int pt = param.Type(j), gt = grad.Type(j);
            long n = param.Length(j);
            if (pt == F64)
            {
                for (long i = Grid.GlobalIndex.X; i < n; i += stride)
                {
                    double x = LoadDouble(pv, pt, i), b = math.ReadsBuffer ? LoadDouble(bv, pt, i) : 0;
                    math.Update(ref x, LoadDouble(gv, gt, i), ref b);
                    if (math.UsesBuffer) StoreDouble(bv, pt, i, b);
                    StoreDouble(pv, pt, i, x);
                }
                continue;
            }
            for (long i = Grid.GlobalIndex.X; i < n; i += stride)
            {
                float x = LoadFloat(pv, pt, i), b = math.ReadsBuffer ? LoadFloat(bv, pt, i) : 0;
                math.Update(ref x, LoadFloat(gv, gt, i), ref b);
                if (math.UsesBuffer) StoreFloat(bv, pt, i, b);
                StoreFloat(pv, pt, i, x);
            }
        }
    }
}

using Engine.Ops;
using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // Fused optimizer updates that never read a device value on the host: the step count, the inverse scale and the
    // found-inf flag stay on the device. Adam takes two launches on the one stream: a one-thread kernel reads the
    // flag, advances the step and computes the bias corrections in float64 (once, not per element), then the update
    // reads them; stream order makes the second see the first's writes. The per-element math is the shared
    // AdamMath/SgdMath (src/Tensors/Ops), in float64 for Float64 parameters and float32 otherwise, rounding once on
    // store (the CPU backend computes in float64 throughout).

    MemoryBuffer1D<byte, Stride1D.Dense>? _scratch;

    /// <summary>A small device buffer for values passed between launches (Adam's bias corrections).</summary>
    ArrayView<byte> Scratch
    {
        get
        {
            lock (_kernelLock)
            {
                Bind();
                _scratch ??= Accelerator.Allocate1D<byte>(64);
                return _scratch.View.AsContiguous();
            }
        }
    }

    /// <inheritdoc/>
    public void AdamStep(Storage param, Storage grad, Storage expAvg, Storage expAvgSq, Storage step, AdamConfig config, Storage? invScale, Storage? foundInf)
    {
        var pv = V(param);
        var scratch = Scratch;
        var flags = (foundInf is null ? 0 : OptimizerKernels.HasFound) | (invScale is null ? 0 : OptimizerKernels.HasInvScale);
        Kernel("AdamPrepare", null, k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, int, double, double, double>(OptimizerKernels.AdamPrepare))
            (Single, V(step), foundInf is null ? pv : V(foundInf), invScale is null ? pv : V(invScale), scratch, flags, config.Lr, config.Beta1, config.Beta2);
        long n = param.Count;
        if (n == 0) return;
        var p = new OptimizerParams
        {
            N = n, ParamType = (int)param.DType, GradType = (int)grad.DType,
            Lr = config.Lr, Beta1 = config.Beta1, Beta2 = config.Beta2, Eps = config.Eps, WeightDecay = config.WeightDecay,
            Flags = config.Decoupled ? OptimizerKernels.Decoupled : 0,
        };
        Kernel("Adam", null, k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, OptimizerParams>(OptimizerKernels.Adam))
            (Grid(n), pv, V(grad), V(expAvg), V(expAvgSq), scratch, p);
    }

    /// <inheritdoc/>
    public void SgdStep(Storage param, Storage grad, Storage? momentum, bool momentumInitialized, SgdConfig config, Storage? invScale, Storage? foundInf)
    {
        long n = param.Count;
        if (n == 0) return;
        var pv = V(param);
        var p = new OptimizerParams
        {
            N = n, ParamType = (int)param.DType, GradType = (int)grad.DType,
            Lr = config.Lr, Beta1 = config.Momentum, Beta2 = config.Dampening, WeightDecay = config.WeightDecay,
            Flags = (momentum is null ? 0 : OptimizerKernels.HasMomentum) | (momentumInitialized ? OptimizerKernels.MomentumInitialized : 0)
                | (config.Nesterov ? OptimizerKernels.Nesterov : 0) | (foundInf is null ? 0 : OptimizerKernels.HasFound)
                | (invScale is null ? 0 : OptimizerKernels.HasInvScale),
        };
        Kernel("Sgd", null, k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, OptimizerParams>(OptimizerKernels.Sgd))
            (Grid(n), pv, V(grad), momentum is null ? pv : V(momentum), foundInf is null ? pv : V(foundInf), invScale is null ? pv : V(invScale), p);
    }
}

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
}

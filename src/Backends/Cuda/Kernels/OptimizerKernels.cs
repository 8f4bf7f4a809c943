using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // Fused optimizer updates that never read a device value on the host: the step count, the inverse scale and the
    // found-inf flag stay on the device. Adam takes two launches on the one stream: a one-thread kernel reads the
    // flag, advances the step and computes the bias corrections in float64 (once, not per element), then the update
    // reads them; stream order makes the second see the first's writes. Updates compute in float64 for Float64
    // parameters and float32 otherwise, rounding once on store (the CPU backend computes in float64 throughout).

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
        double bc1 = 1 - Math.Pow(beta1, t), bc2 = 1 - Math.Pow(beta2, t);
        s[0] = 0;
        s[1] = lr / bc1;
        s[2] = Math.Sqrt(bc2);
        s[3] = (flags & HasInvScale) != 0 ? invScale.Cast<float>()[0] : 1.0;
    }

    public static void Adam(ArrayView<byte> param, ArrayView<byte> grad, ArrayView<byte> m, ArrayView<byte> v, ArrayView<byte> scratch, OptimizerParams p)
    {
        var s = scratch.Cast<double>();
        if (s[0] != 0) return;
        double stepSize = s[1], sqrtBc2 = s[2], inv = s[3];
        long stride = (long)Grid.DimX * Group.DimX;
        int pt = p.ParamType, gt = p.GradType;
        bool decoupled = (p.Flags & Decoupled) != 0;
        if (pt == F64)
        {
            double lr = p.Lr, b1 = p.Beta1, b2 = p.Beta2, eps = p.Eps, wd = p.WeightDecay;
            for (long i = Grid.GlobalIndex.X; i < p.N; i += stride)
            {
                double x = LoadDouble(param, pt, i), g = LoadDouble(grad, gt, i) * inv;
                if (wd != 0) { if (decoupled) x *= 1 - lr * wd; else g += wd * x; }
                double mi = b1 * LoadDouble(m, pt, i) + (1 - b1) * g;
                double vi = b2 * LoadDouble(v, pt, i) + (1 - b2) * g * g;
                x -= stepSize * mi / (Math.Sqrt(vi) / sqrtBc2 + eps);
                StoreDouble(m, pt, i, mi); StoreDouble(v, pt, i, vi); StoreDouble(param, pt, i, x);
            }
            return;
        }
        float lrF = (float)p.Lr, b1F = (float)p.Beta1, b2F = (float)p.Beta2, epsF = (float)p.Eps, wdF = (float)p.WeightDecay;
        float c1 = (float)(1 - p.Beta1), c2 = (float)(1 - p.Beta2), decay = (float)(1 - p.Lr * p.WeightDecay);
        float stepF = (float)stepSize, sqrtF = (float)sqrtBc2, invF = (float)inv;
        for (long i = Grid.GlobalIndex.X; i < p.N; i += stride)
        {
            float x = LoadFloat(param, pt, i), g = LoadFloat(grad, gt, i) * invF;
            if (wdF != 0) { if (decoupled) x *= decay; else g += wdF * x; }
            float mi = b1F * LoadFloat(m, pt, i) + c1 * g;
            float vi = b2F * LoadFloat(v, pt, i) + c2 * g * g;
            x -= stepF * mi / (MathF.Sqrt(vi) / sqrtF + epsF);
            StoreFloat(m, pt, i, mi); StoreFloat(v, pt, i, vi); StoreFloat(param, pt, i, x);
        }
    }

    public static void Sgd(ArrayView<byte> param, ArrayView<byte> grad, ArrayView<byte> buf, ArrayView<byte> found, ArrayView<byte> invScale, OptimizerParams p)
    {
        if ((p.Flags & HasFound) != 0 && found.Cast<float>()[0] != 0) return;
        double inv = (p.Flags & HasInvScale) != 0 ? invScale.Cast<float>()[0] : 1.0;
        long stride = (long)Grid.DimX * Group.DimX;
        int pt = p.ParamType, gt = p.GradType;
        bool hasMomentum = (p.Flags & HasMomentum) != 0 && p.Beta1 != 0, init = (p.Flags & MomentumInitialized) != 0, nesterov = (p.Flags & Nesterov) != 0;
        if (pt == F64)
        {
            double lr = p.Lr, mu = p.Beta1, damp = p.Beta2, wd = p.WeightDecay;
            for (long i = Grid.GlobalIndex.X; i < p.N; i += stride)
            {
                double x = LoadDouble(param, pt, i), d = LoadDouble(grad, gt, i) * inv;
                if (wd != 0) d += wd * x;
                if (hasMomentum)
                {
                    double b = init ? mu * LoadDouble(buf, pt, i) + (1 - damp) * d : d;
                    StoreDouble(buf, pt, i, b);
                    d = nesterov ? d + mu * b : b;
                }
                StoreDouble(param, pt, i, x - lr * d);
            }
            return;
        }
        float lrF = (float)p.Lr, muF = (float)p.Beta1, keep = (float)(1 - p.Beta2), wdF = (float)p.WeightDecay, invF = (float)inv;
        for (long i = Grid.GlobalIndex.X; i < p.N; i += stride)
        {
            float x = LoadFloat(param, pt, i), d = LoadFloat(grad, gt, i) * invF;
            if (wdF != 0) d += wdF * x;
            if (hasMomentum)
            {
                float b = init ? muF * LoadFloat(buf, pt, i) + keep * d : d;
                StoreFloat(buf, pt, i, b);
                d = nesterov ? d + muF * b : b;
            }
            StoreFloat(param, pt, i, x - lrF * d);
        }
    }
}

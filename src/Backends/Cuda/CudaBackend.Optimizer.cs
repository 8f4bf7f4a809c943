using Engine.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;

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

    /// <summary>A small device buffer for values passed between launches (Adam's bias corrections, per entry in the foreach form).</summary>
    ArrayView<byte> Scratch
    {
        get
        {
            lock (_kernelLock)
            {
                Bind();
                _scratch ??= Accelerator.Allocate1D<byte>(OptimizerKernels.ForeachScratchDoubles * sizeof(double));
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

    // The multi-tensor forms: one TensorList per operand, the same two launches (prepare, update) for up to
    // MultiTensor.MaxTensors parameters as for one. Each entry's math is the single-tensor kernel's, so every
    // parameter gets the bits its own AdamStep/SgdStep would give it. The grid is sized by the largest entry.

    static long Largest(IReadOnlyList<Storage> xs)
    {
        long n = 0;
        foreach (var x in xs) n = Math.Max(n, x.Count);
        return n;
    }

    /// <inheritdoc/>
    public void ForeachAdamStep(IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage> expAvg, IReadOnlyList<Storage> expAvgSq,
        IReadOnlyList<Storage> step, AdamConfig config, Storage? invScale, Storage? foundInf)
    {
        ContractChecks.Foreach(nameof(ForeachAdamStep), param.Count, grad.Count, expAvg.Count, expAvgSq.Count, step.Count);
        var any = V(param[0]);
        var scratch = Scratch;
        var flags = (foundInf is null ? 0 : OptimizerKernels.HasFound) | (invScale is null ? 0 : OptimizerKernels.HasInvScale);
        Kernel("ForeachAdamPrepare", null, k => k.LoadStreamKernel<TensorList, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, int, double, double, double>(OptimizerKernels.ForeachAdamPrepare))
            (new KernelConfig(1, MultiTensor.MaxTensors), TensorList.Of(step), foundInf is null ? any : V(foundInf), invScale is null ? any : V(invScale),
                scratch, flags, config.Lr, config.Beta1, config.Beta2);
        long n = Largest(param);
        if (n == 0) return;
        var p = new OptimizerParams
        {
            N = n, Lr = config.Lr, Beta1 = config.Beta1, Beta2 = config.Beta2, Eps = config.Eps, WeightDecay = config.WeightDecay,
            Flags = config.Decoupled ? OptimizerKernels.Decoupled : 0,
        };
        Kernel("ForeachAdam", null, k => k.LoadStreamKernel<TensorList, TensorList, TensorList, TensorList, ArrayView<byte>, OptimizerParams>(OptimizerKernels.ForeachAdam))
            (Grid(n), TensorList.Of(param), TensorList.Of(grad), TensorList.Of(expAvg), TensorList.Of(expAvgSq), scratch, p);
    }

    /// <inheritdoc/>
    public void ForeachSgdStep(IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage>? momentum, bool momentumInitialized,
        SgdConfig config, Storage? invScale, Storage? foundInf)
    {
        ContractChecks.Foreach(nameof(ForeachSgdStep), param.Count, grad.Count, momentum?.Count ?? param.Count);
        long n = Largest(param);
        if (n == 0) return;
        var any = V(param[0]);
        var p = new OptimizerParams
        {
            N = n, Lr = config.Lr, Beta1 = config.Momentum, Beta2 = config.Dampening, WeightDecay = config.WeightDecay,
            Flags = (momentum is null ? 0 : OptimizerKernels.HasMomentum) | (momentumInitialized ? OptimizerKernels.MomentumInitialized : 0)
                | (config.Nesterov ? OptimizerKernels.Nesterov : 0) | (foundInf is null ? 0 : OptimizerKernels.HasFound)
                | (invScale is null ? 0 : OptimizerKernels.HasInvScale),
        };
        var ps = TensorList.Of(param);
        Kernel("ForeachSgd", null, k => k.LoadStreamKernel<TensorList, TensorList, TensorList, ArrayView<byte>, ArrayView<byte>, OptimizerParams>(OptimizerKernels.ForeachSgd))
            (Grid(n), ps, TensorList.Of(grad), momentum is null ? ps : TensorList.Of(momentum), foundInf is null ? any : V(foundInf), invScale is null ? any : V(invScale), p);
    }
}

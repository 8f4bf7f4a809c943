using Engine.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // The gradient scaler's two kernels, reading the scale, the inverse scale and the flags on the device only. A
    // thread that meets a non-finite value stores 1 into found-inf: the same value from any thread, so the race is benign.

    /// <inheritdoc/>
    public void NonFiniteCheckAndUnscale(IReadOnlyList<Storage> grads, Storage foundInf, Storage invScale)
    {
        foreach (var g in grads)
            if (!g.DType.IsFloatingPoint())
                throw new DTypeException("NonFiniteCheckAndUnscale", $"gradients must be floating point, got {g.DType.Name()}");
        if (grads.Count == 0) return;
        ContractChecks.Foreach(nameof(NonFiniteCheckAndUnscale), grads.Count);
        // One launch for the whole list (a TensorList), the grid sized by the largest gradient.
        long n = 0;
        foreach (var g in grads) n = Math.Max(n, g.Count);
        if (n == 0) return;
        Kernel("ForeachUnscale", null, k => k.LoadStreamKernel<TensorList, ArrayView<byte>, ArrayView<byte>>(AmpKernels.ForeachUnscale))
            (Grid(n), TensorList.Of(grads), V(foundInf), V(invScale));
    }

    /// <inheritdoc/>
    public void UpdateScale(Storage scale, Storage growthTracker, Storage foundInf, double growthFactor, double backoffFactor, int growthInterval)
    {
        Kernel("UpdateScale", null, k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, double, double, int>(AmpKernels.UpdateScale))
            (Single, V(scale), V(growthTracker), V(foundInf), growthFactor, backoffFactor, growthInterval);
    }
}

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
        var unscale = Kernel("Unscale", null, k => k.LoadStreamKernel<ArrayView<byte>, int, long, ArrayView<byte>, ArrayView<byte>>(AmpKernels.Unscale));
        var found = V(foundInf); var inv = V(invScale);
        foreach (var g in grads)
            if (g.Count > 0) unscale(Grid(g.Count), V(g), (int)g.DType, g.Count, found, inv);
    }

    /// <inheritdoc/>
    public void UpdateScale(Storage scale, Storage growthTracker, Storage foundInf, double growthFactor, double backoffFactor, int growthInterval)
    {
        Kernel("UpdateScale", null, k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, double, double, int>(AmpKernels.UpdateScale))
            (Single, V(scale), V(growthTracker), V(foundInf), growthFactor, backoffFactor, growthInterval);
    }
}

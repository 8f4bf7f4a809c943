using Engine.Autocast;
using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

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

static class AmpKernels
{
    static bool IsFinite(float x) => (Interop.FloatAsInt(x) & 0x7F80_0000u) != 0x7F80_0000u;

    static bool IsFinite(double x) => (Interop.FloatAsInt(x) & 0x7FF0_0000_0000_0000UL) != 0x7FF0_0000_0000_0000UL;

    public static void Unscale(ArrayView<byte> g, int t, long n, ArrayView<byte> found, ArrayView<byte> invScale)
    {
        float inv = invScale.Cast<float>()[0];
        bool scale = inv != 1f; // as PyTorch: an inverse scale of exactly 1 leaves the values untouched
        bool bad = false;
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            if (t == F64)
            {
                double x = LoadDouble(g, t, i);
                if (!IsFinite(x)) bad = true;
                if (scale) StoreDouble(g, t, i, x * inv);
            }
            else
            {
                float x = LoadFloat(g, t, i);
                if (!IsFinite(x)) bad = true;
                if (scale) StoreFloat(g, t, i, x * inv);
            }
        }
        if (bad) found.Cast<float>()[0] = 1f;
    }

    public static void UpdateScale(ArrayView<byte> scale, ArrayView<byte> tracker, ArrayView<byte> found, double growth, double backoff, int interval)
    {
        var s = scale.Cast<float>();
        var tr = tracker.Cast<int>();
        // As PyTorch's kernel: float·double rounded back to float.
        if (found.Cast<float>()[0] != 0)
        {
            s[0] = (float)(s[0] * backoff);
            tr[0] = 0;
            return;
        }
        int successful = tr[0] + 1;
        if (successful == interval)
        {
            float grown = (float)(s[0] * growth);
            if (IsFinite(grown)) s[0] = grown;
            tr[0] = 0;
        }
        else tr[0] = successful;
    }
}

using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

static class AmpKernels
{
    static bool IsFinite(float x) => (Interop.FloatAsInt(x) & 0x7F80_0000u) != 0x7F80_0000u;

    static bool IsFinite(double x) => (Interop.FloatAsInt(x) & 0x7FF0_0000_0000_0000UL) != 0x7FF0_0000_0000_0000UL;

    /// <summary>The check and unscale of every entry of a list in one launch; each thread grid-strides through the entries in turn.</summary>
    public static void ForeachUnscale(TensorList grads, ArrayView<byte> found, ArrayView<byte> invScale)
    {
        float inv = invScale.Cast<float>()[0];
        bool scale = inv != 1f;
        bool bad = false;
        long stride = (long)Grid.DimX * Group.DimX;
        for (int j = 0; j < grads.Count; j++)
        {
            var g = grads[j];
            int t = grads.Type(j);
            long n = grads.Length(j);
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

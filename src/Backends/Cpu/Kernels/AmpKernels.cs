using System.Numerics;

namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// The gradient scaler's two kernels. The check multiplies and tests every element of every gradient; a chunk that
/// meets a non-finite value stores 1 into found-inf (the same value from any thread, so the result does not depend
/// on the thread count). The plain per-element loop is the reference; float32 has a SIMD path beside it that must
/// give the same bits (one float32 multiply per element either way).
/// </summary>
static unsafe class AmpKernels
{
    /// <summary>Multiplies the <paramref name="n"/> elements at <paramref name="g"/> by <paramref name="inv"/>, setting *found to 1 on a non-finite one.</summary>
    public static void Unscale<T, TE>(nint g, long n, float inv, nint found) where T : unmanaged where TE : struct, IElement<T>
    {
        nint pg = g, pf = found;
        bool scale = inv != 1f; // PyTorch leaves values untouched when the inverse scale is exactly 1
        CpuParallel.For(n, 1 << 15, (s, e) =>
        {
            bool bad = typeof(T) == typeof(float)
                ? UnscaleFloat32((float*)pg + s, e - s, inv, scale)
                : UnscaleScalar<T, TE>((T*)pg + s, e - s, inv, scale);
            if (bad) Volatile.Write(ref *(float*)pf, 1f);
        });
    }

    // The reference: widen, test, multiply in float32 (float64 for Float64), round once on store.
    static bool UnscaleScalar<T, TE>(T* g, long n, float inv, bool scale) where T : unmanaged where TE : struct, IElement<T>
    {
        bool bad = false;
        if (TE.Wide)
        {
            for (long i = 0; i < n; i++)
            {
                double x = TE.ToDouble(g[i]);
                if (!double.IsFinite(x)) bad = true;
                if (scale) g[i] = TE.FromDouble(x * inv);
            }
        }
        else
        {
            for (long i = 0; i < n; i++)
            {
                float x = TE.ToFloat(g[i]);
                if (!float.IsFinite(x)) bad = true;
                if (scale) g[i] = TE.FromFloat(x * inv);
            }
        }
        return bad;
    }

    // Float32 fast path: a value is non-finite exactly when its exponent bits are all ones.
    static bool UnscaleFloat32(float* g, long n, float inv, bool scale)
    {
        long i = 0;
        bool bad = false;
        if (Vector.IsHardwareAccelerated && n >= Vector<float>.Count)
        {
            var expMask = new Vector<int>(0x7F800000);
            var invV = new Vector<float>(inv);
            var acc = Vector<int>.Zero;
            for (; i <= n - Vector<float>.Count; i += Vector<float>.Count)
            {
                var v = Vector.Load(g + i);
                acc |= Vector.Equals(Vector.AsVectorInt32(v) & expMask, expMask);
                if (scale) Vector.Store(v * invV, g + i);
            }
            bad = acc != Vector<int>.Zero;
        }
        for (; i < n; i++)
        {
            float x = g[i];
            if (!float.IsFinite(x)) bad = true;
            if (scale) g[i] = x * inv;
        }
        return bad;
    }

    /// <summary>The scale's growth or backoff after one step, as <c>torch._amp_update_scale_</c>.</summary>
    public static void UpdateScale(float* s, int* tracker, float* foundInf, double growthFactor, double backoffFactor, int growthInterval)
    {
        // Same arithmetic as PyTorch's CPU kernel: float·double rounded back to float.
        if (*foundInf != 0)
        {
            *s = (float)(*s * backoffFactor);
            *tracker = 0;
            return;
        }
        int successful = *tracker + 1;
        if (successful == growthInterval)
        {
            float grown = (float)(*s * growthFactor);
            if (float.IsFinite(grown)) *s = grown; // never grow past float32's range to Inf
            *tracker = 0;
        }
        else *tracker = successful;
    }
}

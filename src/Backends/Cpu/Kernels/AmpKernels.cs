using System.Numerics;
using Engine.Autocast;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // The gradient scaler's two kernels. The check multiplies and tests every element of every gradient; a chunk that
    // meets a non-finite value stores 1 into found-inf (the same value from any thread, so the result does not depend
    // on the thread count). The plain per-element loop is the reference; float32 has a SIMD path beside it that must
    // give the same bits (one float32 multiply per element either way).

    /// <inheritdoc/>
    public void NonFiniteCheckAndUnscale(IReadOnlyList<Storage> grads, Storage foundInf, Storage invScale)
    {
        float inv = *(float*)P(invScale);
        nint found = P(foundInf);
        foreach (var g in grads)
        {
            var v = new UnscaleVisitor { G = P(g), N = g.Count, Inv = inv, Found = found };
            DTypeDispatch.Visit(g.DType, ref v);
        }
    }

    struct UnscaleVisitor : IDTypeVisitor
    {
        public nint G, Found; public long N; public float Inv;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            if (typeof(T) == typeof(bool) || typeof(T) == typeof(int) || typeof(T) == typeof(long))
                throw new DTypeException("NonFiniteCheckAndUnscale", $"gradients must be floating point, got {typeof(T).Name}");
            nint pg = G, pf = Found;
            float inv = Inv;
            bool scale = inv != 1f; // PyTorch leaves values untouched when the inverse scale is exactly 1
            CpuParallel.For(N, 1 << 15, (s, e) =>
            {
                bool bad = typeof(T) == typeof(float)
                    ? UnscaleFloat32((float*)pg + s, e - s, inv, scale)
                    : UnscaleScalar<T, TE>((T*)pg + s, e - s, inv, scale);
                if (bad) Volatile.Write(ref *(float*)pf, 1f);
            });
        }
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

    /// <inheritdoc/>
    public void UpdateScale(Storage scale, Storage growthTracker, Storage foundInf, double growthFactor, double backoffFactor, int growthInterval)
    {
        float* s = (float*)P(scale);
        int* tracker = (int*)P(growthTracker);
        // Same arithmetic as PyTorch's CPU kernel: float·double rounded back to float.
        if (*(float*)P(foundInf) != 0)
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

using Engine.Backends.Cpu.Kernels;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // The gradient scaler's two kernels: Kernels/AmpKernels.cs.

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
            AmpKernels.Unscale<T, TE>(G, N, Inv, Found);
        }
    }

    /// <inheritdoc/>
    public void UpdateScale(Storage scale, Storage growthTracker, Storage foundInf, double growthFactor, double backoffFactor, int growthInterval) =>
        AmpKernels.UpdateScale((float*)P(scale), (int*)P(growthTracker), (float*)P(foundInf), growthFactor, backoffFactor, growthInterval);
}

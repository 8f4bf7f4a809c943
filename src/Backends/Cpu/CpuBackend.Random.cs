using Engine.Backends.Cpu.Kernels;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Random(Storage y, ulong seed, ulong offset, bool normal, double a, double b)
    {
        nint p = P(y);
        long n = y.Count;
        switch (y.DType)
        {
            case DType.Float64: RandomKernels.Fill<double, F64>(p, n, seed, offset, normal, a, b, 0); break;
            case DType.Float32: RandomKernels.Fill<float, F32>(p, n, seed, offset, normal, a, b, 24); break;
            case DType.Float16: RandomKernels.Fill<Half, F16>(p, n, seed, offset, normal, a, b, 11); break;
            case DType.BFloat16: RandomKernels.Fill<BFloat16, BF16>(p, n, seed, offset, normal, a, b, 8); break;
            default: throw new DTypeException("Random", $"random fills need a floating point storage, got {y.DType.Name()}");
        }
    }
}

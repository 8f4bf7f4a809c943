using Engine.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    public void Random(Storage y, ulong seed, ulong offset, bool normal, double a, double b)
    {
        int bits = y.DType switch
        {
            DType.Float64 => 0,
            DType.Float32 => 24,
            DType.Float16 => 11,
            DType.BFloat16 => 8,
            _ => throw new DTypeException("Random", $"random fills need a floating point storage, got {y.DType.Name()}"),
        };
        long n = y.Count;
        if (n == 0) return;
        long counters = (n + 3) / 4;
        Kernel("Random", WidthOf(y.DType), k => k.LoadStreamKernel<ArrayView<byte>, int, long, ulong, ulong, int, double, double, int>(
                y.DType == DType.Float64 ? RandomKernels.Fill<Wide> : RandomKernels.Fill<Narrow>))
            (Grid(counters), V(y), (int)y.DType, n, seed, offset, normal ? 1 : 0, a, b, bits);
    }
}

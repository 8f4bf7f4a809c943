namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // Not yet on CUDA: the batched GEMM (tiled, then tensor cores through inline PTX; see shared/gpu/README.md).

    /// <inheritdoc/>
    public void MatMul(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k) =>
        throw new NotSupportedException("MatMul is not yet on CUDA");
}

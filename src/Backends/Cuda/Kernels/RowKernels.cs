namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // Not yet on CUDA: the row kernels (softmax, layer norm, cross entropy), one group per row.

    /// <inheritdoc/>
    public void Softmax(Storage x, Storage y, int rows, int cols, bool log) =>
        throw new NotSupportedException("Softmax is not yet on CUDA");

    /// <inheritdoc/>
    public void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int cols, bool log) =>
        throw new NotSupportedException("SoftmaxBackward is not yet on CUDA");

    /// <inheritdoc/>
    public void LayerNorm(Storage x, Storage? weight, Storage? bias, Storage y, Storage mean, Storage rstd, int rows, int cols, double eps, bool rms) =>
        throw new NotSupportedException("LayerNorm is not yet on CUDA");

    /// <inheritdoc/>
    public void LayerNormBackward(Storage x, Storage? weight, Storage mean, Storage rstd, Storage dy, Storage dx, Storage? dWeight, Storage? dBias, int rows, int cols, bool rms) =>
        throw new NotSupportedException("LayerNormBackward is not yet on CUDA");

    /// <inheritdoc/>
    public void CrossEntropy(Storage logits, Storage targets, Storage loss, int rows, int cols, long ignoreIndex, double labelSmoothing) =>
        throw new NotSupportedException("CrossEntropy is not yet on CUDA");

    /// <inheritdoc/>
    public void CrossEntropyBackward(Storage logits, Storage targets, Storage dloss, Storage dlogits, int rows, int cols, long ignoreIndex, double labelSmoothing) =>
        throw new NotSupportedException("CrossEntropyBackward is not yet on CUDA");
}

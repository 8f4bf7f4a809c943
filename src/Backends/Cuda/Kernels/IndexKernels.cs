namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // Not yet on CUDA: gather and its deterministic adjoint.

    /// <inheritdoc/>
    public void Gather(Storage x, Layout xLayout, Storage index, Layout indexLayout, Storage y, int outer, int size, int count, int inner) =>
        throw new NotSupportedException("Gather is not yet on CUDA");

    /// <inheritdoc/>
    public void ScatterAdd(Storage dy, Layout dyLayout, Storage index, Layout indexLayout, Storage dx, int outer, int size, int count, int inner) =>
        throw new NotSupportedException("ScatterAdd is not yet on CUDA");
}

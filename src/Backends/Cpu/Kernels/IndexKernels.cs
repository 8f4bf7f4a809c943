namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Gather(Storage x, Layout xLayout, Storage index, Layout indexLayout, Storage y, int outer, int size, int count, int inner) => throw new NotImplementedException();
    /// <inheritdoc/>
    public void ScatterAdd(Storage dy, Layout dyLayout, Storage index, Layout indexLayout, Storage dx, int outer, int size, int count, int inner) => throw new NotImplementedException();
}

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Reduce(ReduceOp op, Storage x, Layout xLayout, int reducedDims, Storage y, Storage? indices, double argument) => throw new NotImplementedException();
}

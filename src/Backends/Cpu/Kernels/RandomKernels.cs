namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Random(Storage y, ulong seed, ulong offset, bool normal, double a, double b) => throw new NotImplementedException();
}

namespace Engine.Backends.Cpu.Gemm;

/// <summary>The GEMM's per-thread packing buffer (a <see cref="ThreadScratch{TUse}"/> of its own).</summary>
internal sealed unsafe class GemmBuffer
{
    GemmBuffer() { }

    /// <summary>The calling thread's packing buffer of at least <paramref name="bytes"/> bytes.</summary>
    public static byte* Get(nuint bytes) => ThreadScratch<GemmBuffer>.Get(bytes);
}

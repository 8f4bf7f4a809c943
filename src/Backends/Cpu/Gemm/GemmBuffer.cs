using System.Runtime.InteropServices;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// A per-thread, 64-byte aligned native scratch buffer for GEMM packing. It only grows, so steady-state calls
/// allocate nothing; the memory is released when the owning thread dies and the holder is finalized.
/// </summary>
internal sealed unsafe class GemmBuffer
{
    [ThreadStatic] private static GemmBuffer? t_current;

    private byte* _ptr;
    private nuint _bytes;

    private GemmBuffer() { }

    /// <summary>The calling thread's buffer, at least <paramref name="bytes"/> long (contents unspecified).</summary>
    public static byte* Get(nuint bytes)
    {
        var holder = t_current ??= new GemmBuffer();
        if (holder._bytes < bytes)
        {
            if (holder._ptr != null) NativeMemory.AlignedFree(holder._ptr);
            holder._ptr = null;
            holder._bytes = 0;
            nuint size = (bytes + 4095) & ~(nuint)4095;
            holder._ptr = (byte*)NativeMemory.AlignedAlloc(size, 64);
            holder._bytes = size;
        }
        return holder._ptr;
    }

    ~GemmBuffer()
    {
        if (_ptr != null) NativeMemory.AlignedFree(_ptr);
    }
}

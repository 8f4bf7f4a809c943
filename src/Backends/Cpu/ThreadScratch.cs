using System.Runtime.InteropServices;

namespace Engine.Backends.Cpu;

/// <summary>
/// A per-thread, 64-byte aligned native scratch buffer. It only grows, so steady-state calls allocate nothing; the
/// memory is released when the owning thread dies and its holder is finalized. One buffer per <typeparamref name="TUse"/>
/// (a marker type for each user: the GEMM's packing, the attention tiles), so a kernel that calls another kernel
/// never has its scratch overwritten by the callee's.
/// </summary>
/// <typeparam name="TUse">The user's marker type; each closed type has its own thread-static buffer.</typeparam>
internal sealed unsafe class ThreadScratch<TUse>
{
    [ThreadStatic] static ThreadScratch<TUse>? t_current;

    byte* _ptr;
    nuint _bytes;

    ThreadScratch() { }

    /// <summary>The calling thread's buffer of at least <paramref name="bytes"/> bytes (contents unspecified).</summary>
    public static byte* Get(nuint bytes)
    {
        var holder = t_current ??= new ThreadScratch<TUse>();
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

    ~ThreadScratch()
    {
        if (_ptr != null) NativeMemory.AlignedFree(_ptr);
    }
}

using ILGPU;

namespace Engine.Backends.Cuda;

/// <summary>
/// Drops what compiling leaves in an ILGPU context. A context keeps the IR of every method it compiled, for reuse by
/// later compiles: the whole kernel registry leaves about 4 GB, which every later full GC of the process walks (a test
/// process that settles the GC, as the leak tests do, then spends minutes in it). Clearing after every compile would
/// make each compile re-import the shared helpers (2.6× the compile time), so the caches are cleared once the heap is
/// past <see cref="HeapBudget"/> and at least <see cref="MinCompiles"/> compiles have reused them since the last
/// clear. Loaded kernels do not need the IR; only later compiles are slower for it.
/// </summary>
static class IrCacheTrim
{
    /// <summary>The managed heap size past which the caches are cleared.</summary>
    public const long HeapBudget = 512L << 20;

    /// <summary>Compiles between two clears, at least.</summary>
    public const int MinCompiles = 16;

    static int s_since;

    /// <summary>Called after each compile in <paramref name="context"/>, under the caller's compile lock.</summary>
    public static void AfterCompile(Context context)
    {
        if (Interlocked.Increment(ref s_since) < MinCompiles || GC.GetTotalMemory(forceFullCollection: false) <= HeapBudget) return;
        Interlocked.Exchange(ref s_since, 0);
        context.ClearCache(ClearCacheMode.Everything);
    }
}

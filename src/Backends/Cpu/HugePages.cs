using System.Runtime.InteropServices;

namespace Engine.Backends.Cpu;

/// <summary>
/// Transparent huge pages for large CPU buffers (Linux). A 64 MB tensor spans 16 384 pages of 4 KB, more than the
/// second-level TLB holds (2 048 entries on Zen 3), so a streaming kernel over such tensors misses the TLB every 64
/// cache lines of each stream; with 2 MB pages it spans 32 entries. Buffers of at least <see cref="Size"/> are aligned to it and advised
/// <c>MADV_HUGEPAGE</c>, which is what the kernel's default THP mode ("madvise") waits for; in mode "always" the advice
/// is redundant, in "never" it is ignored. Measured on the 2-core Zen 3 machine (benchmarks/RESULTS.md, 2026-12-04):
/// 2–5 % on a 16M-element in-place add, and the float32 GPT step 433/471 → 394/438 ms in alternated runs (noisy).
/// <c>ENGINE_CPU_THP=0</c> turns it off (PyTorch's <c>C10_THP_MEM_ALLOC_ENABLE</c> turns its own on); results never
/// depend on it.
/// </summary>
internal static unsafe partial class HugePages
{
    /// <summary>The huge page size of x86-64 and arm64 Linux kernels' THP.</summary>
    public const long Size = 2L << 20;

    /// <summary>Whether buffers of at least <see cref="Size"/> get huge pages: Linux, unless <c>ENGINE_CPU_THP=0</c>.</summary>
    public static bool Enabled { get; } = OperatingSystem.IsLinux()
        && Gemm.Bf16GemmSelection.ParseSwitch(Environment.GetEnvironmentVariable("ENGINE_CPU_THP")) != false;

    /// <summary>
    /// The alignment for a buffer of <paramref name="bytes"/>: <see cref="Size"/> for huge-page buffers, else 64 (AVX-512).
    /// </summary>
    public static nuint AlignmentFor(long bytes) => Enabled && bytes >= Size ? (nuint)Size : 64;

    /// <summary>
    /// Advises the whole 2 MB pages of a buffer aligned by <see cref="AlignmentFor"/> as huge-page candidates. Advice
    /// only: a refusal (an old kernel, THP compiled out) leaves ordinary pages, so the result is not checked.
    /// </summary>
    public static void Advise(void* buffer, long bytes)
    {
        if (!Enabled || bytes < Size) return;
        _ = Madvise(buffer, (nuint)(bytes / Size * Size), MadvHugePage);
    }

    const int MadvHugePage = 14; // MADV_HUGEPAGE, the same on every Linux architecture

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* addr, nuint length, int advice);
}

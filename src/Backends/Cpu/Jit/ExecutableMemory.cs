using System.Runtime.InteropServices;

namespace Engine.Backends.Cpu.Jit;

/// <summary>
/// Machine code in memory the OS lets us execute, mapped W^X: the pages are writable while the code is copied in
/// and then switched to read + execute, never both at once (what hardened kernels and SELinux's execmem rules allow,
/// and what Xbyak does in its protect mode). Linux x86-64 only; elsewhere <see cref="TryCreate"/> reports why not.
/// </summary>
internal sealed unsafe partial class ExecutableMemory : IDisposable
{
    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4;
    private const int MapPrivate = 0x02, MapAnonymous = 0x20;

    private byte* _ptr;
    private readonly nuint _size;

    private ExecutableMemory(byte* ptr, nuint size)
    {
        _ptr = ptr;
        _size = size;
    }

    /// <summary>The start of the code (page-aligned).</summary>
    public byte* Pointer => _ptr != null ? _ptr : throw new ObjectDisposedException(nameof(ExecutableMemory));

    /// <summary>
    /// Maps fresh pages, copies <paramref name="code"/> in and makes them read + execute; null with
    /// <paramref name="error"/> set when the OS is not Linux x86-64 or refuses (mmap/mprotect fail, e.g. under a
    /// policy that forbids executable anonymous memory).
    /// </summary>
    public static ExecutableMemory? TryCreate(ReadOnlySpan<byte> code, out string? error)
    {
        error = null;
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            error = $"run-time code generation is implemented for Linux x86-64 only (this is {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture})";
            return null;
        }
        nuint size = ((nuint)code.Length + 4095) & ~(nuint)4095;
        if (size == 0) size = 4096;
        void* p = Mmap(null, size, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
        if (p == (void*)-1)
        {
            error = $"mmap of {size} bytes failed (errno {Marshal.GetLastPInvokeError()})";
            return null;
        }
        code.CopyTo(new Span<byte>(p, code.Length));
        // x86 keeps instruction fetch coherent with stores, so no cache flush is needed before executing.
        if (Mprotect(p, size, ProtRead | ProtExec) != 0)
        {
            error = $"mprotect(PROT_READ|PROT_EXEC) failed (errno {Marshal.GetLastPInvokeError()})";
            _ = Munmap(p, size);
            return null;
        }
        return new ExecutableMemory((byte*)p, size);
    }

    /// <summary>Unmaps the code; calling into it afterwards faults.</summary>
    public void Dispose()
    {
        if (_ptr == null) return;
        _ = Munmap(_ptr, _size);
        _ptr = null;
        GC.SuppressFinalize(this);
    }

    ~ExecutableMemory()
    {
        if (_ptr != null) _ = Munmap(_ptr, _size);
    }

    // "libc" resolves to the C library on glibc and musl (the runtime probes libc.so.6 among its names).
    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial void* Mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static partial int Mprotect(void* addr, nuint length, int prot);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(void* addr, nuint length);
}

using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Engine.Cli.Training;

/// <summary>
/// An exclusive lock on one file, held until <see cref="Dispose"/> and dropped by the kernel when the process dies
/// (SIGKILL included), so a killed run never blocks its own resume. The file holds the holder's PID for the message a
/// refused opener prints.
/// </summary>
/// <remarks>
/// On Linux and macOS this is <c>flock(LOCK_EX | LOCK_NB)</c> on a descriptor opened through libc, not through
/// FileStream. FileStream does flock too, but only as best effort: DOTNET_SYSTEM_IO_DISABLEFILELOCKING turns it off,
/// it is skipped for shared writers on NFS/CIFS, and because it locks every FileStream (LOCK_SH when sharing), a
/// refused process could not even open the file to read the PID (File.ReadAllText throws "being used by another
/// process"). Our descriptor is invisible to .NET's locking, and a refused opener reads the PID through its own
/// descriptor with pread, which flock does not block. flock belongs to the open file description, so a second open in
/// the same process is refused as well; O_CLOEXEC keeps a child process from inheriting the lock and outliving us.
/// Elsewhere (Windows) the lock is a FileShare.None handle: exclusive, released by the OS at exit, PID not readable.
/// </remarks>
sealed class FileLock : IDisposable
{
    readonly SafeFileHandle _handle;

    FileLock(string path, SafeFileHandle handle) { Path = path; _handle = handle; }

    public string Path { get; }

    /// <summary>
    /// Takes the lock without waiting, or returns null when another descriptor holds it; then <paramref name="holderPid"/>
    /// is the PID the holder wrote, or null when it cannot be read.
    /// </summary>
    public static FileLock? TryAcquire(string path, out int? holderPid)
    {
        holderPid = null;
        if (!Posix.Available) return TryAcquireShareNone(path);

        CreateIfMissing(path);
        var handle = Posix.Open(path, Posix.ReadWrite);
        if (Posix.flock(handle, Posix.LockExclusive | Posix.LockNonBlocking) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            try
            {
                if (errno != Posix.WouldBlock)
                    throw new IOException($"{path}: flock failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno}); does this file system support locks?");
                holderPid = ReadPid(handle);
                return null;
            }
            finally { handle.Dispose(); }
        }
        try { WritePid(handle); }
        catch { handle.Dispose(); throw; }
        return new FileLock(path, handle);
    }

    // Emptied before unlocking so that a PID read later is the live holder's, never a finished run's; a killed run
    // leaves its PID behind, which only matters if the next holder is refused before it writes its own.
    public void Dispose()
    {
        if (_handle.IsClosed) return;
        try { RandomAccess.SetLength(_handle, 0); } catch (IOException) { }
        _handle.Dispose();
    }

    static FileLock? TryAcquireShareNone(string path)
    {
        SafeFileHandle handle;
        // 0x80070020 is ERROR_SHARING_VIOLATION; other Unix systems report EWOULDBLOCK as a plain IOException.
        try { handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException e) when (e.HResult == unchecked((int)0x80070020) || (!OperatingSystem.IsWindows() && e.GetType() == typeof(IOException))) { return null; }
        try { WritePid(handle); }
        catch { handle.Dispose(); throw; }
        return new FileLock(path, handle);
    }

    // File.Open briefly locks the new file itself, which can only refuse a rival that is starting at the same moment
    // (one of the two must lose anyway); libc's open would need the variadic mode argument to create, which is not safe
    // to call through P/Invoke on every ABI (Apple arm64 passes variadic arguments on the stack).
    static void CreateIfMissing(string path)
    {
        if (File.Exists(path)) return;
        try { using (File.Open(path, FileMode.CreateNew, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete)) { } }
        catch (IOException) when (File.Exists(path)) { }
    }

    static void WritePid(SafeFileHandle handle)
    {
        RandomAccess.SetLength(handle, 0);
        RandomAccess.Write(handle, Encoding.ASCII.GetBytes(Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n"), 0);
    }

    static int? ReadPid(SafeFileHandle handle)
    {
        Span<byte> buf = stackalloc byte[32];
        int n = RandomAccess.Read(handle, buf, 0);
        return int.TryParse(Encoding.ASCII.GetString(buf[..n]).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ? pid : null;
    }
}

/// <summary>
/// The few libc calls .NET does not expose: flock on a descriptor of our own, and fsync of a directory (File.OpenHandle
/// refuses directories with UnauthorizedAccessException, so a rename cannot otherwise be made durable).
/// </summary>
static partial class Posix
{
    public static bool Available => OperatingSystem.IsLinux() || OperatingSystem.IsMacOS();

    const int ReadOnly = 0;
    public const int ReadWrite = 2;
    public const int LockExclusive = 2, LockNonBlocking = 4;
    static int CloseOnExec => OperatingSystem.IsMacOS() ? 0x1000000 : 0x80000;
    public static int WouldBlock => OperatingSystem.IsMacOS() ? 35 : 11;
    const int InvalidArgument = 22;

    // The CoreCLR loader maps "libc" to the C library's real file (libc.so.6 on glibc), so no -dev package is needed.
    // Only the two-argument form of the variadic open is called: without O_CREAT there is no mode to pass.
    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenNative(string path, int flags);

    // A SafeHandle travels as a pointer-sized value; on the LP64 ABIs we run on, the callee's int is its low 32 bits.
    [LibraryImport("libc", SetLastError = true)]
    public static partial int flock(SafeHandle fd, int operation);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(SafeHandle fd);

    [LibraryImport("libc", EntryPoint = "rename", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int RenameNative(string from, string to);

    /// <summary>
    /// rename(2): atomically replaces <paramref name="to"/>, whatever either is (File.Move refuses a symbolic link to a
    /// directory as its source).
    /// </summary>
    public static void Rename(string from, string to)
    {
        if (RenameNative(from, to) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"cannot rename {from} to {to}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }
    }

    public static SafeFileHandle Open(string path, int flags)
    {
        int fd = OpenNative(path, flags | CloseOnExec);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"{path}: cannot open: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>
    /// Makes the entries of a directory (files created, renamed or deleted in it) durable. A no-op where there is no
    /// libc (Windows: NTFS journals its metadata, and a directory cannot be flushed without backup privileges), and on
    /// file systems whose fsync rejects directories (EINVAL). On macOS fsync orders the writes but does not flush the
    /// drive's cache (that takes F_FULLFSYNC); a crash still leaves the old or the new state, a power cut may lose both.
    /// </summary>
    public static void FlushDirectory(string dir)
    {
        if (!Available) return;
        using var handle = Open(dir, ReadOnly);
        if (fsync(handle) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno != InvalidArgument) throw new IOException($"{dir}: fsync failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }
    }
}

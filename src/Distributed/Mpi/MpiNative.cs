using System.Reflection;
using System.Runtime.InteropServices;

namespace Engine.Distributed.Mpi;

/// <summary>
/// P/Invoke bindings to Open MPI's C library, <c>libmpi.so.40</c> (ABI of Open MPI 4 and 5). Open MPI's handles are
/// pointers: <c>MPI_COMM_WORLD</c> is the address of the global <c>ompi_mpi_comm_world</c>, <c>MPI_FLOAT</c> of
/// <c>ompi_mpi_float</c>, <c>MPI_SUM</c> of <c>ompi_mpi_op_sum</c>; the addresses come from the loaded library's
/// exports. MPICH's ABI (integer handles) is a different binding and is not supported.
/// </summary>
internal static unsafe partial class MpiNative
{
    const string Lib = "engine-mpi";

    public const int Success = 0;
    public const int ThreadSerialized = 2;          // MPI_THREAD_SERIALIZED in Open MPI's mpi.h
    public static readonly IntPtr InPlace = 1;      // MPI_IN_PLACE is ((void *) 1)

    static IntPtr s_handle;
    static string? s_path;
    static readonly Lock s_loadLock = new();

    /// <summary>The library file that was loaded, or null before <see cref="Load"/>.</summary>
    public static string? LoadedPath => s_path;

    /// <summary>
    /// Loads libmpi with RTLD_GLOBAL (Open MPI's plugins, opened by MPI_Init, resolve their symbols against it; a
    /// local load breaks them in some builds) and points the bindings at it. <c>ENGINE_MPI_LIB</c> overrides the name.
    /// </summary>
    public static void Load()
    {
        lock (s_loadLock)
        {
            if (s_handle != 0) return;
            var candidates = Environment.GetEnvironmentVariable("ENGINE_MPI_LIB") is { Length: > 0 } env
                ? [env]
                : new[] { "libmpi.so.40", "libmpi.so" };
            string? errors = null;
            foreach (var name in candidates)
            {
                var h = DlOpen(name, RtldNow | RtldGlobal);
                if (h != 0) { s_handle = h; s_path = name; break; }
                errors += $"{name}: {Marshal.PtrToStringUTF8(DlError()) ?? "not found"}; ";
            }
            if (s_handle == 0)
                throw new DistributedException("ProcessGroup", $"cannot load Open MPI's library ({errors?.TrimEnd(' ', ';')}); install openmpi-bin and libopenmpi-dev (scripts/ci-deps.sh) or set ENGINE_MPI_LIB");
            NativeLibrary.SetDllImportResolver(typeof(MpiNative).Assembly, Resolve);
        }
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) => name == Lib ? s_handle : 0;

    /// <summary>The address of a predefined handle (<c>ompi_mpi_comm_world</c>, <c>ompi_mpi_float</c>, ...).</summary>
    public static IntPtr Symbol(string name)
    {
        Load();
        if (!NativeLibrary.TryGetExport(s_handle, name, out var p))
            throw new DistributedException("ProcessGroup", $"{s_path} has no symbol {name}: not Open MPI's ABI (MPICH and others are not supported)");
        return p;
    }

    const int RtldNow = 2, RtldGlobal = 0x100;
    [LibraryImport("libc", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr DlOpen(string file, int mode);
    [LibraryImport("libc", EntryPoint = "dlerror")]
    private static partial IntPtr DlError();

    [LibraryImport(Lib, EntryPoint = "MPI_Initialized")] public static partial int Initialized(out int flag);
    [LibraryImport(Lib, EntryPoint = "MPI_Finalized")] public static partial int Finalized(out int flag);
    [LibraryImport(Lib, EntryPoint = "MPI_Init_thread")] public static partial int InitThread(IntPtr argc, IntPtr argv, int required, out int provided);
    [LibraryImport(Lib, EntryPoint = "MPI_Finalize")] public static partial int Finalize();
    [LibraryImport(Lib, EntryPoint = "MPI_Abort")] public static partial int Abort(IntPtr comm, int code);
    [LibraryImport(Lib, EntryPoint = "MPI_Comm_rank")] public static partial int CommRank(IntPtr comm, out int rank);
    [LibraryImport(Lib, EntryPoint = "MPI_Comm_size")] public static partial int CommSize(IntPtr comm, out int size);
    [LibraryImport(Lib, EntryPoint = "MPI_Comm_set_errhandler")] public static partial int CommSetErrhandler(IntPtr comm, IntPtr handler);
    [LibraryImport(Lib, EntryPoint = "MPI_Error_string")] public static partial int ErrorString(int code, byte* text, out int length);
    [LibraryImport(Lib, EntryPoint = "MPI_Iallreduce")]
    public static partial int Iallreduce(IntPtr send, IntPtr recv, int count, IntPtr type, IntPtr op, IntPtr comm, out IntPtr request);
    [LibraryImport(Lib, EntryPoint = "MPI_Ibcast")]
    public static partial int Ibcast(IntPtr buffer, int count, IntPtr type, int root, IntPtr comm, out IntPtr request);
    [LibraryImport(Lib, EntryPoint = "MPI_Iallgather")]
    public static partial int Iallgather(IntPtr send, int sendCount, IntPtr sendType, IntPtr recv, int recvCount, IntPtr recvType, IntPtr comm, out IntPtr request);
    [LibraryImport(Lib, EntryPoint = "MPI_Ireduce_scatter_block")]
    public static partial int IreduceScatterBlock(IntPtr send, IntPtr recv, int recvCount, IntPtr type, IntPtr op, IntPtr comm, out IntPtr request);
    [LibraryImport(Lib, EntryPoint = "MPI_Ibarrier")] public static partial int Ibarrier(IntPtr comm, out IntPtr request);
    [LibraryImport(Lib, EntryPoint = "MPI_Bcast")] public static partial int Bcast(IntPtr buffer, int count, IntPtr type, int root, IntPtr comm);
    // MPI_STATUS_IGNORE is NULL in Open MPI.
    [LibraryImport(Lib, EntryPoint = "MPI_Test")] public static partial int Test(ref IntPtr request, out int flag, IntPtr status);

    /// <summary>Open MPI's text for an error code.</summary>
    public static string Describe(int code)
    {
        var buf = stackalloc byte[512];                 // MPI_MAX_ERROR_STRING is 256
        if (ErrorString(code, buf, out int len) != Success) return $"MPI error {code}";
        return $"{Marshal.PtrToStringUTF8((IntPtr)buf, Math.Clamp(len, 0, 511))} (MPI error {code})";
    }
}

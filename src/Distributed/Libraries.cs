using Engine.Distributed.Mpi;
using Engine.Distributed.Nccl;

namespace Engine.Distributed;

/// <summary>What <c>engine info</c> reports: whether this machine's MPI and NCCL libraries load, from where, or why not.</summary>
public static class Libraries
{
    /// <summary>Open MPI's library as loaded (<c>ENGINE_MPI_LIB</c>, else <c>libmpi.so.40</c>), or why it does not load.</summary>
    public static (bool Found, string Description) Mpi()
    {
        try
        {
            MpiNative.Load();
            _ = MpiNative.Symbol("ompi_mpi_comm_world");   // Open MPI's ABI, not another MPI's
            return (true, MpiNative.LoadedPath!);
        }
        catch (DistributedException e) { return (false, e.Message); }
    }

    /// <summary>NCCL's library (<see cref="NcclLibrary.Candidates"/>), or why it does not load; loading it needs no GPU.</summary>
    public static (bool Found, string Description) Nccl()
    {
        try
        {
            var (handle, path) = NcclLibrary.Load();
            System.Runtime.InteropServices.NativeLibrary.Free(handle);
            return (true, path);
        }
        catch (DistributedException e) { return (false, e.Message); }
    }
}

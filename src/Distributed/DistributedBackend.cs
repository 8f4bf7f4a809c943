namespace Engine.Distributed;

/// <summary>The communication library under a <see cref="ProcessGroup"/>.</summary>
public enum DistributedBackend
{
    /// <summary>Open MPI (<c>libmpi.so.40</c>): tensors on the CPU.</summary>
    Mpi,
    /// <summary>NVIDIA's NCCL (<c>libnccl.so.2</c>): tensors on the rank's CUDA device, on its stream.</summary>
    Nccl,
}

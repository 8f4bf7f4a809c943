namespace Engine.Distributed;

/// <summary>
/// Where this process sits in a job, read from the variables its launcher sets: Open MPI's <c>mpirun</c>
/// (<c>OMPI_COMM_WORLD_RANK</c>, <c>OMPI_COMM_WORLD_SIZE</c>, <c>OMPI_COMM_WORLD_LOCAL_RANK</c>), PMIx
/// (<c>PMIX_RANK</c>, used by <c>srun --mpi=pmix</c>), PMI-1/2 (<c>PMI_RANK</c>, <c>PMI_SIZE</c>, Slurm and MPICH),
/// Slurm itself (<c>SLURM_PROCID</c>, <c>SLURM_NTASKS</c>, <c>SLURM_LOCALID</c>) and <c>torchrun</c>'s
/// (<c>RANK</c>, <c>WORLD_SIZE</c>, <c>LOCAL_RANK</c>), in that order; without any of them, a single process (rank 0 of 1).
/// </summary>
/// <param name="Rank">This process's rank, 0 to <paramref name="WorldSize"/> - 1.</param>
/// <param name="WorldSize">The number of processes.</param>
/// <param name="LocalRank">The rank among the processes on this machine (which GPU to use).</param>
/// <param name="Source">The launcher the values came from ("mpirun", "pmix", "pmi", "slurm", "torchrun", "none").</param>
public sealed record LaunchEnvironment(int Rank, int WorldSize, int LocalRank, string Source)
{
    /// <summary>True when some launcher started this process as one of several (or as a rank of a job of one).</summary>
    public bool IsLaunched => Source != "none";

    /// <summary>Reads the current process's environment.</summary>
    public static LaunchEnvironment FromEnvironment() => From(Environment.GetEnvironmentVariable);

    /// <summary>Reads the variables through <paramref name="get"/> (a test passes a dictionary).</summary>
    public static LaunchEnvironment From(Func<string, string?> get)
    {
        (string Source, string Rank, string? Size, string? Local)[] schemes =
        [
            ("mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
            ("pmix", "PMIX_RANK", null, null),
            ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
            ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
            ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
        ];
        foreach (var (source, rankVar, sizeVar, localVar) in schemes)
        {
            if (get(rankVar) is not { Length: > 0 } rankText) continue;
            int rank = Parse(rankVar, rankText, 0);
            // PMIx has no size variable of its own: mpirun and srun set one of the others beside it.
            string? sizeText = sizeVar is null ? null : get(sizeVar);
            sizeText ??= get("OMPI_COMM_WORLD_SIZE") ?? get("PMI_SIZE") ?? get("SLURM_NTASKS") ?? get("WORLD_SIZE");
            if (sizeText is null)
                throw new DistributedException("ProcessGroup", $"{rankVar}={rankText} is set but no world size is (expected {sizeVar ?? "OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_NTASKS or WORLD_SIZE"})");
            int size = Parse(sizeVar ?? "world size", sizeText, 1);
            if (rank >= size) throw new DistributedException("ProcessGroup", $"{rankVar}={rank} is not below the world size {size}");
            string? localText = localVar is null ? get("OMPI_COMM_WORLD_LOCAL_RANK") ?? get("SLURM_LOCALID") ?? get("LOCAL_RANK") : get(localVar);
            int local = localText is { Length: > 0 } ? Parse(localVar ?? "local rank", localText, 0) : rank;
            return new LaunchEnvironment(rank, size, local, source);
        }
        return new LaunchEnvironment(0, 1, 0, "none");
    }

    static int Parse(string name, string text, int min) =>
        int.TryParse(text, System.Globalization.NumberStyles.None, null, out int v) && v >= min
            ? v
            : throw new DistributedException("ProcessGroup", $"{name}='{text}' is not an integer of at least {min}");
}

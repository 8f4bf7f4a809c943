using Engine.Distributed.Mpi;
using Engine.Distributed.Nccl;

namespace Engine.Distributed;

/// <summary>
/// The processes of one training job and the collectives among them (as <c>torch.distributed</c>'s default group).
/// Collectives are called by every rank in the same order; each returns a <see cref="Work"/> to wait on and works in
/// place on its tensors. <see cref="DistributedBackend.Mpi"/> takes CPU tensors, <see cref="DistributedBackend.Nccl"/>
/// CUDA tensors on the rank's device. Dtypes: float32, float64, int64 (and int32) natively; float16 and bfloat16 move
/// as their 16-bit patterns in broadcast and all-gather, and are reduced in float32 by MPI (converted, reduced,
/// rounded once on the way back) and natively by NCCL; bool (a mask buffer) is broadcast and gathered as bytes, never
/// reduced.
/// </summary>
public abstract class ProcessGroup : IDisposable
{
    long _sequence;

    /// <summary>The watchdog timeout of every wait when none is given: 60 s.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Describes a group; the derived class has connected it.</summary>
    protected ProcessGroup(DistributedBackend backend, int rank, int worldSize, int localRank, TimeSpan timeout)
    {
        if (timeout <= TimeSpan.Zero) throw new DistributedException("ProcessGroup", $"the timeout must be positive, got {timeout}");
        Backend = backend; Rank = rank; WorldSize = worldSize; LocalRank = localRank; Timeout = timeout;
    }

    /// <summary>The library underneath.</summary>
    public DistributedBackend Backend { get; }

    /// <summary>This process's rank (0 to <see cref="WorldSize"/> - 1).</summary>
    public int Rank { get; }

    /// <summary>The number of processes.</summary>
    public int WorldSize { get; }

    /// <summary>The rank among the processes on this machine: NCCL uses CUDA device <c>LocalRank</c>.</summary>
    public int LocalRank { get; }

    /// <summary>How long <see cref="Work.Wait()"/> waits before it fails naming the ranks (the watchdog).</summary>
    public TimeSpan Timeout { get; set; }

    /// <summary>The device this group's collectives take tensors on.</summary>
    public abstract Device Device { get; }

    internal long NextSequence() => Interlocked.Increment(ref _sequence) - 1;

    /// <summary>
    /// Joins the job this process was launched into (<see cref="LaunchEnvironment"/>). MPI: initializes Open MPI
    /// (once per process). NCCL: the unique id goes from rank 0 to the others over MPI when the job was started by
    /// <c>mpirun</c>, else over the TCP rendezvous at <c>MASTER_ADDR</c>:<c>MASTER_PORT</c> (as torchrun's).
    /// <c>ENGINE_DIST_TIMEOUT</c> (seconds) overrides the default timeout.
    /// </summary>
    public static ProcessGroup Create(DistributedBackend backend = DistributedBackend.Mpi, TimeSpan? timeout = null)
    {
        var t = timeout ?? TimeoutFromEnvironment();
        return backend switch
        {
            DistributedBackend.Mpi => MpiProcessGroup.Create(t),
            DistributedBackend.Nccl => NcclProcessGroup.Create(LaunchEnvironment.FromEnvironment(), t),
            _ => throw new DistributedException("ProcessGroup", $"unknown backend {backend}"),
        };
    }

    static TimeSpan TimeoutFromEnvironment()
    {
        var text = Environment.GetEnvironmentVariable("ENGINE_DIST_TIMEOUT");
        if (string.IsNullOrEmpty(text)) return DefaultTimeout;
        return double.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out var s) && s > 0
            ? TimeSpan.FromSeconds(s)
            : throw new DistributedException("ProcessGroup", $"ENGINE_DIST_TIMEOUT='{text}' is not a positive number of seconds");
    }

    /// <summary>Combines <paramref name="tensor"/> across ranks in place: every rank ends with the result.</summary>
    public abstract Work AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum);

    /// <summary>Copies <paramref name="tensor"/> of rank <paramref name="root"/> into every rank's tensor.</summary>
    public abstract Work Broadcast(Tensor tensor, int root = 0);

    /// <summary>
    /// Gathers every rank's <paramref name="input"/> into <paramref name="output"/>, rank by rank along the first
    /// dim (as <c>all_gather_into_tensor</c>): output has <see cref="WorldSize"/> times input's elements.
    /// </summary>
    public abstract Work AllGather(Tensor output, Tensor input);

    /// <summary>
    /// Reduces <paramref name="input"/> across ranks and leaves rank r the r-th of <see cref="WorldSize"/> equal
    /// slices in <paramref name="output"/> (as <c>reduce_scatter_tensor</c>).
    /// </summary>
    public abstract Work ReduceScatter(Tensor output, Tensor input, ReduceOp op = ReduceOp.Sum);

    /// <summary>Completes once every rank has called it.</summary>
    public abstract Work Barrier();

    /// <summary>
    /// Ends the whole job at once (MPI_Abort / ncclCommAbort and exit) with <paramref name="exitCode"/>: what a rank
    /// does after a <see cref="DistributedException"/> so no peer waits for it.
    /// </summary>
    public abstract void Abort(int exitCode = DistributedException.ExitCode);

    /// <summary>
    /// The AMP gradient scaler's found-inf flag made the same on every rank (the maximum), so every rank skips the
    /// same steps. Gradients that <see cref="DistributedDataParallel"/> has averaged already agree (an inf anywhere is
    /// an inf everywhere); this is for flags computed from per-rank data (sharded gradients, a local check). In place;
    /// waits.
    /// </summary>
    public void ReduceFoundInf(Tensor foundInf) => AllReduce(foundInf, ReduceOp.Max).Wait();

    /// <summary>Releases the library's resources (MPI is finalized when the process exits).</summary>
    public abstract void Dispose();

    /// <summary>Checks a tensor for a collective: live, on this group's device, of a dtype it moves.</summary>
    protected void Check(string op, Tensor t, string role = "tensor")
    {
        if (t.IsDisposed) throw new DisposedTensorException(op);
        if (t.Device != Device)
            throw new DeviceMismatchException(op, $"the {role} is on {t.Device}; the {Backend} process group of rank {Rank} takes tensors on {Device}");
        if (t.Numel > int.MaxValue)
            throw new ShapeException(op, $"the {role} has {t.Numel} elements; one collective moves at most {int.MaxValue} (split it)");
    }

    /// <summary>Checks a reduction against a dtype: bool is not reduced, an average needs a floating dtype.</summary>
    protected static void CheckOp(string op, ReduceOp reduce, DType dtype)
    {
        if (dtype == DType.Bool)
            throw new DTypeException(op, $"a bool tensor cannot be reduced (broadcast and all-gather move it); reductions take float32, float64, float16, bfloat16, int32 or int64");
        if (reduce == ReduceOp.Average && !dtype.IsFloatingPoint())
            throw new DTypeException(op, $"ReduceOp.Average needs a floating dtype, got {dtype.Name()} (use Sum and divide)");
    }

    /// <summary>The description of a tensor in messages.</summary>
    protected static string Describe(Tensor t) => $"{t.DType.Name()} {Shape.Format(t.Layout.Shape)}";
}

using Engine.Backends.Cpu;
using Engine.Graph;

namespace Engine.Distributed.Mpi;

/// <summary>
/// A process group over Open MPI's <c>MPI_COMM_WORLD</c>, for CPU tensors. Collectives are MPI's non-blocking ones
/// (<c>MPI_Iallreduce</c>, <c>MPI_Ibcast</c>, <c>MPI_Iallgather</c>, <c>MPI_Ireduce_scatter_block</c>,
/// <c>MPI_Ibarrier</c>) completed by <c>MPI_Test</c> under the watchdog. The error handler is
/// <c>MPI_ERRORS_RETURN</c>, so a failure is an exception with MPI's text instead of an abort inside the library.
/// MPI runs at <c>MPI_THREAD_SERIALIZED</c>: every call takes one lock. Open MPI progresses a non-blocking
/// collective only inside MPI calls, which <see cref="Work.IsCompleted"/> and <see cref="Work.Wait()"/> make.
/// </summary>
internal sealed unsafe class MpiProcessGroup : ProcessGroup
{
    internal static readonly Lock Gate = new();
    static MpiProcessGroup? s_world;
    static bool s_weInitialized;

    /// <summary>The thread level MPI_Init_thread granted (2 = MPI_THREAD_SERIALIZED, 3 = MULTIPLE), or -1.</summary>
    internal static int ThreadLevel { get; private set; } = -1;

    readonly IntPtr _comm;
    readonly IntPtr _opSum, _opMax;

    MpiProcessGroup(IntPtr comm, int rank, int size, int localRank, TimeSpan timeout)
        : base(DistributedBackend.Mpi, rank, size, localRank, timeout)
    {
        _comm = comm;
        _opSum = MpiNative.Symbol("ompi_mpi_op_sum");
        _opMax = MpiNative.Symbol("ompi_mpi_op_max");
    }

    public override Device Device => Device.Cpu;

    /// <summary>Initializes MPI once per process (or joins an MPI someone else initialized) and returns the world group.</summary>
    internal static MpiProcessGroup Create(TimeSpan timeout)
    {
        lock (Gate)
        {
            if (s_world is { } w) { w.Timeout = timeout; return w; }
            MpiNative.Load();
            Ok("MPI_Finalized", MpiNative.Finalized(out int finalized), -1);
            if (finalized != 0) throw new DistributedException("ProcessGroup", "MPI has been finalized in this process and cannot be initialized again");
            Ok("MPI_Initialized", MpiNative.Initialized(out int initialized), -1);
            if (initialized == 0)
            {
                Ok("MPI_Init_thread", MpiNative.InitThread(0, 0, MpiNative.ThreadSerialized, out int provided), -1);
                s_weInitialized = true;
                // Open MPI 4 grants SERIALIZED or more; with less, the lock still serializes calls but they must also
                // come from the thread that initialized MPI (collectives are then to be called from one thread).
                ThreadLevel = provided;
                // Finalize at exit so mpirun sees a clean end; a rank that exits without it is reported as failed.
                AppDomain.CurrentDomain.ProcessExit += (_, _) => FinalizeAtExit();
            }
            var comm = MpiNative.Symbol("ompi_mpi_comm_world");
            Ok("MPI_Comm_set_errhandler", MpiNative.CommSetErrhandler(comm, MpiNative.Symbol("ompi_mpi_errors_return")), -1);
            Ok("MPI_Comm_rank", MpiNative.CommRank(comm, out int rank), -1);
            Ok("MPI_Comm_size", MpiNative.CommSize(comm, out int size), rank);
            var env = LaunchEnvironment.FromEnvironment();
            if (env.IsLaunched && (env.Rank != rank || env.WorldSize != size))
                throw new DistributedException("ProcessGroup", $"the launcher ({env.Source}) says rank {env.Rank} of {env.WorldSize}, MPI says rank {rank} of {size}");
            return s_world = new MpiProcessGroup(comm, rank, size, env.IsLaunched ? env.LocalRank : 0, timeout);
        }
    }

    static void FinalizeAtExit()
    {
        lock (Gate)
        {
            if (!s_weInitialized) return;
            s_weInitialized = false;
            if (MpiNative.Finalized(out int f) == MpiNative.Success && f == 0) MpiNative.Finalize();
        }
    }

    internal static void Ok(string call, int code, int rank)
    {
        if (code == MpiNative.Success) return;
        string who = rank >= 0 ? $"rank {rank}: " : "";
        throw new DistributedException(call, $"{who}{MpiNative.Describe(code)}");
    }

    IntPtr DataType(DType d) => MpiNative.Symbol(d switch
    {
        DType.Float32 => "ompi_mpi_float",
        DType.Float64 => "ompi_mpi_double",
        DType.Int64 => "ompi_mpi_int64_t",
        DType.Int32 => "ompi_mpi_int32_t",
        DType.Float16 or DType.BFloat16 => "ompi_mpi_uint16_t",     // moved as bit patterns, never reduced by MPI
        DType.Bool => "ompi_mpi_uint8_t",                           // moved as bytes (a mask buffer), never reduced
        _ => throw new DTypeException("ProcessGroup", $"no MPI datatype for {d.Name()}"),
    });

    IntPtr OpHandle(ReduceOp op) => op == ReduceOp.Max ? _opMax : _opSum;

    // The dtype MPI reduces a dtype in: 16-bit floats in float32 (MPI has no such types; converting once each way is
    // also more accurate than a chain of 16-bit roundings).
    static DType ReduceDType(DType d) => d is DType.Float16 or DType.BFloat16 ? DType.Float32 : d;

    public override Work AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        Check("AllReduce", tensor);
        CheckOp("AllReduce", op, tensor.DType);
        var buf = MpiBuffer.Prepare(tensor, ReduceDType(tensor.DType), write: true, read: true);
        double divide = op == ReduceOp.Average ? WorldSize : 1;
        return Post("AllReduce", Describe(tensor), [buf], divide, (out IntPtr req) =>
            MpiNative.Iallreduce(MpiNative.InPlace, buf.Pointer, (int)tensor.Numel, DataType(buf.Handle.DType), OpHandle(op), _comm, out req));
    }

    public override Work Broadcast(Tensor tensor, int root = 0)
    {
        Check("Broadcast", tensor);
        CheckRoot("Broadcast", root);
        var buf = MpiBuffer.Prepare(tensor, tensor.DType, write: Rank != root, read: Rank == root);
        return Post("Broadcast", Describe(tensor), [buf], 1, (out IntPtr req) =>
            MpiNative.Ibcast(buf.Pointer, (int)tensor.Numel, DataType(tensor.DType), root, _comm, out req));
    }

    public override Work AllGather(Tensor output, Tensor input)
    {
        Check("AllGather", input, "input");
        Check("AllGather", output, "output");
        CheckPair("AllGather", output, input, output.Numel == input.Numel * WorldSize, "output must have world size times the input's elements");
        var send = MpiBuffer.Prepare(input, input.DType, write: false, read: true);
        var recv = MpiBuffer.Prepare(output, output.DType, write: true, read: false);
        var type = DataType(input.DType);
        return Post("AllGather", Describe(input), [send, recv], 1, (out IntPtr req) =>
            MpiNative.Iallgather(send.Pointer, (int)input.Numel, type, recv.Pointer, (int)input.Numel, type, _comm, out req));
    }

    public override Work ReduceScatter(Tensor output, Tensor input, ReduceOp op = ReduceOp.Sum)
    {
        Check("ReduceScatter", input, "input");
        Check("ReduceScatter", output, "output");
        CheckPair("ReduceScatter", output, input, input.Numel == output.Numel * WorldSize, "input must have world size times the output's elements");
        CheckOp("ReduceScatter", op, input.DType);
        var wire = ReduceDType(input.DType);
        var send = MpiBuffer.Prepare(input, wire, write: false, read: true);
        var recv = MpiBuffer.Prepare(output, wire, write: true, read: false);
        double divide = op == ReduceOp.Average ? WorldSize : 1;
        return Post("ReduceScatter", Describe(input), [send, recv], divide, (out IntPtr req) =>
            MpiNative.IreduceScatterBlock(send.Pointer, recv.Pointer, (int)output.Numel, DataType(wire), OpHandle(op), _comm, out req));
    }

    public override Work Barrier() => Post("Barrier", "no data", [], 1, (out IntPtr req) => MpiNative.Ibarrier(_comm, out req));

    public override void Abort(int exitCode = DistributedException.ExitCode)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        lock (Gate) MpiNative.Abort(_comm, exitCode);
        Environment.Exit(exitCode);   // MPI_Abort does not return in Open MPI; this is the fallback
    }

    public override void Dispose() { }   // MPI_COMM_WORLD lives as long as the process; finalized at exit

    void CheckRoot(string op, int root)
    {
        if (root < 0 || root >= WorldSize) throw new DistributedException(op, $"root {root} is not a rank of a group of {WorldSize}");
    }

    static void CheckPair(string op, Tensor output, Tensor input, bool sizesOk, string rule)
    {
        if (output.DType != input.DType)
            throw new DTypeException(op, $"output is {output.DType.Name()}, input {input.DType.Name()}: they must match");
        if (!sizesOk)
            throw new ShapeException(op, $"{rule}: output {Shape.Format(output.Layout.Shape)}, input {Shape.Format(input.Layout.Shape)}");
    }

    delegate int PostCall(out IntPtr request);

    Work Post(string op, string what, MpiBuffer[] buffers, double divide, PostCall call)
    {
        int code;
        IntPtr request;
        lock (Gate) code = call(out request);
        if (code != MpiNative.Success)
        {
            foreach (var b in buffers) b.Release();
            Ok(op, code, Rank);
        }
        return new MpiWork(this, op, what, request, buffers, divide);
    }

    sealed class MpiWork(MpiProcessGroup group, string op, string what, IntPtr request, MpiBuffer[] buffers, double divide)
        : Work(group, op, what)
    {
        IntPtr _request = request;

        protected override bool Poll()
        {
            int code, flag;
            lock (Gate) code = MpiNative.Test(ref _request, out flag, 0);
            if (code != MpiNative.Success)
            {
                foreach (var b in buffers) b.Release();
                throw new DistributedException(Op, $"rank {group.Rank} of {group.WorldSize}: collective #{Sequence} ({Op} of {Description}) failed: {MpiNative.Describe(code)}");
            }
            return flag != 0;
        }

        protected override void Finish()
        {
            foreach (var b in buffers) b.Complete(divide);
        }
    }
}

/// <summary>
/// What MPI reads or writes for one tensor: the tensor's own memory when it is a contiguous CPU tensor of the wire
/// dtype, else a contiguous staging copy in the wire dtype that is copied back (converted, rounded once) on completion.
/// Holds a storage reference that no dispose scope owns, so the memory outlives the caller's scopes until then.
/// </summary>
internal sealed unsafe class MpiBuffer
{
    Tensor? _handle;
    readonly Tensor? _writeBack;
    readonly bool _write;

    MpiBuffer(Tensor handle, Tensor? writeBack, bool write) { _handle = handle; _writeBack = writeBack; _write = write; }

    public Tensor Handle => _handle ?? throw new DisposedTensorException("MpiBuffer");

    public IntPtr Pointer
    {
        get
        {
            var h = Handle;
            var s = h.Storage as CpuStorage ?? throw new DeviceMismatchException("ProcessGroup", $"MPI needs CPU memory, got storage on {h.Device}");
            return (IntPtr)(s.Pointer + h.Layout.Offset * h.DType.ElementSize());
        }
    }

    public static MpiBuffer Prepare(Tensor t, DType wire, bool write, bool read)
    {
        using var _ = GradMode.NoGrad();
        if (t.DType == wire && t.IsContiguous) return new MpiBuffer(t.Detach().DetachFromScopes(), null, write);
        Tensor staged = !read ? Tensor.Empty(t.Layout.Shape, wire, t.Device)
            : t.DType == wire ? t.Contiguous() : t.To(wire);
        if (ReferenceEquals(staged, t)) staged = t.Detach();
        return new MpiBuffer(staged.DetachFromScopes(), write ? t : null, write);
    }

    public void Complete(double divide)
    {
        var h = _handle;
        if (h is null) return;
        try
        {
            if (!_write) return;
            using var _ = GradMode.NoGrad();
            if (divide != 1) h.DivInPlace(divide);
            if (_writeBack is not null) _writeBack.CopyInPlace(h);
            else h.Storage.BumpVersion();
        }
        finally { Release(); }
    }

    public void Release() => Interlocked.Exchange(ref _handle, null)?.Dispose();
}

using System.Runtime.InteropServices;
using Engine.Backends;
using Engine.Backends.Cuda;
using Engine.Distributed.Mpi;
using Engine.Graph;
using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Engine.Distributed.Nccl;

/// <summary>
/// A process group over NCCL for CUDA tensors on device <c>cuda:LocalRank</c>. Collectives run on the group's own
/// communication stream, ordered with the backend's compute stream by events (<see cref="CommStream"/>, as
/// <c>ProcessGroupNCCL</c>): a collective starts once the kernels queued before it have run, the kernels queued after
/// it (the rest of backward) run concurrently, and <see cref="Work.Wait()"/> makes the compute stream wait for it on
/// the device, so the host never synchronizes. <c>ENGINE_NCCL_BLOCKING_WAIT=1</c> (as <c>TORCH_NCCL_BLOCKING_WAIT</c>)
/// makes <c>Wait()</c> block the host instead, under the timeout; <see cref="Barrier"/> always does.
/// <para>
/// Failure: since waits do not block the host, a watchdog thread polls every collective in flight and
/// <c>ncclCommGetAsyncError</c>; a collective older than the timeout or an NCCL error prints the rank and the
/// collective, aborts the communicator (<c>ncclCommAbort</c>, which also releases the kernels of a hung collective)
/// and exits with <see cref="DistributedException.ExitCode"/> (as <c>TORCH_NCCL_ASYNC_ERROR_HANDLING</c>). A host
/// wait (blocking mode, <see cref="Work.IsCompleted"/>) throws instead.
/// </para>
/// The unique id goes from rank 0 over MPI when the job was launched by <c>mpirun</c>, else over
/// <see cref="TcpRendezvous"/>. Float16 and bfloat16 are reduced by NCCL natively; average is <c>ncclAvg</c>.
/// </summary>
internal sealed unsafe class NcclProcessGroup : ProcessGroup
{
    [StructLayout(LayoutKind.Sequential, Size = 128)]
    struct UniqueId { public fixed byte Bytes[128]; }

    // ncclResult_t ncclXxx(...): function pointers from the library that NcclLibrary found.
    readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> _allReduce;
    readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> _broadcast;
    readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, IntPtr, IntPtr, int> _allGather;
    readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> _reduceScatter;
    readonly delegate* unmanaged<IntPtr, int*, int> _asyncError;
    readonly delegate* unmanaged<IntPtr, int> _abort;
    readonly delegate* unmanaged<IntPtr, int> _destroy;
    readonly delegate* unmanaged<int, IntPtr> _errorString;
    readonly IntPtr _comm;
    readonly CudaBackend _backend;
    readonly Device _device;
    readonly CommStream _streams;
    readonly CudaStreamDriver _cudaStreams;
    readonly Watchdog _watchdog;
    IntPtr _barrierScratch;
    Tensor? _barrier;
    volatile bool _disposed;

    NcclProcessGroup(IntPtr lib, LaunchEnvironment env, TimeSpan timeout, ProcessGroup? mpi) : base(DistributedBackend.Nccl, env.Rank, env.WorldSize, env.LocalRank, timeout)
    {
        _device = Device.Cuda(env.LocalRank);
        _backend = BackendRegistry.Get(_device) as CudaBackend ?? throw new DeviceUnavailableException("ProcessGroup", $"NCCL needs the CUDA backend for {_device}");
        if (_backend.IsEmulated) throw new DeviceUnavailableException("ProcessGroup", $"{_device} is ILGPU's CPU emulator, not a GPU: NCCL needs a real one");
        _allReduce = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Export(lib, "ncclAllReduce");
        _broadcast = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Export(lib, "ncclBroadcast");
        _allGather = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, IntPtr, IntPtr, int>)Export(lib, "ncclAllGather");
        _reduceScatter = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Export(lib, "ncclReduceScatter");
        _asyncError = (delegate* unmanaged<IntPtr, int*, int>)Export(lib, "ncclCommGetAsyncError");
        _abort = (delegate* unmanaged<IntPtr, int>)Export(lib, "ncclCommAbort");
        _destroy = (delegate* unmanaged<IntPtr, int>)Export(lib, "ncclCommDestroy");
        _errorString = (delegate* unmanaged<int, IntPtr>)Export(lib, "ncclGetErrorString");
        var getId = (delegate* unmanaged<UniqueId*, int>)Export(lib, "ncclGetUniqueId");
        var init = (delegate* unmanaged<IntPtr*, int, UniqueId, int, int>)Export(lib, "ncclCommInitRank");

        UniqueId id;
        if (Rank == 0) Ok("ncclGetUniqueId", getId(&id));
        var bytes = new Span<byte>(id.Bytes, 128);
        if (mpi is not null)
        {
            // Over MPI: a blocking broadcast of the 128 bytes from rank 0.
            var t = Tensor.FromArray(bytes.ToArray());
            try
            {
                mpi.Broadcast(t, 0).Wait();
                t.ToArray<byte>().CopyTo(bytes);
            }
            finally { t.Dispose(); }
        }
        else if (WorldSize > 1)   // a world of one has its own id already: no rendezvous
        {
            var (addr, port) = TcpRendezvous.FromEnvironment();
            TcpRendezvous.Exchange(addr, port, Rank, WorldSize, Rank == 0 ? bytes.ToArray() : null, timeout).CopyTo(bytes);
        }
        _backend.Accelerator.Bind();
        IntPtr comm;
        Ok("ncclCommInitRank", init(&comm, WorldSize, id, Rank));
        _comm = comm;
        _cudaStreams = new CudaStreamDriver(_backend);
        _streams = new CommStream(_cudaStreams);
        BlockingWait = Environment.GetEnvironmentVariable("ENGINE_NCCL_BLOCKING_WAIT") == "1";
        _watchdog = new Watchdog($"rank {Rank} NCCL watchdog", () => Timeout, WatchdogCheck, WatchdogFailed);
    }

    /// <summary>Whether <see cref="Work.Wait()"/> blocks the host (ENGINE_NCCL_BLOCKING_WAIT=1) rather than the compute stream.</summary>
    internal bool BlockingWait { get; set; }

    /// <summary>The collectives' stream ordering (a test's view of the buffers held).</summary>
    internal CommStream Streams => _streams;

    // The watchdog's poll: an NCCL error, or the oldest collective past the timeout.
    string? WatchdogCheck()
    {
        if (_disposed) return null;
        if (AsyncError() is { } error) return error;
        if (_streams.Overdue(Timeout) is { } late)
        {
            var others = string.Join(", ", Enumerable.Range(0, WorldSize).Where(r => r != Rank));
            return $"rank {Rank} of {WorldSize}: {late.Name} did not complete within {Timeout.TotalSeconds:0.###} s; " +
                   $"rank(s) {others} did not join it (dead, hung, or at another collective)";
        }
        return null;
    }

    // Nothing is waiting on the host to throw to: report, abort the communicator so the device's kernels end, exit.
    void WatchdogFailed(string message)
    {
        Console.Error.WriteLine($"engine: distributed failure: {message}; the NCCL communicator was aborted");
        Abort(DistributedException.ExitCode);
    }

    // ncclCommGetAsyncError: null, or the error's description (the callers abort the communicator).
    string? AsyncError()
    {
        int err = 0;
        _asyncError(_comm, &err);
        if (err == 0 || err == 7) return null;   // 7: ncclInProgress
        return $"rank {Rank} of {WorldSize}: NCCL reported {Marshal.PtrToStringUTF8(_errorString(err))} (ncclResult {err})";
    }

    void ThrowOnAsyncError(string op)
    {
        if (_disposed) throw new DistributedException(op, $"rank {Rank} of {WorldSize}: the NCCL communicator has been aborted or closed");
        if (AsyncError() is not { } error) return;
        AbortCommunicator();
        throw new DistributedException(op, error + "; the communicator was aborted");
    }

    void AbortCommunicator()
    {
        if (_disposed) return;
        _disposed = true;
        _abort(_comm);
    }

    public override Device Device => _device;

    static IntPtr Export(IntPtr lib, string name) => NativeLibrary.TryGetExport(lib, name, out var p)
        ? p : throw new DistributedException("ProcessGroup", $"the NCCL library has no {name} (NCCL 2.10 or later is needed)");

    internal static NcclProcessGroup Create(LaunchEnvironment env, TimeSpan timeout)
    {
        var (lib, _) = NcclLibrary.Load();
        // The unique id travels over MPI when mpirun started us (MPI is then there), else over TCP.
        ProcessGroup? mpi = env.Source == "mpirun" ? MpiProcessGroup.Create(timeout) : null;
        return new NcclProcessGroup(lib, env, timeout, mpi);
    }

    void Ok(string call, int code)
    {
        if (code == 0) return;
        var text = _errorString is null ? null : Marshal.PtrToStringUTF8(_errorString(code));
        throw new DistributedException(call, $"rank {Rank} of {WorldSize}: {text ?? "NCCL error"} (ncclResult {code})");
    }

    static int NcclType(DType d) => d switch
    {
        DType.Bool => 1, DType.Int32 => 2, DType.Int64 => 4, DType.Float16 => 6, DType.Float32 => 7, DType.Float64 => 8, DType.BFloat16 => 9,
        _ => throw new DTypeException("ProcessGroup", $"NCCL has no type for {d.Name()}"),
    };

    static int NcclOp(ReduceOp op) => op switch { ReduceOp.Sum => 0, ReduceOp.Max => 2, ReduceOp.Average => 4, _ => 0 };

    // A contiguous tensor on the device (the tensor itself or a staging copy) and its device address.
    (Tensor Buffer, bool Staged) Prepare(Tensor t, bool read)
    {
        using var _ = GradMode.NoGrad();
        if (t.IsContiguous) return (t.Detach().DetachFromScopes(), false);
        var s = read ? t.Contiguous() : Tensor.Empty(t.Layout.Shape, t.DType, t.Device);
        return (s.DetachFromScopes(), true);
    }

    static IntPtr Address(Tensor t)
    {
        var s = (CudaStorage)t.Storage;
        return s.DevicePointer + (nint)(t.Layout.Offset * t.DType.ElementSize());
    }

    Work Enqueue(string op, string what, Func<IntPtr, int> call, params (Tensor Original, Tensor Buffer, bool Staged, bool Write)[] buffers) =>
        Enqueue(op, what, blocking: false, call, buffers);

    // The buffers go to the comm stream's keeping (alive until the compute stream waits or the collective has run);
    // the work keeps one more reference to each staged output, to copy it back in place once waited for.
    Work Enqueue(string op, string what, bool blocking, Func<IntPtr, int> call, params (Tensor Original, Tensor Buffer, bool Staged, bool Write)[] buffers)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _backend.Accelerator.Bind();
        var writeBacks = buffers.Where(b => b.Staged && b.Write).Select(b => (b.Original, Staged: b.Buffer.Detach().DetachFromScopes())).ToArray();
        var (posted, code) = _streams.Post(op, call, buffers.Select(b => (IDisposable)b.Buffer).ToArray());
        if (posted is null)
        {
            foreach (var w in writeBacks) w.Staged.Dispose();
            Ok(op, code);
        }
        _watchdog.EnsureStarted();
        return new NcclWork(this, op, what, posted!, writeBacks, blocking);
    }

    public override Work AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        Check("AllReduce", tensor);
        CheckOp("AllReduce", op, tensor.DType);
        var (b, staged) = Prepare(tensor, read: true);
        return Enqueue("AllReduce", Describe(tensor), s => _allReduce(Address(b), Address(b), (nuint)b.Numel, NcclType(b.DType), NcclOp(op), _comm, s),
            (tensor, b, staged, true));
    }

    public override Work Broadcast(Tensor tensor, int root = 0)
    {
        Check("Broadcast", tensor);
        if (root < 0 || root >= WorldSize) throw new DistributedException("Broadcast", $"root {root} is not a rank of a group of {WorldSize}");
        var (b, staged) = Prepare(tensor, read: Rank == root);
        return Enqueue("Broadcast", Describe(tensor), s => _broadcast(Address(b), Address(b), (nuint)b.Numel, NcclType(b.DType), root, _comm, s),
            (tensor, b, staged, Rank != root));
    }

    public override Work AllGather(Tensor output, Tensor input)
    {
        Check("AllGather", input, "input");
        Check("AllGather", output, "output");
        if (output.DType != input.DType || output.Numel != input.Numel * WorldSize)
            throw new ShapeException("AllGather", $"output ({Describe(output)}) must be world size times input ({Describe(input)}) of one dtype");
        var (i, si) = Prepare(input, read: true);
        var (o, so) = Prepare(output, read: false);
        return Enqueue("AllGather", Describe(input), s => _allGather(Address(i), Address(o), (nuint)i.Numel, NcclType(i.DType), _comm, s),
            (input, i, si, false), (output, o, so, true));
    }

    public override Work ReduceScatter(Tensor output, Tensor input, ReduceOp op = ReduceOp.Sum)
    {
        Check("ReduceScatter", input, "input");
        Check("ReduceScatter", output, "output");
        CheckOp("ReduceScatter", op, input.DType);
        if (output.DType != input.DType || input.Numel != output.Numel * WorldSize)
            throw new ShapeException("ReduceScatter", $"input ({Describe(input)}) must be world size times output ({Describe(output)}) of one dtype");
        var (i, si) = Prepare(input, read: true);
        var (o, so) = Prepare(output, read: false);
        return Enqueue("ReduceScatter", Describe(input), s => _reduceScatter(Address(i), Address(o), (nuint)o.Numel, NcclType(i.DType), NcclOp(op), _comm, s),
            (input, i, si, false), (output, o, so, true));
    }

    // NCCL has no barrier: a one-element all-reduce, as torch.distributed's NCCL barrier, which blocks the host.
    public override Work Barrier()
    {
        _barrier ??= Tensor.Zeros([1], DType.Float32, _device).DetachFromScopes();
        _barrierScratch = Address(_barrier);
        var scratch = _barrierScratch;
        return Enqueue("Barrier", "no data", blocking: true, s => _allReduce(scratch, scratch, 1, 7, 0, _comm, s));
    }

    public override void Abort(int exitCode = DistributedException.ExitCode)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        AbortCommunicator();
        Environment.Exit(exitCode);
    }

    public override void Dispose()
    {
        if (_disposed) return;
        _watchdog.Dispose();
        // A collective still waiting for a peer past the timeout would block the close for ever: abort it instead
        // (its buffers stay held, as the comm stream may still write them).
        if (!_streams.Drain(Timeout)) { AbortCommunicator(); return; }
        _streams.Dispose();
        _disposed = true;
        _barrier?.Dispose();
        _destroy(_comm);
        _cudaStreams.Dispose();
    }

    sealed class NcclWork : Work
    {
        readonly NcclProcessGroup _group;
        readonly CommStream.Op _op;
        readonly (Tensor Original, Tensor Staged)[] _writeBacks;
        readonly bool _blocking;

        public NcclWork(NcclProcessGroup group, string op, string what, CommStream.Op posted, (Tensor, Tensor)[] writeBacks, bool blocking) : base(group, op, what)
        {
            _group = group; _op = posted; _writeBacks = writeBacks; _blocking = blocking;
            posted.Name = $"collective #{Sequence} ({op} of {what})";
        }

        protected override bool Poll()
        {
            _group.ThrowOnAsyncError(Op);
            return _op.IsComplete;
        }

        protected override bool WaitOnStream()
        {
            if (_blocking || _group.BlockingWait) return false;
            _group.ThrowOnAsyncError(Op);
            _group._streams.WaitOnDevice(_op);
            return true;
        }

        // Staged results go back by a copy on the compute stream, queued after its wait (or after completion).
        protected override void Finish()
        {
            using (GradMode.NoGrad())
                foreach (var (original, staged) in _writeBacks)
                {
                    original.CopyInPlace(staged);
                    staged.Dispose();
                }
        }
    }
}

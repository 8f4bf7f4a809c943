using System.Runtime.InteropServices;
using Engine.Backends;
using Engine.Backends.Cuda;
using Engine.Distributed.Mpi;
using Engine.Graph;
using ILGPU;
using ILGPU.Runtime.Cuda;

namespace Engine.Distributed.Nccl;

/// <summary>
/// A process group over NCCL for CUDA tensors on device <c>cuda:LocalRank</c>. Each collective is enqueued on the
/// device's stream (the one the CUDA backend runs its kernels on), so it is ordered with them and the host never
/// synchronizes; its <see cref="Work"/> records a CUDA event after it and polls the event and
/// <c>ncclCommGetAsyncError</c> under the watchdog, aborting the communicator (<c>ncclCommAbort</c>) when it fails.
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
    IntPtr _barrierScratch;
    Tensor? _barrier;
    bool _disposed;

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

    IntPtr Stream => ((CudaStream)_backend.Accelerator.DefaultStream).StreamPtr;

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

    Work Enqueue(string op, string what, Func<IntPtr, int> call, params (Tensor Original, Tensor Buffer, bool Staged, bool Write)[] buffers)
    {
        _backend.Accelerator.Bind();
        var stream = Stream;
        int code = call(stream);
        if (code != 0)
        {
            foreach (var b in buffers) b.Buffer.Dispose();
            Ok(op, code);
        }
        // Staged results go back by a device copy on the same stream, so it too needs no host synchronization.
        using (GradMode.NoGrad())
            foreach (var b in buffers)
                if (b.Staged && b.Write) b.Original.CopyInPlace(b.Buffer);
        return new NcclWork(this, op, what, CudaEvent.Record(stream), buffers.Select(b => b.Buffer).ToArray());
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

    // NCCL has no barrier: a one-element all-reduce, as torch.distributed's NCCL barrier.
    public override Work Barrier()
    {
        _barrier ??= Tensor.Zeros([1], DType.Float32, _device).DetachFromScopes();
        _barrierScratch = Address(_barrier);
        var scratch = _barrierScratch;
        return Enqueue("Barrier", "no data", s => _allReduce(scratch, scratch, 1, 7, 0, _comm, s));
    }

    public override void Abort(int exitCode = DistributedException.ExitCode)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        if (!_disposed) { _disposed = true; _abort(_comm); }
        Environment.Exit(exitCode);
    }

    public override void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _barrier?.Dispose();
        _destroy(_comm);
    }

    sealed class NcclWork(NcclProcessGroup group, string op, string what, CudaEvent done, Tensor[] held) : Work(group, op, what)
    {
        protected override bool Poll()
        {
            int err = 0;
            group._asyncError(group._comm, &err);
            if (err != 0 && err != 7)   // 7: ncclInProgress
            {
                group._abort(group._comm);
                group._disposed = true;
                throw new DistributedException(Op, $"rank {group.Rank} of {group.WorldSize}: collective #{Sequence} ({Op} of {Description}) failed: {Marshal.PtrToStringUTF8(group._errorString(err))} (ncclResult {err}); the communicator was aborted");
            }
            return done.IsComplete();
        }

        protected override void Finish()
        {
            done.Dispose();
            foreach (var t in held) t.Dispose();
        }
    }
}

/// <summary>A CUDA event recorded on a stream (driver API), polled without blocking.</summary>
internal sealed partial class CudaEvent : IDisposable
{
    IntPtr _event;

    CudaEvent(IntPtr e) { _event = e; }

    const int DisableTiming = 2, NotReady = 600;

    public static CudaEvent Record(IntPtr stream)
    {
        Check("cuEventCreate", EventCreate(out var e, DisableTiming));
        Check("cuEventRecord", EventRecord(e, stream));
        return new CudaEvent(e);
    }

    public bool IsComplete()
    {
        int r = EventQuery(_event);
        if (r == NotReady) return false;
        Check("cuEventQuery", r);
        return true;
    }

    public void Dispose()
    {
        var e = Interlocked.Exchange(ref _event, 0);
        if (e != 0) EventDestroy(e);
    }

    static void Check(string call, int r)
    {
        if (r != 0) throw new DistributedException(call, $"CUDA driver error {r}");
    }

    [LibraryImport("libcuda.so.1", EntryPoint = "cuEventCreate")] private static partial int EventCreate(out IntPtr e, int flags);
    [LibraryImport("libcuda.so.1", EntryPoint = "cuEventRecord")] private static partial int EventRecord(IntPtr e, IntPtr stream);
    [LibraryImport("libcuda.so.1", EntryPoint = "cuEventQuery")] private static partial int EventQuery(IntPtr e);
    [LibraryImport("libcuda.so.1", EntryPoint = "cuEventDestroy_v2")] private static partial int EventDestroy(IntPtr e);
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

[assembly: InternalsVisibleTo("Engine.Tests")]

namespace Engine.Backends.Cuda;

/// <summary>
/// The CUDA backend: the kernels of <see cref="IBackend"/>, the fused capabilities included, as ILGPU kernels on one
/// device, launched asynchronously on the device's default stream; the host waits only in <see cref="CopyToHost{T}"/>,
/// <see cref="CopyFromHost{T}"/> and <see cref="Synchronize"/>. Buffers come from a per-device
/// <see cref="CudaCachingAllocator"/>. Without a GPU, tests (or <c>ENGINE_CUDA_EMULATION=1</c>) run the same kernels
/// on ILGPU's CPU accelerator configured with NVIDIA's 32-lane warps (<see cref="CudaBackendOptions.Emulation"/>).
/// Kernels live in Kernels/ (namespace <c>Engine.Backends.Cuda.Kernels</c>), one file per family; each family's
/// binding to the contract (its launches) is the part CudaBackend.&lt;Family&gt;.cs beside this file. This file holds
/// the device, memory and launch plumbing and counts each launch in <see cref="KernelCounter"/>.
/// </summary>
public sealed partial class CudaBackend : IBackend, IDisposable
{
    // ---- process-wide: the ILGPU context, device discovery, emulation ----

    static readonly Lock s_lock = new();
    static Context? s_context, s_emulatorContext;
    static volatile CudaBackendOptions s_options = CudaBackendOptions.FromEnvironment();
    static long s_hostSynchronizations;

    /// <summary>
    /// The emulator's device: 32-lane warps as NVIDIA's, but two warps per multiprocessor and one multiprocessor.
    /// ILGPU's <c>CPUDevice.Nvidia</c> (1024 threads) runs every thread of a multiprocessor on its own OS thread and
    /// spends 100–500 ms per launch on a 2-core machine; with 64 threads a launch costs a few milliseconds. Kernels
    /// take their group size from the accelerator, so the code paths are the same.
    /// </summary>
    static readonly CPUDevice s_emulatorDevice = new(numThreadsPerWarp: 32, numWarpsPerMultiprocessor: 2, numMultiprocessors: 1);

#pragma warning disable CA2255 // registering a plug-in backend is what module initializers are for
    [ModuleInitializer]
    internal static void Register() => BackendRegistry.Register(DeviceType.Cuda, d => Create(d.Index, Options.Emulation));
#pragma warning restore CA2255

    static Context SharedContext
    {
        get
        {
            lock (s_lock)
            {
                // Algorithms maps Math/MathF calls in kernels (the op structs') to ILGPU's implementations; O2 runs the
                // address-space inference that turns generic loads of kernel parameters into ld.global (and
                // ld.global.v4.f32 on the dense float32 paths).
                return s_context ??= Context.Create(b => Configure(b.Cuda()));
            }
        }
    }

    /// <summary>
    /// The emulator's own context: configured as the GPU's, except that ILGPU inlines conservatively. Inlining every
    /// call (ILGPU's default, what the PTX needs: the GPU's kernels are checked by ptxas for no stack) makes one
    /// function of a tensor-core GEMM's 32 emulated mma calls per k-step, and ILGPU's SSA construction and
    /// if-conversion on that took 27 s per instantiation of the 64×128 tiling on this 2-core machine; with calls left
    /// as calls it takes 2 s. What a kernel computes does not depend on inlining, and the CPU accelerator runs calls as
    /// .NET calls.
    /// </summary>
    static Context EmulatorContext
    {
        get
        {
            lock (s_lock)
                return s_emulatorContext ??= Context.Create(b => Configure(b.CPU(s_emulatorDevice)).Inlining(InliningMode.Conservative));
        }
    }

    // What every context that compiles the backend's kernels is configured with.
    static Context.Builder Configure(Context.Builder b) => b.EnableAlgorithms().Optimize(OptimizationLevel.O2);

    /// <summary>
    /// A new ILGPU context configured as the process's (the same optimization level and intrinsic mappings, so the same
    /// PTX), for tools that compile kernels without a device and want to drop what compiling leaves in the context's
    /// caches (the whole registry leaves gigabytes of IR, which would slow every later full GC of the process).
    /// </summary>
    internal static Context CreateToolsContext() => Context.Create(b => Configure(b.Cuda()));

    /// <summary>Number of CUDA devices ILGPU finds (0 without an NVIDIA driver).</summary>
    public static int RealDeviceCount => SharedContext.GetCudaDevices().Count;

    /// <summary>
    /// The options for the whole process (initially <see cref="CudaBackendOptions.FromEnvironment"/>), read when a
    /// device is first opened.
    /// </summary>
    public static CudaBackendOptions Options
    {
        get => s_options;
        set => s_options = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>
    /// Shorthand for <c>Options = Options with { Emulation = true }</c>: lets the first CUDA device index past the real
    /// devices run on ILGPU's CPU accelerator, what tests call on a machine without a GPU.
    /// </summary>
    public static void EnableEmulation() => Options = Options with { Emulation = true };

    /// <summary>The device served by the emulator once emulation is enabled: the first index past the real devices.</summary>
    public static Device EmulatedDevice => Device.Cuda(RealDeviceCount);

    /// <summary>Times the host has waited for a CUDA device (copies to and from the host, Synchronize, EmptyCache).</summary>
    public static long HostSynchronizations => Interlocked.Read(ref s_hostSynchronizations);

    internal static void CountHostSynchronization() => Interlocked.Increment(ref s_hostSynchronizations);

    /// <summary>
    /// Opens CUDA device <paramref name="index"/>: a real GPU when ILGPU has one at that index, otherwise (when
    /// <paramref name="allowEmulation"/>) the CPU accelerator for the first index past the real ones; otherwise
    /// throws <see cref="DeviceUnavailableException"/> saying what was looked for. The registry calls this once per
    /// device and keeps the backend.
    /// </summary>
    public static CudaBackend Create(int index, bool allowEmulation)
    {
        var ctx = SharedContext;
        var cuda = ctx.GetCudaDevices();
        if (index >= 0 && index < cuda.Count)
            return new CudaBackend(Device.Cuda(index), cuda[index].CreateAccelerator(ctx), emulated: false);
        if (allowEmulation && index == cuda.Count)
            return new CudaBackend(Device.Cuda(index), s_emulatorDevice.CreateCPUAccelerator(EmulatorContext, CPUAcceleratorMode.Parallel), emulated: true);
        string what = allowEmulation
            ? $"the emulator serves cuda:{cuda.Count} only"
            : "set ENGINE_CUDA_EMULATION=1 to run the CUDA kernels on ILGPU's CPU accelerator";
        throw new DeviceUnavailableException("Device",
            $"no CUDA device cuda:{index}: ILGPU found {cuda.Count} CUDA device{(cuda.Count == 1 ? "" : "s")}; {what}");
    }

    // ---- one device ----

    readonly Accelerator _accelerator;
    readonly Dictionary<(string, Type?), Delegate> _kernels = [];
    readonly Lock _kernelLock = new();
    readonly PinnedUploads _uploads;

    CudaBackend(Device device, Accelerator accelerator, bool emulated)
    {
        var options = Options;
        Device = device;
        _accelerator = accelerator;
        IsEmulated = emulated;
        Allocator = new CudaCachingAllocator(accelerator, device.ToString(), Bind);
        _uploads = new PinnedUploads(accelerator);
        GroupSize = Math.Min(options.MaxGroupSize, accelerator.MaxNumThreadsPerGroup);
        // Grid-stride loops over 8 groups of 256 per multiprocessor measured best on the H200 (see shared/gpu/README.md);
        // the emulator gains nothing from more than one group per worker.
        MaxGroups = emulated ? 2 : accelerator.NumMultiprocessors * options.GroupsPerMultiprocessor;
    }

    /// <summary>The device served.</summary>
    public Device Device { get; }

    /// <summary>True when ILGPU's CPU accelerator stands in for the GPU.</summary>
    public bool IsEmulated { get; }

    /// <summary>The ILGPU accelerator (a <see cref="CudaAccelerator"/>, or the emulator's CPU accelerator).</summary>
    public Accelerator Accelerator => _accelerator;

    /// <summary>The device's caching allocator and its statistics.</summary>
    public CudaCachingAllocator Allocator { get; }

    /// <summary>Threads per group of the elementwise and reduction kernels (a power of two).</summary>
    internal int GroupSize { get; }

    /// <summary>The most groups a grid-stride launch uses.</summary>
    internal int MaxGroups { get; }

    /// <inheritdoc/>
    public DeviceType Type => DeviceType.Cuda;

    /// <summary>Releases the accelerator (cached kernels and buffers go with it). Tensors of this device must be gone.</summary>
    public void Dispose()
    {
        Allocator.EmptyCache();
        _uploads.Dispose();
        _accelerator.Dispose();
    }

    static CudaStorage S(Storage s) => s as CudaStorage
        ?? throw new DeviceMismatchException("Cuda", $"expected a CUDA storage, got a {s.Device} storage");

    internal static ArrayView<byte> V(Storage s) => S(s).View;

    /// <inheritdoc/>
    public Storage Allocate(Device device, DType dtype, long count)
    {
        if (device != Device) throw new DeviceMismatchException("Allocate", $"the backend of {Device} cannot allocate on {device}");
        return new CudaStorage(device, dtype, count, Allocator);
    }

    /// <inheritdoc/>
    public void CopyFromHost<T>(ReadOnlySpan<T> source, Storage destination) where T : unmanaged
    {
        var bytes = MemoryMarshal.AsBytes(source);
        if (bytes.Length > destination.ByteLength)
            throw new ShapeException("CopyFromHost", $"{bytes.Length} bytes do not fit a storage of {destination.ByteLength}");
        if (bytes.Length == 0) return;
        Bind();
        var target = V(destination).SubView(0, bytes.Length);
        // Through pinned memory the copy is queued behind the stream's kernels and nothing waits (PinnedUploads.cs).
        if (_uploads.TryUpload(bytes, target, _accelerator.DefaultStream)) return;
        // From pageable memory the copy waits for the stream (as cudaMemcpy does), so it counts as a synchronization.
        target.CopyFromCPU(_accelerator.DefaultStream, bytes);
        Synchronized();
    }

    /// <summary>Host→device copies queued through pinned memory without waiting (see <see cref="PinnedUploads"/>).</summary>
    public long StagedUploads => _uploads.Staged;

    // The host has waited for the stream: counted, and every staged upload queued before it is complete.
    void Synchronized()
    {
        CountHostSynchronization();
        _uploads.StreamSynchronized();
    }

    /// <inheritdoc/>
    public void CopyToHost<T>(Storage source, Span<T> destination) where T : unmanaged
    {
        var bytes = MemoryMarshal.AsBytes(destination);
        long n = Math.Min(bytes.Length, source.ByteLength);
        if (n == 0) return;
        Bind();
        V(source).SubView(0, n).CopyToCPU(_accelerator.DefaultStream, bytes[..(int)n]);
        Synchronized();
        CheckDeviceErrors(); // a bad target or index a kernel reported (Kernels/RowKernels.cs)
    }

    /// <inheritdoc/>
    public void Synchronize()
    {
        Bind();
        _accelerator.DefaultStream.Synchronize();
        Synchronized();
        CheckDeviceErrors(); // a bad target or index a kernel reported (Kernels/RowKernels.cs)
    }

    // ---- kernel loading and launch shapes ----

    /// <summary>
    /// The launcher of a kernel, loaded (compiled) once per accelerator and cached under its name and the op type it
    /// is specialized for.
    /// </summary>
    internal TDelegate Kernel<TDelegate>(string name, Type? specialization, Func<Accelerator, TDelegate> load) where TDelegate : Delegate
    {
        Bind();
        lock (_kernelLock)
        {
            if (_kernels.TryGetValue((name, specialization), out var d)) return (TDelegate)d;
            var k = load(_accelerator);
            _kernels[(name, specialization)] = k;
            IrCacheTrim.AfterCompile(_accelerator.Context);
            return k;
        }
    }

    /// <summary>Number of kernels compiled so far on this device.</summary>
    public int CompiledKernels
    {
        get { lock (_kernelLock) return _kernels.Count; }
    }

    /// <summary>A grid-stride launch shape for <paramref name="work"/> items (at least one group).</summary>
    internal KernelConfig Grid(long work) =>
        new((int)Math.Clamp((work + GroupSize - 1) / GroupSize, 1, MaxGroups), GroupSize);

    /// <summary>One group of one thread, for the scalar bookkeeping kernels.</summary>
    internal static KernelConfig Single => new(1, 1);

    [ThreadStatic] static Accelerator? t_bound;

    /// <summary>Makes the device's context current on this thread (CUDA contexts are per thread); cheap when it already is.</summary>
    internal void Bind()
    {
        if (ReferenceEquals(t_bound, _accelerator)) return;
        _accelerator.Bind();
        t_bound = _accelerator;
    }

    // ---- the families bound in CudaBackend.<Family>.cs, counted ----
    // Explicit implementations, so that every call through IBackend counts one launch while the binding files keep
    // their public entry points unchanged. A fused kernel counts once however many device launches it makes.

    void IBackend.Copy(Storage x, Layout xLayout, Storage y, Layout yLayout)
    { KernelCounter.Record(nameof(IBackend.Copy)); Copy(x, xLayout, y, yLayout); }

    void IBackend.Fill(Storage y, Layout yLayout, double value)
    { KernelCounter.Record(nameof(IBackend.Fill)); Fill(y, yLayout, value); }

    void IBackend.Unary<TOp>(TOp op, Storage x, Layout xLayout, Storage y, Layout yLayout)
    { KernelCounter.Record(nameof(IBackend.Unary)); Unary(op, x, xLayout, y, yLayout); }

    void IBackend.Binary<TOp>(TOp op, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout)
    { KernelCounter.Record(nameof(IBackend.Binary)); Binary(op, a, aLayout, b, bLayout, y, yLayout); }

    void IBackend.Where(Storage cond, Layout condLayout, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout)
    { KernelCounter.Record(nameof(IBackend.Where)); Where(cond, condLayout, a, aLayout, b, bLayout, y, yLayout); }

    void IBackend.Reduce(ReduceOp op, Storage x, Layout xLayout, int reducedDims, Storage y, Storage? indices, double argument)
    { KernelCounter.Record(nameof(IBackend.Reduce)); Reduce(op, x, xLayout, reducedDims, y, indices, argument); }

    void IBackend.MatMul(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k)
    { KernelCounter.Record(nameof(IBackend.MatMul)); MatMul(a, aLayout, b, bLayout, y, batch, m, n, k); }

    void IBackend.Gather(Storage x, Layout xLayout, Storage index, Layout indexLayout, Storage y, int outer, int size, int count, int inner)
    { KernelCounter.Record(nameof(IBackend.Gather)); Gather(x, xLayout, index, indexLayout, y, outer, size, count, inner); }

    void IBackend.ScatterAdd(Storage dy, Layout dyLayout, Storage index, Layout indexLayout, Storage dx, int outer, int size, int count, int inner)
    { KernelCounter.Record(nameof(IBackend.ScatterAdd)); ScatterAdd(dy, dyLayout, index, indexLayout, dx, outer, size, count, inner); }

    void IBackend.Random(Storage y, ulong seed, ulong offset, bool normal, double a, double b)
    { KernelCounter.Record(nameof(IBackend.Random)); Random(y, seed, offset, normal, a, b); }

    void IBackend.Softmax(Storage x, Storage y, int rows, int cols, bool log)
    { KernelCounter.Record(nameof(IBackend.Softmax)); Softmax(x, y, rows, cols, log); }

    void IBackend.SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int cols, bool log)
    { KernelCounter.Record(nameof(IBackend.SoftmaxBackward)); SoftmaxBackward(y, dy, dx, rows, cols, log); }

    void IBackend.LayerNorm(Storage x, Storage? residual, Storage? weight, Storage? bias, Storage? sum, Storage y, Storage mean, Storage rstd, int rows, int cols, double eps, bool rms)
    { KernelCounter.Record(nameof(IBackend.LayerNorm)); LayerNorm(x, residual, weight, bias, sum, y, mean, rstd, rows, cols, eps, rms); }

    void IBackend.LayerNormBackward(Storage x, Storage? weight, Storage mean, Storage rstd, Storage dy, Storage? dxAdd, Storage dx, Storage? dWeight, Storage? dBias, int rows, int cols, bool rms)
    { KernelCounter.Record(nameof(IBackend.LayerNormBackward)); LayerNormBackward(x, weight, mean, rstd, dy, dxAdd, dx, dWeight, dBias, rows, cols, rms); }

    void IBackend.CrossEntropy(Storage logits, Storage targets, Storage loss, int rows, int cols, long ignoreIndex, double labelSmoothing)
    { KernelCounter.Record(nameof(IBackend.CrossEntropy)); CrossEntropy(logits, targets, loss, rows, cols, ignoreIndex, labelSmoothing); }

    void IBackend.CrossEntropyBackward(Storage logits, Storage targets, Storage dloss, Storage dlogits, int rows, int cols, long ignoreIndex, double labelSmoothing)
    { KernelCounter.Record(nameof(IBackend.CrossEntropyBackward)); CrossEntropyBackward(logits, targets, dloss, dlogits, rows, cols, ignoreIndex, labelSmoothing); }

    void IBackend.AdamStep(Storage param, Storage grad, Storage expAvg, Storage expAvgSq, Storage step, AdamConfig config, Storage? invScale, Storage? foundInf)
    { KernelCounter.Record(nameof(IBackend.AdamStep)); AdamStep(param, grad, expAvg, expAvgSq, step, config, invScale, foundInf); }

    void IBackend.SgdStep(Storage param, Storage grad, Storage? momentum, bool momentumInitialized, SgdConfig config, Storage? invScale, Storage? foundInf)
    { KernelCounter.Record(nameof(IBackend.SgdStep)); SgdStep(param, grad, momentum, momentumInitialized, config, invScale, foundInf); }

    void IBackend.NonFiniteCheckAndUnscale(IReadOnlyList<Storage> grads, Storage foundInf, Storage invScale)
    { KernelCounter.Record(nameof(IBackend.NonFiniteCheckAndUnscale)); NonFiniteCheckAndUnscale(grads, foundInf, invScale); }

    void IBackend.UpdateScale(Storage scale, Storage growthTracker, Storage foundInf, double growthFactor, double backoffFactor, int growthInterval)
    { KernelCounter.Record(nameof(IBackend.UpdateScale)); UpdateScale(scale, growthTracker, foundInf, growthFactor, backoffFactor, growthInterval); }

    void IBackend.ForeachAdamStep(IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage> expAvg, IReadOnlyList<Storage> expAvgSq, IReadOnlyList<Storage> step, AdamConfig config, Storage? invScale, Storage? foundInf)
    { KernelCounter.Record(nameof(IBackend.ForeachAdamStep)); ForeachAdamStep(param, grad, expAvg, expAvgSq, step, config, invScale, foundInf); }

    void IBackend.ForeachSgdStep(IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage>? momentum, bool momentumInitialized, SgdConfig config, Storage? invScale, Storage? foundInf)
    { KernelCounter.Record(nameof(IBackend.ForeachSgdStep)); ForeachSgdStep(param, grad, momentum, momentumInitialized, config, invScale, foundInf); }

    void IBackend.ForeachNorm(IReadOnlyList<Storage> xs, double ord, Storage norms, int offset)
    { KernelCounter.Record(nameof(IBackend.ForeachNorm)); ForeachNorm(xs, ord, norms, offset); }

    void IBackend.ForeachMul(IReadOnlyList<Storage> xs, Storage scalar)
    { KernelCounter.Record(nameof(IBackend.ForeachMul)); ForeachMul(xs, scalar); }

    void IBackend.ForeachCopy(IReadOnlyList<Storage> xs, IReadOnlyList<Storage> ys)
    { KernelCounter.Record(nameof(IBackend.ForeachCopy)); ForeachCopy(xs, ys); }

    void IBackend.ScaledDotProductAttention(AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse, AttentionShape shape)
    { KernelCounter.Record(nameof(IBackend.ScaledDotProductAttention)); ScaledDotProductAttention(q, k, v, mask, o, lse, shape); }

    void IBackend.ScaledDotProductAttentionBackward(AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse,
        AttentionOperand dO, AttentionOperand dq, AttentionOperand dk, AttentionOperand dv, AttentionShape shape)
    { KernelCounter.Record(nameof(IBackend.ScaledDotProductAttentionBackward)); ScaledDotProductAttentionBackward(q, k, v, mask, o, lse, dO, dq, dk, dv, shape); }

    void IBackend.Linear(Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? bias, Storage y, Storage? pre, int m, int n, int k, Activation activation)
    { KernelCounter.Record(nameof(IBackend.Linear)); Linear(x, xLayout, w, wLayout, bias, y, pre, m, n, k, activation); }

    void IBackend.LinearBackward(Storage dy, Storage? saved, Storage? dz, Storage? dBias, int m, int n, Activation activation)
    { KernelCounter.Record(nameof(IBackend.LinearBackward)); LinearBackward(dy, saved, dz, dBias, m, n, activation); }

    void IBackend.LinearGradients(Storage dz, Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? dx, Storage? dw, int m, int n, int k)
    { KernelCounter.Record(nameof(IBackend.LinearGradients)); LinearGradients(dz, x, xLayout, w, wLayout, dx, dw, m, n, k); }
}

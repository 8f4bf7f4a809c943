using System.Runtime.CompilerServices;
using Engine.Backends.Cpu.Kernels;
using Engine.Ops;

namespace Engine.Backends.Cpu;

/// <summary>
/// The reference backend: every kernel of <see cref="IBackend"/> on host memory, any strides, every dtype, the fused
/// capabilities included. Kernels live in Kernels/ (namespace <c>Engine.Backends.Cpu.Kernels</c>), one file per family;
/// each family's binding to the contract, with its one dtype switch, is the part CpuBackend.&lt;Family&gt;.cs beside
/// this file, and this file counts each launch in <see cref="KernelCounter"/>. Threads and the bf16 GEMM path
/// are chosen by <see cref="Options"/> (<see cref="CpuBackendOptions"/>).
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    /// <summary>The process-wide instance.</summary>
    public static CpuBackend Instance { get; } = new();

#pragma warning disable CA2255 // registering a plug-in backend is what module initializers are for
    [ModuleInitializer]
    internal static void Register() => BackendRegistry.Register(DeviceType.Cpu, _ => Instance);
#pragma warning restore CA2255

    /// <inheritdoc/>
    public DeviceType Type => DeviceType.Cpu;

    // ---- options: process-wide defaults, scoped overrides ----

    static volatile CpuBackendOptions s_defaultOptions = CpuBackendOptions.FromEnvironment();
    static readonly AsyncLocal<CpuBackendOptions?> s_scopedOptions = new();

    /// <summary>
    /// The options for the whole process (initially <see cref="CpuBackendOptions.FromEnvironment"/>); set it to change
    /// them everywhere no <see cref="UseOptions"/> scope overrides them, e.g.
    /// <c>CpuBackend.DefaultOptions = CpuBackend.DefaultOptions with { Threads = 4 }</c>.
    /// </summary>
    public static CpuBackendOptions DefaultOptions
    {
        get => s_defaultOptions;
        set => s_defaultOptions = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>The options in effect here: the innermost <see cref="UseOptions"/> scope's, else <see cref="DefaultOptions"/>.</summary>
    public static CpuBackendOptions Options => s_scopedOptions.Value ?? s_defaultOptions;

    /// <summary>
    /// Puts <paramref name="options"/> in effect for this code and the tasks it starts until the returned scope is
    /// disposed (scopes nest and flow with async code, like the no-grad scope), e.g.
    /// <c>using (CpuBackend.UseOptions(CpuBackend.Options with { Threads = 1 })) { ... }</c>. Other threads keep theirs.
    /// </summary>
    public static IDisposable UseOptions(CpuBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var previous = s_scopedOptions.Value;
        s_scopedOptions.Value = options;
        return new OptionsScope(previous);
    }

    sealed class OptionsScope(CpuBackendOptions? previous) : IDisposable
    {
        bool _disposed;
        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            s_scopedOptions.Value = previous;
        }
    }

    /// <inheritdoc/>
    public Storage Allocate(Device device, DType dtype, long count)
    {
        if (device.Type != DeviceType.Cpu) throw new DeviceMismatchException("Allocate", $"the CPU backend cannot allocate on {device}");
        return new CpuStorage(device, dtype, count);
    }

    internal static nint P(Storage s) => (nint)((CpuStorage)s).Pointer;

    /// <inheritdoc/>
    public void CopyFromHost<T>(ReadOnlySpan<T> source, Storage destination) where T : unmanaged
    {
        long bytes = (long)source.Length * sizeof(T);
        if (bytes > destination.ByteLength) throw new ShapeException("CopyFromHost", $"{bytes} bytes do not fit a storage of {destination.ByteLength}");
        fixed (T* p = source) Buffer.MemoryCopy(p, (void*)P(destination), bytes, bytes);
    }

    /// <inheritdoc/>
    public void CopyToHost<T>(Storage source, Span<T> destination) where T : unmanaged
    {
        long bytes = Math.Min((long)destination.Length * sizeof(T), source.ByteLength);
        fixed (T* p = destination) Buffer.MemoryCopy((void*)P(source), p, bytes, bytes);
    }

    /// <inheritdoc/>
    public void CopyFromHost<T>(ReadOnlySpan<T> source, Storage destination, long destinationByteOffset) where T : unmanaged
    {
        long bytes = (long)source.Length * sizeof(T);
        if (destinationByteOffset < 0 || bytes > destination.ByteLength - destinationByteOffset)
            throw new ShapeException("CopyFromHost", $"bytes [{destinationByteOffset}, {destinationByteOffset + bytes}) are outside a storage of {destination.ByteLength}");
        fixed (T* p = source) Buffer.MemoryCopy(p, (byte*)P(destination) + destinationByteOffset, bytes, bytes);
    }

    /// <inheritdoc/>
    public void CopyToHost<T>(Storage source, long sourceByteOffset, Span<T> destination) where T : unmanaged
    {
        long bytes = (long)destination.Length * sizeof(T);
        if (sourceByteOffset < 0 || bytes > source.ByteLength - sourceByteOffset)
            throw new ShapeException("CopyToHost", $"bytes [{sourceByteOffset}, {sourceByteOffset + bytes}) are outside a storage of {source.ByteLength}");
        fixed (T* p = destination) Buffer.MemoryCopy((byte*)P(source) + sourceByteOffset, p, bytes, bytes);
    }

    /// <inheritdoc/>
    public void Synchronize() { }

    /// <inheritdoc/>
    public void Copy(Storage x, Layout xLayout, Storage y, Layout yLayout)
    {
        KernelCounter.Record(nameof(IBackend.Copy));
        CopyUncounted(x, xLayout, y, yLayout);
    }

    // The copy itself, for kernels that convert inside one launch (the float16 GEMM's widening): not a launch of its own.
    internal void CopyUncounted(Storage x, Layout xLayout, Storage y, Layout yLayout)
    {
        var v = new CopyOuter { X = P(x), XL = xLayout, Y = P(y), YL = yLayout, YType = y.DType };
        DTypeDispatch.Visit(x.DType, ref v);
    }

    struct CopyOuter : IDTypeVisitor
    {
        public nint X, Y; public Layout XL, YL; public DType YType;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            var inner = new CopyInner<T, TE> { X = X, XL = XL, Y = Y, YL = YL };
            DTypeDispatch.Visit(YType, ref inner);
        }
    }

    struct CopyInner<TX, TEX> : IDTypeVisitor where TX : unmanaged where TEX : struct, IElement<TX>
    {
        public nint X, Y; public Layout XL, YL;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> =>
            ElementwiseKernels.Copy<TX, TEX, T, TE>(X, XL, Y, YL);
    }

    /// <inheritdoc/>
    public void Fill(Storage y, Layout yLayout, double value)
    {
        KernelCounter.Record(nameof(IBackend.Fill));
        var v = new FillVisitor { Y = P(y), YL = yLayout, Value = value };
        DTypeDispatch.Visit(y.DType, ref v);
    }

    struct FillVisitor : IDTypeVisitor
    {
        public nint Y; public Layout YL; public double Value;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> => ElementwiseKernels.Fill<T, TE>(Y, YL, Value);
    }

    /// <inheritdoc/>
    public void Unary<TOp>(TOp op, Storage x, Layout xLayout, Storage y, Layout yLayout) where TOp : struct, IUnaryOp
    {
        KernelCounter.Record(nameof(IBackend.Unary));
        var v = new UnaryVisitor<TOp> { Op = op, X = P(x), XL = xLayout, Y = P(y), YL = yLayout };
        DTypeDispatch.Visit(x.DType, ref v);
    }

    struct UnaryVisitor<TOp> : IDTypeVisitor where TOp : struct, IUnaryOp
    {
        public TOp Op; public nint X, Y; public Layout XL, YL;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> => ElementwiseKernels.Unary<T, TE, TOp>(Op, X, XL, Y, YL);
    }

    /// <inheritdoc/>
    public void Binary<TOp>(TOp op, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout) where TOp : struct, IBinaryOp
    {
        KernelCounter.Record(nameof(IBackend.Binary));
        var v = new BinaryVisitor<TOp> { Op = op, A = P(a), AL = aLayout, B = P(b), BL = bLayout, Y = P(y), YL = yLayout, ToBool = y.DType == DType.Bool && a.DType != DType.Bool };
        DTypeDispatch.Visit(a.DType, ref v);
    }

    struct BinaryVisitor<TOp> : IDTypeVisitor where TOp : struct, IBinaryOp
    {
        public TOp Op; public nint A, B, Y; public Layout AL, BL, YL; public bool ToBool;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            if (ToBool) ElementwiseKernels.Binary<T, TE, bool, B8, TOp>(Op, A, AL, B, BL, Y, YL);
            else ElementwiseKernels.Binary<T, TE, T, TE, TOp>(Op, A, AL, B, BL, Y, YL);
        }
    }

    /// <inheritdoc/>
    public void Where(Storage cond, Layout condLayout, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, Layout yLayout)
    {
        KernelCounter.Record(nameof(IBackend.Where));
        switch (a.DType.ElementSize())
        {
            case 8: ElementwiseKernels.Where<long>(P(cond), condLayout, P(a), aLayout, P(b), bLayout, P(y), yLayout); break;
            case 4: ElementwiseKernels.Where<int>(P(cond), condLayout, P(a), aLayout, P(b), bLayout, P(y), yLayout); break;
            case 2: ElementwiseKernels.Where<short>(P(cond), condLayout, P(a), aLayout, P(b), bLayout, P(y), yLayout); break;
            default: ElementwiseKernels.Where<byte>(P(cond), condLayout, P(a), aLayout, P(b), bLayout, P(y), yLayout); break;
        }
    }

    // ---- the families bound in CpuBackend.<Family>.cs, counted ----
    // Explicit implementations, so that every call through IBackend counts one launch while the binding files keep
    // their public entry points unchanged.

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

    // The fused capabilities (IBackend.Fused.cs), overriding their composite defaults.

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

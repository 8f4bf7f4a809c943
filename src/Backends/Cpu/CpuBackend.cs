using System.Runtime.CompilerServices;
using Engine.Ops;

namespace Engine.Backends.Cpu;

/// <summary>
/// The reference backend: every kernel of <see cref="IBackend"/> on host memory, any strides, every dtype. Kernels
/// live in Kernels/, one file per family; this file binds the contract to them with one dtype switch per family.
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
        switch (a.DType.ElementSize())
        {
            case 8: ElementwiseKernels.Where<long>(P(cond), condLayout, P(a), aLayout, P(b), bLayout, P(y), yLayout); break;
            case 4: ElementwiseKernels.Where<int>(P(cond), condLayout, P(a), aLayout, P(b), bLayout, P(y), yLayout); break;
            case 2: ElementwiseKernels.Where<short>(P(cond), condLayout, P(a), aLayout, P(b), bLayout, P(y), yLayout); break;
            default: ElementwiseKernels.Where<byte>(P(cond), condLayout, P(a), aLayout, P(b), bLayout, P(y), yLayout); break;
        }
    }
}

using Engine.Backends;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>The dtype that stores host values of type <typeparamref name="T"/>.</summary>
    public static DType DTypeOf<T>() where T : unmanaged =>
        typeof(T) == typeof(double) ? DType.Float64
        : typeof(T) == typeof(float) ? DType.Float32
        : typeof(T) == typeof(Half) ? DType.Float16
        : typeof(T) == typeof(BFloat16) ? DType.BFloat16
        : typeof(T) == typeof(int) ? DType.Int32
        : typeof(T) == typeof(long) ? DType.Int64
        : typeof(T) == typeof(bool) ? DType.Bool
        : throw new DTypeException("DTypeOf", $"no dtype stores {typeof(T).Name}" +
            (typeof(T) == typeof(ushort) ? " (the raw bits of a float16 or bfloat16 tensor: Tensor.FromBits and ToArray<ushort>)" : ""));

    /// <summary>
    /// A float16 or bfloat16 tensor holding the raw 16-bit patterns <paramref name="bits"/> unchanged (NaN payloads
    /// and subnormals included): the inverse of <c>ToArray&lt;ushort&gt;()</c>, e.g. for half-precision data written
    /// as uint16 by another tool.
    /// </summary>
    public static Tensor FromBits(ushort[] bits, DType dtype, int[]? shape = null, Device? device = null, bool requiresGrad = false)
    {
        ArgumentNullException.ThrowIfNull(bits);
        RawBitsDType("FromBits", dtype);
        shape ??= [bits.Length];
        if (Shape.Numel(shape) != bits.Length)
            throw new ShapeException("FromBits", $"shape {Shape.Format(shape)} needs {Shape.Numel(shape)} elements, got {bits.Length}");
        var t = Empty("FromBits", shape, dtype, device);
        t.Backend.CopyFromHost<ushort>(bits, t.Storage);
        if (requiresGrad) t.RequiresGrad = true;
        return t;
    }

    // ushort stands for the raw bits of the two 16-bit float dtypes only.
    static DType RawBitsDType(string op, DType dtype) => dtype is DType.Float16 or DType.BFloat16 ? dtype
        : throw new DTypeException(op, $"ushort holds the raw bits of a float16 or bfloat16 tensor, got {dtype.Name()}");

    /// <summary>A tensor holding a copy of <paramref name="data"/> with the given shape (default: 1-D).</summary>
    public static Tensor FromArray<T>(T[] data, Shape? shape = null, Device? device = null, bool requiresGrad = false) where T : unmanaged
    {
        var s = shape ?? new Shape(data.Length);
        if (s.Numel() != data.Length)
            throw new ShapeException("FromArray", $"shape {s} needs {s.Numel()} elements, got {data.Length}");
        var t = Empty("FromArray", s, DTypeOf<T>(), device);
        t.Backend.CopyFromHost<T>(data, t.Storage);
        if (requiresGrad) t.RequiresGrad = true;
        return t;
    }

    /// <summary>A 0-d tensor holding one value.</summary>
    public static Tensor Scalar(double value, DType dtype = DType.Float32, Device? device = null) => Full([], value, dtype, device);

    /// <summary>A tensor filled with <paramref name="value"/>.</summary>
    public static Tensor Full(ReadOnlySpan<int> shape, double value, DType dtype = DType.Float32, Device? device = null, bool requiresGrad = false) =>
        Full("Full", shape, value, dtype, device, requiresGrad);

    static Tensor Full(string op, ReadOnlySpan<int> shape, double value, DType dtype, Device? device, bool requiresGrad)
    {
        var t = Empty(op, shape, dtype, device);
        t.Backend.Fill(t.Storage, t.Layout, value);
        if (requiresGrad) t.RequiresGrad = true;
        return t;
    }

    /// <summary>A tensor of zeros.</summary>
    public static Tensor Zeros(ReadOnlySpan<int> shape, DType dtype = DType.Float32, Device? device = null, bool requiresGrad = false) => Full("Zeros", shape, 0, dtype, device, requiresGrad);

    /// <summary>A tensor of ones.</summary>
    public static Tensor Ones(ReadOnlySpan<int> shape, DType dtype = DType.Float32, Device? device = null, bool requiresGrad = false) => Full("Ones", shape, 1, dtype, device, requiresGrad);

    /// <summary>Zeros of this tensor's shape, dtype and device.</summary>
    public Tensor ZerosLike() => Zeros(Layout.Shape, DType, Device);

    /// <summary>Ones of this tensor's shape, dtype and device.</summary>
    public Tensor OnesLike() => Ones(Layout.Shape, DType, Device);

    /// <summary>A constant of this tensor's shape, dtype and device.</summary>
    public Tensor FullLike(double value) => Full(Layout.Shape, value, DType, Device);

    /// <summary>Uninitialized memory of this tensor's shape, dtype and device.</summary>
    public Tensor EmptyLike() => Empty("EmptyLike", Layout.Shape, DType, Device);

    /// <summary>0, 1, ..., end−1 as Int64 (as <c>torch.arange(end)</c>).</summary>
    public static Tensor Arange(long end, Device? device = null) => Arange(0, end, 1, DType.Int64, device);

    /// <summary>Values from <paramref name="start"/> by <paramref name="step"/> while below (or above, for a negative step) <paramref name="end"/>.</summary>
    public static Tensor Arange(double start, double end, double step = 1, DType dtype = DType.Float32, Device? device = null)
    {
        if (step == 0 || double.IsNaN(step)) throw new ShapeException("Arange", "step must be nonzero");
        if (double.IsInfinity(start) || double.IsInfinity(end)) throw new ShapeException("Arange", "unsupported range: start and end must be finite");
        long n = Math.Max(0, (long)Math.Ceiling((end - start) / step));
        var values = new double[n];
        for (long i = 0; i < n; i++) values[i] = start + i * step;
        using var d = FromArray(values, null, device);
        return d.To(dtype);
    }

    /// <summary>An n×m matrix with ones on the diagonal.</summary>
    public static Tensor Eye(int n, int? m = null, DType dtype = DType.Float32, Device? device = null)
    {
        int cols = m ?? n;
        var t = Zeros([n, cols], dtype, device);
        int k = Math.Min(n, cols);
        // The diagonal is a strided view with stride cols+1.
        var diag = new Layout([k], [cols + 1L], 0);
        t.Backend.Fill(t.Storage, diag, 1);
        return t;
    }
}

using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using Engine.Ops;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// What the GEMM does to a finished block of C before moving on, while it is still in cache: add a bias per column,
/// keep a copy of the result (the pre-activation, addressed like C), then apply an activation in place. The default
/// value does nothing and the drivers test <see cref="Active"/> once per block, so a plain GEMM pays one branch per
/// macro-block. Float32 and float64 only (the half paths widen to float32 first). The math is the unary op structs'
/// (ReluOp, GeluOp, GeluTanhOp; their vector forms in float32), so the fused result equals the composed one.
/// </summary>
internal unsafe struct GemmEpilogue
{
    /// <summary>Bias per column of C (element type of C), or null.</summary>
    public void* Bias;
    /// <summary>Where the pre-activation goes, addressed like C (same offsets and row stride), or null.</summary>
    public void* Pre;
    /// <summary>The activation applied last.</summary>
    public Activation Activation;

    public readonly bool Active => Bias != null || Pre != null || Activation != Activation.None;

    /// <summary>Applies the epilogue to rows [i0, i1) and columns [j0, j1) of C (with its batch offset applied).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public readonly void Apply<T>(T* c, long cOffset, long ldc, int i0, int i1, int j0, int j1) where T : unmanaged
    {
        int cols = j1 - j0;
        if (cols <= 0) return;
        for (int i = i0; i < i1; i++)
        {
            long at = cOffset + i * ldc + j0;
            if (typeof(T) == typeof(float)) Row((float*)c + at, Pre == null ? null : (float*)Pre + at, Bias == null ? null : (float*)Bias + j0, cols);
            else if (typeof(T) == typeof(double)) Row((double*)c + at, Pre == null ? null : (double*)Pre + at, Bias == null ? null : (double*)Bias + j0, cols);
            else throw new NotSupportedException($"GemmEpilogue: {typeof(T).Name}");
        }
    }

    readonly void Row(float* c, float* pre, float* bias, int n)
    {
        var row = new Span<float>(c, n);
        if (bias != null) TensorPrimitives.Add(row, new ReadOnlySpan<float>(bias, n), row);
        if (pre != null) row.CopyTo(new Span<float>(pre, n));
        Activate(c, n);
    }

    /// <summary>The activation alone, in place on <paramref name="n"/> floats (the 16-bit store adds bias and copies the pre-activation itself).</summary>
    public readonly void Activate(float* c, int n)
    {
        var row = new Span<float>(c, n);
        switch (Activation)
        {
            // IEEE maximum: NaN stays NaN and −0 becomes +0, as ReluOp.
            case Activation.Relu: TensorPrimitives.Max(row, 0f, row); break;
            // The ops' vector forms (VectorMath), as the Unary kernel runs them: the fused GELU equals the composed one
            // bit for bit and is not a scalar erf per element.
            case Activation.Gelu: Map(new GeluOp(), row); break;
            case Activation.GeluTanh: Map(new GeluTanhOp(), row); break;
        }
    }

    static void Map<TOp>(TOp op, Span<float> row) where TOp : struct, IDifferentiableUnaryOp
    {
        if (op.TryApply(row, row)) return;
        for (int j = 0; j < row.Length; j++) row[j] = op.Apply(row[j]);
    }

    readonly void Row(double* c, double* pre, double* bias, int n)
    {
        var row = new Span<double>(c, n);
        if (bias != null) TensorPrimitives.Add(row, new ReadOnlySpan<double>(bias, n), row);
        if (pre != null) row.CopyTo(new Span<double>(pre, n));
        switch (Activation)
        {
            case Activation.Relu: { var op = new ReluOp(); for (int j = 0; j < n; j++) c[j] = op.Apply(c[j]); break; }
            case Activation.Gelu: { var op = new GeluOp(); for (int j = 0; j < n; j++) c[j] = op.Apply(c[j]); break; }
            case Activation.GeluTanh: { var op = new GeluTanhOp(); for (int j = 0; j < n; j++) c[j] = op.Apply(c[j]); break; }
        }
    }
}

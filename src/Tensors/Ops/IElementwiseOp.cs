namespace Engine.Ops;

/// <summary>
/// An elementwise function of one value, defined once and used by every backend: the CPU strided loop, its SIMD fast
/// path and the generic ILGPU kernel. Implementations are small readonly structs (a parameterized op such as
/// <see cref="PowScalarOp"/> carries its parameter as a field); generic code over <c>TOp : struct</c> is specialized
/// and inlined by the JIT. Half types compute in float32; float64 and the integer types compute in float64.
/// </summary>
public interface IUnaryOp
{
    /// <summary>The op's name, as in error messages and <c>GradFn</c>.</summary>
    string Name { get; }
    /// <summary>The function in float32.</summary>
    float Apply(float x);
    /// <summary>The function in float64.</summary>
    double Apply(double x);
    /// <summary>
    /// Contiguous float32 fast path (a <see cref="VectorMath"/> kernel, or a <c>TensorPrimitives</c> routine where each
    /// element is one exact IEEE operation); false if the op has none. Its bits must not depend on the span's length,
    /// position or the JIT tier, so that a result is reproducible.
    /// </summary>
    bool TryApply(ReadOnlySpan<float> x, Span<float> y);
}

/// <summary>A unary op with its derivative, so that one generic backward kernel serves all of them.</summary>
public interface IDifferentiableUnaryOp : IUnaryOp
{
    /// <summary>d Apply(x) / dx in float32.</summary>
    float Derivative(float x);
    /// <summary>d Apply(x) / dx in float64.</summary>
    double Derivative(double x);
    /// <summary>
    /// Contiguous float32 fast path of the backward, dx = dy · f'(x) in one pass (a <see cref="VectorMath"/> kernel under
    /// the same reproducibility rule as <see cref="IUnaryOp.TryApply"/>); false if the op has none.
    /// </summary>
    bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx);
}

/// <summary>An elementwise function of two values (operands already broadcast and of one dtype).</summary>
public interface IBinaryOp
{
    /// <summary>The op's name.</summary>
    string Name { get; }
    /// <summary>The function in float32.</summary>
    float Apply(float a, float b);
    /// <summary>The function in float64.</summary>
    double Apply(double a, double b);
    /// <summary>Contiguous float32 fast path for same-shape operands; false if the op has none.</summary>
    bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y);
    /// <summary>True when the result is a truth value stored as <see cref="DType.Bool"/>.</summary>
    bool IsComparison { get; }
}

/// <summary>
/// The backward of a unary op as a binary op over (x, dy): dx = dy · f'(x). One kernel for every unary gradient.
/// </summary>
public readonly struct UnaryGradOp<TOp>(TOp op) : IBinaryOp where TOp : struct, IDifferentiableUnaryOp
{
    /// <summary>The forward op.</summary>
    public TOp Op { get; } = op;
    /// <inheritdoc/>
    public string Name => Op.Name + "Backward";
    /// <inheritdoc/>
    public float Apply(float x, float dy) => dy * Op.Derivative(x);
    /// <inheritdoc/>
    public double Apply(double x, double dy) => dy * Op.Derivative(x);
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) => Op.TryBackward(a, b, y);
    /// <inheritdoc/>
    public bool IsComparison => false;
}

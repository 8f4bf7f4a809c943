using System.Numerics.Tensors;

namespace Engine.Ops;

// Each binary op once. Operands arrive broadcast to the output shape and converted to one dtype. Comparisons produce
// 1 or 0 and are stored as Bool. Backward rules: src/Autograd/Rules/Binary.cs.

/// <summary>a + b.</summary>
public readonly struct AddOp : IBinaryOp
{
    /// <inheritdoc/>
    public string Name => "Add";
    /// <inheritdoc/>
    public float Apply(float a, float b) => a + b;
    /// <inheritdoc/>
    public double Apply(double a, double b) => a + b;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) { TensorPrimitives.Add(a, b, y); return true; }
    /// <inheritdoc/>
    public bool IsComparison => false;
}

/// <summary>a − b.</summary>
public readonly struct SubOp : IBinaryOp
{
    /// <inheritdoc/>
    public string Name => "Sub";
    /// <inheritdoc/>
    public float Apply(float a, float b) => a - b;
    /// <inheritdoc/>
    public double Apply(double a, double b) => a - b;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) { TensorPrimitives.Subtract(a, b, y); return true; }
    /// <inheritdoc/>
    public bool IsComparison => false;
}

/// <summary>a · b.</summary>
public readonly struct MulOp : IBinaryOp
{
    /// <inheritdoc/>
    public string Name => "Mul";
    /// <inheritdoc/>
    public float Apply(float a, float b) => a * b;
    /// <inheritdoc/>
    public double Apply(double a, double b) => a * b;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) { TensorPrimitives.Multiply(a, b, y); return true; }
    /// <inheritdoc/>
    public bool IsComparison => false;
}

/// <summary>a / b (true division; integer operands are promoted to float before).</summary>
public readonly struct DivOp : IBinaryOp
{
    /// <inheritdoc/>
    public string Name => "Div";
    /// <inheritdoc/>
    public float Apply(float a, float b) => a / b;
    /// <inheritdoc/>
    public double Apply(double a, double b) => a / b;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) { TensorPrimitives.Divide(a, b, y); return true; }
    /// <inheritdoc/>
    public bool IsComparison => false;
}

/// <summary>aᵇ.</summary>
public readonly struct PowOp : IBinaryOp
{
    /// <inheritdoc/>
    public string Name => "Pow";
    /// <inheritdoc/>
    public float Apply(float a, float b) => MathF.Pow(a, b);
    /// <inheritdoc/>
    public double Apply(double a, double b) => Math.Pow(a, b);
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) => false;
    /// <inheritdoc/>
    public bool IsComparison => false;
}

/// <summary>max(a, b), propagating NaN as PyTorch's maximum (<see cref="NaNMath.Maximum(float, float)"/>: +0 beats −0).</summary>
public readonly struct MaximumOp : IBinaryOp
{
    /// <inheritdoc/>
    public string Name => "Maximum";
    /// <inheritdoc/>
    public float Apply(float a, float b) => NaNMath.Maximum(a, b);
    /// <inheritdoc/>
    public double Apply(double a, double b) => NaNMath.Maximum(a, b);
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) { TensorPrimitives.Max(a, b, y); return true; } // IEEE maximum, as Apply
    /// <inheritdoc/>
    public bool IsComparison => false;
}

/// <summary>min(a, b), propagating NaN as PyTorch's minimum (<see cref="NaNMath.Minimum(float, float)"/>: −0 beats +0).</summary>
public readonly struct MinimumOp : IBinaryOp
{
    /// <inheritdoc/>
    public string Name => "Minimum";
    /// <inheritdoc/>
    public float Apply(float a, float b) => NaNMath.Minimum(a, b);
    /// <inheritdoc/>
    public double Apply(double a, double b) => NaNMath.Minimum(a, b);
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) { TensorPrimitives.Min(a, b, y); return true; } // IEEE minimum, as Apply
    /// <inheritdoc/>
    public bool IsComparison => false;
}

/// <summary>The six comparisons; NaN compares unequal to everything, as IEEE says.</summary>
public enum Comparison
{
    /// <summary>a == b</summary>
    Eq,
    /// <summary>a != b</summary>
    Ne,
    /// <summary>a &lt; b</summary>
    Lt,
    /// <summary>a &lt;= b</summary>
    Le,
    /// <summary>a &gt; b</summary>
    Gt,
    /// <summary>a &gt;= b</summary>
    Ge,
}

/// <summary>A comparison, stored as Bool.</summary>
public readonly struct CompareOp(Comparison kind) : IBinaryOp
{
    /// <summary>Which comparison.</summary>
    public Comparison Kind { get; } = kind;
    /// <inheritdoc/>
    public string Name => Kind.ToString();
    /// <inheritdoc/>
    public float Apply(float a, float b) => (float)Apply((double)a, b);
    /// <inheritdoc/>
    public double Apply(double a, double b) => Kind switch
    {
        Comparison.Eq => a == b,
        Comparison.Ne => a != b,
        Comparison.Lt => a < b,
        Comparison.Le => a <= b,
        Comparison.Gt => a > b,
        _ => a >= b,
    } ? 1.0 : 0.0;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y) => false;
    /// <inheritdoc/>
    public bool IsComparison => true;
}

using System.Numerics.Tensors;

namespace Engine.Ops;

// Each unary op once: float math, double math, derivative, and the routine that is its contiguous float32 fast path
// where one exists. Transcendental fast paths are VectorMath's, whose bits do not depend on JIT tier or vector width;
// TensorPrimitives stays only where each element is one IEEE operation (negate, abs, sqrt, add, multiply), whose
// result is the same on every code path.
// Backward rules (src/Autograd/Rules/Unary.cs) use Derivative through UnaryGradOp, whose contiguous float32 fast path
// is TryBackward: a fused VectorMath pass dx = dy·f'(x) for exp, tanh, sigmoid, ReLU, GELU, tanh-GELU, SiLU and erf, false elsewhere.

/// <summary>−x.</summary>
public readonly struct NegOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Neg";
    /// <inheritdoc/>
    public float Apply(float x) => -x;
    /// <inheritdoc/>
    public double Apply(double x) => -x;
    /// <inheritdoc/>
    public float Derivative(float x) => -1f;
    /// <inheritdoc/>
    public double Derivative(double x) => -1.0;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { TensorPrimitives.Negate(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

/// <summary>|x|; the derivative at 0 is 0, as PyTorch's.</summary>
public readonly struct AbsOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Abs";
    /// <inheritdoc/>
    public float Apply(float x) => MathF.Abs(x);
    /// <inheritdoc/>
    public double Apply(double x) => Math.Abs(x);
    /// <inheritdoc/>
    public float Derivative(float x) => x > 0 ? 1f : x < 0 ? -1f : 0f;
    /// <inheritdoc/>
    public double Derivative(double x) => x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { TensorPrimitives.Abs(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

/// <summary>eˣ.</summary>
public readonly struct ExpOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Exp";
    /// <inheritdoc/>
    public float Apply(float x) => MathF.Exp(x);
    /// <inheritdoc/>
    public double Apply(double x) => Math.Exp(x);
    /// <inheritdoc/>
    public float Derivative(float x) => MathF.Exp(x);
    /// <inheritdoc/>
    public double Derivative(double x) => Math.Exp(x);
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { VectorMath.Exp(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) { VectorMath.ExpBackward(x, dy, dx); return true; }
}

/// <summary>Natural logarithm.</summary>
public readonly struct LogOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Log";
    /// <inheritdoc/>
    public float Apply(float x) => MathF.Log(x);
    /// <inheritdoc/>
    public double Apply(double x) => Math.Log(x);
    /// <inheritdoc/>
    public float Derivative(float x) => 1f / x;
    /// <inheritdoc/>
    public double Derivative(double x) => 1.0 / x;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { VectorMath.Log(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

/// <summary>√x.</summary>
public readonly struct SqrtOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Sqrt";
    /// <inheritdoc/>
    public float Apply(float x) => MathF.Sqrt(x);
    /// <inheritdoc/>
    public double Apply(double x) => Math.Sqrt(x);
    /// <inheritdoc/>
    public float Derivative(float x) => 0.5f / MathF.Sqrt(x);
    /// <inheritdoc/>
    public double Derivative(double x) => 0.5 / Math.Sqrt(x);
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { TensorPrimitives.Sqrt(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

/// <summary>1/√x.</summary>
public readonly struct RsqrtOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Rsqrt";
    /// <inheritdoc/>
    public float Apply(float x) => 1f / MathF.Sqrt(x);
    /// <inheritdoc/>
    public double Apply(double x) => 1.0 / Math.Sqrt(x);
    /// <inheritdoc/>
    public float Derivative(float x) => -0.5f / (x * MathF.Sqrt(x));
    /// <inheritdoc/>
    public double Derivative(double x) => -0.5 / (x * Math.Sqrt(x));
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) => false;
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

/// <summary>sin x.</summary>
public readonly struct SinOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Sin";
    /// <inheritdoc/>
    public float Apply(float x) => MathF.Sin(x);
    /// <inheritdoc/>
    public double Apply(double x) => Math.Sin(x);
    /// <inheritdoc/>
    public float Derivative(float x) => MathF.Cos(x);
    /// <inheritdoc/>
    public double Derivative(double x) => Math.Cos(x);
    /// <inheritdoc/>
    /// <remarks>No fast path: TensorPrimitives.Sin's bits are not guaranteed across JIT tiers (its float64 overload was
    /// seen to change after re-jitting), and sin/cos are rare in training, so MathF.Sin serves every layout.</remarks>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) => false;
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

/// <summary>cos x.</summary>
public readonly struct CosOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Cos";
    /// <inheritdoc/>
    public float Apply(float x) => MathF.Cos(x);
    /// <inheritdoc/>
    public double Apply(double x) => Math.Cos(x);
    /// <inheritdoc/>
    public float Derivative(float x) => -MathF.Sin(x);
    /// <inheritdoc/>
    public double Derivative(double x) => -Math.Sin(x);
    /// <inheritdoc/>
    /// <remarks>No fast path: TensorPrimitives.Cos's bits are not guaranteed across JIT tiers (its float64 overload was
    /// seen to change after re-jitting), and sin/cos are rare in training, so MathF.Cos serves every layout.</remarks>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) => false;
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

/// <summary>tanh x.</summary>
public readonly struct TanhOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Tanh";
    /// <inheritdoc/>
    public float Apply(float x) => MathF.Tanh(x);
    /// <inheritdoc/>
    public double Apply(double x) => Math.Tanh(x);
    /// <inheritdoc/>
    /// <remarks>As 4t/(1 + t)², t = e^(−2|x|): no cancellation in the tails, where 1 − tanh² is 0 (float32) from |x| ≈ 9
    /// on. float32 arithmetic here (the CUDA kernels compile this), a few ulp; the dense CPU path
    /// (<see cref="VectorMath.TanhBackward"/>) is within 1 ulp.</remarks>
    public float Derivative(float x) { float t = MathF.Exp(-2f * MathF.Abs(x)), w = 1f + t; return 4f * t / (w * w); }
    /// <inheritdoc/>
    public double Derivative(double x) { double t = Math.Exp(-2.0 * Math.Abs(x)), w = 1.0 + t; return 4.0 * t / (w * w); }
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { VectorMath.Tanh(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) { VectorMath.TanhBackward(x, dy, dx); return true; }
}

/// <summary>1/(1+e⁻ˣ), written so that neither tail overflows.</summary>
public readonly struct SigmoidOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Sigmoid";
    /// <inheritdoc/>
    public float Apply(float x) => x >= 0 ? 1f / (1f + MathF.Exp(-x)) : MathF.Exp(x) / (1f + MathF.Exp(x));
    /// <inheritdoc/>
    public double Apply(double x) => x >= 0 ? 1.0 / (1.0 + Math.Exp(-x)) : Math.Exp(x) / (1.0 + Math.Exp(x));
    /// <inheritdoc/>
    /// <remarks>As t/(1 + t)², t = e^(−|x|), for the same reason as <see cref="TanhOp.Derivative(float)"/>: σ(1 − σ) is 0
    /// (float32) from x ≈ 17 on.</remarks>
    public float Derivative(float x) { float t = MathF.Exp(-MathF.Abs(x)), w = 1f + t; return t / (w * w); }
    /// <inheritdoc/>
    public double Derivative(double x) { double t = Math.Exp(-Math.Abs(x)), w = 1.0 + t; return t / (w * w); }
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y)
    {
        VectorMath.Sigmoid(x, y);
        return true;
    }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) { VectorMath.SigmoidBackward(x, dy, dx); return true; }
}

/// <summary>max(x, 0); the derivative at 0 is 0, as PyTorch's.</summary>
public readonly struct ReluOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Relu";
    /// <inheritdoc/>
    public float Apply(float x) => x > 0 ? x : (float.IsNaN(x) ? x : 0f);
    /// <inheritdoc/>
    public double Apply(double x) => x > 0 ? x : (double.IsNaN(x) ? x : 0.0);
    /// <inheritdoc/>
    public float Derivative(float x) => x > 0 ? 1f : 0f;
    /// <inheritdoc/>
    public double Derivative(double x) => x > 0 ? 1.0 : 0.0;
    /// <inheritdoc/>
    /// <remarks>IEEE maximum with +0: NaN stays NaN and −0 becomes +0, as <see cref="Apply(float)"/>.</remarks>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { TensorPrimitives.Max(x, 0f, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) { VectorMath.ReluBackward(x, dy, dx); return true; }
}

/// <summary>GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
public readonly struct GeluTanhOp : IDifferentiableUnaryOp
{
    const double C = 0.7978845608028654, K = 0.044715;
    /// <inheritdoc/>
    public string Name => "GeluTanh";
    /// <inheritdoc/>
    // x·σ(2z), the same function as 0.5·x·(1 + tanh z) without the cancellation of 1 + tanh z for x &lt; 0.
    public float Apply(float x) => x * default(SigmoidOp).Apply(2f * (float)C * (x + (float)K * x * x * x));
    /// <inheritdoc/>
    public double Apply(double x) => 0.5 * x * (1.0 + Math.Tanh(C * (x + K * x * x * x)));
    /// <inheritdoc/>
    public float Derivative(float x)
    {
        // In float32 like every other op's float path: through float64, each CUDA float32 backward kernel carried
        // ILGPU's software float64 tanh (57 registers and a 64-byte stack frame instead of 36 and none).
        float t = MathF.Tanh((float)C * (x + (float)K * x * x * x));
        return 0.5f * (1f + t) + 0.5f * x * ((1f - t) * (1f + t)) * (float)C * (1f + 3f * (float)K * x * x);
    }
    /// <inheritdoc/>
    public double Derivative(double x)
    {
        double t = Math.Tanh(C * (x + K * x * x * x));
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C * (1 + 3 * K * x * x);
    }
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { VectorMath.GeluTanh(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) { VectorMath.GeluTanhBackward(x, dy, dx); return true; }
}

/// <summary>GELU, exact: x·Φ(x) = 0.5·x·(1 + erf(x/√2)), evaluated from erfc for x &lt; 0 so the tail does not cancel.</summary>
public readonly struct GeluOp : IDifferentiableUnaryOp
{
    const double InvSqrt2 = SpecialFunctions.InvSqrt2, InvSqrt2Pi = SpecialFunctions.InvSqrt2Pi;
    /// <inheritdoc/>
    public string Name => "Gelu";
    /// <inheritdoc/>
    public float Apply(float x) => SpecialFunctions.Gelu(x);
    /// <inheritdoc/>
    public double Apply(double x) => 0.5 * x * (1.0 + SpecialFunctions.Erf(x * InvSqrt2));
    /// <inheritdoc/>
    public float Derivative(float x) => SpecialFunctions.NormalCdf(x) + x * (float)InvSqrt2Pi * MathF.Exp(-0.5f * x * x);
    /// <inheritdoc/>
    public double Derivative(double x) => 0.5 * (1.0 + SpecialFunctions.Erf(x * InvSqrt2)) + x * InvSqrt2Pi * Math.Exp(-0.5 * x * x);
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { VectorMath.Gelu(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) { VectorMath.GeluBackward(x, dy, dx); return true; }
}

/// <summary>
/// erf x = 2/√π ∫₀ˣ e^(−t²) dt (PyTorch's <c>torch.erf</c>). float32 dense: VectorMath.Erf, GELU's Φ pieces at √2·x
/// (within 2 ulp); float32 strided and on CUDA: SpecialFunctions.Erf(float), float32 arithmetic only (a CUDA thread's
/// float64 exp is ILGPU's software one, with a stack frame), from the same erfcx series as GELU's scalar path.
/// </summary>
public readonly struct ErfOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Erf";
    /// <inheritdoc/>
    public float Apply(float x) => SpecialFunctions.Erf(x);
    /// <inheritdoc/>
    public double Apply(double x) => SpecialFunctions.Erf(x);
    /// <inheritdoc/>
    public float Derivative(float x) => SpecialFunctions.ErfDerivative(x);
    /// <inheritdoc/>
    public double Derivative(double x) => SpecialFunctions.ErfDerivative(x);
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { VectorMath.Erf(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) { VectorMath.ErfBackward(x, dy, dx); return true; }
}

/// <summary>SiLU (swish): x·σ(x).</summary>
public readonly struct SiluOp : IDifferentiableUnaryOp
{
    /// <inheritdoc/>
    public string Name => "Silu";
    /// <inheritdoc/>
    public float Apply(float x) => x * default(SigmoidOp).Apply(x);
    /// <inheritdoc/>
    public double Apply(double x) => x * default(SigmoidOp).Apply(x);
    /// <inheritdoc/>
    public float Derivative(float x) { float s = default(SigmoidOp).Apply(x); return s * (1f + x * (1f - s)); }
    /// <inheritdoc/>
    public double Derivative(double x) { double s = default(SigmoidOp).Apply(x); return s * (1.0 + x * (1.0 - s)); }
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) { VectorMath.Silu(x, y); return true; }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) { VectorMath.SiluBackward(x, dy, dx); return true; }
}

/// <summary>xᵖ for a scalar exponent.</summary>
public readonly struct PowScalarOp(double exponent) : IDifferentiableUnaryOp
{
    /// <summary>The exponent.</summary>
    public double Exponent { get; } = exponent;
    /// <inheritdoc/>
    public string Name => "PowScalar";
    /// <inheritdoc/>
    public float Apply(float x) => Exponent == 2 ? x * x : MathF.Pow(x, (float)Exponent);
    /// <inheritdoc/>
    public double Apply(double x) => Exponent == 2 ? x * x : Math.Pow(x, Exponent);
    /// <inheritdoc/>
    public float Derivative(float x) => Exponent == 0 ? 0f : (float)Exponent * MathF.Pow(x, (float)(Exponent - 1));
    /// <inheritdoc/>
    public double Derivative(double x) => Exponent == 0 ? 0.0 : Exponent * Math.Pow(x, Exponent - 1);
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) => false;
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

/// <summary>
/// min(max(x, lo), hi) with <see cref="NaNMath.Clamp(float, float, float)"/>: NaN in x or in a bound gives NaN, and
/// lo &gt; hi gives hi, as PyTorch's. The derivative is 1 inside [lo, hi] and 0 outside (and for a NaN bound), as PyTorch's.
/// </summary>
public readonly struct ClampOp(double min, double max) : IDifferentiableUnaryOp
{
    /// <summary>Lower bound (−∞ for none).</summary>
    public double Min { get; } = min;
    /// <summary>Upper bound (+∞ for none).</summary>
    public double Max { get; } = max;
    /// <inheritdoc/>
    public string Name => "Clamp";
    /// <inheritdoc/>
    public float Apply(float x) => NaNMath.Clamp(x, (float)Min, (float)Max);
    /// <inheritdoc/>
    public double Apply(double x) => NaNMath.Clamp(x, Min, Max);
    /// <inheritdoc/>
    public float Derivative(float x) => x >= Min && x <= Max ? 1f : 0f;
    /// <inheritdoc/>
    public double Derivative(double x) => x >= Min && x <= Max ? 1.0 : 0.0;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y) => false;
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

/// <summary>a·x + b for scalars: the scalar forms of +, −, × and ÷ without a broadcast operand. A pure scaling uses b = −0, which adds exactly nothing.</summary>
public readonly struct AffineOp(double scale, double shift) : IDifferentiableUnaryOp
{
    /// <summary>Multiplier.</summary>
    public double Scale { get; } = scale;
    /// <summary>Addend.</summary>
    public double Shift { get; } = shift;
    /// <inheritdoc/>
    public string Name => "Affine";
    /// <inheritdoc/>
    public float Apply(float x) => (float)Scale * x + (float)Shift;
    /// <inheritdoc/>
    public double Apply(double x) => Scale * x + Shift;
    /// <inheritdoc/>
    public float Derivative(float x) => (float)Scale;
    /// <inheritdoc/>
    public double Derivative(double x) => Scale;
    /// <inheritdoc/>
    public bool TryApply(ReadOnlySpan<float> x, Span<float> y)
    {
        // A shift of −0 is the exact identity of addition (x + (−0) = x, even for x = −0); +0 is not (−0 + 0 = +0).
        if (Shift == 0 && double.IsNegative(Shift)) TensorPrimitives.Multiply(x, (float)Scale, y);
        else if (Scale == 1) TensorPrimitives.Add(x, (float)Shift, y);
        else { TensorPrimitives.Multiply(x, (float)Scale, y); TensorPrimitives.Add(y, (float)Shift, y); }
        return true;
    }
    /// <inheritdoc/>
    public bool TryBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) => false;
}

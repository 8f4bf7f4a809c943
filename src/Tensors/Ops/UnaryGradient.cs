namespace Engine.Ops;

/// <summary>
/// What a unary op's graph record carries so that one backward rule serves every unary op: it applies the op's
/// derivative through the generic <see cref="UnaryGradOp{TOp}"/> kernel.
/// </summary>
public interface IUnaryGradient
{
    /// <summary>dx = dy · f'(x).</summary>
    Tensor Gradient(Tensor x, Tensor dy);
}

/// <summary>The <see cref="IUnaryGradient"/> of op <typeparamref name="TOp"/>.</summary>
public sealed class UnaryGradient<TOp>(TOp op) : IUnaryGradient where TOp : struct, IDifferentiableUnaryOp
{
    /// <summary>The forward op (with its parameters).</summary>
    public TOp Op { get; } = op;

    /// <inheritdoc/>
    public Tensor Gradient(Tensor x, Tensor dy) => Tensor.Map(new UnaryGradOp<TOp>(Op), x, dy);
}

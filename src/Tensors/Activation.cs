namespace Engine;

/// <summary>
/// The activation a fused op applies to its result (<see cref="Tensor.Linear"/>): each is the unary op of the same
/// name in src/Tensors/Ops/UnaryOps.cs, so fused and unfused results use one definition of the math.
/// </summary>
public enum Activation
{
    /// <summary>No activation: the affine result itself.</summary>
    None,
    /// <summary>max(x, 0), <see cref="Ops.ReluOp"/>.</summary>
    Relu,
    /// <summary>Exact GELU, x·Φ(x), <see cref="Ops.GeluOp"/>.</summary>
    Gelu,
    /// <summary>GELU with the tanh approximation, <see cref="Ops.GeluTanhOp"/>.</summary>
    GeluTanh,
}

using Engine.Ops;

namespace Engine.Amp;

/// <summary>What autocast does with an op's floating inputs (PyTorch's op lists of <c>torch.amp</c>).</summary>
public enum AutocastCategory
{
    /// <summary>Not listed: the op runs in the dtype of its inputs (after its own type promotion).</summary>
    InputType,
    /// <summary>Cast to the region's dtype (float16 or bfloat16): ops that are fast and safe in 16 bits.</summary>
    LowerPrecision,
    /// <summary>Cast to float32: ops whose range or accuracy needs 32 bits (exponentials, sums, norms, losses).</summary>
    Float32,
    /// <summary>Run in the widest input type: the op promotes its inputs itself, autocast adds nothing.</summary>
    Promote,
}

/// <summary>
/// THE autocast policy: op → category, in one place, keyed by the op's identity — the type of its autograd definition
/// (<c>Tensor.SumBackward</c>, ...), of its op struct for the elementwise unary ops (<c>ExpOp</c>, ...), or a marker
/// type for the ops composed of recorded ops (<c>MseLoss</c>, <c>NllLoss</c>) — so a misspelt entry does not compile.
/// Every op the engine records is listed, InputType ones included (a test enforces it). Float64 inputs are never
/// cast, nor integer or Bool ones; in-place ops and explicit casts (<c>To(dtype)</c>) are not autocast.
/// </summary>
/// <remarks>
/// <para><b>Lower precision</b> (cast to the region's dtype): <c>MatMul</c>. Every matrix product goes through it:
/// <c>Linear</c> (x·Wᵀ), batched products and the attention products q·kᵀ and att·v.</para>
/// <para><b>Float32</b>: <c>Exp</c>, <c>Log</c>, <c>PowScalar</c> (x^p, Square), <c>Pow</c> (tensor exponent),
/// <c>Rsqrt</c>, <c>Softmax</c>, <c>LogSoftmax</c>, <c>LayerNorm</c>, <c>RmsNorm</c>, <c>Sum</c>, <c>Norm</c>,
/// <c>LogSumExp</c>, <c>CrossEntropy</c>, <c>NllLoss</c>, <c>MseLoss</c>.</para>
/// <para><b>Promote</b> (the ops already do it): <c>Cat</c>, <c>Where</c> and the arithmetic binaries.</para>
/// <para><b>Input type</b>: everything else, <c>Mean</c> included (as PyTorch, whose float32 list has sum but not mean),
/// activations, views, indexing and casts.</para>
/// The same table serves every device type (PyTorch keeps separate CPU and CUDA lists; they agree on these ops).
/// </remarks>
public static class AutocastPolicy
{
    static readonly Dictionary<Type, AutocastCategory> s_table = new()
    {
        // Lower precision: tensor-core (or AVX-512 BF16) friendly products.
        [typeof(Tensor.MatMulBackward)] = AutocastCategory.LowerPrecision,

        // Float32: large dynamic range or long accumulations.
        [typeof(ExpOp)] = AutocastCategory.Float32,
        [typeof(LogOp)] = AutocastCategory.Float32,
        [typeof(PowScalarOp)] = AutocastCategory.Float32,
        [typeof(Tensor.PowBackward)] = AutocastCategory.Float32,
        [typeof(RsqrtOp)] = AutocastCategory.Float32,
        [typeof(Tensor.SoftmaxBackward)] = AutocastCategory.Float32,
        [typeof(Tensor.LogSoftmaxBackward)] = AutocastCategory.Float32,
        [typeof(Tensor.LayerNormBackward)] = AutocastCategory.Float32,
        [typeof(Tensor.RmsNormBackward)] = AutocastCategory.Float32,
        [typeof(Tensor.SumBackward)] = AutocastCategory.Float32,
        [typeof(Tensor.NormBackward)] = AutocastCategory.Float32,
        [typeof(Tensor.LogSumExpBackward)] = AutocastCategory.Float32,
        [typeof(Tensor.CrossEntropyBackward)] = AutocastCategory.Float32,
        [typeof(Tensor.NllLossOp)] = AutocastCategory.Float32,
        [typeof(Tensor.MseLossOp)] = AutocastCategory.Float32,

        // Promote: these ops promote to the widest input type on their own.
        [typeof(Tensor.CatBackward)] = AutocastCategory.Promote,
        [typeof(Tensor.WhereBackward)] = AutocastCategory.Promote,
        [typeof(Tensor.AddBackward)] = AutocastCategory.Promote,
        [typeof(Tensor.SubBackward)] = AutocastCategory.Promote,
        [typeof(Tensor.MulBackward)] = AutocastCategory.Promote,
        [typeof(Tensor.DivBackward)] = AutocastCategory.Promote,
        [typeof(Tensor.MaximumBackward)] = AutocastCategory.Promote,
        [typeof(Tensor.MinimumBackward)] = AutocastCategory.Promote,

        // Input type: listed so that every recorded op has a decision on record.
        [typeof(NegOp)] = AutocastCategory.InputType,
        [typeof(AbsOp)] = AutocastCategory.InputType,
        [typeof(SqrtOp)] = AutocastCategory.InputType,
        [typeof(SinOp)] = AutocastCategory.InputType,
        [typeof(CosOp)] = AutocastCategory.InputType,
        [typeof(TanhOp)] = AutocastCategory.InputType,
        [typeof(SigmoidOp)] = AutocastCategory.InputType,
        [typeof(ReluOp)] = AutocastCategory.InputType,
        [typeof(GeluOp)] = AutocastCategory.InputType,
        [typeof(GeluTanhOp)] = AutocastCategory.InputType,
        [typeof(SiluOp)] = AutocastCategory.InputType,
        [typeof(ClampOp)] = AutocastCategory.InputType,
        [typeof(AffineOp)] = AutocastCategory.InputType,
        [typeof(Tensor.AffineBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.MeanBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.AmaxBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.MaxBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.VarBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.GatherBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.ScatterAddBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.IndexSelectBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.IndexAddBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.EmbeddingBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.IdentityBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.CastBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.FillBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.TransposeBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.PermuteBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.SliceBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.SelectBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.ReshapeBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.ExpandBackward)] = AutocastCategory.InputType,
    };

    /// <summary>The whole table (read-only).</summary>
    public static IReadOnlyDictionary<Type, AutocastCategory> Table => s_table;

    /// <summary>
    /// The category of an op by its identity (a definition type, a unary op struct or a composite's marker);
    /// <see cref="AutocastCategory.InputType"/> when not listed (user-defined ops).
    /// </summary>
    public static AutocastCategory CategoryOf(Type op) => s_table.TryGetValue(op, out var c) ? c : AutocastCategory.InputType;

    /// <summary>The dtype an op's floating inputs are cast to in a region of <paramref name="regionDType"/>, or null to leave them.</summary>
    public static DType? TargetDType(Type op, DType regionDType) => CategoryOf(op) switch
    {
        AutocastCategory.LowerPrecision => regionDType,
        AutocastCategory.Float32 => DType.Float32,
        _ => null,
    };
}

namespace Engine;

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
/// THE autocast policy: op name → category, in one place. Ops pass their name to the dispatch hook
/// (<see cref="AutocastDispatch"/>) and this table decides; an op not listed runs in its input type. Float64 inputs
/// are never cast, nor integer or Bool ones; in-place ops and explicit casts (<c>To(dtype)</c>) are not autocast (no
/// op here takes an output dtype argument, so PyTorch's "an op given a dtype is left alone" has nothing to apply to).
/// The names are those ops record for autograd.
/// </summary>
/// <remarks>
/// <para><b>Lower precision</b> (cast to the region's dtype): <c>MatMul</c>. Every matrix product goes through it:
/// <c>Linear</c> (x·Wᵀ), batched products and the attention products q·kᵀ and att·v.</para>
/// <para><b>Float32</b>: <c>Exp</c>, <c>Log</c>, <c>PowScalar</c> (x^p, Square), <c>Pow</c> (tensor exponent),
/// <c>Rsqrt</c>, <c>Softmax</c>, <c>LogSoftmax</c>, <c>LayerNorm</c>, <c>RmsNorm</c>, <c>Sum</c>, <c>Norm</c>,
/// <c>LogSumExp</c>, <c>CrossEntropy</c> (PyTorch's cross_entropy/nll_loss), <c>MseLoss</c>.</para>
/// <para><b>Promote</b> (documented; the ops already do it): <c>Cat</c>, <c>Stack</c>, <c>Where</c> and the index ops
/// that combine two floating tensors.</para>
/// <para><b>Input type</b>: everything else, <c>Mean</c> included (as PyTorch, whose float32 list has sum but not mean),
/// elementwise arithmetic, activations, views and casts.</para>
/// The same table serves every device type (PyTorch keeps separate CPU and CUDA lists; they agree on these ops).
/// </remarks>
public static class AutocastPolicy
{
    static readonly Dictionary<string, AutocastCategory> s_table = new(StringComparer.Ordinal)
    {
        // Lower precision: tensor-core (or AVX-512 BF16) friendly products.
        ["MatMul"] = AutocastCategory.LowerPrecision,

        // Float32: large dynamic range or long accumulations.
        ["Exp"] = AutocastCategory.Float32,
        ["Log"] = AutocastCategory.Float32,
        ["PowScalar"] = AutocastCategory.Float32,
        ["Pow"] = AutocastCategory.Float32,
        ["Rsqrt"] = AutocastCategory.Float32,
        ["Softmax"] = AutocastCategory.Float32,
        ["LogSoftmax"] = AutocastCategory.Float32,
        ["LayerNorm"] = AutocastCategory.Float32,
        ["RmsNorm"] = AutocastCategory.Float32,
        ["Sum"] = AutocastCategory.Float32,
        ["Norm"] = AutocastCategory.Float32,
        ["LogSumExp"] = AutocastCategory.Float32,
        ["CrossEntropy"] = AutocastCategory.Float32,
        ["MseLoss"] = AutocastCategory.Float32,

        // Promote: listed for the record; these ops promote to the widest input type on their own.
        ["Cat"] = AutocastCategory.Promote,
        ["Stack"] = AutocastCategory.Promote,
        ["Where"] = AutocastCategory.Promote,
    };

    /// <summary>The whole table (read-only).</summary>
    public static IReadOnlyDictionary<string, AutocastCategory> Table => s_table;

    /// <summary>The category of an op by name; <see cref="AutocastCategory.InputType"/> when not listed.</summary>
    public static AutocastCategory CategoryOf(string op) => s_table.TryGetValue(op, out var c) ? c : AutocastCategory.InputType;

    /// <summary>The dtype an op's floating inputs are cast to in a region of <paramref name="regionDType"/>, or null to leave them.</summary>
    public static DType? TargetDType(string op, DType regionDType) => CategoryOf(op) switch
    {
        AutocastCategory.LowerPrecision => regionDType,
        AutocastCategory.Float32 => DType.Float32,
        _ => null,
    };
}

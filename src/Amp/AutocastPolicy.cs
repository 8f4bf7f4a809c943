using Engine.Ops;

namespace Engine.Amp;

/// <summary>What autocast does with an op's floating inputs (PyTorch's op lists of <c>torch.amp</c>).</summary>
public enum AutocastCategory
{
    /// <summary>Not listed: the op runs in the dtype of its inputs (after its own type promotion).</summary>
    InputType,
    /// <summary>Cast to the region's dtype (float16 or bfloat16): ops that are fast and safe in 16 bits.</summary>
    LowerPrecision,
    /// <summary>Cast to float32: ops whose range or accuracy needs 32 bits (losses; on CUDA also exponentials, sums, norms).</summary>
    Float32,
    /// <summary>Run in the widest input type: the op promotes its inputs itself, autocast adds nothing.</summary>
    Promote,
}

/// <summary>
/// THE autocast policy: op → category, per device type, in one place, keyed by the op's identity — the type of its
/// autograd definition (<c>Tensor.SumBackward</c>, ...), of its op struct for the elementwise unary ops
/// (<c>ExpOp</c>, ...), or a marker type for the ops composed of recorded ops (<c>MseLoss</c>, <c>NllLoss</c>) — so a
/// misspelt entry does not compile. As PyTorch, each device type has its own table (its CUDA and CPU lists differ):
/// <see cref="Cuda"/> and <see cref="Cpu"/> list the same ops, every op the engine records, InputType ones included
/// (a test enforces both). Float64 inputs are never cast, nor integer or Bool ones; in-place ops and explicit casts
/// (<c>To(dtype)</c>) are not autocast.
/// </summary>
/// <remarks>
/// <para><b>CUDA.</b> Lower precision: <c>MatMul</c> (every matrix product goes through it: <c>Linear</c>'s x·Wᵀ,
/// batched products, the attention products q·kᵀ and att·v). Float32: <c>Exp</c>, <c>Log</c>, <c>PowScalar</c>
/// (x^p, Square), <c>Pow</c>, <c>Rsqrt</c>, <c>Softmax</c>, <c>LogSoftmax</c>, <c>LayerNorm</c>, <c>RmsNorm</c>,
/// <c>Sum</c>, <c>Norm</c>, <c>LogSumExp</c>, <c>CrossEntropy</c>, <c>NllLoss</c>, <c>MseLoss</c>.</para>
/// <para><b>CPU.</b> Lower precision: <c>MatMul</c>. Float32: the losses only, <c>CrossEntropy</c>, <c>NllLoss</c>,
/// <c>MseLoss</c>. Exponentials, powers, softmaxes, norms and sums run in their input type (PyTorch's CPU lists do
/// not name them; the CPU kernels of this engine accumulate 16-bit inputs in float32 or float64 anyway), so a bfloat16
/// activation is not cast to float32 and back around every softmax and layer norm.</para>
/// <para><b>Both.</b> Promote (the ops already do it): <c>Cat</c>, <c>Where</c> and the arithmetic binaries. Input type:
/// everything else, <c>Mean</c> included (as PyTorch, whose CUDA float32 list has sum but not mean), activations,
/// views, indexing and casts.</para>
/// </remarks>
public static class AutocastPolicy
{
    // CUDA: PyTorch's lists for the Autocast (CUDA) dispatch key — aten/src/ATen/autocast_mode.h, the macros
    // AT_FORALL_LOWER_PRECISION_FP (mm, bmm, matmul, linear, addmm, baddbmm, ...), AT_FORALL_FP32 (exp, log, pow,
    // rsqrt, layer_norm, rms_norm, logsumexp, mse_loss, nll_loss, ...), AT_FORALL_FP32_SET_OPT_DTYPE (softmax,
    // log_softmax, sum, linalg_vector_norm, ...), AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE (norm), registered in
    // aten/src/ATen/autocast_mode.cpp; the docs' "CUDA Ops that can autocast to float16 / to float32"
    // (https://pytorch.org/docs/stable/amp.html). cross_entropy is composite there (log_softmax + nll_loss, both
    // float32); our fused CrossEntropy is listed as what that composition gives. Deviation: Cat, Where and the
    // arithmetic binaries are marked Promote although PyTorch's CUDA promote list (AT_FORALL_PROMOTE) does not name
    // them — they promote through ordinary type promotion there as here; Promote adds no cast, it records why.
    static readonly Dictionary<Type, AutocastCategory> s_cuda = new()
    {
        // Lower precision: tensor-core friendly products.
        [typeof(Tensor.MatMulBackward)] = AutocastCategory.LowerPrecision,
        [typeof(Tensor.LinearBackward)] = AutocastCategory.LowerPrecision,
        // scaled_dot_product_attention is in AT_FORALL_LOWER_PRECISION_FP, and in the CPU lower-precision list too.
        [typeof(Tensor.ScaledDotProductAttentionBackward)] = AutocastCategory.LowerPrecision,

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
        // On neither of PyTorch's lower-precision lists, nor on its CUDA float32 list (which has erfinv, not erf).
        [typeof(ErfOp)] = AutocastCategory.InputType,
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

    // CPU: PyTorch's lists for the AutocastCPU dispatch key — TORCH_LIBRARY_IMPL(aten, AutocastCPU, m) in
    // aten/src/ATen/autocast_mode.cpp; the docs' "CPU Ops that can autocast to bfloat16" (mm, bmm, matmul, linear,
    // addmm, baddbmm, ...) and "CPU Ops that can autocast to float32" (mse_loss, nll_loss, cross_entropy_loss,
    // l1_loss, kl_div, prod, cdist, the linalg and fft ops, ...), with cat and stack in its promote list
    // (https://pytorch.org/docs/stable/amp.html). That float32 list names none of exp, log, pow, rsqrt, softmax,
    // log_softmax, layer_norm, rms_norm, sum, norm or logsumexp: on the CPU they run in their input type. One list
    // for every region dtype (float16 regions on the CPU use it too, as PyTorch's). No deliberate deviation beyond
    // the Promote entries explained for the CUDA table. A norm left in the input type may see a 16-bit activation
    // with float32 weights: as PyTorch's mixed-type layer_norm, the op accepts that (Tensor.Normalization.cs casts the
    // weights to the input's dtype, differentiably).
    // Written as the CUDA table with what the CPU lists change, so the two cannot drift apart elsewhere.
    static readonly Dictionary<Type, AutocastCategory> s_cpu = Override(s_cuda, new()
    {
        // Input type, where the CUDA table says float32: the CPU list leaves these alone.
        [typeof(ExpOp)] = AutocastCategory.InputType,
        [typeof(LogOp)] = AutocastCategory.InputType,
        [typeof(PowScalarOp)] = AutocastCategory.InputType,
        [typeof(Tensor.PowBackward)] = AutocastCategory.InputType,
        [typeof(RsqrtOp)] = AutocastCategory.InputType,
        [typeof(Tensor.SoftmaxBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.LogSoftmaxBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.LayerNormBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.RmsNormBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.SumBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.NormBackward)] = AutocastCategory.InputType,
        [typeof(Tensor.LogSumExpBackward)] = AutocastCategory.InputType,
    });

    // A copy of a table with some entries changed; every changed op must be in the table already.
    static Dictionary<Type, AutocastCategory> Override(Dictionary<Type, AutocastCategory> table, Dictionary<Type, AutocastCategory> changes)
    {
        var d = new Dictionary<Type, AutocastCategory>(table);
        foreach (var (op, category) in changes)
        {
            if (!d.ContainsKey(op)) throw new InvalidOperationException($"AutocastPolicy: {op.Name} is not in the table it overrides");
            d[op] = category;
        }
        return d;
    }

    /// <summary>The CUDA table (read-only): PyTorch's CUDA lists.</summary>
    public static IReadOnlyDictionary<Type, AutocastCategory> Cuda => s_cuda;

    /// <summary>The CPU table (read-only): PyTorch's CPU lists.</summary>
    public static IReadOnlyDictionary<Type, AutocastCategory> Cpu => s_cpu;

    /// <summary>The table of <paramref name="device"/>'s type.</summary>
    public static IReadOnlyDictionary<Type, AutocastCategory> For(DeviceType device) => device switch
    {
        DeviceType.Cpu => s_cpu,
        DeviceType.Cuda => s_cuda,
        _ => throw new EngineException("AutocastPolicy", $"no autocast table for device type {device}"),
    };

    /// <summary>
    /// The category of an op on <paramref name="device"/> by its identity (a definition type, a unary op struct or a
    /// composite's marker); <see cref="AutocastCategory.InputType"/> when not listed (user-defined ops).
    /// </summary>
    public static AutocastCategory CategoryOf(Type op, DeviceType device) =>
        For(device).TryGetValue(op, out var c) ? c : AutocastCategory.InputType;

    /// <summary>
    /// The dtype an op's floating inputs are cast to on <paramref name="device"/> in a region of
    /// <paramref name="regionDType"/>, or null to leave them.
    /// </summary>
    public static DType? TargetDType(Type op, DeviceType device, DType regionDType) => CategoryOf(op, device) switch
    {
        AutocastCategory.LowerPrecision => regionDType,
        AutocastCategory.Float32 => DType.Float32,
        _ => null,
    };
}

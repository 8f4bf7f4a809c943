namespace Engine.Backends;

// The fused capabilities: each has a default body built from the required kernels (CompositeKernels), so a backend
// implements one only to make it faster. The CPU and CUDA backends implement all of them with fused kernels; the
// composite is the reference those kernels must match (tests/Engine.Tests/Backends/CompositeKernelsTests.cs).
public partial interface IBackend
{
    /// <summary>
    /// Softmax (or log-softmax) of each row of a contiguous [rows, cols] x. Default:
    /// <see cref="CompositeKernels.Softmax"/> (max-reduce, subtract, exp, sum-reduce, divide).
    /// </summary>
    void Softmax(Storage x, Storage y, int rows, int cols, bool log) =>
        CompositeKernels.Softmax(this, x, y, rows, cols, log);

    /// <summary>
    /// dx from the softmax output y and dy: y·(dy − Σ dy·y), or for log-softmax dy − eʸ·Σ dy. Default:
    /// <see cref="CompositeKernels.SoftmaxBackward"/>.
    /// </summary>
    void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int cols, bool log) =>
        CompositeKernels.SoftmaxBackward(this, y, dy, dx, rows, cols, log);

    /// <summary>
    /// Layer norm of each row (rms: RMSNorm, no mean subtraction and no bias): y = (x − mean)·rstd·w + b. Writes
    /// per-row mean and rstd (float32, or float64 for Float64 inputs) for the backward. Weight and bias may be null.
    /// With <paramref name="residual"/> (then <paramref name="sum"/> is given too) the row normalized is
    /// sum = x + residual, rounded to the dtype and written to <paramref name="sum"/> first: the residual add of a
    /// pre-norm transformer fused into its norm, the same bits as an Add followed by this kernel. x, sum, weight and
    /// bias share one dtype; with a float32 x, <paramref name="residual"/> and <paramref name="y"/> may each be
    /// float16 or bfloat16 instead (a float32 residual stream under autocast: the residual is a 16-bit layer's output,
    /// y feeds a 16-bit matrix product), the residual widened exactly on load and y rounded once on store, the bits of
    /// casting them around the same-dtype kernel. Default: <see cref="CompositeKernels.LayerNorm"/>.
    /// </summary>
    void LayerNorm(Storage x, Storage? residual, Storage? weight, Storage? bias, Storage? sum, Storage y, Storage mean, Storage rstd, int rows, int cols, double eps, bool rms) =>
        CompositeKernels.LayerNorm(this, x, residual, weight, bias, sum, y, mean, rstd, rows, cols, eps, rms);

    /// <summary>
    /// Gradients of <see cref="LayerNorm"/>: dx always; dWeight and dBias (summed over rows) when given. With
    /// <paramref name="dxAdd"/>, dx = dxAdd + the gradient (the gradient rounded to the dtype first, then the sum
    /// rounded: the same bits as this kernel followed by an Add), which folds the other uses' share of x's gradient
    /// (the residual stream's) into this kernel. <paramref name="dy"/> has y's dtype: x's, or float16/bfloat16 with a
    /// float32 x (widened exactly on load). Default: <see cref="CompositeKernels.LayerNormBackward"/>.
    /// </summary>
    void LayerNormBackward(Storage x, Storage? weight, Storage mean, Storage rstd, Storage dy, Storage? dxAdd, Storage dx, Storage? dWeight, Storage? dBias, int rows, int cols, bool rms) =>
        CompositeKernels.LayerNormBackward(this, x, weight, mean, rstd, dy, dxAdd, dx, dWeight, dBias, rows, cols, rms);

    /// <summary>
    /// Per-row cross entropy of logits [rows, cols] against Int64 targets: loss[r] = −Σ_c q_c·log_softmax(x)_c with
    /// q the one-hot target smoothed by <paramref name="labelSmoothing"/>; rows whose target is
    /// <paramref name="ignoreIndex"/> give 0. loss is float32 (float64 for Float64 logits). Throws on a target out of
    /// range. Default: <see cref="CompositeKernels.CrossEntropy"/>.
    /// </summary>
    void CrossEntropy(Storage logits, Storage targets, Storage loss, int rows, int cols, long ignoreIndex, double labelSmoothing) =>
        CompositeKernels.CrossEntropy(this, logits, targets, loss, rows, cols, ignoreIndex, labelSmoothing);

    /// <summary>
    /// dlogits = (softmax(x) − q)·dloss[r] per row (0 for ignored rows); dloss has one value per row. Default:
    /// <see cref="CompositeKernels.CrossEntropyBackward"/>.
    /// </summary>
    void CrossEntropyBackward(Storage logits, Storage targets, Storage dloss, Storage dlogits, int rows, int cols, long ignoreIndex, double labelSmoothing) =>
        CompositeKernels.CrossEntropyBackward(this, logits, targets, dloss, dlogits, rows, cols, ignoreIndex, labelSmoothing);

    /// <summary>
    /// One fused Adam/AdamW update of a contiguous parameter (see <see cref="AdamConfig"/>). <paramref name="step"/> is
    /// a one-element Float32 storage on the device holding the step count, advanced by the kernel, so bias correction
    /// needs no host value. When <paramref name="foundInf"/> (one Float32 element) is given and nonzero, nothing
    /// changes (the step is skipped, the count does not advance); when <paramref name="invScale"/> is given the
    /// gradient is multiplied by it first. The gradient may be of another float dtype than the parameter. Computed in
    /// float64 from the stored values, each result rounded once on store. Default:
    /// <see cref="CompositeKernels.AdamStep"/>.
    /// </summary>
    void AdamStep(Storage param, Storage grad, Storage expAvg, Storage expAvgSq, Storage step, AdamConfig config, Storage? invScale, Storage? foundInf) =>
        CompositeKernels.AdamStep(this, param, grad, expAvg, expAvgSq, step, config, invScale, foundInf);

    /// <summary>
    /// One fused SGD update (momentum, dampening, Nesterov, weight decay as <c>torch.optim.SGD</c>). The momentum
    /// buffer, when given, is initialized from the gradient on the first step (<paramref name="momentumInitialized"/>
    /// false). Skips and unscales like <see cref="AdamStep"/>. Default: <see cref="CompositeKernels.SgdStep"/>.
    /// </summary>
    void SgdStep(Storage param, Storage grad, Storage? momentum, bool momentumInitialized, SgdConfig config, Storage? invScale, Storage? foundInf) =>
        CompositeKernels.SgdStep(this, param, grad, momentum, momentumInitialized, config, invScale, foundInf);

    /// <summary>
    /// <see cref="AdamStep"/> over lists of tensors in one launch (PyTorch's multi-tensor Adam): entry j of each list
    /// is one parameter's operand, exactly as AdamStep takes them (each parameter its own step count), and every
    /// parameter gets exactly the update AdamStep would give it. At most <see cref="MultiTensor.MaxTensors"/> entries,
    /// one device, no storage twice; dtypes may differ between entries (the gradient's from its parameter's, as in
    /// AdamStep). Default: <see cref="CompositeKernels.ForeachAdamStep"/> (one AdamStep per entry).
    /// </summary>
    void ForeachAdamStep(IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage> expAvg, IReadOnlyList<Storage> expAvgSq,
        IReadOnlyList<Storage> step, AdamConfig config, Storage? invScale, Storage? foundInf) =>
        CompositeKernels.ForeachAdamStep(this, param, grad, expAvg, expAvgSq, step, config, invScale, foundInf);

    /// <summary>
    /// <see cref="SgdStep"/> over lists of tensors in one launch; <paramref name="momentum"/> is null (no momentum) or
    /// one buffer per entry, all initialized or all not (<paramref name="momentumInitialized"/>). Limits as
    /// <see cref="ForeachAdamStep"/>. Default: <see cref="CompositeKernels.ForeachSgdStep"/> (one SgdStep per entry).
    /// </summary>
    void ForeachSgdStep(IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage>? momentum, bool momentumInitialized,
        SgdConfig config, Storage? invScale, Storage? foundInf) =>
        CompositeKernels.ForeachSgdStep(this, param, grad, momentum, momentumInitialized, config, invScale, foundInf);

    /// <summary>
    /// The <paramref name="ord"/>-norm of each whole storage in <paramref name="xs"/> (as <see cref="Reduce"/> with
    /// <see cref="ReduceOp.Norm"/> over all its elements) into <paramref name="norms"/>, in one launch
    /// (PyTorch's <c>_foreach_norm</c>). The xs share one floating dtype; norms is Float64 for Float64 xs and Float32
    /// otherwise (half xs are measured in float32); entry j goes to element <paramref name="offset"/> + j. An infinite
    /// ord needs non-empty xs. At most <see cref="MultiTensor.MaxTensors"/> entries. Default:
    /// <see cref="CompositeKernels.ForeachNorm"/>.
    /// </summary>
    void ForeachNorm(IReadOnlyList<Storage> xs, double ord, Storage norms, int offset) =>
        CompositeKernels.ForeachNorm(this, xs, ord, norms, offset);

    /// <summary>
    /// x ← x·s for every whole storage x in <paramref name="xs"/>, in one launch (PyTorch's <c>_foreach_mul_</c> by a
    /// tensor): <paramref name="scalar"/> is one element of the xs' shared floating dtype, read on the device; the
    /// product is computed as <see cref="Binary{TOp}"/>'s multiply (float32 for half types, rounded once). At most
    /// <see cref="MultiTensor.MaxTensors"/> entries. Default: <see cref="CompositeKernels.ForeachMul"/>.
    /// </summary>
    void ForeachMul(IReadOnlyList<Storage> xs, Storage scalar) =>
        CompositeKernels.ForeachMul(this, xs, scalar);

    /// <summary>
    /// ys[j] ← xs[j] converted to ys[j]'s dtype, for every pair of whole storages of one element count, in one launch
    /// (PyTorch's <c>_foreach_copy_</c>, which also converts): each element converted exactly as <see cref="Copy"/>
    /// converts it (rounded once, to nearest even; NaN payloads as Copy keeps them), so an entry has the bits of its
    /// own per-tensor cast. Entries are floating of any dtypes, one device, no ys storage twice and none also an x. At
    /// most <see cref="MultiTensor.MaxTensors"/> entries. Default: <see cref="CompositeKernels.ForeachCopy"/> (one
    /// Copy per entry).
    /// </summary>
    void ForeachCopy(IReadOnlyList<Storage> xs, IReadOnlyList<Storage> ys) =>
        CompositeKernels.ForeachCopy(this, xs, ys);

    /// <summary>
    /// The AMP gradient scaler's fused check: multiplies every element of every gradient (contiguous storages of any
    /// float dtype; Float32, Float16 and BFloat16 compute in float32, Float64 in float64, rounding once) by
    /// <paramref name="invScale"/> (one Float32 element) and sets <paramref name="foundInf"/> (one Float32 element) to
    /// 1 when any value is Inf or NaN; it never resets it. Reads nothing back to the host. As PyTorch's
    /// <c>_amp_foreach_non_finite_check_and_unscale_</c>: one launch for at most <see cref="MultiTensor.MaxTensors"/>
    /// gradients (the front end splits longer lists). Default: <see cref="CompositeKernels.NonFiniteCheckAndUnscale"/>.
    /// </summary>
    void NonFiniteCheckAndUnscale(IReadOnlyList<Storage> grads, Storage foundInf, Storage invScale) =>
        CompositeKernels.NonFiniteCheckAndUnscale(this, grads, foundInf, invScale);

    /// <summary>
    /// The AMP scale update, as PyTorch's <c>_amp_update_scale_</c>, on the device: when <paramref name="foundInf"/> is
    /// nonzero, scale ← scale·backoff and the tracker (one Int32 element) ← 0; otherwise the tracker counts the clean
    /// step and, on reaching <paramref name="growthInterval"/>, scale ← scale·growth (only if that is finite) and the
    /// tracker ← 0. scale and foundInf are one Float32 element each. Default: <see cref="CompositeKernels.UpdateScale"/>.
    /// </summary>
    void UpdateScale(Storage scale, Storage growthTracker, Storage foundInf, double growthFactor, double backoffFactor, int growthInterval) =>
        CompositeKernels.UpdateScale(this, scale, growthTracker, foundInf, growthFactor, backoffFactor, growthInterval);

    /// <summary>
    /// Scaled-dot-product attention without dropout over <see cref="AttentionShape.Batch"/> independent heads:
    /// o = softmax(q·kᵀ·scale + mask)·v, with q [batch, L, E], k [batch, S, E], v [batch, S, Ev] and o [batch, L, Ev]
    /// in one float dtype, each read or written through its <see cref="AttentionOperand"/> strides (as PyTorch's
    /// flash attention takes q, k, v as the transposed views of one projection and writes o in [b, t, h, d] memory).
    /// <paramref name="mask"/>, when given, is additive, contiguous [batch, L, S] (or one [L, S] for every head when
    /// <see cref="AttentionShape.SharedMask"/>) in the work dtype (Float64 for Float64 operands, else Float32);
    /// <see cref="AttentionShape.Causal"/> also hides key j from query i when j &gt; i. Writes the per-row logsumexp
    /// of the scaled, masked scores into <paramref name="lse"/> (contiguous [batch, L], work dtype) for the backward;
    /// rows with no key (S = 0) give o = 0 and lse = −∞. Default: <see cref="CompositeKernels.ScaledDotProductAttention"/>.
    /// </summary>
    void ScaledDotProductAttention(AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse, AttentionShape shape) =>
        CompositeKernels.ScaledDotProductAttention(this, q, k, v, mask, o, lse, shape);

    /// <summary>
    /// Gradients of <see cref="ScaledDotProductAttention"/> from its inputs, output, logsumexp and the output
    /// gradient <paramref name="dO"/> (FlashAttention-2's rule: P = exp(s − lse), D = rowsum(dO∘o),
    /// dS = P∘(dP − D)): dq = scale·dS·k, dk = scale·dSᵀ·q, dv = Pᵀ·dO, each of q's dtype. Every operand is strided
    /// as the forward's; dq, dk and dv may be disjoint parts of one buffer (the gradient of a fused q, k, v
    /// projection) but must not overlap each other or the inputs. Default:
    /// <see cref="CompositeKernels.ScaledDotProductAttentionBackward"/>.
    /// </summary>
    void ScaledDotProductAttentionBackward(AttentionOperand q, AttentionOperand k, AttentionOperand v, Storage? mask, AttentionOperand o, Storage lse,
        AttentionOperand dO, AttentionOperand dq, AttentionOperand dk, AttentionOperand dv, AttentionShape shape) =>
        CompositeKernels.ScaledDotProductAttentionBackward(this, q, k, v, mask, o, lse, dO, dq, dk, dv, shape);

    /// <summary>
    /// The fused linear layer, as <c>F.linear</c> followed by an activation: y = act(x·wᵀ + bias) with x laid out as
    /// [m, k] and w as [n, k] (any strides), bias contiguous [n] or null, y contiguous [m, n]. When
    /// <paramref name="pre"/> is given (contiguous [m, n]) it receives x·wᵀ + bias, the pre-activation a GELU backward
    /// needs. One dtype for all; half types compute in float32 and round once on store. k may be 0 (y = act(bias)).
    /// Default: <see cref="CompositeKernels.Linear"/> (matmul, add, activation).
    /// </summary>
    void Linear(Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? bias, Storage y, Storage? pre, int m, int n, int k, Activation activation) =>
        CompositeKernels.Linear(this, x, xLayout, w, wLayout, bias, y, pre, m, n, k, activation);

    /// <summary>
    /// The elementwise half of <see cref="Linear"/>'s backward, in one pass over the contiguous [m, n] output gradient
    /// <paramref name="dy"/>: dz = dy·act′ (from <paramref name="saved"/>: the output y for Relu, the pre-activation
    /// for Gelu and GeluTanh; dz and saved are null for None) and dBias = Σ over rows of dz (of dy for None), when
    /// given, accumulated in float32 or wider. dBias is of dy's dtype or, for a 16-bit dy, Float32 (the sum stored
    /// unrounded: the float32 master bias's gradient under autocast). Default: <see cref="CompositeKernels.LinearBackward"/>.
    /// </summary>
    void LinearBackward(Storage dy, Storage? saved, Storage? dz, Storage? dBias, int m, int n, Activation activation) =>
        CompositeKernels.LinearBackward(this, dy, saved, dz, dBias, m, n, activation);

    /// <summary>
    /// The two products of <see cref="Linear"/>'s backward in one call (on CUDA one grouped GEMM launch): dx = dz·w
    /// (contiguous [m, k]) and dw = dzᵀ·x (contiguous [n, k]) from the activation gradient dz (contiguous [m, n]), x laid
    /// out as [m, k] and w as [n, k] (any strides, read in place). Either output may be null: only the other product
    /// runs. dz, x, w and dx share one floating dtype; dw is of that dtype or, for 16-bit operands, Float32: the
    /// float32 sums of the exact products of the 16-bit values, never rounded to 16 bits (the float32 master weight's
    /// gradient under autocast; see <c>GradFunction.PreferredGradDType</c>). Half types sum in float32 and round once
    /// on store. m = 0 gives dw = 0, n = 0 gives dx = 0. Default: <see cref="CompositeKernels.LinearGradients"/>
    /// (two MatMuls).
    /// </summary>
    void LinearGradients(Storage dz, Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? dx, Storage? dw, int m, int n, int k) =>
        CompositeKernels.LinearGradients(this, dz, x, xLayout, w, wLayout, dx, dw, m, n, k);
}

/// <summary>The sizes and flags of one <see cref="IBackend.ScaledDotProductAttention"/> call.</summary>
/// <param name="Batch">Independent heads (all batch dims folded).</param>
/// <param name="Queries">L, queries per head.</param>
/// <param name="Keys">S, keys (and values) per head.</param>
/// <param name="HeadDim">E, the width of q and k.</param>
/// <param name="ValueDim">Ev, the width of v and o.</param>
/// <param name="Scale">Multiplies q·kᵀ before the mask is added.</param>
/// <param name="Causal">Key j is hidden from query i when j &gt; i (PyTorch's top-left aligned lower triangle).</param>
/// <param name="SharedMask">The mask is one [L, S] matrix for every head rather than [Batch, L, S].</param>
/// <param name="Heads">The inner of the two batch levels the operands' strides describe (h of [b, h]): head index
/// n of [0, Batch) is (n / Heads, n % Heads). At least 1 and dividing Batch (1: one batch level).</param>
public readonly record struct AttentionShape(int Batch, int Queries, int Keys, int HeadDim, int ValueDim, double Scale, bool Causal, bool SharedMask, int Heads = 1);

/// <summary>
/// Where one attention operand ([Batch, rows, cols], see <see cref="AttentionShape"/>) lies in its storage: element
/// (n, i, c) is at <c>Offset + (n / Heads)·BatchStride + (n % Heads)·HeadStride + i·RowStride + c</c> (columns are
/// always adjacent). Any tensor whose batch dims fold into two such levels is described without a copy: the q, k, v
/// of a fused projection ([b, h, t, d] views of one [b, t, 3·h·d] tensor) or a [b, h, t, d] view of [b, t, h, d] memory.
/// </summary>
/// <param name="Data">The storage.</param>
/// <param name="Offset">Element (0, 0, 0).</param>
/// <param name="BatchStride">Between consecutive outer batch indices (n / Heads).</param>
/// <param name="HeadStride">Between consecutive inner batch indices (n % Heads).</param>
/// <param name="RowStride">Between consecutive rows.</param>
public readonly record struct AttentionOperand(Storage Data, long Offset, long BatchStride, long HeadStride, long RowStride)
{
    /// <summary>A contiguous [batch, rows, cols] operand from element 0.</summary>
    public static AttentionOperand Dense(Storage data, int rows, int cols) => new(data, 0, (long)rows * cols, 0, cols);

    /// <summary>The operand as a [Batch / Heads, Heads, rows, cols] layout (what composites copy through).</summary>
    public Layout ToLayout(AttentionShape shape, int rows, int cols)
    {
        int heads = Math.Max(shape.Heads, 1);
        return new([shape.Batch / heads, heads, rows, cols], [BatchStride, HeadStride, RowStride, 1], Offset);
    }

    /// <summary>Storage index of row <paramref name="i"/> of head <paramref name="n"/>.</summary>
    public long Row(int n, int heads, int i) => Offset + n / heads * BatchStride + n % heads * HeadStride + i * RowStride;
}

/// <summary>Hyper-parameters of one Adam/AdamW update.</summary>
/// <param name="Lr">Learning rate.</param>
/// <param name="Beta1">First-moment decay.</param>
/// <param name="Beta2">Second-moment decay.</param>
/// <param name="Eps">Added to the denominator.</param>
/// <param name="WeightDecay">L2 penalty (Adam) or decoupled decay (AdamW).</param>
/// <param name="Decoupled">True for AdamW: p ← p·(1 − lr·wd) before the Adam step.</param>
public readonly record struct AdamConfig(double Lr, double Beta1, double Beta2, double Eps, double WeightDecay, bool Decoupled);

/// <summary>Hyper-parameters of one SGD update.</summary>
/// <param name="Lr">Learning rate.</param>
/// <param name="Momentum">Momentum factor (0 for none).</param>
/// <param name="Dampening">Dampening of the momentum.</param>
/// <param name="WeightDecay">L2 penalty.</param>
/// <param name="Nesterov">Nesterov momentum.</param>
public readonly record struct SgdConfig(double Lr, double Momentum, double Dampening, double WeightDecay, bool Nesterov);

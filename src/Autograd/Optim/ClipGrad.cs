using Engine.Graph;

namespace Engine.Autograd.Optim;

/// <summary>
/// Gradient clipping, as <c>torch.nn.utils</c>: <see cref="GetTotalNorm"/> measures, <see cref="ClipGradsWithNorm"/>
/// scales by a given norm, and <see cref="ClipGradNorm"/> is the two in a row (<c>clip_grad_norm_</c>).
/// </summary>
public static class ClipGrad
{
    /// <summary>
    /// The norm of <paramref name="tensors"/> (typically gradients) taken together as one vector, as
    /// <c>torch.nn.utils.get_total_norm</c>: the norm of the per-tensor norms, their maximum for an infinite
    /// <paramref name="normType"/>. A 0-d tensor on the tensors' device: float64 when any tensor is float64 (so large
    /// or precise float64 values are not rounded through float32), float32 otherwise (half tensors are measured in
    /// float32, where their norm cannot overflow); 0 (float32, CPU) for no tensors. Nothing is read back to the host
    /// unless <paramref name="errorIfNonfinite"/>, which reads the norm and throws <see cref="EngineException"/> when it
    /// is NaN or infinite.
    /// </summary>
    public static Tensor GetTotalNorm(IEnumerable<Tensor> tensors, double normType = 2, bool errorIfNonfinite = false)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        using var _ = GradMode.NoGrad();
        if (list.Count == 0) return Tensor.Zeros([]);
        Tensor total;
        using (var scope = Tensor.NewScope())
        {
            var acc = list.Any(g => g.DType == DType.Float64) ? DType.Float64 : DType.Float32;
            var device = list[0].Device;
            // The per-tensor norms in list order: runs of whole contiguous tensors of one device and kind (float64 or
            // not) in multi-tensor launches (torch._foreach_norm), any other tensor by its own reduction; each norm has
            // the bits its own Norm would have, so the total is the norm of the same values in the same order.
            var parts = new List<Tensor>();
            for (int i = 0; i < list.Count;)
            {
                var g = list[i];
                int end = i + 1;
                if (IsWhole(g))
                    while (end < list.Count && IsWhole(list[end]) && list[end].Device == g.Device && (list[end].DType == DType.Float64) == (g.DType == DType.Float64)) end++;
                var norms = IsWhole(g)
                    ? Tensor.ForeachNorm(list.GetRange(i, end - i), normType)
                    : (g.DType == DType.Float64 ? g : g.To(DType.Float32)).Norm(normType).Reshape(1);
                parts.Add(norms.To(device, acc));
                i = end;
            }
            var stacked = parts.Count == 1 ? parts[0] : Tensor.Cat([.. parts]);
            total = (double.IsPositiveInfinity(normType) ? stacked.Max() : stacked.Norm(normType)).MoveToOuterScope();
        }
        if (errorIfNonfinite && total.Item() is var v && !double.IsFinite(v))
        {
            total.Dispose();
            throw new EngineException("GetTotalNorm", $"the total norm of order {normType} for gradients from `parameters` is non-finite ({v}), so it cannot be clipped; " +
                "to disable this error and scale the gradients by the non-finite norm anyway, pass errorIfNonfinite: false");
        }
        return total;
    }

    /// <summary>
    /// Scales the gradients of <paramref name="parameters"/> in place by min(1, maxNorm/(totalNorm + 1e-6)), as
    /// <c>torch.nn.utils.clip_grads_with_norm_</c>; parameters without a gradient are skipped. The factor is computed
    /// and applied on the device: nothing is read back. A non-finite <paramref name="totalNorm"/> propagates into the
    /// gradients (NaN), which the AMP scaler then detects.
    /// </summary>
    public static void ClipGradsWithNorm(IEnumerable<Tensor> parameters, double maxNorm, Tensor totalNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(totalNorm);
        if (totalNorm.Numel != 1) throw new ShapeException("ClipGradsWithNorm", $"the total norm must have one element, got {Shape.Format(totalNorm.Layout.Shape)}");
        var grads = parameters.Where(p => p.Grad is not null).Select(p => p.Grad!).ToList();
        if (grads.Count == 0) return;
        using var _ = GradMode.NoGrad();
        using var scope = Tensor.NewScope();
        var coef = totalNorm.Reshape().Add(1e-6).Pow(-1).Mul(maxNorm).Clamp(max: 1.0);
        // Whole contiguous gradients are scaled by multi-tensor launches per device (torch._foreach_mul_), the factor
        // rounded to each gradient's dtype as before; any other gradient, or one whose storage already came up (it
        // is scaled once per appearance, as before), by its own multiply.
        var seen = new HashSet<Backends.Storage>(ReferenceEqualityComparer.Instance);
        var byDevice = new Dictionary<Device, List<Tensor>>();
        foreach (var g in grads)
        {
            if (IsWhole(g) && seen.Add(g.Storage))
            {
                if (!byDevice.TryGetValue(g.Device, out var l)) byDevice[g.Device] = l = [];
                l.Add(g);
            }
            else g.MulInPlace(coef.To(g.Device, g.DType));
        }
        foreach (var (device, l) in byDevice) Tensor.ForeachMulInPlace(l, coef.To(device));
    }

    static bool IsWhole(Tensor t) =>
        t.DType.IsFloatingPoint() && t.IsContiguous && t.Layout.Offset == 0 && t.Storage.Count == t.Numel;

    /// <summary>
    /// Scales the gradients of <paramref name="parameters"/> in place so that their total norm (over all of them, as
    /// one vector) is at most <paramref name="maxNorm"/>, and returns that total norm before clipping, as
    /// <c>torch.nn.utils.clip_grad_norm_</c>: <see cref="GetTotalNorm"/> of the gradients, then
    /// <see cref="ClipGradsWithNorm"/>. Without <paramref name="errorIfNonfinite"/> nothing is read back to the host;
    /// with it, a NaN or infinite norm throws before any gradient is touched.
    /// </summary>
    public static Tensor ClipGradNorm(IEnumerable<Tensor> parameters, double maxNorm, double normType = 2, bool errorIfNonfinite = false)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var ps = parameters.ToList();
        var total = GetTotalNorm(ps.Where(p => p.Grad is not null).Select(p => p.Grad!), normType, errorIfNonfinite);
        ClipGradsWithNorm(ps, maxNorm, total);
        return total;
    }
}

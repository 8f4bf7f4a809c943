using Engine.Graph;

namespace Engine.Optim;

/// <summary>Gradient clipping, as <c>torch.nn.utils.clip_grad_norm_</c>.</summary>
public static class ClipGrad
{
    /// <summary>
    /// Scales the gradients of <paramref name="parameters"/> in place so that their total norm (over all of them, as
    /// one vector) is at most <paramref name="maxNorm"/>, and returns that total norm before clipping as a 0-d tensor
    /// on the parameters' device: float64 when any gradient is float64 (so large or precise float64 gradients are not
    /// rounded through float32), float32 otherwise (half gradients are measured in float32, where their norm cannot
    /// overflow). Nothing is read back to the host: the scale factor
    /// min(1, maxNorm/(norm + 1e-6)) is computed and applied on the device. A non-finite norm propagates into the
    /// gradients (PyTorch's behaviour with <c>error_if_nonfinite=False</c>), which the AMP scaler then detects.
    /// </summary>
    public static Tensor ClipGradNorm(IEnumerable<Tensor> parameters, double maxNorm, double normType = 2)
    {
        var grads = parameters.Where(p => p.Grad is not null).Select(p => p.Grad!).ToList();
        using var _ = GradMode.NoGrad();
        if (grads.Count == 0) return Tensor.Zeros([]);
        using var scope = Tensor.NewScope();
        var acc = grads.Any(g => g.DType == DType.Float64) ? DType.Float64 : DType.Float32;
        var norms = grads.Select(g => (g.DType == DType.Float64 ? g : g.To(DType.Float32)).Norm(normType).To(acc)).ToArray();
        var stacked = Tensor.Stack(norms);
        var total = double.IsPositiveInfinity(normType) ? stacked.Max() : stacked.Norm(normType);
        var coef = total.Add(1e-6).Pow(-1).Mul(maxNorm).Clamp(max: 1.0);
        foreach (var g in grads)
        {
            using var c = coef.To(g.DType);
            g.MulInPlace(c);
        }
        return total.MoveToOuterScope();
    }
}

namespace Engine.Nn;

/// <summary>The losses, as <c>torch.nn.functional</c>: cross entropy, negative log likelihood, mean squared error.</summary>
public static class Losses
{
    /// <summary>Cross entropy of logits [N, C] (or [C], or [N, C, d...]) against Int64 class indices.</summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor target, Reduction reduction = Reduction.Mean, long ignoreIndex = -100, double labelSmoothing = 0) =>
        logits.CrossEntropy(target, reduction, ignoreIndex, labelSmoothing);

    /// <summary>Mean squared error.</summary>
    public static Tensor Mse(Tensor input, Tensor target, Reduction reduction = Reduction.Mean) => input.MseLoss(target, reduction);

    /// <summary>
    /// Negative log likelihood of log-probabilities [N, C] against Int64 targets [N]: −logp[n, target[n]], targets
    /// equal to <paramref name="ignoreIndex"/> contribute 0 and are left out of the mean.
    /// </summary>
    public static Tensor Nll(Tensor logProbs, Tensor target, Reduction reduction = Reduction.Mean, long ignoreIndex = -100)
    {
        if (logProbs.Rank != 2 || target.Rank != 1 || target.Size(0) != logProbs.Size(0))
            throw new ShapeException("Nll", $"expected log-probabilities [N, C] and targets [N], got {Shape.Format(logProbs.Layout.Shape)} and {Shape.Format(target.Layout.Shape)}");
        if (target.DType != DType.Int64) throw new DTypeException("Nll", $"targets must be int64, got {target.DType.Name()}");
        using var scope = Tensor.NewScope();
        var keep = target.Ne(ignoreIndex);
        var safe = Tensor.Where(keep, target, Tensor.Zeros([], DType.Int64, target.Device));
        var picked = logProbs.Gather(1, safe.Unsqueeze(1)).Squeeze(1).Neg();
        var masked = Tensor.Where(keep, picked, Tensor.Zeros([], picked.DType, picked.Device));
        var result = reduction switch
        {
            Reduction.None => masked,
            Reduction.Sum => masked.Sum(),
            _ => masked.Sum().Div(keep.Sum().To(masked.DType)),
        };
        return result.MoveToOuterScope();
    }
}

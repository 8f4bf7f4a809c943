namespace Engine.Autograd.Nn;

/// <summary>The losses, as <c>torch.nn.functional</c>: cross entropy, negative log likelihood, mean squared error.</summary>
public static class Losses
{
    /// <summary>Cross entropy of logits [N, C] (or [C], or [N, C, d...]) against Int64 class indices.</summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor target, Reduction reduction = Reduction.Mean, long ignoreIndex = -100, double labelSmoothing = 0) =>
        logits.CrossEntropy(target, reduction, ignoreIndex, labelSmoothing);

    /// <summary>Mean squared error.</summary>
    public static Tensor Mse(Tensor input, Tensor target, Reduction reduction = Reduction.Mean) => input.MseLoss(target, reduction);

    /// <summary>Negative log likelihood of log-probabilities [N, C] (or [C], or [N, C, d...]) against Int64 class indices.</summary>
    public static Tensor Nll(Tensor logProbs, Tensor target, Reduction reduction = Reduction.Mean, long ignoreIndex = -100) =>
        logProbs.NllLoss(target, reduction, ignoreIndex);
}

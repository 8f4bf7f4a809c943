namespace Engine;

public sealed partial class Tensor
{
    // The AMP gradient scaler's kernels as tensor operations (the scaler itself lives in Engine.Amp). Both run on the
    // device and read nothing back, so a scaled training step needs no host synchronization.

    /// <summary>
    /// Multiplies every gradient in place by <paramref name="invScale"/> and sets <paramref name="foundInf"/> to 1 when
    /// any gradient holds an Inf or NaN (it is never reset here), in one fused pass, as PyTorch's
    /// <c>torch._amp_foreach_non_finite_check_and_unscale_</c>. Gradients are whole contiguous tensors of any floating
    /// dtype (Float16/BFloat16 compute in float32 and round once); <paramref name="foundInf"/> and
    /// <paramref name="invScale"/> are one-element float32 tensors; all on one device. Unlike PyTorch, Float16 and
    /// BFloat16 gradients are both accepted, in any mix. One backend launch per
    /// <see cref="Backends.MultiTensor.MaxTensors"/> gradients. Not recorded by autograd.
    /// </summary>
    public static void NonFiniteCheckAndUnscale(IReadOnlyList<Tensor> grads, Tensor foundInf, Tensor invScale)
    {
        const string op = "NonFiniteCheckAndUnscale";
        ArgumentNullException.ThrowIfNull(grads);
        CheckScalarOperand(op, foundInf, foundInf, "foundInf");
        CheckScalarOperand(op, foundInf, invScale, "invScale");
        var storages = new Backends.Storage[grads.Count];
        for (int i = 0; i < grads.Count; i++)
        {
            var g = grads[i];
            CheckSameDevice(op, foundInf, g);
            if (!g.DType.IsFloatingPoint())
                throw new DTypeException(op, $"gradient {i} must be floating point, got {g.Describe()}");
            if (!g.IsContiguous || g.Layout.Offset != 0 || g.Storage.Count != g.Numel)
                throw new ShapeException(op, $"gradient {i} must be a whole contiguous tensor, got {g.Describe()} with layout {g.Layout}");
            for (int j = 0; j < i; j++)
                if (ReferenceEquals(storages[j], g.Storage))
                    throw new EngineException(op, $"gradients {j} and {i} share one storage; each would be unscaled twice");
            storages[i] = g.Storage;
        }
        if (storages.Length == 0) return;
        foreach (var (start, count) in Backends.MultiTensor.Chunks(storages.Length, _ => 0))
            foundInf.Backend.NonFiniteCheckAndUnscale(storages[start..(start + count)], foundInf.Storage, invScale.Storage);
        foreach (var s in storages) s.BumpVersion();
        foundInf.Storage.BumpVersion();
    }

    /// <summary>
    /// Updates the loss scale in place, as PyTorch's <c>torch._amp_update_scale_</c>: when <paramref name="foundInf"/>
    /// is nonzero, scale ← scale·<paramref name="backoffFactor"/> and the growth tracker ← 0; otherwise the tracker
    /// counts one more clean step and, when it reaches <paramref name="growthInterval"/>, scale ←
    /// scale·<paramref name="growthFactor"/> (kept only if finite) and the tracker ← 0. <paramref name="scale"/> and
    /// <paramref name="foundInf"/> are one-element float32 tensors, <paramref name="growthTracker"/> a one-element
    /// int32 tensor, all on one device. Computed on the device; not recorded by autograd.
    /// </summary>
    public static void UpdateScale(Tensor scale, Tensor growthTracker, Tensor foundInf, double growthFactor, double backoffFactor, int growthInterval)
    {
        const string op = "UpdateScale";
        CheckScalarOperand(op, scale, scale, "scale");
        CheckScalarOperand(op, scale, foundInf, "foundInf");
        CheckSameDevice(op, scale, growthTracker);
        if (growthTracker.Numel != 1 || growthTracker.DType != DType.Int32 || growthTracker.Layout.Offset != 0)
            throw new DTypeException(op, $"growthTracker must be a one-element int32 tensor, got {growthTracker.Describe()}");
        if (growthInterval < 1) throw new EngineException(op, $"growthInterval must be at least 1, got {growthInterval}");
        scale.Backend.UpdateScale(scale.Storage, growthTracker.Storage, foundInf.Storage, growthFactor, backoffFactor, growthInterval);
        scale.Storage.BumpVersion();
        growthTracker.Storage.BumpVersion();
    }
}

using Engine.Backends;

namespace Engine;

public sealed partial class Tensor
{
    static void CheckUpdateOperand(string op, Tensor param, Tensor? t, string name, bool sameDType)
    {
        if (t is null) return;
        CheckSameDevice(op, param, t);
        if (!t.IsContiguous || t.Layout.Offset != 0 || t.Storage.Count != t.Numel)
            throw new ShapeException(op, $"{name} must be a whole contiguous tensor, got {t.Layout}");
        if (!t.Layout.Shape.AsSpan().SequenceEqual(param.Layout.Shape))
            throw new ShapeException(op, $"{name} {Shape.Format(t.Layout.Shape)} does not match the parameter {Shape.Format(param.Layout.Shape)}");
        if (sameDType && t.DType != param.DType)
            throw new DTypeException(op, $"{name} is {t.DType.Name()}, the parameter {param.DType.Name()}");
        if (!t.DType.IsFloatingPoint()) throw new DTypeException(op, $"{name} must be floating point, got {t.DType.Name()}");
    }

    static void CheckScalarOperand(string op, Tensor param, Tensor? t, string name)
    {
        if (t is null) return;
        CheckSameDevice(op, param, t);
        if (t.Numel != 1 || t.DType != DType.Float32 || t.Layout.Offset != 0)
            throw new DTypeException(op, $"{name} must be a one-element float32 tensor, got {t.Describe()}");
    }

    /// <summary>
    /// The fused Adam/AdamW update of one parameter tensor, in place (no autograd). <paramref name="step"/> is a
    /// one-element float32 tensor on the parameter's device, advanced by the kernel. With <paramref name="foundInf"/>
    /// nonzero nothing changes; <paramref name="invScale"/> unscales the gradient inside the kernel (AMP).
    /// </summary>
    public static void AdamUpdate(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, Tensor step, AdamConfig config,
        Tensor? invScale = null, Tensor? foundInf = null)
    {
        const string op = "AdamUpdate";
        CheckUpdateOperand(op, param, param, "param", true);
        CheckUpdateOperand(op, param, grad, "grad", false);
        CheckUpdateOperand(op, param, expAvg, "expAvg", true);
        CheckUpdateOperand(op, param, expAvgSq, "expAvgSq", true);
        CheckScalarOperand(op, param, step, "step");
        CheckScalarOperand(op, param, invScale, "invScale");
        CheckScalarOperand(op, param, foundInf, "foundInf");
        param.Backend.AdamStep(param.Storage, grad.Storage, expAvg.Storage, expAvgSq.Storage, step.Storage, config, invScale?.Storage, foundInf?.Storage);
        param.Storage.BumpVersion(); expAvg.Storage.BumpVersion(); expAvgSq.Storage.BumpVersion(); step.Storage.BumpVersion();
    }

    /// <summary>
    /// The fused SGD update of one parameter tensor, in place (no autograd); the momentum buffer is initialized from
    /// the gradient when <paramref name="momentumInitialized"/> is false. Skips and unscales like <see cref="AdamUpdate"/>.
    /// </summary>
    public static void SgdUpdate(Tensor param, Tensor grad, Tensor? momentum, bool momentumInitialized, SgdConfig config,
        Tensor? invScale = null, Tensor? foundInf = null)
    {
        const string op = "SgdUpdate";
        CheckUpdateOperand(op, param, param, "param", true);
        CheckUpdateOperand(op, param, grad, "grad", false);
        CheckUpdateOperand(op, param, momentum, "momentum", true);
        CheckScalarOperand(op, param, invScale, "invScale");
        CheckScalarOperand(op, param, foundInf, "foundInf");
        param.Backend.SgdStep(param.Storage, grad.Storage, momentum?.Storage, momentumInitialized, config, invScale?.Storage, foundInf?.Storage);
        param.Storage.BumpVersion();
        momentum?.Storage.BumpVersion();
    }
}

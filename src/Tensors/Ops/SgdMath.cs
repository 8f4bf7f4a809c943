using System.Runtime.CompilerServices;

namespace Engine.Ops;

/// <summary>
/// The per-element SGD update (momentum, dampening, Nesterov, L2 weight decay), written once for every backend's
/// kernel, as <see cref="AdamMath"/> is. The order of operations is torch.optim.SGD's single-tensor path:
/// <code>
/// d ← g·invScale + wd·p
/// with momentum: b ← (initialized ? μ·b + (1 − dampening)·d : d);  d ← (nesterov ? d + μ·b : b)
/// p ← p − lr·d
/// </code>
/// Momentum is used when a buffer is given and μ ≠ 0. The float32 form rounds each constant to float32 once.
/// </summary>
public readonly struct SgdMath
{
    readonly double _lr, _mu, _keep, _wd, _inv;
    readonly float _lrF, _muF, _keepF, _wdF, _invF;
    readonly bool _nesterov, _initialized;

    /// <summary>
    /// The update of one step. <paramref name="hasBuffer"/>: a momentum buffer exists; <paramref name="bufferInitialized"/>:
    /// it holds the previous step's momentum (false on the first step, when it is set to the gradient).
    /// </summary>
    public SgdMath(double lr, double momentum, double dampening, double weightDecay, bool nesterov, bool hasBuffer, bool bufferInitialized, double invScale)
    {
        _lr = lr; _mu = momentum; _keep = 1 - dampening; _wd = weightDecay; _inv = invScale;
        _lrF = (float)lr; _muF = (float)momentum; _keepF = (float)_keep; _wdF = (float)weightDecay; _invF = (float)invScale;
        _nesterov = nesterov; _initialized = bufferInitialized;
        UsesBuffer = hasBuffer && momentum != 0;
    }

    /// <summary>True when the update reads and writes the momentum buffer.</summary>
    public bool UsesBuffer { get; }

    /// <summary>True when the update reads the buffer's previous value (a kernel need not load it otherwise).</summary>
    public bool ReadsBuffer => UsesBuffer && _initialized;

    /// <summary>One element in float64: the parameter <paramref name="p"/> and momentum <paramref name="buf"/> in place (buf untouched unless <see cref="UsesBuffer"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Update(ref double p, double g, ref double buf)
    {
        double x = p, d = g * _inv;
        if (_wd != 0) d += _wd * x;
        if (UsesBuffer)
        {
            double b = _initialized ? _mu * buf + _keep * d : d;
            buf = b;
            d = _nesterov ? d + _mu * b : b;
        }
        p = x - _lr * d;
    }

    /// <summary>One element in float32, with the constants rounded to float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Update(ref float p, float g, ref float buf)
    {
        float x = p, d = g * _invF;
        if (_wdF != 0) d += _wdF * x;
        if (UsesBuffer)
        {
            float b = _initialized ? _muF * buf + _keepF * d : d;
            buf = b;
            d = _nesterov ? d + _muF * b : b;
        }
        p = x - _lrF * d;
    }
}

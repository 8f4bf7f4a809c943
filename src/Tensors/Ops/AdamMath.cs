using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Ops;

/// <summary>
/// The per-element Adam/AdamW update, written once for every backend's kernel: the CPU loop and the ILGPU kernel both
/// build one of these per launch (or per thread) and call <see cref="Update(ref double, double, ref double, ref double)"/>
/// or its float32 twin for each element. A plain struct of scalars: no allocation, no virtual call, nothing ILGPU cannot
/// compile. The order of operations is torch.optim.Adam(W)'s single-tensor path:
/// <code>
/// g ← g·invScale;  AdamW: p ← p·(1 − lr·wd)  |  Adam: g ← g + wd·p
/// m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;  p ← p − (lr / (1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + ε)
/// </code>
/// The float32 form rounds each constant to float32 once (the CUDA backend's narrow-dtype path); the float64 form
/// keeps them in float64 (the CPU backend for every dtype, CUDA for Float64).
/// </summary>
public readonly struct AdamMath
{
    readonly double _b1, _b2, _c1, _c2, _eps, _wd, _decay, _stepSize, _sqrtBias2, _inv;
    readonly float _b1F, _b2F, _c1F, _c2F, _epsF, _wdF, _decayF, _stepSizeF, _sqrtBias2F, _invF;
    readonly bool _decoupled;

    /// <summary>
    /// The update of one step: <paramref name="stepSize"/> and <paramref name="sqrtBias2"/> come from
    /// <see cref="StepSize"/> and <see cref="SqrtBias2"/>; <paramref name="invScale"/> multiplies each gradient first (1 without AMP).
    /// </summary>
    public AdamMath(double lr, double beta1, double beta2, double eps, double weightDecay, bool decoupled,
        double stepSize, double sqrtBias2, double invScale)
    {
        _b1 = beta1; _b2 = beta2; _c1 = 1 - beta1; _c2 = 1 - beta2; _eps = eps; _wd = weightDecay; _decay = 1 - lr * weightDecay;
        _stepSize = stepSize; _sqrtBias2 = sqrtBias2; _inv = invScale; _decoupled = decoupled;
        _b1F = (float)beta1; _b2F = (float)beta2; _c1F = (float)_c1; _c2F = (float)_c2; _epsF = (float)eps; _wdF = (float)weightDecay;
        _decayF = (float)_decay; _stepSizeF = (float)stepSize; _sqrtBias2F = (float)sqrtBias2; _invF = (float)invScale;
    }

    // The bias corrections, in float64: in float32, 1 − β2ᵗ would lose about four digits at small t.

    /// <summary>lr / (1 − β1ᵗ) for step <paramref name="step"/> (counted from 1).</summary>
    public static double StepSize(double lr, double beta1, float step) => lr / (1 - Math.Pow(beta1, step));

    /// <summary>√(1 − β2ᵗ) for step <paramref name="step"/> (counted from 1).</summary>
    public static double SqrtBias2(double beta2, float step) => Math.Sqrt(1 - Math.Pow(beta2, step));

    /// <summary>One element in float64: the parameter <paramref name="p"/> and moments <paramref name="m"/>, <paramref name="v"/> in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Update(ref double p, double g, ref double m, ref double v)
    {
        double x = p;
        g *= _inv;
        if (_wd != 0) { if (_decoupled) x *= _decay; else g += _wd * x; }
        double mi = _b1 * m + _c1 * g;
        double vi = _b2 * v + _c2 * g * g;
        x -= _stepSize * mi / (Math.Sqrt(vi) / _sqrtBias2 + _eps);
        m = mi; v = vi; p = x;
    }

    /// <summary>
    /// Four elements of <see cref="Update(ref double, double, ref double, ref double)"/> at once: the same operations in
    /// the same order (separate multiplies and adds, no fused multiply-add; IEEE division and square root), so every
    /// lane has the scalar form's bits. The CPU kernel's fast path for dense float32 parameters.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Update(ref Vector256<double> p, Vector256<double> g, ref Vector256<double> m, ref Vector256<double> v)
    {
        var x = p;
        g *= Vector256.Create(_inv);
        if (_wd != 0) { if (_decoupled) x *= Vector256.Create(_decay); else g += Vector256.Create(_wd) * x; }
        var mi = Vector256.Create(_b1) * m + Vector256.Create(_c1) * g;
        var vi = Vector256.Create(_b2) * v + Vector256.Create(_c2) * g * g;
        x -= Vector256.Create(_stepSize) * mi / (Vector256.Sqrt(vi) / Vector256.Create(_sqrtBias2) + Vector256.Create(_eps));
        m = mi; v = vi; p = x;
    }

    /// <summary>One element in float32, with the constants rounded to float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Update(ref float p, float g, ref float m, ref float v)
    {
        float x = p;
        g *= _invF;
        if (_wdF != 0) { if (_decoupled) x *= _decayF; else g += _wdF * x; }
        float mi = _b1F * m + _c1F * g;
        float vi = _b2F * v + _c2F * g * g;
        x -= _stepSizeF * mi / (MathF.Sqrt(vi) / _sqrtBias2F + _epsF);
        m = mi; v = vi; p = x;
    }
}

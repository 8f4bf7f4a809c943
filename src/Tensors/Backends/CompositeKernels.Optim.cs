using Engine.Ops;

namespace Engine.Backends;

// The optimizer steps and the AMP scaler's kernels, composed. Everything stays on the device: a skipped step (found-inf
// nonzero) is a Where that keeps the old values, and the step count and bias corrections are one-element storages.
// The updates compute in float64 from the stored values with the same order of operations as the fused kernels
// (torch.optim's single-tensor path), each result rounded once on store. A pure scaling is AffineOp(s, −0), which
// adds exactly nothing (x·s + (−0) = x·s for every x).
public static partial class CompositeKernels
{
    static readonly Layout One = new([1], [1], 0);

    /// <summary><see cref="IBackend.AdamStep"/> composed from elementwise kernels, in float64.</summary>
    public static void AdamStep(IBackend backend, Storage param, Storage grad, Storage expAvg, Storage expAvgSq, Storage step, AdamConfig config, Storage? invScale, Storage? foundInf)
    {
        var v = Vector(param.Count, "AdamStep");
        int n = (int)param.Count;
        const DType F = DType.Float64;
        using var s = new Scratch(backend, param.Device);
        var skip = SkipFlag(backend, s, foundInf);

        // t = step + 1, stored unless the step is skipped.
        var t = s.New(DType.Float32, 1);
        backend.Unary(new AffineOp(1, 1), step, One, t, One);
        if (skip is null) backend.Copy(t, One, step, One);
        else backend.Where(skip, One, step, One, t, One, step, One);

        // Bias corrections: stepSize = lr / (1 − β₁ᵗ), √(1 − β₂ᵗ).
        var t64 = s.As(t, F, One);
        var bc1 = s.New(F, 1);
        backend.Binary(new PowOp(), s.Constant(F, config.Beta1), One, t64, One, bc1, One);
        backend.Unary(new AffineOp(-1, 1), bc1, One, bc1, One);
        var stepSize = s.New(F, 1);
        backend.Binary(new DivOp(), s.Constant(F, config.Lr), One, bc1, One, stepSize, One);
        var sqrtBc2 = s.New(F, 1);
        backend.Binary(new PowOp(), s.Constant(F, config.Beta2), One, t64, One, sqrtBc2, One);
        backend.Unary(new AffineOp(-1, 1), sqrtBc2, One, sqrtBc2, One);
        backend.Unary(new SqrtOp(), sqrtBc2, One, sqrtBc2, One);

        var x = s.Copy(param, F, v);
        var m = s.Copy(expAvg, F, v);
        var q = s.Copy(expAvgSq, F, v);
        var g = ScaledGradient(backend, s, grad, invScale, n);
        var tmp = s.New(F, n);
        double lr = config.Lr, wd = config.WeightDecay, b1 = config.Beta1, b2 = config.Beta2;
        if (wd != 0)
        {
            if (config.Decoupled) backend.Unary(new AffineOp(1 - lr * wd, -0.0), x, v, x, v);
            else
            {
                backend.Unary(new AffineOp(wd, -0.0), x, v, tmp, v);
                backend.Binary(new AddOp(), g, v, tmp, v, g, v);
            }
        }
        // m = β₁·m + (1 − β₁)·g; v = β₂·v + (1 − β₂)·g·g
        backend.Unary(new AffineOp(b1, -0.0), m, v, m, v);
        backend.Unary(new AffineOp(1 - b1, -0.0), g, v, tmp, v);
        backend.Binary(new AddOp(), m, v, tmp, v, m, v);
        backend.Unary(new AffineOp(b2, -0.0), q, v, q, v);
        backend.Unary(new AffineOp(1 - b2, -0.0), g, v, tmp, v);
        backend.Binary(new MulOp(), tmp, v, g, v, tmp, v);
        backend.Binary(new AddOp(), q, v, tmp, v, q, v);
        // x −= stepSize·m / (√v / √(1 − β₂ᵗ) + eps)
        var denom = g; // the gradient is no longer needed
        backend.Unary(new SqrtOp(), q, v, denom, v);
        backend.Binary(new DivOp(), denom, v, sqrtBc2, Broadcast(n), denom, v);
        backend.Unary(new AffineOp(1, config.Eps), denom, v, denom, v);
        backend.Binary(new MulOp(), stepSize, Broadcast(n), m, v, tmp, v);
        backend.Binary(new DivOp(), tmp, v, denom, v, tmp, v);
        backend.Binary(new SubOp(), x, v, tmp, v, x, v);

        Store(backend, s, m, expAvg, skip, n);
        Store(backend, s, q, expAvgSq, skip, n);
        Store(backend, s, x, param, skip, n);
    }

    /// <summary><see cref="IBackend.SgdStep"/> composed from elementwise kernels, in float64.</summary>
    public static void SgdStep(IBackend backend, Storage param, Storage grad, Storage? momentum, bool momentumInitialized, SgdConfig config, Storage? invScale, Storage? foundInf)
    {
        var v = Vector(param.Count, "SgdStep");
        int n = (int)param.Count;
        const DType F = DType.Float64;
        double lr = config.Lr, mu = config.Momentum, wd = config.WeightDecay;
        if (mu != 0 && momentum is null) throw new EngineException("SgdStep", $"momentum {mu} needs a momentum buffer");
        using var s = new Scratch(backend, param.Device);
        var skip = SkipFlag(backend, s, foundInf);
        var x = s.Copy(param, F, v);
        var d = ScaledGradient(backend, s, grad, invScale, n);
        var tmp = s.New(F, n);
        if (wd != 0)
        {
            backend.Unary(new AffineOp(wd, -0.0), x, v, tmp, v);
            backend.Binary(new AddOp(), d, v, tmp, v, d, v);
        }
        if (mu != 0)
        {
            var buf = s.New(F, n);
            if (momentumInitialized)
            {
                // buf = μ·buf + (1 − dampening)·d
                backend.Copy(momentum!, v, buf, v);
                backend.Unary(new AffineOp(mu, -0.0), buf, v, buf, v);
                backend.Unary(new AffineOp(1 - config.Dampening, -0.0), d, v, tmp, v);
                backend.Binary(new AddOp(), buf, v, tmp, v, buf, v);
            }
            else backend.Copy(d, v, buf, v);
            Store(backend, s, buf, momentum!, skip, n);
            if (config.Nesterov)
            {
                backend.Unary(new AffineOp(mu, -0.0), buf, v, tmp, v);
                backend.Binary(new AddOp(), d, v, tmp, v, d, v);
            }
            else d = buf;
        }
        backend.Unary(new AffineOp(lr, -0.0), d, v, tmp, v);
        backend.Binary(new SubOp(), x, v, tmp, v, x, v);
        Store(backend, s, x, param, skip, n);
    }

    /// <summary>
    /// <see cref="IBackend.NonFiniteCheckAndUnscale"/> composed. Per gradient: x − x is 0 for every finite x and NaN
    /// for ±Inf and NaN, and a max-reduce is NaN when any element is, so found-inf ← 1 where that max ≠ itself; then
    /// g ← g·invScale in float32 (float64 for Float64), rounded once.
    /// </summary>
    public static void NonFiniteCheckAndUnscale(IBackend backend, IReadOnlyList<Storage> grads, Storage foundInf, Storage invScale)
    {
        const string op = "NonFiniteCheckAndUnscale";
        foreach (var g in grads)
            ContractChecks.Floating(op, g.DType);
        if (grads.Count == 0) return;
        using var s = new Scratch(backend, foundInf.Device);
        var one = s.Constant(DType.Float32, 1);
        foreach (var g in grads)
        {
            if (g.Count == 0) continue;
            var v = Vector(g.Count, op);
            int n = (int)g.Count;
            var w = Work(g.DType);
            var gw = s.As(g, w, v);
            var diff = s.New(w, n);
            backend.Binary(new SubOp(), gw, v, gw, v, diff, v);
            var max = s.New(w, 1);
            backend.Reduce(ReduceOp.Max, diff, v, 1, max, null, 0);
            var bad = s.New(DType.Bool, 1);
            backend.Binary(new CompareOp(Comparison.Ne), max, One, max, One, bad, One);
            backend.Where(bad, One, one, One, foundInf, One, foundInf, One);
            backend.Binary(new MulOp(), gw, v, s.As(invScale, w, One), Broadcast(n), gw, v);
            if (gw != g) backend.Copy(gw, v, g, v);
        }
    }

    /// <summary>
    /// <see cref="IBackend.UpdateScale"/> composed from one-element kernels: the backed-off and the grown scale are
    /// computed as float·double rounded to float (PyTorch's arithmetic), and three Wheres pick the new scale and
    /// tracker.
    /// </summary>
    public static void UpdateScale(IBackend backend, Storage scale, Storage growthTracker, Storage foundInf, double growthFactor, double backoffFactor, int growthInterval)
    {
        using var s = new Scratch(backend, scale.Device);
        var s64 = s.As(scale, DType.Float64, One);
        var t64 = s.New(DType.Float64, 1);
        var backedOff = s.New(DType.Float32, 1);
        backend.Unary(new AffineOp(backoffFactor, -0.0), s64, One, t64, One);
        backend.Copy(t64, One, backedOff, One);
        var grown = s.New(DType.Float32, 1);
        backend.Unary(new AffineOp(growthFactor, -0.0), s64, One, t64, One);
        backend.Copy(t64, One, grown, One);
        // Finite: |grown| < ∞, false for ±Inf and NaN; the scale never grows to Inf.
        var abs = s.New(DType.Float32, 1);
        backend.Unary(new AbsOp(), grown, One, abs, One);
        var finite = s.New(DType.Bool, 1);
        backend.Binary(new CompareOp(Comparison.Lt), abs, One, s.Constant(DType.Float32, double.PositiveInfinity), One, finite, One);
        var successful = s.New(DType.Int32, 1);
        backend.Unary(new AffineOp(1, 1), growthTracker, One, successful, One);
        var hit = s.New(DType.Bool, 1);
        backend.Binary(new CompareOp(Comparison.Eq), successful, One, s.Constant(DType.Int32, growthInterval), One, hit, One);
        var found = s.New(DType.Bool, 1);
        backend.Binary(new CompareOp(Comparison.Ne), foundInf, One, s.Constant(DType.Float32, 0), One, found, One);

        // scale ← found ? backedOff : hit ∧ finite ? grown : scale
        var next = s.New(DType.Float32, 1);
        backend.Where(finite, One, grown, One, scale, One, next, One);
        backend.Where(hit, One, next, One, scale, One, next, One);
        backend.Where(found, One, backedOff, One, next, One, scale, One);
        // tracker ← found ∨ hit ? 0 : successful
        var zero = s.Constant(DType.Int32, 0);
        backend.Where(hit, One, zero, One, successful, One, successful, One);
        backend.Where(found, One, zero, One, successful, One, growthTracker, One);
    }

    /// <summary><see cref="IBackend.ForeachAdamStep"/> as one <see cref="IBackend.AdamStep"/> per entry.</summary>
    public static void ForeachAdamStep(IBackend backend, IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage> expAvg,
        IReadOnlyList<Storage> expAvgSq, IReadOnlyList<Storage> step, AdamConfig config, Storage? invScale, Storage? foundInf)
    {
        ContractChecks.Foreach("ForeachAdamStep", param.Count, grad.Count, expAvg.Count, expAvgSq.Count, step.Count);
        for (int j = 0; j < param.Count; j++)
            backend.AdamStep(param[j], grad[j], expAvg[j], expAvgSq[j], step[j], config, invScale, foundInf);
    }

    /// <summary><see cref="IBackend.ForeachSgdStep"/> as one <see cref="IBackend.SgdStep"/> per entry.</summary>
    public static void ForeachSgdStep(IBackend backend, IReadOnlyList<Storage> param, IReadOnlyList<Storage> grad, IReadOnlyList<Storage>? momentum,
        bool momentumInitialized, SgdConfig config, Storage? invScale, Storage? foundInf)
    {
        ContractChecks.Foreach("ForeachSgdStep", param.Count, grad.Count, momentum?.Count ?? param.Count);
        for (int j = 0; j < param.Count; j++)
            backend.SgdStep(param[j], grad[j], momentum?[j], momentumInitialized, config, invScale, foundInf);
    }

    /// <summary>
    /// <see cref="IBackend.ForeachNorm"/> as one norm reduction per entry (half entries widened to float32 first, as
    /// the per-tensor total norm does), each copied into its slot of the norms.
    /// </summary>
    public static void ForeachNorm(IBackend backend, IReadOnlyList<Storage> xs, double ord, Storage norms, int offset)
    {
        const string op = "ForeachNorm";
        ContractChecks.Foreach(op, xs.Count);
        using var s = new Scratch(backend, norms.Device);
        for (int j = 0; j < xs.Count; j++)
        {
            var x = xs[j];
            ContractChecks.Floating(op, x.DType);
            var v = Vector(x.Count, op);
            var w = s.As(x, Work(x.DType), v);
            var y = s.New(w.DType, 1);
            backend.Reduce(ReduceOp.Norm, w, v, 1, y, null, ord);
            backend.Copy(y, One, norms, new Layout([1], [1], offset + j));
        }
    }

    /// <summary><see cref="IBackend.ForeachMul"/> as one broadcast multiply per entry.</summary>
    public static void ForeachMul(IBackend backend, IReadOnlyList<Storage> xs, Storage scalar)
    {
        ContractChecks.Foreach("ForeachMul", xs.Count);
        foreach (var x in xs)
        {
            if (x.Count == 0) continue;
            var v = Vector(x.Count, "ForeachMul");
            backend.Binary(new MulOp(), x, v, scalar, Broadcast((int)x.Count), x, v);
        }
    }

    /// <summary><see cref="IBackend.ForeachCopy"/> as one <see cref="IBackend.Copy"/> per entry.</summary>
    public static void ForeachCopy(IBackend backend, IReadOnlyList<Storage> xs, IReadOnlyList<Storage> ys)
    {
        const string op = "ForeachCopy";
        ContractChecks.Foreach(op, xs.Count, ys.Count);
        for (int j = 0; j < xs.Count; j++)
        {
            ContractChecks.ForeachCopyEntry(op, xs[j], ys[j]);
            if (xs[j].Count == 0) continue;
            var v = Vector(xs[j].Count, op);
            backend.Copy(xs[j], v, ys[j], v);
        }
    }

    // found-inf ≠ 0 as a one-element Bool, or null when there is no found-inf.
    static Storage? SkipFlag(IBackend backend, Scratch s, Storage? foundInf)
    {
        if (foundInf is null) return null;
        var skip = s.New(DType.Bool, 1);
        backend.Binary(new CompareOp(Comparison.Ne), foundInf, One, s.Constant(DType.Float32, 0), One, skip, One);
        return skip;
    }

    // The gradient in float64, times the inverse scale when there is one.
    static Storage ScaledGradient(IBackend backend, Scratch s, Storage grad, Storage? invScale, int n)
    {
        var v = Vector(n);
        var g = s.Copy(grad, DType.Float64, v);
        if (invScale is not null) backend.Binary(new MulOp(), g, v, s.As(invScale, DType.Float64, One), Broadcast(n), g, v);
        return g;
    }

    // Rounds a float64 result into its destination once; a skipped step keeps the destination as it was.
    static void Store(IBackend backend, Scratch s, Storage value, Storage destination, Storage? skip, int n)
    {
        var v = Vector(n);
        if (skip is null) { backend.Copy(value, v, destination, v); return; }
        var rounded = destination.DType == value.DType ? value : s.New(destination.DType, n);
        if (rounded != value) backend.Copy(value, v, rounded, v);
        backend.Where(skip, Broadcast(n), destination, v, rounded, v, destination, v);
    }
}

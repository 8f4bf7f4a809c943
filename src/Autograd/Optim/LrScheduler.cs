namespace Engine.Autograd.Optim;

/// <summary>
/// Sets the learning rate of every group of an optimizer as a function of the step, from each group's initial
/// rate. Call <see cref="Step"/> once per optimizer step, after it (as PyTorch's schedulers).
/// </summary>
public abstract class LrScheduler
{
    readonly double[] _baseLrs;

    /// <summary>Binds to an optimizer and applies the rate of step 0.</summary>
    protected LrScheduler(Optimizer optimizer)
    {
        Optimizer = optimizer;
        _baseLrs = optimizer.ParamGroups.Select(g => g.Lr).ToArray();
        Apply();
    }

    /// <summary>The optimizer driven.</summary>
    public Optimizer Optimizer { get; }

    /// <summary>Steps taken so far (the schedule position saved in checkpoints).</summary>
    public long LastStep { get; private set; }

    /// <summary>The rate of the first group now.</summary>
    public double CurrentLr => Optimizer.ParamGroups[0].Lr;

    /// <summary>The rate for a group whose initial rate is <paramref name="baseLr"/> at <paramref name="step"/>.</summary>
    public abstract double LrAt(long step, double baseLr);

    /// <summary>Advances one step and sets the new rates.</summary>
    public void Step() { LastStep++; Apply(); }

    /// <summary>Jumps to a position (resuming a run).</summary>
    public void SetStep(long step) { LastStep = step; Apply(); }

    void Apply()
    {
        for (int i = 0; i < _baseLrs.Length; i++) Optimizer.ParamGroups[i].Lr = LrAt(LastStep, _baseLrs[i]);
    }
}

/// <summary>Linear warm-up from 0 over <c>warmupSteps</c>, then cosine decay to <c>minLr</c> at <c>totalSteps</c> (constant after).</summary>
public sealed class WarmupCosineLr(Optimizer optimizer, long warmupSteps, long totalSteps, double minLr = 0) : LrScheduler(optimizer)
{
    /// <inheritdoc/>
    public override double LrAt(long step, double baseLr)
    {
        if (warmupSteps > 0 && step < warmupSteps) return baseLr * (step + 1) / warmupSteps;
        if (step >= totalSteps) return minLr;
        double progress = (double)(step - warmupSteps) / Math.Max(1, totalSteps - warmupSteps);
        return minLr + 0.5 * (baseLr - minLr) * (1 + Math.Cos(Math.PI * progress));
    }
}

/// <summary>Multiplies the rate by <c>gamma</c> every <c>stepSize</c> steps (<c>torch.optim.lr_scheduler.StepLR</c>).</summary>
public sealed class StepLr(Optimizer optimizer, long stepSize, double gamma = 0.1) : LrScheduler(optimizer)
{
    /// <inheritdoc/>
    public override double LrAt(long step, double baseLr) => baseLr * Math.Pow(gamma, step / stepSize);
}

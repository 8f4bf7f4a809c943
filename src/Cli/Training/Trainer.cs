using System.Diagnostics;
using System.Globalization;
using Engine.Amp;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;

namespace Engine.Cli.Training;

/// <summary>
/// The training loop of <c>engine train</c>: AdamW with warm-up + cosine schedule, optional clipping and AMP; a
/// checkpoint every <see cref="TrainKnobs.SaveEvery"/> steps and at the end, only ever of finite weights; metrics
/// appended per step; SIGINT/SIGTERM save and exit 130; too many bad steps in a row stop with exit code 4. With
/// several ranks (<see cref="DataParallel"/>) each trains on its share of the global batch under
/// DistributedDataParallel; rank 0 alone, given the run directory (<paramref name="run"/> is null on the others),
/// writes and prints.
/// </summary>
sealed class Trainer(RunDirectory? run, ITask task, TrainOptions o, Device device, TrainKnobs knobs, ResolvedCheckpoint? resumeFrom, DataParallel? ranks = null)
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public int Run()
    {
        var dist = ranks ?? DataParallel.Single;
        var w = dist.IsWriter ? Console.Out : TextWriter.Null;
        device = dist.RankDevice(device);
        string runPath = run?.Path ?? "rank 0's run directory";
        // A --init-from run's model is the Hugging Face directory's (its vocabulary, head, activation and epsilon too);
        // resumed, the checkpoint's, which records all of it.
        var config = o.InitFrom is not { } init ? new GptConfig(task.VocabSize, task.ContextLength, o.Layers, o.Heads, o.DModel, o.Dropout)
            : resumeFrom is { } rc0 ? Checkpoint.ReadConfig(rc0) : HfInit.Config(init, o.Dropout);
        var generator = new Generator(o.Seed);
        using var model = new Gpt(config, device, DType.Float32, generator);
        if (o.InitFrom is { } from && resumeFrom is null) HfInit.LoadWeights(model, from);
        using var optimizer = new AdamW(model.Parameters(), o.Lr, weightDecay: o.WeightDecay);
        DType? autocast = o.Precision switch { "fp16" => DType.Float16, "bf16" => DType.BFloat16, _ => null };
        // The scaler is always constructed for mixed precision: for bf16 it is the documented pass-through.
        using var scaler = new GradScaler(enabled: autocast is not null);
        long start = 0, dataPosition = 0;
        TrainerState? resumed = null;
        if (resumeFrom is { } c)
        {
            resumed = Checkpoint.ReadTrainer(c);
            Checkpoint.Restore(c, model, optimizer, device);
            start = resumed.Step;
            dataPosition = resumed.DataPosition;
            generator.SetState(new GeneratorState(resumed.RngSeed, resumed.RngOffset));
            if (resumed.Scaler is { } sc && autocast is not null) scaler.LoadStateDict(sc);
        }
        // The schedule follows this invocation's --steps and --lr, from the current step on.
        foreach (var g in optimizer.ParamGroups) g.Lr = o.Lr;
        var schedule = new WarmupCosineLr(optimizer, Math.Max(1, o.Steps / 10), o.Steps, o.Lr / 10);
        schedule.SetStep(resumed?.ScheduleStep ?? 0);
        // After the restore: DDP checks that every rank built the same model and copies rank 0's weights to the others.
        using var ddp = dist.Wrap(model, device);

        w.WriteLine($"engine train: task {task.Name}{(task.Tokenizer is { } tk ? $" ({tk.Name} tokenizer)" : "")} (vocab {task.VocabSize}, context {task.ContextLength}), GPT {o.Layers} layers × {o.Heads} heads × d{o.DModel}, {model.ParameterCount():N0} parameters, on {device}");
        if (o.InitFrom is { } source && resumeFrom is null)
            w.WriteLine($"initialized from {source}: vocab {config.VocabSize}, {config.ContextLength} positions, {(config.Activation == GptActivation.GeluTanh ? "gelu_new" : "gelu")}, LayerNorm ε {config.LayerNormEpsilon:G}, {(config.TiedHead ? "tied" : "untied")} head");
        w.WriteLine(o.Precision switch
        {
            "fp16" => $"precision fp16: float32 master weights, float16 autocast; gradient scaler on: dynamic loss scaling from {scaler.GetScale():G} (×{scaler.GrowthFactor} after {scaler.GrowthInterval} clean steps, ×{scaler.BackoffFactor} and the step skipped on Inf/NaN)",
            "bf16" => "precision bf16: float32 master weights, bfloat16 autocast; gradient scaler off: bfloat16 has float32's exponent range, so gradients do not underflow and need no loss scaling (the scaler passes through)",
            _ => "precision fp32: float32 throughout, no autocast; gradient scaler off (float32 gradients do not underflow)",
        });
        if (resumeFrom is { } rc)
        {
            var changes = resumed!.Options.ByName().Where(kv => o.ByName()[kv.Key] != kv.Value).Select(kv => $"{kv.Key} {kv.Value} → {o.ByName()[kv.Key]}").ToList();
            w.WriteLine($"resuming from {rc.StepDir} (step {start}){(rc.Note is null ? "" : "; " + rc.Note)}{(changes.Count > 0 ? "; from this step on: " + string.Join(", ", changes) : "")}");
        }
        w.WriteLine(string.Create(Inv, $"steps {start}→{o.Steps}, batch {o.Batch}, AdamW lr {o.Lr:G3} (warm-up + cosine), weight decay {o.WeightDecay}, clip {(o.ClipNorm > 0 ? o.ClipNorm.ToString(Inv) : "off")}, seed {o.Seed}; checkpoints every {knobs.SaveEvery} steps (keeping {knobs.Keep}) in {Path.GetFullPath(runPath)}{(dist.IsDistributed ? $"; {dist.WorldSize} ranks × {dist.LocalBatch(o.Batch)} sequences" : "")}"));

        using var metrics = run is null ? null : new Metrics(run.Path, start);
        using var interrupts = new Interrupts();
        var progress = new Progress(o.Steps, knobs.Quiet || !dist.IsWriter);   // reported by rank 0 only
        long end = Math.Min(o.Steps, knobs.StopAt ?? long.MaxValue);
        long step = start, lastSaved = resumeFrom is null ? -1 : start, badRun = 0, skipped = 0;
        double lastLoss = double.NaN, lastGoodLoss = double.NaN;
        long lastGoodStep = start;
        string? stopReason = null;
        // The lowest validation loss so far and its step: `best` in the run directory names that checkpoint.
        BestCheckpoint? best = resumed?.Best;
        double? lastVal = null;
        bool evaluates = knobs.EvalEvery > 0 && task.HasValidation;

        bool Save(BestCheckpoint? newBest = null)
        {
            if (lastSaved == step && newBest is null) return true;
            if (!Checkpoint.AllFinite(model))
            {
                Console.Error.WriteLine($"engine: not saving step {step}: the weights are not finite; the last checkpoint (step {Math.Max(lastSaved, 0)}) stays the latest");
                return false;
            }
            var state = new TrainerState(o, step, schedule.LastStep, dataPosition, generator.GetState().Seed, generator.GetState().Offset,
                autocast is null ? null : scaler.StateDict(), knobs, newBest ?? best);
            if (run is not null)
            {
                run.SaveCheckpoint(step, dir => Checkpoint.Write(dir, model, task, optimizer, state), knobs.Keep);
                Metrics.WritePlot(run.Path);
            }
            lastSaved = step;
            return true;
        }

        // Validation loss on the steps that are due: a new lowest is saved at once (trainer.json records it, so a resume
        // compares with it) and `best` pointed at it; only then does the old best lose its protection from pruning.
        void Validate()
        {
            lastVal = null;
            if (!evaluates || (step % knobs.EvalEvery != 0 && step != o.Steps)) return;
            lastVal = task.ValidationLoss(model, knobs.EvalSamples, o.Batch);
            if (lastVal is double v && double.IsFinite(v) && (best is null || v < best.ValLoss))
            {
                var candidate = new BestCheckpoint(step, v);
                if (Save(candidate))
                {
                    best = candidate;
                    run?.SetBest(step);
                }
            }
        }

        var clock = Stopwatch.StartNew();
        progress.Run(start, () =>
        {
            for (; step < end;)
            {
                double t0 = clock.Elapsed.TotalSeconds;
                double lr = optimizer.ParamGroups[0].Lr;
                bool taken = true;
                using (var scope = Tensor.NewScope())
                {
                    var (x, y) = dist.Shard(task.Batch(o.Batch, o.Seed, dataPosition));
                    Tensor loss;
                    using (autocast is { } region ? AutocastMode.Autocast(region, device.Type) : null)
                    {
                        var input = x.To(device);
                        var logits = ddp is null ? model.Forward(input) : ddp.Forward(input);
                        loss = logits.View(-1, config.VocabSize).CrossEntropy(y.To(device).View(-1));
                    }
                    if (autocast is null)
                    {
                        loss.Backward();
                        if (o.ClipNorm > 0) ClipGrad.ClipGradNorm(model.Parameters(), o.ClipNorm);
                        optimizer.Step();
                    }
                    else
                    {
                        scaler.Scale(loss).Backward();
                        scaler.Unscale(optimizer);                 // clip the true gradients
                        if (o.ClipNorm > 0) ClipGrad.ClipGradNorm(model.Parameters(), o.ClipNorm);
                        scaler.Step(optimizer);                    // skipped on the device when a gradient is Inf/NaN
                        scaler.Update();
                        if (scaler.LastStepTaken is { } t && !t.Item<bool>()) { taken = false; skipped++; }
                    }
                    optimizer.ZeroGrad();
                    lastLoss = dist.Average(loss.Item());
                }
                schedule.Step();
                step++;
                dataPosition += o.Batch;
                double tps = (double)o.Batch * task.ContextLength / Math.Max(clock.Elapsed.TotalSeconds - t0, 1e-9);
                double scale = autocast is null ? 1.0 : scaler.GetScale();
                bool good = double.IsFinite(lastLoss) && taken;
                if (good) Validate();
                else lastVal = null;
                metrics?.Add(step, lastLoss, lr, scale, tps, o.Batch, lastVal);
                if (dist.IsWriter) progress.Report(step, lastLoss, tps, string.Join("  ", new[]
                {
                    o.Precision == "fp16" ? string.Create(Inv, $"scale {scale:G}  skipped {skipped}") : "",
                    best is { } b ? string.Create(Inv, $"val {b.ValLoss:F4} (best, step {b.Step})") : "",
                }.Where(x => x.Length > 0)));

                if (good) { badRun = 0; lastGoodLoss = lastLoss; lastGoodStep = step; }
                else if (++badRun >= knobs.MaxBadSteps) { stopReason = "diverged"; return; }
                if (dist.StopRequested(interrupts.Requested) is { } sig) { stopReason = sig; Save(); return; }
                if (good && step % knobs.SaveEvery == 0) Save();
            }
        });

        if (stopReason == "diverged")
        {
            string last = lastSaved >= 0 ? $"the last good checkpoint, step {lastSaved}, is kept in {runPath}" : "no checkpoint was written";
            throw new TrainingDivergedException(string.Create(Inv,
                $"training diverged: {badRun} consecutive steps (up to step {step}) with a non-finite loss or an update skipped by the gradient scaler (--max-bad-steps {knobs.MaxBadSteps}); last finite loss {lastGoodLoss:G4} at step {lastGoodStep}; {last}. Try a lower --lr or fp32/bf16"));
        }
        if (stopReason is { } signal)
        {
            if (dist.IsWriter)
            Console.Error.WriteLine(lastSaved == step
                ? $"engine: interrupted by {signal} at step {step}: checkpoint saved; continue with: engine train --resume {runPath}"
                : $"engine: interrupted by {signal} at step {step}: nothing new saved (the weights were not finite)");
            return ExitCodes.Interrupted;
        }
        Save();
        if (end < o.Steps)
        {
            w.WriteLine($"stopped at step {end} of {o.Steps}; continue with: engine train --resume {runPath}");
            return ExitCodes.Ok;
        }
        double acc = task.Evaluate(model, knobs.EvalSamples);
        w.WriteLine(string.Create(Inv, $"final loss: {lastLoss:F4}"));
        if (best is { } bb) w.WriteLine(string.Create(Inv, $"best val loss: {bb.ValLoss:F4} at step {bb.Step} ({Path.Combine(runPath, RunDirectory.BestLink)} → {RunDirectory.StepName(bb.Step)})"));
        w.WriteLine(string.Create(Inv, $"eval accuracy: {acc * 100:F1}%"));
        w.WriteLine("samples:");
        foreach (var s in task.Samples(model, 3, o.Seed)) w.WriteLine("  " + s);
        w.WriteLine($"wrote {Path.Combine(runPath, RunDirectory.StepName(step))}, {Path.Combine(runPath, Metrics.FileName)}, {Path.Combine(runPath, Metrics.PlotName)}");
        return ExitCodes.Ok;
    }
}

using System.Diagnostics;
using System.Globalization;

using Engine.Cli.Training;
using Engine.Nn;
using Engine.Optim;
using Engine.Serialization;

namespace Engine.Cli.Commands;

/// <summary>
/// <c>engine train</c>: a GPT on the built-in sorting task (default) or a character-level model of a text file,
/// with AdamW, warm-up + cosine schedule and gradient clipping; prints progress, writes metrics.csv, loss.svg and a
/// checkpoint to --out; --resume DIR continues a run bit for bit on the CPU.
/// </summary>
static class TrainCommand
{
    static readonly HashSet<string> Flags = ["quiet"];

    public static int Run(string[] argv)
    {
        var a = new Args(argv, Flags);
        var resume = a.Str("resume");
        TrainOptions o;
        Dictionary<string, string>? optMeta = null;
        if (resume is not null)
        {
            var optPath = Path.Combine(resume, Checkpoint.OptimizerFile);
            if (!File.Exists(optPath)) throw new UsageException($"--resume {resume}: {optPath} not found");
            using (var oc = SafeTensors.Load(optPath)) optMeta = oc.Metadata;
            o = TrainOptions.FromMetadata(optMeta);
            o = o with { Steps = a.Int("steps", o.Steps, 1), Device = a.Str("device", o.Device) };
        }
        else
        {
            o = new TrainOptions
            {
                Device = a.Str("device", "cpu"),
                Precision = a.Str("precision", "fp32"),
                Text = a.Str("text"),
                Steps = a.Int("steps", 300, 1),
                Batch = a.Int("batch", 64, 1, 65536),
                Lr = a.Double("lr", 3e-3, 0, 10),
                Layers = a.Int("layers", 2, 1, 256),
                Heads = a.Int("heads", 4, 1, 256),
                DModel = a.Int("dmodel", 64, 1, 65536),
                Context = a.Int("context", 64, 2, 1 << 16),
                Dropout = a.Double("dropout", 0, 0, 0.99),
                Seed = (ulong)a.Int("seed", 1337, 0),
                SortLength = a.Int("sort-length", 6, 2, 64),
                SortDigits = a.Int("sort-digits", 3, 2, 64),
                EvalSamples = a.Int("eval-samples", 500, 1, 100000),
                WeightDecay = a.Double("weight-decay", 0.01, 0, 10),
            };
        }
        var outDir = a.Str("out") ?? resume ?? Path.Combine("runs", o.Text is null ? "sort" : "text");
        bool quiet = a.Has("quiet");
        long stopAt = a.Int("stop-at", int.MaxValue, 1);
        a.RejectUnknown("train");

        if (o.DModel % o.Heads != 0) throw new UsageException($"--dmodel {o.DModel} must be divisible by --heads {o.Heads}");
        if (o.Precision is not ("fp32" or "fp16" or "bf16")) throw new UsageException($"--precision must be fp32, fp16 or bf16, got '{o.Precision}'");
        var device = ParseDevice(o.Device);
        if (o.Text is not null && !File.Exists(o.Text)) throw new UsageException($"--text {o.Text}: file not found");

        ITask task = o.Text is null ? new SortTask(o.SortLength, o.SortDigits) : new TextTask(File.ReadAllText(o.Text), o.Context);
        var config = new GptConfig(task.VocabSize, task.ContextLength, o.Layers, o.Heads, o.DModel, o.Dropout);
        var generator = new Generator(o.Seed);
        using var model = new Gpt(config, device, DType.Float32, generator);
        using var optimizer = new AdamW(model.Parameters(), o.Lr, weightDecay: o.WeightDecay);
        var schedule = new WarmupCosineLr(optimizer, Math.Max(1, o.Steps / 10), o.Steps, o.Lr / 10);
        DType? autocast = o.Precision switch { "fp16" => DType.Float16, "bf16" => DType.BFloat16, _ => null };
        // The scaler is always constructed for mixed precision: for bf16 it is the documented pass-through.
        using var scaler = new GradScaler(enabled: autocast is not null);
        long start = 0;
        if (resume is not null)
        {
            using var mc = SafeTensors.Load(Path.Combine(resume, Checkpoint.ModelFile), device);
            model.LoadStateDict(mc.Tensors);
            using var oc = SafeTensors.Load(Path.Combine(resume, Checkpoint.OptimizerFile), device);
            var scalars = oc.Metadata.Where(kv => kv.Key.StartsWith("param_groups.", StringComparison.Ordinal))
                .ToDictionary(kv => kv.Key, kv => double.Parse(kv.Value, CultureInfo.InvariantCulture));
            optimizer.LoadStateDict(new OptimizerState(oc.Tensors, scalars));
            start = long.Parse(oc.Metadata["step"], CultureInfo.InvariantCulture);
            schedule.SetStep(long.Parse(oc.Metadata["schedule.step"], CultureInfo.InvariantCulture));
            generator.SetState(new GeneratorState(ulong.Parse(oc.Metadata["rng.seed"], CultureInfo.InvariantCulture), ulong.Parse(oc.Metadata["rng.offset"], CultureInfo.InvariantCulture)));
            var scalerState = oc.Metadata.Where(kv => kv.Key.StartsWith("scaler.", StringComparison.Ordinal))
                .ToDictionary(kv => kv.Key["scaler.".Length..], kv => double.Parse(kv.Value, CultureInfo.InvariantCulture));
            if (scalerState.Count > 0 && autocast is not null) scaler.LoadStateDict(scalerState);
        }

        var w = Console.Out;
        w.WriteLine($"engine train: task {task.Name} (vocab {task.VocabSize}, context {task.ContextLength}), GPT {o.Layers} layers × {o.Heads} heads × d{o.DModel}, {model.ParameterCount():N0} parameters, on {device}");
        w.WriteLine(o.Precision switch
        {
            "fp16" => $"precision fp16: float32 master weights, float16 autocast; gradient scaler on: dynamic loss scaling from {scaler.GetScale():G} (×{scaler.GrowthFactor} after {scaler.GrowthInterval} clean steps, ×{scaler.BackoffFactor} and the step skipped on Inf/NaN)",
            "bf16" => "precision bf16: float32 master weights, bfloat16 autocast; gradient scaler off: bfloat16 has float32's exponent range, so gradients do not underflow and need no loss scaling (the scaler passes through)",
            _ => "precision fp32: float32 throughout, no autocast; gradient scaler off (float32 gradients do not underflow)",
        });
        w.WriteLine($"steps {start}→{o.Steps}, batch {o.Batch}, AdamW lr {o.Lr:G3} (warm-up + cosine), weight decay {o.WeightDecay}, clip {o.ClipNorm}, seed {o.Seed}; writing to {Path.GetFullPath(outDir)}");
        Directory.CreateDirectory(outDir);
        var metrics = new Metrics(outDir, append: resume is not null);
        var progress = new Progress(w, o.Steps, quiet);
        var sw = Stopwatch.StartNew();
        double lastLoss = double.NaN;
        long skipped = 0;
        long tokensPerStep = (long)o.Batch * task.ContextLength;
        long end = Math.Min(o.Steps, stopAt);
        for (long step = start; step < end; step++)
        {
            double t0 = sw.Elapsed.TotalSeconds;
            using (var scope = Tensor.NewScope())
            {
                var (x, y) = task.Batch(o.Batch, o.Seed, step);
                Tensor loss;
                using (autocast is { } region ? Amp.Autocast(region, device.Type) : null)
                {
                    var logits = model.Forward(x);
                    loss = logits.View(-1, task.VocabSize).CrossEntropy(y.View(-1));
                }
                if (autocast is null)
                {
                    loss.Backward();
                    ClipGrad.ClipGradNorm(model.Parameters(), o.ClipNorm);
                    optimizer.Step();
                }
                else
                {
                    scaler.Scale(loss).Backward();
                    scaler.Unscale(optimizer);                 // clip the true gradients
                    ClipGrad.ClipGradNorm(model.Parameters(), o.ClipNorm);
                    scaler.Step(optimizer);                    // skipped on the device when a gradient is Inf/NaN
                    scaler.Update();
                    if (scaler.LastStepTaken is { } taken && !taken.Item<bool>()) skipped++;
                }
                optimizer.ZeroGrad();
                lastLoss = loss.Item();
            }
            schedule.Step();
            double dt = sw.Elapsed.TotalSeconds - t0;
            double tps = tokensPerStep / Math.Max(dt, 1e-9);
            double scale = autocast is null ? 1.0 : scaler.GetScale();
            metrics.Add(step + 1, lastLoss, optimizer.ParamGroups[0].Lr, scale, tps);
            progress.Report(step + 1, lastLoss, tps, o.Precision == "fp16" ? $"scale {scale:G}, skipped {skipped}" : "scale 1 (off), skipped 0");
        }
        progress.Done();
        metrics.Flush();
        metrics.Close();
        metrics.WriteSvg(Path.Combine(outDir, "loss.svg"));
        Checkpoint.Save(outDir, model, task, optimizer, schedule, generator, Math.Max(start, end), o, autocast is null ? null : scaler.StateDict());
        if (end < o.Steps) w.WriteLine($"stopped at step {end} of {o.Steps}; continue with: engine train --resume {outDir}");
        double acc = task.Evaluate(model, o.EvalSamples);
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"final loss: {lastLoss:F4}"));
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"eval accuracy: {acc * 100:F1}%"));
        w.WriteLine("samples:");
        foreach (var s in task.Samples(model, 3, o.Seed)) w.WriteLine("  " + s);
        w.WriteLine($"wrote {Path.Combine(outDir, "metrics.csv")}, {Path.Combine(outDir, "loss.svg")}, {Path.Combine(outDir, Checkpoint.ModelFile)}, {Path.Combine(outDir, Checkpoint.OptimizerFile)}");
        return 0;
    }

    public static Device ParseDevice(string s)
    {
        Device d;
        try { d = Device.Parse(s); }
        catch (FormatException e) { throw new UsageException($"--device: {e.Message}"); }
        // Fails with a clear DeviceUnavailableException when no backend serves the device.
        Engine.Backends.BackendRegistry.Get(d);
        return d;
    }
}

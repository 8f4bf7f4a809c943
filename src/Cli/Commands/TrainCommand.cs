using System.ComponentModel;
using System.Globalization;
using Engine.Backends.Cpu;
using Engine.Cli.Text;
using Engine.Cli.Training;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary>The options of <c>engine train</c>; each option's help text states its default.</summary>
sealed class TrainSettings : CommandSettings
{
    [CommandOption("--out <DIR>"), Description("Run directory for checkpoints, metrics.csv and loss.svg (default runs/sort, or runs/text with --text). A new run needs an empty or absent directory (see --force).")]
    public string? Out { get; set; }

    [CommandOption("--resume <DIR>"), Description("Continue a run: a run directory (its latest checkpoint) or one of its step directories. --steps may grow; --lr, --batch, --clip and --device may change from the current step on; the model, task, seed and precision come from the checkpoint.")]
    public string? Resume { get; set; }

    [CommandOption("--force"), Description("Start a new run in a directory that holds an earlier run, deleting its checkpoints, metrics and plot; with --resume from an older step, discard the checkpoints after it (or overwrite a non-empty --out).")]
    public bool Force { get; set; }

    [CommandOption("--text <FILE>"), Description("Train a language model of a UTF-8 text file (tokenized in memory by --tokenizer) instead of the sorting task.")]
    public string? Text { get; set; }

    [CommandOption("--tokenizer <NAME>"), Description("Tokenizer of --text: char (default: the file's distinct characters), gpt2, cl100k or o200k. With --data it comes from the data set's meta.json.")]
    public string? Tokenizer { get; set; }

    [CommandOption("--data <DIR>"), Description("Train on a token data set written by engine prepare (train.bin, val.bin, meta.json), read memory-mapped; validation loss every --eval-every steps, the lowest kept as best/.")]
    public string? Data { get; set; }

    [CommandOption("--init-from <DIR>"), Description("Fine-tune a Hugging Face GPT-2 directory (config.json, model.safetensors): the model's shape and weights come from it (--layers, --heads, --dmodel may only repeat them; --context is the training window, at most its n_positions; --dropout defaults to its resid_pdrop). Needs --data DIR or --text FILE; the tokenizer is the data set's, or --tokenizer, or the directory's own files (gpt2 for a 50,257-token model without any).")]
    public string? InitFrom { get; set; }

    [CommandOption("--eval-every <N>"), Description("With --data: steps between validation losses (val_loss in metrics.csv; the checkpoint with the lowest is saved and linked as best), and at the last step (default 100).")]
    public long? EvalEvery { get; set; }

    [CommandOption("--steps <N>"), Description("Total optimizer steps of the run (default 300).")]
    public long? Steps { get; set; }

    [CommandOption("--batch <N>"), Description("Sequences per step (default 64).")]
    public int? Batch { get; set; }

    [CommandOption("--lr <RATE>"), Description("Peak AdamW learning rate: linear warm-up over the first 10% of steps, then cosine decay to a tenth (default 0.003).")]
    public double? Lr { get; set; }

    [CommandOption("--weight-decay <W>"), Description("AdamW's decoupled weight decay (default 0.01).")]
    public double? WeightDecay { get; set; }

    [CommandOption("--clip <NORM>"), Description("Clip the gradients' total norm to this value; 0 turns clipping off (default 1).")]
    public double? Clip { get; set; }

    [CommandOption("--layers <N>"), Description("Transformer blocks (default 2).")]
    public int? Layers { get; set; }

    [CommandOption("--heads <N>"), Description("Attention heads per block; must divide --dmodel (default 4).")]
    public int? Heads { get; set; }

    [CommandOption("--dmodel <N>"), Description("Width of the model (default 64).")]
    public int? DModel { get; set; }

    [CommandOption("--context <N>"), Description("Context length of a text model (default 64; the sorting task sets its own).")]
    public int? Context { get; set; }

    [CommandOption("--dropout <P>"), Description("Dropout probability (default 0).")]
    public double? Dropout { get; set; }

    [CommandOption("--seed <N>"), Description("Seed of the initialization, the data stream and dropout: the same seed and options give bit-identical checkpoints (default 1337).")]
    public ulong? Seed { get; set; }

    [CommandOption("--sort-length <N>"), Description("Digits per sequence of the sorting task (default 6).")]
    public int? SortLength { get; set; }

    [CommandOption("--sort-digits <N>"), Description("Distinct digits of the sorting task (default 3).")]
    public int? SortDigits { get; set; }

    [CommandOption("--precision <P>"), Description("fp32 (default), fp16 (float16 autocast with dynamic loss scaling) or bf16 (bfloat16 autocast; no loss scaling needed).")]
    public string? Precision { get; set; }

    [CommandOption("--device <DEVICE>"), Description("cpu (default), cuda or cuda:N.")]
    public string? Device { get; set; }

    [CommandOption("--threads <N>"), Description("CPU threads for the kernels (default: ENGINE_NUM_THREADS, else all cores). Results do not depend on it.")]
    public int? Threads { get; set; }

    [CommandOption("--save-every <N>"), Description("Write a checkpoint every N steps; one is always written at the end (default 1000).")]
    public long? SaveEvery { get; set; }

    [CommandOption("--keep <K>"), Description("Keep the newest K checkpoints (default 3).")]
    public int? Keep { get; set; }

    [CommandOption("--max-bad-steps <N>"), Description("Stop with exit code 4 after N consecutive steps with a non-finite loss or an update skipped by the fp16 scaler, keeping the last good checkpoint (default 100).")]
    public int? MaxBadSteps { get; set; }

    [CommandOption("--stop-at <STEP>"), Description("Stop after this step with a checkpoint, as an interruption would; continue later with --resume.")]
    public long? StopAt { get; set; }

    [CommandOption("--eval-samples <N>"), Description("Held-out samples for the accuracy printed at the end (default 500).")]
    public int? EvalSamples { get; set; }

    [CommandOption("--quiet"), Description("Print no progress, only the summary.")]
    public bool Quiet { get; set; }

    [CommandOption("--nproc <N>"), Description("Data-parallel ranks on this machine, started through Open MPI's mpirun; --batch is the global batch, split across them (default 1). Under mpirun or srun the ranks are found without it.")]
    public int? Nproc { get; set; }

    [CommandOption("--dist-timeout <SECONDS>"), Description("With several ranks: how long a rank waits for the others in a collective before it fails naming them, exit code 10 (default 60).")]
    public double? DistTimeout { get; set; }

    /// <summary>The options given on the command line, by name, as text (to compare with a checkpoint's).</summary>
    public Dictionary<string, string> Given()
    {
        var inv = CultureInfo.InvariantCulture;
        var d = new Dictionary<string, string>();
        void Add(string name, object? v) { if (v is not null) d[name] = Convert.ToString(v is double x ? x.ToString("R", inv) : v, inv)!; }
        Add("text", TrainCommand.FullTextPath(Text)); Add("tokenizer", Tokenizer); Add("data", TrainCommand.FullTextPath(Data)); Add("init-from", TrainCommand.FullTextPath(InitFrom)); Add("steps", Steps); Add("batch", Batch); Add("lr", Lr); Add("weight-decay", WeightDecay);
        Add("clip", Clip); Add("layers", Layers); Add("heads", Heads); Add("dmodel", DModel); Add("context", Context);
        Add("dropout", Dropout); Add("seed", Seed); Add("sort-length", SortLength); Add("sort-digits", SortDigits);
        Add("precision", Precision); Add("device", Device);
        return d;
    }
}

/// <summary>
/// <c>engine train</c>: resolves the run (new, or resumed from a checkpoint with the allowed changes), takes the run
/// directory's lock, and hands over to <see cref="Trainer"/>.
/// </summary>
sealed class TrainCommand : Command<TrainSettings>
{
    public override int Execute(CommandContext context, TrainSettings s, CancellationToken cancellationToken)
    {
        Check(s.Threads is null or >= 1, "--threads must be at least 1");
        if (s.Threads is int threads) CpuBackend.DefaultOptions = CpuBackend.DefaultOptions with { Threads = threads };
        // A new run's batch is known here; a resume takes the checkpoint's, which the ranks check.
        if (NprocLauncher.RunIfAsked(s.Nproc, s.Batch ?? (s.Resume is null ? new TrainOptions().Batch : null)) is int job) return job;
        using var ranks = DataParallel.Join(s.DistTimeout);
        return s.Resume is null ? StartNew(s, Knobs(s, null), ranks) : Continue(s, ranks);
    }

    /// <summary>How to carry the run out: the flags given, else the checkpoint's (a resume keeps them), else the defaults.</summary>
    static TrainKnobs Knobs(TrainSettings s, TrainKnobs? saved)
    {
        var knobs = new TrainKnobs(
            SaveEvery: s.SaveEvery ?? saved?.SaveEvery ?? 1000, Keep: s.Keep ?? saved?.Keep ?? 3,
            MaxBadSteps: s.MaxBadSteps ?? saved?.MaxBadSteps ?? 100, StopAt: s.StopAt,
            EvalSamples: s.EvalSamples ?? saved?.EvalSamples ?? 500, Quiet: s.Quiet,
            EvalEvery: s.EvalEvery ?? (saved is { EvalEvery: > 0 } k ? k.EvalEvery : 100));
        Check(knobs.SaveEvery >= 1, "--save-every must be at least 1");
        Check(knobs.Keep >= 1, "--keep must be at least 1");
        Check(knobs.MaxBadSteps >= 1, "--max-bad-steps must be at least 1");
        Check(knobs.EvalSamples >= 1, "--eval-samples must be at least 1");
        Check(knobs.StopAt is null or >= 1, "--stop-at must be at least 1");
        Check(knobs.EvalEvery >= 1, "--eval-every must be at least 1");
        return knobs;
    }

    static int StartNew(TrainSettings s, TrainKnobs knobs, DataParallel ranks)
    {
        var d = new TrainOptions();
        var o = new TrainOptions
        {
            Device = s.Device ?? d.Device, Precision = s.Precision ?? d.Precision, Text = FullTextPath(s.Text), Steps = s.Steps ?? d.Steps,
            Data = FullTextPath(s.Data), Tokenizer = s.Text is not null ? s.Tokenizer ?? "char" : s.Tokenizer,
            Batch = s.Batch ?? d.Batch, Lr = s.Lr ?? d.Lr, Layers = s.Layers ?? d.Layers, Heads = s.Heads ?? d.Heads,
            DModel = s.DModel ?? d.DModel, Context = s.Context ?? d.Context, Dropout = s.Dropout ?? d.Dropout, Seed = s.Seed ?? d.Seed,
            SortLength = s.SortLength ?? d.SortLength, SortDigits = s.SortDigits ?? d.SortDigits,
            WeightDecay = s.WeightDecay ?? d.WeightDecay, ClipNorm = s.Clip ?? d.ClipNorm,
        };
        if (s.InitFrom is not null) o = HfInit.Shape(o, s);
        Validate(o);
        var device = Devices.Parse(o.Device);
        Check(o.Text is null || o.Data is null, "--text and --data are two kinds of run: give one");
        if (o.Data is not null)
        {
            // The data set's own tokenizer; a --tokenizer that names another is a mistake worth stopping for.
            var meta = TokenDataset.Open(o.Data);
            if (s.Tokenizer is { } named && named != meta.Tokenizer.Name)
                throw new UsageException($"--tokenizer {named}: {o.Data} is tokenized with {meta.Tokenizer.Name} (its {TokenDataset.MetaFile})");
            o = o with { Tokenizer = meta.Tokenizer.Name };
        }
        else if (o.Text is null && s.Tokenizer is not null) throw new UsageException("--tokenizer applies to --text FILE (or is read from --data DIR's meta.json)");
        if (o.InitFrom is { } init) o = o with { Tokenizer = HfInit.Tokenizer(init, o, s.Tokenizer) };
        if (o.Tokenizer is { } tn) TextTokenizer.CheckName(tn);
        // Read the text before touching the run directory: a missing or binary file changes nothing.
        using var task = MakeTask(o);
        if (o.InitFrom is not null) HfInit.CheckVocabulary(o, task.Task);
        var outDir = s.Out ?? Path.Combine("runs", o.Data is not null ? "tokens" : o.Text is null ? "sort" : "text");
        ranks.LocalBatch(o.Batch);
        // Rank 0 alone owns the run directory; the other ranks train without touching it.
        if (!ranks.IsWriter) return new Trainer(null, task.Task, o, device, knobs, resumeFrom: null, ranks).Run();
        using var run = RunDirectory.OpenForWriting(outDir);
        var existing = Directory.EnumerateFileSystemEntries(outDir).Select(Path.GetFileName).Where(n => n is not RunDirectory.LockFile).ToList();
        if (existing.Count > 0)
        {
            if (!s.Force)
            {
                string what = run.Steps.Count > 0 ? $"a run with checkpoints up to step {run.Steps[^1]}" : $"{existing.Count} file(s)";
                throw new UsageException($"{outDir} already holds {what}: continue it with --resume {outDir}, or start over there with --force");
            }
            ClearRun(outDir);
        }
        return new Trainer(run, task.Task, o, device, knobs, resumeFrom: null, ranks).Run();
    }

    /// <summary>The run's task, disposed with it (a token data task holds its memory-mapped files).</summary>
    sealed class OwnedTask(ITask task) : IDisposable
    {
        public ITask Task => task;
        public void Dispose() => (task as IDisposable)?.Dispose();
    }

    static OwnedTask MakeTask(TrainOptions o) => new(
        o.Data is not null ? new TokenDataTask(o.Data, o.Context)
        : o.Text is not null ? new TextTask(TextTask.ReadText(o.Text), o.Context, o.Tokenizer is null or "char" ? null : TextTokenizer.Bpe(o.Tokenizer))
        : new SortTask(o.SortLength, o.SortDigits));

    static int Continue(TrainSettings s, DataParallel ranks)
    {
        var c = Checkpoints.Resolve(s.Resume!);
        bool fork = s.Out is not null && !SamePath(s.Out, c.RunDir);
        // A first, read-only pass: a finished run is reported, and a refused resume refused, without taking the lock or
        // touching any file. Trouble reading the checkpoint here is left to the checks under the lock below.
        if (TryRead(c) is { } first)
        {
            CheckResume(s, first);
            Validate(Merge(s, first.Options));
            Knobs(s, first.Knobs);
            if (s.Steps is null && first.Step >= first.Options.Steps)
            {
                return Finished(c, first);
            }
        }
        // Into the run's own directory: take its lock first, so a live writer is reported as such (exit 6) and cannot
        // prune the checkpoint while it is being verified; then resolve again under the lock.
        using var own = fork || !ranks.IsWriter ? null : RunDirectory.OpenForWriting(c.RunDir);
        if (own is not null) c = Checkpoints.Resolve(s.Resume!);
        Checkpoints.Verify(c);
        var state = Checkpoint.ReadTrainer(c);
        var saved = state.Options;
        CheckResume(s, state);
        if (s.Steps is null && state.Step >= saved.Steps)
        {
            return Finished(c, state);
        }
        var o = Merge(s, saved);
        Validate(o);
        var device = Devices.Parse(o.Device);
        string? text = o.Text;
        if (text is not null && !File.Exists(text)) throw new UsageException($"the run trains on {text}, which is gone: restore the file to resume");
        if (o.Data is { } data && !File.Exists(Path.Combine(data, TokenDataset.MetaFile))) throw new UsageException($"the run trains on the data set {data}, which is gone: restore it to resume");
        var knobs = Knobs(s, state.Knobs);
        ranks.LocalBatch(o.Batch);
        if (!ranks.IsWriter)
        {
            using var readOnly = MakeTask(o);
            return new Trainer(null, readOnly.Task, o, device, knobs, resumeFrom: c, ranks).Run();
        }
        var outDir = fork ? s.Out! : c.RunDir;
        using var forked = fork ? RunDirectory.OpenForWriting(outDir) : null;
        var run = own ?? forked!;
        // Resuming from an explicitly named older step of the same run would mix its future with the later checkpoints.
        // (Through the run directory, a complete checkpoint newer than `latest` is only a crash's leftover between its
        // rename and the update of `latest`; it is replaced when the run saves that step again.)
        bool namedStep = SamePath(s.Resume!, c.StepDir) && !c.Legacy;
        if (!fork && namedStep && c.Step is long from && run.Steps.Where(x => x > from).ToList() is { Count: > 0 } later)
        {
            // Resuming from an older checkpoint of the same run abandons the later ones: say so rather than mix them.
            if (!s.Force)
                throw new UsageException($"{c.RunDir} has checkpoints after step {from} (up to {later[^1]}): resume from its latest, fork with --out NEW_DIR, or add --force to discard steps after {from}");
            foreach (var x in later) Directory.Delete(Path.Combine(c.RunDir, RunDirectory.StepName(x)), recursive: true);
            // `best` follows the checkpoint resumed from: what it recorded as best, if that is still there.
            RunDirectory.DeleteLink(Path.Combine(c.RunDir, RunDirectory.BestLink));
            if (state.Best is { } b && RunDirectory.IsComplete(Path.Combine(c.RunDir, RunDirectory.StepName(b.Step)))) run.SetBest(b.Step);
        }
        if (fork)
        {
            // A fork into a new directory: it starts with the source's metrics up to the checkpoint, so its plot shows the whole run.
            var existing = Directory.EnumerateFileSystemEntries(outDir).Select(Path.GetFileName).Where(n => n is not RunDirectory.LockFile).ToList();
            if (existing.Count > 0 && !s.Force) throw new UsageException($"{outDir} is not empty: resume into the run's own directory ({c.RunDir}), an empty one, or add --force");
            if (existing.Count > 0) ClearRun(outDir);
            var src = Path.Combine(c.RunDir, Metrics.FileName);
            if (File.Exists(src)) File.Copy(src, Path.Combine(outDir, Metrics.FileName));
        }
        using var task = MakeTask(o);
        return new Trainer(run, task.Task, o, device, knobs, resumeFrom: c, ranks).Run();
    }

    static int Finished(ResolvedCheckpoint c, TrainerState state)
    {
        Console.Out.WriteLine($"the run in {c.RunDir} finished at step {state.Step} of {state.Options.Steps}: nothing to do (give --steps N above {state.Step} to train further)");
        return ExitCodes.Ok;
    }

    static TrainerState? TryRead(ResolvedCheckpoint c)
    {
        try
        {
            Checkpoints.Verify(c);
            return Checkpoint.ReadTrainer(c);
        }
        catch (Exception e) when (e is CheckpointException or IOException) { return null; }
    }

    /// <summary>The checkpoint's options with the resumable ones this invocation gives.</summary>
    static TrainOptions Merge(TrainSettings s, TrainOptions saved) => saved with
    {
        Steps = s.Steps ?? saved.Steps, Lr = s.Lr ?? saved.Lr, Batch = s.Batch ?? saved.Batch,
        ClipNorm = s.Clip ?? saved.ClipNorm, Device = s.Device ?? saved.Device,
    };

    /// <summary>What a resume may not do: change a non-resumable option, or ask for no more steps than are done.</summary>
    static void CheckResume(TrainSettings s, TrainerState state)
    {
        var had = state.Options.ByName();
        foreach (var (name, value) in s.Given())
            if (!TrainOptions.Resumable.Contains(name) && had[name] != value)
                throw new UsageException($"--{name} cannot change on resume (the run has {(had[name].Length == 0 ? "none" : had[name])}, got {value}); a resumed run may change --{string.Join(", --", TrainOptions.Resumable.Order())}");
        if (s.Steps is long steps && steps <= state.Step)
            throw new UsageException($"--steps {steps} is not beyond the checkpoint's step {state.Step}: give a larger --steps to train further");
    }

    /// <summary>
    /// The text file as the checkpoint records it: absolute, so eval, sample and resume find it from any working
    /// directory (a relative path would be resolved against wherever they run).
    /// </summary>
    internal static string? FullTextPath(string? text) => text is null ? null : Path.GetFullPath(text);

    static void Validate(TrainOptions o)
    {
        Check(o.Steps >= 1, "--steps must be at least 1");
        Check(o.Batch is >= 1 and <= 1 << 20, $"--batch must be in [1, {1 << 20}], got {o.Batch}");
        Check(o.Lr is >= 0 and <= 10, $"--lr must be in [0, 10], got {o.Lr}");
        Check(o.WeightDecay is >= 0 and <= 10, $"--weight-decay must be in [0, 10], got {o.WeightDecay}");
        Check(o.ClipNorm >= 0 && double.IsFinite(o.ClipNorm), $"--clip must be a finite number ≥ 0, got {o.ClipNorm}");
        Check(o.Layers is >= 1 and <= 1024, $"--layers must be in [1, 1024], got {o.Layers}");
        Check(o.Heads >= 1, $"--heads must be at least 1, got {o.Heads}");
        Check(o.DModel >= 1, $"--dmodel must be at least 1, got {o.DModel}");
        Check(o.DModel % o.Heads == 0, $"--dmodel {o.DModel} must be divisible by --heads {o.Heads}");
        Check(o.Context is >= 2 and <= 1 << 16, $"--context must be in [2, {1 << 16}], got {o.Context}");
        Check(o.Dropout is >= 0 and < 1, $"--dropout must be in [0, 1), got {o.Dropout}");
        Check(o.SortLength is >= 2 and <= 64, $"--sort-length must be in [2, 64], got {o.SortLength}");
        Check(o.SortDigits is >= 2 and <= 64, $"--sort-digits must be in [2, 64], got {o.SortDigits}");
        Check(o.Precision is "fp32" or "fp16" or "bf16", $"--precision must be fp32, fp16 or bf16, got '{o.Precision}'");
    }

    static void Check(bool ok, string message)
    {
        if (!ok) throw new UsageException(message);
    }

    static bool SamePath(string a, string b) =>
        string.Equals(Path.GetFullPath(a).TrimEnd(Path.DirectorySeparatorChar), Path.GetFullPath(b).TrimEnd(Path.DirectorySeparatorChar), StringComparison.Ordinal);

    /// <summary>Deletes what a run writes (checkpoints, metrics, plot, the old flat layout), nothing else.</summary>
    static void ClearRun(string dir)
    {
        foreach (var d in Directory.EnumerateDirectories(dir, "step-*")) Directory.Delete(d, recursive: true);
        foreach (var name in new[] { RunDirectory.LatestFile, Metrics.FileName, Metrics.PlotName, Checkpoint.ModelFile, Checkpoint.OptimizerFile })
            File.Delete(Path.Combine(dir, name));
        RunDirectory.DeleteLink(Path.Combine(dir, RunDirectory.BestLink));
    }
}

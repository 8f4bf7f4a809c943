using System.Globalization;
using System.Text.Json;
using Engine.Graph;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;
using Engine.Cli.Text;
using Engine.Serialization;

namespace Engine.Cli.Training;

/// <summary>Where a run is: everything besides the tensors that a resumed run needs to continue bit for bit.</summary>
sealed record TrainerState(TrainOptions Options, long Step, long ScheduleStep, long DataPosition, ulong RngSeed, ulong RngOffset,
    IReadOnlyDictionary<string, double>? Scaler, TrainKnobs? Knobs = null, BestCheckpoint? Best = null);

/// <summary>The step with the lowest validation loss so far (the run directory's <c>best</c>), and that loss.</summary>
sealed record BestCheckpoint(long Step, double ValLoss);

/// <summary>
/// The files of one checkpoint (a step directory of a <see cref="RunDirectory"/>, or the old flat layout):
/// <c>model.safetensors</c> (the model's state dict under PyTorch-style names; its metadata holds the model config and
/// the task, so sample and eval need nothing else), <c>optimizer.safetensors</c> (the optimizer's state tensors and
/// hyper-parameters) and <c>trainer.json</c> (<see cref="TrainerState"/>). Loading checks everything it reads: every
/// required key, the values' formats, and that every floating tensor is finite; any failure is one
/// <see cref="CheckpointException"/> line naming the file and the key.
/// </summary>
static class Checkpoint
{
    public const string ModelFile = "model.safetensors";
    public const string OptimizerFile = "optimizer.safetensors";
    public const string TrainerFile = "trainer.json";
    const string ModelFormat = "engine-gpt-v1";
    const string TrainerFormat = "engine-trainer-v1";
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Writes the three files into <paramref name="dir"/> (a run directory's temporary step directory).</summary>
    public static void Write(string dir, Gpt model, ITask task, Optimizer optimizer, TrainerState state)
    {
        var meta = new Dictionary<string, string>(task.Metadata())
        {
            ["format"] = ModelFormat,
            ["config.vocab"] = model.Config.VocabSize.ToString(Inv),
            ["config.context"] = model.Config.ContextLength.ToString(Inv),
            ["config.layers"] = model.Config.Layers.ToString(Inv),
            ["config.heads"] = model.Config.Heads.ToString(Inv),
            ["config.dmodel"] = model.Config.DModel.ToString(Inv),
            ["config.dropout"] = model.Config.Dropout.ToString("R", Inv),
            ["config.tied"] = model.Config.TiedHead ? "1" : "0",
            ["config.activation"] = ActivationName(model.Config.Activation),
            ["config.layer_norm_eps"] = model.Config.LayerNormEpsilon.ToString("R", Inv),
        };
        SafeTensors.Save(Path.Combine(dir, ModelFile), model.StateDict(), meta);
        task.Tokenizer?.Write(dir);
        var st = optimizer.StateDict();
        SafeTensors.Save(Path.Combine(dir, OptimizerFile), st.Tensors, st.Scalars.ToDictionary(kv => kv.Key, kv => kv.Value.ToString("R", Inv)));

        using var f = new FileStream(Path.Combine(dir, TrainerFile), FileMode.CreateNew, FileAccess.Write);
        using (var w = new Utf8JsonWriter(f, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("format", TrainerFormat);
            w.WriteNumber("step", state.Step);
            w.WriteNumber("schedule_step", state.ScheduleStep);
            w.WriteNumber("data_position", state.DataPosition);
            w.WriteStartObject("rng");
            w.WriteNumber("seed", state.RngSeed);
            w.WriteNumber("offset", state.RngOffset);
            w.WriteEndObject();
            if (state.Scaler is { } sc)
            {
                w.WriteStartObject("scaler");
                foreach (var (k, v) in sc) w.WriteNumber(k, v);
                w.WriteEndObject();
            }
            if (state.Knobs is { } run)
            {
                // How the run is carried out, so a plain --resume keeps saving and guarding as it did.
                w.WriteStartObject("run");
                w.WriteNumber("save_every", run.SaveEvery);
                w.WriteNumber("keep", run.Keep);
                w.WriteNumber("max_bad_steps", run.MaxBadSteps);
                w.WriteNumber("eval_samples", run.EvalSamples);
                if (run.EvalEvery > 0) w.WriteNumber("eval_every", run.EvalEvery);
                w.WriteEndObject();
            }
            if (state.Best is { } best)
            {
                // So a resumed run keeps comparing validation losses with the same best.
                w.WriteStartObject("best");
                w.WriteNumber("step", best.Step);
                w.WriteNumber("val_loss", best.ValLoss);
                w.WriteEndObject();
            }
            state.Options.WriteJson(w);
            w.WriteEndObject();
        }
        f.Flush(flushToDisk: true);
    }

    /// <summary>Reads where the run is (trainer.json; the old flat layout keeps it in the optimizer file's metadata).</summary>
    public static TrainerState ReadTrainer(ResolvedCheckpoint c)
    {
        if (c.Legacy)
        {
            var path = Path.Combine(c.StepDir, OptimizerFile);
            using var oc = SafeTensors.Load(path);
            var f = new Fields(oc.Metadata, path);
            var o = TrainOptions.Read(f, "train.");
            long step = f.Long("step", 0);
            return new TrainerState(o, step, f.Long("schedule.step", 0), step * o.Batch, f.ULong("rng.seed"), f.ULong("rng.offset"),
                f.Numbers("scaler.") is { Count: > 0 } s ? s : null);
        }
        var t = Fields.ReadJson(Path.Combine(c.StepDir, TrainerFile));
        if (t.Str("format") != TrainerFormat) throw t.Bad("format", $"is '{t.Str("format")}', expected '{TrainerFormat}'");
        var scaler = t.Numbers("scaler.");
        return new TrainerState(TrainOptions.Read(t, "options."), t.Long("step", 0), t.Long("schedule_step", 0), t.Long("data_position", 0),
            t.ULong("rng.seed"), t.ULong("rng.offset"), scaler.Count > 0 ? scaler : null,
            t.Has("run.save_every") ? new TrainKnobs(t.Long("run.save_every", 1), t.Int("run.keep", 1), t.Int("run.max_bad_steps", 1), null, t.Int("run.eval_samples", 1), false,
                t.Has("run.eval_every") ? t.Long("run.eval_every", 0) : 0) : null,
            t.Has("best.step") ? new BestCheckpoint(t.Long("best.step", 0), t.Double("best.val_loss")) : null);
    }

    /// <summary>A <see cref="GptActivation"/> as a model file records it: Hugging Face's names, as config.json has them.</summary>
    static string ActivationName(GptActivation a) => a == GptActivation.GeluTanh ? "gelu_new" : "gelu";

    /// <summary>
    /// The model config in a model file's metadata. The activation and the LayerNorm epsilon are recorded since models
    /// could come from Hugging Face (<c>--init-from</c>); a file without them is from before, when every model had the
    /// exact GELU and epsilon 1e-5, the <see cref="GptConfig"/> defaults.
    /// </summary>
    public static GptConfig ReadConfig(Fields m)
    {
        if (m.StrOrNull("format") is { } fmt && fmt != ModelFormat) throw m.Bad("format", $"is '{fmt}', expected '{ModelFormat}'");
        if (!m.Has("config.vocab")) throw m.Bad("config.vocab", "is missing (not a model written by engine train?)");
        var activation = m.StrOrNull("config.activation") switch
        {
            null or "gelu" => GptActivation.Gelu,
            "gelu_new" => GptActivation.GeluTanh,
            var a => throw m.Bad("config.activation", $"is '{a}', expected 'gelu' or 'gelu_new'"),
        };
        try
        {
            var config = new GptConfig(m.Int("config.vocab", 1), m.Int("config.context", 1), m.Int("config.layers", 1), m.Int("config.heads", 1),
                m.Int("config.dmodel", 1), m.Double("config.dropout"), m.Bool("config.tied"));
            return (m.Has("config.layer_norm_eps") ? config with { Activation = activation, LayerNormEpsilon = m.Double("config.layer_norm_eps") }
                : config with { Activation = activation }).Validate();
        }
        catch (ArgumentException e) { throw new CheckpointException("Checkpoint", $"{m.File}: invalid model config ({e.Message})", e); }
    }

    /// <summary>The model config of a checkpoint (its model file's metadata).</summary>
    public static GptConfig ReadConfig(ResolvedCheckpoint c)
    {
        var path = Path.Combine(c.StepDir, ModelFile);
        using var contents = SafeTensors.Load(path);
        return ReadConfig(new Fields(contents.Metadata, path));
    }

    /// <summary>
    /// The task recorded in a checkpoint: the model file's metadata names it, and <c>tokenizer.json</c> in the step
    /// directory its tokenizer (checkpoints from before it existed are character models, their vocabulary in the
    /// metadata). A text task reads its text only when <paramref name="textPath"/> is given, a token data task its data
    /// set only when <paramref name="dataPath"/> is.
    /// </summary>
    public static ITask ReadTask(Fields m, string stepDir, string? textPath, string? dataPath = null)
    {
        var kind = m.Str("task");
        if (kind == "sort") return new SortTask(m.Int("task.length", 2), m.Int("task.digits", 2));
        var tokPath = Path.Combine(stepDir, TextTokenizer.FileName);
        TextTokenizer? tok = File.Exists(tokPath) ? TextTokenizer.Read(Fields.ReadJson(tokPath)) : null;
        // A model may have more ids than its tokenizer (a Hugging Face model's padded vocabulary), never fewer.
        if (m.Has("config.vocab") && tok is not null && tok.VocabSize > m.Int("config.vocab", 1))
            throw new CheckpointException("Checkpoint", $"{tokPath}: the {tok.Name} tokenizer has {tok.VocabSize} tokens, the model only {m.Int("config.vocab", 1)}");
        int context = m.Int("task.context", 1);
        if (kind == "text")
        {
            tok ??= TextTokenizer.Char(m.Str("task.vocabulary"));
            return textPath is null ? TextTask.ForTokenizer(tok, context) : new TextTask(TextTask.ReadText(textPath), context, tok);
        }
        if (kind == "tokens")
        {
            if (tok is null) throw new CheckpointException("Checkpoint", $"{tokPath}: missing (a token data model records its tokenizer there)");
            if (dataPath is null) return TokenDataTask.ForTokenizer(tok, context);
            var task = new TokenDataTask(dataPath, context);
            if (task.Tokenizer.Name != tok.Name || task.VocabSize != tok.VocabSize)
            {
                task.Dispose();
                throw new UsageException($"{dataPath} is tokenized with {task.Tokenizer.Name}, but the model was trained with {tok.Name}");
            }
            return task;
        }
        throw m.Bad("task", $"is '{kind}', expected 'sort', 'text' or 'tokens'");
    }

    /// <summary>
    /// Loads a checkpoint's model for sample and eval: verified, config and task from the checkpoint itself.
    /// <paramref name="textPath"/> and <paramref name="dataPath"/> say, given the run's options, where a text or
    /// token data task finds its data (null: not needed).
    /// </summary>
    public static (Gpt Model, ITask Task, TrainOptions? Options) LoadModel(ResolvedCheckpoint c, Device device, Func<TrainOptions?, string?> textPath,
        Func<TrainOptions?, string?>? dataPath = null)
    {
        Checkpoints.Verify(c);
        TrainOptions? options = File.Exists(Path.Combine(c.StepDir, c.Legacy ? OptimizerFile : TrainerFile)) ? ReadTrainer(c).Options : null;
        var path = Path.Combine(c.StepDir, ModelFile);
        using var contents = SafeTensors.Load(path, device);
        var m = new Fields(contents.Metadata, path);
        var config = ReadConfig(m);
        var kind = m.StrOrNull("task");
        var task = ReadTask(m, c.StepDir, kind == "text" ? textPath(options) : null, kind == "tokens" ? dataPath?.Invoke(options) : null);
        var model = new Gpt(config, device);
        try { LoadInto(model, contents, path); }
        catch { model.Dispose(); throw; }
        return (model, task, options);
    }

    /// <summary>Copies a model file's tensors into <paramref name="model"/>: every key present, every value finite.</summary>
    public static void LoadInto(Gpt model, SafeTensors.Contents contents, string path)
    {
        foreach (var (k, t) in contents.Tensors) CheckFinite(path, k, t);
        try { model.LoadStateDict(contents.Tensors); }
        catch (EngineException e) when (e is not CheckpointException) { throw new CheckpointException("Checkpoint", $"{path}: {e.Message}", e); }
    }

    /// <summary>
    /// Restores model, optimizer, scaler and generator from a checkpoint; the config must match the model's. Nothing
    /// is changed unless everything loads (the tensors are read and checked before any is copied in).
    /// </summary>
    public static void Restore(ResolvedCheckpoint c, Gpt model, Optimizer optimizer, Device device)
    {
        var mpath = Path.Combine(c.StepDir, ModelFile);
        var opath = Path.Combine(c.StepDir, OptimizerFile);
        using var mc = SafeTensors.Load(mpath, device);
        var config = ReadConfig(new Fields(mc.Metadata, mpath));
        if (config != model.Config) throw new CheckpointException("Checkpoint", $"{mpath}: its model config {config} differs from the run's {model.Config}");
        using var oc = SafeTensors.Load(opath, device);
        var om = new Fields(oc.Metadata, opath);
        var ps = optimizer.ParamGroups.SelectMany(g => g.Params).ToList();
        foreach (var (k, t) in oc.Tensors) CheckFinite(opath, k, t);
        // Adam's state per parameter: both moments (the parameter's shape) and the step count (0-d). A checkpoint
        // holds them for every parameter (every GPT parameter gets a gradient each step), so a missing or misshapen
        // one means a damaged or foreign file; the optimizer itself would only fail inside a kernel.
        for (int i = 0; i < ps.Count; i++)
            foreach (var key in new[] { "exp_avg", "exp_avg_sq", "step" })
            {
                if (!oc.Tensors.TryGetValue($"state.{i}.{key}", out var t)) throw new CheckpointException("Checkpoint", $"{opath}: missing tensor 'state.{i}.{key}'");
                Shape want = key == "step" ? [] : ps[i].Shape;
                if (t.Shape != want)
                    throw new CheckpointException("Checkpoint", $"{opath}: tensor 'state.{i}.{key}' has shape {t.Shape}, parameter {i} needs {want}");
            }
        var scalars = new Dictionary<string, double>();
        for (int g = 0; g < optimizer.ParamGroups.Count; g++)
            foreach (var key in new[] { "lr", "beta1", "beta2", "eps", "weight_decay" })
                scalars[$"param_groups.{g}.{key}"] = om.Double($"param_groups.{g}.{key}");
        LoadInto(model, mc, mpath);
        try { optimizer.LoadStateDict(new OptimizerState(oc.Tensors, scalars)); }
        catch (EngineException e) when (e is not CheckpointException) { throw new CheckpointException("Checkpoint", $"{opath}: {e.Message}", e); }
    }

    /// <summary>Throws naming the file and tensor when a floating tensor holds NaN or ±Inf.</summary>
    static void CheckFinite(string path, string name, Tensor t)
    {
        if (!t.DType.IsFloatingPoint() || t.Numel == 0) return;
        using var _ = GradMode.NoGrad();
        using var scope = Tensor.NewScope();
        // max |x| propagates NaN and is infinite exactly when some element is: one reduction per tensor.
        double m = t.Abs().Max().Item();
        if (!double.IsFinite(m))
            throw new CheckpointException("Checkpoint", $"{path}: tensor '{name}' has non-finite values ({(double.IsNaN(m) ? "NaN" : "Inf")}): the checkpoint is damaged or the run had diverged");
    }

    /// <summary>True when every floating parameter is finite (a checkpoint is only written then).</summary>
    public static bool AllFinite(Module model)
    {
        using var _ = GradMode.NoGrad();
        using var scope = Tensor.NewScope();
        foreach (var p in model.Parameters())
            if (p.Numel > 0 && !double.IsFinite(p.Abs().Max().Item())) return false;
        return true;
    }
}

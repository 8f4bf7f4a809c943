using System.Globalization;
using Engine.Nn;
using Engine.Optim;
using Engine.Serialization;

namespace Engine.Cli.Training;

/// <summary>
/// A training checkpoint directory: <c>model.safetensors</c> (the model's state dict under PyTorch-style names; the
/// header's metadata holds the model config and the task) and <c>optimizer.safetensors</c> (optimizer state tensors;
/// metadata: step, schedule position, RNG state, data position, hyper-parameters). Each file is written atomically.
/// </summary>
static class Checkpoint
{
    public const string ModelFile = "model.safetensors";
    public const string OptimizerFile = "optimizer.safetensors";
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static void Save(string dir, Gpt model, ITask task, Optimizer optimizer, LrScheduler schedule, Generator generator, long step, TrainOptions options, IReadOnlyDictionary<string, double>? scaler = null)
    {
        Directory.CreateDirectory(dir);
        var meta = new Dictionary<string, string>(task.Metadata())
        {
            ["format"] = "engine-gpt-v1",
            ["config.vocab"] = model.Config.VocabSize.ToString(Inv),
            ["config.context"] = model.Config.ContextLength.ToString(Inv),
            ["config.layers"] = model.Config.Layers.ToString(Inv),
            ["config.heads"] = model.Config.Heads.ToString(Inv),
            ["config.dmodel"] = model.Config.DModel.ToString(Inv),
            ["config.dropout"] = model.Config.Dropout.ToString("R", Inv),
            ["config.tied"] = model.Config.TiedHead ? "1" : "0",
        };
        SafeTensors.Save(Path.Combine(dir, ModelFile), model.StateDict(), meta);

        var st = optimizer.StateDict();
        var gs = generator.GetState();
        var om = new Dictionary<string, string>
        {
            ["step"] = step.ToString(Inv),
            ["schedule.step"] = schedule.LastStep.ToString(Inv),
            ["rng.seed"] = gs.Seed.ToString(Inv),
            ["rng.offset"] = gs.Offset.ToString(Inv),
            ["data.step"] = step.ToString(Inv),
        };
        foreach (var (k, v) in st.Scalars) om[k] = v.ToString("R", Inv);
        foreach (var (k, v) in options.ToMetadata()) om["train." + k] = v;
        if (scaler is not null) foreach (var (k, v) in scaler) om["scaler." + k] = v.ToString("R", Inv);
        SafeTensors.Save(Path.Combine(dir, OptimizerFile), st.Tensors, om);
    }

    public static GptConfig ReadConfig(IReadOnlyDictionary<string, string> meta, string dir)
    {
        string Get(string k) => meta.TryGetValue(k, out var v) ? v : throw new EngineException("Checkpoint", $"{Path.Combine(dir, ModelFile)}: metadata lacks '{k}' (not an engine checkpoint?)");
        return new GptConfig(int.Parse(Get("config.vocab"), Inv), int.Parse(Get("config.context"), Inv), int.Parse(Get("config.layers"), Inv),
            int.Parse(Get("config.heads"), Inv), int.Parse(Get("config.dmodel"), Inv), double.Parse(Get("config.dropout"), Inv), Get("config.tied") == "1");
    }

    public static ITask ReadTask(IReadOnlyDictionary<string, string> meta, string? textPath)
    {
        var kind = meta.GetValueOrDefault("task", "");
        if (kind == "sort") return new SortTask(int.Parse(meta["task.length"], Inv), int.Parse(meta["task.digits"], Inv));
        if (kind == "text")
        {
            int context = int.Parse(meta["task.context"], Inv);
            var vocab = meta["task.vocabulary"];
            return textPath is null ? TextTask.ForVocabulary(vocab, context) : new TextTask(File.ReadAllText(textPath), context, vocab);
        }
        throw new EngineException("Checkpoint", $"unknown task '{kind}' in checkpoint metadata");
    }

    /// <summary>Loads the model of a checkpoint directory (for sample and eval).</summary>
    public static (Gpt Model, ITask Task, Dictionary<string, string> Meta) LoadModel(string dir, Device device, string? textPath = null)
    {
        var path = Path.Combine(dir, ModelFile);
        if (!File.Exists(path)) throw new EngineException("Checkpoint", $"{path}: not found (is '{dir}' a checkpoint directory written by engine train --out?)");
        using var contents = SafeTensors.Load(path, device);
        var config = ReadConfig(contents.Metadata, dir);
        var task = ReadTask(contents.Metadata, textPath);
        var model = new Gpt(config, device);
        model.LoadStateDict(contents.Tensors);
        return (model, task, contents.Metadata);
    }
}

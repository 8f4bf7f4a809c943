using Engine.Autograd.Nn;
using Engine.Cli.Commands;
using Engine.Cli.Text;
using Engine.Graph;

namespace Engine.Cli.Training;

/// <summary>
/// <c>engine train --init-from DIR</c>: a run whose model starts as a Hugging Face GPT-2 directory's (config.json and
/// model.safetensors, read by <see cref="Gpt.FromPretrained"/>). The directory decides the model's shape; the flags
/// may only repeat it. From the first checkpoint on the run is an ordinary engine run: its checkpoints record the whole
/// model config (activation and epsilon included), so a resume never reads the directory again.
/// </summary>
static class HfInit
{
    /// <summary>The config of the model in <paramref name="dir"/> with the run's dropout.</summary>
    public static GptConfig Config(string dir, double dropout) => HfGpt2Config.Read(ConfigPath(dir)).ToGptConfig(ConfigPath(dir), dropout);

    static string ConfigPath(string dir)
    {
        var path = Path.Combine(dir, Gpt2Format.ConfigFile);
        if (!Directory.Exists(dir)) throw new UsageException($"--init-from {dir}: directory not found (expected a Hugging Face GPT-2 directory)");
        if (!File.Exists(path)) throw new UsageException($"--init-from {dir}: no {Gpt2Format.ConfigFile} (expected a Hugging Face GPT-2 directory with {Gpt2Format.ConfigFile} and {Gpt2Format.WeightsFile})");
        return path;
    }

    /// <summary>
    /// A new run's options with the model's shape from <c>--init-from</c>'s config.json. A --layers, --heads or
    /// --dmodel that says otherwise is a usage error naming both values; --context (the training window) may be at most
    /// n_positions and defaults to the engine's 64 or n_positions if smaller; --dropout defaults to resid_pdrop.
    /// </summary>
    public static TrainOptions Shape(TrainOptions o, TrainSettings s)
    {
        var dir = s.InitFrom!;
        if (o.Text is null && o.Data is null)
            throw new UsageException("--init-from fine-tunes a language model: give --data DIR (from engine prepare) or --text FILE");
        var path = ConfigPath(dir);
        var hf = HfGpt2Config.Read(path);
        var c = hf.ToGptConfig(path, s.Dropout);
        void Same(int? given, int has, string flag, string field)
        {
            if (given is int g && g != has)
                throw new UsageException($"--{flag} {g} conflicts with --init-from {dir}: its {Gpt2Format.ConfigFile} has {field} {has} (the model's shape comes from there; leave --{flag} out)");
        }
        Same(s.Layers, c.Layers, "layers", "n_layer");
        Same(s.Heads, c.Heads, "heads", "n_head");
        Same(s.DModel, c.DModel, "dmodel", "n_embd");
        if (s.Context is int ctx && ctx > c.ContextLength)
            throw new UsageException($"--context {ctx} is longer than --init-from {dir}'s n_positions {c.ContextLength} (the model has no positions beyond it)");
        return o with
        {
            InitFrom = Path.GetFullPath(dir),
            Layers = c.Layers, Heads = c.Heads, DModel = c.DModel, Dropout = c.Dropout,
            Context = s.Context ?? Math.Min(new TrainOptions().Context, c.ContextLength),
        };
    }

    /// <summary>
    /// The run's tokenizer. With --data it is the data set's, and the directory's own tokenizer files, when it has
    /// any, must be the same encoding. With --text: --tokenizer if given, else the directory's files, else gpt2 for a
    /// 50,257-token model; it must be one a checkpoint records by name.
    /// </summary>
    public static string Tokenizer(string dir, TrainOptions o, string? given)
    {
        var own = HfTokenizerFiles.Read(dir);
        if (o.Data is not null)
        {
            if (own is not null && own.Name != o.Tokenizer)
                throw new UsageException($"--init-from {dir}: the model's tokenizer is {own.Name}, but {o.Data} is tokenized with {o.Tokenizer}");
            return o.Tokenizer!;
        }
        if (given is not null)
        {
            if (own is not null && own.Name != given)
                throw new UsageException($"--tokenizer {given}: --init-from {dir} has its own tokenizer files, which are {own.Name}");
            return given;
        }
        if (own is not null)
        {
            if (!own.Recordable)
                throw new UsageException($"--init-from {dir}: its tokenizer ({own.Name}) is none of {string.Join(", ", TextTokenizer.Names)}, which is all a checkpoint records; prepare the data with one of them");
            return own.Name;
        }
        int vocab = HfGpt2Config.Read(ConfigPath(dir)).VocabSize;
        if (vocab == 50257) return "gpt2";
        throw new UsageException($"--init-from {dir} has no tokenizer files and a vocab_size of {vocab}, not GPT-2's 50257: name the tokenizer with --tokenizer");
    }

    /// <summary>The task's token ids must all be ids of the model: its vocabulary no larger than the model's.</summary>
    public static void CheckVocabulary(TrainOptions o, ITask task)
    {
        int vocab = HfGpt2Config.Read(ConfigPath(o.InitFrom!)).VocabSize;
        if (task.VocabSize > vocab)
            throw new UsageException($"the {(o.Data is not null ? $"data set {o.Data}" : $"text {o.Text}")} has a {task.Tokenizer?.Name ?? task.Name} vocabulary of {task.VocabSize} tokens, more than --init-from {o.InitFrom}'s vocab_size {vocab}");
    }

    /// <summary>Copies the directory's weights into <paramref name="model"/>, whose config must be the directory's.</summary>
    public static void LoadWeights(Gpt model, string dir)
    {
        using var pretrained = Gpt.FromPretrained(dir, SortTask.ModelDevice(model), DType.Float32, model.Config.Dropout);
        if (pretrained.Config != model.Config)
            throw new UsageException($"--init-from {dir}: its model is now {pretrained.Config}, the run's {model.Config} (did config.json change?)");
        using var _ = GradMode.NoGrad();
        model.LoadStateDict(pretrained.StateDict());
    }
}

using System.ComponentModel;
using Engine.Autograd.Nn;
using Engine.Cli.Text;
using Engine.Cli.Training;
using Engine.Graph;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary>The options of <c>engine sample</c>.</summary>
sealed class SampleSettings : CommandSettings
{
    [CommandOption("--checkpoint|--model <DIR>"), Description("Also spelled --model (one option, two names). An engine run directory (its latest checkpoint), one of its step directories, or an old flat checkpoint directory; or a Hugging Face GPT-2 directory (config.json, model.safetensors, and vocab.json + merges.txt or tokenizer.json; without them a 50,257-token model uses the gpt2 tokenizer), told apart by its config.json. Required.")]
    public string? Checkpoint { get; set; }

    [CommandOption("--prompt <TEXT>"), Description("Text to continue, encoded with the model's tokenizer (sorting task: the digits separated by spaces). Without it, a few held-out examples are completed (engine checkpoints only).")]
    public string? Prompt { get; set; }

    [CommandOption("--tokens <N>"), Description("Tokens to generate (default: the sorting task's length, or 100).")]
    public int? Tokens { get; set; }

    [CommandOption("--temperature <T>"), Description("0 (default) is greedy; higher values sample more freely.")]
    public double? Temperature { get; set; }

    [CommandOption("--top-k <K>"), Description("Sample only among the K most likely tokens; 0 (default) means all.")]
    public int? TopK { get; set; }

    [CommandOption("--seed <N>"), Description("Seed of the sampling (default 0).")]
    public ulong? Seed { get; set; }

    [CommandOption("--count <N>"), Description("Examples to complete without --prompt (default 3).")]
    public int? Count { get; set; }

    [CommandOption("--text <FILE>"), Description("For a text model whose training file has moved: the text to draw example prompts from.")]
    public string? Text { get; set; }

    [CommandOption("--device <DEVICE>"), Description("cpu (default), cuda or cuda:N.")]
    public string? Device { get; set; }
}

/// <summary>
/// <c>engine sample</c>: everything it needs (model config, task, vocabulary) comes from the checkpoint, or from the
/// Hugging Face directory <c>--model</c> names.
/// </summary>
sealed class SampleCommand : Command<SampleSettings>
{
    public override int Execute(CommandContext context, SampleSettings s, CancellationToken cancellationToken)
    {
        if (s.Checkpoint is null) throw new UsageException("sample needs --checkpoint DIR or --model DIR (a run directory, a step directory or a Hugging Face GPT-2 directory)");
        if (s.Temperature is < 0 or > 100) throw new UsageException($"--temperature must be in [0, 100], got {s.Temperature}");
        if (s.TopK is < 0) throw new UsageException($"--top-k must be ≥ 0, got {s.TopK}");
        if (s.Tokens is < 1 or > 100_000) throw new UsageException($"--tokens must be in [1, 100000], got {s.Tokens}");
        if (s.Count is < 1 or > 1000) throw new UsageException($"--count must be in [1, 1000], got {s.Count}");
        var device = Devices.Parse(s.Device);
        // An engine run or step directory never holds config.json; a Hugging Face model directory always does.
        if (File.Exists(Path.Combine(s.Checkpoint, Gpt2Format.ConfigFile))) return SampleHf(s, device);
        var c = Checkpoints.Resolve(s.Checkpoint);
        // A run directory whose latest is missing or damaged resolves to an older checkpoint: say which, as train does.
        if (c.Note is { } note) Console.Error.WriteLine($"engine: note: {note}");
        // Example prompts of a text model come from its text; an explicit prompt needs only the vocabulary.
        var (model, task, _) = Training.Checkpoint.LoadModel(c, device, o => s.Prompt is not null ? null : s.Text ?? (o?.Text is { } t && File.Exists(t) ? t : null),
            o => s.Prompt is not null ? null : o?.Data is { } d && File.Exists(Path.Combine(d, Text.TokenDataset.MetaFile)) ? d : null);
        using (model)
        using (task as IDisposable)
        {
            ulong seed = s.Seed ?? 0;
            if (s.Prompt is null)
            {
                if (task is TextTask { HasText: false }) throw new UsageException("this text model's training file is not available: give --prompt TEXT, or --text FILE for example prompts");
                if (task is TokenDataTask { HasData: false }) throw new UsageException("this model's token data set is not available: give --prompt TEXT");
                foreach (var line in task.Samples(model, s.Count ?? 3, seed)) Console.WriteLine(line);
                return ExitCodes.Ok;
            }
            var tokens = task.Encode(s.Prompt);
            if (tokens.Length == 0) throw new UsageException("--prompt is empty");
            int n = s.Tokens ?? (task is SortTask st ? st.Length : 100);
            using var _ = GradMode.NoGrad();
            using var p = Tensor.FromArray(tokens, [1, tokens.Length], device);
            using var outp = model.Generate(p, n, s.Temperature ?? 0, s.TopK ?? 0, seed);
            Console.WriteLine(task.Decode(outp.ToArray<long>()));
            return ExitCodes.Ok;
        }
    }

    /// <summary>Generates from a Hugging Face GPT-2 directory with its own tokenizer files, or gpt2's for a 50,257-token model without any.</summary>
    static int SampleHf(SampleSettings s, Device device)
    {
        var dir = s.Checkpoint!;
        if (s.Prompt is null) throw new UsageException($"sampling the Hugging Face model {dir} needs --prompt TEXT (it has no held-out examples)");
        if (s.Text is not null) throw new UsageException("--text applies to engine text checkpoints; a Hugging Face model is sampled from --prompt TEXT");
        var configPath = Path.Combine(dir, Gpt2Format.ConfigFile);
        var config = HfGpt2Config.Read(configPath).ToGptConfig(configPath, 0);
        var tok = HfTokenizerFiles.Read(dir) ?? (config.VocabSize == 50257 ? TextTokenizer.Bpe("gpt2")
            : throw new UsageException($"{dir} has no tokenizer files ({HfTokenizerFiles.VocabFile} + {HfTokenizerFiles.MergesFile}, or {HfTokenizerFiles.FastFile}), and its vocab_size {config.VocabSize} is not GPT-2's 50257: add the model's tokenizer files"));
        if (tok.VocabSize > config.VocabSize)
            throw new UsageException($"{dir}: the {tok.Name} tokenizer has {tok.VocabSize} tokens, more than the model's vocab_size {config.VocabSize}");
        var tokens = tok.Encode(s.Prompt);
        if (tokens.Length == 0) throw new UsageException("--prompt is empty");
        using var model = Gpt.FromPretrained(dir, device, DType.Float32, 0);
        using var _ = GradMode.NoGrad();
        using var p = Tensor.FromArray(tokens.Select(t => (long)t).ToArray(), [1, tokens.Length], device);
        using var outp = model.Generate(p, s.Tokens ?? 100, s.Temperature ?? 0, s.TopK ?? 0, s.Seed ?? 0);
        // Ids the model has beyond its tokenizer's (a padded vocabulary) decode to nothing.
        Console.WriteLine(tok.Decode(outp.ToArray<long>().Select(v => (int)v)));
        return ExitCodes.Ok;
    }
}

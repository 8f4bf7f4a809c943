using System.ComponentModel;
using Engine.Autograd.Nn;
using Engine.Cli.Training;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary>The options of <c>engine export</c>.</summary>
sealed class ExportSettings : CommandSettings
{
    [CommandOption("--checkpoint <DIR>"), Description("A run directory (its latest checkpoint), one of its step directories, or an old flat checkpoint directory. Required.")]
    public string? Checkpoint { get; set; }

    [CommandOption("--format <FORMAT>"), Description("hf (default): a Hugging Face transformers GPT-2 directory (config.json, generation_config.json, model.safetensors) that GPT2LMHeadModel.from_pretrained loads.")]
    public string? Format { get; set; }

    [CommandOption("--out <DIR>"), Description("The directory to write (created if needed; files of the same names are replaced). Required.")]
    public string? Out { get; set; }
}

/// <summary><c>engine export</c>: a checkpoint's model in another program's format; the checkpoint itself is only read.</summary>
sealed class ExportCommand : Command<ExportSettings>
{
    public override int Execute(CommandContext context, ExportSettings s, CancellationToken cancellationToken)
    {
        if (s.Checkpoint is null) throw new UsageException("export needs --checkpoint DIR (a run directory or a step directory)");
        if (s.Out is null) throw new UsageException("export needs --out DIR (the directory to write)");
        var format = s.Format ?? "hf";
        if (format != "hf") throw new UsageException($"--format must be hf (a Hugging Face GPT-2 directory), got '{format}'");
        var outDir = Path.GetFullPath(s.Out);
        if (File.Exists(outDir)) throw new UsageException($"--out {s.Out}: is a file, expected a directory");
        // An engine run or checkpoint has its own model.safetensors: exporting into one would overwrite the checkpoint.
        foreach (var own in new[] { RunDirectory.LatestFile, Manifest.FileName, Training.Checkpoint.OptimizerFile, Training.Checkpoint.TrainerFile })
            if (File.Exists(Path.Combine(outDir, own)))
                throw new UsageException($"--out {s.Out}: holds an engine run or checkpoint ({own}); export into a directory of its own");

        var c = Checkpoints.Resolve(s.Checkpoint);
        if (c.Note is { } note) Console.Error.WriteLine($"engine: note: {note}");
        // The weights and the vocabulary are all an export needs: a text model's training file is never read.
        var (model, task, _) = Training.Checkpoint.LoadModel(c, Device.Cpu, _ => null);
        using (model)
        {
            model.SavePretrained(outDir);
            // Tokenizer files (vocab.json, merges.txt, tokenizer_config.json) belong here, written from `task`'s
            // vocabulary, once the tokenizers can describe themselves in Hugging Face's format.
        }
        Console.WriteLine($"exported {(c.Step is long step ? $"step {step} of " : "")}{c.RunDir} ({task.Name} task, {task.VocabSize} tokens) to {outDir}: " +
            $"{Gpt2Format.ConfigFile}, {Gpt2Format.GenerationConfigFile}, {Gpt2Format.WeightsFile}");
        return ExitCodes.Ok;
    }
}

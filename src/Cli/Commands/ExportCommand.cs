using System.ComponentModel;
using Engine.Autograd.Nn;
using Engine.Cli.Text;
using Engine.Cli.Training;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary>The options of <c>engine export</c>.</summary>
sealed class ExportSettings : CommandSettings
{
    [CommandOption("--checkpoint <DIR>"), Description("A run directory (its latest checkpoint), one of its step directories, or an old flat checkpoint directory. Required.")]
    public string? Checkpoint { get; set; }

    [CommandOption("--format <FORMAT>"), Description("hf (default): a Hugging Face transformers GPT-2 directory (config.json, generation_config.json, model.safetensors) that GPT2LMHeadModel.from_pretrained loads; for a gpt2-tokenized model also vocab.json, merges.txt and tokenizer_config.json for GPT2Tokenizer.")]
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
        string tokenizerNote;
        using (model)
        {
            model.SavePretrained(outDir);
            tokenizerNote = WriteTokenizer(outDir, task, model.Config.ContextLength);
        }
        Console.WriteLine($"exported {(c.Step is long step ? $"step {step} of " : "")}{c.RunDir} ({task.Name} task, {task.VocabSize} tokens) to {outDir}: " +
            $"{Gpt2Format.ConfigFile}, {Gpt2Format.GenerationConfigFile}, {Gpt2Format.WeightsFile}{tokenizerNote}");
        return ExitCodes.Ok;
    }

    /// <summary>
    /// GPT-2's tokenizer files for a gpt2 model (vocab.json and merges.txt from the encoding's ranks, and
    /// tokenizer_config.json), so <c>AutoTokenizer.from_pretrained</c> loads the directory as a whole. The other
    /// tokenizers have no such files here: cl100k/o200k pre-tokenize differently from GPT2Tokenizer, and a char
    /// vocabulary is no byte-level BPE. Tokenizer files an earlier export left in the directory are removed then, so
    /// the directory never pairs this model with another's vocabulary. Returns what to add to the summary line.
    /// </summary>
    static string WriteTokenizer(string outDir, ITask task, int modelMaxLength)
    {
        if (task.Tokenizer is { Name: "gpt2" } tok)
        {
            HfTokenizerFiles.Write(outDir, tok, modelMaxLength);
            return $", {HfTokenizerFiles.VocabFile}, {HfTokenizerFiles.MergesFile}, {HfTokenizerFiles.ConfigFile} (GPT-2's tokenizer)";
        }
        var stale = new[] { HfTokenizerFiles.VocabFile, HfTokenizerFiles.MergesFile, HfTokenizerFiles.ConfigFile }.Where(f => File.Exists(Path.Combine(outDir, f))).ToList();
        foreach (var f in stale) File.Delete(Path.Combine(outDir, f));
        string why = task.Tokenizer switch
        {
            null => "the sorting task's tokens are its digits",
            { Name: "char" } t => $"the char tokenizer's {t.VocabSize} characters are no GPT-2 byte-level BPE; they stay in the checkpoint's {TextTokenizer.FileName}, from which engine sample --checkpoint decodes",
            var t => $"the {t.Name} encoding's pre-tokenizer is not GPT2Tokenizer's, so vocab.json/merges.txt would encode differently; load it with tiktoken's {t.Name}_base",
        };
        return $"; no tokenizer files ({why}){(stale.Count > 0 ? $"; removed the earlier export's {string.Join(", ", stale)}" : "")}";
    }
}

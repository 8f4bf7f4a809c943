using System.ComponentModel;
using System.Globalization;
using Engine.Cli.Training;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary>The options of <c>engine eval</c>.</summary>
sealed class EvalSettings : CommandSettings
{
    [CommandOption("--checkpoint <DIR>"), Description("A run directory (its latest checkpoint), one of its step directories, or an old flat checkpoint directory. Required.")]
    public string? Checkpoint { get; set; }

    [CommandOption("--samples <N>"), Description("Held-out samples (default 500).")]
    public int? Samples { get; set; }

    [CommandOption("--text <FILE>"), Description("For a text model: the text to evaluate on (default: the file it was trained on, as the checkpoint records it).")]
    public string? Text { get; set; }

    [CommandOption("--device <DEVICE>"), Description("cpu (default), cuda or cuda:N.")]
    public string? Device { get; set; }
}

/// <summary><c>engine eval</c>: the task's held-out accuracy; the checkpoint names its task and, for text, its file.</summary>
sealed class EvalCommand : Command<EvalSettings>
{
    public override int Execute(CommandContext context, EvalSettings s, CancellationToken cancellationToken)
    {
        if (s.Checkpoint is null) throw new UsageException("eval needs --checkpoint DIR (a run directory or a step directory)");
        if (s.Samples is < 1 or > 1_000_000) throw new UsageException($"--samples must be in [1, 1000000], got {s.Samples}");
        var device = Devices.Parse(s.Device);
        var c = Checkpoints.Resolve(s.Checkpoint);
        // A run directory whose latest is missing or damaged resolves to an older checkpoint: say which, as train does.
        if (c.Note is { } note) Console.Error.WriteLine($"engine: note: {note}");
        var (model, task, _) = Training.Checkpoint.LoadModel(c, device, o => s.Text ?? o?.Text switch
        {
            null => throw new UsageException("this text model's checkpoint does not name its training file: give --text FILE"),
            var t when !File.Exists(t) => throw new UsageException($"the text this model was trained on ({t}) is gone: give --text FILE"),
            var t => t,
        }, o => o?.Data switch
        {
            null => throw new UsageException("this token data model's checkpoint does not name its data set"),
            var d when !File.Exists(Path.Combine(d, Text.TokenDataset.MetaFile)) => throw new UsageException($"the data set this model was trained on ({d}) is gone"),
            var d => d,
        });
        using (model)
        using (task as IDisposable)
        {
            double acc = task.Evaluate(model, s.Samples ?? 500);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"eval accuracy: {acc * 100:F1}%"));
        }
        return ExitCodes.Ok;
    }
}

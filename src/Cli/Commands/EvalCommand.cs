using System.Globalization;
using Engine.Cli.Training;

namespace Engine.Cli.Commands;

/// <summary><c>engine eval --checkpoint DIR [--samples N] [--text FILE]</c>: the task's held-out accuracy.</summary>
static class EvalCommand
{
    public static int Run(string[] argv)
    {
        var a = new Args(argv, new HashSet<string>());
        var dir = a.Str("checkpoint") ?? throw new UsageException("eval needs --checkpoint DIR");
        var device = TrainCommand.ParseDevice(a.Str("device", "cpu"));
        int samples = a.Int("samples", 500, 1, 1_000_000);
        var text = a.Str("text");
        a.RejectUnknown("eval");
        var (model, task, _) = Checkpoint.LoadModel(dir, device, text);
        using (model)
        {
            double acc = task.Evaluate(model, samples);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"eval accuracy: {acc * 100:F1}%"));
        }
        return 0;
    }
}

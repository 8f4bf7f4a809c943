using Engine.Cli.Training;
using Engine.Graph;

namespace Engine.Cli.Commands;

/// <summary><c>engine sample --checkpoint DIR [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]</c>.</summary>
static class SampleCommand
{
    public static int Run(string[] argv)
    {
        var a = new Args(argv, new HashSet<string>());
        var dir = a.Str("checkpoint") ?? throw new UsageException("sample needs --checkpoint DIR");
        var prompt = a.Str("prompt");
        var device = TrainCommand.ParseDevice(a.Str("device", "cpu"));
        double temperature = a.Double("temperature", 0, 0, 100);
        int topK = a.Int("top-k", 0, 0);
        ulong seed = (ulong)a.Int("seed", 0, 0);
        var text = a.Str("text");
        int count = a.Int("count", 3, 1, 1000);
        int? tokensWanted = a.Has("tokens") ? a.Int("tokens", 1, 1, 100000) : null;
        a.RejectUnknown("sample");
        var (model, task, _) = Checkpoint.LoadModel(dir, device, text);
        using (model)
        {
            if (prompt is null)
            {
                foreach (var line in task.Samples(model, count, seed)) Console.WriteLine(line);
                return 0;
            }
            var tokens = task.Encode(prompt);
            int n = tokensWanted ?? (task is SortTask st ? st.Length : 100);
            using var _ = GradMode.NoGrad();
            using var p = Tensor.FromArray(tokens, [1, tokens.Length]);
            using var outp = model.Generate(p, n, temperature, topK, seed);
            Console.WriteLine(task.Decode(outp.ToArray<long>()));
            return 0;
        }
    }
}

using System.Globalization;
using Engine.Graph;
using Engine.Autograd.Nn;

namespace Engine.Cli.Training;

/// <summary>
/// minGPT's sorting task: <c>length</c> digits of <c>digits</c> symbols, followed by the same digits sorted. The model
/// reads the whole sequence but is scored only on the sorted half. A sequence belongs to the held-out set when its
/// hash says so, so training never sees the evaluation sequences.
/// </summary>
sealed class SortTask(int length, int digits) : ITask
{
    public string Name => "sort";
    public int VocabSize => digits;
    public int ContextLength => 2 * length - 1;
    public int Length => length;

    static bool IsTest(int[] seq)
    {
        uint h = 2166136261;
        foreach (var d in seq) h = (h ^ (uint)d) * 16777619;
        return h % 4 == 0;
    }

    int[] Draw(Random rng, bool test)
    {
        while (true)
        {
            var s = new int[length];
            for (int i = 0; i < length; i++) s[i] = rng.Next(digits);
            if (IsTest(s) == test) return s;
        }
    }

    public (Tensor Inputs, Tensor Targets) Batch(int batchSize, ulong seed, long position)
    {
        int t = ContextLength;
        var x = new long[batchSize * t];
        var y = new long[batchSize * t];
        for (int b = 0; b < batchSize; b++)
        {
            var s = Draw(DataStream.Rng(seed, position + b), test: false);
            var sorted = s.Order().ToArray();
            var full = s.Concat(sorted).ToArray();
            for (int i = 0; i < t; i++)
            {
                x[b * t + i] = full[i];
                y[b * t + i] = i < length - 1 ? -100 : full[i + 1];
            }
        }
        return (Tensor.FromArray(x, [batchSize, t]), Tensor.FromArray(y, [batchSize, t]));
    }

    /// <summary>Greedy completions of held-out prompts, batched: one forward per generated position.</summary>
    public double Evaluate(Gpt model, int samples)
    {
        var rng = new Random(12345);
        var prompts = Enumerable.Range(0, samples).Select(_ => Draw(rng, test: true)).ToArray();
        var outputs = Complete(model, prompts);
        int correct = 0;
        for (int i = 0; i < samples; i++)
            if (outputs[i].SequenceEqual(prompts[i].Order())) correct++;
        return (double)correct / samples;
    }

    int[][] Complete(Gpt model, int[][] prompts)
    {
        bool training = model.Training;
        model.Eval();
        try
        {
            using var _ = GradMode.NoGrad();
            int n = prompts.Length;
            var seqs = prompts.Select(p => p.Select(d => (long)d).ToList()).ToArray();
            for (int step = 0; step < length; step++)
            {
                using var scope = Tensor.NewScope();
                int len = seqs[0].Count;
                var ids = Tensor.FromArray(seqs.SelectMany(s => s).ToArray(), [n, len], ModelDevice(model));
                var logits = model.Forward(ids).Select(1, len - 1).ArgMax(-1).ToArray<long>();
                for (int i = 0; i < n; i++) seqs[i].Add(logits[i]);
            }
            return seqs.Select(s => s.Skip(length).Select(v => (int)v).ToArray()).ToArray();
        }
        finally { model.Train(training); }
    }

    /// <summary>The device of a model's parameters: evaluation inputs go there.</summary>
    internal static Device ModelDevice(Gpt model) => model.Parameters().First().Device;

    public IEnumerable<string> Samples(Gpt model, int count, ulong seed)
    {
        var rng = new Random((int)seed + 777);
        var prompts = Enumerable.Range(0, count).Select(_ => Draw(rng, test: true)).ToArray();
        var outs = Complete(model, prompts);
        for (int i = 0; i < count; i++)
        {
            bool ok = outs[i].SequenceEqual(prompts[i].Order());
            yield return $"{string.Join(' ', prompts[i])} -> {string.Join(' ', outs[i])} {(ok ? "ok" : "WRONG")}";
        }
    }

    public Dictionary<string, string> Metadata() => new()
    {
        ["task"] = "sort",
        ["task.length"] = length.ToString(CultureInfo.InvariantCulture),
        ["task.digits"] = digits.ToString(CultureInfo.InvariantCulture),
    };

    public long[] Encode(string text)
    {
        var toks = text.Split([' ', ','], StringSplitOptions.RemoveEmptyEntries).Select(s =>
            int.TryParse(s, CultureInfo.InvariantCulture, out var d) && d >= 0 && d < digits ? (long)d
            : throw new UsageException($"the sort task's prompt is {length} digits in [0, {digits - 1}] separated by spaces, got '{s}'")).ToArray();
        if (toks.Length != length) throw new UsageException($"the sort task's prompt is exactly {length} digits, got {toks.Length}");
        return toks;
    }

    public string Decode(IEnumerable<long> tokens) => string.Join(' ', tokens);
}

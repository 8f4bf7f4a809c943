using System.Globalization;
using Engine.Autograd.Nn;
using Engine.Cli.Text;
using Engine.Graph;

namespace Engine.Cli.Training;

/// <summary>
/// A language model over a prepared token data set (<see cref="TokenDataset"/>, from <c>engine prepare</c>), read
/// memory-mapped so it never has to fit in memory. Batches are random windows of train.bin drawn from the run's data
/// stream (<see cref="DataStream"/>: sample i depends on (seed, i) alone, so resumes continue it exactly); validation
/// loss and accuracy use fixed windows spread evenly over val.bin.
/// </summary>
sealed class TokenDataTask : ITask, IDisposable
{
    readonly TokenDataset? _data;
    readonly TokenFile? _train, _val;
    readonly TextTokenizer _tok;

    /// <summary>Opens <paramref name="dir"/>; train.bin must hold more than one context of tokens.</summary>
    public TokenDataTask(string dir, int context)
    {
        _data = TokenDataset.Open(dir);
        _tok = _data.Tokenizer;
        ContextLength = context;
        if (_data.TrainTokens < context + 2)
            throw new UsageException($"{Path.Combine(dir, TokenDataset.TrainFile)} holds {_data.TrainTokens} tokens; it needs more than the context length {context} + 1");
        int bytes = _data.BytesPerToken;
        _train = new TokenFile(Path.Combine(_data.Dir, TokenDataset.TrainFile), bytes, _data.TrainTokens, _tok.VocabSize);
        // A val.bin shorter than one window cannot be evaluated on: the run then has no validation loss.
        if (_data.ValTokens >= context + 1) _val = new TokenFile(Path.Combine(_data.Dir, TokenDataset.ValFile), bytes, _data.ValTokens, _tok.VocabSize);
    }

    TokenDataTask(TextTokenizer tokenizer, int context) { _tok = tokenizer; ContextLength = context; }

    /// <summary>A task over a tokenizer alone (sampling a checkpoint whose data set is gone); no batches.</summary>
    public static TokenDataTask ForTokenizer(TextTokenizer tokenizer, int context) => new(tokenizer, context);

    public string Name => "tokens";
    public bool HasData => _train is not null;
    public bool HasValidation => _val is not null;
    public int VocabSize => _tok.VocabSize;
    public int ContextLength { get; }
    public TextTokenizer Tokenizer => _tok;

    /// <summary>The data directory (absolute), or null for a task over a tokenizer alone.</summary>
    public string? Dir => _data?.Dir;

    public (Tensor Inputs, Tensor Targets) Batch(int batchSize, ulong seed, long position)
    {
        if (_train is null) throw new UsageException("training on a token data set needs --data DIR");
        int t = ContextLength;
        var x = new long[batchSize * t];
        var y = new long[batchSize * t];
        var window = new long[t + 1];
        for (int b = 0; b < batchSize; b++)
        {
            var rng = DataStream.Rng(seed, position + b);
            long start = rng.NextInt64(0, _train.Length - t);
            _train.Read(start, t + 1, window, 0);
            Array.Copy(window, 0, x, b * t, t);
            Array.Copy(window, 1, y, b * t, t);
        }
        return (Tensor.FromArray(x, [batchSize, t]), Tensor.FromArray(y, [batchSize, t]));
    }

    /// <summary>Start of fixed window k of n over a file of <paramref name="length"/> tokens: evenly spread, first at 0.</summary>
    long WindowStart(long length, int k, int n) => n <= 1 ? 0 : (length - ContextLength - 1) * k / (n - 1);

    /// <summary>The held-out windows: val.bin when it holds one, else (a tiny data set) train.bin.</summary>
    TokenFile Held => _val ?? _train ?? throw new UsageException("evaluating a token data model needs its data set (--data DIR)");

    (long[] X, long[] Y) Windows(TokenFile f, int from, int count, int n)
    {
        int t = ContextLength;
        var x = new long[count * t];
        var y = new long[count * t];
        var window = new long[t + 1];
        for (int b = 0; b < count; b++)
        {
            f.Read(WindowStart(f.Length, from + b, n), t + 1, window, 0);
            Array.Copy(window, 0, x, b * t, t);
            Array.Copy(window, 1, y, b * t, t);
        }
        return (x, y);
    }

    public double? ValidationLoss(Gpt model, int windows, int batch)
    {
        if (_val is null) return null;
        int n = (int)Math.Clamp(Math.Min(windows, _val.Length - ContextLength), 1, int.MaxValue);
        int t = ContextLength;
        bool training = model.Training;
        model.Eval();
        try
        {
            using var _ = GradMode.NoGrad();
            double sum = 0;
            for (int from = 0; from < n; from += batch)
            {
                int count = Math.Min(batch, n - from);
                using var scope = Tensor.NewScope();
                var (x, y) = Windows(_val, from, count, n);
                var device = SortTask.ModelDevice(model);
                var logits = model.Forward(Tensor.FromArray(x, [count, t], device));
                // Mean over this batch's tokens, weighted by its share of the windows; the model may have more ids than the
                // tokenizer (a padded Hugging Face vocabulary).
                sum += logits.View(-1, model.Config.VocabSize).CrossEntropy(Tensor.FromArray(y, [count * t], device)).Item() * count;
            }
            return sum / n;
        }
        finally { model.Train(training); }
    }

    public double Evaluate(Gpt model, int samples)
    {
        var f = Held;
        int t = ContextLength;
        int n = (int)Math.Clamp(Math.Min(Math.Min(samples, 64), f.Length - t), 1, int.MaxValue);
        var (x, y) = Windows(f, 0, n, n);
        bool training = model.Training;
        model.Eval();
        try
        {
            using var _ = GradMode.NoGrad();
            using var scope = Tensor.NewScope();
            var pred = model.Forward(Tensor.FromArray(x, [n, t], SortTask.ModelDevice(model))).ArgMax(-1).ToArray<long>();
            return pred.Zip(y).Count(p => p.First == p.Second) / (double)pred.Length;
        }
        finally { model.Train(training); }
    }

    public IEnumerable<string> Samples(Gpt model, int count, ulong seed)
    {
        var f = Held;
        var prompt = new long[Math.Min(8, ContextLength)];
        for (int i = 0; i < count; i++)
        {
            f.Read(new Random((int)seed + i).NextInt64(0, f.Length - prompt.Length), prompt.Length, prompt, 0);
            yield return TextTask.SampleLine(model, _tok, prompt, seed + (ulong)i);
        }
    }

    public Dictionary<string, string> Metadata() => new()
    {
        ["task"] = "tokens",
        ["task.context"] = ContextLength.ToString(CultureInfo.InvariantCulture),
    };

    public long[] Encode(string text) => [.. _tok.Encode(text).Select(v => (long)v)];

    public string Decode(IEnumerable<long> tokens) => _tok.Decode(tokens.Select(v => v is >= 0 and <= int.MaxValue ? (int)v : -1));

    public void Dispose()
    {
        _train?.Dispose();
        _val?.Dispose();
    }
}

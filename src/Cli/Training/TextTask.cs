using System.Globalization;
using Engine.Graph;
using Engine.Nn;

namespace Engine.Cli.Training;

/// <summary>
/// A character-level language model over a text file: the vocabulary is the file's distinct characters, batches are
/// random windows from the first 90%, accuracy is next-character accuracy on windows from the last 10%.
/// </summary>
sealed class TextTask : ITask
{
    readonly string _text;
    readonly char[] _chars;
    readonly Dictionary<char, int> _index;
    readonly int _split;

    /// <summary>A task over a vocabulary alone (encode and decode, for sampling a checkpoint); no batches.</summary>
    public static TextTask ForVocabulary(string vocabulary, int context) => new(null, context, vocabulary);

    public TextTask(string? text, int context, string? vocabulary = null)
    {
        if (text is not null && text.Length < context + 2) throw new UsageException($"the text has {text.Length} characters; it needs more than the context length {context} + 1");
        text ??= "";
        _text = text;
        _chars = (vocabulary ?? new string(text.Distinct().Order().ToArray())).ToCharArray();
        _index = _chars.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => p.i);
        ContextLength = context;
        if (_chars.Length == 0) throw new UsageException("the text is empty");
        _split = Math.Max(context + 1, (int)(text.Length * 0.9));
        if (text.Length - _split < context + 1) _split = text.Length; // too short to hold out: evaluate on training text
    }

    public string Name => "text";
    public int VocabSize => _chars.Length;
    public int ContextLength { get; }

    long Tok(char c) => _index.TryGetValue(c, out var i) ? i : 0;

    public (Tensor Inputs, Tensor Targets) Batch(int batchSize, ulong seed, long step)
    {
        if (_text.Length == 0) throw new UsageException("training on a text task needs --text FILE");
        var rng = new Random(HashCode.Combine(seed, step));
        int t = ContextLength;
        var x = new long[batchSize * t];
        var y = new long[batchSize * t];
        for (int b = 0; b < batchSize; b++)
        {
            int start = rng.Next(0, _split - t - 1 + 1);
            for (int i = 0; i < t; i++) { x[b * t + i] = Tok(_text[start + i]); y[b * t + i] = Tok(_text[start + i + 1]); }
        }
        return (Tensor.FromArray(x, [batchSize, t]), Tensor.FromArray(y, [batchSize, t]));
    }

    public double Evaluate(Gpt model, int samples)
    {
        if (_text.Length == 0) throw new UsageException("evaluating a text model needs --text FILE");
        int lo = _split < _text.Length ? _split : 0;
        int t = ContextLength;
        if (_text.Length - lo < t + 1) return 0;
        var rng = new Random(4242);
        int n = Math.Min(samples, 64);
        var x = new long[n * t];
        var y = new long[n * t];
        for (int b = 0; b < n; b++)
        {
            int start = rng.Next(lo, _text.Length - t);
            for (int i = 0; i < t; i++) { x[b * t + i] = Tok(_text[start + i]); y[b * t + i] = Tok(_text[start + i + 1]); }
        }
        bool training = model.Training;
        model.Eval();
        try
        {
            using var _ = GradMode.NoGrad();
            using var scope = Tensor.NewScope();
            var pred = model.Forward(Tensor.FromArray(x, [n, t])).ArgMax(-1).ToArray<long>();
            return pred.Zip(y).Count(p => p.First == p.Second) / (double)pred.Length;
        }
        finally { model.Train(training); }
    }

    public IEnumerable<string> Samples(Gpt model, int count, ulong seed)
    {
        for (int i = 0; i < count; i++)
        {
            var prompt = _text.Length > 8 ? _text.Substring(new Random((int)seed + i).Next(0, _text.Length - 8), 8) : _chars[0].ToString();
            using var p = Tensor.FromArray(Encode(prompt), [1, prompt.Length]);
            using var outp = model.Generate(p, 60, 0.8, 10, seed + (ulong)i);
            yield return (prompt + "|" + Decode(outp.ToArray<long>().Skip(prompt.Length))).Replace("\n", "⏎");
        }
    }

    public Dictionary<string, string> Metadata() => new()
    {
        ["task"] = "text",
        ["task.vocabulary"] = new string(_chars),
        ["task.context"] = ContextLength.ToString(CultureInfo.InvariantCulture),
    };

    public long[] Encode(string text) => text.Select(Tok).ToArray();

    public string Decode(IEnumerable<long> tokens) => new(tokens.Select(t => t >= 0 && t < _chars.Length ? _chars[t] : '?').ToArray());
}

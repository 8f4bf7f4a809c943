using System.Globalization;
using Engine.Graph;
using Engine.Autograd.Nn;

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

    /// <summary>
    /// Reads a UTF-8 text file. A file that is not text (invalid UTF-8, or NUL bytes as binary files have) is refused
    /// with <see cref="InvalidDataException"/>, since training on it would only learn noise.
    /// </summary>
    public static string ReadText(string path)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (FileNotFoundException) { throw new UsageException($"--text {path}: file not found"); }
        catch (DirectoryNotFoundException) { throw new UsageException($"--text {path}: file not found"); }
        int nul = Array.IndexOf(bytes, (byte)0);
        if (nul >= 0) throw new InvalidDataException($"{path}: not a text file (a NUL byte at offset {nul}; --text needs UTF-8 text)");
        try { return new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes).TrimStart('\uFEFF'); }
        catch (System.Text.DecoderFallbackException e) { throw new InvalidDataException($"{path}: not a text file (invalid UTF-8 at offset {e.Index}; --text needs UTF-8 text)"); }
    }

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

    /// <summary>False for a task rebuilt from a vocabulary alone (no batches, no held-out text).</summary>
    public bool HasText => _text.Length > 0;
    public int VocabSize => _chars.Length;
    public int ContextLength { get; }

    long Tok(char c) => _index.TryGetValue(c, out var i) ? i : 0;

    public (Tensor Inputs, Tensor Targets) Batch(int batchSize, ulong seed, long position)
    {
        if (_text.Length == 0) throw new UsageException("training on a text task needs --text FILE");
        int t = ContextLength;
        var x = new long[batchSize * t];
        var y = new long[batchSize * t];
        for (int b = 0; b < batchSize; b++)
        {
            var rng = DataStream.Rng(seed, position + b);
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
            var pred = model.Forward(Tensor.FromArray(x, [n, t], SortTask.ModelDevice(model))).ArgMax(-1).ToArray<long>();
            return pred.Zip(y).Count(p => p.First == p.Second) / (double)pred.Length;
        }
        finally { model.Train(training); }
    }

    public IEnumerable<string> Samples(Gpt model, int count, ulong seed)
    {
        for (int i = 0; i < count; i++)
        {
            var prompt = _text.Length > 8 ? _text.Substring(new Random((int)seed + i).Next(0, _text.Length - 8), 8) : _chars[0].ToString();
            using var p = Tensor.FromArray(Encode(prompt), [1, prompt.Length], SortTask.ModelDevice(model));
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

    /// <summary>Tokens of a prompt; a character the model never saw is refused rather than silently mapped to another.</summary>
    public long[] Encode(string text)
    {
        var unknown = text.Where(c => !_index.ContainsKey(c)).Distinct().ToArray();
        if (unknown.Length > 0)
            throw new UsageException($"the prompt has character{(unknown.Length > 1 ? "s" : "")} outside the model's vocabulary: {string.Join(" ", unknown.Select(Show))} (the vocabulary is {_chars.Length} characters: {Show(new string(_chars))})");
        return text.Select(Tok).ToArray();
    }

    static string Show(char c) => c switch { '\n' => "'\\n'", '\t' => "'\\t'", '\r' => "'\\r'", ' ' => "' '", _ => $"'{c}'" };

    static string Show(string s) => s.Replace("\n", "\\n").Replace("\t", "\\t").Replace("\r", "\\r");

    public string Decode(IEnumerable<long> tokens) => new(tokens.Select(t => t >= 0 && t < _chars.Length ? _chars[t] : '?').ToArray());
}

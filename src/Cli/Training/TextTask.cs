using System.Globalization;
using Engine.Graph;
using Engine.Autograd.Nn;
using Engine.Cli.Text;

namespace Engine.Cli.Training;

/// <summary>
/// A language model over a text file, tokenized in memory by its <see cref="TextTokenizer"/> (<c>char</c>: the
/// vocabulary is the file's distinct characters; or a BPE encoding): batches are random windows from the first 90% of
/// the tokens, accuracy is next-token accuracy on windows from the last 10%. For files too big for memory, prepare a
/// <see cref="TokenDataTask"/> instead.
/// </summary>
sealed class TextTask : ITask
{
    readonly int[] _tokens;
    readonly TextTokenizer _tok;
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

    /// <summary>A task over a tokenizer alone (encode and decode, for sampling a checkpoint); no batches.</summary>
    public static TextTask ForTokenizer(TextTokenizer tokenizer, int context) => new(null, context, tokenizer);

    /// <summary>
    /// A task over <paramref name="text"/>, tokenized by <paramref name="tokenizer"/> (default: a character tokenizer
    /// over the text's own characters).
    /// </summary>
    public TextTask(string? text, int context, TextTokenizer? tokenizer = null)
    {
        _tok = tokenizer ?? TextTokenizer.Char(TextTokenizer.CharVocabulary(text ?? ""));
        _tokens = text is null ? [] : _tok.Encode(text);
        string unit = _tok.Name == "char" ? "characters" : $"{_tok.Name} tokens";
        if (text is not null && _tokens.Length < context + 2) throw new UsageException($"the text has {_tokens.Length} {unit}; it needs more than the context length {context} + 1");
        ContextLength = context;
        _split = Math.Max(context + 1, (int)(_tokens.Length * 0.9));
        if (_tokens.Length - _split < context + 1) _split = _tokens.Length; // too short to hold out: evaluate on training text
    }

    public string Name => "text";

    /// <summary>False for a task rebuilt from a tokenizer alone (no batches, no held-out text).</summary>
    public bool HasText => _tokens.Length > 0;
    public int VocabSize => _tok.VocabSize;
    public int ContextLength { get; }
    public TextTokenizer Tokenizer => _tok;

    public (Tensor Inputs, Tensor Targets) Batch(int batchSize, ulong seed, long position)
    {
        if (_tokens.Length == 0) throw new UsageException("training on a text task needs --text FILE");
        int t = ContextLength;
        var x = new long[batchSize * t];
        var y = new long[batchSize * t];
        for (int b = 0; b < batchSize; b++)
        {
            var rng = DataStream.Rng(seed, position + b);
            int start = rng.Next(0, _split - t - 1 + 1);
            for (int i = 0; i < t; i++) { x[b * t + i] = _tokens[start + i]; y[b * t + i] = _tokens[start + i + 1]; }
        }
        return (Tensor.FromArray(x, [batchSize, t]), Tensor.FromArray(y, [batchSize, t]));
    }

    public double Evaluate(Gpt model, int samples)
    {
        if (_tokens.Length == 0) throw new UsageException("evaluating a text model needs --text FILE");
        int lo = _split < _tokens.Length ? _split : 0;
        int t = ContextLength;
        if (_tokens.Length - lo < t + 1) return 0;
        var rng = new Random(4242);
        int n = Math.Min(samples, 64);
        var x = new long[n * t];
        var y = new long[n * t];
        for (int b = 0; b < n; b++)
        {
            int start = rng.Next(lo, _tokens.Length - t);
            for (int i = 0; i < t; i++) { x[b * t + i] = _tokens[start + i]; y[b * t + i] = _tokens[start + i + 1]; }
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
            // An 8-token prompt from the text (for char, the same 8 characters as always).
            long[] prompt = _tokens.Length > 8
                ? _tokens.AsSpan(new Random((int)seed + i).Next(0, _tokens.Length - 8), 8).ToArray().Select(v => (long)v).ToArray()
                : [0];
            yield return SampleLine(model, _tok, prompt, seed + (ulong)i);
        }
    }

    /// <summary>A prompt and its 60-token continuation (temperature 0.8, top 10), with '|' between and newlines shown as ⏎.</summary>
    internal static string SampleLine(Gpt model, TextTokenizer tok, long[] prompt, ulong seed)
    {
        using var p = Tensor.FromArray(prompt, [1, prompt.Length], SortTask.ModelDevice(model));
        using var outp = model.Generate(p, 60, 0.8, 10, seed);
        return (tok.Decode(prompt.Select(v => (int)v)) + "|" + tok.Decode(outp.ToArray<long>().Skip(prompt.Length).Select(v => (int)v))).Replace("\n", "⏎");
    }

    public Dictionary<string, string> Metadata()
    {
        var m = new Dictionary<string, string>
        {
            ["task"] = "text",
            ["task.context"] = ContextLength.ToString(CultureInfo.InvariantCulture),
        };
        // The character vocabulary stays in the model file as before (older engines read it there); tokenizer.json
        // beside it names the tokenizer of every text model.
        if (_tok.Vocabulary is { } v) m["task.vocabulary"] = v;
        return m;
    }

    /// <summary>Tokens of a prompt; a character the model never saw is refused rather than silently mapped to another.</summary>
    public long[] Encode(string text) => [.. _tok.Encode(text).Select(v => (long)v)];

    public string Decode(IEnumerable<long> tokens) => _tok.Decode(tokens.Select(v => v is >= 0 and <= int.MaxValue ? (int)v : -1));
}

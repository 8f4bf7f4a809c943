using System.Text.Json;
using Engine.Cli.Training;
using Microsoft.ML.Tokenizers;

namespace Engine.Cli.Text;

/// <summary>
/// The tokenizer of a text model: <c>char</c> (one token per UTF-16 code unit of a fixed vocabulary, what
/// <c>engine train --text</c> always did) or a byte-level BPE encoding from Microsoft.ML.Tokenizers and its data
/// packages: <c>gpt2</c> (GPT-2's 50,257 tokens), <c>cl100k</c> (cl100k_base) and <c>o200k</c> (o200k_base). Encode and
/// decode round-trip any text for the BPE encodings; <c>char</c> refuses characters outside its vocabulary. A literal
/// special token in the text (<c>&lt;|endoftext|&gt;</c>) encodes as that token, as Hugging Face's GPT-2 tokenizer does.
/// </summary>
sealed class TextTokenizer
{
    /// <summary>The names <c>--tokenizer</c> takes.</summary>
    public static readonly IReadOnlyList<string> Names = ["char", "gpt2", "cl100k", "o200k"];

    /// <summary>The file of a checkpoint's step directory (and of a prepared data directory's meta) naming the tokenizer.</summary>
    public const string FileName = "tokenizer.json";
    const string Format = "engine-tokenizer-v1";

    readonly Tokenizer? _bpe;
    readonly string? _chars;
    readonly Dictionary<char, int>? _index;

    TextTokenizer(string name, Tokenizer? bpe, string? chars, int? vocabSize = null, int? endOfText = null)
    {
        Name = name;
        _bpe = bpe;
        _chars = chars;
        if (vocabSize is int n)
        {
            VocabSize = n;
            EndOfText = endOfText;
        }
        else if (bpe is TiktokenTokenizer tk)
        {
            // The special tokens sit just above the merged ranks in all three encodings, so the highest is the last id.
            VocabSize = tk.SpecialTokens!.Values.Max() + 1;
            EndOfText = tk.SpecialTokens.TryGetValue("<|endoftext|>", out var eot) ? eot : null;
        }
        else
        {
            _index = chars!.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => p.i);
            VocabSize = chars!.Length;
        }
    }

    /// <summary><c>char</c>, <c>gpt2</c>, <c>cl100k</c> or <c>o200k</c>.</summary>
    public string Name { get; }

    /// <summary>
    /// True for the tokenizers a checkpoint can record by name (<see cref="Names"/>); false for one read from a Hugging
    /// Face model's own files (<see cref="HfTokenizerFiles.Read"/>) that is none of them, which can sample but not train.
    /// </summary>
    public bool Recordable => Names.Contains(Name);

    /// <summary>Ids run from 0 to VocabSize − 1.</summary>
    public int VocabSize { get; }

    /// <summary>The end-of-text token that <c>engine prepare</c> puts between files; none for <c>char</c>.</summary>
    public int? EndOfText { get; }

    /// <summary>The vocabulary of a <c>char</c> tokenizer (its characters in id order); null for the BPE encodings.</summary>
    public string? Vocabulary => _chars;

    /// <summary>A BPE encoding by name (loading its ranks takes about a second).</summary>
    public static TextTokenizer Bpe(string name) => name switch
    {
        "gpt2" => new("gpt2", TiktokenTokenizer.CreateForModel("gpt2"), null),
        "cl100k" => new("cl100k", TiktokenTokenizer.CreateForEncoding("cl100k_base"), null),
        "o200k" => new("o200k", TiktokenTokenizer.CreateForEncoding("o200k_base"), null),
        _ => throw new UsageException($"--tokenizer must be one of {string.Join(", ", Names)}, got '{name}'"),
    };

    /// <summary>
    /// A Hugging Face model's own BPE tokenizer (its vocab.json and merges.txt, or tokenizer.json), named by where it
    /// came from; not <see cref="Recordable"/>.
    /// </summary>
    public static TextTokenizer Files(string name, Tokenizer bpe, int vocabSize, int? endOfText) => new(name, bpe, null, vocabSize, endOfText);

    /// <summary>A character tokenizer over <paramref name="vocabulary"/> (distinct characters, in id order).</summary>
    public static TextTokenizer Char(string vocabulary)
    {
        if (vocabulary.Length == 0) throw new UsageException("the text is empty");
        if (vocabulary.Distinct().Count() != vocabulary.Length) throw new ArgumentException("a character vocabulary lists each character once", nameof(vocabulary));
        return new("char", null, vocabulary);
    }

    /// <summary>The character vocabulary of a text: its distinct characters in ordinal order.</summary>
    public static string CharVocabulary(IEnumerable<char> text) => new(text.Distinct().Order().ToArray());

    /// <summary>Checks a <c>--tokenizer</c> value.</summary>
    public static void CheckName(string name)
    {
        if (!Names.Contains(name)) throw new UsageException($"--tokenizer must be one of {string.Join(", ", Names)}, got '{name}'");
    }

    /// <summary>
    /// The ids of <paramref name="text"/>. A <c>char</c> tokenizer refuses characters outside its vocabulary rather than
    /// silently mapping them to another.
    /// </summary>
    public int[] Encode(ReadOnlySpan<char> text)
    {
        if (_bpe is not null) return [.. _bpe.EncodeToIds(text)];
        var ids = new int[text.Length];
        List<char>? unknown = null;
        for (int i = 0; i < text.Length; i++)
        {
            if (_index!.TryGetValue(text[i], out var id)) ids[i] = id;
            else (unknown ??= []).Add(text[i]);
        }
        if (unknown is not null)
        {
            var u = unknown.Distinct().ToArray();
            throw new UsageException($"the text has character{(u.Length > 1 ? "s" : "")} outside the model's vocabulary: {string.Join(" ", u.Select(Show))} (the vocabulary is {_chars!.Length} characters: {Show(_chars)})");
        }
        return ids;
    }

    /// <summary>The text of <paramref name="ids"/>; an id outside the vocabulary decodes as '?' (char) or is skipped (BPE).</summary>
    public string Decode(IEnumerable<int> ids)
    {
        if (_bpe is not null) return _bpe.Decode(ids.Where(i => i >= 0 && i < VocabSize));
        return new string(ids.Select(t => t >= 0 && t < _chars!.Length ? _chars[t] : '?').ToArray());
    }

    static string Show(char c) => c switch { '\n' => "'\\n'", '\t' => "'\\t'", '\r' => "'\\r'", ' ' => "' '", _ => $"'{c}'" };

    static string Show(string s) => s.Replace("\n", "\\n").Replace("\t", "\\t").Replace("\r", "\\r");

    /// <summary>Writes <c>{"format": …, "name": "gpt2"}</c>, with <c>"vocabulary"</c> for <c>char</c>.</summary>
    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteString("format", Format);
        w.WriteString("name", Name);
        if (_chars is not null)
        {
            // JSON text is Unicode: a lone surrogate (half of an emoji, as a character vocabulary holds it) cannot be
            // written as one, so such a vocabulary is written as its UTF-16 code units.
            if (!_chars.Any(char.IsSurrogate)) w.WriteString("vocabulary", _chars);
            else
            {
                w.WriteStartArray("vocabulary_utf16");
                foreach (var c in _chars) w.WriteNumberValue((int)c);
                w.WriteEndArray();
            }
        }
        w.WriteNumber("vocab_size", VocabSize);
    }

    /// <summary>Writes <see cref="FileName"/> into <paramref name="dir"/>, fsynced (a checkpoint's step directory).</summary>
    public void Write(string dir)
    {
        using var f = new FileStream(Path.Combine(dir, FileName), FileMode.CreateNew, FileAccess.Write);
        using (var w = new Utf8JsonWriter(f, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            WriteJson(w);
            w.WriteEndObject();
        }
        f.Write("\n"u8);
        f.Flush(flushToDisk: true);
    }

    /// <summary>Reads a tokenizer written by <see cref="WriteJson"/>; keys under <paramref name="prefix"/>.</summary>
    public static TextTokenizer Read(Fields f, string prefix = "")
    {
        if (f.StrOrNull(prefix + "format") is { } fmt && fmt != Format) throw f.Bad(prefix + "format", $"is '{fmt}', expected '{Format}'");
        var name = f.Str(prefix + "name");
        if (!Names.Contains(name)) throw f.Bad(prefix + "name", $"is '{name}', expected one of {string.Join(", ", Names)}");
        var t = name == "char" ? FromVocabulary(f, prefix + "vocabulary") : Bpe(name);
        if (f.Has(prefix + "vocab_size") && f.Int(prefix + "vocab_size", 1) != t.VocabSize)
            throw f.Bad(prefix + "vocab_size", $"is {f.Int(prefix + "vocab_size", 1)}, but the {name} tokenizer has {t.VocabSize} tokens");
        return t;
    }

    static TextTokenizer FromVocabulary(Fields f, string key)
    {
        string v;
        if (f.Has(key + "_utf16"))
        {
            try { v = new string(JsonSerializer.Deserialize<int[]>(f.Str(key + "_utf16"))!.Select(i => checked((char)i)).ToArray()); }
            catch (Exception e) when (e is JsonException or OverflowException or ArgumentNullException) { throw f.Bad(key + "_utf16", "is not a list of UTF-16 code units"); }
            key += "_utf16";
        }
        else v = f.Str(key);
        if (v.Length == 0 || v.Distinct().Count() != v.Length) throw f.Bad(key, "is not a list of distinct characters");
        return Char(v);
    }
}

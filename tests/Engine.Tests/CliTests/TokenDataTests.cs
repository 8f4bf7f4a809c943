using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Engine.Cli.Text;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.CliTests;

/// <summary>
/// <c>engine prepare</c> and <c>engine train --data</c> out of process: the bins are the encoding of the text, written
/// in bounded memory; validation loss, the best checkpoint, sampling with the recorded tokenizer, and exact resumes.
/// </summary>
[NonParallelizable]
public sealed class TokenDataTests : CliFixture
{
    const long MaxRssBytes = 256L << 20;

    /// <summary>Random lines of words from a pool with Unicode in it, about <paramref name="bytes"/> bytes of UTF-8.</summary>
    static string MakeText(int seed, long bytes)
    {
        string[] pool = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Über", "naïve", "café", "日本語", "中文",
            "👋🏽", "e\u0301", "1999", "don't", "it's", "(parens)", "—", "data,", "token.", "engine!", "ℕ", "x"];
        var rng = new Random(seed);
        var sb = new StringBuilder();
        long size = 0;
        while (size < bytes)
        {
            int start = sb.Length;
            int n = rng.Next(1, 16);
            for (int j = 0; j < n; j++) sb.Append(j > 0 ? " " : "").Append(pool[rng.Next(pool.Length)]);
            sb.Append(rng.Next(8) == 0 ? "\n\n" : "\n");
            size += Encoding.UTF8.GetByteCount(sb.ToString(start, sb.Length - start));
        }
        return sb.ToString();
    }

    static int[] ReadBin(string path, int width)
    {
        var b = File.ReadAllBytes(path);
        var ids = new int[b.Length / width];
        for (int i = 0; i < ids.Length; i++)
            ids[i] = width == 2 ? BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(i * 2)) : (int)BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(i * 4));
        return ids;
    }

    /// <summary>The peak resident set of a process (VmHWM), polled until it exits.</summary>
    static (EngineResult Result, long PeakBytes) RunMeasuringPeak(string[] args)
    {
        using var p = PublishedEngine.Start(args);
        long peak = 0;
        var until = DateTime.UtcNow + TimeSpan.FromMinutes(3);
        while (!p.HasExited && DateTime.UtcNow < until)
        {
            try
            {
                foreach (var line in File.ReadLines($"/proc/{p.Pid}/status"))
                    if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                        peak = Math.Max(peak, long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
            Thread.Sleep(10);
        }
        return (p.WaitForExit(TimeSpan.FromMinutes(3)), peak);
    }

    [Test]
    public void PrepareTokenizesFiftyMegabytesInBoundedMemoryAsTheWholeTextEncodes()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("the peak resident set is read from /proc");
        var text = MakeText(5, 50L << 20);
        var file = At("big.txt");
        File.WriteAllText(file, text, new UTF8Encoding(false));
        var (r, peak) = RunMeasuringPeak(["prepare", "--text", file, "--tokenizer", "gpt2", "--out", At("data"), "--quiet"]);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(peak, Is.GreaterThan(0), "VmHWM was read");
        Assert.That(peak, Is.LessThanOrEqualTo(MaxRssBytes), $"peak RSS {peak >> 20} MB for a {new FileInfo(file).Length >> 20} MB text");
        TestContext.Out.WriteLine($"prepare: peak RSS {peak >> 20} MB for {new FileInfo(file).Length >> 20} MB");

        var expected = TextTokenizer.Bpe("gpt2").Encode(text);
        var meta = JsonNode.Parse(File.ReadAllText(At("data", "meta.json")))!;
        Assert.That((string?)meta["dtype"], Is.EqualTo("uint16"));
        Assert.That((int)meta["vocab_size"]!, Is.EqualTo(50257));
        Assert.That((string?)meta["tokenizer"]!["name"], Is.EqualTo("gpt2"));
        var train = ReadBin(At("data", "train.bin"), 2);
        var val = ReadBin(At("data", "val.bin"), 2);
        Assert.That((long)meta["train_tokens"]!, Is.EqualTo(train.Length));
        Assert.That((long)meta["val_tokens"]!, Is.EqualTo(val.Length));
        Assert.That(val.Length, Is.EqualTo((long)Math.Round(expected.Length * 0.1)), "val.bin is the last 10% of the tokens");
        Assert.That(train.Concat(val), Is.EqualTo(expected), "the bins hold the encoding of the whole text");
    }

    [Test]
    public void PrepareJoinsFilesWithEndOfTextAndUsesUint32ForLargeVocabularies()
    {
        File.WriteAllText(At("a.txt"), "first file 日本語\n");
        File.WriteAllText(At("b.txt"), "second 👋🏽 file\n");
        Expect(0, "prepare", "--text", At("a.txt"), "--text", At("b.txt"), "--tokenizer", "o200k", "--out", At("d"), "--val-fraction", "0", "--quiet");
        var tok = TextTokenizer.Bpe("o200k");
        var meta = JsonNode.Parse(File.ReadAllText(At("d", "meta.json")))!;
        Assert.That((string?)meta["dtype"], Is.EqualTo("uint32"), "o200k's ids exceed 65,535");
        Assert.That(ReadBin(At("d", "train.bin"), 4), Is.EqualTo(tok.Encode("first file 日本語\n").Append(tok.EndOfText!.Value).Concat(tok.Encode("second 👋🏽 file\n"))));
        Assert.That(new FileInfo(At("d", "val.bin")).Length, Is.Zero);
        ExpectOneLineError(2, ["prepare", "--text", At("a.txt"), "--out", At("d")], "already holds", "--force");
        ExpectOneLineError(2, ["prepare", "--text", At("a.txt"), "--out", At("e"), "--tokenizer", "bert"], "--tokenizer", "gpt2");
    }

    static string DataSet(string dir, string file, string tokenizer)
    {
        File.WriteAllText(file, MakeText(9, 200_000));
        Expect(0, "prepare", "--text", file, "--tokenizer", tokenizer, "--out", dir, "--quiet");
        return dir;
    }

    static readonly string[] DataOptions = ["--context", "16", "--eval-every", "5", "--eval-samples", "8"];

    [Test]
    public void TrainOnDataReportsValidationLossKeepsBestAndSamplesWithTheRecordedTokenizer()
    {
        var data = DataSet(At("data"), At("t.txt"), "gpt2");
        var run = At("run");
        var r = Expect(0, Train(run, 20, ["--data", data, "--save-every", "100", "--keep", "1", .. DataOptions]));
        var rows = Metrics(run);
        var val = Column(rows, 6);
        for (int i = 0; i < rows.Count; i++)
            Assert.That(val[i].Length > 0, Is.EqualTo((i + 1) % 5 == 0), $"val_loss at step {i + 1}: only every 5 steps");
        var losses = val.Where(v => v.Length > 0).Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        Assert.That(losses, Has.All.GreaterThan(0).And.All.LessThan(20));
        int bestStep = 5 * (Array.IndexOf(losses, losses.Min()) + 1);

        var best = Path.Combine(run, "best");
        Assert.That(new DirectoryInfo(best).LinkTarget, Is.EqualTo($"step-{bestStep:D6}"), r.ToString());
        Assert.That(File.Exists(Path.Combine(best, "manifest.json")), "best names a complete checkpoint (kept despite --keep 1)");
        Assert.That(JsonNode.Parse(File.ReadAllText(Path.Combine(best, "tokenizer.json")))!["name"]!.GetValue<string>(), Is.EqualTo("gpt2"));
        Assert.That(File.ReadAllText(Path.Combine(best, "manifest.json")), Does.Contain("tokenizer.json"), "the manifest lists it");
        Assert.That(File.ReadAllText(Path.Combine(run, "loss.svg")), Does.Contain("val loss"));

        const string prompt = "naïve café 👋🏽 日本語";
        var s = Expect(0, "sample", "--checkpoint", best, "--prompt", prompt, "--tokens", "8");
        // Only WriteLine's own newline comes off: a model of this text may well generate newlines.
        var outText = s.Out.EndsWith('\n') ? s.Out[..^1] : s.Out;
        Assert.That(outText, Does.StartWith(prompt), "the prompt is encoded and decoded with gpt2, so it comes back whole");
        var tok = TextTokenizer.Bpe("gpt2");
        // Re-encoding may merge generated tokens (two newlines are one token), never split them into more.
        Assert.That(tok.Encode(outText).Length, Is.InRange(tok.Encode(prompt).Length + 1, tok.Encode(prompt).Length + 8), "up to 8 gpt2 tokens were generated");
        Assert.That(Expect(0, "sample", "--checkpoint", run, "--count", "2").Out.Split('\n', StringSplitOptions.RemoveEmptyEntries), Has.Length.EqualTo(2), "example prompts from the data set");
        Assert.That(Expect(0, "eval", "--checkpoint", run, "--samples", "8").Out, Does.Contain("eval accuracy:"));
        ExpectOneLineError(2, Train(At("other"), 5, ["--data", data, "--tokenizer", "cl100k"]), "gpt2");
    }

    [Test]
    public void ResumedDataRunContinuesAsOneNeverInterrupted()
    {
        var data = DataSet(At("data"), At("t.txt"), "gpt2");
        string[] opts = ["--data", data, "--dropout", "0.1", "--save-every", "10", "--keep", "10", .. DataOptions];
        Expect(0, Train(At("a"), 30, opts));
        Expect(0, Train(At("b"), 30, [.. opts, "--stop-at", "12"]));
        Expect(0, "train", "--resume", At("b"), "--quiet");
        AssertSameCheckpoint(Latest(At("a")), Latest(At("b")));
        var ma = Metrics(At("a"));
        var mb = Metrics(At("b"));
        Assert.That(Column(mb, 1), Is.EqualTo(Column(ma, 1)), "loss column");
        Assert.That(Column(mb, 6), Is.EqualTo(Column(ma, 6)), "val_loss column");
        Assert.That(new DirectoryInfo(At("b", "best")).LinkTarget, Is.EqualTo(new DirectoryInfo(At("a", "best")).LinkTarget));
        AssertSameCheckpoint(Path.Combine(At("a"), new DirectoryInfo(At("a", "best")).LinkTarget!), Path.Combine(At("b"), new DirectoryInfo(At("b", "best")).LinkTarget!));
    }

    [Test]
    public void TextRunWithABpeTokenizerRecordsItForSample()
    {
        var text = At("t.txt");
        File.WriteAllText(text, MakeText(2, 20_000));
        var run = At("run");
        Expect(0, Train(run, 4, ["--text", text, "--tokenizer", "cl100k", "--context", "16"]));
        Assert.That(File.ReadAllText(Path.Combine(Latest(run), "tokenizer.json")), Does.Contain("cl100k"));
        var s = Expect(0, "sample", "--checkpoint", run, "--prompt", "日本語 e\u0301", "--tokens", "3");
        Assert.That(s.Out.TrimEnd('\n'), Does.StartWith("日本語 e\u0301"));
        // A character model of the same text still records its vocabulary (emoji halves included) and samples.
        Expect(0, Train(At("char"), 3, ["--text", text, "--context", "16"]));
        Assert.That(Expect(0, "sample", "--checkpoint", At("char"), "--prompt", "👋🏽", "--tokens", "3").Out, Does.StartWith("👋🏽"));
    }
}

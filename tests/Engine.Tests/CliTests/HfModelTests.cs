using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Engine.Autograd.Nn;
using Engine.Cli.Text;
using Engine.Cli.Training;
using Engine.Graph;
using Engine.Serialization;
using Microsoft.ML.Tokenizers;
using NUnit.Framework;

namespace Engine.Tests.CliTests;

/// <summary>
/// Hugging Face GPT-2 directories through the CLI, out of process: <c>engine sample --model DIR</c> against a greedy
/// loop written here over <see cref="Gpt.FromPretrained"/>'s logits, <c>engine train --init-from DIR</c> (the
/// weights it starts from, its first loss, the shape checks) and <c>engine export</c> back to the format with GPT-2's
/// tokenizer files. Each test writes its GPT-2 directory itself: random weights, a tiny width.
/// </summary>
[NonParallelizable]
public sealed class HfModelTests : CliFixture
{
    const int Gpt2Vocab = 50257;

    /// <summary>
    /// Writes a GPT-2 directory with random weights (wide enough that greedy decoding does not repeat one token) and
    /// returns its config as loaded.
    /// </summary>
    static GptConfig WriteModel(string dir, GptConfig config, int seed)
    {
        var rng = new Random(seed);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        using var model = new Gpt(config);
        using (GradMode.NoGrad())
            foreach (var (name, p) in model.StateDict())
            {
                bool norm = name.Contains("ln", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal);
                var v = new float[p.Numel];
                for (int i = 0; i < v.Length; i++) v[i] = (float)((norm ? 1 : 0) + (norm ? 0.1 : 0.4) * Normal());
                using var t = Tensor.FromArray(v, p.Shape);
                p.CopyInPlace(t);
            }
        model.SavePretrained(dir);
        return config;
    }

    static GptConfig Small(int vocab, bool tied, GptActivation activation, double eps = 1e-5) =>
        new GptConfig(vocab, 16, 2, 4, 32, 0, tied) { Activation = activation, LayerNormEpsilon = eps };

    /// <summary>Greedy decoding written here: the argmax of the last position's logits, the context cropped to the positions.</summary>
    static int[] Greedy(Gpt model, int[] prompt, int tokens)
    {
        using var _ = GradMode.NoGrad();
        var ids = prompt.ToList();
        int v = model.Config.VocabSize;
        for (int s = 0; s < tokens; s++)
        {
            var ctx = ids.Skip(Math.Max(0, ids.Count - model.Config.ContextLength)).Select(i => (long)i).ToArray();
            using var x = Tensor.FromArray(ctx, [1, ctx.Length]);
            using var logits = model.Forward(x);
            var last = logits.ToArray<float>().AsSpan((ctx.Length - 1) * v, v);
            int best = 0;
            for (int i = 1; i < v; i++) if (last[i] > last[best]) best = i;
            ids.Add(best);
        }
        return [.. ids];
    }

    const string Prompt = "Hello world, naïve café 日本語 👋🏽 don't";

    [Test]
    public void GreedySampleOfAGpt2DirectoryIsTheArgmaxOfFromPretrainedsLogits()
    {
        var hf = At("hf");
        WriteModel(hf, Small(Gpt2Vocab, tied: true, GptActivation.GeluTanh), 1);
        // No tokenizer files: a 50,257-token model is read with GPT-2's encoding.
        var gpt2 = TextTokenizer.Bpe("gpt2");
        using var model = Gpt.FromPretrained(hf);
        var ids = Greedy(model, gpt2.Encode(Prompt), 12);
        Assert.That(ids.Skip(gpt2.Encode(Prompt).Length).Distinct().Count(), Is.GreaterThan(1), "the continuation is not one token repeated");
        var expected = gpt2.Decode(ids) + "\n";

        var r = Expect(0, "sample", "--model", hf, "--prompt", Prompt, "--tokens", "12", "--temperature", "0");
        Assert.That(r.Out, Is.EqualTo(expected));
        Assert.That(Expect(0, "sample", "--checkpoint", hf, "--prompt", Prompt, "--tokens", "12").Out, Is.EqualTo(expected),
            "--checkpoint is the same option, and greedy is the default");
        Assert.That(Expect(0, "sample", "--model", hf, "--prompt", Prompt, "--tokens", "12", "--temperature", "1", "--top-k", "1").Out, Is.EqualTo(expected),
            "top-1 sampling is greedy");

        // Top-k sampling: the seed decides, and the text continues the prompt.
        string Sampled(string seed) => Expect(0, "sample", "--model", hf, "--prompt", Prompt, "--tokens", "12", "--temperature", "1", "--top-k", "50", "--seed", seed).Out;
        var a = Sampled("3");
        Assert.That(Sampled("3"), Is.EqualTo(a));
        Assert.That(a, Does.StartWith(Prompt).And.Not.EqualTo(expected));

        ExpectOneLineError(2, ["sample", "--model", hf], "--prompt");
    }

    [Test]
    public void SampleUsesTheDirectorysOwnTokenizerFilesOrSaysWhyItHasNone()
    {
        // A byte-level BPE of its own: the 256 byte symbols, two merges and <|endoftext|>, in GPT-2's file formats.
        var hf = At("hf");
        WriteModel(hf, Small(260, tied: false, GptActivation.Gelu), 2);
        var map = HfTokenizerFiles.ByteToUnicode();
        var vocab = new Dictionary<string, int>();
        for (int b = 0; b < 256; b++) vocab[map[b].ToString()] = b;
        vocab["Ġt"] = 256;
        vocab["he"] = 257;
        vocab["<|endoftext|>"] = 258;
        File.WriteAllText(Path.Combine(hf, "vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllText(Path.Combine(hf, "merges.txt"), "#version: 0.2\nĠ t\nh e\n");

        var tok = HfTokenizerFiles.Read(hf)!;
        Assert.That(tok.Recordable, Is.False);
        Assert.That(tok.Encode(" the"), Is.EqualTo(new[] { 256, 257 }), "the files' merges apply");
        var prompt = "the theme 日本";
        Assert.That(tok.Decode(tok.Encode(prompt)), Is.EqualTo(prompt));
        using var model = Gpt.FromPretrained(hf);
        // Ids above the tokenizer's (here 259) decode to nothing, as the CLI decodes them.
        var expected = tok.Decode(Greedy(model, tok.Encode(prompt), 10)) + "\n";
        Assert.That(Expect(0, "sample", "--model", hf, "--prompt", prompt, "--tokens", "10").Out, Is.EqualTo(expected));

        // The same tokenizer as a Hugging Face tokenizer.json instead.
        var fast = At("fast");
        CopyDirectory(hf, fast);
        File.Delete(Path.Combine(fast, "vocab.json"));
        File.Delete(Path.Combine(fast, "merges.txt"));
        File.WriteAllText(Path.Combine(fast, "tokenizer.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["version"] = "1.0",
            ["added_tokens"] = new[] { new Dictionary<string, object> { ["id"] = 258, ["content"] = "<|endoftext|>", ["special"] = true } },
            ["pre_tokenizer"] = new Dictionary<string, object> { ["type"] = "ByteLevel", ["add_prefix_space"] = false },
            ["model"] = new Dictionary<string, object> { ["type"] = "BPE", ["vocab"] = vocab.Where(kv => kv.Value < 258).ToDictionary(), ["merges"] = new[] { new[] { "Ġ", "t" }, new[] { "h", "e" } } },
        }));
        Assert.That(Expect(0, "sample", "--model", fast, "--prompt", prompt, "--tokens", "10").Out, Is.EqualTo(expected));

        // Without tokenizer files, only GPT-2's vocabulary size says which encoding the ids are.
        File.Delete(Path.Combine(hf, "vocab.json"));
        ExpectOneLineError(5, ["sample", "--model", hf, "--prompt", "x"], "merges.txt", "vocab.json");
        File.Delete(Path.Combine(hf, "merges.txt"));
        ExpectOneLineError(2, ["sample", "--model", hf, "--prompt", "x"], "no tokenizer files", "vocab_size 260");
    }

    /// <summary>Prepares a small gpt2 token data set from Unicode text.</summary>
    string PrepareGpt2Data()
    {
        var text = At("text.txt");
        var sb = new StringBuilder();
        var rng = new Random(5);
        string[] words = ["the", "fox", "Über", "日本語", "café", "don't", "1999", "jumps", "👋🏽", "over"];
        for (int i = 0; i < 400; i++) sb.Append(words[rng.Next(words.Length)]).Append(i % 9 == 8 ? "\n" : " ");
        File.WriteAllText(text, sb.ToString());
        var data = At("data");
        Expect(0, "prepare", "--text", text, "--tokenizer", "gpt2", "--out", data);
        return data;
    }

    [Test]
    public void InitFromStartsAtTheDirectorysWeightsAndExportsThemBack()
    {
        var hf = At("hf");
        var config = WriteModel(hf, Small(Gpt2Vocab, tied: true, GptActivation.GeluTanh, eps: 1e-6), 3);
        var data = PrepareGpt2Data();
        var run = At("run");
        // lr 0: AdamW changes nothing (no step, and weight decay scaled by the lr), so the run ends where it started.
        string[] train = ["train", "--init-from", hf, "--data", data, "--out", run, "--steps", "2", "--lr", "0", "--batch", "4", "--context", "8", "--quiet"];
        var r = Expect(0, train);
        Assert.That(r.Out, Does.Contain("initialized from").And.Contain("gelu_new"));

        // The checkpoint records the model's activation and epsilon.
        using (var ckpt = SafeTensors.Load(Path.Combine(Latest(run), "model.safetensors")))
        {
            Assert.That(ckpt.Metadata["config.activation"], Is.EqualTo("gelu_new"));
            Assert.That(double.Parse(ckpt.Metadata["config.layer_norm_eps"], CultureInfo.InvariantCulture), Is.EqualTo(1e-6));
            Assert.That(ckpt.Metadata["config.tied"], Is.EqualTo("1"));
        }

        // The first step's loss is the directory's model's loss on the run's first batch.
        using (var initial = Gpt.FromPretrained(hf))
        using (var task = new TokenDataTask(data, 8))
        using (GradMode.NoGrad())
        using (Tensor.NewScope())
        {
            var (x, y) = task.Batch(4, 1337, 0);
            double loss = initial.Forward(x).View(-1, Gpt2Vocab).CrossEntropy(y.View(-1)).Item();
            double logged = double.Parse(Metrics(run)[0][1], CultureInfo.InvariantCulture);
            Assert.That(logged, Is.EqualTo(loss).Within(1e-6 * Math.Abs(loss)));
        }

        var outDir = At("out");
        var e = Expect(0, "export", "--checkpoint", run, "--out", outDir);
        Assert.That(e.Out, Does.Contain("vocab.json").And.Contain("merges.txt"));
        using (var exported = Gpt.FromPretrained(outDir))
            Assert.That(exported.Config, Is.EqualTo(config), "shape, vocabulary, tied head, gelu_new and epsilon round-trip");
        using (var a = SafeTensors.Load(Path.Combine(hf, "model.safetensors")))
        using (var b = SafeTensors.Load(Path.Combine(outDir, "model.safetensors")))
        {
            Assert.That(b.Tensors.Keys.Order(StringComparer.Ordinal), Is.EqualTo(a.Tensors.Keys.Order(StringComparer.Ordinal)));
            foreach (var (k, t) in a.Tensors)
                Assert.That(b.Tensors[k].ToArray<float>(), Is.EqualTo(t.ToArray<float>()), $"{k}: the weights come back bit for bit");
        }
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "config.json"))))
        {
            Assert.That(doc.RootElement.GetProperty("activation_function").GetString(), Is.EqualTo("gelu_new"));
            Assert.That(doc.RootElement.GetProperty("layer_norm_epsilon").GetDouble(), Is.EqualTo(1e-6));
        }
        // The export samples with its own tokenizer files (found to be gpt2's) as the checkpoint does.
        var fromCheckpoint = Expect(0, "sample", "--checkpoint", run, "--prompt", Prompt, "--tokens", "6").Out;
        Assert.That(Expect(0, "sample", "--model", outDir, "--prompt", Prompt, "--tokens", "6").Out, Is.EqualTo(fromCheckpoint));

        // A resume reads the model config from the checkpoint, not from the directory, which may be gone.
        Directory.Move(hf, At("moved"));
        Expect(0, "train", "--resume", run, "--steps", "3", "--quiet");
        Assert.That(LatestStep(run), Is.EqualTo(3));
    }

    [Test]
    public void InitFromRefusesAShapeOrVocabularyThatDoesNotFit()
    {
        var hf = At("hf");
        WriteModel(hf, Small(Gpt2Vocab, tied: true, GptActivation.GeluTanh), 4);
        var data = PrepareGpt2Data();
        string[] InitTrain(params string[] extra) => ["train", "--init-from", hf, "--out", At("run"), "--steps", "1", "--quiet", .. extra];
        ExpectOneLineError(2, InitTrain("--data", data, "--layers", "3"), "--layers 3", "n_layer 2");
        ExpectOneLineError(2, InitTrain("--data", data, "--dmodel", "64"), "--dmodel 64", "n_embd 32");
        ExpectOneLineError(2, InitTrain("--data", data, "--context", "32"), "--context 32", "n_positions 16");
        ExpectOneLineError(2, InitTrain(), "--data", "--text");
        ExpectOneLineError(2, ["train", "--init-from", At("nowhere"), "--data", data, "--out", At("run")], "not found");
        var small = At("small");
        WriteModel(small, Small(1000, tied: false, GptActivation.Gelu), 5);
        ExpectOneLineError(2, ["train", "--init-from", small, "--data", data, "--out", At("run"), "--steps", "1"], "50257", "vocab_size 1000");
        Assert.That(Directory.Exists(At("run")), Is.False, "a refused run creates no run directory");
    }

    [Test]
    public void ExportOfAGpt2RunWritesTokenizerFilesThatEncodeAsGpt2AndACharRunSaysWhyNot()
    {
        var text = At("text.txt");
        File.WriteAllText(text, string.Concat(Enumerable.Repeat("Über naïve 日本語 👋🏽 the fox don't jump.\n", 40)));
        var run = At("run");
        Expect(0, Train(run, 1, "--text", text, "--tokenizer", "gpt2", "--context", "8"));
        var hf = At("hf");
        Expect(0, "export", "--checkpoint", run, "--out", hf);
        foreach (var f in new[] { "vocab.json", "merges.txt", "tokenizer_config.json" }) Assert.That(File.Exists(Path.Combine(hf, f)), f);
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(hf, "tokenizer_config.json"))))
        {
            Assert.That(doc.RootElement.GetProperty("tokenizer_class").GetString(), Is.EqualTo("GPT2Tokenizer"));
            Assert.That(doc.RootElement.GetProperty("model_max_length").GetInt32(), Is.EqualTo(8));
        }
        // Microsoft.ML.Tokenizers' own BPE over the written files, with GPT-2's byte-level settings and split.
        var split = new Regex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+");
        var bpe = BpeTokenizer.Create(new BpeOptions(Path.Combine(hf, "vocab.json"), Path.Combine(hf, "merges.txt"))
        {
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(split, null),
        });
        const string unicode = "Grüße, 世界! naïve café — 👋🏽 e\u0301 ℕ 1999's  spaces\n\ttabs";
        var gpt2 = TextTokenizer.Bpe("gpt2");
        Assert.That(bpe.EncodeToIds(unicode), Is.EqualTo(gpt2.Encode(unicode)));

        // A char run: no tokenizer files, the summary says why, and an earlier export's files do not linger.
        var charRun = At("char");
        Expect(0, Train(charRun, 1, "--text", text, "--context", "8"));
        var r = Expect(0, "export", "--checkpoint", charRun, "--out", hf);
        Assert.That(r.Out, Does.Contain("no tokenizer files").And.Contain("char").And.Contain("removed"));
        Assert.That(Directory.GetFiles(hf).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { "config.json", "generation_config.json", "model.safetensors" }));
    }

    [Test]
    public void CheckpointsWithoutActivationOrEpsilonReadAsTheDefaults()
    {
        var meta = new Dictionary<string, string>
        {
            ["format"] = "engine-gpt-v1", ["config.vocab"] = "11", ["config.context"] = "8", ["config.layers"] = "1",
            ["config.heads"] = "2", ["config.dmodel"] = "16", ["config.dropout"] = "0", ["config.tied"] = "0",
        };
        var old = Checkpoint.ReadConfig(new Fields(meta, "old.safetensors"));
        Assert.That(old, Is.EqualTo(new GptConfig(11, 8, 1, 2, 16)));
        meta["config.activation"] = "gelu_new";
        meta["config.layer_norm_eps"] = "1E-06";
        var now = Checkpoint.ReadConfig(new Fields(meta, "new.safetensors"));
        Assert.That(now, Is.EqualTo(new GptConfig(11, 8, 1, 2, 16) { Activation = GptActivation.GeluTanh, LayerNormEpsilon = 1e-6 }));
        meta["config.activation"] = "relu";
        Assert.That(() => Checkpoint.ReadConfig(new Fields(meta, "bad.safetensors")), Throws.InstanceOf<CheckpointException>().With.Message.Contains("relu"));
    }
}

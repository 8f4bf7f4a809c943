using System.Buffers.Binary;
using System.Text.Json;
using Engine.Autograd.Nn;
using Engine.Graph;
using Engine.Serialization;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Hugging Face GPT-2 directories: each test writes one itself (GPT-2's real vocabulary size and names, a tiny width,
/// random weights), checks <see cref="Gpt.FromPretrained"/> against a float64 GPT-2 forward written here from the
/// file's arrays, and <see cref="Gpt.SavePretrained"/> against the bytes and the key set transformers writes.
/// </summary>
[NonParallelizable]
public sealed class Gpt2FormatTests
{
    const int Vocab = 50257, Embd = 32, Layers = 2, Heads = 4, Positions = 16;

    string _dir = "";

    [SetUp]
    public void MakeDir()
    {
        _dir = Path.Combine(Path.GetTempPath(), "engine-gpt2-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void RemoveDir()
    {
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { }
    }

    string At(string name) => Path.Combine(_dir, name);

    /// <summary>transformers' safetensors keys of GPT2LMHeadModel with n_layer 2 and a tied head: the golden list.</summary>
    static readonly string[] TiedKeys =
    [
        "transformer.wte.weight", "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias", "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
        "transformer.h.0.attn.c_proj.weight", "transformer.h.0.attn.c_proj.bias", "transformer.h.0.ln_2.weight", "transformer.h.0.ln_2.bias",
        "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_fc.bias", "transformer.h.0.mlp.c_proj.weight", "transformer.h.0.mlp.c_proj.bias",
        "transformer.h.1.ln_1.weight", "transformer.h.1.ln_1.bias", "transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_attn.bias",
        "transformer.h.1.attn.c_proj.weight", "transformer.h.1.attn.c_proj.bias", "transformer.h.1.ln_2.weight", "transformer.h.1.ln_2.bias",
        "transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_fc.bias", "transformer.h.1.mlp.c_proj.weight", "transformer.h.1.mlp.c_proj.bias",
        "transformer.ln_f.weight", "transformer.ln_f.bias",
    ];

    static readonly string[] UntiedKeys = [.. TiedKeys, "lm_head.weight"];

    /// <summary>A GPT-2 file's arrays as doubles (the stored values, exactly), by name without the transformer. prefix.</summary>
    sealed class Weights : Dictionary<string, (double[] Data, int[] Shape)>;

    /// <summary>
    /// Random GPT-2 weights under GPT-2's names and layouts (Conv1D weights [in, out]); values are rounded to
    /// <paramref name="storeAs"/> so the stored file holds them exactly.
    /// </summary>
    static Weights MakeWeights(bool tied, DType storeAs, int seed)
    {
        var rng = new Random(seed);
        double Round(double v) => storeAs switch
        {
            DType.BFloat16 => BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits((float)v) & unchecked((int)0xFFFF0000)),
            DType.Float16 => (double)(Half)v,
            _ => (float)v,
        };
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var w = new Weights();
        void Add(string name, int[] shape, double mean, double std)
        {
            var d = new double[shape.Aggregate(1, (a, b) => a * b)];
            for (int i = 0; i < d.Length; i++) d[i] = Round(mean + std * Normal());
            w[name] = (d, shape);
        }
        Add("wte.weight", [Vocab, Embd], 0, 0.5);
        Add("wpe.weight", [Positions, Embd], 0, 0.3);
        for (int i = 0; i < Layers; i++)
        {
            Add($"h.{i}.ln_1.weight", [Embd], 1, 0.1); Add($"h.{i}.ln_1.bias", [Embd], 0, 0.1);
            Add($"h.{i}.attn.c_attn.weight", [Embd, 3 * Embd], 0, 0.3); Add($"h.{i}.attn.c_attn.bias", [3 * Embd], 0, 0.1);
            Add($"h.{i}.attn.c_proj.weight", [Embd, Embd], 0, 0.2); Add($"h.{i}.attn.c_proj.bias", [Embd], 0, 0.1);
            Add($"h.{i}.ln_2.weight", [Embd], 1, 0.1); Add($"h.{i}.ln_2.bias", [Embd], 0, 0.1);
            // Wide pre-activations, so that exact and tanh GELU give visibly different logits.
            Add($"h.{i}.mlp.c_fc.weight", [Embd, 4 * Embd], 0, 0.6); Add($"h.{i}.mlp.c_fc.bias", [4 * Embd], 0, 0.3);
            Add($"h.{i}.mlp.c_proj.weight", [4 * Embd, Embd], 0, 0.2); Add($"h.{i}.mlp.c_proj.bias", [Embd], 0, 0.1);
        }
        Add("ln_f.weight", [Embd], 1, 0.1); Add("ln_f.bias", [Embd], 0, 0.1);
        if (!tied) Add("lm_head.weight", [Vocab, Embd], 0, 0.5);
        return w;
    }

    /// <summary>Writes config.json by hand (transformers' field names) and model.safetensors from <paramref name="w"/>.</summary>
    static void WriteDir(string dir, Weights w, string activation, bool tied, double eps = 1e-5, bool prefixed = true, DType storeAs = DType.Float32,
        bool withBuffers = false, string? configJson = null)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), configJson ?? $$"""
            {
              "activation_function": "{{activation}}",
              "architectures": ["GPT2LMHeadModel"],
              "layer_norm_epsilon": {{eps.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}},
              "model_type": "gpt2",
              "n_ctx": {{Positions}},
              "n_embd": {{Embd}},
              "n_head": {{Heads}},
              "n_layer": {{Layers}},
              "n_positions": {{Positions}},
              "tie_word_embeddings": {{(tied ? "true" : "false")}},
              "vocab_size": {{Vocab}}
            }
            """);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        try
        {
            foreach (var (name, (data, shape)) in w)
            {
                var key = name == "lm_head.weight" || !prefixed ? name : "transformer." + name;
                using var f = Tensor.FromArray(data.Select(x => (float)x).ToArray(), shape);
                tensors.Add(new(key, f.To(storeAs)));
            }
            if (withBuffers)
                for (int i = 0; i < Layers; i++)
                {
                    // The causal mask and the -1e4 fill value that older transformers saved with every block.
                    var tri = new float[Positions * Positions];
                    for (int r = 0; r < Positions; r++) for (int c = 0; c <= r; c++) tri[r * Positions + c] = 1;
                    tensors.Add(new($"{(prefixed ? "transformer." : "")}h.{i}.attn.bias", Tensor.FromArray(tri, [1, 1, Positions, Positions])));
                    tensors.Add(new($"{(prefixed ? "transformer." : "")}h.{i}.attn.masked_bias", Tensor.FromArray(new[] { -1e4f }, [])));
                }
            SafeTensors.Save(Path.Combine(dir, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        }
        finally { foreach (var t in tensors) t.Value.Dispose(); }
    }

    static readonly long[,] Tokens = { { 50256, 15496, 11, 995, 0, 50000, 7, 3 }, { 1, 2, 3, 4, 5, 6, 7, 50255 } };

    /// <summary>GPT-2's forward in float64, straight from the arrays: logits [batch, time, vocab] flattened.</summary>
    static double[] Reference(Weights w, bool geluTanh, double eps, bool tied)
    {
        double[] W(string name) => w[name].Data;
        int b = Tokens.GetLength(0), t = Tokens.GetLength(1), c = Embd, hd = Embd / Heads;
        var logits = new double[b * t * Vocab];
        for (int n = 0; n < b; n++)
        {
            var x = new double[t][];
            for (int i = 0; i < t; i++)
            {
                x[i] = new double[c];
                for (int j = 0; j < c; j++) x[i][j] = W("wte.weight")[Tokens[n, i] * c + j] + W("wpe.weight")[i * c + j];
            }
            for (int l = 0; l < Layers; l++)
            {
                var h = $"h.{l}.";
                var a = x.Select(r => Norm(r, W(h + "ln_1.weight"), W(h + "ln_1.bias"), eps)).ToArray();
                var qkv = a.Select(r => Conv1D(r, W(h + "attn.c_attn.weight"), W(h + "attn.c_attn.bias"))).ToArray();
                var y = new double[t][];
                for (int i = 0; i < t; i++) y[i] = new double[c];
                for (int head = 0; head < Heads; head++)
                    for (int i = 0; i < t; i++)
                    {
                        var s = new double[i + 1];
                        for (int j = 0; j <= i; j++)
                        {
                            double dot = 0;
                            for (int d = 0; d < hd; d++) dot += qkv[i][head * hd + d] * qkv[j][c + head * hd + d];
                            s[j] = dot / Math.Sqrt(hd);
                        }
                        double max = s.Max(), sum = s.Sum(v => Math.Exp(v - max));
                        for (int j = 0; j <= i; j++)
                            for (int d = 0; d < hd; d++) y[i][head * hd + d] += Math.Exp(s[j] - max) / sum * qkv[j][2 * c + head * hd + d];
                    }
                for (int i = 0; i < t; i++)
                {
                    var p = Conv1D(y[i], W(h + "attn.c_proj.weight"), W(h + "attn.c_proj.bias"));
                    for (int j = 0; j < c; j++) x[i][j] += p[j];
                    var m = Conv1D(Norm(x[i], W(h + "ln_2.weight"), W(h + "ln_2.bias"), eps), W(h + "mlp.c_fc.weight"), W(h + "mlp.c_fc.bias"));
                    for (int j = 0; j < m.Length; j++) m[j] = geluTanh ? RefErf.GeluTanh(m[j]) : RefErf.Gelu(m[j]);
                    var o = Conv1D(m, W(h + "mlp.c_proj.weight"), W(h + "mlp.c_proj.bias"));
                    for (int j = 0; j < c; j++) x[i][j] += o[j];
                }
            }
            var head0 = tied ? W("wte.weight") : W("lm_head.weight");
            for (int i = 0; i < t; i++)
            {
                var f = Norm(x[i], W("ln_f.weight"), W("ln_f.bias"), eps);
                for (int v = 0; v < Vocab; v++)
                {
                    double dot = 0;
                    for (int j = 0; j < c; j++) dot += f[j] * head0[v * c + j];
                    logits[(n * t + i) * Vocab + v] = dot;
                }
            }
        }
        return logits;
    }

    static double[] Norm(double[] x, double[] g, double[] b, double eps)
    {
        double mean = x.Average(), var = x.Sum(v => (v - mean) * (v - mean)) / x.Length;
        return x.Select((v, j) => (v - mean) / Math.Sqrt(var + eps) * g[j] + b[j]).ToArray();
    }

    // GPT-2's Conv1D: y = x·W + b with W [in, out].
    static double[] Conv1D(double[] x, double[] wt, double[] b)
    {
        int outs = b.Length;
        var y = (double[])b.Clone();
        for (int i = 0; i < x.Length; i++)
            for (int o = 0; o < outs; o++) y[o] += x[i] * wt[i * outs + o];
        return y;
    }

    static double[] Logits(Gpt model)
    {
        using var _ = GradMode.NoGrad();
        using var ids = Tensor.FromArray(Tokens.Cast<long>().ToArray(), [Tokens.GetLength(0), Tokens.GetLength(1)]);
        using var y = model.Forward(ids);
        Assert.That(y.Shape, Is.EqualTo(new Shape([Tokens.GetLength(0), Tokens.GetLength(1), Vocab])));
        return y.ToArray<double>();
    }

    /// <summary>max |a − b| over max |ref|.</summary>
    static double RelativeError(double[] actual, double[] expected)
    {
        double err = 0, scale = 0;
        for (int i = 0; i < expected.Length; i++) { err = Math.Max(err, Math.Abs(actual[i] - expected[i])); scale = Math.Max(scale, Math.Abs(expected[i])); }
        return err / scale;
    }

    [TestCase("gelu_new", true, 1e-5)]
    [TestCase("gelu_new", false, 1e-5)]
    [TestCase("gelu", true, 1e-5)]
    [TestCase("gelu", false, 0.5)]
    public void FromPretrainedMatchesAFloat64Gpt2Forward(string activation, bool tied, double eps)
    {
        var w = MakeWeights(tied, DType.Float32, seed: activation.Length + (tied ? 1 : 0));
        WriteDir(_dir, w, activation, tied, eps);
        using var model = Gpt.FromPretrained(_dir);
        Assert.That(model.Training, Is.False, "from_pretrained returns an eval-mode model");
        bool tanh = activation == "gelu_new";
        Assert.That(model.Config, Is.EqualTo(new GptConfig(Vocab, Positions, Layers, Heads, Embd, 0.1, tied)
        { Activation = tanh ? GptActivation.GeluTanh : GptActivation.Gelu, LayerNormEpsilon = eps }));
        Assert.That(ReferenceEquals(model.Head.Weight, model.Wte.Weight), Is.EqualTo(tied), "a tied head is the embedding's tensor");
        var actual = Logits(model);
        double err = RelativeError(actual, Reference(w, tanh, eps, tied));
        TestContext.Out.WriteLine($"relative error {err:G3}, against the other GELU {RelativeError(actual, Reference(w, !tanh, eps, tied)):G3}");
        Assert.That(err, Is.LessThanOrEqualTo(1e-4), "relative to the float64 forward");
        // The settings are honoured: the forward with the other GELU, or GPT-2's epsilon, is measurably different.
        Assert.That(RelativeError(actual, Reference(w, !tanh, eps, tied)), Is.GreaterThan(10 * Math.Max(err, 1e-6)), "activation honoured");
        if (eps != 1e-5) Assert.That(RelativeError(actual, Reference(w, tanh, 1e-5, tied)), Is.GreaterThan(10 * Math.Max(err, 1e-6)), "epsilon honoured");
    }

    [Test]
    public void HubStyleUnprefixedKeysWithOldBuffersAndDefaultFieldsLoad()
    {
        var w = MakeWeights(tied: true, DType.Float32, seed: 7);
        // The hub's original gpt2 config: no tie_word_embeddings (default true), no layer_norm_epsilon (1e-5), n_ctx.
        var config = $$"""
            {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1, "bos_token_id": 50256,
             "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02, "model_type": "gpt2", "n_ctx": {{Positions}},
             "n_embd": {{Embd}}, "n_head": {{Heads}}, "n_layer": {{Layers}}, "n_positions": {{Positions}}, "resid_pdrop": 0.1,
             "summary_activation": null, "summary_first_dropout": 0.1, "summary_proj_to_labels": true, "summary_type": "cls_index",
             "summary_use_proj": true, "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50} }, "vocab_size": {{Vocab}} }
            """;
        WriteDir(_dir, w, "gelu_new", tied: true, prefixed: false, withBuffers: true, configJson: config);
        using var model = Gpt.FromPretrained(_dir);
        Assert.That(RelativeError(Logits(model), Reference(w, true, 1e-5, true)), Is.LessThanOrEqualTo(1e-4));
    }

    [TestCase(DType.BFloat16)]
    [TestCase(DType.Float16)]
    public void HalfPrecisionFilesConvertToTheModelsDType(DType stored)
    {
        var w = MakeWeights(tied: false, stored, seed: 11);
        WriteDir(_dir, w, "gelu_new", tied: false, storeAs: stored);
        using var model = Gpt.FromPretrained(_dir);
        Assert.That(model.Parameters().Select(p => p.DType).Distinct(), Is.EqualTo(new[] { DType.Float32 }));
        Assert.That(RelativeError(Logits(model), Reference(w, true, 1e-5, false)), Is.LessThanOrEqualTo(1e-4));
        using var bf = Gpt.FromPretrained(_dir, dtype: DType.BFloat16);
        Assert.That(bf.Wte.Weight.DType, Is.EqualTo(DType.BFloat16));
    }

    /// <summary>The tensors of a safetensors file as raw bytes by name, its dtypes and its metadata, parsed here from the format.</summary>
    static (Dictionary<string, byte[]> Data, Dictionary<string, string> DTypes, Dictionary<string, string> Meta) ReadRaw(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, (int)n));
        var data = new Dictionary<string, byte[]>();
        var dtypes = new Dictionary<string, string>();
        var meta = new Dictionary<string, string>();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__") { foreach (var m in p.Value.EnumerateObject()) meta[m.Name] = m.Value.GetString()!; continue; }
            var off = p.Value.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            data[p.Name] = bytes[(int)(8 + n + off[0])..(int)(8 + n + off[1])];
            dtypes[p.Name] = p.Value.GetProperty("dtype").GetString()!;
        }
        return (data, dtypes, meta);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void SavePretrainedRoundTripsBitForBitWithTransformersKeySet(bool tied)
    {
        var w = MakeWeights(tied, DType.Float32, seed: 3);
        var src = At("src");
        var dst = At("dst");
        WriteDir(src, w, "gelu_new", tied);
        using var model = Gpt.FromPretrained(src);
        model.SavePretrained(dst);
        Assert.That(Directory.GetFiles(dst).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { "config.json", "generation_config.json", "model.safetensors" }));

        var a = ReadRaw(Path.Combine(src, "model.safetensors"));
        var b = ReadRaw(Path.Combine(dst, "model.safetensors"));
        Assert.That(b.Data.Keys.Order(StringComparer.Ordinal), Is.EqualTo((tied ? TiedKeys : UntiedKeys).Order(StringComparer.Ordinal)), "transformers' key set");
        Assert.That(b.Meta, Is.EqualTo(new Dictionary<string, string> { ["format"] = "pt" }));
        Assert.That(b.DTypes.Values.Distinct(), Is.EqualTo(new[] { "F32" }));
        foreach (var (k, bytes) in b.Data) Assert.That(bytes, Is.EqualTo(a.Data[k]), $"bytes of {k}");
        Assert.That(Gpt2Format.KeyNames(model.Config), Is.EqualTo(tied ? TiedKeys : UntiedKeys));

        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dst, "config.json")));
        var c = doc.RootElement;
        Assert.That(c.GetProperty("model_type").GetString(), Is.EqualTo("gpt2"));
        Assert.That(c.GetProperty("architectures").EnumerateArray().Select(x => x.GetString()), Is.EqualTo(new[] { "GPT2LMHeadModel" }));
        Assert.That((c.GetProperty("n_layer").GetInt32(), c.GetProperty("n_head").GetInt32(), c.GetProperty("n_embd").GetInt32(), c.GetProperty("n_positions").GetInt32(), c.GetProperty("vocab_size").GetInt32()),
            Is.EqualTo((Layers, Heads, Embd, Positions, Vocab)));
        Assert.That(c.GetProperty("activation_function").GetString(), Is.EqualTo("gelu_new"));
        Assert.That(c.GetProperty("layer_norm_epsilon").GetDouble(), Is.EqualTo(1e-5));
        Assert.That(c.GetProperty("tie_word_embeddings").GetBoolean(), Is.EqualTo(tied));
        Assert.That(c.GetProperty("n_inner").ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That(c.GetProperty("bos_token_id").GetInt32(), Is.EqualTo(50256));
        Assert.That(c.GetProperty("torch_dtype").GetString(), Is.EqualTo("float32"));
        var names = c.EnumerateObject().Select(p => p.Name).ToList();
        Assert.That(names, Is.EqualTo(names.Order(StringComparer.Ordinal)), "keys sorted, as json.dumps(sort_keys=True)");
        Assert.That(File.ReadAllText(Path.Combine(dst, "config.json")), Does.Contain("\"layer_norm_epsilon\": 1e-05,"), "floats as Python writes them");

        using var again = Gpt.FromPretrained(dst);
        Assert.That(again.Config, Is.EqualTo(model.Config));
        var l1 = Logits(model);
        var l2 = Logits(again);
        Assert.That(l2.Select(BitConverter.DoubleToInt64Bits), Is.EqualTo(l1.Select(BitConverter.DoubleToInt64Bits)), "logits bit for bit");
    }

    [Test]
    public void AnEngineModelSavesAndLoadsWithItsSettings()
    {
        var config = new GptConfig(40, 8, 1, 2, 8, 0, false) { Activation = GptActivation.Gelu, LayerNormEpsilon = 1e-3 };
        using var model = new Gpt(config, generator: new Generator(5));
        model.Eval();
        model.SavePretrained(_dir);
        using var loaded = Gpt.FromPretrained(_dir, dropout: 0);
        Assert.That(loaded.Config, Is.EqualTo(config));
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "config.json")));
        Assert.That(doc.RootElement.GetProperty("bos_token_id").ValueKind, Is.EqualTo(JsonValueKind.Null), "50256 is no token of a 40-token vocabulary");
        using var _ = GradMode.NoGrad();
        using var ids = Tensor.FromArray(new long[] { 1, 5, 39, 0 }, [1, 4]);
        using var y1 = model.Forward(ids);
        using var y2 = loaded.Forward(ids);
        Assert.That(y2.ToArray<float>(), Is.EqualTo(y1.ToArray<float>()));
    }

    static string FromPretrainedError(string dir)
    {
        var e = Assert.Throws<CheckpointException>(() => Gpt.FromPretrained(dir).Dispose())!;
        Assert.That(e.Message, Does.Not.Contain("\n"));
        return e.Message;
    }

    [Test]
    public void BadFilesGiveClearErrors()
    {
        var w = MakeWeights(tied: true, DType.Float32, seed: 5);

        var missing = new Weights();
        foreach (var (k, v) in w) if (k != "h.1.mlp.c_fc.bias") missing[k] = v;
        WriteDir(At("missing"), missing, "gelu_new", tied: true);
        Assert.That(FromPretrainedError(At("missing")), Does.Contain("missing tensor [transformer.h.1.mlp.c_fc.bias]").And.Contain("model.safetensors"));

        var untied = At("untied");
        WriteDir(untied, w, "gelu_new", tied: false);
        Assert.That(FromPretrainedError(untied), Does.Contain("missing tensor [lm_head.weight]").And.Contain("tie_word_embeddings false"));

        var shape = new Weights();
        foreach (var (k, v) in w) shape[k] = k == "h.0.attn.c_attn.weight" ? (v.Data, [3 * Embd, Embd]) : v;
        WriteDir(At("shape"), shape, "gelu_new", tied: true);
        Assert.That(FromPretrainedError(At("shape")), Does.Contain("'transformer.h.0.attn.c_attn.weight' has shape [96, 32], expected [32, 96]"));

        var extra = new Weights();
        foreach (var (k, v) in w) extra[k] = v;
        extra["h.0.mlp.gate.weight"] = (new double[4], [4]);
        WriteDir(At("extra"), extra, "gelu_new", tied: true);
        Assert.That(FromPretrainedError(At("extra")), Does.Contain("unexpected tensor [transformer.h.0.mlp.gate.weight]"));

        WriteDir(At("act"), w, "relu", tied: true);
        Assert.That(FromPretrainedError(At("act")), Does.Contain("config.json").And.Contain("activation_function \"relu\" is not supported"));

        WriteDir(At("llama"), w, "gelu_new", tied: true, configJson: """{"model_type": "llama"}""");
        Assert.That(FromPretrainedError(At("llama")), Does.Contain("model_type is \"llama\""));

        WriteDir(At("inner"), w, "gelu_new", tied: true, configJson: $$"""{"n_embd": {{Embd}}, "n_inner": 100}""");
        Assert.That(FromPretrainedError(At("inner")), Does.Contain("n_inner 100 is not supported"));

        WriteDir(At("heads"), w, "gelu_new", tied: true, configJson: $$"""{"n_embd": {{Embd}}, "n_head": 5, "n_layer": 2, "n_positions": 16}""");
        Assert.That(FromPretrainedError(At("heads")), Does.Contain("invalid model config").And.Contain("Heads 5"));

        Assert.That(FromPretrainedError(At("nothing")), Does.Contain("directory not found"));
        var noWeights = At("noweights");
        WriteDir(noWeights, w, "gelu_new", tied: true);
        File.Delete(Path.Combine(noWeights, "model.safetensors"));
        Assert.That(FromPretrainedError(noWeights), Does.Contain("model.safetensors: file not found"));
    }
}

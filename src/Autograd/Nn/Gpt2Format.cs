using System.Globalization;
using Engine.Graph;
using Engine.Serialization;

namespace Engine.Autograd.Nn;

/// <summary>
/// A <see cref="Gpt"/> as a Hugging Face <c>transformers</c> GPT-2 directory: <c>config.json</c>
/// (<see cref="HfGpt2Config"/>), <c>model.safetensors</c> and <c>generation_config.json</c>, read and written as
/// <c>GPT2LMHeadModel.from_pretrained</c>/<c>save_pretrained</c> do.
/// <para>
/// Names: <c>transformer.wte</c>, <c>transformer.wpe</c>, <c>transformer.h.{i}.{ln_1, attn.c_attn, attn.c_proj, ln_2,
/// mlp.c_fc, mlp.c_proj}</c>, <c>transformer.ln_f</c>, <c>lm_head</c>. GPT-2's projections are <c>Conv1D</c>s whose
/// weight is stored <c>[in, out]</c>, the transpose of <see cref="Linear"/>'s <c>[out, in]</c>; c_attn's output is
/// q, k, v in that order, as <see cref="CausalSelfAttention.Qkv"/>'s. A tied <c>lm_head.weight</c> is not stored
/// (<c>transformers</c> drops a tensor that shares another's storage), an untied one is.
/// </para>
/// </summary>
public static class Gpt2Format
{
    /// <summary>The model's config file.</summary>
    public const string ConfigFile = "config.json";
    /// <summary>The weights file.</summary>
    public const string WeightsFile = "model.safetensors";
    /// <summary>The generation defaults file.</summary>
    public const string GenerationConfigFile = "generation_config.json";

    // transformers refuses to load a safetensors file without this metadata ("format": "pt", or tf/flax/mlx).
    static readonly Dictionary<string, string> s_metadata = new() { ["format"] = "pt" };

    /// <summary>One stored tensor: its GPT-2 name, the model's tensor, and whether it is a Conv1D weight (stored transposed).</summary>
    readonly record struct Entry(string Name, Tensor Parameter, bool Conv1D);

    /// <summary>
    /// The names <see cref="Save"/> writes for <paramref name="config"/>, in state-dict order: exactly
    /// <c>GPT2LMHeadModel</c>'s safetensors key set (with <c>lm_head.weight</c> only when the head is untied).
    /// </summary>
    public static IReadOnlyList<string> KeyNames(GptConfig config)
    {
        var names = new List<string> { "transformer.wte.weight", "transformer.wpe.weight" };
        for (int i = 0; i < config.Layers; i++)
            foreach (var part in new[] { "ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj" })
            {
                names.Add($"transformer.h.{i}.{part}.weight");
                names.Add($"transformer.h.{i}.{part}.bias");
            }
        names.Add("transformer.ln_f.weight");
        names.Add("transformer.ln_f.bias");
        if (!config.TiedHead) names.Add("lm_head.weight");
        return names;
    }

    static List<Entry> Entries(Gpt model)
    {
        var e = new List<Entry> { new("transformer.wte.weight", model.Wte.Weight, false), new("transformer.wpe.weight", model.Wpe.Weight, false) };
        for (int i = 0; i < model.Blocks.Layers.Count; i++)
        {
            var b = (TransformerBlock)model.Blocks.Layers[i];
            var h = $"transformer.h.{i}.";
            Norm(e, h + "ln_1", b.Ln1);
            Conv1D(e, h + "attn.c_attn", b.Attn.Qkv);
            Conv1D(e, h + "attn.c_proj", b.Attn.Proj);
            Norm(e, h + "ln_2", b.Ln2);
            Conv1D(e, h + "mlp.c_fc", b.Mlp.Fc);
            Conv1D(e, h + "mlp.c_proj", b.Mlp.Proj);
        }
        Norm(e, "transformer.ln_f", model.LnF);
        if (!model.Config.TiedHead) e.Add(new("lm_head.weight", model.Head.Weight, false));
        return e;
    }

    static void Norm(List<Entry> e, string name, LayerNorm ln)
    {
        e.Add(new(name + ".weight", ln.Weight ?? throw Unsupported(name, "has no weight"), false));
        e.Add(new(name + ".bias", ln.Bias ?? throw Unsupported(name, "has no bias"), false));
    }

    static void Conv1D(List<Entry> e, string name, Linear l)
    {
        e.Add(new(name + ".weight", l.Weight, true));
        e.Add(new(name + ".bias", l.Bias ?? throw Unsupported(name, "has no bias"), false));
    }

    static EngineException Unsupported(string name, string what) => new("Gpt.SavePretrained", $"GPT-2's {name} has weight and bias; this model's {what}");

    /// <summary>
    /// Writes <paramref name="model"/> into <paramref name="dir"/> (created if needed): config.json,
    /// generation_config.json and model.safetensors in the model's dtype with <c>{"format": "pt"}</c> metadata.
    /// Each file is written atomically (a temporary file renamed over it).
    /// </summary>
    public static void Save(Gpt model, string dir)
    {
        var dtype = model.Wte.Weight.DType;
        var hf = HfGpt2Config.From(model.Config, dtype);
        Directory.CreateDirectory(dir);
        var entries = Entries(model);
        using (var scope = Tensor.NewScope())
        {
            // Conv1D weights go out as transposed views; the writer makes each contiguous as it streams it.
            var tensors = entries.Select(x => new KeyValuePair<string, Tensor>(x.Name, x.Conv1D ? x.Parameter.T : x.Parameter)).ToList();
            SafeTensors.Save(Path.Combine(dir, WeightsFile), tensors, s_metadata);
        }
        hf.Write(Path.Combine(dir, ConfigFile));
        hf.WriteGenerationConfig(Path.Combine(dir, GenerationConfigFile));
    }

    /// <summary>
    /// Reads a GPT-2 directory into a new <see cref="Gpt"/> on <paramref name="device"/> in <paramref name="dtype"/>
    /// (float32, float16 and bfloat16 files convert), in eval mode as <c>from_pretrained</c> returns it. Keys may lack
    /// the <c>transformer.</c> prefix (the hub's original <c>gpt2</c> file); the non-persistent <c>attn.bias</c> and
    /// <c>attn.masked_bias</c> buffers of older files are ignored, and so is a stored <c>lm_head.weight</c> of a tied
    /// model (<c>transformers</c> ties it to the embedding after loading). Anything else that does not fit (a missing
    /// or unexpected key, a wrong shape, a non-floating tensor, a setting a <see cref="Gpt"/> cannot compute) is a
    /// <see cref="CheckpointException"/> naming the file, the key and the shapes; nothing is left allocated.
    /// </summary>
    /// <param name="dir">The directory with config.json and model.safetensors.</param>
    /// <param name="device">Where the model lives (default CPU).</param>
    /// <param name="dtype">The model's floating dtype (default float32).</param>
    /// <param name="dropout">The model's dropout probability (default: the config's <c>resid_pdrop</c>).</param>
    public static Gpt Load(string dir, Device? device = null, DType dtype = DType.Float32, double? dropout = null)
    {
        if (!dtype.IsFloatingPoint()) throw new DTypeException("Gpt.FromPretrained", $"a model's dtype must be floating point, got {dtype.Name()}");
        if (!Directory.Exists(dir)) throw new CheckpointException("Gpt.FromPretrained", $"{dir}: directory not found (expected a Hugging Face GPT-2 directory with {ConfigFile} and {WeightsFile})");
        var configPath = Path.Combine(dir, ConfigFile);
        var config = HfGpt2Config.Read(configPath).ToGptConfig(configPath, dropout);
        var path = Path.Combine(dir, WeightsFile);
        if (!File.Exists(path))
            throw new CheckpointException("Gpt.FromPretrained", $"{path}: file not found" +
                (File.Exists(Path.Combine(dir, "pytorch_model.bin")) ? " (the directory has pytorch_model.bin, a pickle the engine does not read: convert it to safetensors)" : ""));
        using var contents = SafeTensors.Load(path, device);
        var model = new Gpt(config, device, dtype);
        try
        {
            LoadInto(model, contents, path);
            model.Eval();
            return model;
        }
        catch { model.Dispose(); throw; }
    }

    static void LoadInto(Gpt model, SafeTensors.Contents contents, string path)
    {
        var file = contents.Tensors;
        // The hub's original gpt2 weights were saved from GPT2Model: the same names without "transformer.".
        string strip = file.ContainsKey("transformer.wte.weight") || !file.ContainsKey("wte.weight") ? "" : "transformer.";
        string FileName(string name) => strip.Length > 0 && name.StartsWith(strip, StringComparison.Ordinal) ? name[strip.Length..] : name;

        var entries = Entries(model);
        var missing = entries.Where(e => !file.ContainsKey(FileName(e.Name))).Select(e => FileName(e.Name)).ToList();
        var known = entries.Select(e => FileName(e.Name)).ToHashSet(StringComparer.Ordinal);
        var unexpected = file.Keys.Where(k => !known.Contains(k) && !Ignored(k, strip.Length == 0, model.Config)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new CheckpointException("Gpt.FromPretrained", $"{path}: " + string.Join("; ", new[]
            {
                missing.Count > 0 ? $"missing {Plural(missing.Count, "tensor")} {List(missing)}" : null,
                unexpected.Count > 0 ? $"unexpected {Plural(unexpected.Count, "tensor")} {List(unexpected)}" : null,
            }.Where(s => s is not null)) + $" (config.json: n_layer {model.Config.Layers}, tie_word_embeddings {(model.Config.TiedHead ? "true" : "false")})");

        if (model.Config.TiedHead && file.TryGetValue("lm_head.weight", out var head)) Check(path, "lm_head.weight", head, model.Wte.Weight.Shape, false, model.Config);
        foreach (var e in entries) Check(path, FileName(e.Name), file[FileName(e.Name)], e.Parameter.Shape, e.Conv1D, model.Config);

        using var _ = GradMode.NoGrad();
        using var scope = Tensor.NewScope();
        foreach (var e in entries)
        {
            var src = file[FileName(e.Name)];
            e.Parameter.CopyInPlace(e.Conv1D ? src.T : src);
        }
    }

    // Buffers transformers registers but no longer saves, and a tied head's own copy.
    static bool Ignored(string key, bool prefixed, GptConfig config)
    {
        if (key == "lm_head.weight") return config.TiedHead;
        var parts = key.Split('.');
        int h = prefixed ? 1 : 0;
        return parts.Length == h + 4 && (h == 0 || parts[0] == "transformer") && parts[h] == "h" && int.TryParse(parts[h + 1], NumberStyles.None, CultureInfo.InvariantCulture, out int i)
            && i < config.Layers && parts[h + 2] == "attn" && parts[h + 3] is "bias" or "masked_bias";
    }

    static void Check(string path, string name, Tensor t, Shape model, bool conv1D, GptConfig c)
    {
        if (!t.DType.IsFloatingPoint())
            throw new CheckpointException("Gpt.FromPretrained", $"{path}: tensor '{name}' has dtype {t.DType.Name()}, expected a floating type");
        Shape want = conv1D ? [model[1], model[0]] : model;
        if (t.Shape != want)
            throw new CheckpointException("Gpt.FromPretrained", $"{path}: tensor '{name}' has shape {t.Shape}, expected {want}" +
                (conv1D ? " (a Conv1D weight, stored [in, out])" : "") +
                $" for config.json's vocab_size {c.VocabSize}, n_positions {c.ContextLength}, n_embd {c.DModel}");
    }

    static string Plural(int n, string what) => n == 1 ? what : what + "s";

    static string List(List<string> names) =>
        "[" + string.Join(", ", names.Take(8)) + (names.Count > 8 ? $", ... ({names.Count - 8} more)" : "") + "]";
}

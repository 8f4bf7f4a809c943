using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Engine.Autograd.Nn;

/// <summary>
/// The <c>config.json</c> of a Hugging Face <c>transformers</c> GPT-2 model (<c>GPT2Config</c>): its fields under
/// their JSON names, each defaulting to GPT-2's own value, as <c>GPT2Config()</c> does, so a file that leaves a field
/// out means what it means to <c>transformers</c>. <see cref="Read"/> accepts only what a <see cref="Gpt"/> computes
/// the same way; <see cref="Write"/> writes the fields <c>save_pretrained</c> writes for a <c>GPT2LMHeadModel</c>,
/// sorted and indented as it does.
/// </summary>
public sealed record HfGpt2Config
{
    /// <summary>The <c>transformers</c> release whose GPT-2 config layout <see cref="Write"/> follows (its <c>transformers_version</c>).</summary>
    public const string TransformersVersion = "4.46.0";

    /// <summary><c>vocab_size</c>.</summary>
    public int VocabSize { get; init; } = 50257;
    /// <summary><c>n_positions</c>: learned positions (the context length).</summary>
    public int NPositions { get; init; } = 1024;
    /// <summary><c>n_embd</c>: width.</summary>
    public int NEmbd { get; init; } = 768;
    /// <summary><c>n_layer</c>: blocks.</summary>
    public int NLayer { get; init; } = 12;
    /// <summary><c>n_head</c>: attention heads.</summary>
    public int NHead { get; init; } = 12;
    /// <summary><c>n_inner</c>: the feed-forward's width; null means 4·<c>n_embd</c> (the only width a <see cref="Gpt"/> has).</summary>
    public int? NInner { get; init; }
    /// <summary><c>activation_function</c>: <c>gelu_new</c> (GPT-2's, tanh-approximated) or <c>gelu</c> (exact).</summary>
    public string ActivationFunction { get; init; } = "gelu_new";
    /// <summary><c>resid_pdrop</c>.</summary>
    public double ResidPdrop { get; init; } = 0.1;
    /// <summary><c>embd_pdrop</c>.</summary>
    public double EmbdPdrop { get; init; } = 0.1;
    /// <summary><c>attn_pdrop</c>.</summary>
    public double AttnPdrop { get; init; } = 0.1;
    /// <summary><c>layer_norm_epsilon</c>.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-5;
    /// <summary><c>initializer_range</c>: the std of the N(0, σ) initialization (informational here).</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary><c>scale_attn_weights</c>: scores divided by √head_dim; a <see cref="Gpt"/> always does.</summary>
    public bool ScaleAttnWeights { get; init; } = true;
    /// <summary><c>scale_attn_by_inverse_layer_idx</c>: a further 1/(layer+1); a <see cref="Gpt"/> never does.</summary>
    public bool ScaleAttnByInverseLayerIdx { get; init; }
    /// <summary><c>reorder_and_upcast_attn</c>: float32 scores under autocast; the same math, accepted either way.</summary>
    public bool ReorderAndUpcastAttn { get; init; }
    /// <summary><c>add_cross_attention</c>: an encoder-decoder block, which a <see cref="Gpt"/> is not.</summary>
    public bool AddCrossAttention { get; init; }
    /// <summary><c>tie_word_embeddings</c>: the output head is the token embedding (<c>transformers</c>' default: true).</summary>
    public bool TieWordEmbeddings { get; init; } = true;
    /// <summary><c>bos_token_id</c>: GPT-2's &lt;|endoftext|&gt; (50256), or null.</summary>
    public int? BosTokenId { get; init; } = 50256;
    /// <summary><c>eos_token_id</c>: GPT-2's &lt;|endoftext|&gt; (50256), or null.</summary>
    public int? EosTokenId { get; init; } = 50256;
    /// <summary><c>torch_dtype</c> (newer releases: <c>dtype</c>): the stored weights' type, informational.</summary>
    public string? TorchDType { get; init; }

    /// <summary>Reads <paramref name="path"/>; a field of the wrong JSON kind or a model this is not is a <see cref="CheckpointException"/> naming the field.</summary>
    public static HfGpt2Config Read(string path)
    {
        if (!File.Exists(path)) throw Error(path, "file not found (a Hugging Face model directory holds config.json and model.safetensors)");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw Error(path, $"not valid JSON ({e.Message})", e); }
        using var _ = doc;
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw Error(path, $"expected a JSON object, got a JSON {root.ValueKind}");
        if (Get(root, "model_type") is { } mt && (mt.ValueKind != JsonValueKind.String || mt.GetString() != "gpt2"))
            throw Error(path, $"model_type is {mt.GetRawText()}: only \"gpt2\" models load into a Gpt");
        var d = new HfGpt2Config();
        return new HfGpt2Config
        {
            VocabSize = Int(path, root, "vocab_size") ?? d.VocabSize,
            NPositions = Int(path, root, "n_positions") ?? d.NPositions,
            NEmbd = Int(path, root, "n_embd") ?? d.NEmbd,
            NLayer = Int(path, root, "n_layer") ?? d.NLayer,
            NHead = Int(path, root, "n_head") ?? d.NHead,
            NInner = Int(path, root, "n_inner"),
            ActivationFunction = Str(path, root, "activation_function") ?? d.ActivationFunction,
            ResidPdrop = Num(path, root, "resid_pdrop") ?? d.ResidPdrop,
            EmbdPdrop = Num(path, root, "embd_pdrop") ?? d.EmbdPdrop,
            AttnPdrop = Num(path, root, "attn_pdrop") ?? d.AttnPdrop,
            LayerNormEpsilon = Num(path, root, "layer_norm_epsilon") ?? d.LayerNormEpsilon,
            InitializerRange = Num(path, root, "initializer_range") ?? d.InitializerRange,
            ScaleAttnWeights = Bool(path, root, "scale_attn_weights") ?? d.ScaleAttnWeights,
            ScaleAttnByInverseLayerIdx = Bool(path, root, "scale_attn_by_inverse_layer_idx") ?? d.ScaleAttnByInverseLayerIdx,
            ReorderAndUpcastAttn = Bool(path, root, "reorder_and_upcast_attn") ?? d.ReorderAndUpcastAttn,
            AddCrossAttention = Bool(path, root, "add_cross_attention") ?? d.AddCrossAttention,
            TieWordEmbeddings = Bool(path, root, "tie_word_embeddings") ?? d.TieWordEmbeddings,
            BosTokenId = Has(root, "bos_token_id") ? Int(path, root, "bos_token_id") : d.BosTokenId,
            EosTokenId = Has(root, "eos_token_id") ? Int(path, root, "eos_token_id") : d.EosTokenId,
            TorchDType = Str(path, root, "torch_dtype") ?? Str(path, root, "dtype"),
        };
    }

    /// <summary>
    /// The <see cref="Gpt"/> this config describes, with <paramref name="dropout"/> (default: <c>resid_pdrop</c>; a
    /// <see cref="Gpt"/> has one probability where GPT-2 has three, which <c>transformers</c>' own configs keep
    /// equal). A setting a <see cref="Gpt"/> cannot honour is a <see cref="CheckpointException"/> naming the field
    /// and its value, so that nothing loads into a model that would compute something else.
    /// </summary>
    public GptConfig ToGptConfig(string path, double? dropout = null)
    {
        var activation = ActivationFunction switch
        {
            // transformers' gelu_new, gelu_pytorch_tanh and gelu_fast are the same tanh formula.
            "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => GptActivation.GeluTanh,
            "gelu" => GptActivation.Gelu,
            _ => throw Error(path, $"activation_function \"{ActivationFunction}\" is not supported (a Gpt computes \"gelu_new\", \"gelu_pytorch_tanh\", \"gelu_fast\" or \"gelu\")"),
        };
        if (NInner is int inner && inner != 4 * NEmbd)
            throw Error(path, $"n_inner {inner} is not supported (a Gpt's feed-forward is 4·n_embd = {4 * NEmbd} wide; use null)");
        if (!ScaleAttnWeights) throw Error(path, "scale_attn_weights false is not supported (a Gpt divides attention scores by √head_dim)");
        if (ScaleAttnByInverseLayerIdx) throw Error(path, "scale_attn_by_inverse_layer_idx true is not supported");
        if (AddCrossAttention) throw Error(path, "add_cross_attention true is not supported (a Gpt has no cross-attention)");
        try
        {
            return new GptConfig(VocabSize, NPositions, NLayer, NHead, NEmbd, dropout ?? ResidPdrop, TieWordEmbeddings)
            {
                Activation = activation,
                LayerNormEpsilon = LayerNormEpsilon,
            }.Validate();
        }
        catch (ArgumentException e) { throw Error(path, $"invalid model config ({e.Message})", e); }
    }

    /// <summary>The config of <paramref name="config"/> stored as <paramref name="dtype"/>; bos/eos are GPT-2's 50256 when the vocabulary has that id, else null.</summary>
    public static HfGpt2Config From(GptConfig config, DType dtype)
    {
        int? eot = config.VocabSize > 50256 ? 50256 : null;
        return new HfGpt2Config
        {
            VocabSize = config.VocabSize,
            NPositions = config.ContextLength,
            NEmbd = config.DModel,
            NLayer = config.Layers,
            NHead = config.Heads,
            ActivationFunction = config.Activation == GptActivation.GeluTanh ? "gelu_new" : "gelu",
            ResidPdrop = config.Dropout,
            EmbdPdrop = config.Dropout,
            AttnPdrop = config.Dropout,
            LayerNormEpsilon = config.LayerNormEpsilon,
            TieWordEmbeddings = config.TiedHead,
            BosTokenId = eot,
            EosTokenId = eot,
            TorchDType = dtype switch
            {
                DType.Float32 => "float32",
                DType.Float64 => "float64",
                DType.Float16 => "float16",
                DType.BFloat16 => "bfloat16",
                _ => throw new DTypeException("HfGpt2Config", $"a GPT-2's weights are floating point, got {dtype.Name()}"),
            },
        };
    }

    /// <summary>
    /// Writes config.json as <c>save_pretrained</c> does for a <c>GPT2LMHeadModel</c>: every GPT-2 field (and
    /// <c>tie_word_embeddings</c>), keys sorted, two-space indent, numbers as Python prints them, a final newline.
    /// </summary>
    public void Write(string path) => WriteJson(path, w =>
    {
        var fields = new SortedDictionary<string, Action>(StringComparer.Ordinal)
        {
            ["activation_function"] = () => w.WriteStringValue(ActivationFunction),
            ["architectures"] = () => { w.WriteStartArray(); w.WriteStringValue("GPT2LMHeadModel"); w.WriteEndArray(); },
            ["attn_pdrop"] = () => Python(w, AttnPdrop),
            ["bos_token_id"] = () => Nullable(w, BosTokenId),
            ["embd_pdrop"] = () => Python(w, EmbdPdrop),
            ["eos_token_id"] = () => Nullable(w, EosTokenId),
            ["initializer_range"] = () => Python(w, InitializerRange),
            ["layer_norm_epsilon"] = () => Python(w, LayerNormEpsilon),
            ["model_type"] = () => w.WriteStringValue("gpt2"),
            ["n_embd"] = () => w.WriteNumberValue(NEmbd),
            ["n_head"] = () => w.WriteNumberValue(NHead),
            ["n_inner"] = () => Nullable(w, NInner),
            ["n_layer"] = () => w.WriteNumberValue(NLayer),
            ["n_positions"] = () => w.WriteNumberValue(NPositions),
            ["reorder_and_upcast_attn"] = () => w.WriteBooleanValue(ReorderAndUpcastAttn),
            ["resid_pdrop"] = () => Python(w, ResidPdrop),
            ["scale_attn_by_inverse_layer_idx"] = () => w.WriteBooleanValue(ScaleAttnByInverseLayerIdx),
            ["scale_attn_weights"] = () => w.WriteBooleanValue(ScaleAttnWeights),
            ["summary_activation"] = () => w.WriteNullValue(),
            ["summary_first_dropout"] = () => Python(w, 0.1),
            ["summary_proj_to_labels"] = () => w.WriteBooleanValue(true),
            ["summary_type"] = () => w.WriteStringValue("cls_index"),
            ["summary_use_proj"] = () => w.WriteBooleanValue(true),
            ["tie_word_embeddings"] = () => w.WriteBooleanValue(TieWordEmbeddings),
            ["transformers_version"] = () => w.WriteStringValue(TransformersVersion),
            ["use_cache"] = () => w.WriteBooleanValue(true),
            ["vocab_size"] = () => w.WriteNumberValue(VocabSize),
        };
        if (TorchDType is not null) fields["torch_dtype"] = () => w.WriteStringValue(TorchDType);
        foreach (var (name, value) in fields) { w.WritePropertyName(name); value(); }
    });

    /// <summary>Writes generation_config.json as <c>save_pretrained</c> does for a model that generates.</summary>
    public void WriteGenerationConfig(string path) => WriteJson(path, w =>
    {
        w.WriteBoolean("_from_model_config", true);
        if (BosTokenId is int bos) w.WriteNumber("bos_token_id", bos);
        if (EosTokenId is int eos) w.WriteNumber("eos_token_id", eos);
        w.WriteString("transformers_version", TransformersVersion);
    });

    // A temporary file renamed over the target: a reader never sees half a config.
    static void WriteJson(string path, Action<Utf8JsonWriter> body)
    {
        var tmp = path + ".tmp-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            using (var f = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write))
            {
                using (var w = new Utf8JsonWriter(f, new JsonWriterOptions { Indented = true }))
                {
                    w.WriteStartObject();
                    body(w);
                    w.WriteEndObject();
                }
                f.Write("\n"u8);
                f.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }

    static void Nullable(Utf8JsonWriter w, int? v)
    {
        if (v is int i) w.WriteNumberValue(i);
        else w.WriteNullValue();
    }

    // Python's repr of a float (json.dumps writes floats so): shortest round-trip digits, "1e-05" rather than .NET's
    // "1E-05", and "0.0" for an integral value, so the file reads as transformers' own.
    static void Python(Utf8JsonWriter w, double v)
    {
        if (!double.IsFinite(v)) throw new ArgumentException($"config values must be finite, got {v}");
        var s = v.ToString("R", CultureInfo.InvariantCulture);
        int e = s.IndexOf('E', StringComparison.Ordinal);
        if (e >= 0)
        {
            var mantissa = s[..e];
            var exp = int.Parse(s[(e + 1)..], CultureInfo.InvariantCulture);
            // Python switches to exponent form below 1e-4 and from 1e16; .NET's "R" switches at other points.
            s = exp is >= -4 and < 16
                ? decimal.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture)
                : mantissa + "e" + (exp < 0 ? "-" : "+") + Math.Abs(exp).ToString("00", CultureInfo.InvariantCulture);
        }
        if (!s.Contains('.', StringComparison.Ordinal) && !s.Contains('e', StringComparison.Ordinal)) s += ".0";
        w.WriteRawValue(Encoding.UTF8.GetBytes(s));
    }

    static bool Has(JsonElement root, string name) => root.TryGetProperty(name, out _);

    static JsonElement? Get(JsonElement root, string name) => root.TryGetProperty(name, out var v) ? v : null;

    static int? Int(string path, JsonElement root, string name)
    {
        if (Get(root, name) is not { } v || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)) return i;
        throw Error(path, $"{name} is {Clip(v.GetRawText())}, expected an integer");
    }

    static double? Num(string path, JsonElement root, string name)
    {
        if (Get(root, name) is not { } v || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d)) return d;
        throw Error(path, $"{name} is {Clip(v.GetRawText())}, expected a number");
    }

    static bool? Bool(string path, JsonElement root, string name)
    {
        if (Get(root, name) is not { } v || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind is JsonValueKind.True or JsonValueKind.False) return v.GetBoolean();
        throw Error(path, $"{name} is {Clip(v.GetRawText())}, expected true or false");
    }

    static string? Str(string path, JsonElement root, string name)
    {
        if (Get(root, name) is not { } v || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        throw Error(path, $"{name} is {Clip(v.GetRawText())}, expected a string");
    }

    static string Clip(string s)
    {
        s = s.ReplaceLineEndings(" ");
        return s.Length <= 60 ? s : s[..57] + "...";
    }

    internal static CheckpointException Error(string path, string message, Exception? inner = null) =>
        new("Gpt.FromPretrained", $"{path}: {message}", inner);
}

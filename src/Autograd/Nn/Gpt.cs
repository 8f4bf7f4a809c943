using Engine.Autocast;
using Engine.Graph;

namespace Engine.Autograd.Nn;

/// <summary>
/// Size of a <see cref="Gpt"/>. Checked when made: a value that cannot build a model throws an
/// <see cref="ArgumentException"/> naming the field and the value, instead of a division by zero deep inside the
/// model. A <c>with</c> copy skips the constructor, so <see cref="Gpt"/> checks again through <see cref="Validate"/>.
/// </summary>
/// <param name="VocabSize">Tokens.</param>
/// <param name="ContextLength">Longest sequence (learned positions).</param>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="Heads">Attention heads.</param>
/// <param name="DModel">Width.</param>
/// <param name="Dropout">Dropout probability (embeddings, attention, residuals).</param>
/// <param name="TiedHead">Share the output head's weight with the token embedding.</param>
public sealed record GptConfig(int VocabSize, int ContextLength, int Layers, int Heads, int DModel, double Dropout = 0, bool TiedHead = false)
{
    /// <summary>Tokens: at least 1.</summary>
    public int VocabSize { get; init; } = AtLeastOne(VocabSize, nameof(VocabSize));

    /// <summary>Longest sequence (learned positions): at least 1.</summary>
    public int ContextLength { get; init; } = AtLeastOne(ContextLength, nameof(ContextLength));

    /// <summary>Transformer blocks: at least 1.</summary>
    public int Layers { get; init; } = AtLeastOne(Layers, nameof(Layers));

    /// <summary>Attention heads: at least 1, and a divisor of <see cref="DModel"/>.</summary>
    public int Heads { get; init; } = AtLeastOne(Heads, nameof(Heads));

    /// <summary>Width: at least 1, a multiple of <see cref="Heads"/> (each head gets DModel / Heads dims).</summary>
    public int DModel { get; init; } = Width(DModel, Heads);

    /// <summary>Dropout probability in [0, 1].</summary>
    public double Dropout { get; init; } = Probability(Dropout);

    /// <summary>The feed-forward's GELU: exact (the default, minGPT/nanoGPT) or tanh-approximated (GPT-2's <c>gelu_new</c>).</summary>
    public GptActivation Activation { get; init; } = GptActivation.Gelu;

    /// <summary>Added to the variance in every LayerNorm: positive and finite (default 1e-5, PyTorch's and GPT-2's).</summary>
    public double LayerNormEpsilon { get; init; } = 1e-5;

    /// <summary>Checks every field again (for a copy made with <c>with</c>) and returns this config.</summary>
    public GptConfig Validate()
    {
        AtLeastOne(VocabSize, nameof(VocabSize));
        AtLeastOne(ContextLength, nameof(ContextLength));
        AtLeastOne(Layers, nameof(Layers));
        AtLeastOne(Heads, nameof(Heads));
        Width(DModel, Heads);
        Probability(Dropout);
        if (!Enum.IsDefined(Activation)) throw new ArgumentException($"GptConfig.Activation {(int)Activation} is not a GptActivation", nameof(Activation));
        if (!(LayerNormEpsilon > 0 && double.IsFinite(LayerNormEpsilon)))
            throw new ArgumentException($"GptConfig.LayerNormEpsilon must be positive and finite, got {LayerNormEpsilon}", nameof(LayerNormEpsilon));
        return this;
    }

    static int AtLeastOne(int value, string name) =>
        value >= 1 ? value : throw new ArgumentException($"GptConfig.{name} must be at least 1, got {value}", name);

    static int Width(int dModel, int heads)
    {
        AtLeastOne(dModel, nameof(DModel));
        if (heads >= 1 && dModel % heads != 0)
            throw new ArgumentException($"GptConfig.DModel {dModel} must be a multiple of Heads {heads} (each head takes DModel / Heads dims)", nameof(DModel));
        return dModel;
    }

    static double Probability(double p) =>
        p is >= 0 and <= 1 ? p : throw new ArgumentException($"GptConfig.Dropout must be a probability in [0, 1], got {p}", nameof(Dropout));
}

/// <summary>The activation inside a <see cref="Gpt"/>'s feed-forward.</summary>
public enum GptActivation
{
    /// <summary>Exact GELU, x·Φ(x) (PyTorch's <c>approximate="none"</c>; Hugging Face's <c>gelu</c>).</summary>
    Gelu,
    /// <summary>Tanh-approximated GELU (PyTorch's <c>approximate="tanh"</c>; Hugging Face's <c>gelu_new</c>, GPT-2's own).</summary>
    GeluTanh,
}

/// <summary>
/// A GPT (minGPT/nanoGPT shape): token + learned position embeddings, pre-LayerNorm blocks, a final LayerNorm and a
/// head without bias. Parameter names: <c>wte</c>, <c>wpe</c>, <c>blocks.{i}.{ln1,attn.qkv,attn.proj,ln2,mlp.fc,mlp.proj}</c>,
/// <c>ln_f</c>, <c>head</c>. Initialization as GPT-2: N(0, 0.02) weights, zero biases, residual projections scaled by
/// 1/√(2·layers).
/// </summary>
public sealed class Gpt : Module
{
    /// <summary>Creates the model.</summary>
    public Gpt(GptConfig config, Device? device = null, DType dtype = DType.Float32, Generator? generator = null)
    {
        Config = config.Validate();
        Wte = RegisterModule("wte", new Embedding(config.VocabSize, config.DModel, device, dtype, generator));
        Wpe = RegisterModule("wpe", new Embedding(config.ContextLength, config.DModel, device, dtype, generator));
        Drop = RegisterModule("drop", new Dropout(config.Dropout, generator));
        var blocks = RegisterModule("blocks", new Sequential());
        for (int i = 0; i < config.Layers; i++)
            blocks.Append(new TransformerBlock(config.DModel, config.Heads, config.ContextLength, config.Dropout, device, dtype, generator,
                config.LayerNormEpsilon, config.Activation == GptActivation.GeluTanh));
        Blocks = blocks;
        LnF = RegisterModule("ln_f", new LayerNorm(config.DModel, config.LayerNormEpsilon, device, dtype));
        // A tied head is the embedding's own tensor (one parameter, one gradient), as PyTorch's weight tying.
        _positions = RegisterBuffer("positions", Tensor.Arange(config.ContextLength, device), persistent: false);
        Head = RegisterModule("head", config.TiedHead ? new Linear(Wte.Weight) : new Linear(config.DModel, config.VocabSize, false, device, dtype, generator));

        double residStd = 0.02 / Math.Sqrt(2.0 * config.Layers);
        foreach (var (name, p) in NamedParameters())
        {
            if (name.EndsWith(".bias", StringComparison.Ordinal)) Init.Zeros(p);
            else if (name.StartsWith("ln", StringComparison.Ordinal) || name.Contains(".ln", StringComparison.Ordinal)) continue;
            else if (name.EndsWith("attn.proj.weight", StringComparison.Ordinal) || name.EndsWith("mlp.proj.weight", StringComparison.Ordinal)) Init.Normal(p, 0, residStd, generator);
            else Init.Normal(p, 0, 0.02, generator);
        }
    }

    readonly Tensor _positions;

    /// <summary>The configuration.</summary>
    public GptConfig Config { get; }
    /// <summary>Token embedding.</summary>
    public Embedding Wte { get; }
    /// <summary>Position embedding.</summary>
    public Embedding Wpe { get; }
    /// <summary>Embedding dropout.</summary>
    public Dropout Drop { get; }
    /// <summary>The blocks.</summary>
    public Sequential Blocks { get; }
    /// <summary>Final norm.</summary>
    public LayerNorm LnF { get; }
    /// <summary>Output head [vocab, dModel], no bias.</summary>
    public Linear Head { get; }

    /// <summary>
    /// Loads a Hugging Face <c>transformers</c> GPT-2 directory (config.json + model.safetensors), as
    /// <c>GPT2LMHeadModel.from_pretrained(dir)</c>: see <see cref="Gpt2Format.Load"/>. The model is in eval mode.
    /// </summary>
    public static Gpt FromPretrained(string dir, Device? device = null, DType dtype = DType.Float32, double? dropout = null) =>
        Gpt2Format.Load(dir, device, dtype, dropout);

    /// <summary>
    /// Writes this model as a Hugging Face GPT-2 directory that <c>GPT2LMHeadModel.from_pretrained(dir)</c> loads:
    /// see <see cref="Gpt2Format.Save"/>. Tokenizer files are not written here.
    /// </summary>
    public void SavePretrained(string dir) => Gpt2Format.Save(this, dir);

    /// <summary>Logits [batch, time, vocab] for Int64 token ids [batch, time].</summary>
    public override Tensor Forward(Tensor input)
    {
        if (input.Rank != 2) throw new ShapeException("Gpt", $"expected token ids [batch, time], got {Shape.Format(input.Layout.Shape)}");
        int t = input.Size(1);
        if (t > Config.ContextLength) throw new ShapeException("Gpt", $"sequence length {t} exceeds the context length {Config.ContextLength}");
        using var scope = Tensor.NewScope();
        // Under autocast every Linear's float32 weight and bias is cast to the region's dtype at its first use: filled
        // into the region's cast cache here, they take one multi-tensor launch per 32 instead of one launch each.
        if (AutocastDispatch.RegionDTypeFor(input.Device) is not null) AutocastDispatch.PreCast(typeof(Tensor.LinearBackward), LinearParameters());
        // A slice of the position ids kept on the model's device: no host-to-device upload inside a training step.
        var pos = _positions.Narrow(0, 0, t);
        var x = Wte.Forward(input).Add(Wpe.Forward(pos));
        x = Drop.Forward(x);
        // Each block leaves its last residual add to the next block's ln1 and the last one to ln_f, which fuse it.
        Tensor? pending = null;
        if (Blocks.Layers.All(b => b is TransformerBlock))
            foreach (TransformerBlock b in Blocks.Layers)
            {
                var (stream, update) = b.Forward(x, pending);
                if (pending is not null) { x.Dispose(); pending.Dispose(); } // intermediates are ours to free
                (x, pending) = (stream, update);
            }
        else x = Blocks.Forward(x);
        var lowp = TransformerBlock.LinearInputDType(x);
        x = pending is null ? LnF.Forward(x, lowp) : LnF.Forward(x, pending, lowp).Normalized;
        return Head.Forward(x).MoveToOuterScope();
    }

    // The weights and biases that reach a Linear (the matrix products autocast runs in the lower precision); not the
    // embeddings' (a Gather) nor the LayerNorms', which autocast does not cast through its cache.
    List<Tensor> LinearParameters()
    {
        var ps = new List<Tensor>();
        foreach (var (_, m) in NamedModules())
        {
            if (m is not Linear l) continue;
            ps.Add(l.Weight);
            if (l.Bias is { } b) ps.Add(b);
        }
        return ps;
    }

    /// <summary>
    /// Continues each row of <paramref name="prompt"/> (Int64 [batch, time]) by <paramref name="maxNewTokens"/>
    /// sampled tokens: logits of the last position divided by <paramref name="temperature"/>, restricted to the
    /// <paramref name="topK"/> largest (0 = all), sampled from the softmax with a generator seeded by
    /// <paramref name="seed"/> (temperature 0 picks the argmax). Runs in eval mode without grad; restores the mode.
    /// </summary>
    public Tensor Generate(Tensor prompt, int maxNewTokens, double temperature = 1.0, int topK = 0, ulong seed = 0)
    {
        bool wasTraining = Training;
        Eval();
        var gen = new Generator(seed);
        var rows = prompt.Rank == 1 ? 1 : prompt.Size(0);
        var seqs = Enumerable.Range(0, rows).Select(_ => new List<long>()).ToArray();
        var flat = prompt.ToArray<long>();
        int t0 = flat.Length / rows;
        for (int r = 0; r < rows; r++) seqs[r].AddRange(flat.Skip(r * t0).Take(t0));
        try
        {
            using var _ = GradMode.NoGrad();
            for (int step = 0; step < maxNewTokens; step++)
            {
                int len = Math.Min(seqs[0].Count, Config.ContextLength);
                var ctx = seqs.SelectMany(s => s.Skip(s.Count - len)).ToArray();
                using var scope = Tensor.NewScope();
                var logits = Forward(Tensor.FromArray(ctx, [rows, len], prompt.Device));
                var last = logits.Select(1, len - 1).ToArray<double>();
                using var u = Tensor.Rand([rows], DType.Float64, null, gen);
                var draws = u.ToArray<double>();
                for (int r = 0; r < rows; r++)
                    seqs[r].Add(Sample(last.AsSpan(r * Config.VocabSize, Config.VocabSize), temperature, topK, draws[r]));
            }
        }
        finally { Train(wasTraining); }
        var all = seqs.SelectMany(s => s).ToArray();
        return Tensor.FromArray(all, prompt.Rank == 1 ? [all.Length] : [rows, seqs[0].Count]);
    }

    static long Sample(ReadOnlySpan<double> logits, double temperature, int topK, double u)
    {
        int v = logits.Length;
        if (temperature <= 0)
        {
            int best = 0;
            for (int i = 1; i < v; i++) if (logits[i] > logits[best]) best = i;
            return best;
        }
        var scaled = new double[v];
        for (int i = 0; i < v; i++) scaled[i] = logits[i] / temperature;
        if (topK > 0 && topK < v)
        {
            var kth = scaled.OrderByDescending(x => x).ElementAt(topK - 1);
            for (int i = 0; i < v; i++) if (scaled[i] < kth) scaled[i] = double.NegativeInfinity;
        }
        double max = scaled.Max(), sum = 0;
        for (int i = 0; i < v; i++) sum += scaled[i] = Math.Exp(scaled[i] - max);
        double acc = 0, target = u * sum;
        for (int i = 0; i < v; i++) { acc += scaled[i]; if (target < acc) return i; }
        return v - 1;
    }
}

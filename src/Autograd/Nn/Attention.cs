using Engine.Autocast;

namespace Engine.Autograd.Nn;

/// <summary>
/// Causal multi-head self-attention. Input and output [batch, time, dModel]; the q, k, v projections are one Linear
/// (<c>qkv</c>) and the output projection is <c>proj</c>. By default the attention itself is the fused
/// <see cref="Tensor.ScaledDotProductAttention"/> (causal); with <see cref="FusedAttention"/> false it is written with
/// explicit matmuls and a masked softmax, the reference the fused op is tested against.
/// </summary>
public sealed class CausalSelfAttention : Module
{
    readonly Tensor _future;
    readonly Generator? _generator; // the attention dropout's, for the fused op's dropout

    /// <summary>Creates the layer for sequences up to <paramref name="contextLength"/>.</summary>
    public CausalSelfAttention(int dModel, int heads, int contextLength, double dropout = 0, Device? device = null, DType dtype = DType.Float32, Generator? generator = null)
    {
        if (dModel % heads != 0) throw new EngineException("CausalSelfAttention", $"dModel {dModel} is not divisible by heads {heads}");
        DModel = dModel; Heads = heads; ContextLength = contextLength;
        _generator = generator;
        Qkv = RegisterModule("qkv", new Linear(dModel, 3 * dModel, true, device, dtype, generator));
        Proj = RegisterModule("proj", new Linear(dModel, dModel, true, device, dtype, generator));
        AttnDropout = RegisterModule("attn_dropout", new Dropout(dropout, generator));
        ResidDropout = RegisterModule("resid_dropout", new Dropout(dropout, generator));
        // True above the diagonal: the future positions each query must not see. Not persistent: it is derived
        // from the config, so checkpoints stay loadable by a PyTorch model with the same parameter names.
        using var ones = Tensor.Ones([contextLength, contextLength], DType.Float32, device);
        using var lower = ones.Tril();
        _future = RegisterBuffer("mask", lower.Eq(0), persistent: false);
    }

    /// <summary>Model width.</summary>
    public int DModel { get; }
    /// <summary>Number of heads.</summary>
    public int Heads { get; }
    /// <summary>Longest sequence.</summary>
    public int ContextLength { get; }
    /// <summary>The fused q, k, v projection [3·dModel, dModel].</summary>
    public Linear Qkv { get; }
    /// <summary>The output projection.</summary>
    public Linear Proj { get; }
    /// <summary>Dropout on the attention weights.</summary>
    public Dropout AttnDropout { get; }
    /// <summary>Dropout on the output.</summary>
    public Dropout ResidDropout { get; }
    /// <summary>
    /// True (the default): one fused scaled-dot-product attention op (dropout on the weights, when training with
    /// p &gt; 0, drawn inside it from the attention dropout's generator); false: the explicit matmul/softmax path.
    /// The environment variable <c>ENGINE_FUSED_ATTENTION=0</c> makes false the default of new layers (for
    /// benchmarking the two paths, e.g. <c>engine bench --only gpt_train_step</c>).
    /// </summary>
    public bool FusedAttention { get; set; } = DefaultFused;

    static readonly bool DefaultFused = Environment.GetEnvironmentVariable("ENGINE_FUSED_ATTENTION") != "0";

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input)
    {
        if (input.Rank != 3 || input.Size(2) != DModel)
            throw new ShapeException("CausalSelfAttention", $"expected [batch, time, {DModel}], got {Shape.Format(input.Layout.Shape)}");
        int b = input.Size(0), t = input.Size(1), h = Heads, d = DModel / Heads;
        if (t > ContextLength) throw new ShapeException("CausalSelfAttention", $"sequence length {t} exceeds the context length {ContextLength}");
        using var scope = Tensor.NewScope();
        var qkv = Qkv.Forward(input);                                   // [b, t, 3c]
        var parts = qkv.Split(DModel, 2);
        var q = parts[0].View(b, t, h, d).Transpose(1, 2);               // [b, h, t, d]
        var k = parts[1].View(b, t, h, d).Transpose(1, 2);
        var v = parts[2].View(b, t, h, d).Transpose(1, 2);
        Tensor heads;                                                    // [b, h, t, d]
        if (FusedAttention)
        {
            double p = AttnDropout.Training ? AttnDropout.P : 0;
            heads = Tensor.ScaledDotProductAttention(q, k, v, dropoutP: p, isCausal: true, generator: _generator);
        }
        else
        {
            var att = q.MatMul(k.Transpose(-2, -1)).Mul(1.0 / Math.Sqrt(d)); // [b, h, t, t]
            var mask = _future.Narrow(0, 0, t).Narrow(1, 0, t);
            att = att.MaskedFill(mask, double.NegativeInfinity).Softmax(-1);
            att = AttnDropout.Forward(att);
            heads = att.MatMul(v);
        }
        // [b, t, c]: a view for the fused op, which reads q, k, v in place and writes its output in [b, t, h, d] memory
        var y = heads.Transpose(1, 2).Reshape(b, t, DModel);
        var result = ResidDropout.Forward(Proj.Forward(y));
        return result.MoveToOuterScope();
    }
}

/// <summary>Linear → GELU (exact, or tanh-approximated as GPT-2's) → Linear → dropout: the transformer's feed-forward.</summary>
public sealed class FeedForward : Module
{
    /// <summary>Creates the block.</summary>
    public FeedForward(int dModel, int hidden, double dropout = 0, Device? device = null, DType dtype = DType.Float32, Generator? generator = null, bool approximateTanh = false)
    {
        ApproximateTanh = approximateTanh;
        Fc = RegisterModule("fc", new Linear(dModel, hidden, true, device, dtype, generator));
        Proj = RegisterModule("proj", new Linear(hidden, dModel, true, device, dtype, generator));
        Drop = RegisterModule("dropout", new Dropout(dropout, generator));
    }

    /// <summary>Expansion.</summary>
    public Linear Fc { get; }
    /// <summary>Contraction (a residual projection).</summary>
    public Linear Proj { get; }
    /// <summary>Output dropout.</summary>
    public Dropout Drop { get; }
    /// <summary>True for the tanh-approximated GELU.</summary>
    public bool ApproximateTanh { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input)
    {
        // The GELU runs in fc's fused op (the GEMM's store epilogue on the CPU): no separate pass over [.., hidden].
        using var g = Fc.Forward(input, ApproximateTanh ? Activation.GeluTanh : Activation.Gelu);
        using var p = Proj.Forward(g);
        return Drop.Forward(p);
    }
}

/// <summary>A pre-LayerNorm transformer block: x + attn(ln1(x)), then + mlp(ln2(x)).</summary>
public sealed class TransformerBlock : Module
{
    /// <summary>
    /// The dtype a Linear under the active autocast region would cast a norm's output of <paramref name="x"/>'s
    /// dtype to, when the norm can write it directly (float16/bfloat16 from a float32 stream), else null: the norm's
    /// <c>outputDType</c>, which gives the bits of the norm followed by the cast without the cast's passes (and
    /// without the backward's cast of the gradient back to float32).
    /// </summary>
    internal static DType? LinearInputDType(Tensor x) =>
        AutocastDispatch.CastTargetFor(typeof(Tensor.LinearBackward), x) is { } d && Tensor.IsNormOutputDType(x.DType, d) ? d : null;

    /// <summary>Creates the block.</summary>
    public TransformerBlock(int dModel, int heads, int contextLength, double dropout = 0, Device? device = null, DType dtype = DType.Float32, Generator? generator = null,
        double layerNormEps = 1e-5, bool approximateGelu = false)
    {
        Ln1 = RegisterModule("ln1", new LayerNorm(dModel, layerNormEps, device, dtype));
        Attn = RegisterModule("attn", new CausalSelfAttention(dModel, heads, contextLength, dropout, device, dtype, generator));
        Ln2 = RegisterModule("ln2", new LayerNorm(dModel, layerNormEps, device, dtype));
        Mlp = RegisterModule("mlp", new FeedForward(dModel, 4 * dModel, dropout, device, dtype, generator, approximateGelu));
    }

    /// <summary>Norm before attention.</summary>
    public LayerNorm Ln1 { get; }
    /// <summary>Attention.</summary>
    public CausalSelfAttention Attn { get; }
    /// <summary>Norm before the feed-forward.</summary>
    public LayerNorm Ln2 { get; }
    /// <summary>Feed-forward.</summary>
    public FeedForward Mlp { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input)
    {
        var (x, m) = Forward(input, null);
        using (x) using (m) return x.Add(m);
    }

    /// <summary>
    /// The block on a residual stream given as <paramref name="stream"/> + <paramref name="pending"/> (the previous
    /// block's last residual add, not yet done; null: none): that add is fused into ln1, and the block's own first add
    /// into ln2 (<see cref="LayerNorm.Forward(Tensor, Tensor, DType?)"/>). Returns the stream after the attention and this
    /// block's last addend, the feed-forward's output, for the next block's ln1 or the final norm to add; their sum is
    /// <see cref="Forward(Tensor)"/>'s result, bit for bit.
    /// </summary>
    public (Tensor Stream, Tensor Pending) Forward(Tensor stream, Tensor? pending)
    {
        // Both norms feed a Linear; under autocast they write its 16-bit input themselves (no cast either way).
        var lowp = LinearInputDType(stream);
        Tensor? x0 = null, n1;
        if (pending is null) n1 = Ln1.Forward(stream, lowp);
        else (x0, n1) = Ln1.Forward(stream, pending, lowp);
        try
        {
            using var a = Attn.Forward(n1);
            var (x, n2) = Ln2.Forward(x0 ?? stream, a, lowp);
            using (n2)
            {
                try { return (x, Mlp.Forward(n2)); }
                catch { x.Dispose(); throw; }
            }
        }
        finally { x0?.Dispose(); n1.Dispose(); }
    }
}

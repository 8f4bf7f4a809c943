namespace Engine.Autograd.Nn;

/// <summary>
/// y = x·Wᵀ + b, W stored [out, in] as PyTorch's; Kaiming-uniform weight and U(±1/√in) bias by default. One
/// <see cref="Tensor.Linear"/> op (F.linear): under autocast its output stays in the region's dtype, bias included.
/// </summary>
public sealed class Linear : Module
{
    /// <summary>Creates the layer with PyTorch's default initialization.</summary>
    public Linear(int inFeatures, int outFeatures, bool bias = true, Device? device = null, DType dtype = DType.Float32, Generator? generator = null)
    {
        InFeatures = inFeatures; OutFeatures = outFeatures;
        Weight = RegisterParameter("weight", Init.KaimingUniform(Tensor.Empty([outFeatures, inFeatures], dtype, device), generator: generator));
        if (bias)
        {
            double bound = inFeatures > 0 ? 1 / Math.Sqrt(inFeatures) : 0;
            Bias = RegisterParameter("bias", Init.Uniform(Tensor.Empty([outFeatures], dtype, device), -bound, bound, generator));
        }
    }

    /// <summary>A layer over existing tensors (weight [out, in], optional bias [out]): how a head is tied to an embedding.</summary>
    public Linear(Tensor weight, Tensor? bias = null)
    {
        if (weight.Rank != 2) throw new ShapeException("Linear", $"weight must be [out, in], got {Shape.Format(weight.Layout.Shape)}");
        OutFeatures = weight.Size(0); InFeatures = weight.Size(1);
        Weight = RegisterParameter("weight", weight);
        if (bias is not null) Bias = RegisterParameter("bias", bias);
    }

    /// <summary>Input features.</summary>
    public int InFeatures { get; }
    /// <summary>Output features.</summary>
    public int OutFeatures { get; }
    /// <summary>[out, in].</summary>
    public Tensor Weight { get; }
    /// <summary>[out], or null.</summary>
    public Tensor? Bias { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input) => Tensor.Linear(input, Weight, Bias);

    /// <summary>
    /// act(input·Wᵀ + b) as one fused op (<see cref="Tensor.Linear"/>: the CPU applies bias and activation in its
    /// GEMM's store epilogue), for a model that applies <paramref name="activation"/> right after this layer.
    /// </summary>
    public Tensor Forward(Tensor input, Activation activation) => Tensor.Linear(input, Weight, Bias, activation);
}

/// <summary>
/// A lookup table of <c>num</c> vectors of size <c>dim</c>, initialized N(0, 1) as PyTorch's; with
/// <c>paddingIdx</c> that row starts at zero and gets no gradient (negative counts from the end).
/// </summary>
public sealed class Embedding : Module
{
    /// <summary>Creates the table.</summary>
    public Embedding(int numEmbeddings, int embeddingDim, Device? device = null, DType dtype = DType.Float32, Generator? generator = null, int? paddingIdx = null)
    {
        if (paddingIdx is int p)
        {
            if (p < -numEmbeddings || p >= numEmbeddings)
                throw new ShapeException("Embedding", $"paddingIdx {p} must be within the {numEmbeddings} embeddings");
            PaddingIdx = p < 0 ? p + numEmbeddings : p;
        }
        var w = Init.Normal(Tensor.Empty([numEmbeddings, embeddingDim], dtype, device), 0, 1, generator);
        if (PaddingIdx is int row) using (var r = w.Select(0, row)) r.ZeroInPlace();
        Weight = RegisterParameter("weight", w);
    }

    /// <summary>[num, dim].</summary>
    public Tensor Weight { get; }

    /// <summary>The row that gets no gradient (normalized), or null.</summary>
    public int? PaddingIdx { get; }

    /// <summary>Looks up integer indices of any shape: result indices.shape + [dim].</summary>
    public override Tensor Forward(Tensor input) => Tensor.Embedding(input, Weight, PaddingIdx);
}

/// <summary>Layer normalization over the trailing <c>normalizedShape</c>, with affine weight (ones) and bias (zeros).</summary>
public sealed class LayerNorm : Module
{
    readonly int[] _shape;

    /// <summary>Creates the layer.</summary>
    public LayerNorm(int[] normalizedShape, double eps = 1e-5, bool elementwiseAffine = true, bool bias = true, Device? device = null, DType dtype = DType.Float32)
    {
        _shape = (int[])normalizedShape.Clone();
        Eps = eps;
        if (elementwiseAffine)
        {
            Weight = RegisterParameter("weight", Tensor.Ones(_shape, dtype, device));
            if (bias) Bias = RegisterParameter("bias", Tensor.Zeros(_shape, dtype, device));
        }
    }

    /// <summary>Over the last dim of size <paramref name="dim"/>.</summary>
    public LayerNorm(int dim, double eps = 1e-5, Device? device = null, DType dtype = DType.Float32) : this([dim], eps, true, true, device, dtype) { }

    /// <summary>Added to the variance.</summary>
    public double Eps { get; }
    /// <summary>Scale, or null.</summary>
    public Tensor? Weight { get; }
    /// <summary>Shift, or null.</summary>
    public Tensor? Bias { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input) => input.LayerNorm(_shape, Weight, Bias, Eps);

    /// <summary>
    /// <see cref="Forward(Tensor)"/> with the output written in <paramref name="outputDType"/> (null: the input's), as
    /// <see cref="Tensor.LayerNorm"/>'s argument of that name.
    /// </summary>
    public Tensor Forward(Tensor input, DType? outputDType) => input.LayerNorm(_shape, Weight, Bias, Eps, outputDType);

    /// <summary>
    /// The residual add before this norm fused with it (<see cref="Tensor.AddLayerNorm"/>): the stream
    /// input + residual and its normalization, from one kernel; the normalization in <paramref name="outputDType"/>
    /// when given.
    /// </summary>
    public (Tensor Sum, Tensor Normalized) Forward(Tensor input, Tensor residual, DType? outputDType = null) =>
        input.AddLayerNorm(residual, _shape, Weight, Bias, Eps, outputDType);
}

/// <summary>RMS normalization over the trailing <c>normalizedShape</c> with a weight (ones).</summary>
public sealed class RmsNorm : Module
{
    readonly int[] _shape;

    /// <summary>Creates the layer; eps null uses the dtype's machine epsilon, as PyTorch's RMSNorm.</summary>
    public RmsNorm(int[] normalizedShape, double? eps = null, bool elementwiseAffine = true, Device? device = null, DType dtype = DType.Float32)
    {
        _shape = (int[])normalizedShape.Clone();
        Eps = eps;
        if (elementwiseAffine) Weight = RegisterParameter("weight", Tensor.Ones(_shape, dtype, device));
    }

    /// <summary>Added to the mean square (null: machine epsilon).</summary>
    public double? Eps { get; }
    /// <summary>Scale, or null.</summary>
    public Tensor? Weight { get; }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input) => input.RmsNorm(_shape, Weight, Eps);
}

/// <summary>Zeroes elements with probability p during training and scales the rest by 1/(1−p); identity in eval mode.</summary>
public sealed class Dropout(double p = 0.5, Generator? generator = null) : Module
{
    /// <summary>The drop probability.</summary>
    public double P { get; } = p;

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input) => input.Dropout(P, Training, generator);
}

/// <summary>max(x, 0).</summary>
public sealed class ReLU : Module
{
    /// <inheritdoc/>
    public override Tensor Forward(Tensor input) => input.Relu();
}

/// <summary>GELU, exact by default (<c>approximate="none"</c>) or the tanh form.</summary>
public sealed class GELU(bool approximateTanh = false) : Module
{
    /// <summary>The fused form of this module (<see cref="Activation.Gelu"/> or <see cref="Activation.GeluTanh"/>).</summary>
    public Activation Activation => approximateTanh ? Activation.GeluTanh : Activation.Gelu;

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input) => input.Gelu(approximateTanh);
}

/// <summary>x·σ(x).</summary>
public sealed class SiLU : Module
{
    /// <inheritdoc/>
    public override Tensor Forward(Tensor input) => input.Silu();
}

/// <summary>tanh x.</summary>
public sealed class Tanh : Module
{
    /// <inheritdoc/>
    public override Tensor Forward(Tensor input) => input.Tanh();
}

/// <summary>Runs its children in order; they are named 0, 1, 2... as PyTorch's Sequential.</summary>
public sealed class Sequential : Module
{
    readonly List<Module> _layers = [];

    /// <summary>Creates the chain.</summary>
    public Sequential(params Module[] layers)
    {
        foreach (var l in layers) Append(l);
    }

    /// <summary>Adds a layer at the end.</summary>
    public Sequential Append(Module layer)
    {
        RegisterModule(_layers.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), layer);
        _layers.Add(layer);
        return this;
    }

    /// <summary>The layers.</summary>
    public IReadOnlyList<Module> Layers => _layers;

    /// <inheritdoc/>
    public override Tensor Forward(Tensor input)
    {
        var x = input;
        foreach (var l in _layers)
        {
            var y = l.Forward(x);
            // Intermediate results are ours to free, unless a layer handed back the very tensor it was given.
            if (!ReferenceEquals(x, input) && !ReferenceEquals(x, y)) x.Dispose();
            x = y;
        }
        return ReferenceEquals(x, input) ? input.To(input.DType) : x;
    }
}

/// <summary>A multi-layer perceptron: Linear layers with an activation between them (none after the last).</summary>
public sealed class Mlp : Module
{
    readonly Sequential _net;

    /// <summary>Sizes [in, hidden..., out]; activation "relu", "gelu", "silu" or "tanh".</summary>
    public Mlp(int[] sizes, string activation = "relu", Device? device = null, DType dtype = DType.Float32, Generator? generator = null)
    {
        if (sizes.Length < 2) throw new EngineException("Mlp", "need at least an input and an output size");
        _net = new Sequential();
        for (int i = 0; i + 1 < sizes.Length; i++)
        {
            _net.Append(new Linear(sizes[i], sizes[i + 1], true, device, dtype, generator));
            if (i + 2 < sizes.Length)
                _net.Append(activation switch
                {
                    "relu" => new ReLU(),
                    "gelu" => new GELU(),
                    "silu" => new SiLU(),
                    "tanh" => new Tanh(),
                    _ => throw new EngineException("Mlp", $"unknown activation '{activation}'"),
                });
        }
        RegisterModule("net", _net);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The layers of <c>net</c> in order, each ReLU or GELU fused into the Linear before it (one
    /// <see cref="Tensor.Linear"/> op with that activation); SiLU and Tanh run as their own ops.
    /// </remarks>
    public override Tensor Forward(Tensor input)
    {
        var layers = _net.Layers;
        var x = input;
        for (int i = 0; i < layers.Count; i++)
        {
            Tensor y;
            if (layers[i] is Linear l && i + 1 < layers.Count && layers[i + 1] is ReLU or GELU)
            {
                y = l.Forward(x, layers[i + 1] is GELU g ? g.Activation : Activation.Relu);
                i++;
            }
            else y = layers[i].Forward(x);
            if (!ReferenceEquals(x, input) && !ReferenceEquals(x, y)) x.Dispose();
            x = y;
        }
        return x;
    }
}

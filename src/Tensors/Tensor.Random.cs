using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    // ---- random creation: Philox4x32-10 through IBackend.Random; a draw of n elements advances the generator by ⌈n/4⌉ ----

    static void CheckRandomShape(string op, ReadOnlySpan<int> shape) => Shape.CheckedNumel(shape, op);

    static void CheckRandomDType(string op, DType dtype)
    {
        if (!dtype.IsFloatingPoint()) throw new DTypeException(op, $"random floats need a floating point dtype, got {dtype.Name()}");
    }

    static void CheckUniformRange(string op, double low, double high)
    {
        if (!double.IsFinite(low) || !double.IsFinite(high) || low > high)
            throw new EngineException(op, $"expects a finite range [low, high) with low <= high, but got low={low}, high={high}");
    }

    static void CheckNormalArgs(string op, double mean, double std)
    {
        if (!double.IsFinite(mean) || !double.IsFinite(std) || std < 0)
            throw new EngineException(op, $"expects a finite mean and std >= 0, but got mean={mean}, std={std}");
    }

    // A fresh contiguous tensor filled by the backend: uniform in [a, b), or normal with mean a and std b.
    static Tensor RandomTensor(string op, ReadOnlySpan<int> shape, DType dtype, Device? device, Generator? generator, bool normal, double a, double b, bool requiresGrad)
    {
        CheckRandomShape(op, shape);
        CheckRandomDType(op, dtype);
        var t = Empty(op, shape, dtype, device);
        if (t.Numel > 0)
        {
            var s = (generator ?? Generator.Default).Reserve(t.Numel);
            t.Backend.Random(t.Storage, s.Seed, s.Offset, normal, a, b);
        }
        if (requiresGrad) t.RequiresGrad = true;
        return t;
    }

    /// <summary>Uniform samples in [0, 1) (as <c>torch.rand</c>). Half types draw on their own significand grid, so never 1.</summary>
    public static Tensor Rand(ReadOnlySpan<int> shape, DType dtype = DType.Float32, Device? device = null, Generator? generator = null, bool requiresGrad = false) =>
        RandomTensor("Rand", shape, dtype, device, generator, false, 0, 1, requiresGrad);

    /// <summary>Standard normal samples (as <c>torch.randn</c>), by Box–Muller over Philox words.</summary>
    public static Tensor Randn(ReadOnlySpan<int> shape, DType dtype = DType.Float32, Device? device = null, Generator? generator = null, bool requiresGrad = false) =>
        RandomTensor("Randn", shape, dtype, device, generator, true, 0, 1, requiresGrad);

    /// <summary>Uniform samples in [<paramref name="low"/>, <paramref name="high"/>) (as <c>torch.empty(...).uniform_(low, high)</c>).</summary>
    public static Tensor Uniform(ReadOnlySpan<int> shape, double low, double high, DType dtype = DType.Float32, Device? device = null, Generator? generator = null, bool requiresGrad = false)
    {
        CheckUniformRange("Uniform", low, high);
        return RandomTensor("Uniform", shape, dtype, device, generator, false, low, high, requiresGrad);
    }

    /// <summary>Normal samples with the given mean and standard deviation (as <c>torch.normal(mean, std, size)</c>).</summary>
    public static Tensor Normal(ReadOnlySpan<int> shape, double mean, double std, DType dtype = DType.Float32, Device? device = null, Generator? generator = null, bool requiresGrad = false)
    {
        CheckNormalArgs("Normal", mean, std);
        return RandomTensor("Normal", shape, dtype, device, generator, true, mean, std, requiresGrad);
    }

    /// <summary>
    /// Uniform integers in [<paramref name="low"/>, <paramref name="high"/>) (as <c>torch.randint</c>): ⌊u·(high − low)⌋
    /// + low from 32-bit float64 uniforms u, clamped to high − 1. Differs from PyTorch: with 32-bit uniforms a range
    /// wider than 2³² does not reach every integer, and the values are exact only below 2⁵³.
    /// </summary>
    public static Tensor RandInt(long low, long high, ReadOnlySpan<int> shape, DType dtype = DType.Int64, Device? device = null, Generator? generator = null)
    {
        const string op = "RandInt";
        if (low >= high) throw new EngineException(op, $"expects 'low' to be less than 'high', but got low={low} >= high={high}");
        double range = (double)high - low;
        using var u = RandomTensor(op, shape, DType.Float64, device, generator, false, 0, range, false);
        // u·range < range in exact arithmetic; the clamp guards the rounding of the product. The values are >= 0, so
        // the truncating cast is the floor.
        using var c = u.Clamp(null, range - 1);
        var k = c.CastCopy(DType.Int64, c.Device);
        if (low != 0) { var shifted = k.Add(low); k.Dispose(); k = shifted; }
        if (dtype != DType.Int64) { var cast = k.CastCopy(dtype, k.Device); k.Dispose(); k = cast; }
        return k;
    }

    // ---- in-place fills (module initialization) ----

    Tensor RandomInPlace(string op, bool normal, double a, double b, Generator? generator)
    {
        CheckFloating(op);
        CheckWritable(op, DType);
        bool record = RequiresGrad && GradMode.IsEnabled;
        if (!record && IsContiguous && Layout.Offset == 0 && Storage.Count == Numel)
        {
            if (Numel > 0)
            {
                var s = (generator ?? Generator.Default).Reserve(Numel);
                Backend.Random(Storage, s.Seed, s.Offset, normal, a, b);
            }
            Storage.BumpVersion();
            return this;
        }
        // A view (strided, offset, or part of a larger storage): draw densely, then copy into the layout, so the
        // numbers are those a contiguous tensor of this shape would get.
        using var r = RandomTensor(op, Layout.Shape, DType, Device, generator, normal, a, b, false);
        if (record) return CommitInPlace(r.Alias().Record(new FillBackward(), this));
        Backend.Copy(r.Storage, r.Layout, Storage, Layout);
        Storage.BumpVersion();
        return this;
    }

    /// <summary>
    /// Fills with uniform samples in [<paramref name="low"/>, <paramref name="high"/>) (as <c>uniform_</c>). Returns
    /// this. A leaf that requires grad may only be filled under <see cref="GradMode.NoGrad"/>; a non-leaf in the graph
    /// gets a history through which no gradient flows.
    /// </summary>
    public Tensor UniformInPlace(double low, double high, Generator? g = null)
    {
        CheckUniformRange("UniformInPlace", low, high);
        return RandomInPlace("UniformInPlace", false, low, high, g);
    }

    /// <summary>Fills with normal samples (as <c>normal_</c>). Returns this. Same rules as <see cref="UniformInPlace"/>.</summary>
    public Tensor NormalInPlace(double mean, double std, Generator? g = null)
    {
        CheckNormalArgs("NormalInPlace", mean, std);
        return RandomInPlace("NormalInPlace", true, mean, std, g);
    }

    // ---- dropout ----

    /// <summary>
    /// Zeroes each element with probability <paramref name="p"/> and scales the rest by 1/(1 − p) (as
    /// <c>F.dropout</c>). Composed of recorded ops (x·mask, then ·1/(1 − p)), so the gradient flows through the kept
    /// elements only; the mask is a constant. With p = 0 or <paramref name="training"/> false it returns a new handle on
    /// the same data (recorded); with p = 1 it returns x·0, as PyTorch (NaN and ∞ inputs give NaN there, and likewise
    /// in dropped positions). The mask compares float32 uniforms with p; the draw advances the generator by ⌈n/4⌉.
    /// </summary>
    public Tensor Dropout(double p, bool training = true, Generator? generator = null)
    {
        const string op = "Dropout";
        if (!(p >= 0 && p <= 1)) throw new EngineException(op, $"dropout probability has to be between 0 and 1, but got {p}");
        if (!training || p == 0) return To(DType);
        CheckFloating(op);
        if (p == 1) return Mul(0.0);
        using var u = RandomTensor(op, Layout.Shape, DType.Float32, Device, generator, false, 0, 1, false);
        using var keep = u.Ge(p);
        using var mask = keep.CastCopy(DType, Device);
        using var kept = Mul(mask);
        return kept.Mul(1 / (1 - p));
    }
}

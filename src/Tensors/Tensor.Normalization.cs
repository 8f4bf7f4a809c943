using Engine.Autocast;
using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// Layer normalization over the trailing dims <paramref name="normalizedShape"/>, as <c>F.layer_norm</c>:
    /// y = (x − mean)/√(var + eps)·weight + bias with the biased variance; weight and bias (optional) have shape
    /// <paramref name="normalizedShape"/> and this tensor's dtype. One fused kernel; statistics in float64.
    /// Recorded as <see cref="LayerNormBackward"/>. With <paramref name="outputDType"/> float16 or bfloat16 for a
    /// float32 input, the result is written in that dtype, the bits of <c>LayerNorm(...).To(outputDType)</c> from one
    /// kernel, and its gradient is read by the backward in that dtype: the norm before a matrix product that autocast
    /// runs in 16 bits, without the cast's two passes (see <see cref="IsNormOutputDType"/>).
    /// </summary>
    public Tensor LayerNorm(ReadOnlySpan<int> normalizedShape, Tensor? weight = null, Tensor? bias = null, double eps = 1e-5, DType? outputDType = null) =>
        NormForward("LayerNorm", normalizedShape, weight, bias, eps, rms: false, outputDType);

    /// <summary>
    /// The residual add of a pre-norm transformer fused with the norm after it: Sum = this + <paramref name="residual"/>
    /// (one shape; dtypes promoted as <see cref="Add(Tensor)"/>) and Normalized = Sum.LayerNorm(normalizedShape,
    /// weight, bias, eps), from one kernel that writes both. The results are the bits of that composition, and it is
    /// recorded as that composition (Sum as the Add, Normalized as the <see cref="LayerNormBackward"/> of Sum), whose
    /// backward adds the residual stream's gradient into the norm's dx inside the norm's backward kernel. Where autocast
    /// would run the norm in another dtype, this runs the composition itself. A float16/bfloat16 operand added to a
    /// float32 one (a 16-bit layer's output into a float32 residual stream) is read by the kernel as it is, the bits
    /// of the promoting Add. <paramref name="outputDType"/> as in <see cref="LayerNorm"/> (Sum keeps the promoted dtype).
    /// </summary>
    public (Tensor Sum, Tensor Normalized) AddLayerNorm(Tensor residual, ReadOnlySpan<int> normalizedShape, Tensor? weight = null, Tensor? bias = null, double eps = 1e-5,
        DType? outputDType = null)
    {
        const string op = "AddLayerNorm";
        CheckSameDevice(op, this, residual);
        if (!Layout.Shape.Equals(residual.Layout.Shape))
            throw new ShapeException(op, $"the input {Describe()} and the residual {residual.Describe()} must have one shape");
        var dt = DTypes.ResultType(DType, Rank == 0, residual.DType, residual.Rank == 0);
        if (!dt.IsFloatingPoint()) throw new DTypeException(op, $"expected floating point inputs, got {Describe()} and {residual.Describe()}");
        // The kernel widens a 16-bit addend of a float32 sum itself; the Add is commutative bit for bit, so that
        // addend is passed as the residual whichever side it came from (recorded in the caller's order).
        bool narrowResidual = dt == DType.Float32 && residual.DType.IsHalf() && DType == dt;
        bool narrowInput = dt == DType.Float32 && DType.IsHalf() && residual.DType == dt;
        if (narrowResidual || narrowInput)
            return AddNormCore(op, narrowInput ? residual : this, narrowInput ? this : residual, this, residual, normalizedShape, weight, bias, eps, outputDType);
        using var xc = DType == dt ? null : To(dt);
        using var rc = residual.DType == dt ? null : residual.To(dt);
        return AddNormCore(op, xc ?? this, rc ?? residual, xc ?? this, rc ?? residual, normalizedShape, weight, bias, eps, outputDType);
    }

    // x + residual normalized; first and second are the Add's operands in the caller's order (x and residual, maybe swapped).
    (Tensor Sum, Tensor Normalized) AddNormCore(string op, Tensor x, Tensor residual, Tensor first, Tensor second, ReadOnlySpan<int> normalizedShape,
        Tensor? weight, Tensor? bias, double eps, DType? outputDType)
    {
        if (AutocastDispatch.TryAutocast(typeof(LayerNormBackward), x, weight, bias, out var ac))
        {
            ac.Dispose();
            var s = first.Add(second);
            try { return (s, s.LayerNorm(normalizedShape, weight, bias, eps, outputDType)); }
            catch { s.Dispose(); throw; }
        }
        if (x.DType.IsHalf() && (weight?.DType == DType.Float32 || bias?.DType == DType.Float32))
        {
            // The mixed-type norm of NormForward: float32 parameters cast to the input's dtype, differentiably.
            using var wc = weight?.DType == DType.Float32 ? weight.To(x.DType) : null;
            using var bc = bias?.DType == DType.Float32 ? bias.To(x.DType) : null;
            return AddNormCore(op, x, residual, first, second, normalizedShape, wc ?? weight, bc ?? bias, eps, outputDType);
        }
        var yType = x.CheckNormOutputDType(op, outputDType);
        int k = x.CheckNormalizedShape(op, normalizedShape);
        x.CheckNormParameter(op, "weight", weight, normalizedShape);
        x.CheckNormParameter(op, "bias", bias, normalizedShape);
        var lead = x.Layout.Shape[..(x.Rank - k)];
        var (rows, cols) = x.NormRowsCols(op, k);
        var statType = x.DType == DType.Float64 ? DType.Float64 : DType.Float32;

        using var xd = x.DenseRows(x.DType);
        using var rd = residual.DenseRows(residual.DType);
        using var wd = weight?.DenseRows(x.DType);
        using var bd = bias?.DenseRows(x.DType);
        using var mean = Empty(op, lead, statType, x.Device);
        using var rstd = Empty(op, lead, statType, x.Device);
        var sum = Empty(op, x.Layout.Shape, x.DType, x.Device);
        Tensor? y = null;
        try
        {
            y = Empty(op, x.Layout.Shape, yType, x.Device);
            x.Backend.LayerNorm(xd.Storage, rd.Storage, wd?.Storage, bd?.Storage, sum.Storage, y.Storage, mean.Storage, rstd.Storage, rows, cols, eps, rms: false);
        }
        catch
        {
            sum.Dispose(); y?.Dispose();
            throw;
        }
        if (ShouldRecord(first, second)) sum.Record(new AddBackward(), first, second);
        Tensor[] inputs = [sum, .. weight is null ? Array.Empty<Tensor>() : [weight], .. bias is null ? Array.Empty<Tensor>() : [bias]];
        if (ShouldRecord(inputs)) y.Record(new LayerNormBackward(k, sum, wd, bias is not null, mean, rstd), inputs);
        return (sum, y);
    }

    /// <summary>
    /// RMS normalization over the trailing dims <paramref name="normalizedShape"/>, as <c>torch.nn.functional.rms_norm</c>:
    /// y = x/√(mean(x²) + eps)·weight. A null <paramref name="eps"/> is the machine epsilon of the dtype, as
    /// PyTorch's (2⁻²³ for float32, 2⁻⁵² for float64, 2⁻¹⁰ for float16, 2⁻⁷ for bfloat16). Recorded as <see cref="RmsNormBackward"/>.
    /// </summary>
    public Tensor RmsNorm(ReadOnlySpan<int> normalizedShape, Tensor? weight = null, double? eps = null, DType? outputDType = null) =>
        NormForward("RmsNorm", normalizedShape, weight, null, eps, rms: true, outputDType);

    /// <summary>
    /// The dtype the norms (<see cref="LayerNorm"/>, <see cref="AddLayerNorm"/>, <see cref="RmsNorm"/>) may write
    /// their output in besides the input's: float16 or bfloat16 for a float32 input (that input's norm computed in
    /// float32 and rounded once on store), nothing else. Null is the input's dtype.
    /// </summary>
    public static bool IsNormOutputDType(DType input, DType output) => output == input || input == DType.Float32 && output.IsHalf();

    // The output dtype of a norm of this tensor, checked.
    DType CheckNormOutputDType(string op, DType? outputDType)
    {
        if (outputDType is not { } o) return DType;
        if (!IsNormOutputDType(DType, o))
            throw new DTypeException(op, $"outputDType {o.Name()} must be the input's dtype or, for a float32 input, float16 or bfloat16; got the input {Describe()}");
        return o;
    }

    /// <summary>The machine epsilon of a floating dtype (the gap between 1 and the next value), as <c>torch.finfo(dtype).eps</c>.</summary>
    public static double MachineEpsilon(DType dtype) => dtype switch
    {
        DType.Float64 => Math.Pow(2, -52),
        DType.Float32 => Math.Pow(2, -23),
        DType.Float16 => Math.Pow(2, -10),
        DType.BFloat16 => Math.Pow(2, -7),
        _ => throw new DTypeException("MachineEpsilon", $"{dtype.Name()} is not a floating point type"),
    };

    Tensor NormForward(string op, ReadOnlySpan<int> normalizedShape, Tensor? weight, Tensor? bias, double? eps, bool rms, DType? outputDType)
    {
        if (AutocastDispatch.TryAutocast(rms ? typeof(RmsNormBackward) : typeof(LayerNormBackward), this, weight, bias, out var ac))
            using (ac) return ac[0].NormForward(op, normalizedShape, ac.Optional(1), ac.Optional(2), eps, rms, outputDType);
        if (!DType.IsFloatingPoint()) throw new DTypeException(op, $"expected a floating point input, got {Describe()}");
        if (DType.IsHalf() && (weight?.DType == DType.Float32 || bias?.DType == DType.Float32))
        {
            // PyTorch's mixed-type norm: a float16/bfloat16 input with float32 parameters (float32 master weights
            // under the CPU autocast table, which leaves norms in the input type). The parameters are cast to the
            // input's dtype, differentiably, so their gradients come back in float32.
            using var wc = weight?.DType == DType.Float32 ? weight.To(DType) : null;
            using var bc = bias?.DType == DType.Float32 ? bias.To(DType) : null;
            return NormForward(op, normalizedShape, wc ?? weight, bc ?? bias, eps, rms, outputDType);
        }
        var yType = CheckNormOutputDType(op, outputDType);
        int k = CheckNormalizedShape(op, normalizedShape);
        CheckNormParameter(op, "weight", weight, normalizedShape);
        CheckNormParameter(op, "bias", bias, normalizedShape);
        double e = eps ?? MachineEpsilon(DType);
        var lead = Layout.Shape[..(Rank - k)];
        var (rows, cols) = NormRowsCols(op, k);
        var statType = DType == DType.Float64 ? DType.Float64 : DType.Float32;

        using var xd = DenseRows(DType);
        using var wd = weight?.DenseRows(DType);
        using var bd = bias?.DenseRows(DType);
        using var mean = Empty(op, lead, statType, Device);
        using var rstd = Empty(op, lead, statType, Device);
        var y = Empty(op, Layout.Shape, yType, Device);
        try
        {
            Backend.LayerNorm(xd.Storage, null, wd?.Storage, bd?.Storage, null, y.Storage, mean.Storage, rstd.Storage, rows, cols, e, rms);
        }
        catch
        {
            y.Dispose();
            throw;
        }
        Tensor[] inputs = [this, .. weight is null ? Array.Empty<Tensor>() : [weight], .. bias is null ? Array.Empty<Tensor>() : [bias]];
        if (!ShouldRecord(inputs)) return y;
        GradFunction fn = rms ? new RmsNormBackward(k, xd, wd, mean, rstd) : new LayerNormBackward(k, xd, wd, bias is not null, mean, rstd);
        return y.Record(fn, inputs);
    }

    // Inputs [x, weight?, bias?] (only those given); saved x and weight as dense copies (or aliases) and the per-row
    // mean and rstd. One fused kernel gives dx, dWeight and dBias. LayerNorm and RmsNorm differ only in the kernel's
    // flag; they are two types because the autocast policy names each.
    internal abstract class NormalizationBackward : GradFunction
    {
        readonly int _dims;
        readonly bool _hasBias, _rms;
        readonly SavedTensor _x, _mean, _rstd;
        readonly SavedTensor? _weight;

        private protected NormalizationBackward(int dims, Tensor x, Tensor? weight, bool hasBias, Tensor mean, Tensor rstd, bool rms)
        {
            _dims = dims; _hasBias = hasBias; _rms = rms;
            _x = Save(x); _weight = weight is null ? null : Save(weight); _mean = Save(mean); _rstd = Save(rstd);
        }

        protected internal override Tensor?[] Backward(Tensor grad) => Gradients(grad, null);

        // The input's pending gradient (its other uses' share, as the residual stream's) is added by the backward
        // kernel itself when it is dense, so the executor's fan-out Add does not run.
        protected internal override Tensor?[]? BackwardAccumulating(Tensor grad, Tensor pending) =>
            pending.IsContiguous && pending.Layout.Offset == 0 && pending.DType == _x.Value.DType ? Gradients(grad, pending) : null;

        Tensor?[] Gradients(Tensor grad, Tensor? pending)
        {
            int wi = _weight is null ? -1 : 1, bi = _hasBias ? (_weight is null ? 1 : 2) : -1;
            var (dx, dw, db) = LayerNormGradient(_x.Value, _weight?.Value, _mean.Value, _rstd.Value, grad, pending, _dims, _rms,
                wi > 0 && NeedsGrad(wi), bi > 0 && NeedsGrad(bi));
            var r = new Tensor?[1 + (wi > 0 ? 1 : 0) + (bi > 0 ? 1 : 0)];
            r[0] = dx;
            if (wi > 0) r[wi] = dw;
            if (bi > 0) r[bi] = db;
            return r;
        }
    }

    internal sealed class LayerNormBackward(int dims, Tensor x, Tensor? weight, bool hasBias, Tensor mean, Tensor rstd)
        : NormalizationBackward(dims, x, weight, hasBias, mean, rstd, rms: false);

    internal sealed class RmsNormBackward(int dims, Tensor x, Tensor? weight, Tensor mean, Tensor rstd)
        : NormalizationBackward(dims, x, weight, hasBias: false, mean, rstd, rms: true);

    /// <summary>
    /// The gradients of <see cref="LayerNorm"/> (or <see cref="RmsNorm"/> when <paramref name="rms"/>) over the
    /// trailing <paramref name="normalizedDims"/> dims of <paramref name="x"/>, from the per-row
    /// <paramref name="mean"/> and <paramref name="rstd"/> the forward computed and the output gradient
    /// <paramref name="dy"/>: dx always; dWeight = Σ dy·x̂ and dBias = Σ dy over the rows when asked for. One fused
    /// kernel; column sums are deterministic. Not recorded (no double backward). <paramref name="dy"/> may be float16 or
    /// bfloat16 for a float32 x (the gradient of a norm output written in 16 bits), read as it is.
    /// </summary>
    public static (Tensor Dx, Tensor? DWeight, Tensor? DBias) LayerNormGradient(Tensor x, Tensor? weight, Tensor mean, Tensor rstd, Tensor dy,
        int normalizedDims, bool rms, bool weightGrad, bool biasGrad) =>
        LayerNormGradient(x, weight, mean, rstd, dy, null, normalizedDims, rms, weightGrad, biasGrad);

    /// <summary>
    /// <see cref="LayerNormGradient(Tensor, Tensor?, Tensor, Tensor, Tensor, int, bool, bool, bool)"/> with
    /// <paramref name="dxAdd"/>, a gradient x already has from its other uses, added into dx by the same kernel: dx =
    /// dxAdd + LayerNorm's dx, the bits of the unfused Add (the fan-out sum of a residual stream, folded in).
    /// </summary>
    public static (Tensor Dx, Tensor? DWeight, Tensor? DBias) LayerNormGradient(Tensor x, Tensor? weight, Tensor mean, Tensor rstd, Tensor dy, Tensor? dxAdd,
        int normalizedDims, bool rms, bool weightGrad, bool biasGrad)
    {
        string op = rms ? "RmsNormBackward" : "LayerNormBackward";
        x.CheckFloating(op);
        CheckSameDevice(op, x, dy);
        if (x.Layout.Shape != dy.Layout.Shape)
            throw new ShapeException(op, $"the input {x.Describe()} and the output gradient {dy.Describe()} must have one shape");
        if (normalizedDims < 1 || normalizedDims > x.Rank)
            throw new ShapeException(op, $"normalizedDims {normalizedDims} is out of range for {x.Describe()}");
        var normalizedShape = x.Layout.Shape[(x.Rank - normalizedDims)..];
        CheckNormParameter(op, "weight", weight, normalizedShape, x);
        if (dxAdd is not null)
        {
            CheckSameDevice(op, x, dxAdd);
            if (x.Layout.Shape != dxAdd.Layout.Shape || dxAdd.DType != x.DType)
                throw new ShapeException(op, $"the gradient to add {dxAdd.Describe()} must have the input's shape and dtype {x.Describe()}");
        }
        var (rows, cols) = x.NormRowsCols(op, normalizedDims);
        if (mean.Numel != rows || rstd.Numel != rows)
            throw new ShapeException(op, $"mean {mean.Describe()} and rstd {rstd.Describe()} must hold one value per row ({rows})");
        var statType = x.DType == DType.Float64 ? DType.Float64 : DType.Float32;

        using var xd = x.DenseRows(x.DType);
        using var wd = weight?.DenseRows(x.DType);
        using var md = mean.DenseRows(statType);
        using var rd = rstd.DenseRows(statType);
        using var gd = dy.DenseRows(dy.DType.IsFloatingPoint() && IsNormOutputDType(x.DType, dy.DType) ? dy.DType : x.DType);
        using var ad = dxAdd?.DenseRows(x.DType);
        var dx = Empty(op, x.Layout.Shape, x.DType, x.Device);
        var dw = weightGrad ? Empty(op, normalizedShape, x.DType, x.Device) : null;
        var db = biasGrad ? Empty(op, normalizedShape, x.DType, x.Device) : null;
        try
        {
            x.Backend.LayerNormBackward(xd.Storage, wd?.Storage, md.Storage, rd.Storage, gd.Storage, ad?.Storage, dx.Storage, dw?.Storage, db?.Storage, rows, cols, rms);
        }
        catch
        {
            dx.Dispose(); dw?.Dispose(); db?.Dispose();
            throw;
        }
        return (dx, dw, db);
    }

    int CheckNormalizedShape(string op, ReadOnlySpan<int> normalizedShape)
    {
        int k = normalizedShape.Length;
        if (k == 0) throw new ShapeException(op, "normalizedShape must have at least one dim");
        if (k > Rank || !Layout.Shape.AsSpan()[(Rank - k)..].SequenceEqual(normalizedShape))
            throw new ShapeException(op, $"given normalizedShape {Shape.Format(normalizedShape)}, expected an input of shape [*, {string.Join(", ", normalizedShape.ToArray())}], got {Describe()}");
        return k;
    }

    void CheckNormParameter(string op, string name, Tensor? p, ReadOnlySpan<int> normalizedShape) => CheckNormParameter(op, name, p, normalizedShape, this);

    static void CheckNormParameter(string op, string name, Tensor? p, ReadOnlySpan<int> normalizedShape, Tensor x)
    {
        if (p is null) return;
        if (!p.Layout.Shape.AsSpan().SequenceEqual(normalizedShape))
            throw new ShapeException(op, $"{name} {p.Describe()} must have the normalized shape {Shape.Format(normalizedShape)}");
        if (p.DType != x.DType)
            throw new DTypeException(op, $"{name} {p.Describe()} must have the input's dtype {x.DType.Name()}");
        CheckSameDevice(op, x, p);
    }

    (int Rows, int Cols) NormRowsCols(string op, int normalizedDims)
    {
        long rows = 1, cols = 1;
        for (int i = 0; i < Rank; i++)
            if (i < Rank - normalizedDims) rows *= Layout.Shape[i];
            else cols *= Layout.Shape[i];
        if (rows > int.MaxValue || cols > int.MaxValue)
            throw new ShapeException(op, $"{Describe()} has more than int.MaxValue rows or normalized elements");
        return ((int)rows, (int)cols);
    }
}

using Engine.Autocast;
using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// The fused linear layer, PyTorch's <c>F.linear</c> with an optional activation: act(input·weightᵀ + bias) for
    /// input [..., in], weight [out, in], bias [out] or null; the result is [..., out]. One backend kernel (the CPU runs
    /// the bias add and the activation in its GEMM's store epilogue, CUDA in one kernel after its GEMM); transposed and
    /// strided operands are read in place. Mixed floating dtypes promote as the unfused composition's MatMul and Add
    /// (<see cref="DTypes.Promote"/>); under autocast every floating input, bias included, is cast to the region's
    /// dtype first, as PyTorch's autocast <c>linear</c>. Recorded as <see cref="LinearBackward"/>, which saves the
    /// pre-activation only for the GELUs (ReLU's derivative is read from its output).
    /// </summary>
    public static Tensor Linear(Tensor input, Tensor weight, Tensor? bias = null, Activation activation = Activation.None)
    {
        const string op = "Linear";
        if (AutocastDispatch.TryAutocast(typeof(LinearBackward), input, weight, bias, out var ac))
            using (ac) return Linear(ac[0], ac[1], ac.Optional(2), activation);
        CheckSameDevice(op, input, weight);
        if (bias is not null) CheckSameDevice(op, input, bias);
        if (!Enum.IsDefined(activation)) throw new EngineException(op, $"unknown activation {(int)activation}");
        if (input.Rank < 1 || weight.Rank != 2 || input.Layout.Shape[^1] != weight.Layout.Shape[1])
            throw new ShapeException(op, $"input {Shape.Format(input.Layout.Shape)} and weight {Shape.Format(weight.Layout.Shape)} do not fit: expected input [..., in] and weight [out, in]");
        int k = weight.Layout.Shape[1], n = weight.Layout.Shape[0];
        if (bias is not null && (bias.Rank != 1 || bias.Layout.Shape[0] != n))
            throw new ShapeException(op, $"bias {Shape.Format(bias.Layout.Shape)} does not fit weight {Shape.Format(weight.Layout.Shape)}: expected [{n}]");
        // Mixed dtypes promote as the unfused input.MatMul(weight.T).Add(bias) does (DTypes.Promote, as
        // torch.promote_types): the inputs that differ are cast, differentiably, and the op re-entered with one dtype.
        var dt = DTypes.Promote(input.DType, weight.DType);
        if (bias is not null) dt = DTypes.Promote(dt, bias.DType);
        if (!dt.IsFloatingPoint())
            throw new DTypeException(op, $"input {input.Describe()}, weight {weight.Describe()}{(bias is null ? "" : $" and bias {bias.Describe()}")} promote to {dt.Name()}, not a floating point type");
        if (input.DType != dt || weight.DType != dt || bias is not null && bias.DType != dt)
        {
            using var xp = input.DType == dt ? null : input.To(dt);
            using var wp = weight.DType == dt ? null : weight.To(dt);
            using var bp = bias is null || bias.DType == dt ? null : bias.To(dt);
            return Linear(xp ?? input, wp ?? weight, bp ?? bias, activation);
        }
        long rowsAll = input.Numel / Math.Max(k, 1);
        if (k == 0) rowsAll = Shape.Numel(input.Layout.Shape[..^1]);
        if (rowsAll > int.MaxValue)
            throw new ShapeException(op, $"input {Shape.Format(input.Layout.Shape)} has {rowsAll} rows, more than one product takes ({int.MaxValue})");
        int m = (int)rowsAll;

        Tensor[] inputs = bias is null ? [input, weight] : [input, weight, bias];
        bool record = ShouldRecord(inputs);
        int[] outShape = [.. input.Layout.Shape[..^1], n];
        // The input folded to [m, k]: a view when its batch dims merge, otherwise a contiguous copy.
        var xl = input.Layout.TryView([m, k]);
        using var xc = xl is null ? input.CastCopy(input.DType, input.Device, op) : null;
        xl ??= Layout.Contiguous([m, k]);
        using var bd = bias?.DenseRows(bias.DType);
        bool savePre = record && activation is Activation.Gelu or Activation.GeluTanh;
        using var pre = savePre ? Empty(op, outShape, input.DType, input.Device) : null;
        var y = Empty(op, outShape, input.DType, input.Device);
        try
        {
            input.Backend.Linear((xc ?? input).Storage, xl, weight.Storage, weight.Layout, bd?.Storage, y.Storage, pre?.Storage, m, n, k, activation);
        }
        catch
        {
            y.Dispose();
            throw;
        }
        if (!record) return y;
        var saved = activation switch { Activation.Relu => y, Activation.None => null, _ => pre };
        return y.Record(new LinearBackward(input, weight, bias is not null, activation, saved), inputs);
    }

    // Inputs [input, weight, bias?]. dz = dy·act′ and dBias in one pass (LinearActivationGradient; none for a Linear
    // without bias and activation, whose dz is dy), then both products in one backend call (LinearGradients:
    // dInput = dz·W, dWeight = dzᵀ·X with X's batch dims folded into rows). A weight or bias that is the autocast copy of
    // a float32 master (PreferredGradDType) gets its gradient in float32, computed from the 16-bit operands without the
    // rounding to 16 bits and the cast back that PyTorch's autocast has.
    internal sealed class LinearBackward : GradFunction
    {
        readonly SavedTensor _x, _w;
        readonly SavedTensor? _saved;
        readonly bool _hasBias;
        readonly Activation _activation;

        internal LinearBackward(Tensor x, Tensor w, bool hasBias, Activation activation, Tensor? saved)
        {
            _x = Save(x); _w = Save(w); _saved = saved is null ? null : Save(saved);
            _hasBias = hasBias; _activation = activation;
        }

        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var (x, w) = (_x.Value, _w.Value);
            bool biasGrad = _hasBias && NeedsGrad(2);
            var (dz, db) = LinearActivationGradient(grad, _saved?.Value, _activation, biasGrad, biasGrad ? WideGradDType(2, grad.DType) : grad.DType);
            var (dx, dw) = LinearGradients(dz, x, w, NeedsGrad(0), NeedsGrad(1), NeedsGrad(1) ? WideGradDType(1, w.DType) : w.DType);
            return _hasBias ? [dx, dw, db] : [dx, dw];
        }

        // Float32 for a 16-bit input that prefers a float32 gradient (what the kernels can write), else the operands' dtype.
        DType WideGradDType(int i, DType dt) =>
            dt is DType.BFloat16 or DType.Float16 && PreferredGradDType(i) == DType.Float32 ? DType.Float32 : dt;
    }

    /// <summary>
    /// The two products of <see cref="Linear"/>'s backward in one backend call (IBackend.LinearGradients; one grouped
    /// GEMM launch on CUDA): dInput = dz·weight at x's shape when <paramref name="wantInput"/>, dWeight = dzᵀ·x (x's batch
    /// dims folded into rows) as [out, in] in <paramref name="weightGradDType"/> (the operands' dtype, or Float32 for
    /// 16-bit operands) when <paramref name="wantWeight"/>. dz is [..., out] at x's batch dims. Not recorded.
    /// </summary>
    internal static (Tensor? DInput, Tensor? DWeight) LinearGradients(Tensor dz, Tensor x, Tensor weight, bool wantInput, bool wantWeight, DType weightGradDType)
    {
        const string op = "LinearBackward";
        if (!wantInput && !wantWeight) return (null, null);
        int n = weight.Layout.Shape[0], k = weight.Layout.Shape[1];
        // Rows from x's batch dims, not −1: with k or n zero a −1 would be ambiguous (PyTorch refuses it too).
        var xs = x.Layout.Shape.AsSpan();
        int m = checked((int)Shape.Numel(xs[..^1]));
        if (dz.DType != x.DType || weight.DType != x.DType || dz.Numel != (long)m * n)
            throw new ShapeException(op, $"dz {dz.Describe()}, x {x.Describe()} and weight {weight.Describe()} do not fit one Linear");
        using var zd = dz.DenseRows(dz.DType);
        var xl = x.Layout.TryView([m, k]);
        using var xc = xl is null && wantWeight ? x.CastCopy(x.DType, x.Device, op) : null;
        xl = xl is null ? Layout.Contiguous([m, k]) : xl;
        var dx = wantInput ? Empty(op, xs, x.DType, x.Device) : null;
        var dw = wantWeight ? Empty(op, [n, k], weightGradDType, x.Device) : null;
        try
        {
            x.Backend.LinearGradients(zd.Storage, (xc ?? x).Storage, xl, weight.Storage, weight.Layout, dx?.Storage, dw?.Storage, m, n, k);
        }
        catch
        {
            dx?.Dispose(); dw?.Dispose();
            throw;
        }
        return (dx, dw);
    }

    /// <summary>
    /// The elementwise half of <see cref="Linear"/>'s backward in one kernel: dz = dy·act′ (act′ read from
    /// <paramref name="saved"/>: the output for ReLU, the pre-activation for the GELUs; dz is <paramref name="dy"/>
    /// itself for <see cref="Activation.None"/>) and, when <paramref name="biasGrad"/>, dBias = the sum of dz over
    /// every dim but the last. Not recorded (no double backward).
    /// </summary>
    public static (Tensor Dz, Tensor? DBias) LinearActivationGradient(Tensor dy, Tensor? saved, Activation activation, bool biasGrad) =>
        LinearActivationGradient(dy, saved, activation, biasGrad, dy.DType);

    // biasDType: dy's dtype, or Float32 for a 16-bit dy (the float32 master bias's gradient, unrounded).
    internal static (Tensor Dz, Tensor? DBias) LinearActivationGradient(Tensor dy, Tensor? saved, Activation activation, bool biasGrad, DType biasDType)
    {
        const string op = "LinearBackward";
        dy.CheckFloating(op);
        if (dy.Rank < 1) throw new ShapeException(op, $"the output gradient {dy.Describe()} must have at least one dim");
        if (activation != Activation.None)
        {
            if (saved is null) throw new EngineException(op, $"{activation} needs the saved activation");
            CheckSameDevice(op, dy, saved);
            if (saved.Layout.Shape != dy.Layout.Shape || saved.DType != dy.DType)
                throw new ShapeException(op, $"the saved activation {saved.Describe()} and the output gradient {dy.Describe()} must have one shape and dtype");
        }
        if (activation == Activation.None && !biasGrad) return (dy, null);
        int n = dy.Layout.Shape[^1];
        long rows = Shape.Numel(dy.Layout.Shape[..^1]);
        if (rows > int.MaxValue) throw new ShapeException(op, $"{dy.Describe()} has more than {int.MaxValue} rows");
        using var gd = dy.DenseRows(dy.DType);
        using var sd = activation == Activation.None ? null : saved!.DenseRows(dy.DType);
        var dz = activation == Activation.None ? dy : Empty(op, dy.Layout.Shape, dy.DType, dy.Device);
        var db = biasGrad ? Empty(op, [n], biasDType, dy.Device) : null;
        try
        {
            dy.Backend.LinearBackward(gd.Storage, sd?.Storage, activation == Activation.None ? null : dz.Storage, db?.Storage, (int)rows, n, activation);
        }
        catch
        {
            if (!ReferenceEquals(dz, dy)) dz.Dispose();
            db?.Dispose();
            throw;
        }
        return (dz, db);
    }
}

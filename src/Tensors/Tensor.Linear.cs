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

    // Inputs [input, weight, bias?]. dz = dy·act′ and dBias in one pass (LinearActivationGradient), then the two
    // products: dInput = dz·W, dWeight = dzᵀ·X with X's batch dims folded into rows (one GEMM straight to [out, in]).
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
            var (dz, db) = LinearActivationGradient(grad, _saved?.Value, _activation, biasGrad);
            int n = w.Layout.Shape[0], k = w.Layout.Shape[1];
            // Rows from x's batch dims, not -1: with k or n zero a -1 would be ambiguous (PyTorch refuses it too).
            var xs = x.Layout.Shape.AsSpan();
            int m = checked((int)Shape.Numel(xs[..^1]));
            var dz2 = dz.Reshape(m, n);
            var dx = NeedsGrad(0) ? dz2.MatMul(w).Reshape(xs) : null;
            var dw = NeedsGrad(1) ? dz2.Transpose(0, 1).MatMul(x.Reshape(m, k)) : null;
            return _hasBias ? [dx, dw, db] : [dx, dw];
        }
    }

    /// <summary>
    /// The elementwise half of <see cref="Linear"/>'s backward in one kernel: dz = dy·act′ (act′ read from
    /// <paramref name="saved"/>: the output for ReLU, the pre-activation for the GELUs; dz is <paramref name="dy"/>
    /// itself for <see cref="Activation.None"/>) and, when <paramref name="biasGrad"/>, dBias = the sum of dz over
    /// every dim but the last. Not recorded (no double backward).
    /// </summary>
    public static (Tensor Dz, Tensor? DBias) LinearActivationGradient(Tensor dy, Tensor? saved, Activation activation, bool biasGrad)
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
        var db = biasGrad ? Empty(op, [n], dy.DType, dy.Device) : null;
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

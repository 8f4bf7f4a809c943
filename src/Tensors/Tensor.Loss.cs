using Engine.Autocast;
using Engine.Backends;
using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// Cross entropy between these logits and class-index <paramref name="target"/>s, as <c>F.cross_entropy</c>:
    /// logits [N, C] with target [N], [C] with a 0-d target, or [N, C, d1, ...] with target [N, d1, ...]; target is
    /// Int64. Per sample: −Σ_c q_c·log_softmax(x)_c with q = (1−ε)·onehot + ε/C; samples whose target is
    /// <paramref name="ignoreIndex"/> give 0. <see cref="Reduction.Mean"/> divides by the number of non-ignored
    /// samples (NaN when all are ignored). The loss has the logits' dtype (computed in float32, or float64 for
    /// float64 logits). Class-probability targets and per-class weights are not supported. Recorded as <see cref="CrossEntropyBackward"/>.
    /// </summary>
    public Tensor CrossEntropy(Tensor target, Reduction reduction = Reduction.Mean, long ignoreIndex = -100, double labelSmoothing = 0.0)
    {
        const string op = "CrossEntropy";
        if (AutocastDispatch.TryAutocast(typeof(CrossEntropyBackward), this, target, out var ac)) using (ac) return ac[0].CrossEntropy(ac[1], reduction, ignoreIndex, labelSmoothing);
        var (rows, cols) = CheckCrossEntropy(op, this, target, labelSmoothing);
        var acc = DType == DType.Float64 ? DType.Float64 : DType.Float32;
        using var xd = ClassLastDense(this);
        using var td = target.DenseRows(DType.Int64);
        using var perRow = Empty(op, [rows], acc, Device);
        Backend.CrossEntropy(xd.Storage, td.Storage, perRow.Storage, rows, cols, ignoreIndex, labelSmoothing);

        Tensor? count = null;
        Tensor y;
        try
        {
            switch (reduction)
            {
                case Reduction.None:
                {
                    using var v = perRow.NewView(Layout.Contiguous(target.Layout.Shape));
                    y = v.CastCopy(DType, Device);
                    break;
                }
                case Reduction.Sum:
                    y = InLogitsDType(SumAll(perRow));
                    break;
                default:
                {
                    using var valid = td.Ne(ignoreIndex);
                    using var validF = valid.CastCopy(acc, Device);
                    count = SumAll(validF);
                    using var s = SumAll(perRow);
                    y = InLogitsDType(s.Div(count));
                    break;
                }
            }
            if (!ShouldRecord(this)) return y;
            return y.Record(new CrossEntropyBackward(reduction, ignoreIndex, labelSmoothing, this, target, count), this);
        }
        finally
        {
            count?.Dispose();
        }
    }

    // A reduced loss (float32 or float64, fresh) in the logits' dtype: itself when it already is (no copy for float32
    // or float64 logits), else a rounded copy.
    Tensor InLogitsDType(Tensor loss)
    {
        if (loss.DType == DType) return loss;
        using (loss) return loss.CastCopy(DType, Device);
    }

    // The gradient of the reduced loss becomes a per-sample dloss (broadcast for Sum, divided by the count of
    // non-ignored samples for Mean), then one fused kernel gives dlogits. Input [logits]; saved logits, target and,
    // for Mean, the count as a 0-d float32 (float64) tensor.
    internal sealed class CrossEntropyBackward : GradFunction
    {
        readonly Reduction _reduction;
        readonly long _ignoreIndex;
        readonly double _labelSmoothing;
        readonly SavedTensor _logits, _target;
        readonly SavedTensor? _count;
        internal CrossEntropyBackward(Reduction reduction, long ignoreIndex, double labelSmoothing, Tensor logits, Tensor target, Tensor? count)
        {
            _reduction = reduction; _ignoreIndex = ignoreIndex; _labelSmoothing = labelSmoothing;
            _logits = Save(logits); _target = Save(target); _count = count is null ? null : Save(count);
        }
        protected internal override Tensor?[] Backward(Tensor grad)
        {
            var target = _target.Value;
            var perSample = _reduction switch
            {
                Reduction.None => grad,
                Reduction.Sum => grad.Expand(target.Layout.Shape),
                _ => (grad / _count!.Value).Expand(target.Layout.Shape),
            };
            return [CrossEntropyGradient(_logits.Value, target, perSample, _ignoreIndex, _labelSmoothing)];
        }
    }

    /// <summary>
    /// The gradient of the unreduced <see cref="CrossEntropy"/>: dlogits = (softmax(x) − q)·dloss per sample, where
    /// <paramref name="dloss"/> has the target's shape (0 for ignored samples). Logits and target shapes as for the
    /// forward. One fused kernel; not recorded (no double backward).
    /// </summary>
    public static Tensor CrossEntropyGradient(Tensor logits, Tensor target, Tensor dloss, long ignoreIndex = -100, double labelSmoothing = 0.0)
    {
        const string op = "CrossEntropyBackward";
        var (rows, cols) = CheckCrossEntropy(op, logits, target, labelSmoothing);
        CheckSameDevice(op, logits, dloss);
        if (!dloss.Layout.Shape.AsSpan().SequenceEqual(target.Layout.Shape))
            throw new ShapeException(op, $"dloss {dloss.Describe()} must have the target's shape {Shape.Format(target.Layout.Shape)}");
        var acc = logits.DType == DType.Float64 ? DType.Float64 : DType.Float32;
        using var xd = ClassLastDense(logits);
        using var td = target.DenseRows(DType.Int64);
        using var gd = dloss.DenseRows(acc);
        var dm = Empty(op, xd.Layout.Shape, logits.DType, logits.Device);
        try
        {
            logits.Backend.CrossEntropyBackward(xd.Storage, td.Storage, gd.Storage, dm.Storage, rows, cols, ignoreIndex, labelSmoothing);
        }
        catch
        {
            dm.Dispose();
            throw;
        }
        if (logits.Rank < 3) return dm;
        // dm is [N, d1, ..., C]: view it back as [N, C, d1, ...].
        var inverse = new int[logits.Rank];
        inverse[0] = 0; inverse[1] = logits.Rank - 1;
        for (int i = 2; i < logits.Rank; i++) inverse[i] = i - 1;
        var r = dm.NewView(dm.Layout.Permute(inverse));
        dm.Dispose();
        return r;
    }

    /// <summary>
    /// Mean squared error (x − target)², reduced as asked, as <c>F.mse_loss</c>; the shapes must match (PyTorch
    /// broadcasts with a warning). Composed from differentiable ops.
    /// </summary>
    public Tensor MseLoss(Tensor target, Reduction reduction = Reduction.Mean)
    {
        const string op = "MseLoss";
        if (AutocastDispatch.TryAutocast(typeof(MseLossOp), this, target, out var ac)) using (ac) return ac[0].MseLoss(ac[1], reduction);
        if (!Layout.Shape.AsSpan().SequenceEqual(target.Layout.Shape))
            throw new ShapeException(op, $"input {Describe()} and target {target.Describe()} must have one shape");
        CheckSameDevice(op, this, target);
        using var d = Sub(target);
        var sq = d.Square();
        if (reduction == Reduction.None) return sq;
        using (sq) return reduction == Reduction.Sum ? sq.Sum() : sq.Mean();
    }

    /// <summary>
    /// Negative log likelihood of log-probabilities against Int64 class indices, as <c>F.nll_loss</c>: input [N, C]
    /// with target [N], [C] with a 0-d target, or [N, C, d1, ...] with target [N, d1, ...]; per sample
    /// −input[n, target[n], ...]. Targets equal to <paramref name="ignoreIndex"/> give 0 and are left out of the
    /// mean (NaN when all are ignored, as PyTorch); any other target outside [0, C) throws. Composed of recorded ops.
    /// </summary>
    public Tensor NllLoss(Tensor target, Reduction reduction = Reduction.Mean, long ignoreIndex = -100)
    {
        const string op = "NllLoss";
        if (AutocastDispatch.TryAutocast(typeof(NllLossOp), this, target, out var ac)) using (ac) return ac[0].NllLoss(ac[1], reduction, ignoreIndex);
        var (_, classes) = CheckCrossEntropy(op, this, target, 0);
        int cd = Rank == 1 ? 0 : 1;
        using var scope = NewScope();
        var keep = target.Ne(ignoreIndex);
        var zero = Scalar(0, DType.Int64, target.Device);
        var safe = Where(keep, target, zero);
        Tensor picked;
        try { picked = Gather(cd, safe.Unsqueeze(cd)).Squeeze(cd).Neg(); }
        catch (ShapeException e) { throw RenameFor(op, e, cd, $"{Describe()} (target {target.Describe()})"); }
        var masked = Where(keep, picked, Scalar(0, picked.DType, picked.Device));
        var result = reduction switch
        {
            Reduction.None => masked,
            Reduction.Sum => masked.Sum(),
            _ => masked.Sum() / keep.Sum().To(masked.DType),
        };
        return result.MoveToOuterScope();
    }

    /// <summary>The autocast key of <see cref="NllLoss"/>, which is composed of recorded ops and has no definition of its own.</summary>
    internal sealed class NllLossOp { NllLossOp() { } }

    /// <summary>The autocast key of <see cref="MseLoss"/>, which is composed of recorded ops and has no definition of its own.</summary>
    internal sealed class MseLossOp { MseLossOp() { } }

    // Validates dtypes, devices and shapes; returns the kernel's [rows, cols].
    static (int Rows, int Cols) CheckCrossEntropy(string op, Tensor logits, Tensor target, double labelSmoothing)
    {
        if (!logits.DType.IsFloatingPoint()) throw new DTypeException(op, $"logits must be floating point, got {logits.Describe()}");
        if (target.DType != DType.Int64) throw new DTypeException(op, $"target must hold int64 class indices, got {target.Describe()}");
        CheckSameDevice(op, logits, target);
        if (!(labelSmoothing >= 0 && labelSmoothing <= 1))
            throw new EngineException(op, $"labelSmoothing must be in [0, 1], got {labelSmoothing}");
        var ls = logits.Layout.Shape;
        if (logits.Rank == 0) throw new ShapeException(op, $"logits must have a class dim, got {logits.Describe()} (target {target.Describe()})");
        int[] expected = logits.Rank == 1 ? [] : [ls[0], .. ls[2..]];
        if (!target.Layout.Shape.AsSpan().SequenceEqual(expected))
            throw new ShapeException(op, $"logits {Shape.Format(ls)} and target {Shape.Format(target.Layout.Shape)} do not match: expected a target of shape {Shape.Format(expected)}");
        long rows = target.Numel;
        if (rows > int.MaxValue) throw new ShapeException(op, $"too many samples ({rows}) in {target.Describe()}");
        return ((int)rows, logits.Rank == 1 ? ls[0] : ls[1]);
    }

    // Logits with the class dim moved last, dense from element 0: [N, C, d1, ...] becomes [N, d1, ..., C].
    static Tensor ClassLastDense(Tensor logits)
    {
        if (logits.Rank < 3) return logits.DenseRows(logits.DType);
        var perm = new int[logits.Rank];
        perm[0] = 0;
        for (int i = 1; i < logits.Rank - 1; i++) perm[i] = i + 1;
        perm[^1] = 1;
        using var v = logits.NewView(logits.Layout.Permute(perm));
        return v.DenseRows(logits.DType);
    }

    // Σ of all elements of a contiguous tensor through the backend's reduction (float64 accumulation on the CPU), 0-d.
    static Tensor SumAll(Tensor t)
    {
        var s = Empty([], t.DType, t.Device);
        t.Backend.Reduce(ReduceOp.Sum, t.Storage, t.Layout, t.Rank, s.Storage, null, 0); // the whole layout is the block
        return s;
    }
}

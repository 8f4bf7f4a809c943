using Engine.Graph;
using Engine.Ops;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// Checks that this tensor may be written in place: not an overlapping (expanded) view, not a leaf that requires
    /// grad while grad mode is on (PyTorch's rule), and that the result dtype fits this tensor's.
    /// </summary>
    void CheckWritable(string op, DType resultType)
    {
        if (Layout.HasOverlap)
            throw new ShapeException(op, $"unsupported operation: more than one element of the written-to tensor refers to a single memory location ({Layout}); Clone() it first");
        // Autograd cannot rewrite the history of the tensor a view came from, so a write through a view of a tensor
        // in the graph would give wrong gradients for that base tensor: refuse it, as a clear error.
        if (IsView && !IsLeaf && RequiresGrad && GradMode.IsEnabled)
            throw new EngineException(op, "an in-place operation on a view of a tensor that requires grad is not supported; Clone() the view first, or write under GradMode.NoGrad()");
        if (IsLeaf && RequiresGrad && GradMode.IsEnabled)
            throw new EngineException(op, "a leaf tensor that requires grad is being used in an in-place operation; wrap the update in GradMode.NoGrad()");
        if (resultType.IsFloatingPoint() && !DType.IsFloatingPoint() || resultType == DType.Int64 && DType == DType.Bool)
            throw new DTypeException(op, $"result type {resultType.Name()} can't be cast to the desired output type {DType.Name()}");
    }

    /// <summary>
    /// Writes <paramref name="result"/> (of this tensor's shape) into this tensor's storage, bumps the version, and
    /// for a tensor in the graph takes over the result's history (autograd sees the in-place op as out-of-place).
    /// </summary>
    Tensor CommitInPlace(Tensor result)
    {
        Backend.Copy(result.Storage, result.Layout, Storage, Layout);
        Storage.BumpVersion();
        if (result.GradFn is not null) GradFn = result.GradFn;
        result.Dispose();
        return this;
    }

    Tensor BinaryInPlace<TOp>(TOp op, Tensor other, Func<Tensor, Tensor, GradFunction> backward) where TOp : struct, IBinaryOp
    {
        CheckSameDevice(op.Name + "InPlace", this, other);
        var rt = DTypes.ResultType(DType, Rank == 0, other.DType, other.Rank == 0);
        CheckWritable(op.Name + "InPlace", rt);
        if (other.Layout.TryBroadcastTo(Layout.Shape) is null) throw new ShapeException(op.Name + "InPlace",
            $"output with shape {Shape.Format(Layout.Shape)} doesn't match the broadcast shape of {Shape.Format(Layout.Shape)} and {Shape.Format(other.Layout.Shape)}");
        if (!RequiresGrad && !other.RequiresGrad || !GradMode.IsEnabled)
        {
            // The common case (optimizer updates, no graph): one kernel writing straight into this tensor.
            using var oc = other.DType == DType && !ReadsOverlapping(other) ? other.Alias() : other.CastCopy(DType, Device);
            Backend.Binary(op, Storage, Layout, oc.Storage, oc.Layout.TryBroadcastTo(Layout.Shape)!, Storage, Layout);
            Storage.BumpVersion();
            return this;
        }
        // The op saves its operands for backward, and the commit overwrites this tensor's storage: it computes from a
        // copy of the current values (PyTorch saves the original self likewise). The operand itself (not an alias,
        // which would drop its requires-grad) goes in, so its gradient edge is recorded.
        using var self = Clone();
        var o = other.DType != DType ? other.To(DType) : ReferenceEquals(other.Storage, Storage) ? other.Clone() : other;
        try { return CommitInPlace(BinaryOp(op, self, o, backward)); }
        finally { if (!ReferenceEquals(o, other)) o.Dispose(); }
    }

    // An operand sharing this tensor's storage under another layout (x += x.T, x *= x[0]) would be read after the loop
    // overwrote some of its elements: it is copied first, so the result is the out-of-place one.
    bool ReadsOverlapping(Tensor other)
    {
        if (!ReferenceEquals(other.Storage, Storage)) return false;
        var l = other.Layout.TryBroadcastTo(Layout.Shape);
        return l is null || l.Offset != Layout.Offset || !l.Strides.SequenceEqual(Layout.Strides);
    }

    /// <summary>x += other (broadcast into x). Returns this.</summary>
    public Tensor AddInPlace(Tensor other) => BinaryInPlace(new AddOp(), other, AddBackward.Create);
    /// <summary>x += alpha·other. Returns this.</summary>
    public Tensor AddInPlace(Tensor other, double alpha)
    {
        if (alpha == 1) return AddInPlace(other);
        using var s = other.Mul(alpha);
        return AddInPlace(s);
    }
    /// <summary>x −= other. Returns this.</summary>
    public Tensor SubInPlace(Tensor other) => BinaryInPlace(new SubOp(), other, SubBackward.Create);
    /// <summary>x ·= other. Returns this.</summary>
    public Tensor MulInPlace(Tensor other) => BinaryInPlace(new MulOp(), other, MulBackward.Create);
    /// <summary>x /= other. Returns this.</summary>
    public Tensor DivInPlace(Tensor other)
    {
        if (!DType.IsFloatingPoint()) throw new DTypeException("DivInPlace", $"result type float32 can't be cast to the desired output type {DType.Name()}");
        return BinaryInPlace(new DivOp(), other, DivBackward.Create);
    }

    Tensor UnaryInPlace<TOp>(string name, TOp op, DType resultType) where TOp : struct, IDifferentiableUnaryOp
    {
        CheckWritable(name, resultType);
        if (!RequiresGrad || !GradMode.IsEnabled)
        {
            Backend.Unary(op, Storage, Layout, Storage, Layout);
            Storage.BumpVersion();
            return this;
        }
        // Apply saves its input for backward; the commit would overwrite it, so compute from a copy.
        using var self = Clone();
        return CommitInPlace(self.ApplyCore(op, floatResult: false));
    }

    /// <summary>Applies a unary op in place (as PyTorch's <c>gelu_</c>, <c>exp_</c>...). Returns this.</summary>
    public Tensor ApplyInPlace<TOp>(TOp op) where TOp : struct, IDifferentiableUnaryOp => UnaryInPlace(op.Name + "InPlace", op, DType);

    /// <summary>x += s. Returns this.</summary>
    public Tensor AddInPlace(double s) => UnaryInPlace("AddInPlace", new AffineOp(1, s), DTypes.WithScalar(DType, IsIntegral(s)));
    /// <summary>x −= s. Returns this.</summary>
    public Tensor SubInPlace(double s) => UnaryInPlace("SubInPlace", new AffineOp(1, -s), DTypes.WithScalar(DType, IsIntegral(s)));
    /// <summary>x ·= s. Returns this.</summary>
    public Tensor MulInPlace(double s) => UnaryInPlace("MulInPlace", new AffineOp(s, -0.0), DTypes.WithScalar(DType, IsIntegral(s)));
    /// <summary>x /= s. Returns this.</summary>
    public Tensor DivInPlace(double s)
    {
        using var t = Scalar(s, DType.IsFloatingPoint() ? DType : DType.Float32, Device);
        return DivInPlace(t);
    }
    /// <summary>Clamps into [min, max] in place. Returns this.</summary>
    public Tensor ClampInPlace(double? min = null, double? max = null)
    {
        if (min is null && max is null) throw new EngineException("ClampInPlace", "at least one of min and max must be given");
        return UnaryInPlace("ClampInPlace", new ClampOp(min ?? double.NegativeInfinity, max ?? double.PositiveInfinity), DType);
    }

    /// <summary>Sets every element to <paramref name="value"/>. Returns this.</summary>
    public Tensor FillInPlace(double value)
    {
        CheckWritable("FillInPlace", DType);
        if (RequiresGrad && GradMode.IsEnabled)
        {
            using var v = Full(Layout.Shape, value, DType, Device);
            return CommitInPlace(v.Alias().Record(new FillBackward(), this));
        }
        Backend.Fill(Storage, Layout, value);
        Storage.BumpVersion();
        return this;
    }

    /// <summary>Sets every element to zero. Returns this.</summary>
    public Tensor ZeroInPlace() => FillInPlace(0);

    /// <summary>Copies <paramref name="source"/> (broadcast, converted to this dtype, from any device) into this tensor. Returns this.</summary>
    public Tensor CopyInPlace(Tensor source)
    {
        CheckWritable("CopyInPlace", DType);
        if (source.Layout.TryBroadcastTo(Layout.Shape) is null)
            throw new ShapeException("CopyInPlace", $"source {Shape.Format(source.Layout.Shape)} cannot be broadcast to {Shape.Format(Layout.Shape)}");
        if (GradMode.IsEnabled && (RequiresGrad || source.RequiresGrad))
        {
            using var moved = source.To(Device);
            using var cast = moved.To(DType);
            using var e = cast.Expand(Layout.Shape);
            return CommitInPlace(e.Contiguous());
        }
        using var s = source.Device == Device && !ReadsOverlapping(source) ? source.Alias() : source.CastCopy(source.DType, Device);
        Backend.Copy(s.Storage, s.Layout.TryBroadcastTo(Layout.Shape)!, Storage, Layout);
        Storage.BumpVersion();
        return this;
    }

    /// <summary>Fills <paramref name="value"/> where <paramref name="mask"/> is true, in place. Returns this.</summary>
    public Tensor MaskedFillInPlace(Tensor mask, double value)
    {
        CheckWritable("MaskedFillInPlace", DType);
        using var r = MaskedFill(mask, value);
        if (RequiresGrad && GradMode.IsEnabled) return CommitInPlace(r.Alias().RecordIdentity(r));
        Backend.Copy(r.Storage, r.Layout, Storage, Layout);
        Storage.BumpVersion();
        return this;
    }

    /// <summary>FillInPlace on a tensor in the graph: the old values no longer matter.</summary>
    internal sealed class FillBackward : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad) => [grad.ZerosLike()];
    }
}

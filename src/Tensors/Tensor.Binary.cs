using Engine.Autocast;
using Engine.Graph;
using Engine.Ops;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// Applies a binary op with broadcasting and type promotion (a 0-d operand counts as a scalar, as
    /// <c>torch.result_type</c>), recording it for autograd with the definition <paramref name="backward"/> builds
    /// from the promoted operands (null: not differentiable, as the comparisons).
    /// </summary>
    internal static Tensor BinaryOp<TOp>(TOp op, Tensor a, Tensor b, Func<Tensor, Tensor, GradFunction>? backward, bool trueDivision = false)
        where TOp : struct, IBinaryOp
    {
        CheckSameDevice(op.Name, a, b);
        var dt = DTypes.ResultType(a.DType, a.Rank == 0, b.DType, b.Rank == 0);
        if (trueDivision && !dt.IsFloatingPoint()) dt = DType.Float32;
        // Operands of one shape (most calls) need no broadcast layouts: the shape object is immutable and reused.
        bool same = a.Layout.Shape.Equals(b.Layout.Shape);
        Shape shape = same ? a.Layout.Shape : new Shape(Shape.Broadcast(a.Layout.Shape, b.Layout.Shape, op.Name));
        var ac = a.DType == dt ? a : a.To(dt);
        var bc = b.DType == dt ? b : b.To(dt);
        try
        {
            var y = EmptyOfShape(op.Name, shape, op.IsComparison ? DType.Bool : dt, a.Device);
            a.Backend.Binary(op, ac.Storage, same ? ac.Layout : ac.Layout.TryBroadcastTo(shape)!, bc.Storage, same ? bc.Layout : bc.Layout.TryBroadcastTo(shape)!, y.Storage, y.Layout);
            if (backward is null || !ShouldRecord(ac, bc)) return y;
            return y.Record(backward(ac, bc), ac, bc);
        }
        finally
        {
            if (!ReferenceEquals(ac, a)) ac.Dispose();
            if (!ReferenceEquals(bc, b)) bc.Dispose();
        }
    }

    /// <summary>Applies a binary op with broadcasting, without promotion or recording (both operands of one dtype).</summary>
    public static Tensor Map<TOp>(TOp op, Tensor a, Tensor b) where TOp : struct, IBinaryOp
    {
        CheckSameDevice(op.Name, a, b);
        if (a.DType != b.DType) throw new DTypeException(op.Name, $"expected one dtype, got {a.DType.Name()} and {b.DType.Name()}");
        var shape = Shape.Broadcast(a.Layout.Shape, b.Layout.Shape, op.Name);
        var y = Empty(op.Name, shape, op.IsComparison ? DType.Bool : a.DType, a.Device);
        a.Backend.Binary(op, a.Storage, a.Layout.TryBroadcastTo(shape)!, b.Storage, b.Layout.TryBroadcastTo(shape)!, y.Storage, y.Layout);
        return y;
    }

    /// <summary>A 0-d tensor for a C# scalar combined with this tensor: integral scalars keep integer tensors integral.</summary>
    internal Tensor ScalarLike(double value) =>
        Scalar(value, DTypes.WithScalar(DType, value == Math.Floor(value) && !double.IsInfinity(value)), Device);

    // An affine map keeps the tensor's dtype when the scalar fits it; otherwise the tensor is promoted first.
    Tensor AffineScalar(double scale, double shift)
    {
        var dt = DTypes.WithScalar(DTypes.WithScalar(DType, IsIntegral(scale)), IsIntegral(shift));
        if (DType == DType.Bool) dt = IsIntegral(scale) && IsIntegral(shift) ? DType.Int64 : DType.Float32;
        if (dt != DType)
        {
            using var p = To(dt);
            return p.Apply(new AffineOp(scale, shift), floatResult: false);
        }
        return Apply(new AffineOp(scale, shift), floatResult: false);
    }

    static bool IsIntegral(double v) => v == Math.Floor(v) && !double.IsInfinity(v);

    /// <summary>a + b, broadcast.</summary>
    public Tensor Add(Tensor other) => BinaryOp(new AddOp(), this, other, AddBackward.Create);
    /// <summary>a + alpha·b (as <c>torch.add(a, b, alpha=...)</c>).</summary>
    public Tensor Add(Tensor other, double alpha)
    {
        if (alpha == 1) return Add(other);
        using var s = other.Mul(alpha);
        return Add(s);
    }
    /// <summary>a − b, broadcast.</summary>
    public Tensor Sub(Tensor other) => BinaryOp(new SubOp(), this, other, SubBackward.Create);
    /// <summary>a · b, broadcast.</summary>
    public Tensor Mul(Tensor other) => BinaryOp(new MulOp(), this, other, MulBackward.Create);
    /// <summary>a / b, broadcast (true division: integer operands give float32).</summary>
    public Tensor Div(Tensor other) => BinaryOp(new DivOp(), this, other, DivBackward.Create, trueDivision: true);
    /// <summary>aᵇ, broadcast.</summary>
    public Tensor Pow(Tensor exponent)
    {
        if (AutocastDispatch.TryAutocast(typeof(PowBackward), this, exponent, out var ac)) using (ac) return ac[0].Pow(ac[1]);
        return BinaryOp(new PowOp(), this, exponent, PowBackward.Create);
    }
    /// <summary>Elementwise maximum (NaN propagates).</summary>
    public Tensor Maximum(Tensor other) => BinaryOp(new MaximumOp(), this, other, MaximumBackward.Create);
    /// <summary>Elementwise minimum (NaN propagates).</summary>
    public Tensor Minimum(Tensor other) => BinaryOp(new MinimumOp(), this, other, MinimumBackward.Create);

    /// <summary>x + s.</summary>
    public Tensor Add(double s) => AffineScalar(1, s);
    /// <summary>x − s.</summary>
    public Tensor Sub(double s) => AffineScalar(1, -s);
    /// <summary>x · s.</summary>
    public Tensor Mul(double s) => AffineScalar(s, -0.0); // −0: adding it keeps the sign of a zero product
    /// <summary>x / s.</summary>
    public Tensor Div(double s)
    {
        if (!DType.IsFloatingPoint())
        {
            using var f = To(DType.Float32);
            return f.Div(s);
        }
        using var st = Scalar(s, DType, Device);
        return Div(st);
    }

    /// <summary>x == y elementwise (Bool).</summary>
    public Tensor Eq(Tensor other) => BinaryOp(new CompareOp(Comparison.Eq), this, other, null);
    /// <summary>x != y elementwise (Bool).</summary>
    public Tensor Ne(Tensor other) => BinaryOp(new CompareOp(Comparison.Ne), this, other, null);
    /// <summary>x &lt; y elementwise (Bool).</summary>
    public Tensor Lt(Tensor other) => BinaryOp(new CompareOp(Comparison.Lt), this, other, null);
    /// <summary>x &lt;= y elementwise (Bool).</summary>
    public Tensor Le(Tensor other) => BinaryOp(new CompareOp(Comparison.Le), this, other, null);
    /// <summary>x &gt; y elementwise (Bool).</summary>
    public Tensor Gt(Tensor other) => BinaryOp(new CompareOp(Comparison.Gt), this, other, null);
    /// <summary>x &gt;= y elementwise (Bool).</summary>
    public Tensor Ge(Tensor other) => BinaryOp(new CompareOp(Comparison.Ge), this, other, null);

    Tensor CompareScalar(Comparison c, double s)
    {
        using var t = ScalarLike(s);
        return BinaryOp(new CompareOp(c), this, t, null);
    }

    /// <summary>x == s (Bool).</summary>
    public Tensor Eq(double s) => CompareScalar(Comparison.Eq, s);
    /// <summary>x != s (Bool).</summary>
    public Tensor Ne(double s) => CompareScalar(Comparison.Ne, s);
    /// <summary>x &lt; s (Bool).</summary>
    public Tensor Lt(double s) => CompareScalar(Comparison.Lt, s);
    /// <summary>x &lt;= s (Bool).</summary>
    public Tensor Le(double s) => CompareScalar(Comparison.Le, s);
    /// <summary>x &gt; s (Bool).</summary>
    public Tensor Gt(double s) => CompareScalar(Comparison.Gt, s);
    /// <summary>x &gt;= s (Bool).</summary>
    public Tensor Ge(double s) => CompareScalar(Comparison.Ge, s);

    /// <summary>cond ? a : b elementwise, broadcasting all three, as <c>torch.where</c>.</summary>
    public static Tensor Where(Tensor condition, Tensor a, Tensor b)
    {
        const string op = "Where";
        if (condition.DType != DType.Bool) throw new DTypeException(op, $"condition must be bool, got {condition.DType.Name()}");
        CheckSameDevice(op, condition, a); CheckSameDevice(op, a, b);
        var dt = DTypes.ResultType(a.DType, a.Rank == 0, b.DType, b.Rank == 0);
        var shape = Shape.Broadcast(Shape.Broadcast(condition.Layout.Shape, a.Layout.Shape, op), b.Layout.Shape, op);
        var ac = a.DType == dt ? a : a.To(dt);
        var bc = b.DType == dt ? b : b.To(dt);
        try
        {
            var y = Empty(op, shape, dt, a.Device);
            a.Backend.Where(condition.Storage, condition.Layout.TryBroadcastTo(shape)!, ac.Storage, ac.Layout.TryBroadcastTo(shape)!,
                bc.Storage, bc.Layout.TryBroadcastTo(shape)!, y.Storage, y.Layout);
            return ShouldRecord(ac, bc) ? y.Record(new WhereBackward(condition), ac, bc) : y;
        }
        finally
        {
            if (!ReferenceEquals(ac, a)) ac.Dispose();
            if (!ReferenceEquals(bc, b)) bc.Dispose();
        }
    }

    /// <summary>This tensor with <paramref name="value"/> where <paramref name="mask"/> is true (mask broadcasts).</summary>
    public Tensor MaskedFill(Tensor mask, double value)
    {
        if (mask.DType != DType.Bool) throw new DTypeException("MaskedFill", $"mask must be bool, got {mask.DType.Name()}");
        if (mask.Layout.TryBroadcastTo(Layout.Shape) is null)
            throw new ShapeException("MaskedFill", $"mask {Shape.Format(mask.Layout.Shape)} must broadcast to the tensor's shape {Shape.Format(Layout.Shape)}");
        using var v = Scalar(value, DType, Device);
        return Where(mask, v, this);
    }

    // Autograd definitions of the binary ops, recorded on the operands after type promotion (one dtype). A backward
    // returns gradients at the broadcast output shape; the executor sums each back to its operand's shape. Saved
    // operands are read only when the other operand needs a gradient, so an in-place update of an operand that is
    // not needed does not trip the saved-tensor version check.

    internal sealed class AddBackward : GradFunction
    {
        internal static GradFunction Create(Tensor a, Tensor b) => new AddBackward();
        protected internal override Tensor?[] Backward(Tensor g) => [g, g];
    }

    internal sealed class SubBackward : GradFunction
    {
        internal static GradFunction Create(Tensor a, Tensor b) => new SubBackward();
        protected internal override Tensor?[] Backward(Tensor g) => [g, NeedsGrad(1) ? -g : null];
    }

    internal sealed class MulBackward : GradFunction
    {
        readonly SavedTensor _a, _b;
        MulBackward(Tensor a, Tensor b) { _a = Save(a); _b = Save(b); }
        internal static GradFunction Create(Tensor a, Tensor b) => new MulBackward(a, b);
        protected internal override Tensor?[] Backward(Tensor g) =>
            [NeedsGrad(0) ? g * _b.Value : null, NeedsGrad(1) ? g * _a.Value : null];
    }

    // d(a/b)/da = 1/b, d(a/b)/db = −a/b².
    internal sealed class DivBackward : GradFunction
    {
        readonly SavedTensor _a, _b;
        DivBackward(Tensor a, Tensor b) { _a = Save(a); _b = Save(b); }
        internal static GradFunction Create(Tensor a, Tensor b) => new DivBackward(a, b);
        protected internal override Tensor?[] Backward(Tensor g)
        {
            var b = _b.Value;
            var gb = g / b;
            return [gb, NeedsGrad(1) ? -(gb * _a.Value / b) : null];
        }
    }

    // d(aᵇ)/da = b·aᵇ⁻¹ (0 where b = 0, as PyTorch, so 0⁰ does not give NaN); d(aᵇ)/db = aᵇ·ln a (0 where a = 0 and
    // b ≥ 0, as PyTorch, where the limit is finite).
    internal sealed class PowBackward : GradFunction
    {
        readonly SavedTensor _a, _b;
        PowBackward(Tensor a, Tensor b) { _a = Save(a); _b = Save(b); }
        internal static GradFunction Create(Tensor a, Tensor b) => new PowBackward(a, b);
        protected internal override Tensor?[] Backward(Tensor g)
        {
            var (a, b) = (_a.Value, _b.Value);
            var zero = Scalar(0, g.DType, g.Device);
            Tensor? da = null, db = null;
            if (NeedsGrad(0)) da = Where(b.Eq(0.0), zero, a.Pow(b - 1.0) * b * g);
            if (NeedsGrad(1))
            {
                var t = a.Pow(b) * a.Log() * g;
                db = Where(a.Eq(0.0), Where(b.Ge(0.0), zero, t), t);
            }
            return [da, db];
        }
    }

    // The gradient goes to the larger (smaller) operand; ties split it half and half, as PyTorch.
    internal sealed class MaximumBackward : GradFunction
    {
        readonly SavedTensor _a, _b;
        MaximumBackward(Tensor a, Tensor b) { _a = Save(a); _b = Save(b); }
        internal static GradFunction Create(Tensor a, Tensor b) => new MaximumBackward(a, b);
        protected internal override Tensor?[] Backward(Tensor g) => ExtremumGradients(_a.Value, _b.Value, g, max: true);
    }

    internal sealed class MinimumBackward : GradFunction
    {
        readonly SavedTensor _a, _b;
        MinimumBackward(Tensor a, Tensor b) { _a = Save(a); _b = Save(b); }
        internal static GradFunction Create(Tensor a, Tensor b) => new MinimumBackward(a, b);
        protected internal override Tensor?[] Backward(Tensor g) => ExtremumGradients(_a.Value, _b.Value, g, max: false);
    }

    static Tensor?[] ExtremumGradients(Tensor a, Tensor b, Tensor g, bool max)
    {
        var zero = Scalar(0, g.DType, g.Device);
        var shared = Where(a.Eq(b), g * 0.5, g);
        return [Where(max ? a.Lt(b) : a.Gt(b), zero, shared), Where(max ? b.Lt(a) : b.Gt(a), zero, shared)];
    }

    // Inputs [a, b]; the condition is saved.
    internal sealed class WhereBackward : GradFunction
    {
        readonly SavedTensor _condition;
        internal WhereBackward(Tensor condition) { _condition = Save(condition); }
        protected internal override Tensor?[] Backward(Tensor g)
        {
            var zero = Scalar(0, g.DType, g.Device);
            var c = _condition.Value;
            return [NeedsGrad(0) ? Where(c, g, zero) : null, NeedsGrad(1) ? Where(c, zero, g) : null];
        }
    }

#pragma warning disable CS1591 // operators mirror the methods above
    public static Tensor operator +(Tensor a, Tensor b) => a.Add(b);
    public static Tensor operator -(Tensor a, Tensor b) => a.Sub(b);
    public static Tensor operator *(Tensor a, Tensor b) => a.Mul(b);
    public static Tensor operator /(Tensor a, Tensor b) => a.Div(b);
    public static Tensor operator +(Tensor a, double s) => a.Add(s);
    public static Tensor operator -(Tensor a, double s) => a.Sub(s);
    public static Tensor operator *(Tensor a, double s) => a.Mul(s);
    public static Tensor operator /(Tensor a, double s) => a.Div(s);
    public static Tensor operator +(double s, Tensor a) => a.Add(s);
    public static Tensor operator -(double s, Tensor a) => a.AffineScalar(-1, s);
    public static Tensor operator *(double s, Tensor a) => a.Mul(s);
    public static Tensor operator /(double s, Tensor a) { using var t = a.ScalarLike(s); return t.Div(a); }
    public static Tensor operator -(Tensor a) => a.Neg();
    public static Tensor operator <(Tensor a, Tensor b) => a.Lt(b);
    public static Tensor operator >(Tensor a, Tensor b) => a.Gt(b);
    public static Tensor operator <=(Tensor a, Tensor b) => a.Le(b);
    public static Tensor operator >=(Tensor a, Tensor b) => a.Ge(b);
    public static Tensor operator <(Tensor a, double s) => a.Lt(s);
    public static Tensor operator >(Tensor a, double s) => a.Gt(s);
    public static Tensor operator <=(Tensor a, double s) => a.Le(s);
    public static Tensor operator >=(Tensor a, double s) => a.Ge(s);
#pragma warning restore CS1591
}

using Engine.Autocast;
using Engine.Graph;
using Engine.Ops;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// Applies a unary op. Integer and Bool inputs of a float-valued function are promoted to float32 first (as
    /// PyTorch's <c>exp</c> of an int tensor). Recorded for autograd with the op's derivative. Inside an autocast
    /// region the policy table decides the compute dtype by the op's name (Exp, Log, PowScalar, Rsqrt run in float32).
    /// </summary>
    public Tensor Apply<TOp>(TOp op, bool floatResult = true) where TOp : struct, IDifferentiableUnaryOp
    {
        if (AutocastDispatch.TryAutocast(typeof(TOp), this, out var ac)) using (ac) return ac[0].Apply(op, floatResult);
        return ApplyCore(op, floatResult);
    }

    /// <summary>Apply without autocast: what in-place ops use (they keep their tensor's dtype).</summary>
    internal Tensor ApplyCore<TOp>(TOp op, bool floatResult = true) where TOp : struct, IDifferentiableUnaryOp
    {
        if (floatResult && !DType.IsFloatingPoint())
        {
            using var f = To(DType.Float32);
            return f.Apply(op);
        }
        var y = EmptyOfShape(op.Name, Layout.Shape, DType, Device);
        Backend.Unary(op, Storage, Layout, y.Storage, y.Layout);
        if (!ShouldRecord(this)) return y;
        // a·x + b needs only a, not x: saving x would make the in-place forms (x += 1, x *= 2 on a tensor in the
        // graph, which overwrite x) fail the saved-tensor version check for nothing.
        if (typeof(TOp) == typeof(AffineOp)) return y.Record(new AffineBackward(((AffineOp)(object)op).Scale), this);
        return y.Record(new UnaryBackward<TOp>(op, this), this);
    }

    /// <summary>
    /// The backward of every elementwise unary op: dx = dy · f'(x), one generic kernel (<see cref="UnaryGradOp{TOp}"/>)
    /// from the op struct's <c>Derivative</c> (src/Tensors/Ops/UnaryOps.cs). The autocast policy keys unary ops by
    /// their op struct.
    /// </summary>
    internal sealed class UnaryBackward<TOp> : GradFunction where TOp : struct, IDifferentiableUnaryOp
    {
        readonly TOp _op;
        readonly SavedTensor _x;
        public UnaryBackward(TOp op, Tensor x) { _op = op; _x = Save(x); }
        public override string Name => _op.Name;
        protected internal override Tensor?[] Backward(Tensor grad) => [Map(new UnaryGradOp<TOp>(_op), _x.Value, grad)];
    }

    /// <summary>d(a·x + b)/dx = a.</summary>
    internal sealed class AffineBackward(double scale) : GradFunction
    {
        public override string Name => "Affine";
        protected internal override Tensor?[] Backward(Tensor grad) => [scale == 1 ? grad : Map(new AffineOp(scale, 0), grad)];
    }

    /// <summary>Applies a unary op without recording it.</summary>
    public static Tensor Map<TOp>(TOp op, Tensor x) where TOp : struct, IUnaryOp
    {
        var y = Empty(op.Name, x.Layout.Shape, x.DType, x.Device);
        x.Backend.Unary(op, x.Storage, x.Layout, y.Storage, y.Layout);
        return y;
    }

    /// <summary>−x.</summary>
    public Tensor Neg() => Apply(new NegOp(), floatResult: false);
    /// <summary>|x|.</summary>
    public Tensor Abs() => Apply(new AbsOp(), floatResult: false);
    /// <summary>eˣ.</summary>
    public Tensor Exp() => Apply(new ExpOp());
    /// <summary>ln x.</summary>
    public Tensor Log() => Apply(new LogOp());
    /// <summary>√x.</summary>
    public Tensor Sqrt() => Apply(new SqrtOp());
    /// <summary>1/√x.</summary>
    public Tensor Rsqrt() => Apply(new RsqrtOp());
    /// <summary>sin x.</summary>
    public Tensor Sin() => Apply(new SinOp());
    /// <summary>cos x.</summary>
    public Tensor Cos() => Apply(new CosOp());
    /// <summary>tanh x.</summary>
    public Tensor Tanh() => Apply(new TanhOp());
    /// <summary>1/(1+e⁻ˣ).</summary>
    public Tensor Sigmoid() => Apply(new SigmoidOp());
    /// <summary>max(x, 0).</summary>
    public Tensor Relu() => Apply(new ReluOp(), floatResult: false);
    /// <summary>GELU: exact (erf) by default, or the tanh approximation (PyTorch's <c>approximate="tanh"</c>).</summary>
    public Tensor Gelu(bool approximateTanh = false) => approximateTanh ? Apply(new GeluTanhOp()) : Apply(new GeluOp());
    /// <summary>erf x (PyTorch's <c>torch.erf</c>); integer inputs give float32. Autocast keeps the input's type.</summary>
    public Tensor Erf() => Apply(new ErfOp());
    /// <summary>x·σ(x).</summary>
    public Tensor Silu() => Apply(new SiluOp());
    /// <summary>xᵖ for a scalar p.</summary>
    public Tensor Pow(double exponent) => Apply(new PowScalarOp(exponent), floatResult: exponent != Math.Floor(exponent) || exponent < 0);
    /// <summary>x²</summary>
    public Tensor Square() => Pow(2);
    /// <summary>Clamps into [min, max]; null leaves that side open.</summary>
    public Tensor Clamp(double? min = null, double? max = null)
    {
        if (min is null && max is null) throw new EngineException("Clamp", "at least one of min and max must be given");
        return Apply(new ClampOp(min ?? double.NegativeInfinity, max ?? double.PositiveInfinity), floatResult: false);
    }
}

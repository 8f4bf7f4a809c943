using Engine.Autograd.Nn;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Every differentiable op's backward in the dtypes training runs in, against the same op run in float64.
/// <para>
/// Why this exists: the gradient checks (GradCheck, finite differences) run in float64, which takes each op struct's
/// <c>double Derivative</c>; float32, bfloat16 and float16 training take the separate <c>float Derivative</c>, and
/// the CUDA kernels share that struct with the CPU, so a wrong float derivative passed every test. Here each case's
/// inputs are drawn once (fixed seed), rounded to the dtype under test, and run forward and backward twice: in that
/// dtype and, on the same rounded values, in float64. Every input gradient (and the output) must match.
/// </para>
/// <para>
/// Tolerance, per element: |a − r| ≤ tol·(|r| + max|r|). A single op rounds its result once in the dtype (relative
/// error u: 2⁻²⁴ float32, 2⁻¹¹ float16, 2⁻⁸ bfloat16); a backward that chains a few rounded steps (forward output
/// saved in the dtype, a rounded intermediate, the rounded result) stays within ~4u of each term, and terms that cancel
/// leave an error relative to the largest gradient, not the element, hence the max|r| term. tol ≈ 5u for the half
/// types (bf16 2e-2, f16 2.5e-3) and 1e-5 for float32, whose reductions accumulate a few dozen roundings. A derivative
/// off by 10% moves the largest element by 0.1·max|r| &gt; 2·tol·max|r|, so it fails in every dtype.
/// </para>
/// Adding an op is one line in <see cref="Cases"/>.
/// </summary>
[TestFixture]
[NonParallelizable] // the CUDA fixture that shares the table switches the process to ILGPU's CPU accelerator
public class DTypeBackwardTests
{
    /// <summary>The dtypes checked against float64.</summary>
    public static readonly DType[] DTypes = [DType.Float32, DType.BFloat16, DType.Float16];

    /// <summary>Every (case, dtype) pair, named "Case [dtype]".</summary>
    public static IEnumerable<TestCaseData> CaseData() =>
        from c in Cases from dt in DTypes
        select new TestCaseData(c, dt).SetName($"{c.Name} [{dt.Name()}]");

    [TestCaseSource(nameof(CaseData))]
    public void Backward_MatchesFloat64(DTypeCase c, DType dtype) => DTypeBackward.Check(c, dtype, Device.Cpu);

    // ---- the table ----

    static In X(params int[] s) => new(s);
    static In Pos(params int[] s) => new(s, Vals.Positive);
    static In Dist(params int[] s) => new(s, Vals.Distinct);
    static In Tr(params int[] s) => new(s, View: InView.Transposed);
    static In Strided(params int[] s) => new(s, View: InView.Strided);
    static In Idx(long[] v, params int[] s) => new(s, Vals.Int64, Ints: v);
    static In Mask(bool[] v, params int[] s) => new(s, Vals.Bool, Bools: v);
    static DTypeCase C(string name, Func<Tensor[], Tensor> f, params In[] inputs) => new(name, f, inputs);

    static readonly long[] Targets = [3, 0, 4, 1];
    static readonly bool[] Cond12 = [true, false, false, true, true, false, true, false, false, true, true, true];

    /// <summary>One line per op (and per variant that takes another path: broadcasting, a non-contiguous input, a size-1 dim).</summary>
    public static readonly DTypeCase[] Cases =
    [
        // unary activations and math functions (src/Tensors/Ops/UnaryOps.cs)
        C("Neg", x => -x[0], X(3, 4)),
        C("Abs", x => x[0].Abs(), Dist(3, 4)),
        C("Exp", x => x[0].Exp(), X(3, 4)),
        C("Exp (transposed input)", x => x[0].Exp(), Tr(3, 4)),
        C("Log", x => x[0].Log(), Pos(3, 4)),
        C("Sqrt", x => x[0].Sqrt(), Pos(3, 4)),
        C("Rsqrt", x => x[0].Rsqrt(), Pos(3, 4)),
        C("Sin", x => x[0].Sin(), X(3, 4)),
        C("Cos", x => x[0].Cos(), X(3, 4)),
        C("Tanh", x => x[0].Tanh(), X(3, 4)),
        C("Sigmoid", x => x[0].Sigmoid(), X(3, 4)),
        C("Relu", x => x[0].Relu(), Dist(3, 4)),
        C("Gelu", x => x[0].Gelu(), X(3, 4)),
        C("Gelu (strided input)", x => x[0].Gelu(), Strided(3, 4)),
        C("GeluTanh", x => x[0].Gelu(approximateTanh: true), X(3, 4)),
        C("Silu", x => x[0].Silu(), X(3, 4)),
        C("PowScalar 3", x => x[0].Pow(3), X(3, 4)),
        C("PowScalar 0.5", x => x[0].Pow(0.5), Pos(3, 4)),
        C("PowScalar -1.5", x => x[0].Pow(-1.5), Pos(3, 4)),
        C("Square", x => x[0].Square(), X(3, 4)),
        C("Clamp", x => x[0].Clamp(-0.5, 0.75), Dist(3, 4)),
        C("Clamp min", x => x[0].Clamp(min: 0.25), Dist(3, 4)),
        // scalar arithmetic (AffineOp and the scalar-tensor operators)
        C("Add scalar", x => x[0] + 2.5, X(3, 4)),
        C("Sub scalar", x => x[0] - 1.25, X(3, 4)),
        C("Mul scalar", x => x[0] * -1.5, X(3, 4)),
        C("Div scalar", x => x[0] / 4, X(3, 4)),
        C("Scalar minus tensor", x => 2 - x[0], X(3, 4)),
        C("Scalar over tensor", x => 2 / x[0], Pos(3, 4)),
        // binary arithmetic, with broadcasting on either side
        C("Add", x => x[0] + x[1], X(3, 4), X(3, 4)),
        C("Add broadcast", x => x[0] + x[1], X(2, 1, 4), X(3, 1)),
        C("Add alpha", x => x[0].Add(x[1], 0.5), X(3, 4), X(4)),
        C("Sub broadcast", x => x[0] - x[1], X(3, 1), X(3, 4)),
        C("Mul broadcast", x => x[0] * x[1], X(3, 4), X(3, 1)),
        C("Mul (transposed inputs)", x => x[0] * x[1], Tr(3, 4), X(4)),
        C("Div broadcast", x => x[0] / x[1], X(3, 4), Pos(4)),
        C("Pow tensor", x => x[0].Pow(x[1]), Pos(3, 4), X(4)),
        C("Maximum", x => x[0].Maximum(x[1]), Dist(3, 4), Dist(3, 4)),
        C("Minimum broadcast", x => x[0].Minimum(x[1]), Dist(3, 4), Dist(4)),
        C("Where", x => Tensor.Where(x[2], x[0], x[1]), X(3, 4), X(4), Mask(Cond12, 3, 4)),
        C("MaskedFill", x => x[0].MaskedFill(x[1], -1), X(3, 4), Mask(Cond12, 3, 4)),
        // reductions
        C("Sum all", x => x[0].Sum(), X(3, 4)),
        C("Sum dim", x => x[0].Sum(1), X(3, 4)),
        C("Sum dims keepdim", x => x[0].Sum([0, 2], keepDim: true), X(2, 3, 4)),
        C("Sum size-1 dim", x => x[0].Sum(1), X(3, 1, 4)),
        C("Mean all", x => x[0].Mean(), X(3, 4)),
        C("Mean dim keepdim", x => x[0].Mean(-1, keepDim: true), Tr(3, 4)),
        C("Max all", x => x[0].Max(), Dist(3, 4)),
        C("Min all", x => x[0].Min(), Dist(3, 4)),
        C("Max dim", x => x[0].Max(1).Values, Dist(3, 4)),
        C("Min dim keepdim", x => x[0].Min(0, keepDim: true).Values, Dist(3, 4)),
        C("Amax dims", x => x[0].Amax([0, 2]), Dist(2, 3, 4)),
        C("Amin dim keepdim", x => x[0].Amin(1, keepDim: true), Dist(3, 4)),
        C("Max all keepdim", x => x[0].Max(keepDim: true), Dist(3, 4)),
        C("Var correction 2", x => x[0].Var([1], correction: 2), X(3, 5)),
        C("Std", x => x[0].Std([1]), X(3, 4)),
        C("Var all", x => x[0].Var(), X(3, 4)),
        C("Var dim biased", x => x[0].Var(1, unbiased: false), X(3, 4)),
        C("Var dims keepdim", x => x[0].Var([0, 2], keepDim: true), X(2, 3, 4)),
        C("Norm 2", x => x[0].Norm(), X(3, 4)),
        C("Norm 2 dim", x => x[0].Norm(2, [1]), X(3, 4)),
        C("Norm 1", x => x[0].Norm(1), Dist(3, 4)),
        C("Norm 3 dim", x => x[0].Norm(3, [0], keepDim: true), X(3, 4)),
        C("Norm inf", x => x[0].Norm(double.PositiveInfinity), Dist(3, 4)),
        C("Norm inf dim", x => x[0].Norm(double.PositiveInfinity, [1]), Dist(3, 4)),
        C("LogSumExp dim", x => x[0].LogSumExp(1), X(3, 4)),
        C("LogSumExp dims keepdim", x => x[0].LogSumExp([0, 1], keepDim: true), X(3, 4)),
        // softmax
        C("Softmax last", x => x[0].Softmax(-1), X(3, 4)),
        C("Softmax dim 0", x => x[0].Softmax(0), X(3, 4)),
        C("Softmax size-1 dim", x => x[0].Softmax(1), X(2, 1, 3)),
        C("LogSoftmax last", x => x[0].LogSoftmax(-1), X(3, 4)),
        C("LogSoftmax (transposed input)", x => x[0].LogSoftmax(-1), Tr(3, 4)),
        C("LogSoftmax dim 1 of 3", x => x[0].LogSoftmax(1), X(2, 3, 4)),
        // normalization
        C("LayerNorm", x => x[0].LayerNorm([4]), X(3, 4)),
        C("LayerNorm weight bias", x => x[0].LayerNorm([4], x[1], x[2]), X(3, 4), X(4), X(4)),
        C("LayerNorm 2-d shape", x => x[0].LayerNorm([3, 4], x[1], x[2]), X(2, 3, 4), X(3, 4), X(3, 4)),
        C("LayerNorm (transposed input)", x => x[0].LayerNorm([3], x[1], x[2]), Tr(4, 3), X(3), X(3)),
        C("RmsNorm", x => x[0].RmsNorm([4]), X(3, 4)),
        C("RmsNorm weight", x => x[0].RmsNorm([4], x[1]), X(3, 4), X(4)),
        C("RmsNorm 2-d shape eps", x => x[0].RmsNorm([3, 4], x[1], 1e-3), X(2, 3, 4), X(3, 4)),
        // losses
        C("CrossEntropy mean", x => x[0].CrossEntropy(x[1]), X(4, 5), Idx(Targets, 4)),
        C("CrossEntropy sum", x => x[0].CrossEntropy(x[1], Reduction.Sum), X(4, 5), Idx(Targets, 4)),
        C("CrossEntropy none", x => x[0].CrossEntropy(x[1], Reduction.None), X(4, 5), Idx(Targets, 4)),
        C("CrossEntropy label smoothing", x => x[0].CrossEntropy(x[1], labelSmoothing: 0.1), X(4, 5), Idx(Targets, 4)),
        C("CrossEntropy ignore index", x => x[0].CrossEntropy(x[1], ignoreIndex: 0), X(4, 5), Idx(Targets, 4)),
        C("CrossEntropy ignore -100 smoothing", x => x[0].CrossEntropy(x[1], labelSmoothing: 0.2), X(4, 5), Idx([3, -100, 4, 1], 4)),
        C("CrossEntropy 1-d", x => x[0].CrossEntropy(x[1]), X(5), Idx([2], [])),
        C("CrossEntropy [N,C,d]", x => x[0].CrossEntropy(x[1]), X(2, 3, 2), Idx([0, 2, 1, 1], 2, 2)),
        C("Nll", x => Losses.Nll(x[0], x[1]), X(4, 5), Idx(Targets, 4)),
        C("NllLoss [N, C, d]", x => x[0].NllLoss(x[1]), X(2, 5, 3), Idx([3, 0, 4, 1, 2, 2], 2, 3)),
        C("NllLoss unbatched", x => x[0].NllLoss(x[1], Reduction.Sum), X(5), Idx([2])),
        C("MseLoss mean", x => x[0].MseLoss(x[1]), X(3, 4), X(3, 4)),
        C("MseLoss sum", x => x[0].MseLoss(x[1], Reduction.Sum), X(3, 4), X(3, 4)),
        C("MseLoss none", x => x[0].MseLoss(x[1], Reduction.None), Tr(3, 4), X(3, 4)),
        // matmul and linear
        C("MatMul", x => x[0].MatMul(x[1]), X(3, 4), X(4, 5)),
        C("MatMul (transposed inputs)", x => x[0].MatMul(x[1]), Tr(3, 4), Tr(4, 5)),
        C("MatMul batched", x => x[0].MatMul(x[1]), X(2, 3, 4), X(2, 4, 5)),
        C("MatMul batch broadcast", x => x[0].MatMul(x[1]), X(2, 1, 3, 4), X(3, 4, 2)),
        C("MatMul vector-matrix", x => x[0].MatMul(x[1]), X(4), X(4, 5)),
        C("MatMul matrix-vector", x => x[0].MatMul(x[1]), X(3, 4), X(4)),
        C("MatMul dot", x => x[0].MatMul(x[1]), X(4), X(4)),
        C("Linear", x => new Linear(x[1], x[2]).Forward(x[0]), X(2, 3, 4), X(5, 4), X(5)),
        C("Linear no bias", x => new Linear(x[1]).Forward(x[0]), X(3, 4), X(5, 4)),
        // views and joins
        C("Reshape", x => x[0].Reshape(4, 3) * x[1], X(3, 4), X(4, 3)),
        C("Reshape (transposed input)", x => x[0].Reshape(12) * x[1], Tr(3, 4), X(12)),
        C("View", x => x[0].View(2, 6) * x[1], X(3, 4), X(2, 6)),
        C("Permute", x => x[0].Permute(2, 0, 1) * x[1], X(2, 3, 4), X(4, 2, 3)),
        C("Transpose", x => x[0].Transpose(0, 1) * x[1], X(3, 4), X(4, 3)),
        C("T", x => x[0].T * x[1], X(3, 4), X(4, 3)),
        C("Slice step", x => x[0].Slice(1, 0, 4, 2) * x[1], X(3, 4), X(3, 2)),
        C("Narrow", x => x[0].Narrow(0, 1, 2) * x[1], X(3, 4), X(2, 4)),
        C("Select", x => x[0].Select(1, 2) * x[1], X(3, 4), X(3)),
        C("Indexer", x => x[0][1.., TensorIndex.Slice(.., 2)] * x[1], X(3, 4), X(2, 2)),
        C("Unsqueeze Squeeze", x => x[0].Unsqueeze(1).Squeeze(2) * x[1], X(3, 1), X(3, 1)),
        C("Flatten", x => x[0].Flatten(1) * x[1], X(2, 3, 2), X(2, 6)),
        C("Expand", x => x[0].Expand(3, 4) * x[1], X(3, 1), X(3, 4)),
        C("ExpandAs", x => x[0].ExpandAs(x[1]) * x[1], X(4), X(2, 4)),
        C("Contiguous", x => x[0].Contiguous() * x[1], Tr(3, 4), X(3, 4)),
        C("Clone", x => x[0].Clone() * x[1], X(3, 4), X(3, 4)),
        C("Cast to float32", x => x[0].To(DType.Float32) * 3, X(3, 4)),
        C("Cast to bfloat16", x => x[0].To(DType.BFloat16), X(3, 4)),
        C("Cast to float64", x => x[0].To(DType.Float64).Exp(), X(3, 4)),
        C("Cat dim 0", x => Tensor.Cat([x[0], x[1]], 0) * x[2], X(2, 3), X(1, 3), X(3, 3)),
        C("Cat dim 1", x => Tensor.Cat([x[0], x[1]], 1) * x[2], X(2, 3), Tr(2, 2), X(2, 5)),
        C("Stack", x => Tensor.Stack([x[0], x[1]], 1) * x[2], X(2, 3), X(2, 3), X(2, 2, 3)),
        C("Split", x => { var p = x[0].Split(2, 1); return Tensor.Cat([p[1] * 2, p[0]], 1); }, X(2, 4)),
        C("Chunk", x => { var p = x[0].Chunk(3, 0); return p[2] * p[0] + p[1]; }, X(3, 4)),
        C("Tril", x => x[0].Tril() * x[1], X(3, 4), X(3, 4)),
        C("Triu", x => x[0].Triu(1) * x[1], X(3, 4), X(3, 4)),
        // indexing
        C("Gather dim 1", x => x[0].Gather(1, x[1]) * x[2], X(3, 4), Idx([0, 3, 3, 1, 2, 0], 3, 2), X(3, 2)),
        C("Gather dim 0", x => x[0].Gather(0, x[1]), X(3, 4), Idx([2, 0, 1, 2, 1, 1, 0, 0], 2, 4)),
        C("ScatterAdd", x => x[0].ScatterAdd(1, x[1], x[2]) * x[3], X(3, 4), Idx([0, 3, 3, 1, 2, 0], 3, 2), X(3, 2), X(3, 4)),
        C("IndexSelect", x => x[0].IndexSelect(0, x[1]) * x[2], X(3, 4), Idx([2, 0, 2, 1], 4), X(4, 4)),
        C("IndexSelect dim 1", x => x[0].IndexSelect(1, x[1]), Tr(3, 4), Idx([3, 3, 0], 3)),
        C("IndexAdd", x => x[0].IndexAdd(0, x[1], x[2]) * x[3], X(3, 4), Idx([2, 0, 2], 3), X(3, 4), X(3, 4)),
        C("Embedding", x => Tensor.Embedding(x[1], x[0]) * x[2], X(5, 3), Idx([4, 0, 4, 2, 4, 1], 2, 3), X(2, 3, 3)),
        C("Embedding paddingIdx", x => Tensor.Embedding(x[1], x[0], paddingIdx: 4) * x[2], X(5, 3), Idx([4, 0, 4, 2, 4, 1], 2, 3), X(2, 3, 3)),
        // composites that training runs
        C("Attention-like chain", x => x[0].MatMul(x[1].Transpose(-1, -2)).Mul(0.5).Softmax(-1).MatMul(x[1]), X(2, 3, 4), X(2, 3, 4)),
    ];
}

/// <summary>Where an input's values come from.</summary>
public enum Vals
{
    /// <summary>Uniform in [−2, 2].</summary>
    Normal,
    /// <summary>Uniform in [0.5, 2.5]: the domain of log, sqrt, fractional powers, 1/x.</summary>
    Positive,
    /// <summary>
    /// Distinct odd multiples of 1/32 in (−4, 4), drawn without replacement across all such inputs of a case: exact in
    /// every dtype, never 0 and never a clamp bound, so the arg-max/min and every kink (abs, relu, clamp, maximum)
    /// fall the same way in every dtype.
    /// </summary>
    Distinct,
    /// <summary>Fixed Int64 values (indices, targets).</summary>
    Int64,
    /// <summary>Fixed Bool values (conditions, masks).</summary>
    Bool,
}

/// <summary>How the op sees an input that requires grad: the leaf itself or a non-contiguous view of it.</summary>
public enum InView
{
    /// <summary>The leaf itself.</summary>
    None,
    /// <summary>A leaf with the last two dims swapped, seen through Transpose(−1, −2).</summary>
    Transposed,
    /// <summary>A leaf with the last dim doubled, seen through every other element.</summary>
    Strided,
}

/// <summary>One input of a case: the shape the op sees, where its values come from, and its layout.</summary>
public sealed record In(int[] Shape, Vals Vals = Vals.Normal, InView View = InView.None, long[]? Ints = null, bool[]? Bools = null)
{
    /// <summary>True for inputs that require grad.</summary>
    public bool IsFloat => Vals is Vals.Normal or Vals.Positive or Vals.Distinct;

    /// <summary>The shape of the leaf that holds the values.</summary>
    public int[] LeafShape
    {
        get
        {
            var s = (int[])Shape.Clone();
            if (View == InView.Transposed) (s[^1], s[^2]) = (s[^2], s[^1]);
            if (View == InView.Strided) s[^1] *= 2;
            return s;
        }
    }
}

/// <summary>An op under test: a name, the function of its inputs, and the inputs.</summary>
public sealed record DTypeCase(string Name, Func<Tensor[], Tensor> F, In[] Inputs)
{
    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>The test-side helper: runs a case in a dtype and in float64 and compares.</summary>
public static class DTypeBackward
{
    /// <summary>Relative tolerance per dtype (see <see cref="DTypeBackwardTests"/> for the reasoning).</summary>
    public static double Tolerance(DType dtype) => dtype switch
    {
        DType.Float32 => 1e-5,
        DType.Float16 => 2.5e-3,
        DType.BFloat16 => 2e-2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>
    /// Runs <paramref name="c"/> forward and backward in <paramref name="dtype"/> on <paramref name="device"/> and in
    /// float64 on the CPU (the reference), on the same values, and asserts the output and every input gradient match.
    /// </summary>
    public static void Check(DTypeCase c, DType dtype, Device device)
    {
        var rng = new Random(StableHash(c.Name));
        var values = Draw(c, rng);
        // Round every float value (inputs and the upstream gradient) to the dtype once: both runs then see the same
        // numbers, and any difference is the op's own arithmetic.
        for (int i = 0; i < values.Length; i++)
            if (c.Inputs[i].IsFloat) values[i] = Round(values[i], dtype);

        var (yRef, gradsRef, gUp) = Run(c, values, DType.Float64, Device.Cpu, null, dtype);
        var (y, grads, _) = Run(c, values, dtype, device, gUp, dtype);

        double tol = Tolerance(dtype);
        var failures = new List<string>();
        Compare(y, yRef, tol, "output", failures);
        for (int i = 0; i < c.Inputs.Length; i++)
        {
            if (!c.Inputs[i].IsFloat) continue;
            Compare(grads[i]!, gradsRef[i]!, tol, $"grad of input {i} {Shape.Format(c.Inputs[i].Shape)}{(c.Inputs[i].View == InView.None ? "" : $" ({c.Inputs[i].View})")}", failures);
        }
        if (failures.Count > 0)
            Assert.Fail($"{c.Name} in {dtype.Name()} on {device} differs from float64 (tol {tol:G2}·(|ref| + max|ref|)):\n  " + string.Join("\n  ", failures));
    }

    static (double[] Y, double[]?[] Grads, double[] GUp) Run(DTypeCase c, double[][] values, DType dtype, Device device, double[]? gUp, DType roundTo)
    {
        using var scope = Tensor.NewScope();
        var leaves = new Tensor?[c.Inputs.Length];
        var args = new Tensor[c.Inputs.Length];
        for (int i = 0; i < c.Inputs.Length; i++)
        {
            var spec = c.Inputs[i];
            switch (spec.Vals)
            {
                case Vals.Int64: args[i] = Tensor.FromArray(spec.Ints!, spec.Shape, device); break;
                case Vals.Bool: args[i] = Tensor.FromArray(spec.Bools!, spec.Shape, device); break;
                default:
                    var leaf = Tensor.FromArray(values[i], spec.LeafShape, device).To(dtype);
                    leaf.RequiresGrad = true;
                    leaves[i] = leaf;
                    args[i] = spec.View switch
                    {
                        InView.Transposed => leaf.Transpose(-1, -2),
                        InView.Strided => leaf.Slice(-1, 0, spec.LeafShape[^1], 2),
                        _ => leaf,
                    };
                    break;
            }
        }
        var y = c.F(args);
        Assert.That(y.RequiresGrad, Is.True, $"{c.Name}: the output does not require grad");
        // The upstream gradient: values drawn from the case's seed in the output's shape, rounded to the dtype under
        // test, so the reference and the dtype run back-propagate the same numbers.
        gUp ??= Round(Uniform(new Random(StableHash(c.Name) ^ 0x5bd1e995), (int)y.Numel, -1, 1), roundTo);
        var g = Tensor.FromArray(gUp, y.Shape, device).To(y.DType);
        y.Backward(g);
        var grads = new double[]?[c.Inputs.Length];
        for (int i = 0; i < leaves.Length; i++)
        {
            if (leaves[i] is not { } leaf) continue;
            Assert.That(leaf.Grad, Is.Not.Null, $"{c.Name}: no gradient reached input {i}");
            Assert.That(leaf.Grad!.DType, Is.EqualTo(dtype), $"{c.Name}: the gradient of input {i} has the wrong dtype");
            grads[i] = leaf.Grad.ToArray<double>();
            leaf.Grad.Dispose();
            leaf.Grad = null;
        }
        return (y.ToArray<double>(), grads, gUp);
    }

    static void Compare(double[] actual, double[] expected, double tol, string what, List<string> failures)
    {
        if (actual.Length != expected.Length) { failures.Add($"{what}: {actual.Length} elements, expected {expected.Length}"); return; }
        double max = 0;
        foreach (var e in expected) max = Math.Max(max, Math.Abs(e));
        if (max == 0) max = 1; // an all-zero gradient must stay (near) zero
        int bad = 0, worst = -1;
        double worstRatio = 0;
        var first = new List<string>();
        for (int i = 0; i < actual.Length; i++)
        {
            double err = Math.Abs(actual[i] - expected[i]), allowed = tol * (Math.Abs(expected[i]) + max);
            if (double.IsNaN(actual[i]) != double.IsNaN(expected[i]) || err > allowed || double.IsNaN(err) && !double.IsNaN(expected[i]))
            {
                bad++;
                if (first.Count < 3) first.Add($"[{i}] {actual[i]:G7} vs {expected[i]:G7}");
            }
            double ratio = err / allowed;
            if (ratio > worstRatio || double.IsNaN(ratio)) { worstRatio = ratio; worst = i; }
        }
        if (bad > 0)
            failures.Add($"{what}: {bad}/{actual.Length} elements out of tolerance, first {string.Join(", ", first)}; worst [{worst}] at {worstRatio:G3}× the allowed error (max|ref| {max:G4})");
    }

    static double[][] Draw(DTypeCase c, Random rng)
    {
        var values = new double[c.Inputs.Length][];
        int distinctNeeded = c.Inputs.Where(i => i.Vals == Vals.Distinct).Sum(i => Numel(i.LeafShape));
        // Odd multiples of 1/32 in (−4, 4): 128 values, 7 significant bits at most, exact in bfloat16.
        var pool = Enumerable.Range(-64, 128).Select(k => (2 * k + 1) / 32.0).OrderBy(_ => rng.Next()).ToArray();
        if (distinctNeeded > pool.Length) throw new ArgumentException($"{c.Name}: more than {pool.Length} distinct values asked for");
        int next = 0;
        for (int i = 0; i < c.Inputs.Length; i++)
        {
            var spec = c.Inputs[i];
            int n = Numel(spec.LeafShape);
            values[i] = spec.Vals switch
            {
                Vals.Normal => Uniform(rng, n, -2, 2),
                Vals.Positive => Uniform(rng, n, 0.5, 2.5),
                Vals.Distinct => pool[next..(next += n)],
                _ => [],
            };
        }
        return values;
    }

    static double[] Uniform(Random rng, int n, double lo, double hi)
    {
        var r = new double[n];
        for (int i = 0; i < n; i++) r[i] = lo + (hi - lo) * rng.NextDouble();
        return r;
    }

    static double[] Round(double[] v, DType dtype)
    {
        using var d = Tensor.FromArray(v);
        using var t = d.To(dtype);
        return t.ToArray<double>();
    }

    static int Numel(int[] shape) { int n = 1; foreach (var d in shape) n *= d; return n; }

    // string.GetHashCode differs per process; the seed must not.
    static int StableHash(string s)
    {
        unchecked
        {
            uint h = 2166136261;
            foreach (char ch in s) h = (h ^ ch) * 16777619;
            return (int)(h & 0x7fffffff);
        }
    }
}

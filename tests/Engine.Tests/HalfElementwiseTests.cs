using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Dense bfloat16/float16 elementwise ops and the fused Linear's activation gradient take the float32 vector paths on
/// widened chunks and round once: their bits must be those of the float32 op on the widened values, rounded. Sizes
/// cross the 65,536-element chunk (parallel chunks, a short tail) and the 2,048-element widening buffer.
/// </summary>
public class HalfElementwiseTests
{
    static readonly DType[] Halves = [DType.BFloat16, DType.Float16];
    const int N = 70_007; // 7 × 10,001: rows of 7 for the Linear gradient

    static Tensor Random(DType dtype, int seed, double scale = 4) =>
        Tensor.Randn([N], DType.Float32, Device.Cpu, new Generator((ulong)seed)).Mul(scale).To(dtype);

    static ushort[] Bits(Tensor t) => t.ToArray<ushort>();

    public static IEnumerable<TestCaseData> Unary()
    {
        foreach (var dt in Halves)
        {
            yield return new TestCaseData(dt, "gelu", (Func<Tensor, Tensor>)(t => t.Gelu()));
            yield return new TestCaseData(dt, "gelu_tanh", (Func<Tensor, Tensor>)(t => t.Gelu(approximateTanh: true)));
            yield return new TestCaseData(dt, "silu", (Func<Tensor, Tensor>)(t => t.Silu()));
            yield return new TestCaseData(dt, "erf", (Func<Tensor, Tensor>)(t => t.Erf()));
            yield return new TestCaseData(dt, "exp", (Func<Tensor, Tensor>)(t => t.Exp()));
            yield return new TestCaseData(dt, "tanh", (Func<Tensor, Tensor>)(t => t.Tanh()));
            yield return new TestCaseData(dt, "sigmoid", (Func<Tensor, Tensor>)(t => t.Sigmoid()));
            yield return new TestCaseData(dt, "relu", (Func<Tensor, Tensor>)(t => t.Relu()));
        }
    }

    [TestCaseSource(nameof(Unary))]
    public void UnaryOp_EqualsTheFloat32OpRoundedOnce(DType dtype, string name, Func<Tensor, Tensor> op)
    {
        using var scope = Tensor.NewScope();
        var x = Random(dtype, 1);
        Assert.That(Bits(op(x)), Is.EqualTo(Bits(op(x.To(DType.Float32)).To(dtype))), name);
    }

    [Test]
    public void BinaryOps_EqualTheFloat32OpRoundedOnce([ValueSource(nameof(Halves))] DType dtype)
    {
        using var scope = Tensor.NewScope();
        var a = Random(dtype, 2); var b = Random(dtype, 3);
        var (a32, b32) = (a.To(DType.Float32), b.To(DType.Float32));
        Assert.That(Bits(a.Add(b)), Is.EqualTo(Bits(a32.Add(b32).To(dtype))), "add");
        Assert.That(Bits(a.Mul(b)), Is.EqualTo(Bits(a32.Mul(b32).To(dtype))), "mul");
        Assert.That(Bits(a.Sub(b)), Is.EqualTo(Bits(a32.Sub(b32).To(dtype))), "sub");
    }

    [Test]
    public void UnaryGradient_EqualsTheFloat32GradientRoundedOnce([ValueSource(nameof(Halves))] DType dtype)
    {
        using var scope = Tensor.NewScope();
        var x = Random(dtype, 4); x.RequiresGrad = true;
        var dy = Random(dtype, 5, 1);
        x.Gelu().Backward(dy);
        var x32 = x.Detach().To(DType.Float32); x32.RequiresGrad = true;
        x32.Gelu().Backward(dy.To(DType.Float32));
        Assert.That(Bits(x.Grad!), Is.EqualTo(Bits(x32.Grad!.To(dtype))));
    }

    [Test]
    public void LinearActivationGradient_EqualsTheFloat32GradientRoundedOnce([ValueSource(nameof(Halves))] DType dtype, [Values(Activation.Gelu, Activation.GeluTanh, Activation.Relu)] Activation activation)
    {
        using var scope = Tensor.NewScope();
        var pre = Random(dtype, 6).View(-1, 7);
        var dy = Random(dtype, 7, 1).View(-1, 7);
        var (dz, _) = Tensor.LinearActivationGradient(dy, pre, activation, biasGrad: false);
        var (dz32, _) = Tensor.LinearActivationGradient(dy.To(DType.Float32), pre.To(DType.Float32), activation, biasGrad: false);
        Assert.That(Bits(dz.Contiguous()), Is.EqualTo(Bits(dz32.To(dtype))), $"{dtype} {activation}");
    }
}

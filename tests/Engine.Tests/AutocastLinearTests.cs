using Engine.Amp;
using Engine.Autograd;
using Engine.Autograd.Nn;
using Engine.Backends;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// An <see cref="Linear"/> layer under CPU bfloat16 autocast is one <see cref="Tensor.Linear"/> op: the float32
/// weight and bias are cast once per region (the cast cache), the GEMM writes the 16-bit output with bias and GELU in
/// its store epilogue, and nothing else runs — counted with <see cref="KernelCounter"/>. The backward runs the
/// activation/bias kernel and the two products, plus one cast per float32 tensor that the forward cast down (the
/// gradient goes back to its float32 master). Values against a float64 reference of the bf16-rounded operands.
/// </summary>
[NonParallelizable]
public class AutocastLinearTests
{
    const int Rows = 6, In = 16, Out = 10;

    static double Gelu(double z) => 0.5 * z * (1 + RefErf.Erf(z / Math.Sqrt(2)));

    static double GeluGrad(double z) => 0.5 * (1 + RefErf.Erf(z / Math.Sqrt(2))) + z * Math.Exp(-0.5 * z * z) / Math.Sqrt(2 * Math.PI);

    static double Bf(double v) => Ref.RoundTo(v, DType.BFloat16);

    [Test]
    public void AutocastLinear_CastsParametersOncePerRegion_AndRunsOneKernel()
    {
        using var scope = Tensor.NewScope();
        using var lin = new Linear(In, Out, generator: new Generator(7));
        var rng = new Random(8);
        var xs = Ref.Random(rng, Rows * In, DType.BFloat16, -1, 1);
        var x32 = Tensor.FromArray(xs, [Rows, In]).To(DType.Float32);
        var xb = x32.To(DType.BFloat16);
        using (AutocastMode.Autocast(DType.BFloat16))
        {
            Tensor y;
            using (var c = KernelCounter.Begin())
            {
                y = lin.Forward(xb, Activation.Gelu);
                Assert.That(c.Count(nameof(IBackend.Copy)), Is.EqualTo(2), $"the first Linear of the region casts the weight and the bias: {c}");
                Assert.That(c.Count(nameof(IBackend.Linear)), Is.EqualTo(1), c.ToString());
                Assert.That(c.Launches, Is.EqualTo(3), $"nothing else: {c}");
            }
            Assert.That(y.DType, Is.EqualTo(DType.BFloat16), "the GEMM writes the 16-bit output");
            using (var c = KernelCounter.Begin())
            {
                var y2 = lin.Forward(xb, Activation.Gelu);
                Assert.That(c.Launches, Is.EqualTo(1), $"the casts come from the region's cache: one Linear kernel, no cast: {c}");
                Assert.That(c.Count(nameof(IBackend.Linear)), Is.EqualTo(1), c.ToString());
                Assert.That(y2.ToArray<double>(), Is.EqualTo(y.ToArray<double>()));
            }
            using (var c = KernelCounter.Begin())
            {
                lin.Forward(x32);
                Assert.That(c.Count(nameof(IBackend.Copy)), Is.EqualTo(1), $"a float32 input is cast down once: {c}");
                Assert.That(c.Launches, Is.EqualTo(2), c.ToString());
            }
            Assert.That(AutocastMode.CachedCastCount, Is.EqualTo(2));

            // Against float64 over the bf16-rounded operands: one rounding of the float32-accumulated result.
            var w = lin.Weight.ToArray<double>().Select(Bf).ToArray();
            var b = lin.Bias!.ToArray<double>().Select(Bf).ToArray();
            var got = y.ToArray<double>();
            for (int r = 0; r < Rows; r++)
                for (int o = 0; o < Out; o++)
                {
                    double s = b[o], mag = Math.Abs(b[o]);
                    for (int i = 0; i < In; i++) { s += xs[r * In + i] * w[o * In + i]; mag += Math.Abs(xs[r * In + i] * w[o * In + i]); }
                    double want = Gelu(s);
                    Assert.That(got[r * Out + o], Is.EqualTo(want).Within(Math.Abs(want) * Math.Pow(2, -8) + mag * 1e-6), $"y[{r}, {o}]");
                }
        }
    }

    [Test]
    public void AutocastLinearBackward_CastsOnlyTheGradientsOfFloat32Tensors()
    {
        using var scope = Tensor.NewScope();
        using var lin = new Linear(In, Out, generator: new Generator(9));
        var rng = new Random(10);
        var xs = Ref.Random(rng, Rows * In, DType.BFloat16, -1, 1);
        var gs = Ref.Random(rng, Rows * Out, DType.BFloat16, -1, 1);
        var x = Tensor.FromArray(xs, [Rows, In]).To(DType.Float32);
        x.RequiresGrad = true;
        var dy = Tensor.FromArray(gs, [Rows, Out]).To(DType.BFloat16);
        using (AutocastMode.Autocast(DType.BFloat16))
        {
            var y = lin.Forward(x, Activation.Gelu);
            using var c = KernelCounter.Begin();
            y.Backward(dy);
            // dz = dy·gelu′ and dBias in one kernel, dx and dW in one product each, and one cast each for the three
            // float32 tensors the forward cast down: x's, the weight's and the bias's gradients go back to float32.
            Assert.That(c.Count(nameof(IBackend.LinearBackward)), Is.EqualTo(1), c.ToString());
            Assert.That(c.Count(nameof(IBackend.MatMul)), Is.EqualTo(2), c.ToString());
            Assert.That(c.Count(nameof(IBackend.Copy)), Is.EqualTo(3), c.ToString());
            Assert.That(c.Launches, Is.EqualTo(6), $"nothing else: {c}");
        }
        Assert.That(x.Grad!.DType, Is.EqualTo(DType.Float32));
        Assert.That(lin.Weight.Grad!.DType, Is.EqualTo(DType.Float32));
        Assert.That(lin.Bias!.Grad!.DType, Is.EqualTo(DType.Float32));

        // float64 reference: the pre-activation and dz are stored in bfloat16, each product accumulates in float32
        // and rounds once.
        var w = lin.Weight.ToArray<double>().Select(Bf).ToArray();
        var b = lin.Bias.ToArray<double>().Select(Bf).ToArray();
        var dz = new double[Rows * Out];
        for (int r = 0; r < Rows; r++)
            for (int o = 0; o < Out; o++)
            {
                double s = b[o];
                for (int i = 0; i < In; i++) s += xs[r * In + i] * w[o * In + i];
                dz[r * Out + o] = gs[r * Out + o] * GeluGrad(Bf(s));
            }
        void Check(Tensor grad, int n, Func<int, (double Value, double Magnitude)> want, string what)
        {
            var got = grad.ToArray<double>();
            for (int j = 0; j < n; j++)
            {
                var (v, m) = want(j);
                Assert.That(got[j], Is.EqualTo(v).Within(Math.Pow(2, -6) * m + 1e-6), $"{what}[{j}]");
            }
        }
        Check(lin.Bias.Grad, Out, o => Sum(Rows, r => dz[r * Out + o]), "dBias");
        Check(lin.Weight.Grad, Out * In, j => Sum(Rows, r => dz[r * Out + j / In] * xs[r * In + j % In]), "dW");
        Check(x.Grad, Rows * In, j => Sum(Out, o => dz[j / In * Out + o] * w[o * In + j % In]), "dx");
        lin.ZeroGrad();
    }

    static (double Value, double Magnitude) Sum(int n, Func<int, double> term)
    {
        double s = 0, m = 0;
        for (int i = 0; i < n; i++) { double t = term(i); s += t; m += Math.Abs(t); }
        return (s, m);
    }
}

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
/// activation/bias kernel and both products in one call; the weight's and bias's gradients are written in float32
/// (the master dtype, GradFunction.PreferredGradDType) and need no cast, only x's does. Values against a float64
/// reference of the bf16-rounded operands; the float32 weight gradient within float32 rounding of the exact sum.
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
            // dz = dy·gelu′ and dBias in one kernel, dx and dW in one more, and one cast, for x's gradient: the weight
            // and bias are the autocast copies of float32 parameters, so their gradients are written in float32
            // directly (GradFunction.PreferredGradDType) and reach the parameters without a cast.
            Assert.That(c.Count(nameof(IBackend.LinearBackward)), Is.EqualTo(1), c.ToString());
            Assert.That(c.Count(nameof(IBackend.LinearGradients)), Is.EqualTo(1), c.ToString());
            Assert.That(c.Count(nameof(IBackend.MatMul)), Is.Zero, c.ToString());
            Assert.That(c.Count(nameof(IBackend.Copy)), Is.EqualTo(1), c.ToString());
            Assert.That(c.Launches, Is.EqualTo(3), $"nothing else: {c}");
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

    /// <summary>
    /// Under autocast the master weight's and bias's gradients are the float32 sums of the exact products of the
    /// 16-bit operands (dy and x as the forward stored them), never rounded to 16 bits: within float32 rounding of the
    /// float64 sum, a bound that a 16-bit rounding (what PyTorch's autocast gives before its cast back) breaks.
    /// </summary>
    [TestCase(DType.BFloat16)]
    [TestCase(DType.Float16)]
    public void AutocastWeightGradient_IsTheFloat32SumOfThe16BitProducts(DType low)
    {
        const int rows = 37, inF = 19, outF = 11;
        using var scope = Tensor.NewScope();
        using var lin = new Linear(inF, outF, generator: new Generator(21));
        var rng = new Random(22);
        var xs = Ref.Random(rng, rows * inF, low, -1, 1);
        var gs = Ref.Random(rng, rows * outF, low, -1, 1);
        var x = Tensor.FromArray(xs, [rows, inF]).To(DType.Float32);
        var dy = Tensor.FromArray(gs, [rows, outF]).To(low);
        using (AutocastMode.Autocast(low))
        {
            var y = lin.Forward(x);
            Assert.That(y.DType, Is.EqualTo(low));
            using var c = KernelCounter.Begin();
            y.Backward(dy);
            // No activation: dz is dy; the bias sum and both products (dx unwanted: x needs no grad), no cast.
            Assert.That(c.ToString(), Is.EqualTo("2 launches: LinearBackward 1, LinearGradients 1"));
        }
        Assert.That(lin.Weight.Grad!.DType, Is.EqualTo(DType.Float32));
        Assert.That(lin.Bias!.Grad!.DType, Is.EqualTo(DType.Float32));
        var dw = lin.Weight.Grad.ToArray<double>();
        var db = lin.Bias.Grad.ToArray<double>();
        bool someWouldRound = false;
        for (int o = 0; o < outF; o++)
        {
            double sb = 0, mb = 0;
            for (int r = 0; r < rows; r++) { sb += gs[r * outF + o]; mb += Math.Abs(gs[r * outF + o]); }
            Assert.That(Math.Abs(db[o] - sb), Is.LessThanOrEqualTo(Math.Pow(2, -24) * (Math.Abs(sb) + 2 * rows * mb)), $"dBias[{o}]");
            for (int i = 0; i < inF; i++)
            {
                double s = 0, m = 0;
                for (int r = 0; r < rows; r++) { s += gs[r * outF + o] * xs[r * inF + i]; m += Math.Abs(gs[r * outF + o] * xs[r * inF + i]); }
                double bound = Math.Pow(2, -24) * (Math.Abs(s) + 2 * rows * m);
                Assert.That(Math.Abs(dw[o * inF + i] - s), Is.LessThanOrEqualTo(bound), $"dW[{o}, {i}]");
                someWouldRound |= Math.Abs(Ref.RoundTo(s, low) - s) > bound;
            }
        }
        Assert.That(someWouldRound, Is.True, "the bound tells a 16-bit rounding apart");
        lin.ZeroGrad();
    }

    /// <summary>
    /// The float32 gradient passes a cast only where nothing observes the 16-bit one: a hook on the 16-bit copy, and
    /// a capture of its gradient (Gradients.Grad), see it in the copy's own dtype; the master gets float32 either way.
    /// </summary>
    [Test]
    public void WideGradient_IsNotSeenWhereTheNarrowOneIsObserved()
    {
        using var scope = Tensor.NewScope();
        var rng = new Random(23);
        var w32 = Tensor.FromArray(Ref.Random(rng, 4 * 3, DType.BFloat16), [4, 3]).To(DType.Float32);
        w32.RequiresGrad = true;
        var xb = Tensor.FromArray(Ref.Random(rng, 5 * 3, DType.BFloat16), [5, 3]).To(DType.BFloat16);
        var dy = Tensor.FromArray(Ref.Random(rng, 5 * 4, DType.BFloat16), [5, 4]).To(DType.BFloat16);

        var wb = w32.To(DType.BFloat16);
        var y = Tensor.Linear(xb, wb);
        using (var c = KernelCounter.Begin())
        {
            y.Backward(dy);
            Assert.That(c.ToString(), Is.EqualTo("1 launch: LinearGradients 1"), "no cast back: the gradient is written in float32");
        }
        Assert.That(w32.Grad!.DType, Is.EqualTo(DType.Float32));
        var plain = w32.Grad.ToArray<double>();
        w32.Grad = null;

        var hooked = w32.To(DType.BFloat16);
        DType? seen = null;
        hooked.RegisterHook(g => { seen = g.DType; return null; });
        Tensor.Linear(xb, hooked).Backward(dy);
        Assert.That(seen, Is.EqualTo(DType.BFloat16), "a hook sees the copy's dtype");
        Assert.That(w32.Grad!.DType, Is.EqualTo(DType.Float32));
        Assert.That(w32.Grad.ToArray<double>(), Is.EqualTo(plain.Select(v => Ref.RoundTo(v, DType.BFloat16)).ToArray()), "rounded once to bf16 on the way");
        w32.Grad = null;

        var captured = w32.To(DType.BFloat16);
        var g = Gradients.Grad([Tensor.Linear(xb, captured)], [captured], [dy])[0]!;
        Assert.That(g.DType, Is.EqualTo(DType.BFloat16), "a captured gradient has the tensor's dtype");
        Assert.That(g.ToArray<double>(), Is.EqualTo(plain.Select(v => Ref.RoundTo(v, DType.BFloat16)).ToArray()));
    }
}

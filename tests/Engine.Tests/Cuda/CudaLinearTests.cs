using Engine.Autograd;
using Engine.Backends;
using Engine.Backends.Cuda;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The CUDA fused Linear (CudaBackend.Linear.cs: the GEMM's bias/pre-activation/activation store epilogue in the SIMT
/// and tensor-core kernels, and the one-launch backward of Kernels/LinearKernels.cs) on the emulated device, against
/// act(x·Wᵀ + b) and its gradients computed in float64 here, for every dtype and activation, at small odd sizes (rows
/// of 9 outputs take the tensor-core epilogue's element-wise stores, rows of 16 its 16-byte ones) and k = 0; and
/// against the CPU backend's result from the same values; 40 rows take the backward's blocked bias sums. Each forward is one counted launch (Linear), each backward
/// one LinearBackward besides the two products.
/// </summary>
[TestFixture]
[NonParallelizable]
public class CudaLinearTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];
    static readonly Activation[] Activations = [Activation.None, Activation.Relu, Activation.Gelu, Activation.GeluTanh];

    [OneTimeSetUp]
    public void EnableEmulation() => CudaBackend.EnableEmulation();

    static Tensor Leaf(Tensor t)
    {
        t.RequiresGrad = true;
        return t;
    }

    const double TanhC = 0.7978845608028654, TanhK = 0.044715;

    static double Act(Activation a, double z) => a switch
    {
        Activation.Relu => Math.Max(z, 0),
        Activation.Gelu => 0.5 * z * (1 + RefErf.Erf(z / Math.Sqrt(2))),
        Activation.GeluTanh => 0.5 * z * (1 + Math.Tanh(TanhC * (z + TanhK * z * z * z))),
        _ => z,
    };

    static double ActDerivative(Activation a, double z)
    {
        switch (a)
        {
            case Activation.Relu: return z > 0 ? 1 : 0;
            case Activation.Gelu: return 0.5 * (1 + RefErf.Erf(z / Math.Sqrt(2))) + z * Math.Exp(-0.5 * z * z) / Math.Sqrt(2 * Math.PI);
            case Activation.GeluTanh:
                double th = Math.Tanh(TanhC * (z + TanhK * z * z * z));
                return 0.5 * (1 + th) + 0.5 * z * (1 - th * th) * TanhC * (1 + 3 * TanhK * z * z);
            default: return 1;
        }
    }

    // |got − expected| within the dtype's rounding of the terms' magnitude (sums of k products: the error scales with
    // Σ|terms|, not with a cancelling sum), as LinearTests.
    static void AssertNear(double[] got, double[] expected, double[] magnitude, DType dt, int terms, string what)
    {
        var (rtol, atol) = Ref.Tol(dt);
        Assert.That(got, Has.Length.EqualTo(expected.Length), what);
        for (int i = 0; i < got.Length; i++)
            Assert.That(Math.Abs(got[i] - expected[i]), Is.LessThanOrEqualTo(3 * rtol * Math.Max(1, Math.Sqrt(terms)) * (magnitude[i] + Math.Abs(expected[i])) + atol),
                $"{what} [{i}]: got {got[i]}, expected {expected[i]}");
    }

    static IEnumerable<TestCaseData> Cases()
    {
        foreach (var a in Activations)
        {
            yield return new TestCaseData(new[] { 2, 3, 7 }, 9, true, a);   // m = 6, k = 7, n = 9: every edge partial
            yield return new TestCaseData(new[] { 5, 20 }, 16, true, a);    // n = 16: the 16-byte epilogue stores
        }
        yield return new TestCaseData(new[] { 5, 7 }, 9, false, Activation.Gelu);
        // 40 rows: the backward's bias sums go through row blocks and ColumnFinish.
        yield return new TestCaseData(new[] { 2, 20, 7 }, 9, true, Activation.Gelu);
        yield return new TestCaseData(new[] { 2, 20, 7 }, 9, true, Activation.None);
        yield return new TestCaseData(new[] { 3, 0 }, 5, true, Activation.GeluTanh); // k = 0: y = act(bias)
    }

    [TestCaseSource(nameof(Cases))]
    public void ForwardAndBackward_MatchFloat64AndTheCpu(int[] inputShape, int outF, bool withBias, Activation act)
    {
        var dev = CudaBackend.EmulatedDevice;
        int inF = inputShape[^1], rows = Ref.Numel(inputShape[..^1]);
        var rng = new Random(rows * 31 + inF * 7 + outF + (int)act);
        int[] outShape = [.. inputShape[..^1], outF];
        foreach (var dt in Floats)
        {
            var x = Ref.Random(rng, rows * inF, dt);
            var w = Ref.Random(rng, outF * inF, dt);
            var b = withBias ? Ref.Random(rng, outF, dt) : null;
            var dy = Ref.Random(rng, rows * outF, dt);

            // The float64 reference: z = x·Wᵀ + b, y = act(z); dz = dy·act′(z), dx = dz·W, dW = dzᵀ·x, db = Σ dz.
            var z = new double[rows * outF];
            var magY = new double[rows * outF];
            for (int r = 0; r < rows; r++)
                for (int o = 0; o < outF; o++)
                {
                    double s = b?[o] ?? 0, m = Math.Abs(b?[o] ?? 0);
                    for (int i = 0; i < inF; i++) { s += x[r * inF + i] * w[o * inF + i]; m += Math.Abs(x[r * inF + i] * w[o * inF + i]); }
                    z[r * outF + o] = s; magY[r * outF + o] = m;
                }
            var y = z.Select(v => Act(act, v)).ToArray();
            var dz = z.Select((v, i) => dy[i] * ActDerivative(act, v)).ToArray();
            var dx = new double[rows * inF]; var magDx = new double[rows * inF];
            var dw = new double[outF * inF]; var magDw = new double[outF * inF];
            var db = new double[outF]; var magDb = new double[outF];
            for (int r = 0; r < rows; r++)
                for (int o = 0; o < outF; o++)
                {
                    double g = dz[r * outF + o];
                    db[o] += g; magDb[o] += Math.Abs(g);
                    for (int i = 0; i < inF; i++)
                    {
                        dx[r * inF + i] += g * w[o * inF + i]; magDx[r * inF + i] += Math.Abs(g * w[o * inF + i]);
                        dw[o * inF + i] += g * x[r * inF + i]; magDw[o * inF + i] += Math.Abs(g * x[r * inF + i]);
                    }
                }

            var results = new Dictionary<string, double[]>[2];
            foreach (var (d, slot) in new[] { (Device.Cpu, 0), (dev, 1) })
            {
                using var scope = Tensor.NewScope();
                var tx = Leaf(Tensor.FromArray(x, inputShape, d).To(dt));
                var tw = Leaf(Tensor.FromArray(w, [outF, inF], d).To(dt));
                var tb = b is null ? null : Leaf(Tensor.FromArray(b, [outF], d).To(dt));
                var tdy = Tensor.FromArray(dy, outShape, d).To(dt);
                using var forward = KernelCounter.Begin();
                var ty = Tensor.Linear(tx, tw, tb, act);
                forward.Dispose();
                if (d == dev) Assert.That(forward.ToString(), Is.EqualTo("1 launch: Linear 1"), $"{dt} {act}: one fused launch");
                results[slot] = new() { ["y"] = ty.ToArray<double>(), ["dx"] = [], ["dw"] = [], ["db"] = [] };
                using var backward = KernelCounter.Begin();
                ty.Backward(tdy);
                backward.Dispose();
                if (d == dev)
                    Assert.That(backward.Count(nameof(IBackend.LinearBackward)), Is.EqualTo(withBias || act != Activation.None ? 1 : 0), $"{dt} {act}: {backward}");
                results[slot]["dx"] = tx.Grad!.ToArray<double>();
                results[slot]["dw"] = tw.Grad!.ToArray<double>();
                results[slot]["db"] = tb?.Grad!.ToArray<double>() ?? [];
            }
            string what = $"{dt} {act} x {Shape.Format(inputShape)} → {outF}";
            foreach (var r in results)
            {
                AssertNear(r["y"], y, magY, dt, inF, $"{what}: y");
                AssertNear(r["dx"], dx, magDx, dt, outF * Math.Max(inF, 1), $"{what}: dx");
                AssertNear(r["dw"], dw, magDw, dt, rows * Math.Max(inF, 1), $"{what}: dw");
                if (withBias) AssertNear(r["db"], db, magDb, dt, rows * Math.Max(inF, 1), $"{what}: db");
            }
            // The CUDA result against the CPU's from the same values: within the dtype's tolerance of each other.
            foreach (var key in inF == 0 ? ["y"] : withBias ? new[] { "y", "dx", "dw", "db" } : ["y", "dx", "dw"])
                AssertNear(results[1][key], results[0][key], key == "y" ? magY : key == "dx" ? magDx : key == "dw" ? magDw : magDb, dt, Math.Max(inF, 1), $"{what}: {key} cuda vs cpu");
        }
    }
}

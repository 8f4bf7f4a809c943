using Engine.Autograd;
using Engine.Backends;
using Engine.Backends.Cpu;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Autograd;

/// <summary>
/// <see cref="Tensor.ScaledDotProductAttention"/> on the layouts attention really gets, read and written in place:
/// q, k, v as the [b, h, t, d] views of one [b, t, 3C] projection (the Split of qkv), the output in [b, t, h, d]
/// memory so the merge of heads is a free view, dq, dk, dv written into one [b, t, 3C] buffer that becomes the
/// projection's gradient with no fill, copy or add (the executor's slice recognition), and the fallbacks when the
/// layout or the graph does not allow it (batch dims that do not fold, a fourth unused part, a captured part, fan-out).
/// Against a float64 reference written here, float64 gradcheck, CPU against emulated CUDA, thread-count independence.
/// </summary>
[NonParallelizable]
public class SdpaLayoutTests
{
    [OneTimeSetUp]
    public void EnableEmulator() => CudaBackend.EnableEmulation();

    static double[] Rand(int n, int seed, double lo = -1.5, double hi = 1.5)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => lo + (hi - lo) * rng.NextDouble()).ToArray();
    }

    // The GPT attention on x [b, t, 3C]: Split, heads as transposed views, fused attention, heads merged back.
    static Tensor Attend(Tensor x, int h, Tensor? mask, bool causal)
    {
        int b = x.Size(0), t = x.Size(1), c = x.Size(2) / 3, d = c / h;
        var parts = x.Split(c, 2);
        var q = parts[0].View(b, t, h, d).Transpose(1, 2);
        var k = parts[1].View(b, t, h, d).Transpose(1, 2);
        var v = parts[2].View(b, t, h, d).Transpose(1, 2);
        var o = Tensor.ScaledDotProductAttention(q, k, v, mask, isCausal: causal);
        return o.Transpose(1, 2).Reshape(b, t, c);
    }

    // y and dx of Attend for upstream g ([b, t, C]) in float64: per head, softmax(q·kᵀ/√d + mask)·v and its gradients.
    static (double[] Y, double[] Dx) Reference(double[] x, double[] g, int b, int t, int h, int d, double[]? mask, bool causal)
    {
        int c = h * d, w = 3 * c;
        var y = new double[b * t * c]; var dx = new double[b * t * w];
        double scale = 1 / Math.Sqrt(d);
        double X(int bi, int ti, int part, int hi, int e) => x[(bi * t + ti) * w + part * c + hi * d + e];
        for (int bi = 0; bi < b; bi++)
            for (int hi = 0; hi < h; hi++)
                for (int i = 0; i < t; i++)
                {
                    var p = new double[t];
                    double max = double.NegativeInfinity;
                    for (int j = 0; j < t; j++)
                    {
                        double s = 0;
                        for (int e = 0; e < d; e++) s += X(bi, i, 0, hi, e) * X(bi, j, 1, hi, e);
                        s = s * scale + (mask?[i * t + j] ?? 0);
                        if (causal && j > i) s = double.NegativeInfinity;
                        p[j] = s; max = Math.Max(max, s);
                    }
                    double sum = 0;
                    for (int j = 0; j < t; j++) sum += p[j] = Math.Exp(p[j] - max);
                    for (int j = 0; j < t; j++) p[j] /= sum;
                    var dp = new double[t];
                    double dot = 0;
                    for (int j = 0; j < t; j++)
                    {
                        for (int e = 0; e < d; e++)
                        {
                            double ge = g[(bi * t + i) * c + hi * d + e];
                            y[(bi * t + i) * c + hi * d + e] += p[j] * X(bi, j, 2, hi, e);
                            dp[j] += ge * X(bi, j, 2, hi, e);
                            dx[(bi * t + j) * w + 2 * c + hi * d + e] += p[j] * ge;
                        }
                        dot += p[j] * dp[j];
                    }
                    for (int j = 0; j < t; j++)
                    {
                        double ds = p[j] * (dp[j] - dot) * scale;
                        for (int e = 0; e < d; e++)
                        {
                            dx[(bi * t + i) * w + hi * d + e] += ds * X(bi, j, 1, hi, e);
                            dx[(bi * t + j) * w + c + hi * d + e] += ds * X(bi, i, 0, hi, e);
                        }
                    }
                }
        return (y, dx);
    }

    // Runs Attend and backward with upstream g on a device; returns y and x's gradient as float64 and the launches of
    // the forward and backward.
    static (double[] Y, double[] Dx, KernelCounterScope Launches) Run(Device dev, DType dt, double[] x, double[] g, int b, int t, int h, int d,
        double[]? mask, bool causal)
    {
        using var scope = Tensor.NewScope();
        var tx = Tensor.FromArray(x, [b, t, 3 * h * d]).To(dev, dt);
        tx.RequiresGrad = true;
        var tg = Tensor.FromArray(g, [b, t, h * d]).To(dev, dt);
        var tm = mask is null ? null : Tensor.FromArray(mask, [t, t]).To(dev, dt);
        var counter = KernelCounter.Begin();
        var y = Attend(tx, h, tm, causal);
        y.Backward(tg);
        counter.Dispose();
        return (y.ToArray<double>(), tx.Grad!.ToArray<double>(), counter);
    }

    static void Close(double[] actual, double[] expected, double tol, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what);
        double max = expected.Select(Math.Abs).DefaultIfEmpty(0).Max();
        for (int i = 0; i < actual.Length; i++)
            Assert.That(actual[i], Is.EqualTo(expected[i]).Within(tol * (Math.Abs(expected[i]) + 0.1 * max) + 1e-12), $"{what} [{i}]");
    }

    static readonly (int B, int T, int H, int D)[] Sizes = [(2, 7, 3, 4), (1, 1, 1, 1), (2, 40, 2, 5), (3, 5, 1, 8), (2, 0, 2, 3)];

    static IEnumerable<TestCaseData> Cases() =>
        from dt in new[] { DType.Float32, DType.Float64 }
        from z in Sizes
        from mode in new[] { "none", "causal", "additive" }
        select new TestCaseData(dt, z.B, z.T, z.H, z.D, mode).SetArgDisplayNames(dt.Name(), $"{z.B}x{z.T}x{z.H}x{z.D}", mode);

    [TestCaseSource(nameof(Cases))]
    public void SplitOfQkv_MatchesFloat64Reference_WithoutCopies(DType dt, int b, int t, int h, int d, string mode)
    {
        double[] x = Rand(b * t * 3 * h * d, 1), g = Rand(b * t * h * d, 2);
        double[]? mask = mode == "additive" ? Rand(t * t, 3, -2, 1) : null;
        bool causal = mode == "causal";
        var want = Reference(x, g, b, t, h, d, mask, causal);
        var (y, dx, launches) = Run(Device.Cpu, dt, x, g, b, t, h, d, mask, causal);
        double tol = dt == DType.Float64 ? 1e-10 : 2e-5;
        Close(y, want.Y, tol, "y");
        Close(dx, want.Dx, tol, "dx");
        // q, k, v read in place, o written in [b, t, h, d] memory, dO read in place, dq, dk, dv written into x's
        // gradient, which x.Grad takes over: nothing copies or fills. (An empty x takes the ordinary slice path.)
        if (t == 0) return;
        Assert.That(launches.Count(nameof(IBackend.Copy)), Is.Zero, launches.ToString());
        Assert.That(launches.Count(nameof(IBackend.Fill)), Is.Zero, launches.ToString());
    }

    [Test]
    public void OutputIsHeadsInsideRows_AndMergingHeadsIsAView()
    {
        using var scope = Tensor.NewScope();
        int b = 2, t = 5, h = 3, d = 4;
        var x = Tensor.FromArray(Rand(b * t * 3 * h * d, 4), [b, t, 3 * h * d]);
        var parts = x.Split(h * d, 2);
        var q = parts[0].View(b, t, h, d).Transpose(1, 2);
        var k = parts[1].View(b, t, h, d).Transpose(1, 2);
        var v = parts[2].View(b, t, h, d).Transpose(1, 2);
        var o = Tensor.ScaledDotProductAttention(q, k, v, isCausal: true);
        Assert.That(o.Layout.Shape.ToArray(), Is.EqualTo(new[] { b, h, t, d }));
        var merged = o.Transpose(1, 2);
        Assert.That(merged.IsContiguous, Is.True, o.Layout.ToString());
        var y = merged.Reshape(b, t, h * d);
        Assert.That(y.Storage, Is.SameAs(o.Storage), "Reshape copied");
        // Dense q (no heads inside rows): a contiguous output as before.
        var qd = q.Contiguous(); var kd = k.Contiguous(); var vd = v.Contiguous();
        var od = Tensor.ScaledDotProductAttention(qd, kd, vd, isCausal: true);
        Assert.That(od.IsContiguous, Is.True);
        Assert.That(od.ToArray<float>(), Is.EqualTo(o.ToArray<float>()).Within(1e-6));
    }

    [TestCase(false), TestCase(true)]
    public void GradCheck_Float64_SplitOfQkv(bool causal)
    {
        int b = 2, t = 4, h = 2, d = 3;
        using var x = Tensor.FromArray(Rand(b * t * 3 * h * d, 5), [b, t, 3 * h * d]).To(DType.Float64);
        x.RequiresGrad = true;
        using var mask = Tensor.FromArray(Rand(t * t, 6, -1, 1), [t, t]).To(DType.Float64);
        GradCheck.Check(a => Attend(a[0], h, causal ? null : mask, causal), [x]);
    }

    // Batch dims [2, 3, 4] laid out so that no two of them fold into one stride: the operands are copied dense (the
    // fallback) and the result is the explicit composition's. Also a key broadcast over the first batch dim.
    [Test]
    public void BatchDimsThatDoNotFold_FallBackToDense()
    {
        using var scope = Tensor.NewScope();
        int t = 5, s = 6, d = 4;
        Tensor Leaf(double[] v, int[] shape) { var x = Tensor.FromArray(v, shape); x.RequiresGrad = true; return x; }
        var qm = Leaf(Rand(3 * t * 2 * 4 * d, 7), [3, t, 2, 4, d]);
        var km = Leaf(Rand(3 * 4 * s * d, 8), [1, 3, 4, s, d]);
        var vm = Leaf(Rand(4 * s * 2 * 3 * d, 9), [4, s, 2, 3, d]);
        Tensor Q() => qm.Permute(2, 0, 3, 1, 4);                  // [2, 3, 4, t, d], no two batch dims fold
        Tensor K() => km;                                         // [1, 3, 4, s, d], broadcast over the first
        Tensor V() => vm.Permute(2, 3, 0, 1, 4);                  // [2, 3, 4, s, d]
        var g = Tensor.FromArray(Rand(2 * 3 * 4 * t * d, 10), [2, 3, 4, t, d]);
        var o = Tensor.ScaledDotProductAttention(Q(), K(), V(), isCausal: true);
        o.Mul(g).Sum().Backward();
        double[][] fused = [o.ToArray<double>(), qm.Grad!.ToArray<double>(), km.Grad!.ToArray<double>(), vm.Grad!.ToArray<double>()];
        foreach (var x in new[] { qm, km, vm }) x.Grad = null;
        using var ones = Tensor.Ones([t, s]);
        using var future = ones.Tril().Eq(0);
        var e = Q().MatMul(K().Transpose(-2, -1)).Mul(1 / Math.Sqrt(d)).MaskedFill(future, double.NegativeInfinity).Softmax(-1).MatMul(V());
        e.Mul(g).Sum().Backward();
        double[][] expl = [e.ToArray<double>(), qm.Grad!.ToArray<double>(), km.Grad!.ToArray<double>(), vm.Grad!.ToArray<double>()];
        string[] names = ["o", "dq", "dk", "dv"];
        for (int i = 0; i < 4; i++) Close(fused[i], expl[i], 2e-5, names[i]);
    }

    // x [b, t, 4C] of which q, k, v use three parts: dq, dk, dv do not tile x, so they are separate and the fourth
    // part's gradient is zero (the old path: zeros, copy, adds).
    [Test]
    public void FourthUnusedPart_GetsZeroGradient()
    {
        using var scope = Tensor.NewScope();
        int b = 2, t = 5, h = 2, d = 3, c = h * d;
        double[] xs = Rand(b * t * 4 * c, 11), g = Rand(b * t * c, 12);
        var x = Tensor.FromArray(xs, [b, t, 4 * c]);
        x.RequiresGrad = true;
        var parts = x.Split(c, 2);
        var q = parts[0].View(b, t, h, d).Transpose(1, 2);
        var k = parts[1].View(b, t, h, d).Transpose(1, 2);
        var v = parts[2].View(b, t, h, d).Transpose(1, 2);
        var y = Tensor.ScaledDotProductAttention(q, k, v, isCausal: true).Transpose(1, 2).Reshape(b, t, c);
        y.Mul(Tensor.FromArray(g, [b, t, c])).Sum().Backward();
        // The reference on the first three parts.
        var x3 = new double[b * t * 3 * c];
        for (int r = 0; r < b * t; r++) Array.Copy(xs, r * 4 * c, x3, r * 3 * c, 3 * c);
        var want = Reference(x3, g, b, t, h, d, null, true);
        var dx = x.Grad!.ToArray<double>();
        for (int r = 0; r < b * t; r++)
        {
            Close(dx[(r * 4 * c)..(r * 4 * c + 3 * c)], want.Dx[(r * 3 * c)..((r + 1) * 3 * c)], 2e-5, $"row {r}");
            Assert.That(dx[(r * 4 * c + 3 * c)..((r + 1) * 4 * c)], Is.All.EqualTo(0.0), $"row {r}, unused part");
        }
    }

    // Capturing one part's gradient (torch.autograd.grad of k's slice) holds a second handle on the shared buffer: the
    // recognition declines and the projection's gradient is built apart, leaving the captured dk as it was.
    [Test]
    public void CapturedPart_KeepsItsValue_AndTheWholeIsStillRight()
    {
        using var scope = Tensor.NewScope();
        int b = 2, t = 6, h = 2, d = 4, c = h * d;
        double[] xs = Rand(b * t * 3 * c, 13), g = Rand(b * t * c, 14);
        var x = Tensor.FromArray(xs, [b, t, 3 * c]);
        x.RequiresGrad = true;
        var parts = x.Split(c, 2);
        var q = parts[0].View(b, t, h, d).Transpose(1, 2);
        var k = parts[1].View(b, t, h, d).Transpose(1, 2);
        var v = parts[2].View(b, t, h, d).Transpose(1, 2);
        var y = Tensor.ScaledDotProductAttention(q, k, v, isCausal: true).Transpose(1, 2).Reshape(b, t, c);
        var loss = y.Mul(Tensor.FromArray(g, [b, t, c])).Sum();
        var grads = Gradients.Grad([loss], [x, parts[1]]);
        var want = Reference(xs, g, b, t, h, d, null, true);
        Close(grads[0]!.ToArray<double>(), want.Dx, 2e-5, "dx");
        var dk = grads[1]!.ToArray<double>();
        var wantDk = new double[b * t * c];
        for (int r = 0; r < b * t; r++) Array.Copy(want.Dx, r * 3 * c + c, wantDk, r * c, c);
        Close(dk, wantDk, 2e-5, "captured dk");
        grads[0]!.Dispose(); grads[1]!.Dispose();
    }

    // x feeds the attention and another term: the whole buffer and the other gradient are summed.
    [Test]
    public void FanOut_SumsTheWholeBufferWithTheOtherUse()
    {
        using var scope = Tensor.NewScope();
        int b = 2, t = 5, h = 2, d = 3, c = h * d;
        double[] xs = Rand(b * t * 3 * c, 15), g = Rand(b * t * c, 16);
        var x = Tensor.FromArray(xs, [b, t, 3 * c]);
        x.RequiresGrad = true;
        var y = Attend(x, h, null, true);
        y.Mul(Tensor.FromArray(g, [b, t, c])).Sum().Add(x.Mul(x).Sum()).Backward();
        var want = Reference(xs, g, b, t, h, d, null, true);
        Close(x.Grad!.ToArray<double>(), want.Dx.Select((v, i) => v + 2 * xs[i]).ToArray(), 2e-5, "dx");
    }

    [Test]
    public void SplitOfQkv_DoesNotDependOnTheThreadCount()
    {
        int b = 2, t = 70, h = 3, d = 8;
        double[] x = Rand(b * t * 3 * h * d, 17), g = Rand(b * t * h * d, 18);
        (double[] Y, double[] Dx) At(int threads)
        {
            using var _ = CpuBackend.UseOptions(CpuBackend.Options with { Threads = threads });
            var r = Run(Device.Cpu, DType.Float32, x, g, b, t, h, d, null, true);
            return (r.Y, r.Dx);
        }
        var one = At(1); var four = At(4);
        Assert.That(four.Y, Is.EqualTo(one.Y));
        Assert.That(four.Dx, Is.EqualTo(one.Dx));
    }

    // The CUDA kernels on ILGPU's CPU accelerator read and write the same strided layouts: the CPU's results and,
    // in float32, no copy or fill either.
    [TestCase(DType.Float32, "causal"), TestCase(DType.Float32, "additive"), TestCase(DType.BFloat16, "causal"), TestCase(DType.Float64, "none")]
    public void SplitOfQkv_CudaMatchesTheCpu(DType dt, string mode)
    {
        int b = 2, t = 6, h = 3, d = 4;
        double[] x = Rand(b * t * 3 * h * d, 19), g = Rand(b * t * h * d, 20);
        double[]? mask = mode == "additive" ? Rand(t * t, 21, -2, 1) : null;
        bool causal = mode == "causal";
        var cpu = Run(Device.Cpu, dt, x, g, b, t, h, d, mask, causal);
        var cuda = Run(CudaBackend.EmulatedDevice, dt, x, g, b, t, h, d, mask, causal);
        double tol = dt switch { DType.BFloat16 => 1.6e-2, DType.Float64 => 1e-12, _ => 2e-5 };
        Close(cuda.Y, cpu.Y, tol, "y");
        Close(cuda.Dx, cpu.Dx, tol, "dx");
        if (dt == DType.Float32)
        {
            Assert.That(cuda.Launches.Count(nameof(IBackend.Copy)), Is.Zero, cuda.Launches.ToString());
            Assert.That(cuda.Launches.Count(nameof(IBackend.Fill)), Is.Zero, cuda.Launches.ToString());
        }
    }
}

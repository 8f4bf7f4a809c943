using Engine.Autograd;
using Engine.Backends;
using Engine.Backends.Cpu;
using Engine.Backends.Cuda;
using Engine.Backends.Cuda.Gemm;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Backends;

/// <summary>
/// IBackend.LinearGradients, the two products of the fused Linear's backward in one call (dx = dz·w, dw = dzᵀ·x), on
/// the CPU backend, the contract's composite default and the emulated CUDA backend (one grouped SIMT launch for
/// float32/float64), against the float64 products of the stored operands computed here: every float dtype, a Float32
/// dw from 16-bit operands (within float32 rounding of the exact sum, far inside a 16-bit rounding), odd sizes past
/// one tile, m = 0, n = 0 and k = 0, transposed and strided x and w, and either product alone.
/// </summary>
[TestFixture]
[NonParallelizable] // sets CudaBackend.GemmPlanOverride
public class LinearGradientsTests
{
    public enum Kind { Contiguous, Transposed, Strided }

    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.BFloat16, DType.Float16];

    [OneTimeSetUp]
    public void EnableEmulation() => CudaBackend.EnableEmulation();

    [TearDown]
    public void ResetPlan() => ((CudaBackend)BackendRegistry.Get(CudaBackend.EmulatedDevice)).GemmPlanOverride = null;

    // [rows, cols] row-major values as a tensor on dev in the given physical layout.
    static Tensor Make(double[] v, int rows, int cols, DType dt, Kind kind, Device dev)
    {
        switch (kind)
        {
            case Kind.Transposed:
            {
                var buf = new double[v.Length];
                for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) buf[j * rows + i] = v[i * cols + j];
                using var t = Tensor.FromArray(buf, [cols, rows], dev);
                using var c = t.To(dt);
                return c.Transpose(0, 1);
            }
            case Kind.Strided:
            {
                // Every other column of a buffer twice as wide, from row 1 (a nonzero offset).
                var buf = new double[(rows + 1) * cols * 2];
                for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) buf[(i + 1) * cols * 2 + 2 * j] = v[i * cols + j];
                using var t = Tensor.FromArray(buf, [rows + 1, cols * 2], dev);
                using var c = t.To(dt);
                using var r = c.Narrow(0, 1, rows);
                return r.Slice(1, 0, cols * 2, 2);
            }
            default:
            {
                using var t = Tensor.FromArray(v, [rows, cols], dev);
                return t.To(dt);
            }
        }
    }

    static IEnumerable<TestCaseData> Cases()
    {
        (int M, int N, int K)[] shapes = [(5, 7, 9), (37, 9, 33), (1, 1, 1), (0, 4, 3), (4, 0, 3), (4, 3, 0)];
        foreach (var dt in Floats)
            foreach (var (m, n, k) in shapes)
                foreach (var (kx, kw) in new[] { (Kind.Contiguous, Kind.Contiguous), (Kind.Transposed, Kind.Strided), (Kind.Strided, Kind.Transposed) })
                    yield return new TestCaseData(dt, m, n, k, kx, kw).SetArgDisplayNames(dt.Name(), $"{m}x{n}x{k}", kx.ToString(), kw.ToString());
    }

    [TestCaseSource(nameof(Cases))]
    public void BothProducts_MatchFloat64_OnEveryBackend(DType dt, int m, int n, int k, Kind kx, Kind kw)
    {
        var rng = new Random(m * 131 + n * 17 + k + (int)dt);
        var z = Ref.Random(rng, m * n, dt);
        var x = Ref.Random(rng, m * k, dt);
        var w = Ref.Random(rng, n * k, dt);
        var (dx, magDx) = Product(m, k, n, (i, j, p) => z[i * n + p] * w[p * k + j]);
        var (dw, magDw) = Product(n, k, m, (i, j, p) => z[p * n + i] * x[p * k + j]);
        bool half = dt is DType.BFloat16 or DType.Float16;
        var backends = new (string Name, IBackend Backend, Device Device)[]
        {
            ("cpu", CpuBackend.Instance, Device.Cpu),
            ("composite", new CompositeOnlyBackend(), Device.Cpu),
            ("cuda", BackendRegistry.Get(CudaBackend.EmulatedDevice), CudaBackend.EmulatedDevice),
        };
        foreach (var (name, be, dev) in backends)
            foreach (var (wantX, wantW) in new[] { (true, true), (true, false), (false, true) })
                foreach (var dwType in half ? new[] { dt, DType.Float32 } : [dt])
                {
                    string what = $"{name} {dt.Name()} {m}x{n}x{k} x {kx} w {kw} dx {wantX} dw {wantW} ({dwType.Name()})";
                    using var tz = Make(z, m, n, dt, Kind.Contiguous, dev);
                    using var tx = Make(x, m, k, dt, kx, dev);
                    using var tw = Make(w, n, k, dt, kw, dev);
                    // Sentinels: an output the call must overwrite (zeros from an empty sum included).
                    using var gx = Tensor.Full([m, k], 7.0, dt, dev);
                    using var gw = Tensor.Full([n, k], 7.0, dwType, dev);
                    be.LinearGradients(tz.Storage, tx.Storage, tx.Layout, tw.Storage, tw.Layout, wantX ? gx.Storage : null, wantW ? gw.Storage : null, m, n, k);
                    if (wantX) AssertNear(gx.ToArray<double>(), dx, magDx, dt, n, $"{what}: dx");
                    else Assert.That(gx.ToArray<double>(), Is.All.EqualTo(7.0), $"{what}: dx untouched");
                    if (wantW) AssertNear(gw.ToArray<double>(), dw, magDw, dwType, m, $"{what}: dw");
                    else Assert.That(gw.ToArray<double>(), Is.All.EqualTo(7.0), $"{what}: dw untouched");
                }
    }

    /// <summary>
    /// The grouped launch under every 64-thread SIMT tiling (each register tile and block shape, double-buffered or
    /// not) with partial row and column tiles in both problems and k past one stage.
    /// </summary>
    [TestCase("f32-32x32x32-4x4")]
    [TestCase("f32-64x64x16-8x8")]
    [TestCase("f32-16x16x32-2x2")]
    [TestCase("f32-32x32x8-4x4")]
    [TestCase("f64-32x32x32-4x4")]
    [TestCase("f64-16x16x32-2x2")]
    [TestCase("f64-32x32x8-4x4")]
    public void GroupedLaunch_MatchesFloat64_UnderEveryEmulatedTiling(string plan)
    {
        var backend = (CudaBackend)BackendRegistry.Get(CudaBackend.EmulatedDevice);
        backend.GemmPlanOverride = plan;
        var dt = plan.StartsWith("f64", StringComparison.Ordinal) ? DType.Float64 : DType.Float32;
        var p = GemmPlans.Named(plan);
        int m = p.BM + 3, n = p.BN + 5, k = 2 * p.BM - 1;
        var rng = new Random(plan.Length);
        var z = Ref.Random(rng, m * n, dt);
        var x = Ref.Random(rng, m * k, dt);
        var w = Ref.Random(rng, n * k, dt);
        var (dx, magDx) = Product(m, k, n, (i, j, q) => z[i * n + q] * w[q * k + j]);
        var (dw, magDw) = Product(n, k, m, (i, j, q) => z[q * n + i] * x[q * k + j]);
        var dev = CudaBackend.EmulatedDevice;
        using var tz = Make(z, m, n, dt, Kind.Contiguous, dev);
        using var tx = Make(x, m, k, dt, Kind.Transposed, dev);
        using var tw = Make(w, n, k, dt, Kind.Strided, dev);
        using var gx = Tensor.Zeros([m, k], dt, dev);
        using var gw = Tensor.Zeros([n, k], dt, dev);
        long before = backend.GroupedGemmLaunches;
        ((IBackend)backend).LinearGradients(tz.Storage, tx.Storage, tx.Layout, tw.Storage, tw.Layout, gx.Storage, gw.Storage, m, n, k);
        Assert.That(backend.GroupedGemmLaunches - before, Is.EqualTo(1), "one grouped launch");
        AssertNear(gx.ToArray<double>(), dx, magDx, dt, n, $"{plan}: dx");
        AssertNear(gw.ToArray<double>(), dw, magDw, dt, m, $"{plan}: dw");
    }

    /// <summary>
    /// The tensor-core grouped launch (dx in layout NN, dw in TN, a half or float32 dw) under each 64-thread tiling:
    /// odd m (dw's k edge mid-stage), n and k multiples of 8 past one tile (the 16-byte copies), several k stages.
    /// One launch per call, counted.
    /// </summary>
    [TestCase("mma-64x32x32-2x4", DType.BFloat16)]
    [TestCase("mma-64x32x32-2x4", DType.Float16)]
    [TestCase("mma-64x128x32-4x8", DType.BFloat16)] // the large warp tile: minutes on the emulator, so one dtype
    public void GroupedTensorCoreLaunch_MatchesFloat64_UnderEveryEmulatedTiling(string plan, DType dt)
    {
        var backend = (CudaBackend)BackendRegistry.Get(CudaBackend.EmulatedDevice);
        backend.GemmPlanOverride = plan;
        var p = GemmPlans.Named(plan);
        // Two row tiles of dw, a partial column tile (two for the small tiling's 32 columns).
        int m = 69, n = p.BM + 8, k = p.BN >= 128 ? p.BN - 8 : p.BN + 8;
        var rng = new Random(plan.Length + (int)dt);
        var z = Ref.Random(rng, m * n, dt);
        var x = Ref.Random(rng, m * k, dt);
        var w = Ref.Random(rng, n * k, dt);
        var (dx, magDx) = Product(m, k, n, (i, j, q) => z[i * n + q] * w[q * k + j]);
        var (dw, magDw) = Product(n, k, m, (i, j, q) => z[q * n + i] * x[q * k + j]);
        var dev = CudaBackend.EmulatedDevice;
        // The large warp tile's case is bf16, whose bf16-dw variant a GPU runs as two GEMMs (it spills under ptxas, see
        // KernelRegistry), and each emulated launch of that tile takes over a minute: only its float32 dw here.
        foreach (var dwType in p.BN >= 128 ? new[] { DType.Float32 } : new[] { dt, DType.Float32 })
        {
            using var tz = Make(z, m, n, dt, Kind.Contiguous, dev);
            using var tx = Make(x, m, k, dt, Kind.Contiguous, dev);
            using var tw = Make(w, n, k, dt, Kind.Contiguous, dev);
            using var gx = Tensor.Full([m, k], 7.0, dt, dev);
            using var gw = Tensor.Full([n, k], 7.0, dwType, dev);
            long before = backend.GroupedGemmLaunches;
            ((IBackend)backend).LinearGradients(tz.Storage, tx.Storage, tx.Layout, tw.Storage, tw.Layout, gx.Storage, gw.Storage, m, n, k);
            Assert.That(backend.GroupedGemmLaunches - before, Is.EqualTo(1), "one grouped launch");
            AssertNear(gx.ToArray<double>(), dx, magDx, dt, n, $"{plan} {dt.Name()}: dx");
            AssertNear(gw.ToArray<double>(), dw, magDw, dwType, m, $"{plan} {dt.Name()}: dw ({dwType.Name()})");
        }
    }

    /// <summary>
    /// Through <see cref="Tensor.Linear"/>'s backward: an input whose batch dims do not fold into rows (a transposed
    /// [2, 3, 5] view) gives the gradients of the same values laid out contiguously, bit for bit, for every activation,
    /// on the CPU and the emulated CUDA backend; and float64 gradients of such an input match finite differences.
    /// </summary>
    [TestCase(Activation.None)]
    [TestCase(Activation.Relu)]
    [TestCase(Activation.Gelu)]
    [TestCase(Activation.GeluTanh)]
    public void Backward_OfAnUnfoldableInput_MatchesTheContiguousOne(Activation act)
    {
        var rng = new Random(40 + (int)act);
        var xv = Ref.Random(rng, 3 * 2 * 5, DType.Float64);
        var wv = Ref.Random(rng, 4 * 5, DType.Float64);
        var bv = Ref.Random(rng, 4, DType.Float64);
        var gv = Ref.Random(rng, 2 * 3 * 4, DType.Float64);
        foreach (var dev in new[] { Device.Cpu, CudaBackend.EmulatedDevice })
            foreach (var dt in new[] { DType.Float32, DType.BFloat16 })
            {
                double[][] Run(bool strided)
                {
                    using var scope = Tensor.NewScope();
                    var x3 = Tensor.FromArray(xv, [3, 2, 5], dev).To(dt);
                    var x = strided ? x3.Transpose(0, 1) : x3.Transpose(0, 1).Contiguous();
                    var leaf = x.Detach();
                    leaf.RequiresGrad = true;
                    var w = Tensor.FromArray(wv, [4, 5], dev).To(dt); w.RequiresGrad = true;
                    var b = Tensor.FromArray(bv, [4], dev).To(dt); b.RequiresGrad = true;
                    Tensor.Linear(leaf, w, b, act).Backward(Tensor.FromArray(gv, [2, 3, 4], dev).To(dt));
                    return [leaf.Grad!.ToArray<double>(), w.Grad!.ToArray<double>(), b.Grad!.ToArray<double>()];
                }
                var (s, c) = (Run(true), Run(false));
                for (int i = 0; i < 3; i++) Assert.That(s[i], Is.EqualTo(c[i]), $"{dev} {dt.Name()} {act}: gradient {i}");
            }
        using var x64 = Tensor.FromArray(xv, [3, 2, 5], requiresGrad: true);
        using var w64 = Tensor.FromArray(wv, [4, 5], requiresGrad: true);
        using var b64 = Tensor.FromArray(bv, [4], requiresGrad: true);
        GradCheck.Check(t => Tensor.Linear(t[0].Transpose(0, 1), t[1], t[2], act), [x64, w64, b64]);
    }

    // y[i, j] = Σ_p term(i, j, p) over depth p, with Σ|term|.
    static (double[] Value, double[] Magnitude) Product(int rows, int cols, int depth, Func<int, int, int, double> term)
    {
        var v = new double[rows * cols];
        var mag = new double[rows * cols];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                for (int p = 0; p < depth; p++)
                {
                    double t = term(i, j, p);
                    v[i * cols + j] += t; mag[i * cols + j] += Math.Abs(t);
                }
        return (v, mag);
    }

    // The result's own rounding (one, of its dtype) plus float32 (float64) sums of `terms` exact products: a Float32
    // result of 16-bit operands is held to float32's bound, 2^15 times tighter than a bfloat16 rounding would allow.
    static void AssertNear(double[] got, double[] want, double[] magnitude, DType resultType, int terms, string what)
    {
        double eps = resultType switch { DType.Float64 => Math.Pow(2, -53), DType.Float32 => Math.Pow(2, -24), DType.Float16 => Math.Pow(2, -11), _ => Math.Pow(2, -8) };
        double sum = resultType == DType.Float64 ? Math.Pow(2, -53) : Math.Pow(2, -24);
        Assert.That(got, Has.Length.EqualTo(want.Length), what);
        for (int i = 0; i < got.Length; i++)
            Assert.That(Math.Abs(got[i] - want[i]), Is.LessThanOrEqualTo(eps * Math.Abs(want[i]) + 2 * terms * sum * magnitude[i] + 1e-300),
                $"{what} [{i}]: got {got[i]}, want {want[i]}");
    }
}

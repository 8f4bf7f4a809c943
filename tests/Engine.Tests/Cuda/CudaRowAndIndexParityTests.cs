using System.Diagnostics;
using Engine.Autograd;
using Engine.Backends.Cuda;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The CUDA backend's row kernels (softmax, layer/RMS norm, cross entropy) and index kernels (gather, scatter-add)
/// against the CPU backend, through the Tensor API: every op runs forward and backward on the CPU and on the CUDA
/// device from the same values (same layouts, same upstream gradient), and outputs and gradients must agree within
/// the dtype's tolerance; NaN never passes unless both sides are NaN where a test expects it. The CPU backend's own
/// float64 reference tests are RowOpsTests and IndexOpsTests. The emulated device (ILGPU's CPU accelerator) runs by
/// default on small and odd sizes; the Gpu category repeats larger sizes on a real device.
/// </summary>
[TestFixture]
[NonParallelizable] // sets CudaBackend.RowGroupSizeOverride and CudaBackend.DeterministicScatter (process-wide)
public class CudaRowAndIndexParityTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];

    Device _cuda;

    [OneTimeSetUp]
    public void EnableEmulator()
    {
        CudaBackend.EnableEmulation();
        _cuda = CudaBackend.EmulatedDevice;
    }

    [TearDown]
    public void ResetSwitches()
    {
        CudaBackend.RowGroupSizeOverride = 0;
        CudaBackend.DeterministicScatter = false;
    }

    // ---------------- the parity harness ----------------

    /// <summary>One operand: row-major values, shape, dtype, physical layout, and whether its gradient is compared.</summary>
    sealed record Input(double[] Values, int[] Shape, DType DType, Layouts.Kind Kind = Layouts.Kind.Contiguous, bool Grad = true);

    static Input In(Random rng, int[] shape, DType dt, Layouts.Kind kind = Layouts.Kind.Contiguous, double lo = -2, double hi = 2) =>
        new(Ref.Random(rng, Ref.Numel(shape), dt, lo, hi), shape, dt, kind);

    static Input Ints(long[] values, int[] shape, Layouts.Kind kind = Layouts.Kind.Contiguous) =>
        new(values.Select(v => (double)v).ToArray(), shape, DType.Int64, kind, Grad: false);

    /// <summary>Layouts.Make on any device: the same values in the same physical layout.</summary>
    static Tensor Make(Input inp, Device dev)
    {
        var (values, shape, dt, kind) = (inp.Values, inp.Shape, inp.DType, inp.Kind);
        int n = Ref.Numel(shape);
        switch (kind)
        {
            case Layouts.Kind.Transposed when shape.Length >= 2:
            {
                int r = shape.Length;
                var sw = (int[])shape.Clone();
                (sw[r - 1], sw[r - 2]) = (sw[r - 2], sw[r - 1]);
                var buf = new double[n];
                for (int f = 0; f < n; f++)
                {
                    var idx = Ref.Unravel(f, shape);
                    (idx[r - 1], idx[r - 2]) = (idx[r - 2], idx[r - 1]);
                    buf[Ref.Ravel(idx, sw)] = values[f];
                }
                using var t = Tensor.FromArray(buf, sw, dev);
                using var c = t.To(dt);
                return c.Transpose(-1, -2);
            }
            case Layouts.Kind.Strided when shape.Length >= 1:
            {
                var wide = (int[])shape.Clone();
                wide[^1] = shape[^1] * 2;
                var buf = new double[Ref.Numel(wide)];
                for (int f = 0; f < n; f++)
                {
                    var idx = Ref.Unravel(f, shape);
                    idx[^1] *= 2;
                    buf[Ref.Ravel(idx, wide)] = values[f];
                }
                using var t = Tensor.FromArray(buf, wide, dev);
                using var c = t.To(dt);
                return c.Slice(-1, 0, wide[^1], 2);
            }
            case Layouts.Kind.Offset:
            {
                var buf = new double[n + 3];
                Array.Copy(values, 0, buf, 3, n);
                using var t = Tensor.FromArray(buf, [n + 3], dev);
                using var c = t.To(dt);
                using var s = c.Narrow(0, 3, n);
                return s.View(shape);
            }
            default:
            {
                using var t = Tensor.FromArray(values, shape, dev);
                return t.To(dt);
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="f"/> on the CPU and on <paramref name="device"/> (the emulator by default), then compares
    /// the outputs and, after Backward with one random upstream gradient, the gradient of every input marked Grad.
    /// </summary>
    void Check(string what, DType dt, Input[] inputs, Func<Tensor[], Tensor> f, bool backward = true, Device? device = null, double scale = 1)
    {
        var cpu = Run(Device.Cpu, inputs, f, backward);
        var dev = Run(device ?? _cuda, inputs, f, backward);
        Close(dev.Out, cpu.Out, dt, $"{what}: forward", scale);
        for (int i = 0; i < inputs.Length; i++)
        {
            if (cpu.Grads[i] is null && dev.Grads[i] is null) continue;
            Assert.That(dev.Grads[i], Is.Not.Null, $"{what}: the device gave no gradient for input {i}");
            Assert.That(cpu.Grads[i], Is.Not.Null, $"{what}: the CPU gave no gradient for input {i}");
            Close(dev.Grads[i]!, cpu.Grads[i]!, inputs[i].DType, $"{what}: gradient of input {i}", scale);
        }
    }

    static (double[] Out, double[]?[] Grads) Run(Device dev, Input[] inputs, Func<Tensor[], Tensor> f, bool backward)
    {
        using var scope = Tensor.NewScope();
        var ts = inputs.Select(inp => Make(inp, dev)).ToArray();
        for (int i = 0; i < ts.Length; i++)
            if (backward && inputs[i].Grad && inputs[i].DType.IsFloatingPoint()) ts[i].RequiresGrad = true;
        var y = f(ts);
        var output = y.ToArray<double>();
        var grads = new double[]?[ts.Length];
        if (backward && y.RequiresGrad)
        {
            var rng = new Random(1234 + (int)y.Numel);
            using var g64 = Tensor.FromArray(Ref.Random(rng, (int)y.Numel, y.DType, -1, 1), y.Shape, dev);
            using var g = g64.To(y.DType);
            y.Backward(g);
            for (int i = 0; i < ts.Length; i++) grads[i] = ts[i].Grad?.ToArray<double>();
        }
        return (output, grads);
    }

    /// <summary>Relative tolerances of CPU/device parity: float32 1e-5, float16 2e-3 (one ulp is up to 9.8e-4), bfloat16 1.6e-2.</summary>
    static double Rtol(DType dt) => dt switch
    {
        DType.Float64 => 1e-10,
        DType.Float32 => 1e-5,
        DType.Float16 => 2e-3,
        DType.BFloat16 => 1.6e-2,
        _ => 0,
    };

    /// <summary>
    /// |a − e| ≤ rtol·|e| + atol, atol = rtol·max(0.1·max|e|, 0.01): relative, with an absolute floor scaled to the
    /// tensor (results that cancel to near zero from O(1) terms carry the terms' rounding); NaN fails unless both are NaN.
    /// </summary>
    static void Close(double[] actual, double[] expected, DType dt, string what, double scale = 1)
    {
        double rtol = Rtol(dt) * scale, max = 0;
        foreach (var e in expected) if (!double.IsNaN(e) && !double.IsInfinity(e)) max = Math.Max(max, Math.Abs(e));
        Ref.AssertClose(actual, expected, rtol, rtol * Math.Max(0.1 * max, 0.01), what);
    }

    static void AssertNoNaN(double[] values, string what) =>
        Assert.That(values.Count(double.IsNaN), Is.Zero, $"{what}: NaN in the result");

    // ---------------- softmax ----------------

    [Test]
    public void Softmax_AndLogSoftmax_AnyDimAndLayout_MatchCpu([ValueSource(nameof(Floats))] DType dt, [Values(1, 7, 33, 300)] int cols)
    {
        var rng = new Random(cols);
        var kind = cols switch { 1 => Layouts.Kind.Offset, 7 => Layouts.Kind.Transposed, 33 => Layouts.Kind.Strided, _ => Layouts.Kind.Transposed };
        foreach (bool log in new[] { false, true })
        {
            string name = log ? "LogSoftmax" : "Softmax";
            Func<Tensor, int, Tensor> op = log ? (x, d) => x.LogSoftmax(d) : (x, d) => x.Softmax(d);
            // The last dim of a non-contiguous input, and a leading dim (moved last by the Tensor layer).
            Check($"{name} [2, {cols}] {kind}, dim -1 ({dt})", dt, [In(rng, [2, cols], dt, kind, -4, 4)], t => op(t[0], -1));
            Check($"{name} [{cols}, 2] dim 0 ({dt})", dt, [In(rng, [cols, 2], dt, Layouts.Kind.Contiguous, -4, 4)], t => op(t[0], 0));
        }
    }

    [Test]
    public void Softmax_ManyRows_LoopOverGroups_MatchesCpu()
    {
        // More rows than the launch has groups: each group walks several rows.
        var rng = new Random(5);
        Check("Softmax [9, 5]", DType.Float32, [In(rng, [9, 5], DType.Float32)], t => t[0].Softmax(-1));
        Check("LogSoftmax [2, 3, 11] dim 1", DType.Float32, [In(rng, [2, 3, 11], DType.Float32, Layouts.Kind.Strided)], t => t[0].LogSoftmax(1));
    }

    [Test]
    public void Softmax_LargeLogits_StayFinite_AndInfinityAndNaNPropagateAsOnCpu()
    {
        double[] v = [1000, 999, -1000, 0, 5, double.NegativeInfinity, 1, 2, double.NaN, 3, 4, 5];
        var x = new Input(v, [3, 4], DType.Float32, Grad: false);
        var cpu = Run(Device.Cpu, [x], t => t[0].LogSoftmax(-1), false).Out;
        var dev = Run(_cuda, [x], t => t[0].LogSoftmax(-1), false).Out;
        Assert.That(dev.Take(4).All(double.IsFinite), Is.True, "logits of ±1000 stay finite");
        Assert.That(dev[5], Is.EqualTo(double.NegativeInfinity), "a −∞ logit has log-probability −∞");
        Ref.AssertClose(dev, cpu, 1e-5, 1e-5, "LogSoftmax with huge, infinite and NaN logits");
        Assert.That(dev.Skip(8).All(double.IsNaN), Is.True, "a NaN makes its row NaN");
    }

    // ---------------- layer norm / RMS norm ----------------

    [Test]
    public void LayerNorm_WithAndWithoutAffine_MatchesCpu([ValueSource(nameof(Floats))] DType dt, [Values(1, 7, 33, 300)] int cols)
    {
        // Each row costs the emulator a few milliseconds per reduction (every barrier and shuffle is an OS-thread
        // rendezvous), so rows are few and the affine variants take turns over the row lengths.
        var rng = new Random(100 + cols);
        var x = In(rng, [3, cols], dt, cols % 2 == 0 ? Layouts.Kind.Transposed : Layouts.Kind.Strided, -3, 5);
        var w = In(rng, [cols], dt, Layouts.Kind.Contiguous, 0.5, 1.5);
        var b = In(rng, [cols], dt);
        switch (cols)
        {
            case 1:
                Check($"LayerNorm [3, 1] ({dt})", dt, [x], t => t[0].LayerNorm([cols]));
                Check($"RmsNorm [3, 1] ({dt})", dt, [x], t => t[0].RmsNorm([cols]));
                break;
            case 7:
                Check($"LayerNorm [3, 7] weight ({dt})", dt, [x, w], t => t[0].LayerNorm([cols], t[1]));
                Check($"RmsNorm [3, 7] weight ({dt})", dt, [x, w], t => t[0].RmsNorm([cols], t[1], 1e-5));
                break;
            case 33:
                Check($"LayerNorm [3, 33] weight, bias ({dt})", dt, [x, w, b], t => t[0].LayerNorm([cols], t[1], t[2]));
                Check($"RmsNorm [3, 33] ({dt})", dt, [x], t => t[0].RmsNorm([cols]));
                break;
            default:
                Check($"LayerNorm [3, {cols}] weight, bias ({dt})", dt, [x, w, b], t => t[0].LayerNorm([cols], t[1], t[2]));
                Check($"RmsNorm [3, {cols}] weight ({dt})", dt, [x, w], t => t[0].RmsNorm([cols], t[1]));
                break;
        }
    }

    [Test]
    public void AddLayerNorm_MatchesCpu([ValueSource(nameof(Floats))] DType dt, [Values(1, 33, 300)] int cols)
    {
        // The residual add fused into the norm: sum and normalized output (concatenated) and the gradients of x,
        // residual, weight and bias, from non-contiguous inputs.
        var rng = new Random(200 + cols);
        var x = In(rng, [3, cols], dt, Layouts.Kind.Strided, -3, 5);
        var r = In(rng, [3, cols], dt, cols == 1 ? Layouts.Kind.Offset : Layouts.Kind.Transposed);
        var w = In(rng, [cols], dt, Layouts.Kind.Offset, 0.5, 1.5);
        var b = In(rng, [cols], dt);
        Check($"AddLayerNorm [3, {cols}] ({dt})", dt, [x, r, w, b], t =>
        {
            var (s, y) = t[0].AddLayerNorm(t[1], [cols], t[2], t[3]);
            using (s) using (y) return Tensor.Cat([s, y]);
        });
    }

    [Test]
    public void LayerNorm_ManyRows_ColumnSumsInSeveralBlocks_MatchCpu([Values(DType.Float32, DType.BFloat16)] DType dt)
    {
        // 35 rows give three row blocks of partial column sums for dWeight and dBias; a two-dim normalized shape.
        var rng = new Random(7);
        var x = In(rng, [35, 2, 3], dt, Layouts.Kind.Offset);
        var w = In(rng, [2, 3], dt, Layouts.Kind.Transposed, 0.5, 1.5);
        var b = In(rng, [2, 3], dt);
        if (dt == DType.Float32) Check($"LayerNorm [35, 2, 3] over [2, 3] ({dt})", dt, [x, w, b], t => t[0].LayerNorm([2, 3], t[1], t[2]), scale: 2);
        else Check($"RmsNorm [35, 2, 3] over [2, 3] ({dt})", dt, [x, w], t => t[0].RmsNorm([2, 3], t[1]), scale: 2);
    }

    [Test]
    public void LayerNormBackward_ColumnSums_AreDeterministic()
    {
        var rng = new Random(8);
        var x = In(rng, [20, 33], DType.Float32);
        var w = In(rng, [33], DType.Float32, Layouts.Kind.Contiguous, 0.5, 1.5);
        var b = In(rng, [33], DType.Float32);
        var first = Run(_cuda, [x, w, b], t => t[0].LayerNorm([33], t[1], t[2]), true);
        var second = Run(_cuda, [x, w, b], t => t[0].LayerNorm([33], t[1], t[2]), true);
        for (int i = 0; i < 3; i++) Assert.That(second.Grads[i], Is.EqualTo(first.Grads[i]), $"gradient {i} differs between runs");
    }

    // ---------------- row group sizes ----------------

    [Test]
    public void RowKernels_OneWarpAndTwoWarpGroups_MatchCpu([Values(32, 64)] int group, [Values(1, 300, 1000)] int cols)
    {
        CudaBackend.RowGroupSizeOverride = group;
        var rng = new Random(group + cols);
        var dt = DType.Float32;
        var x = In(rng, [2, cols], dt, Layouts.Kind.Contiguous, -3, 3);
        var w = In(rng, [cols], dt, Layouts.Kind.Contiguous, 0.5, 1.5);
        var b = In(rng, [cols], dt);
        var target = Ints([cols - 1, cols / 2], [2]);
        Check($"Softmax, group {group}", dt, [x], t => t[0].Softmax(-1));
        Check($"LogSoftmax, group {group}", dt, [x], t => t[0].LogSoftmax(-1));
        Check($"LayerNorm, group {group}", dt, [x, w, b], t => t[0].LayerNorm([cols], t[1], t[2]));
        Check($"CrossEntropy, group {group}", dt, [x, target], t => t[0].CrossEntropy(t[1], labelSmoothing: 0.1));
    }

    [Test]
    public void RowGroupSize_NotAWarpMultiple_Throws()
    {
        CudaBackend.RowGroupSizeOverride = 48;
        using var x = Tensor.Zeros([2, 3], DType.Float32, _cuda);
        var e = Assert.Throws<EngineException>(() => x.Softmax(-1).Dispose())!;
        Assert.That(e.Message, Does.Contain("warp"));
    }

    // ---------------- cross entropy and MSE ----------------

    [Test]
    public void CrossEntropy_Reductions_IgnoreIndex_LabelSmoothing_MatchCpu(
        [ValueSource(nameof(Floats))] DType dt, [Values(Reduction.None, Reduction.Mean, Reduction.Sum)] Reduction reduction)
    {
        double smoothing = reduction == Reduction.Sum ? 0.0 : 0.1;
        var rng = new Random((int)reduction * 10 + (int)dt);
        var logits = In(rng, [4, 7], dt, Layouts.Kind.Transposed, -3, 3);
        var target = Ints([3, -100, 0, 6], [4]);
        Check($"CrossEntropy [4, 7] {reduction} ε={smoothing} ({dt})", dt, [logits, target],
            t => t[0].CrossEntropy(t[1], reduction, labelSmoothing: smoothing));
        // Class dim in the middle: [N, C, d] with target [N, d], a custom ignore index, 33 classes.
        var spatial = In(rng, [2, 33, 2], dt, Layouts.Kind.Strided, -3, 3);
        var target2 = Ints([32, 5, 0, 7], [2, 2], Layouts.Kind.Transposed);
        Check($"CrossEntropy [2, 33, 3] {reduction} ε={smoothing} ({dt})", dt, [spatial, target2],
            t => t[0].CrossEntropy(t[1], reduction, ignoreIndex: 5, labelSmoothing: smoothing));
    }

    [Test]
    public void CrossEntropy_OneClass_AndAllIgnored_MatchCpu()
    {
        var rng = new Random(3);
        Check("CrossEntropy [4, 1]", DType.Float32, [In(rng, [4, 1], DType.Float32), Ints([0, 0, 0, 0], [4])], t => t[0].CrossEntropy(t[1]));
        // Mean over no valid target is NaN on both.
        var x = In(rng, [2, 3], DType.Float32);
        var ignored = Ints([-100, -100], [2]);
        var cpu = Run(Device.Cpu, [x, ignored], t => t[0].CrossEntropy(t[1]), false).Out;
        var dev = Run(_cuda, [x, ignored], t => t[0].CrossEntropy(t[1]), false).Out;
        Assert.That(double.IsNaN(cpu[0]) && double.IsNaN(dev[0]), Is.True, $"cpu {cpu[0]}, cuda {dev[0]}");
        Check("CrossEntropy all ignored, sum", DType.Float32, [x, ignored], t => t[0].CrossEntropy(t[1], Reduction.Sum));
    }

    [Test]
    public void MseLoss_MatchesCpu([ValueSource(nameof(Floats))] DType dt, [Values(Reduction.None, Reduction.Mean, Reduction.Sum)] Reduction reduction)
    {
        var rng = new Random(11);
        Check($"MseLoss {reduction} ({dt})", dt, [In(rng, [7, 5], dt, Layouts.Kind.Transposed), In(rng, [7, 5], dt, Layouts.Kind.Offset)],
            t => t[0].MseLoss(t[1], reduction));
    }

    // ---------------- gather / scatter-add and the ops built on them ----------------

    static long[] RandomIndices(Random rng, int n, int size, bool negative) =>
        Enumerable.Range(0, n).Select(_ => (long)rng.Next(negative ? -size : 0, size)).ToArray();

    [Test]
    public void Gather_AnyDim_NonContiguous_MatchesCpu([ValueSource(nameof(Floats))] DType dt, [Values(0, 1, 2)] int dim, [Values] bool deterministic)
    {
        CudaBackend.DeterministicScatter = deterministic;
        var rng = new Random(dim * 2 + (deterministic ? 1 : 0));
        int[] shape = [3, 4, 5];
        int[] ishape = [2, 3, 4];
        ishape[dim] = 6; // more picks than the dim has: duplicates accumulate in the backward
        var x = In(rng, shape, dt, Layouts.Kind.Transposed);
        var index = Ints(RandomIndices(rng, Ref.Numel(ishape), shape[dim], negative: false), ishape, Layouts.Kind.Strided);
        Check($"Gather dim {dim} ({dt}, {(deterministic ? "ordered" : "atomic")})", dt, [x, index], t => t[0].Gather(dim, t[1]));
    }

    [Test]
    public void ScatterAdd_Duplicates_MatchesCpu([ValueSource(nameof(Floats))] DType dt, [Values(0, 2)] int dim, [Values] bool deterministic)
    {
        CudaBackend.DeterministicScatter = deterministic;
        var rng = new Random(20 + dim);
        int[] shape = [3, 4, 5];
        int[] sshape = [3, 4, 5];
        sshape[dim] = 7;
        int[] ishape = [2, 4, 3];
        ishape[dim] = 7;
        var x = In(rng, shape, dt, Layouts.Kind.Offset);
        var index = Ints(RandomIndices(rng, Ref.Numel(ishape), shape[dim], negative: false), ishape);
        var source = In(rng, sshape, dt, Layouts.Kind.Transposed);
        Check($"ScatterAdd dim {dim} ({dt}, {(deterministic ? "ordered" : "atomic")})", dt, [x, index, source], t => t[0].ScatterAdd(dim, t[1], t[2]));
    }

    [Test]
    public void ScatterAdd_IntegersAndBool_ExactEitherWay([Values(DType.Int32, DType.Int64, DType.Bool)] DType dt, [Values] bool deterministic)
    {
        CudaBackend.DeterministicScatter = deterministic;
        var rng = new Random(30);
        // Bool sums are "or" (the source has zeros and ones; so has x).
        var x = new Input(Enumerable.Range(0, 12).Select(i => (double)(dt == DType.Bool ? i % 5 / 4 : i)).ToArray(), [3, 4], dt, Grad: false);
        var index = Ints(RandomIndices(rng, 3 * 9, 4, negative: false), [3, 9]);
        var source = new Input(Enumerable.Range(0, 27).Select(i => (double)(dt == DType.Bool ? i % 3 / 2 : i * 7 - 50)).ToArray(), [3, 9], dt, Grad: false);
        var cpu = Run(Device.Cpu, [x, index, source], t => t[0].ScatterAdd(1, t[1], t[2]), false).Out;
        var dev = Run(_cuda, [x, index, source], t => t[0].ScatterAdd(1, t[1], t[2]), false).Out;
        Assert.That(dev, Is.EqualTo(cpu));
    }

    [Test]
    public void ScatterAdd_Deterministic_IsBitIdenticalToCpu([Values(DType.Float32, DType.Float16, DType.BFloat16)] DType dt)
    {
        CudaBackend.DeterministicScatter = true;
        var rng = new Random(40);
        // Many updates into few rows, with values of very different magnitudes: the sum depends on the order.
        var x = new Input(Ref.Random(rng, 4 * 33, dt), [4, 33], dt, Grad: false);
        var values = Ref.Random(rng, 50 * 33, dt).Select((v, i) => v * Math.Pow(10, i % 7 - 3)).Select(v => Ref.RoundTo(v, dt)).ToArray();
        var source = new Input(values, [50, 33], dt, Layouts.Kind.Transposed, Grad: false);
        var index = Ints(RandomIndices(rng, 50 * 33, 4, negative: false), [50, 33]);
        var cpu = Run(Device.Cpu, [x, index, source], t => t[0].ScatterAdd(0, t[1], t[2]), false).Out;
        var dev = Run(_cuda, [x, index, source], t => t[0].ScatterAdd(0, t[1], t[2]), false).Out;
        Assert.That(dev, Is.EqualTo(cpu));
        // IndexAdd (the index broadcast along the row): the same order on both.
        var rowIndex = Ints(RandomIndices(rng, 50, 4, negative: false), [50]);
        var source2 = new Input(values, [50, 33], dt, Grad: false);
        cpu = Run(Device.Cpu, [x, rowIndex, source2], t => t[0].IndexAdd(0, t[1], t[2]), false).Out;
        dev = Run(_cuda, [x, rowIndex, source2], t => t[0].IndexAdd(0, t[1], t[2]), false).Out;
        Assert.That(dev, Is.EqualTo(cpu));
    }

    [Test]
    public void IndexSelect_AndEmbedding_WithRepeatedRows_MatchCpu([ValueSource(nameof(Floats))] DType dt, [Values] bool deterministic)
    {
        CudaBackend.DeterministicScatter = deterministic;
        var rng = new Random(50);
        var x = In(rng, [6, 7], dt, Layouts.Kind.Transposed);
        var index = Ints([5, 0, 5, 2, 5, 5, 3], [7], Layouts.Kind.Strided);
        Check($"IndexSelect dim 0 ({dt})", dt, [x, index], t => t[0].IndexSelect(0, t[1]));
        Check($"IndexSelect dim 1 ({dt})", dt, [x, index], t => t[0].IndexSelect(1, t[1]));
        var weight = In(rng, [10, 33], dt);
        var tokens = Ints([1, 9, 1, 0, 8, 1, 4, 4], [2, 4]);
        Check($"Embedding ({dt})", dt, [weight, tokens], t => Tensor.Embedding(t[1], t[0]));
    }

    [Test]
    public void CatStackSplitTril_MatchCpu([ValueSource(nameof(Floats))] DType dt)
    {
        var rng = new Random(60);
        var a = In(rng, [3, 4], dt, Layouts.Kind.Transposed);
        var b = In(rng, [3, 2], dt, Layouts.Kind.Strided);
        var c = In(rng, [3, 4], dt, Layouts.Kind.Offset);
        Check($"Cat dim 1 ({dt})", dt, [a, b, c], t => Tensor.Cat([t[0], t[1], t[2]], 1));
        Check($"Stack dim 2 ({dt})", dt, [a, c], t => Tensor.Stack([t[0], t[1]], 2));
        Check($"Split and Cat back reversed ({dt})", dt, [a], t =>
        {
            var parts = t[0].Split(3, 1);
            try { return Tensor.Cat([parts[1], parts[0]], 1); }
            finally { foreach (var p in parts) p.Dispose(); }
        });
        var m = In(rng, [2, 5, 5], dt, Layouts.Kind.Transposed);
        Check($"Tril ({dt})", dt, [m], t => t[0].Tril());
        Check($"Triu(1) ({dt})", dt, [m], t => t[0].Triu(1));
    }

    // ---------------- device-side validation ----------------

    [Test]
    public void CrossEntropy_TargetOutOfRange_ThrowsAtTheNextSynchronization_NamingTheOp()
    {
        using var logits = Tensor.Zeros([3, 4], DType.Float32, _cuda);
        using var target = Tensor.FromArray(new long[] { 1, 4, 2 }, [3], _cuda);
        using var loss = logits.CrossEntropy(target, Reduction.None); // no host read: nothing thrown yet
        var e = Assert.Throws<ShapeException>(() => loss.ToArray<float>())!;
        Assert.That(e.Op, Is.EqualTo("CrossEntropy"));
        Assert.That(e.Message, Does.Contain("target 4 (row 1)").And.Contain("4 classes"));
        // Reported once: the values (NaN for the bad row) can be read afterwards.
        var values = loss.ToArray<float>();
        Assert.That(float.IsNaN(values[1]) && !float.IsNaN(values[0]), Is.True);

        using var dloss = Tensor.Zeros([3], DType.Float32, _cuda);
        using var bad = Tensor.FromArray(new long[] { -1, 0, 0 }, [3], _cuda);
        using var dx = Tensor.CrossEntropyGradient(logits, bad, dloss);
        var e2 = Assert.Throws<ShapeException>(() => CudaBackendOf(_cuda).Synchronize())!;
        Assert.That(e2.Op, Is.EqualTo("CrossEntropyBackward"));
    }

    [Test]
    public void GatherAndScatterAdd_IndexOutOfRange_ThrowAtTheNextSynchronization([Values] bool deterministic)
    {
        CudaBackend.DeterministicScatter = deterministic;
        using var x = Tensor.Ones([2, 3], DType.Float32, _cuda);
        using var index = Tensor.FromArray(new long[] { 0, 3, -4, 1 }, [2, 2], _cuda);
        using var y = x.Gather(1, index);
        var e = Assert.Throws<ShapeException>(() => y.ToArray<float>())!;
        Assert.That(e.Op, Is.EqualTo("Gather"));
        Assert.That(e.Message, Does.Contain("out of bounds for a dim of size 3"));
        Assert.That(y.ToArray<float>(), Is.EqualTo(new[] { 1f, 0f, 0f, 1f }), "elements of bad indices read 0");

        using var source = Tensor.Ones([2, 2], DType.Float32, _cuda);
        using var s = x.ScatterAdd(1, index, source);
        var e2 = Assert.Throws<ShapeException>(() => s.ToArray<float>())!;
        Assert.That(e2.Op, Is.EqualTo("ScatterAdd"));
        Assert.That(s.ToArray<float>(), Is.EqualTo(new[] { 2f, 1f, 1f, 1f, 2f, 1f }), "bad updates are skipped");
    }

    static CudaBackend CudaBackendOf(Device d) => (CudaBackend)Engine.Backends.BackendRegistry.Get(d);

    // ---------------- PTX: what the emulator cannot check ----------------

    [Test]
    public void RowAndIndexKernels_CompileToPtx()
    {
        var kernels = KernelRegistry.All.Where(e => e.Family is KernelRegistry.Row or KernelRegistry.Index).ToList();
        Assert.That(kernels.Select(e => e.Name), Does.Contain("Softmax<Narrow>").And.Contain("ScatterAddAtomic"));
        var failures = new List<string>();
        foreach (var k in kernels)
        {
            try
            {
                var ptx = PtxCompiler.Compile(k);
                if (!ptx.Contains(".entry")) failures.Add($"{k.Name}: no entry point");
                if (k.Name.StartsWith("Softmax<", StringComparison.Ordinal) && !ptx.Contains("shfl.sync.down")) failures.Add($"{k.Name}: no warp shuffle in its reductions");
                if (k.Name == "ScatterAddAtomic" && !ptx.Contains("red.add.global.f32") && !ptx.Contains("atom.add.global.f32") && !ptx.Contains("atom.global.add.f32"))
                    failures.Add("ScatterAtomic: no float32 atomic add");
            }
            catch (Exception e)
            {
                failures.Add($"{k.Name}: {e.GetType().Name}: {e.Message.Split('\n')[0]} {e.InnerException?.Message}");
            }
        }
        Assert.That(failures, Is.Empty);
    }

    // ---------------- a real GPU: larger sizes ----------------

    [Test]
    [Category("Gpu")]
    public void RealDevice_LargerSizes_MatchCpu()
    {
        if (CudaBackend.RealDeviceCount == 0) Assert.Ignore("no CUDA device");
        var sw = Stopwatch.StartNew();
        LargerSizes(Device.Cuda(0), 1);
        TestContext.Out.WriteLine($"real-device parity in {sw.Elapsed.TotalSeconds:F1} s");
    }

    /// <summary>The Gpu category's cases, every size divided by <paramref name="div"/> (1 on a GPU).</summary>
    void LargerSizes(Device gpu, int div)
    {
        int S(int n) => Math.Max(1, n / div);
        int vocab = S(50257), d = S(768);
        var rng = new Random(90);
        foreach (var dt in new[] { DType.Float32, DType.BFloat16 })
        {
            Check($"Softmax [{S(64)}, {S(4096)}] ({dt})", dt, [In(rng, [S(64), S(4096)], dt, lo: -8, hi: 8)], t => t[0].Softmax(-1), device: gpu);
            Check($"LogSoftmax [4, {vocab}] ({dt})", dt, [In(rng, [4, vocab], dt, lo: -8, hi: 8)], t => t[0].LogSoftmax(-1), device: gpu);
            var x = In(rng, [S(512), d], dt, Layouts.Kind.Transposed);
            var w = In(rng, [d], dt, lo: 0.5, hi: 1.5);
            var b = In(rng, [d], dt);
            Check($"LayerNorm [{S(512)}, {d}] ({dt})", dt, [x, w, b], t => t[0].LayerNorm([d], t[1], t[2]), device: gpu, scale: 4);
            Check($"RmsNorm [{S(512)}, {d}] ({dt})", dt, [x, w], t => t[0].RmsNorm([d], t[1]), device: gpu, scale: 4);
            var logits = In(rng, [S(256), vocab], dt, lo: -4, hi: 4);
            var targets = Ints(RandomIndices(rng, S(256), vocab, negative: false).Select((v, i) => i % 17 == 0 ? -100 : v).ToArray(), [S(256)]);
            Check($"CrossEntropy [{S(256)}, {vocab}] ({dt})", dt, [logits, targets], t => t[0].CrossEntropy(t[1], labelSmoothing: 0.1), device: gpu);
            foreach (bool deterministic in new[] { false, true })
            {
                CudaBackend.DeterministicScatter = deterministic;
                string mode = deterministic ? "ordered" : "atomic";
                var weight = In(rng, [S(5000), S(256)], dt);
                var tokens = Ints(RandomIndices(rng, S(4096), S(50), negative: false), [S(4096)]);
                Check($"Embedding [{S(5000)}, {S(256)}] × {S(4096)} tokens ({dt}, {mode})", dt, [weight, tokens],
                    t => Tensor.Embedding(t[1], t[0]), device: gpu, scale: 4);
                var src = In(rng, [S(64), S(1000)], dt);
                var index = Ints(RandomIndices(rng, S(64) * S(1000), S(300), negative: false), [S(64), S(1000)]);
                Check($"ScatterAdd dim 1 ({dt}, {mode})", dt, [In(rng, [S(64), S(300)], dt), index, src],
                    t => t[0].ScatterAdd(1, t[1], t[2]), device: gpu, scale: 4);
            }
        }
        // Float64 runs ILGPU's software exp/log on the device.
        CudaBackend.DeterministicScatter = false;
        var d64 = DType.Float64;
        Check($"Softmax [{S(64)}, {S(4096)}] (Float64)", d64, [In(rng, [S(64), S(4096)], d64, lo: -8, hi: 8)], t => t[0].Softmax(-1), device: gpu);
        Check($"LayerNorm [{S(256)}, {d}] (Float64)", d64, [In(rng, [S(256), d], d64), In(rng, [d], d64)], t => t[0].LayerNorm([d], t[1]), device: gpu, scale: 100);
        Check($"CrossEntropy [{S(64)}, {vocab}] (Float64)", d64, [In(rng, [S(64), vocab], d64, lo: -4, hi: 4), Ints(RandomIndices(rng, S(64), vocab, negative: false), [S(64)])],
            t => t[0].CrossEntropy(t[1], labelSmoothing: 0.1), device: gpu);
    }
}

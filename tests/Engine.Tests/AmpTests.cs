using System.Diagnostics;
using Engine.Amp;
using Engine.Autocast;
using Engine.Backends;
using Engine.Graph;
using Engine.Autograd.Nn;
using Engine.Ops;
using Engine.Autograd.Optim;
using Engine.Tests.Support;
using Microsoft.Extensions.Logging;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Automatic mixed precision: the two AMP kernels against plain references, the autocast policy table and regions,
/// the gradient scaler's algorithm (PyTorch's semantics, bit-exact skips, the bfloat16 pass-through), and training
/// runs under float16 and bfloat16 reaching the float32 run's accuracy.
/// </summary>
[NonParallelizable] // swaps the process-wide log factory
public class AmpTests
{
    [SetUp]
    public void NoScopeOrRegionOpen()
    {
        Assert.That(DisposeScope.Current, Is.Null, "a test left a scope open");
        Assert.That(AutocastMode.IsEnabled(DeviceType.Cpu), Is.False, "a test left an autocast region open");
    }

    static double[] Values(Tensor t) => t.ToArray<double>();
    static long[] Bits(Tensor t) => t.ToArray<double>().Select(BitConverter.DoubleToInt64Bits).ToArray();
    static float Float(Tensor t) => t.Item<float>();

    // A tensor of the given dtype holding values (already representable in it).
    static Tensor F(double[] values, int[] shape, DType dtype = DType.Float32)
    {
        using var d = Tensor.FromArray(values, shape);
        return d.To(dtype);
    }

    // ================================================================ kernels

    static readonly DType[] FloatTypes = [DType.Float32, DType.Float16, DType.BFloat16, DType.Float64];

    // The reference of the unscale kernel: widen, multiply once in float32 (float64 for Float64), round once.
    static double UnscaleRef(double x, float inv, DType dtype) =>
        dtype == DType.Float64 ? x * inv : Ref.RoundTo((float)x * inv, dtype);

    [Test]
    public void NonFiniteCheckAndUnscale_MultipliesEveryGradientOnceAndFlagsNonFinite([ValueSource(nameof(FloatTypes))] DType dtype)
    {
        var rng = new Random(1);
        int[][] shapes = [[5], [3, 4], [70_000], [1]]; // 70,000 float32 elements take the SIMD path over several chunks
        foreach (float inv in new[] { 1f / 1024, 1f / 3, 1f })
        {
            var data = shapes.Select(s => Ref.Random(rng, Ref.Numel(s), dtype, -100, 100)).ToArray();
            var grads = shapes.Select((s, i) => F(data[i], s, dtype)).ToArray();
            using var found = Tensor.Zeros([]);
            using var invT = Tensor.Scalar(inv);
            using var calls = KernelCounter.Begin();
            Tensor.NonFiniteCheckAndUnscale(grads, found, invT);
            Assert.That(calls.Count(nameof(IBackend.NonFiniteCheckAndUnscale)), Is.EqualTo(1), "one fused launch for all gradients");
            Assert.That(Float(found), Is.Zero, "finite gradients leave found-inf at 0");
            for (int i = 0; i < grads.Length; i++)
            {
                var want = data[i].Select(x => UnscaleRef(x, inv, dtype)).ToArray();
                Assert.That(Bits(grads[i]), Is.EqualTo(want.Select(BitConverter.DoubleToInt64Bits).ToArray()), $"{dtype.Name()} gradient {i} × {inv}");
                grads[i].Dispose();
            }
        }

        // Inf, -Inf and NaN anywhere are flagged; they are still multiplied (as PyTorch's kernel).
        foreach (var bad in new[] { double.PositiveInfinity, double.NegativeInfinity, double.NaN })
        {
            var v = Ref.Random(rng, 40, dtype);
            v[17] = bad;
            using var clean = F(Ref.Random(rng, 8, dtype), [8], dtype);
            using var g = F(v, [40], dtype);
            using var found = Tensor.Zeros([]);
            using var invT = Tensor.Scalar(0.5);
            Tensor.NonFiniteCheckAndUnscale([clean, g], found, invT);
            Assert.That(Float(found), Is.EqualTo(1f), $"{bad} in a {dtype.Name()} gradient");
            var got = Values(g);
            Assert.That(double.IsNaN(bad) ? double.IsNaN(got[17]) : got[17] == bad, Is.True, "the non-finite value stays non-finite");
            Assert.That(got[3], Is.EqualTo(UnscaleRef(v[3], 0.5f, dtype)), "the others are unscaled");
        }

        // Found-inf is never reset by a clean pass.
        using (var g = Tensor.Ones([4], dtype))
        using (var found = Tensor.Ones([]))
        using (var invT = Tensor.Scalar(0.25))
        {
            Tensor.NonFiniteCheckAndUnscale([g], found, invT);
            Assert.That(Float(found), Is.EqualTo(1f));
            Assert.That(Values(g), Is.All.EqualTo(0.25));
        }
    }

    [Test]
    public void NonFiniteCheckAndUnscale_ValidatesItsOperandsBeforeWriting()
    {
        using var found = Tensor.Zeros([]);
        using var inv = Tensor.Scalar(0.5);
        using var g = Tensor.Ones([2, 3]);
        using var gt = g.Transpose(0, 1);
        var e = Assert.Throws<ShapeException>(() => Tensor.NonFiniteCheckAndUnscale([gt], found, inv))!;
        Assert.That(e.Message, Does.Contain("NonFiniteCheckAndUnscale"));
        using var i64 = Tensor.Zeros([3], DType.Int64);
        Assert.Throws<DTypeException>(() => Tensor.NonFiniteCheckAndUnscale([i64], found, inv));
        using var found64 = Tensor.Zeros([], DType.Float64);
        Assert.Throws<DTypeException>(() => Tensor.NonFiniteCheckAndUnscale([g], found64, inv));
        using var inv2 = Tensor.Ones([2]);
        Assert.Throws<DTypeException>(() => Tensor.NonFiniteCheckAndUnscale([g], found, inv2));
        using var alias = g.Detach();
        Assert.Throws<EngineException>(() => Tensor.NonFiniteCheckAndUnscale([g, alias], found, inv));
        Assert.That(Values(g), Is.All.EqualTo(1.0), "a failed call leaves the gradients untouched");

        using var calls = KernelCounter.Begin();
        Tensor.NonFiniteCheckAndUnscale([], found, inv);
        Assert.That(calls.Launches, Is.Zero, "no gradients, no launch");
    }

    // PyTorch's _amp_update_scale_, written plainly.
    static (float Scale, int Tracker) UpdateRef(float scale, int tracker, bool foundInf, double growth, double backoff, int interval)
    {
        if (foundInf) return ((float)(scale * backoff), 0);
        int successful = tracker + 1;
        if (successful != interval) return (scale, successful);
        float grown = (float)(scale * growth);
        return (float.IsFinite(grown) ? grown : scale, 0);
    }

    [Test]
    public void UpdateScale_FollowsPyTorchsRule()
    {
        using var scale = Tensor.Scalar(1024);
        using var tracker = Tensor.Zeros([], DType.Int32);
        using var found = Tensor.Zeros([]);
        float s = 1024; int t = 0;
        // clean ×5, inf, clean ×3, NaN as found-inf (nonzero counts), clean: interval 3, growth 2, backoff 0.3 (rounding).
        double[] flags = [0, 0, 0, 0, 0, 1, 0, 0, 0, double.NaN, 0];
        using var calls = KernelCounter.Begin();
        foreach (var f in flags)
        {
            found.FillInPlace(f);
            Tensor.UpdateScale(scale, tracker, found, 2.0, 0.3, 3);
            (s, t) = UpdateRef(s, t, f != 0, 2.0, 0.3, 3);
            Assert.That(Float(scale), Is.EqualTo(s), $"scale after found-inf {f}");
            Assert.That(tracker.Item<int>(), Is.EqualTo(t), $"tracker after found-inf {f}");
        }
        Assert.That(calls.Count(nameof(IBackend.UpdateScale)), Is.EqualTo(flags.Length));

        // Growth never takes the scale to Inf.
        scale.FillInPlace(3e38);
        tracker.FillInPlace(0);
        found.FillInPlace(0);
        Tensor.UpdateScale(scale, tracker, found, 2.0, 0.5, 1);
        Assert.That(Float(scale), Is.EqualTo(3e38f));
        Assert.That(tracker.Item<int>(), Is.Zero);

        using var tracker64 = Tensor.Zeros([], DType.Int64);
        Assert.Throws<DTypeException>(() => Tensor.UpdateScale(scale, tracker64, found, 2, 0.5, 3));
        Assert.Throws<EngineException>(() => Tensor.UpdateScale(scale, tracker, found, 2, 0.5, 0));
        using var scale16 = Tensor.Scalar(1, DType.Float16);
        Assert.Throws<DTypeException>(() => Tensor.UpdateScale(scale16, tracker, found, 2, 0.5, 3));
    }

    // ================================================================ autocast

    [Test]
    public void AutocastPolicy_OnTheCpu_EveryCategoryGivesTheCpuTablesDType([Values(DType.BFloat16, DType.Float16)] DType region)
    {
        using var scope = Tensor.NewScope();
        var rng = new Random(2);
        var x = F(Ref.Random(rng, 24, DType.Float32, 0.5, 2), [4, 6]);   // positive: Log, Rsqrt
        var w = F(Ref.Random(rng, 18, DType.Float32), [6, 3]);
        var h = x.To(region);                                                               // a 16-bit activation
        var target = Tensor.FromArray(new long[] { 0, 2, 1, 0 }, [4]);
        // Norm weights in the activation's dtype: on the CPU the norms run in their input type, which (as outside
        // autocast) needs weights of that dtype; a float32 weight with a 16-bit input is a DTypeException there.
        var lnW = Tensor.Ones([6], region);
        var x64 = x.To(DType.Float64);
        var ints = Tensor.FromArray(new long[] { 1, 2, 3 }, [3]);

        using (AutocastMode.Autocast(region))
        {
            Assert.That(AutocastMode.RegionDType(DeviceType.Cpu), Is.EqualTo(region));
            // Lower precision.
            Assert.That(x.MatMul(w).DType, Is.EqualTo(region), "MatMul");
            // Linear is one op (PyTorch's autocast linear, which casts all its floating inputs, bias included): the
            // output stays in the region's dtype, unlike the unfused MatMul + float32 bias Add, which promotes.
            using (var lin = new Linear(6, 3, generator: new Generator(1)))
                Assert.That(lin.Weight.DType == DType.Float32 && lin.Forward(x).DType == region, Is.True,
                    "Linear: weight, bias and product in the region's dtype");
            using (var lin = new Linear(6, 3, generator: new Generator(1)))
                Assert.That(lin.Forward(x, Activation.Gelu).DType, Is.EqualTo(region), "Linear + GELU");
            var b3 = F(Ref.Random(rng, 2 * 4 * 6, DType.Float32), [2, 4, 6]);
            Assert.That(b3.MatMul(w).DType, Is.EqualTo(region), "batched MatMul");
            // Float32 (PyTorch's CPU list): the losses; a 16-bit input comes out float32.
            var f32 = new (string Op, Tensor Y)[]
            {
                ("CrossEntropy", h.CrossEntropy(target)), ("NllLoss", h.LogSoftmax(-1).NllLoss(target)), ("MseLoss", h.MseLoss(x)),
            };
            foreach (var (op, y) in f32) Assert.That(y.DType, Is.EqualTo(DType.Float32), op);
            // Input type. Exponentials, powers, softmaxes, norms and sums, float32 on CUDA, are not on the CPU's
            // float32 list; then Mean (as PyTorch), activations, arithmetic.
            var same = new (string Op, Tensor Y)[]
            {
                ("Exp", h.Exp()), ("Log", h.Log()), ("PowScalar", h.Pow(3)), ("Square", h.Square()), ("Rsqrt", h.Rsqrt()),
                ("Pow", h.Pow(h)), ("Softmax", h.Softmax(-1)), ("LogSoftmax", h.LogSoftmax(-1)),
                ("LayerNorm", h.LayerNorm([6], lnW)), ("LayerNorm no affine", h.LayerNorm([6])), ("RmsNorm", h.RmsNorm([6], lnW)),
                ("Sum", h.Sum()), ("Sum dim", h.Sum(1)), ("Norm", h.Norm()), ("LogSumExp", h.LogSumExp(1)),
                ("Mean", h.Mean()), ("Relu", h.Relu()), ("Gelu", h.Gelu()), ("Tanh", h.Tanh()), ("Sqrt", h.Sqrt()),
                ("Add", h.Add(h)), ("Mul scalar", h.Mul(2.0)), ("Transpose", h.T),
            };
            foreach (var (op, y) in same) Assert.That(y.DType, Is.EqualTo(region), op);
            Assert.That(x.Softmax(-1).DType, Is.EqualTo(DType.Float32), "a float32 input of an input-type op stays float32");
            Assert.That(x.Relu().DType, Is.EqualTo(DType.Float32), "float32 input stays float32 outside the lists");
            // Promote: the widest input type.
            Assert.That(Tensor.Cat([h, x]).DType, Is.EqualTo(DType.Float32), "Cat");
            Assert.That(Tensor.Stack([h, x]).DType, Is.EqualTo(DType.Float32), "Stack");
            using (var cond = x.Gt(1.0)) Assert.That(Tensor.Where(cond, h, x).DType, Is.EqualTo(DType.Float32), "Where");
            using (var other = x.To(region == DType.Float16 ? DType.BFloat16 : DType.Float16))
                Assert.That(Tensor.Cat([h, other]).DType, Is.EqualTo(DType.Float32), "Cat of float16 and bfloat16");
            // Float64, integers and Bool are never cast.
            Assert.That(x64.MatMul(x64.T).DType, Is.EqualTo(DType.Float64), "MatMul float64");
            Assert.That(x64.Exp().DType, Is.EqualTo(DType.Float64), "Exp float64");
            Assert.That(ints.Sum().DType, Is.EqualTo(DType.Int64), "Sum int64");
            Assert.That(ints.Exp().DType, Is.EqualTo(DType.Float32), "Exp of int64 (promoted as outside autocast)");
            // The autocast result is the op on explicitly cast inputs.
            using (var hx = x.To(region))
            using (var hw = w.To(region))
            {
                Assert.That(Bits(x.MatMul(w)), Is.EqualTo(Bits(hx.MatMul(hw))), "MatMul values");
                using var hf = h.To(DType.Float32);
                Assert.That(Bits(h.CrossEntropy(target)), Is.EqualTo(Bits(hf.CrossEntropy(target))), "CrossEntropy values");
                using (AutocastMode.Autocast(region, enabled: false))
                using (var plain = h.Softmax(-1))
                    Assert.That(Bits(h.Softmax(-1)), Is.EqualTo(Bits(plain)), "Softmax values: as outside autocast");
            }
            // In-place ops are not autocast: the tensor keeps its dtype, computed as outside autocast.
            var inPlace = h.Clone();
            inPlace.ApplyInPlace(new ExpOp());
            Assert.That(inPlace.DType, Is.EqualTo(region), "ExpInPlace keeps the dtype");
            var leaf = h.Clone();
            leaf.RequiresGrad = true;
            var graphInPlace = leaf.Mul(1.0);
            graphInPlace.ApplyInPlace(new ExpOp());
            Assert.That(graphInPlace.DType, Is.EqualTo(region), "ExpInPlace in a graph keeps the dtype");
            Assert.That(graphInPlace.GradFn!.OutputDType, Is.EqualTo(region), "and records an op of that dtype");
        }
        Assert.That(AutocastMode.IsEnabled(DeviceType.Cpu), Is.False);
        Assert.That(x.MatMul(w).DType, Is.EqualTo(DType.Float32), "outside the region nothing is cast");
        Assert.That(h.Exp().DType, Is.EqualTo(region), "outside the region nothing is cast");
    }

    // The issue's point: on the CPU a 16-bit activation goes through softmax and the norms without a cast pass
    // (a cast is a Copy launch), while the product of float32 inputs is cast down and the loss up.
    [Test]
    public void AutocastOnTheCpu_KeepsSoftmaxAndNormsInBFloat16WithoutCasts_CastsMatMulDownAndLossesUp()
    {
        using var scope = Tensor.NewScope();
        var rng = new Random(6);
        var x = F(Ref.Random(rng, 4 * 8, DType.Float32), [4, 8]);
        var w = F(Ref.Random(rng, 8 * 8, DType.Float32), [8, 8]);
        var h = x.To(DType.BFloat16);
        var lnW = Tensor.Ones([8], DType.BFloat16);
        var target = Tensor.FromArray(new long[] { 0, 7, 3, 1 }, [4]);
        using (AutocastMode.Autocast(DType.BFloat16, DeviceType.Cpu))
        {
            foreach (var (op, f) in new (string, Func<Tensor>)[]
            {
                ("Softmax", () => h.Softmax(-1)), ("LogSoftmax", () => h.LogSoftmax(-1)), ("LayerNorm", () => h.LayerNorm([8], lnW, lnW)),
                ("RmsNorm", () => h.RmsNorm([8], lnW)), ("Exp", () => h.Exp()), ("Sum", () => h.Sum(1)),
            })
            {
                using var calls = KernelCounter.Begin();
                var y = f();
                Assert.That(y.DType, Is.EqualTo(DType.BFloat16), op);
                Assert.That(calls.Count(nameof(IBackend.Copy)), Is.Zero, $"{op}: no cast pass");
            }
            using (var calls = KernelCounter.Begin())
            {
                var y = x.MatMul(w);
                Assert.That(y.DType, Is.EqualTo(DType.BFloat16), "MatMul of float32 inputs");
                Assert.That(calls.Count(nameof(IBackend.Copy)), Is.EqualTo(2), "MatMul: both inputs cast down");
            }
            Assert.That(h.MatMul(w).DType, Is.EqualTo(DType.BFloat16), "MatMul of mixed inputs");
            Assert.That(h.CrossEntropy(target).DType, Is.EqualTo(DType.Float32), "CrossEntropy");
            Assert.That(h.LogSoftmax(-1).NllLoss(target).DType, Is.EqualTo(DType.Float32), "NllLoss");
            Assert.That(h.MseLoss(h).DType, Is.EqualTo(DType.Float32), "MseLoss");
        }
    }

    // The CUDA table is PyTorch's CUDA lists, unchanged; checked through the policy (no device needed).
    [Test]
    public void AutocastPolicy_CudaTableIsPyTorchsCudaLists_AndTheCpuTableDiffersOnlyWhereTheCpuListsDo()
    {
        var cudaFloat32 = new[]
        {
            typeof(ExpOp), typeof(LogOp), typeof(PowScalarOp), typeof(Tensor.PowBackward), typeof(RsqrtOp),
            typeof(Tensor.SoftmaxBackward), typeof(Tensor.LogSoftmaxBackward), typeof(Tensor.LayerNormBackward),
            typeof(Tensor.RmsNormBackward), typeof(Tensor.SumBackward), typeof(Tensor.NormBackward),
            typeof(Tensor.LogSumExpBackward), typeof(Tensor.CrossEntropyBackward), typeof(Tensor.NllLossOp), typeof(Tensor.MseLossOp),
        };
        var losses = new[] { typeof(Tensor.CrossEntropyBackward), typeof(Tensor.NllLossOp), typeof(Tensor.MseLossOp) };
        foreach (var op in cudaFloat32)
        {
            Assert.That(AutocastPolicy.CategoryOf(op, DeviceType.Cuda), Is.EqualTo(AutocastCategory.Float32), $"CUDA {op.Name}");
            Assert.That(AutocastPolicy.TargetDType(op, DeviceType.Cuda, DType.Float16), Is.EqualTo(DType.Float32), $"CUDA {op.Name}");
            var cpu = losses.Contains(op) ? AutocastCategory.Float32 : AutocastCategory.InputType;
            Assert.That(AutocastPolicy.CategoryOf(op, DeviceType.Cpu), Is.EqualTo(cpu), $"CPU {op.Name}");
        }
        foreach (var d in new[] { DeviceType.Cuda, DeviceType.Cpu })
        {
            Assert.That(AutocastPolicy.TargetDType(typeof(Tensor.MatMulBackward), d, DType.BFloat16), Is.EqualTo(DType.BFloat16), $"{d} MatMul");
            Assert.That(AutocastPolicy.TargetDType(typeof(Tensor.MatMulBackward), d, DType.Float16), Is.EqualTo(DType.Float16), $"{d} MatMul");
            Assert.That(AutocastPolicy.CategoryOf(typeof(Tensor.CatBackward), d), Is.EqualTo(AutocastCategory.Promote), $"{d} Cat");
            Assert.That(AutocastPolicy.TargetDType(typeof(Tensor.CatBackward), d, DType.Float16), Is.Null, $"{d} Cat: no cast");
            Assert.That(AutocastPolicy.CategoryOf(typeof(Tensor.MeanBackward), d), Is.EqualTo(AutocastCategory.InputType), $"{d} Mean");
            Assert.That(AutocastPolicy.TargetDType(typeof(ReluOp), d, DType.Float16), Is.Null, $"{d} Relu");
            Assert.That(AutocastPolicy.CategoryOf(typeof(AutocastPolicyTestsUnknownOp), d), Is.EqualTo(AutocastCategory.InputType), $"{d} an unlisted op");
        }
        // Exactly those twelve ops differ between the tables.
        var differ = AutocastPolicy.Cuda.Where(e => AutocastPolicy.Cpu[e.Key] != e.Value).Select(e => e.Key);
        Assert.That(differ, Is.EquivalentTo(cudaFloat32.Except(losses)));
        Assert.That(AutocastPolicy.Cuda.Count(e => e.Value == AutocastCategory.Float32), Is.EqualTo(cudaFloat32.Length));
    }

    sealed class AutocastPolicyTestsUnknownOp;

    // The README's two tables say what the policy does: the ops named in each category's row (outside parentheses)
    // are exactly the table's ops of that category, and the ops the "input type" row names are InputType.
    [TestCase("CUDA autocast table", DeviceType.Cuda)]
    [TestCase("CPU autocast table", DeviceType.Cpu)]
    public void AutocastPolicy_ReadmeTablesMatchThePolicy(string heading, DeviceType device)
    {
        var lines = File.ReadAllLines(Path.Combine(Support.PublishedEngine.RepoRoot(), "README.md"));
        int at = Array.FindIndex(lines, l => l.StartsWith(heading, StringComparison.Ordinal));
        Assert.That(at, Is.GreaterThanOrEqualTo(0), $"README.md has no line starting \"{heading}\"");
        var rows = lines.Skip(at + 1).SkipWhile(l => !l.StartsWith('|')).TakeWhile(l => l.StartsWith('|'))
            .Select(l => l.Split('|', StringSplitOptions.TrimEntries)).Where(c => c.Length >= 4)
            .ToDictionary(c => c[1], c => c[2]);
        static string[] Names(string cell) =>
            System.Text.RegularExpressions.Regex.Matches(cell, "`([A-Za-z]+)`").Select(m => m.Groups[1].Value).ToArray();
        static string Outside(string cell) => System.Text.RegularExpressions.Regex.Replace(cell, @"\([^)]*\)", "");
        static string Name(Type t) => t.Name.EndsWith("Backward") ? t.Name[..^"Backward".Length] : t.Name.EndsWith("Op") ? t.Name[..^2] : t.Name;
        var table = AutocastPolicy.For(device);
        foreach (var (row, category) in new[] { ("region dtype", AutocastCategory.LowerPrecision), ("float32", AutocastCategory.Float32), ("widest input", AutocastCategory.Promote) })
        {
            Assert.That(rows.ContainsKey(row), $"{heading}: no row \"{row}\"");
            Assert.That(Names(Outside(rows[row])), Is.EquivalentTo(table.Where(e => e.Value == category).Select(e => Name(e.Key))), $"{heading}, {row}");
        }
        // Two identities can share a name (AffineOp, the elementwise form, and Tensor.AffineBackward): all must agree.
        var byName = table.ToLookup(e => Name(e.Key), e => e.Value);
        foreach (var op in Names(rows["input type"]))
            Assert.That(byName[op], Is.All.EqualTo(AutocastCategory.InputType), $"{heading}, input type: {op}");
    }

    [Test]
    public void Autocast_NestingAndDisablingRestoreTheOuterState()
    {
        using var scope = Tensor.NewScope();
        var a = Tensor.Ones([2, 2]);
        DType Mm() { using var y = a.MatMul(a); return y.DType; }
        Assert.That(Mm(), Is.EqualTo(DType.Float32));
        using (AutocastMode.Autocast(DType.BFloat16))
        {
            Assert.That(Mm(), Is.EqualTo(DType.BFloat16));
            using (AutocastMode.Autocast(DType.Float16)) Assert.That(Mm(), Is.EqualTo(DType.Float16), "inner region wins");
            Assert.That(Mm(), Is.EqualTo(DType.BFloat16), "outer state restored");
            using (AutocastMode.Autocast(DType.BFloat16, enabled: false))
            {
                Assert.That(AutocastMode.IsEnabled(DeviceType.Cpu), Is.False);
                Assert.That(Mm(), Is.EqualTo(DType.Float32), "disabled inside");
                using (AutocastMode.Autocast(DType.Float16)) Assert.That(Mm(), Is.EqualTo(DType.Float16), "re-enabled in a disabled region");
                Assert.That(Mm(), Is.EqualTo(DType.Float32));
            }
            Assert.That(Mm(), Is.EqualTo(DType.BFloat16), "outer state restored after disabling");
            using (AutocastMode.Autocast(DType.Float16, DeviceType.Cuda))
            {
                Assert.That(Mm(), Is.EqualTo(DType.BFloat16), "a CUDA-only region leaves CPU ops alone");
                Assert.That(AutocastMode.RegionDType(DeviceType.Cuda), Is.EqualTo(DType.Float16));
            }
            Assert.That(AutocastMode.RegionDType(DeviceType.Cuda), Is.EqualTo(DType.BFloat16), "the outer region applies to every device type");
            // Disposing twice is harmless.
            var r = AutocastMode.Autocast(DType.Float16);
            r.Dispose();
            r.Dispose();
            Assert.That(Mm(), Is.EqualTo(DType.BFloat16));
        }
        Assert.That(Mm(), Is.EqualTo(DType.Float32));
        Assert.That(AutocastMode.RegionDType(DeviceType.Cpu), Is.Null);
        Assert.Throws<DTypeException>(() => AutocastMode.Autocast(DType.Float32));
        AutocastMode.Autocast(DType.Float32, enabled: false).Dispose();
    }

    [Test]
    public async Task Autocast_StateFlowsWithAsyncCode()
    {
        using var a = Tensor.Ones([2, 2]);
        static DType Mm(Tensor t) { using var y = t.MatMul(t); return y.DType; }
        var outside = Task.Run(async () => { await Task.Delay(50); return Mm(a); });
        using (AutocastMode.Autocast(DType.BFloat16))
        {
            Assert.That(await Task.Run(() => Mm(a)), Is.EqualTo(DType.BFloat16), "a task started inside the region");
            await Task.Yield();
            Assert.That(Mm(a), Is.EqualTo(DType.BFloat16), "after an await");
        }
        Assert.That(await outside, Is.EqualTo(DType.Float32), "a task started before the region");
        Assert.That(Mm(a), Is.EqualTo(DType.Float32));
    }

    [Test]
    public void Autocast_CachesParameterCastsPerRegion_AndGradientsReachFloat32Parameters()
    {
        // Finalizable handles can keep others alive for one more collection: settle a few times.
        static long Settle()
        {
            for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
            return Storage.LiveCount(DeviceType.Cpu);
        }
        long live0 = Settle();
        CacheScenario();
        Assert.That(Settle(), Is.EqualTo(live0), "no storage leaked by the cache");
    }

    static void CacheScenario()
    {
        using (var lin = new Linear(6, 3, generator: new Generator(4)))
        {
            var rng = new Random(3);
            using var x = F(Ref.Random(rng, 24, DType.Float32), [4, 6]);
            Tensor y1, y2;
            using (AutocastMode.Autocast(DType.BFloat16))
            {
                // Linear casts weight and bias (as PyTorch's autocast linear, whose cache holds every float32 leaf
                // that requires grad): two entries.
                y1 = lin.Forward(x);
                Assert.That(AutocastMode.CachedCastCount, Is.EqualTo(2), "weight and bias are cast once");
                y2 = lin.Forward(x);
                Assert.That(AutocastMode.CachedCastCount, Is.EqualTo(2), "and reused");
                using (AutocastMode.Autocast(DType.Float16))
                {
                    using var y3 = lin.Forward(x);
                    using var s3 = y3.Sum();
                    s3.Backward();                   // frees its graph; the gradients are dropped below
                    lin.ZeroGrad();
                }
                Assert.That(AutocastMode.CachedCastCount, Is.EqualTo(4), "float16 casts are other entries of the same cache");
                using (var noGrad = F(Ref.Random(rng, 18, DType.Float32), [6, 3]))
                using (var y4 = x.MatMul(noGrad))
                    Assert.That(AutocastMode.CachedCastCount, Is.EqualTo(4), "tensors that do not require grad are not cached");
                using (var wt = lin.Weight.T)
                using (var y5 = x.MatMul(wt))
                    Assert.That(AutocastMode.CachedCastCount, Is.EqualTo(4), "a transpose of a parameter is served from its cast");
            }
            Assert.That(AutocastMode.CachedCastCount, Is.Zero, "the cache ends with the outermost region");
            using (var s1 = y1.Sum())
            using (var s2 = y2.Sum())
            using (var loss = s1.Add(s2))
                loss.Backward();                       // outside the region, after the cache was freed
            Assert.That(lin.Weight.Grad!.DType, Is.EqualTo(DType.Float32), "weight gradient in float32");
            Assert.That(lin.Bias!.Grad!.DType, Is.EqualTo(DType.Float32), "bias gradient in float32");

            // The same computation written with explicit casts gives the same gradients, bit for bit.
            using var w2 = lin.Weight.Detach().Clone();
            w2.RequiresGrad = true;
            using var b2 = lin.Bias.Detach().Clone();
            b2.RequiresGrad = true;
            using (var scope = Tensor.NewScope())
            {
                var xb = x.To(DType.BFloat16);
                var wb = w2.To(DType.BFloat16);
                var bb = b2.To(DType.BFloat16);
                var z = Tensor.Linear(xb, wb, bb);
                var loss = z.Sum().Add(z.Sum());
                loss.Backward();
            }
            Assert.That(Bits(lin.Weight.Grad), Is.EqualTo(Bits(w2.Grad!)), "weight gradient");
            Assert.That(Bits(lin.Bias.Grad), Is.EqualTo(Bits(b2.Grad!)), "bias gradient");
            y1.Dispose(); y2.Dispose();
            w2.Grad!.Dispose(); b2.Grad!.Dispose();
            lin.ZeroGrad();

            // An in-place update of the parameter inside a region makes a fresh cast.
            using (AutocastMode.Autocast(DType.BFloat16))
            {
                using var before = lin.Forward(x);
                using (GradMode.NoGrad()) lin.Weight.MulInPlace(2.0);
                using var after = lin.Forward(x);
                Assert.That(AutocastMode.CachedCastCount, Is.EqualTo(2), "the stale cast was replaced");
                using (GradMode.NoGrad())
                {
                    using var wantW = lin.Weight.To(DType.BFloat16);
                    using var xb = x.To(DType.BFloat16);
                    using var wantB = lin.Bias.To(DType.BFloat16);
                    using var withBias = Tensor.Linear(xb, wantW, wantB);
                    Assert.That(Bits(after), Is.EqualTo(Bits(withBias)), "the cast follows the parameter's version");
                }
                using var both = before.Add(after);
                using var total = both.Sum();
                total.Backward();                      // frees the graphs' saved values
            }
            lin.ZeroGrad();
        }
    }

    [Test]
    public void Autocast_LossCarriesTheRegionDType_AndBackwardInsideKeepsTheForwardDTypes()
    {
        using var scope = Tensor.NewScope();
        using var lin = new Linear(4, 3, dtype: DType.BFloat16, generator: new Generator(5));
        var x = F(Ref.Random(new Random(4), 8, DType.BFloat16), [2, 4], DType.BFloat16);
        var target = Tensor.FromArray(new long[] { 1, 2 }, [2]);
        Assert.That(lin.Forward(x).CrossEntropy(target).AutocastDType, Is.Null, "outside autocast");
        using (AutocastMode.Autocast(DType.Float16))
        {
            var loss = lin.Forward(x).CrossEntropy(target);
            Assert.That(loss.AutocastDType, Is.EqualTo(DType.Float16));
            using (AutocastMode.Autocast(DType.Float16, enabled: false)) Assert.That(x.Relu().AutocastDType, Is.Null, "disabled region");
        }
        using (AutocastMode.Autocast(DType.BFloat16))
        {
            var logits = lin.Forward(x);
            var loss = logits.Sum(1).Mean().Add(logits.CrossEntropy(target));   // bfloat16 + float32 (CPU table)
            Assert.That(loss.AutocastDType, Is.EqualTo(DType.BFloat16));
            loss.Backward();                                                      // inside the region
            Assert.That(AutocastDispatch.IsSuspended, Is.False);
        }
        Assert.That(lin.Weight.Grad!.DType, Is.EqualTo(DType.BFloat16), "gradients keep the parameters' dtype");
        Assert.That(lin.Bias!.Grad!.DType, Is.EqualTo(DType.BFloat16));
        lin.ZeroGrad();
    }

    // ================================================================ scaler: misuse, state, policy


    // A small classifier and a fixed data set: inputs [n, 8], labels from a random linear teacher.
    static (Tensor X, Tensor Y) TeacherData(int n, int seed)
    {
        var rng = new Random(seed);
        var teacher = Ref.Random(rng, 8 * 4, DType.Float32);
        var x = Ref.Random(rng, n * 8, DType.Float32);
        var y = new long[n];
        for (int i = 0; i < n; i++)
        {
            int best = 0; double bestV = double.NegativeInfinity;
            for (int c = 0; c < 4; c++)
            {
                double v = 0;
                for (int k = 0; k < 8; k++) v += x[i * 8 + k] * teacher[k * 4 + c];
                if (v > bestV) { bestV = v; best = c; }
            }
            y[i] = best;
        }
        return (F(x, [n, 8]).DetachFromScopes(), Tensor.FromArray(y, [n]).DetachFromScopes());
    }

    // Tanh rather than ReLU: a 16-bit rounding can flip a ReLU's mask, which moves a gradient by a whole sample's
    // contribution; tanh keeps the float16-vs-float32 differences at the scale of the rounding.
    static Mlp SmallMlp(DType dtype = DType.Float32) => new([8, 32, 32, 4], "tanh", dtype: dtype, generator: new Generator(11));

    // One training iteration: forward (in an autocast region when asked), backward, step, through the scaler when given.
    static double Iteration(Module model, Optimizer opt, GradScaler? scaler, DType? autocast, Tensor x, Tensor y, double lossFactor = 1)
    {
        using var scope = Tensor.NewScope();
        Tensor loss;
        using (autocast is DType d ? AutocastMode.Autocast(d) : null)
        {
            using var xc = x.To(model.Parameters().First().DType);
            loss = model.Forward(xc).CrossEntropy(y);
            if (lossFactor != 1) loss = loss.Mul(lossFactor);
        }
        opt.ZeroGrad();
        if (scaler is null)
        {
            loss.Backward();
            opt.Step();
        }
        else
        {
            scaler.Scale(loss).Backward();
            scaler.Step(opt);
            scaler.Update();
        }
        return loss.Item();
    }

    [Test]
    public void ScalerMisuse_ThrowsLikePyTorch()
    {
        var (x, y) = TeacherData(16, 1);
        using var _x = x;
        using var _y = y;
        foreach (var dtype in new[] { DType.Float32, DType.BFloat16 })   // the full algorithm and the pass-through alike
        {
            using var model = SmallMlp(dtype);
            using var opt = new Sgd(model.Parameters(), lr: 0.1);
            using var scaler = new GradScaler();
            using (var scope = Tensor.NewScope())
            {
                using var xc = x.To(dtype);
                scaler.Scale(model.Forward(xc).CrossEntropy(y)).Backward();
            }
            scaler.Unscale(opt);
            var e = Assert.Throws<EngineException>(() => scaler.Unscale(opt))!;
            Assert.That(e.Message, Does.Contain("unscale_() has already been called on this optimizer since the last update()"));
            scaler.Step(opt);
            e = Assert.Throws<EngineException>(() => scaler.Unscale(opt))!;
            Assert.That(e.Message, Does.Contain("unscale_() is being called after step()"));
            e = Assert.Throws<EngineException>(() => scaler.Step(opt))!;
            Assert.That(e.Message, Does.Contain("step() has already been called since the last update()"));
            scaler.Update();
            scaler.Step(opt);   // a new iteration: allowed again
            scaler.Update();
            opt.ZeroGrad();
        }
        using (var fresh = new GradScaler())
        {
            var e = Assert.Throws<EngineException>(() => fresh.Update())!;
            Assert.That(e.Message, Does.Contain("No inf checks were recorded prior to update."));
        }
        Assert.Throws<EngineException>(() => new GradScaler(growthFactor: 1.0));
        Assert.Throws<EngineException>(() => new GradScaler(backoffFactor: 1.0));
        Assert.Throws<EngineException>(() => new GradScaler(growthInterval: 0));
        Assert.Throws<EngineException>(() => new GradScaler(initScale: 0));
        using var s = new GradScaler();
        using var two = Tensor.Ones([2]);
        Assert.Throws<DTypeException>(() => s.Update(two));
        using var ints = Tensor.Ones([2], DType.Int64);
        Assert.Throws<DTypeException>(() => s.Scale(ints));
    }

    [Test]
    public void ScalerStateDict_RoundTrips_AndADisabledScalerDoesNothing()
    {
        var (x, y) = TeacherData(16, 2);
        using var _x = x;
        using var _y = y;
        using var model = SmallMlp();
        using var opt = new Sgd(model.Parameters(), lr: 0.05);
        using var scaler = new GradScaler(initScale: 256, growthFactor: 4, backoffFactor: 0.25, growthInterval: 2);
        Assert.That(scaler.GetScale(), Is.EqualTo(256), "the initial scale before the first scaled loss");
        for (int i = 0; i < 3; i++) Iteration(model, opt, scaler, null, x, y);
        Assert.That(scaler.GetScale(), Is.EqualTo(1024), "grew once after 2 clean steps");
        Assert.That(scaler.GetGrowthTracker(), Is.EqualTo(1));
        var state = scaler.StateDict();
        Assert.That(state, Is.EqualTo(new Dictionary<string, double>
        {
            ["scale"] = 1024, ["growth_factor"] = 4, ["backoff_factor"] = 0.25, ["growth_interval"] = 2, ["_growth_tracker"] = 1,
        }));

        using (var restored = new GradScaler())
        {
            restored.LoadStateDict(state);                       // before its device state exists
            Assert.That(restored.StateDict(), Is.EqualTo(state));
            Iteration(model, opt, restored, null, x, y);
            Assert.That(restored.GetScale(), Is.EqualTo(4096), "continues the run: the second clean step grows it");
            restored.LoadStateDict(state);                       // after
            Assert.That(restored.GetScale(), Is.EqualTo(1024));
            Assert.That(restored.GetGrowthTracker(), Is.EqualTo(1));
            Assert.Throws<EngineException>(() => restored.LoadStateDict(new Dictionary<string, double>()));
            Assert.Throws<EngineException>(() => restored.LoadStateDict(new Dictionary<string, double> { ["scale"] = 2 }));
        }
        scaler.Update(8.0);
        Assert.That(scaler.GetScale(), Is.EqualTo(8));
        using (var t = Tensor.Scalar(32)) scaler.Update(t);
        Assert.That(scaler.GetScale(), Is.EqualTo(32));
        Assert.That(scaler.GetGrowthTracker(), Is.EqualTo(1), "setting the scale leaves the tracker");

        // Disabled: a plain step, no kernel, scale 1, an empty state.
        using var off = new GradScaler(enabled: false);
        using var calls = KernelCounter.Begin();
        using var reference = SmallMlp();
        using var refOpt = new Sgd(reference.Parameters(), lr: 0.05);
        using var model2 = SmallMlp();
        using var opt2 = new Sgd(model2.Parameters(), lr: 0.05);
        Iteration(reference, refOpt, null, null, x, y);
        Iteration(model2, opt2, off, null, x, y);
        Assert.That(model2.Parameters().SelectMany(Bits), Is.EqualTo(reference.Parameters().SelectMany(Bits)));
        Assert.That(calls.Count(nameof(IBackend.NonFiniteCheckAndUnscale)), Is.Zero);
        Assert.That(off.GetScale(), Is.EqualTo(1));
        Assert.That(off.StateDict(), Is.Empty);
        Assert.That(off.LastStepTaken!.Item<bool>(), Is.True);
    }

    // ================================================================ the seed scenario

    [Test]
    public void SeedScenario_BFloat16RunWithDefaultScalerIsBitIdenticalAndLaunchesNothing_ThenFloat16Scales()
    {
        var sw = Stopwatch.StartNew();
        var (x, y) = TeacherData(64, 3);
        using var _x = x;
        using var _y = y;
        var logs = new CaptureLogs();
        var savedFactory = EngineLog.Factory;
        EngineLog.Factory = logs;
        try
        {
            // bfloat16 parameters, no autocast: with and without a default-enabled scaler.
            using var plain = SmallMlp(DType.BFloat16);
            using var plainOpt = new Adam(plain.Parameters(), lr: 1e-2);
            using var scaled = SmallMlp(DType.BFloat16);
            using var scaledOpt = new Adam(scaled.Parameters(), lr: 1e-2);
            using var scaler = new GradScaler();
            using var amp = KernelCounter.Begin();
            var losses = new List<double>();
            for (int step = 0; step < 50; step++)
            {
                Iteration(plain, plainOpt, null, null, x, y);
                losses.Add(Iteration(scaled, scaledOpt, scaler, null, x, y));
                Assert.That(scaler.LastStepTaken!.Item<bool>(), Is.True, $"step {step} taken");
            }
            Assert.That(amp.Count(nameof(IBackend.NonFiniteCheckAndUnscale)), Is.Zero, "the unscale kernel never ran");
            Assert.That(amp.Count(nameof(IBackend.UpdateScale)), Is.Zero, "the update kernel never ran");
            Assert.That(scaled.Parameters().SelectMany(Bits), Is.EqualTo(plain.Parameters().SelectMany(Bits)), "parameters bit for bit");
            Assert.That(scaledOpt.StateDict().Tensors.Values.SelectMany(Bits), Is.EqualTo(plainOpt.StateDict().Tensors.Values.SelectMany(Bits)), "optimizer state bit for bit");
            Assert.That(losses.TakeLast(5).Average(), Is.LessThan(0.5 * losses.Take(5).Average()), "the loss falls");
            Assert.That(scaler.GetScale(), Is.EqualTo(1), "pass-through: scale 1");
            Assert.That(scaler.IsBFloat16PassThrough, Is.True);
            var notes = logs.Entries.Where(e => e.Category == "Engine.Amp.GradScaler").ToList();
            Assert.That(notes, Has.Count.EqualTo(1), "the pass-through is reported once");
            Assert.That(notes[0].Message, Does.Contain("bfloat16").And.Contain("forceForBFloat16"));
            TestContext.Out.WriteLine($"bf16 losses {losses[0]:F4} → {losses[^1]:F4}, {sw.Elapsed.TotalSeconds:F1} s");

            // Right after, in the same process: float16 autocast over float32 master weights scales.
            using var model = SmallMlp();
            using var opt = new Adam(model.Parameters(), lr: 1e-2);
            using var fp16 = new GradScaler(growthInterval: 10);
            Assert.That(fp16.GetScale(), Is.EqualTo(65536), "starts at 2^16");
            float s = 65536; int t = 0; var seen = new List<float>();
            for (int step = 0; step < 30; step++)
            {
                Iteration(model, opt, fp16, DType.Float16, x, y);
                bool taken = fp16.LastStepTaken!.Item<bool>();
                (s, t) = UpdateRef(s, t, !taken, 2.0, 0.5, 10);
                Assert.That(fp16.GetScale(), Is.EqualTo(s), $"scale after step {step}");
                Assert.That(fp16.GetGrowthTracker(), Is.EqualTo(t), $"tracker after step {step}");
                seen.Add(s);
            }
            Assert.That(fp16.IsBFloat16PassThrough, Is.False);
            Assert.That(amp.Count(nameof(IBackend.NonFiniteCheckAndUnscale)), Is.EqualTo(30), "one unscale launch per step");
            Assert.That(amp.Count(nameof(IBackend.UpdateScale)), Is.EqualTo(30), "one update launch per step");
            Assert.That(seen.Distinct().Count(), Is.GreaterThan(1), "the scale moved");
            Assert.That(logs.Entries.Count(e => e.Category == "Engine.Amp.GradScaler"), Is.EqualTo(1), "no pass-through note for float16");
            TestContext.Out.WriteLine($"fp16 scales: {string.Join(", ", seen.Distinct())}; {sw.Elapsed.TotalSeconds:F1} s");
        }
        finally { EngineLog.Factory = savedFactory; }
    }

    [Test]
    public void BFloat16ForcedThroughTheFullScaler_UnscalesCorrectlyAndSteps()
    {
        var (x, y) = TeacherData(32, 4);
        using var _x = x;
        using var _y = y;
        using var xb = x.To(DType.BFloat16);
        using var reference = SmallMlp(DType.BFloat16);
        using var model = SmallMlp(DType.BFloat16);
        using (var scope = Tensor.NewScope()) reference.Forward(xb).CrossEntropy(y).Backward();
        using var opt = new Adam(model.Parameters(), lr: 1e-2);
        using var scaler = new GradScaler(forceForBFloat16: true);
        using var calls = KernelCounter.Begin();
        using (var scope = Tensor.NewScope()) scaler.Scale(model.Forward(xb).CrossEntropy(y)).Backward();
        Assert.That(scaler.IsBFloat16PassThrough, Is.False);
        var scaledGrads = model.Parameters().Select(p => Values(p.Grad!)).ToList();
        scaler.Unscale(opt);
        Assert.That(calls.Count(nameof(IBackend.NonFiniteCheckAndUnscale)), Is.EqualTo(1));
        var ps = model.Parameters().ToList();
        var rs = reference.Parameters().ToList();
        for (int i = 0; i < ps.Count; i++)
        {
            Assert.That(ps[i].Grad!.DType, Is.EqualTo(DType.BFloat16));
            // Scaling by a power of two commutes with bfloat16 rounding: the unscaled gradients are the plain ones.
            Ref.AssertClose(Values(ps[i].Grad!), Values(rs[i].Grad!), DType.BFloat16, $"parameter {i}");
            Assert.That(scaledGrads[i].Zip(Values(rs[i].Grad!)).Where(p => p.Second != 0).All(p => Math.Abs(p.First / p.Second) > 1000), Is.True,
                "the backward pass ran on scaled gradients");
        }
        var before = ps.Select(Values).ToList();
        scaler.Step(opt);
        Assert.That(scaler.LastStepTaken!.Item<bool>(), Is.True);
        Assert.That(ps.Select(Values).Zip(before).Any(p => !p.First.SequenceEqual(p.Second)), Is.True, "the parameters moved");
        scaler.Update();
        Assert.That(scaler.GetScale(), Is.EqualTo(65536));
        Assert.That(scaler.GetGrowthTracker(), Is.EqualTo(1));
        foreach (var p in reference.Parameters()) { p.Grad?.Dispose(); p.Grad = null; }
        opt.ZeroGrad();
    }

    [Test]
    public void MixedFloat16AndBFloat16_RunsTheFullAlgorithm()
    {
        using var scope = Tensor.NewScope();
        using var a = new Linear(8, 16, dtype: DType.Float16, generator: new Generator(1));
        using var b = new Linear(16, 4, dtype: DType.BFloat16, generator: new Generator(2));
        var (x, y) = TeacherData(16, 5);
        using var _x = x;
        using var _y = y;
        using var opt = new Adam(a.Parameters().Concat(b.Parameters()), lr: 1e-3);
        using var scaler = new GradScaler();
        using var calls = KernelCounter.Begin();
        var h = a.Forward(x.To(DType.Float16)).Relu().To(DType.BFloat16);
        var loss = b.Forward(h).CrossEntropy(y);                      // a bfloat16 loss over float16 and bfloat16 parameters
        scaler.Scale(loss).Backward();
        Assert.That(scaler.IsBFloat16PassThrough, Is.False, "float16 parameters: full algorithm");
        scaler.Step(opt);
        scaler.Update();
        Assert.That(calls.Count(nameof(IBackend.NonFiniteCheckAndUnscale)), Is.EqualTo(1));
        Assert.That(scaler.GetScale(), Is.EqualTo(65536));
        Assert.That(scaler.LastStepTaken!.Item<bool>(), Is.True);
        opt.ZeroGrad();
    }

    // ================================================================ float16: skips, backoff, growth

    static List<long[]> Snapshot(Module model, Optimizer opt) =>
        model.Parameters().Select(Bits).Concat(opt.StateDict().Tensors.Values.Select(Bits)).ToList();

    [Test]
    public void Float16Overflow_SkipsTheStepBitIdentically_BacksOff_ThenGrowsAfterTheInterval()
    {
        var (x, y) = TeacherData(32, 6);
        using var _x = x;
        using var _y = y;
        using var model = SmallMlp();
        using var opt = new AdamW(model.Parameters(), lr: 1e-2);
        using var scaler = new GradScaler(initScale: 1024, growthInterval: 3);
        Iteration(model, opt, scaler, DType.Float16, x, y);
        Assert.That(scaler.LastStepTaken!.Item<bool>(), Is.True, "a clean first step");
        Assert.That(scaler.GetScale(), Is.EqualTo(1024));

        var before = Snapshot(model, opt);
        Iteration(model, opt, scaler, DType.Float16, x, y, lossFactor: 1e30);  // float16 gradients overflow
        Assert.That(scaler.LastStepTaken!.Item<bool>(), Is.False, "the overflowing step is skipped");
        var after = Snapshot(model, opt);
        for (int i = 0; i < before.Count; i++) Assert.That(after[i], Is.EqualTo(before[i]), $"parameter/state tensor {i} bit-identical");
        Assert.That(opt.StateDict().Tensors.Where(kv => kv.Key.EndsWith(".step", StringComparison.Ordinal)).All(kv => kv.Value.Item() == 1), Is.True,
            "Adam's step count did not advance");
        Assert.That(scaler.GetScale(), Is.EqualTo(512), "the scale halves");
        Assert.That(scaler.GetGrowthTracker(), Is.Zero);

        for (int i = 1; i <= 3; i++)
        {
            Iteration(model, opt, scaler, DType.Float16, x, y);
            Assert.That(scaler.LastStepTaken!.Item<bool>(), Is.True);
            Assert.That(scaler.GetScale(), Is.EqualTo(i < 3 ? 512 : 1024), $"after clean step {i}");
            Assert.That(scaler.GetGrowthTracker(), Is.EqualTo(i % 3));
        }
        Assert.That(opt.StateDict().Tensors.Where(kv => kv.Key.EndsWith(".step", StringComparison.Ordinal)).All(kv => kv.Value.Item() == 4), Is.True);
    }

    [Test]
    public void ScriptedInfAndCleanSteps_GiveTheExactScaleSequence()
    {
        var (x, y) = TeacherData(16, 7);
        using var _x = x;
        using var _y = y;
        using var a = new Linear(8, 4, generator: new Generator(3));
        using var b = new Linear(8, 4, generator: new Generator(4));
        using var optA = new Sgd(a.Parameters(), lr: 0.01);
        using var optB = new Sgd(b.Parameters(), lr: 0.01);
        using var scaler = new GradScaler(initScale: 4096, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2);
        // C: clean; A: model a's loss is Inf; B: model b's loss is Inf (two optimizers: each skips on its own flag,
        // the update backs off if either saw Inf).
        const string script = "CCACCCBBCCCCAC";
        float s = 4096; int t = 0;
        foreach (char c in script)
        {
            using (var scope = Tensor.NewScope())
            {
                var la = a.Forward(x).CrossEntropy(y);
                var lb = b.Forward(x).CrossEntropy(y);
                if (c == 'A') la = la.Mul(double.PositiveInfinity);
                if (c == 'B') lb = lb.Mul(double.PositiveInfinity);
                optA.ZeroGrad(); optB.ZeroGrad();
                var aBefore = Bits(a.Weight);
                scaler.Scale(la.Add(lb)).Backward();
                scaler.Step(optA);
                Assert.That(scaler.LastStepTaken!.Item<bool>(), Is.EqualTo(c != 'A'), $"{c}: optimizer a");
                Assert.That(Bits(a.Weight), c == 'A' ? Is.EqualTo(aBefore) : Is.Not.EqualTo(aBefore));
                scaler.Step(optB);
                Assert.That(scaler.LastStepTaken!.Item<bool>(), Is.EqualTo(c != 'B'), $"{c}: optimizer b");
                scaler.Update();
            }
            (s, t) = UpdateRef(s, t, c != 'C', 2, 0.5, 2);
            Assert.That(scaler.GetScale(), Is.EqualTo(s), $"scale after {c}");
            Assert.That(scaler.GetGrowthTracker(), Is.EqualTo(t), $"tracker after {c}");
        }
        Assert.That(s, Is.EqualTo(4096f), "the script ends where the algorithm says");
    }

    // ================================================================ float16 gradients

    // Gradients of a fresh SmallMlp on (x, y) after `micro` accumulated micro-batches, each loss divided by `micro`.
    static List<double[]> Grads(DType paramType, DType? autocast, GradScaler? scaler, Tensor x, Tensor y, int micro = 1)
    {
        using var model = SmallMlp(paramType);
        using var opt = new Sgd(model.Parameters(), lr: 0.1);
        int rows = x.Size(0) / micro;
        for (int m = 0; m < micro; m++)
        {
            using var scope = Tensor.NewScope();
            Tensor loss;
            using (autocast is DType d ? AutocastMode.Autocast(d) : null)
            {
                var xm = x.Narrow(0, m * rows, rows).To(paramType);
                loss = model.Forward(xm).CrossEntropy(y.Narrow(0, m * rows, rows)).Div(micro);
            }
            (scaler is null ? loss : scaler.Scale(loss)).Backward();
        }
        scaler?.Unscale(opt);
        var g = model.Parameters().Select(p => Values(p.Grad!)).ToList();
        Assert.That(model.Parameters().All(p => p.Grad!.DType == paramType), Is.True, "gradients in the parameters' dtype");
        scaler?.Step(opt);
        scaler?.Update();
        opt.ZeroGrad();
        return g;
    }

    // FP16 tolerance relative to the gradient's scale: |a − e| ≤ 1e-2·|e| + 2e-3·max|e|.
    static void AssertGradsClose(List<double[]> actual, List<double[]> expected, string what, double rtol = 1e-2, double atolFactor = 2e-3)
    {
        for (int i = 0; i < expected.Count; i++)
        {
            double max = expected[i].Max(Math.Abs);
            Ref.AssertClose(actual[i], expected[i], rtol, atolFactor * max, $"{what}, parameter {i}");
        }
    }

    [Test]
    public void UnscaledFloat16Gradients_MatchTheFloat32Gradients()
    {
        var (x, y) = TeacherData(64, 8);
        using var _x = x;
        using var _y = y;
        var fp32 = Grads(DType.Float32, null, null, x, y);
        using (var scaler = new GradScaler())
            AssertGradsClose(Grads(DType.Float32, DType.Float16, scaler, x, y), fp32, "float16 autocast, float32 master weights");
        // A float16 loss cannot carry a gradient of 2^16 (float16's largest value is 65504): with the default scale the
        // first step overflows and is skipped, as the algorithm intends. A smaller initial scale gives a clean step.
        using (var scaler = new GradScaler(initScale: 1024))
            AssertGradsClose(Grads(DType.Float16, null, scaler, x, y), fp32, "float16 parameters and gradients", rtol: 2e-2, atolFactor: 5e-3);
    }

    [Test]
    public void GradientAccumulationWithTheScaler_GivesTheUnscaledGradients()
    {
        var (x, y) = TeacherData(64, 9);
        using var _x = x;
        using var _y = y;
        var unscaled = Grads(DType.Float32, DType.Float16, null, x, y, micro: 4);
        using var calls = KernelCounter.Begin();
        using var scaler = new GradScaler();
        var scaled = Grads(DType.Float32, DType.Float16, scaler, x, y, micro: 4);
        Assert.That(calls.Count(nameof(IBackend.NonFiniteCheckAndUnscale)), Is.EqualTo(1), "one unscale after the accumulation");
        AssertGradsClose(scaled, unscaled, "4 micro-batches, float16 autocast");
        AssertGradsClose(scaled, Grads(DType.Float32, null, null, x, y, micro: 4), "against float32");
    }

    // ================================================================ training to the float32 accuracy

    // Accuracy margin: a mixed-precision run must reach the float32 run's held-out accuracy minus this, from the same seed.
    const double AccuracyMargin = 0.03;

    // Two interleaved spirals: class c at angle 3π·r + c·π, radius r ∈ (0, 1], with noise.
    static (double[] X, long[] Y) Spirals(int n, int seed)
    {
        var rng = new Random(seed);
        var x = new double[4 * n];
        var y = new long[2 * n];
        for (int c = 0; c < 2; c++)
            for (int i = 0; i < n; i++)
            {
                double r = (i + 1.0) / n, th = 3 * Math.PI * r + c * Math.PI + 0.1 * (rng.NextDouble() - 0.5);
                int k = c * n + i;
                x[2 * k] = r * Math.Cos(th);
                x[2 * k + 1] = r * Math.Sin(th);
                y[k] = c;
            }
        return (x, y);
    }

    static double TrainSpirals(DType? autocast, bool useScaler, out string log)
    {
        var sw = Stopwatch.StartNew();
        var (xTrain, yTrain) = Spirals(300, 1);
        var (xTest, yTest) = Spirals(150, 2);
        using var scope = Tensor.NewScope();
        var tx = F(xTrain, [600, 2]);
        var vx = F(xTest, [300, 2]);
        using var model = new Mlp([2, 64, 64, 2], "relu", generator: new Generator(7));
        using var opt = new Adam(model.Parameters(), lr: 1e-2);
        using var scaler = useScaler ? new GradScaler() : null;
        var rng = new Random(3);
        const int steps = 400, batch = 100;
        int skipped = 0;
        for (int step = 0; step < steps; step++)
        {
            var idx = Enumerable.Range(0, batch).Select(_ => (long)rng.Next(600)).ToArray();
            using var inner = Tensor.NewScope();
            var bi = Tensor.FromArray(idx, [batch]);
            var bx = tx.IndexSelect(0, bi);
            var by = Tensor.FromArray(idx.Select(i => yTrain[i]).ToArray(), [batch]);
            Iteration(model, opt, scaler, autocast, bx, by);
            if (scaler?.LastStepTaken is { } taken && !taken.Item<bool>()) skipped++;
        }
        using var _ = GradMode.NoGrad();
        Tensor logits;
        using (autocast is DType d ? AutocastMode.Autocast(d) : null) logits = model.Forward(vx);
        var pred = logits.ArgMax(1).ToArray<long>();
        double acc = pred.Zip(yTest).Count(p => p.First == p.Second) / (double)yTest.Length;
        log = $"spirals {(autocast?.Name() ?? "float32")}{(useScaler ? " + scaler" : "")}: accuracy {acc:P1}, skipped {skipped}, scale {scaler?.GetScale() ?? 1}, {sw.Elapsed.TotalSeconds:F1} s";
        return acc;
    }

    [Test]
    public void MlpUnderFloat16AndBFloat16Autocast_ReachesTheFloat32Accuracy()
    {
        double fp32 = TrainSpirals(null, false, out var l32);
        TestContext.Out.WriteLine(l32);
        using var calls = KernelCounter.Begin();
        double bf16 = TrainSpirals(DType.BFloat16, true, out var lbf);
        TestContext.Out.WriteLine(lbf);
        Assert.That(calls.Count(nameof(IBackend.NonFiniteCheckAndUnscale)), Is.Zero, "bfloat16 autocast: the scaler passes through");
        double fp16 = TrainSpirals(DType.Float16, true, out var l16);
        TestContext.Out.WriteLine(l16);
        Assert.That(fp32, Is.GreaterThanOrEqualTo(0.9), "the float32 run learns");
        Assert.That(fp16, Is.GreaterThanOrEqualTo(fp32 - AccuracyMargin), "float16 autocast + scaler");
        Assert.That(bf16, Is.GreaterThanOrEqualTo(fp32 - AccuracyMargin), "bfloat16 autocast");
    }

    // The test-size GPT (vocab 16, context 8, 2 layers, d 32) on reversing 4 tokens: input a b c d d c b, targets
    // at the last 4 positions.
    const int RevLen = 4, RevT = 2 * RevLen - 1, RevVocab = 16;

    static (Tensor X, Tensor Y) ReverseBatch(Random rng, int batch)
    {
        var x = new long[batch * RevT];
        var y = new long[batch * RevT];
        for (int b = 0; b < batch; b++)
        {
            var d = Enumerable.Range(0, RevLen).Select(_ => (long)rng.Next(RevVocab)).ToArray();
            var full = d.Concat(d.Reverse()).ToArray();
            for (int t = 0; t < RevT; t++)
            {
                x[b * RevT + t] = full[t];
                y[b * RevT + t] = t < RevLen - 1 ? -100 : full[t + 1];
            }
        }
        return (Tensor.FromArray(x, [batch, RevT]), Tensor.FromArray(y, [batch * RevT]));
    }

    static double TrainGpt(DType? autocast, bool useScaler, out string log)
    {
        var sw = Stopwatch.StartNew();
        using var model = new Gpt(new GptConfig(VocabSize: RevVocab, ContextLength: 8, Layers: 2, Heads: 4, DModel: 32), generator: new Generator(1));
        using var opt = new AdamW(model.Parameters(), lr: 5e-3, weightDecay: 0);
        using var scaler = useScaler ? new GradScaler() : null;
        var rng = new Random(5);
        const int steps = 150, batch = 64;
        int skipped = 0;
        double loss = double.NaN;
        for (int step = 0; step < steps; step++)
        {
            using var scope = Tensor.NewScope();
            var (x, y) = ReverseBatch(rng, batch);
            Tensor l;
            using (autocast is DType d ? AutocastMode.Autocast(d) : null) l = model.Forward(x).Reshape(batch * RevT, RevVocab).CrossEntropy(y);
            opt.ZeroGrad();
            if (scaler is null)
            {
                l.Backward();
                ClipGrad.ClipGradNorm(model.Parameters(), 1.0);
                opt.Step();
            }
            else
            {
                scaler.Scale(l).Backward();
                scaler.Unscale(opt);                              // clip the true gradients, as one does with a scaler
                ClipGrad.ClipGradNorm(model.Parameters(), 1.0);
                scaler.Step(opt);
                scaler.Update();
                if (!scaler.LastStepTaken!.Item<bool>()) skipped++;
            }
            loss = l.Item();
        }
        using var evalScope = Tensor.NewScope();
        using var _ = GradMode.NoGrad();
        var (ex, ey) = ReverseBatch(new Random(99), 256);
        Tensor logits;
        using (autocast is DType d2 ? AutocastMode.Autocast(d2) : null) logits = model.Forward(ex).Reshape(256 * RevT, RevVocab);
        Assert.That(logits.DType, Is.EqualTo(autocast ?? DType.Float32), "the head (no bias) is a product in the region's dtype");
        var pred = logits.ArgMax(1).ToArray<long>();
        var want = ey.ToArray<long>();
        int n = 0, ok = 0;
        for (int i = 0; i < want.Length; i++)
            if (want[i] >= 0) { n++; if (pred[i] == want[i]) ok++; }
        double acc = ok / (double)n;
        log = $"gpt reverse {(autocast?.Name() ?? "float32")}{(useScaler ? " + scaler" : "")}: final loss {loss:G5}, token accuracy {acc:P1}, skipped {skipped}, scale {scaler?.GetScale() ?? 1}, {sw.Elapsed.TotalSeconds:F1} s";
        return acc;
    }

    [Test]
    public void GptUnderFloat16AndBFloat16Autocast_ReachesTheFloat32Accuracy()
    {
        double fp32 = TrainGpt(null, false, out var l32);
        TestContext.Out.WriteLine(l32);
        double fp16 = TrainGpt(DType.Float16, true, out var l16);
        TestContext.Out.WriteLine(l16);
        double bf16 = TrainGpt(DType.BFloat16, true, out var lbf);
        TestContext.Out.WriteLine(lbf);
        Assert.That(fp32, Is.GreaterThanOrEqualTo(0.9), "the float32 run learns");
        Assert.That(fp16, Is.GreaterThanOrEqualTo(fp32 - AccuracyMargin), "float16 autocast + scaler");
        Assert.That(bf16, Is.GreaterThanOrEqualTo(fp32 - AccuracyMargin), "bfloat16 autocast (+ pass-through scaler)");
    }
}

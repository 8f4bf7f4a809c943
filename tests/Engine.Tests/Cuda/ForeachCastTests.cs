using Engine.Amp;
using Engine.Autograd;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;
using Engine.Graph;
using Engine.Backends;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The multi-tensor cast <see cref="Tensor.ForeachTo"/> on the CPU and on the CUDA backend (ILGPU's CPU accelerator):
/// every output has the bits of its own <c>To(dtype)</c> and of a round-to-nearest-even reference written here (NaN,
/// ±∞, subnormals, float16 overflow, ties, empty tensors, views, more tensors than one launch takes); gradients reach
/// every input. Autocast's pre-cast of a GPT's Linear parameters (<see cref="Engine.Autocast.AutocastDispatch.PreCast"/>)
/// takes two launches instead of 33 and gives the training step the same losses and gradients, bit for bit.
/// </summary>
[TestFixture]
[NonParallelizable]
public class ForeachCastTests
{
    [OneTimeSetUp]
    public void EnableEmulation() => CudaBackend.EnableEmulation();

    static IEnumerable<Device> Devices() { yield return Device.Cpu; yield return CudaBackend.EmulatedDevice; }

    static float F(uint bits) => BitConverter.UInt32BitsToSingle(bits);

    // Values where a cast can go wrong: NaN payloads (quiet, signalling, negative), infinities, float32 subnormals,
    // float16 subnormals and underflow, float16 overflow (65520 rounds to ∞), bfloat16 and float16 ties both ways.
    static readonly float[] Special =
    [
        F(0x7FC12345), F(0x7F800001), F(0xFFC00001), float.PositiveInfinity, float.NegativeInfinity, 0f, -0f,
        F(0x00000001), F(0x807FFFFF), F(0x00800000), 65504f, 65519.99f, 65520f, -70000f, 1e30f, -3.4e38f,
        6e-8f, 2.98e-8f, -5.96e-8f, 1e-5f, 6.1e-5f, 1e-40f,
        F(0x3F808000), F(0x3F818000), F(0xBF808000), 1f + 1f / 2048, 1f + 3f / 2048, 2049f, 2051f, 1f / 3, -7.77f,
    ];

    // 40 tensors (two launches of at most 32): the special values, random ones, an empty one, a one-element one.
    static List<Tensor> Inputs(Device d)
    {
        var g = new Generator(11);
        var ts = new List<Tensor> { Tensor.FromArray(Special, new Shape([Special.Length]), d) };
        for (int i = 1; i < 40; i++)
        {
            int[] shape = i == 3 ? [0] : i == 5 ? [1] : i == 7 ? [2, 0, 3] : [1 + (i * 7) % 13, 1 + i % 5];
            using var r = Tensor.Randn(shape, DType.Float32, d, g);
            ts.Add(r.Mul(i % 4 == 0 ? 1e4 : i % 4 == 1 ? 1e-6 : 1.0));
        }
        return ts;
    }

    static ushort[] HalfBits(Tensor t) { using var c = t.To(Device.Cpu); return c.ToArray<ushort>(); }

    static uint[] FloatBits(Tensor t) { using var c = t.To(Device.Cpu); return c.ToArray<float>().Select(BitConverter.SingleToUInt32Bits).ToArray(); }

    // The reference: one rounding to nearest even from the float's exact value; NaN stays NaN.
    static ushort Reference(float f, DType dtype)
    {
        if (dtype == DType.Float16) return BitConverter.HalfToUInt16Bits((Half)(double)f); // double → Half rounds once
        uint b = BitConverter.SingleToUInt32Bits(f);
        return (ushort)((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
    }

    static bool IsNaN(ushort h, DType dtype) => dtype == DType.Float16 ? (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0 : (h & 0x7F80) == 0x7F80 && (h & 0x007F) != 0;

    [Test]
    public void ForeachTo_GivesEveryTensorTheBitsOfItsOwnCast([Values(DType.BFloat16, DType.Float16)] DType dtype, [ValueSource(nameof(Devices))] Device d)
    {
        using var scope = Tensor.NewScope();
        var xs = Inputs(d);
        Tensor[] ys;
        using (var c = KernelCounter.Begin())
        {
            ys = Tensor.ForeachTo(xs, dtype);
            Assert.That(c.Count(nameof(IBackend.ForeachCopy)), Is.EqualTo(2), "40 tensors: two launches of at most 32");
            Assert.That(c.Launches, Is.EqualTo(2), "no per-tensor copy");
        }
        Assert.That(ys, Has.Length.EqualTo(xs.Count));
        for (int j = 0; j < xs.Count; j++)
        {
            Assert.That(ys[j].DType, Is.EqualTo(dtype));
            Assert.That(ys[j].Layout.Shape, Is.EqualTo(xs[j].Layout.Shape), $"tensor {j}'s shape");
            using var own = xs[j].To(dtype);
            Assert.That(HalfBits(ys[j]), Is.EqualTo(HalfBits(own)), $"tensor {j}: the bits of its own To({dtype.Name()})");
            using var cpuOwn = xs[j].To(Device.Cpu).To(dtype);
            Assert.That(HalfBits(ys[j]), Is.EqualTo(HalfBits(cpuOwn)), $"tensor {j}: the CPU cast's bits");
        }
        // Against the reference written above (NaN compared as NaN: the payload rule is the per-tensor cast's, checked above).
        var got = HalfBits(ys[0]);
        for (int i = 0; i < Special.Length; i++)
        {
            var want = Reference(Special[i], dtype);
            if (float.IsNaN(Special[i])) Assert.That(IsNaN(got[i], dtype), Is.True, $"{Special[i]} stays NaN");
            else Assert.That(got[i], Is.EqualTo(want), $"{Special[i]:R} (0x{BitConverter.SingleToUInt32Bits(Special[i]):X8})");
        }
        if (dtype == DType.Float16)
        {
            Assert.That(got[Array.IndexOf(Special, 65520f)], Is.EqualTo((ushort)0x7C00), "65520 overflows to +∞ in float16");
            Assert.That(got[Array.IndexOf(Special, 1e30f)], Is.EqualTo((ushort)0x7C00), "1e30 overflows to +∞");
        }
    }

    [Test]
    public void ForeachTo_CastsViewsAndTensorsOfTheTargetDTypeAsToDoes([ValueSource(nameof(Devices))] Device d)
    {
        using var scope = Tensor.NewScope();
        var g = new Generator(3);
        var big = Tensor.Randn([6, 5], DType.Float32, d, g);
        var transposed = big.T;                     // non-contiguous
        var narrowed = big.Narrow(0, 2, 3);         // contiguous, offset 10: not a whole storage
        var already = Tensor.Randn([4], DType.BFloat16, d, g);
        var wide = Tensor.Randn([3, 2], DType.Float64, d, g);
        var plain = Tensor.Randn([7], DType.Float32, d, g);
        Tensor[] xs = [transposed, narrowed, already, wide, plain];
        Tensor[] ys;
        using (var c = KernelCounter.Begin())
        {
            ys = Tensor.ForeachTo(xs, DType.BFloat16);
            Assert.That(c.Count(nameof(IBackend.ForeachCopy)), Is.EqualTo(1), "the whole float32 and float64 tensors share one launch");
            Assert.That(c.Count(nameof(IBackend.Copy)), Is.EqualTo(2), "each view takes its own strided copy");
        }
        for (int j = 0; j < xs.Length; j++)
        {
            using var own = xs[j].To(DType.BFloat16);
            Assert.That(HalfBits(ys[j]), Is.EqualTo(HalfBits(own)), $"tensor {j}");
            Assert.That(ys[j].Layout.Shape, Is.EqualTo(xs[j].Layout.Shape));
        }
        Assert.That(ReferenceEquals(ys[2].Storage, already.Storage), Is.True, "a tensor of the target dtype is a new handle, not a copy");
        // float64 → float32 rounds once, as To(Float32).
        var f32 = Tensor.ForeachTo([wide], DType.Float32);
        using var wideOwn = wide.To(DType.Float32);
        Assert.That(FloatBits(f32[0]), Is.EqualTo(FloatBits(wideOwn)));
        Assert.That(Tensor.ForeachTo([], DType.Float16), Is.Empty, "an empty list gives an empty list");
    }

    [Test]
    public void ForeachTo_RejectsMixedDevicesAndNonFloatingTensors()
    {
        using var scope = Tensor.NewScope();
        var a = Tensor.Zeros([3], DType.Float32, Device.Cpu);
        var b = Tensor.Zeros([3], DType.Float32, CudaBackend.EmulatedDevice);
        var e = Assert.Throws<DeviceMismatchException>(() => Tensor.ForeachTo([a, b], DType.BFloat16))!;
        Assert.That(e.Message, Does.Contain("ForeachTo").And.Contain("one device"));
        var i = Tensor.Zeros([3], DType.Int64, Device.Cpu);
        Assert.That(Assert.Throws<DTypeException>(() => Tensor.ForeachTo([a, i], DType.BFloat16))!.Message,
            Does.Contain("ForeachTo").And.Contain("tensor 1").And.Contain("floating"));
        Assert.That(Assert.Throws<DTypeException>(() => Tensor.ForeachTo([a], DType.Int32))!.Message,
            Does.Contain("ForeachTo").And.Contain("int32"));
    }

    [Test]
    public void ForeachTo_GradientsReachEveryInput([ValueSource(nameof(Devices))] Device d)
    {
        // L(x) = Σ_j Σ w_j·cast32(x_j) for float64 inputs: dL/dx_j = w_j; the finite differences of the float32 cast
        // agree to its rounding (≈ ulp32(x)/h).
        var g = new Generator(5);
        using var scope = Tensor.NewScope();
        var whole = Tensor.Randn([3, 4], DType.Float64, d, g, requiresGrad: true);
        var baseT = Tensor.Randn([4, 3], DType.Float64, d, g, requiresGrad: true);
        var view = baseT.T;                                          // a view: its own cast
        var same = Tensor.Randn([5], DType.Float32, d, g, requiresGrad: true); // already float32: an alias
        Tensor[] xs = [whole, view, same];
        var ws = xs.Select(x => Tensor.Randn(x.Layout.Shape, DType.Float32, d, g)).ToArray();
        double Loss()
        {
            using var s2 = Tensor.NewScope();
            using var ng = GradMode.NoGrad();
            var ys = Tensor.ForeachTo(xs, DType.Float32);
            double total = 0;
            for (int j = 0; j < ys.Length; j++) { using var p = ys[j].Mul(ws[j]).To(DType.Float64).Sum(); total += p.Item(); }
            return total;
        }
        {
            var ys = Tensor.ForeachTo(xs, DType.Float32);
            Tensor? loss = null;
            for (int j = 0; j < ys.Length; j++) { var p = ys[j].Mul(ws[j]).Sum(); loss = loss is null ? p : loss.Add(p); }
            loss!.Backward();
        }
        Tensor[] leaves = [whole, baseT, same];
        for (int j = 0; j < 3; j++)
        {
            Assert.That(leaves[j].Grad, Is.Not.Null, $"input {j} gets a gradient");
            Assert.That(leaves[j].Grad!.DType, Is.EqualTo(leaves[j].DType), $"input {j}'s gradient in its dtype");
        }
        var wantWhole = ws[0].To(Device.Cpu).ToArray<double>();
        Assert.That(whole.Grad!.To(Device.Cpu).ToArray<double>(), Is.EqualTo(wantWhole), "dL/dx = w for the whole tensor");
        var wantBase = ws[1].T.Contiguous().To(Device.Cpu).ToArray<double>();
        Assert.That(baseT.Grad!.To(Device.Cpu).ToArray<double>(), Is.EqualTo(wantBase), "through the view to its base");
        // Finite differences on a few elements of the float64 inputs.
        const double h = 1e-3;
        foreach (var (t, k) in new[] { (whole, 0), (whole, 7), (baseT, 5) })
        {
            var grad = t.Grad!.To(Device.Cpu).ToArray<double>()[k];
            var orig = t.To(Device.Cpu).ToArray<double>();
            double Perturbed(double delta)
            {
                var v = (double[])orig.Clone();
                v[k] += delta;
                using (GradMode.NoGrad()) { using var src = Tensor.FromArray(v, new Shape(t.Layout.Shape), d); t.CopyInPlace(src); }
                return Loss();
            }
            double numeric = (Perturbed(h) - Perturbed(-h)) / (2 * h);
            Perturbed(0);
            Assert.That(numeric, Is.EqualTo(grad).Within(1e-3 * Math.Max(1, Math.Abs(grad))), $"element {k}");
        }
    }

    // ---- autocast: the GPT's Linear parameters pre-cast in one multi-tensor launch per 32 ----

    static readonly GptConfig Small = new(64, 16, 4, 4, 32);

    // Gpt.Forward without its pre-cast: the same modules in the same order, each Linear's cast made at its first use.
    static Tensor ForwardWithoutPreCast(Gpt m, Tensor input, Tensor pos)
    {
        using var scope = Tensor.NewScope();
        var x = m.Wte.Forward(input).Add(m.Wpe.Forward(pos));
        x = m.Drop.Forward(x);
        // Gpt.Forward's blocks and norms (residual adds inside the norms, which write the Linears' 16-bit inputs:
        // the CPU autocast region's dtype for the float32 stream), without its pre-cast.
        var lowp = AutocastMode.RegionDType(input.Device.Type);
        Tensor? pending = null;
        foreach (TransformerBlock b in m.Blocks.Layers) (x, pending) = b.Forward(x, pending);
        x = pending is null ? m.LnF.Forward(x, lowp) : m.LnF.Forward(x, pending, lowp).Normalized;
        return m.Head.Forward(x).MoveToOuterScope();
    }

    [Test]
    public void PreCast_GivesTheTrainingStepTheSameLossesAndGradients([Values(DType.BFloat16, DType.Float16)] DType dtype, [Values(false, true)] bool tied)
    {
        var cfg = Small with { TiedHead = tied };
        using var a = new Gpt(cfg, Device.Cpu, DType.Float32, new Generator(6));
        using var b = new Gpt(cfg, Device.Cpu, DType.Float32, new Generator(6));
        using var oa = new AdamW(a.Parameters(), 1e-2, 0.9, 0.999, 1e-8, 0.01);
        using var ob = new AdamW(b.Parameters(), 1e-2, 0.9, 0.999, 1e-8, 0.01);
        using var sa = dtype == DType.Float16 ? new GradScaler() : null;
        using var sb = dtype == DType.Float16 ? new GradScaler() : null;
        var g = new Generator(9);
        using var x = Tensor.RandInt(0, cfg.VocabSize, [2, cfg.ContextLength], DType.Int64, Device.Cpu, g);
        using var y = Tensor.RandInt(0, cfg.VocabSize, [2 * cfg.ContextLength], DType.Int64, Device.Cpu, g);
        using var pos = Tensor.Arange(cfg.ContextLength, Device.Cpu);
        var pa = a.Parameters().ToList();
        var pb = b.Parameters().ToList();
        for (int step = 0; step < 3; step++)
        {
            using var scope = Tensor.NewScope();
            long copiesA, copiesB;
            Tensor la, lb;
            using (var c = KernelCounter.Begin())
            {
                using (AutocastMode.Autocast(dtype))
                    la = a.Forward(x).View(-1, cfg.VocabSize).CrossEntropy(y);
                copiesA = c.Count(nameof(IBackend.Copy));
                Assert.That(c.Count(nameof(IBackend.ForeachCopy)), Is.EqualTo(2), "the 33 Linear parameters in launches of at most 32");
            }
            using (var c = KernelCounter.Begin())
            {
                using (AutocastMode.Autocast(dtype))
                    lb = ForwardWithoutPreCast(b, x, pos).View(-1, cfg.VocabSize).CrossEntropy(y);
                copiesB = c.Count(nameof(IBackend.Copy));
                Assert.That(c.Count(nameof(IBackend.ForeachCopy)), Is.Zero);
            }
            // A tied head is the embedding's weight, cast (as today) for the head's Linear: 33 either way.
            Assert.That(copiesA, Is.EqualTo(copiesB - 33), "one Copy per Linear weight and bias fewer in the forward");
            Assert.That(la.Item<float>(), Is.EqualTo(lb.Item<float>()), $"step {step}: the loss");
            Assert.That(FloatBits(la), Is.EqualTo(FloatBits(lb)));
            foreach (var (l, o, s) in new[] { (la, oa, sa), (lb, ob, sb) })
            {
                o.ZeroGrad();
                if (s is null) { l.Backward(); ClipGrad.ClipGradNorm(o == oa ? pa : pb, 1.0); o.Step(); }
                else { s.Scale(l).Backward(); s.Unscale(o); ClipGrad.ClipGradNorm(o == oa ? pa : pb, 1.0); s.Step(o); s.Update(); }
            }
            for (int i = 0; i < pa.Count; i++)
            {
                Assert.That(FloatBits(pa[i].Grad!), Is.EqualTo(FloatBits(pb[i].Grad!)), $"step {step}: gradient {i}");
                Assert.That(FloatBits(pa[i]), Is.EqualTo(FloatBits(pb[i])), $"step {step}: parameter {i} after the update");
            }
        }
    }

    [Test]
    public void PreCast_KeepsTheCacheRules()
    {
        using var m = new Gpt(Small, Device.Cpu, DType.Float32, new Generator(6));
        using var x = Tensor.RandInt(0, Small.VocabSize, [2, Small.ContextLength], DType.Int64, Device.Cpu, new Generator(2));
        using var scope = Tensor.NewScope();
        // Outside a region, or with the cache off, nothing is pre-cast.
        using (var c = KernelCounter.Begin())
        {
            m.Forward(x);
            using (AutocastMode.Autocast(DType.BFloat16, cacheEnabled: false)) m.Forward(x);
            using (AutocastMode.Autocast(DType.BFloat16, DeviceType.Cuda)) m.Forward(x);
            Assert.That(c.Count(nameof(IBackend.ForeachCopy)), Is.Zero);
        }
        using (AutocastMode.Autocast(DType.BFloat16))
        {
            using (AutocastMode.Autocast(DType.BFloat16, enabled: false))
            using (var c = KernelCounter.Begin())
            {
                m.Forward(x);
                Assert.That(c.Count(nameof(IBackend.ForeachCopy)), Is.Zero, "autocast turned off inside");
            }
            var first = m.Forward(x);
            Assert.That(AutocastMode.CachedCastCount, Is.EqualTo(33), "every Linear weight and bias, nothing else");
            using (var c = KernelCounter.Begin())
            {
                m.Forward(x);
                Assert.That(c.Count(nameof(IBackend.ForeachCopy)), Is.Zero, "a second forward in the region hits the cache");
            }
            // A parameter changed in place is cast again (alone) and the forward sees the new value.
            using (GradMode.NoGrad()) m.Head.Weight.MulInPlace(2.0);
            Tensor changed;
            using (var c = KernelCounter.Begin())
            {
                changed = m.Forward(x);
                Assert.That(c.Count(nameof(IBackend.ForeachCopy)), Is.EqualTo(1), "the stale cast is made again");
            }
            Assert.That(AutocastMode.CachedCastCount, Is.EqualTo(33));
            Tensor fresh;
            using (AutocastMode.Autocast(DType.BFloat16, cacheEnabled: false)) fresh = m.Forward(x);
            Assert.That(HalfBits(changed), Is.EqualTo(HalfBits(fresh)), "the new weight, as an uncached cast gives it");
            Assert.That(HalfBits(changed), Is.Not.EqualTo(HalfBits(first)));
            // A cast made under no-grad has no graph record: with grad on it is made again, and gradients flow.
            using (GradMode.NoGrad()) m.Head.Weight.MulInPlace(0.5);
            using (GradMode.NoGrad()) m.Forward(x);
            var logits = m.Forward(x);
            using var loss = logits.To(DType.Float32).Sum();
            loss.Backward();
        }
        Assert.That(AutocastMode.CachedCastCount, Is.Zero, "the cache ends with the region");
        foreach (var (name, p) in m.NamedParameters())
            if (name.StartsWith("blocks.0.attn", StringComparison.Ordinal) || name == "head.weight")
                Assert.That(p.Grad, Is.Not.Null, $"{name} gets a gradient through its cached cast");
        m.ZeroGrad();
    }
}

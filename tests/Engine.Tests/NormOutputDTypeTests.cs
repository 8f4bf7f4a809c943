using Engine.Amp;
using Engine.Autograd.Nn;
using Engine.Backends;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// The norms of a float32 residual stream under autocast without casts: a LayerNorm/RmsNorm that writes its output in
/// float16/bfloat16 (<c>outputDType</c>) and reads its 16-bit gradient as it is, and an AddLayerNorm that reads a
/// 16-bit addend. Each is the bits of the composition it replaces (the norm, then the cast; the promoting Add, then
/// the norm), forward and backward, on the CPU and on the CUDA backend (ILGPU's CPU accelerator), and saves that
/// composition's Copy launches; the GPT under autocast gives the bits of its unfused form.
/// </summary>
public class NormOutputDTypeTests
{
    static readonly DType[] Halves = [DType.Float16, DType.BFloat16];

    static Device DeviceOf(string device)
    {
        if (device == "cpu") return Device.Cpu;
        Engine.Backends.Cuda.CudaBackend.EnableEmulation();
        return Engine.Backends.Cuda.CudaBackend.EmulatedDevice;
    }

    static Tensor Leaf(double[] v, int[] shape, Device dev, bool transposed = false)
    {
        Tensor t;
        if (transposed)
        {
            // The same logical values, stored transposed: a non-contiguous view.
            int[] flipped = [shape[1], shape[0]];
            var stored = new double[v.Length];
            for (int i = 0; i < shape[0]; i++)
                for (int j = 0; j < shape[1]; j++) stored[j * shape[0] + i] = v[i * shape[1] + j];
            using var s = Tensor.FromArray(stored, flipped, dev).To(DType.Float32);
            t = s.Transpose(0, 1).Detach();
        }
        else t = Tensor.FromArray(v, shape, dev).To(DType.Float32);
        t.RequiresGrad = true;
        return t;
    }

    [Test]
    public void Norm_WithA16BitOutput_IsTheBitsOfTheNormThenTheCast_ForwardAndBackward([Values("cpu", "cuda")] string device)
    {
        var dev = DeviceOf(device);
        var rng = new Random(41);
        const int rows = 6, cols = 37;
        int[] shape = [rows, cols];
        foreach (var dt in Halves)
            foreach (bool rms in new[] { false, true })
                foreach (bool affine in new[] { true, false })
                {
                    string what = $"{device} {dt} rms {rms} affine {affine}";
                    var xv = Ref.Random(rng, rows * cols, DType.Float32, -3, 4);
                    var wv = Ref.Random(rng, cols, DType.Float32, 0.5, 1.5);
                    var bv = Ref.Random(rng, cols, DType.Float32);
                    var gv = Ref.Random(rng, rows * cols, dt);
                    (double[][] Values, long Copies) Run(bool fused)
                    {
                        using var scope = Tensor.NewScope();
                        var x = Leaf(xv, shape, dev, transposed: !rms);
                        var w = affine ? Leaf(wv, [cols], dev) : null;
                        var b = affine && !rms ? Leaf(bv, [cols], dev) : null;
                        var g = Tensor.FromArray(gv, shape, dev).To(dt);
                        using var counter = KernelCounter.Begin();
                        Tensor y = rms
                            ? fused ? x.RmsNorm([cols], w, 1e-5, dt) : x.RmsNorm([cols], w, 1e-5).To(dt)
                            : fused ? x.LayerNorm([cols], w, b, 1e-5, dt) : x.LayerNorm([cols], w, b).To(dt);
                        Assert.That(y.DType, Is.EqualTo(dt), what);
                        // dy = g exactly: the loss's gradient 1, cast to dt, times g.
                        using var loss = y.Mul(g).To(DType.Float32).Sum();
                        loss.Backward();
                        long copies = counter.Count(nameof(IBackend.Copy));
                        var r = new List<double[]> { y.ToArray<double>(), x.Grad!.ToArray<double>() };
                        if (w is not null) r.Add(w.Grad!.ToArray<double>());
                        if (b is not null) r.Add(b.Grad!.ToArray<double>());
                        return (r.ToArray(), copies);
                    }
                    var (f, fc) = Run(fused: true);
                    var (u, uc) = Run(fused: false);
                    for (int i = 0; i < f.Length; i++) Assert.That(f[i], Is.EqualTo(u[i]), $"{what}: output {i} has the unfused bits");
                    Assert.That(uc - fc, Is.EqualTo(2), $"{what}: the cast and its gradient's cast are gone");
                    Assert.That(f[0].All(double.IsFinite), Is.True, what);
                }
    }

    [Test]
    public void AddLayerNorm_ReadsA16BitAddend_AsThePromotingAddWould([Values("cpu", "cuda")] string device)
    {
        var dev = DeviceOf(device);
        var rng = new Random(42);
        const int rows = 5, cols = 19;
        int[] shape = [rows, cols];
        foreach (var dt in Halves)
            foreach (bool narrowFirst in new[] { false, true })
                foreach (DType? output in new DType?[] { null, dt })
                {
                    string what = $"{device} {dt} 16-bit {(narrowFirst ? "input" : "residual")} output {output?.ToString() ?? "float32"}";
                    var av = Ref.Random(rng, rows * cols, DType.Float32, -2, 3);
                    var hv = Ref.Random(rng, rows * cols, dt);
                    var wv = Ref.Random(rng, cols, DType.Float32, 0.5, 1.5);
                    var bv = Ref.Random(rng, cols, DType.Float32);
                    var gs = Ref.Random(rng, rows * cols, DType.Float32);
                    var gy = Ref.Random(rng, rows * cols, dt);
                    (double[][] Values, long Copies, string Counts) Run(bool fused)
                    {
                        using var scope = Tensor.NewScope();
                        var a = Leaf(av, shape, dev);
                        var h0 = Leaf(hv, shape, dev);
                        var h = h0.To(dt);                        // the 16-bit addend, an intermediate of the graph
                        var w = Leaf(wv, [cols], dev);
                        var b = Leaf(bv, [cols], dev);
                        var (x, r) = narrowFirst ? (h, a) : (a, h);
                        using var counter = KernelCounter.Begin();
                        Tensor s, y;
                        if (fused) (s, y) = x.AddLayerNorm(r, [cols], w, b, 1e-5, output);
                        else
                        {
                            s = x.Add(r);
                            y = s.LayerNorm([cols], w, b);
                            if (output is { } o) y = y.To(o);
                        }
                        Assert.That(s.DType, Is.EqualTo(DType.Float32), what);
                        Assert.That(y.DType, Is.EqualTo(output ?? DType.Float32), what);
                        var gst = Tensor.FromArray(gs, shape, dev).To(DType.Float32);
                        var gyt = Tensor.FromArray(gy, shape, dev).To(y.DType);
                        using var loss = y.Mul(gyt).To(DType.Float32).Sum().Add(s.Mul(gst).Sum());
                        loss.Backward();
                        return ([s.ToArray<double>(), y.ToArray<double>(), a.Grad!.ToArray<double>(), h0.Grad!.ToArray<double>(),
                            w.Grad!.ToArray<double>(), b.Grad!.ToArray<double>()], counter.Count(nameof(IBackend.Copy)), counter.ToString());
                    }
                    var (f, fc, fs) = Run(fused: true);
                    var (u, uc, us) = Run(fused: false);
                    for (int i = 0; i < f.Length; i++) Assert.That(f[i], Is.EqualTo(u[i]), $"{what}: output {i} has the unfused bits");
                    Assert.That(uc - fc, Is.EqualTo(output is null ? 1 : 3), $"{what}: the addend's widening cast (and the output's casts) are gone; fused {fs}; unfused {us}");
                }
    }

    [Test]
    public void NormOutputDType_RejectsWhatTheKernelsCannotWrite()
    {
        using var x64 = Tensor.Zeros([2, 4], DType.Float64);
        using var x32 = Tensor.Zeros([2, 4]);
        using var x16 = Tensor.Zeros([2, 4], DType.Float16);
        var e = Assert.Throws<DTypeException>(() => x64.LayerNorm([4], outputDType: DType.Float16))!;
        Assert.That(e.Message, Does.Contain("LayerNorm").And.Contain("float16").And.Contain("float64"));
        Assert.Throws<DTypeException>(() => x32.LayerNorm([4], outputDType: DType.Int32));
        Assert.Throws<DTypeException>(() => x16.LayerNorm([4], outputDType: DType.BFloat16));
        Assert.Throws<DTypeException>(() => x32.RmsNorm([4], outputDType: DType.Float64));
        var a = Assert.Throws<DTypeException>(() => x64.AddLayerNorm(x32, [4], outputDType: DType.BFloat16))!;
        Assert.That(a.Message, Does.Contain("AddLayerNorm"));
        // The same dtype is always allowed, and a 16-bit output of a float32 norm is what it says.
        using var same = x16.LayerNorm([4], outputDType: DType.Float16);
        using var narrow = x32.LayerNorm([4], outputDType: DType.BFloat16);
        Assert.That(narrow.DType, Is.EqualTo(DType.BFloat16));
        Assert.That(Tensor.IsNormOutputDType(DType.Float32, DType.Float16), Is.True);
        Assert.That(Tensor.IsNormOutputDType(DType.Float64, DType.Float32), Is.False);
    }

    [Test]
    public void CompositeNorms_WithMixedDTypes_MatchTheFusedKernels()
    {
        // The contract's default bodies (what a new backend gets) on the mixed dtypes, against the CPU's fused kernels.
        var rng = new Random(43);
        IBackend cpu = Engine.Backends.Cpu.CpuBackend.Instance;
        const int rows = 3, cols = 11;
        foreach (var dt in Halves)
        {
            using var scope = Tensor.NewScope();
            var x = Tensor.FromArray(Ref.Random(rng, rows * cols, DType.Float32, -2, 2), [rows, cols]).To(DType.Float32);
            var r = Tensor.FromArray(Ref.Random(rng, rows * cols, dt), [rows, cols]).To(dt);
            var w = Tensor.FromArray(Ref.Random(rng, cols, DType.Float32, 0.5, 1.5), [cols]).To(DType.Float32);
            var dy = Tensor.FromArray(Ref.Random(rng, rows * cols, dt), [rows, cols]).To(dt);
            double[][] Forward(bool composite)
            {
                var (s, y, m, v) = (Tensor.Empty([rows, cols]), Tensor.Empty([rows, cols], dt), Tensor.Empty([rows]), Tensor.Empty([rows]));
                if (composite) CompositeKernels.LayerNorm(cpu, x.Storage, r.Storage, w.Storage, null, s.Storage, y.Storage, m.Storage, v.Storage, rows, cols, 1e-5, false);
                else cpu.LayerNorm(x.Storage, r.Storage, w.Storage, null, s.Storage, y.Storage, m.Storage, v.Storage, rows, cols, 1e-5, false);
                var dx = Tensor.Empty([rows, cols]);
                var dw = Tensor.Empty([cols]);
                if (composite) CompositeKernels.LayerNormBackward(cpu, s.Storage, w.Storage, m.Storage, v.Storage, dy.Storage, null, dx.Storage, dw.Storage, null, rows, cols, false);
                else cpu.LayerNormBackward(s.Storage, w.Storage, m.Storage, v.Storage, dy.Storage, null, dx.Storage, dw.Storage, null, rows, cols, false);
                return [s.ToArray<double>(), y.ToArray<double>(), dx.ToArray<double>(), dw.ToArray<double>()];
            }
            var c = Forward(composite: true);
            var k = Forward(composite: false);
            Assert.That(c[0], Is.EqualTo(k[0]), $"{dt}: sum");
            Ref.AssertClose(c[1], k[1], dt, $"{dt}: y", scale: 2);
            Ref.AssertClose(c[2], k[2], DType.Float32, $"{dt}: dx", scale: 64);
            Ref.AssertClose(c[3], k[3], DType.Float32, $"{dt}: dWeight", scale: 64);
        }
    }

    static GptConfig Tiny => new(11, 8, 2, 2, 16);

    // The GPT's forward as it was before its norms wrote the autocast dtype: plain norms whose float32 outputs each
    // Linear's autocast casts, and residual adds that promote the 16-bit branch outputs.
    static Tensor UnfusedForward(Gpt g, Tensor ids)
    {
        using var scope = Tensor.NewScope();
        using var pos = Tensor.Arange(ids.Size(1), ids.Device);
        var x = g.Wte.Forward(ids).Add(g.Wpe.Forward(pos));
        foreach (TransformerBlock b in g.Blocks.Layers)
        {
            x = x.Add(b.Attn.Forward(b.Ln1.Forward(x)));
            x = x.Add(b.Mlp.Forward(b.Ln2.Forward(x)));
        }
        return g.Head.Forward(g.LnF.Forward(x)).MoveToOuterScope();
    }

    [TestCase("cpu", DType.BFloat16)]
    [TestCase("cpu", DType.Float16)]
    [TestCase("cuda", DType.Float16)]
    public void GptUnderAutocast_NormsWritingThe16BitInputs_GiveTheUnfusedBits(string device, DType precision)
    {
        var dev = DeviceOf(device);
        using var model = new Gpt(Tiny, dev, generator: new Generator(5));
        using var ids = Tensor.RandInt(0, 11, [2, 8], DType.Int64, dev, new Generator(6));
        using var targets = Tensor.RandInt(0, 11, [16], DType.Int64, dev, new Generator(7));
        (double[] Logits, Dictionary<string, double[]> Grads, long Copies) Step(bool fused)
        {
            foreach (var p in model.Parameters()) { p.Grad?.Dispose(); p.Grad = null; }
            using var counter = KernelCounter.Begin();
            Tensor loss, logits;
            using (AutocastMode.Autocast(precision, dev.Type))
            {
                logits = fused ? model.Forward(ids) : UnfusedForward(model, ids);
                using var flat = logits.View(-1, 11);
                loss = flat.CrossEntropy(targets);
            }
            using (logits) using (loss)
            {
                loss.Backward();
                var copies = counter.Count(nameof(IBackend.Copy));
                return (logits.ToArray<double>(), model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToArray<double>()), copies);
            }
        }
        var (fl, fg, fc) = Step(fused: true);
        var (ul, ug, uc) = Step(fused: false);
        Assert.That(fl, Is.EqualTo(ul), "logits");
        foreach (var (name, g) in ug) Assert.That(fg[name], Is.EqualTo(g), name);
        // Per layer two norm-output casts, their two gradients' casts and two residual widenings; ln_f's two; and the
        // Linear parameters' casts, which Gpt.Forward makes in multi-tensor launches (ForeachCopy) instead.
        // (The unfused forward also makes its position ids, which the model keeps.)
        int linearParameters = model.NamedModules().Select(m => m.Item2).OfType<Linear>().Sum(l => l.Bias is null ? 1 : 2);
        long positions;
        using (var c = KernelCounter.Begin()) { Tensor.Arange(8, dev).Dispose(); positions = c.Count(nameof(IBackend.Copy)); }
        Assert.That(uc - fc, Is.EqualTo(6 * Tiny.Layers + 2 + linearParameters + positions), $"copies fused {fc}, unfused {uc}");
    }
}

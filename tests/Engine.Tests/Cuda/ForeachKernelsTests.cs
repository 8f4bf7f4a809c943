using Engine.Autograd.Optim;
using Engine.Backends;
using Engine.Backends.Cuda;
using Engine.Workloads;
using Engine.Autograd.Nn;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The multi-tensor ("foreach") kernels on the CPU and on the CUDA backend (ILGPU's CPU accelerator): every parameter
/// gets the bits its own per-parameter kernel gives it (Adam, AdamW, SGD with momentum, mixed dtypes, more tensors
/// than one launch takes, empty and one-element tensors); the foreach norm is the per-tensor norm (bit for bit on the
/// CPU, to float32 rounding on CUDA); clipping equals the per-tensor reference; a CUDA training step allocates no
/// device memory after its warm-up and never waits for the device.
/// </summary>
[TestFixture]
[NonParallelizable]
public class ForeachKernelsTests
{
    [OneTimeSetUp]
    public void EnableEmulation() => CudaBackend.EnableEmulation();

    static IEnumerable<Device> Devices() { yield return Device.Cpu; yield return CudaBackend.EmulatedDevice; }

    // 37 tensors: more than MultiTensor.MaxTensors, so two launches; float32 with a few bfloat16, an empty and a 1-element one.
    static List<Tensor> Params(Device d, int seed)
    {
        var g = new Generator((ulong)seed);
        var ps = new List<Tensor>();
        for (int i = 0; i < 37; i++)
        {
            int[] shape = i == 3 ? [0] : i == 5 ? [1] : [1 + (i * 7) % 13, 1 + i % 5];
            var dt = i % 9 == 4 ? DType.BFloat16 : DType.Float32;
            ps.Add(Tensor.Randn(shape, dt, d, g).DetachFromScopes());
        }
        return ps;
    }

    static void SetGrads(List<Tensor> ps, int step)
    {
        var g = new Generator((ulong)(100 + step));
        foreach (var p in ps)
        {
            p.Grad?.Dispose();
            using var r = Tensor.Randn(p.Layout.Shape, DType.Float32, p.Device, g);
            p.Grad = r.To(p.DType).DetachFromScopes();
        }
    }

    static ushort[] Bits(Tensor t)
    {
        using var c = t.To(Device.Cpu);
        if (c.DType == DType.BFloat16) return c.ToArray<BFloat16>().Select(b => b.Bits).ToArray();
        return c.ToArray<float>().SelectMany(f => { uint u = BitConverter.SingleToUInt32Bits(f); return new[] { (ushort)u, (ushort)(u >> 16) }; }).ToArray();
    }

    static void AssertSameBits(List<Tensor> a, List<Tensor> b, string what)
    {
        for (int i = 0; i < a.Count; i++) Assert.That(Bits(a[i]), Is.EqualTo(Bits(b[i])), $"{what}: parameter {i}");
    }

    static Optimizer Make(string kind, List<Tensor> ps) => kind switch
    {
        "adamw" => new AdamW(ps, 1e-2, 0.9, 0.99, 1e-8, 0.1),
        "adam" => new Adam(ps, 1e-2, 0.9, 0.99, 1e-8, 0.05),
        _ => new Sgd(ps, 1e-2, momentum: 0.9, dampening: 0.1, weightDecay: 0.01),
    };

    [Test]
    public void ForeachStep_GivesEveryParameterThePerParameterBits([Values("adamw", "adam", "sgd")] string kind, [ValueSource(nameof(Devices))] Device d)
    {
        var a = Params(d, 1); var b = Params(d, 1);
        using var oa = Make(kind, a); using var ob = Make(kind, b);
        ob.Foreach = false;
        for (int step = 0; step < 3; step++)
        {
            SetGrads(a, step); SetGrads(b, step);
            if (step == 1) { a[7].Grad!.Dispose(); a[7].Grad = null; b[7].Grad!.Dispose(); b[7].Grad = null; } // skipped parameters
            using var ca = KernelCounter.Begin();
            oa.Step();
            ob.Step();
            AssertSameBits(a, b, $"{kind} step {step}");
        }
        var sa = oa.StateDict(); var sb = ob.StateDict();
        Assert.That(sa.Tensors.Keys, Is.EqualTo(sb.Tensors.Keys));
        foreach (var k in sa.Tensors.Keys) Assert.That(Bits(sa.Tensors[k]), Is.EqualTo(Bits(sb.Tensors[k])), k);
        foreach (var p in a.Concat(b)) { p.Grad?.Dispose(); p.Dispose(); }
    }

    [Test]
    public void ForeachAdam_LaunchesOncePerChunkAndSkipsOnFoundInf([ValueSource(nameof(Devices))] Device d)
    {
        var ps = Params(d, 2);
        using var opt = new AdamW(ps);
        SetGrads(ps, 0);
        var before = ps.Select(Bits).ToList();
        using var found = Tensor.Ones([], DType.Float32, d);
        using (var c = KernelCounter.Begin())
        {
            opt.Step(null, found);
            Assert.That(c.Count(nameof(IBackend.ForeachAdamStep)), Is.EqualTo(2), "37 parameters in chunks of 32");
            Assert.That(c.Count(nameof(IBackend.AdamStep)), Is.Zero);
        }
        for (int i = 0; i < ps.Count; i++) Assert.That(Bits(ps[i]), Is.EqualTo(before[i]), $"parameter {i} changed in a skipped step");
        Assert.That(opt.StateDict().Tensors["state.0.step"].Item(), Is.Zero);
        foreach (var p in ps) { p.Grad?.Dispose(); p.Dispose(); }
    }

    [Test]
    public void ForeachNorm_IsThePerTensorNorm([Values(2.0, 1.0, 3.0, double.PositiveInfinity)] double ord, [ValueSource(nameof(Devices))] Device d)
    {
        var ps = Params(d, 3).Where(p => p.Numel > 0).ToList();
        using var norms = Tensor.ForeachNorm(ps, ord);
        var got = norms.To(Device.Cpu).ToArray<float>();
        for (int i = 0; i < ps.Count; i++)
        {
            using var w = ps[i].To(DType.Float32);
            using var cpu = w.To(Device.Cpu);
            using var n = cpu.Norm(ord);
            float want = n.Item<float>();
            if (d == Device.Cpu) Assert.That(BitConverter.SingleToUInt32Bits(got[i]), Is.EqualTo(BitConverter.SingleToUInt32Bits(want)), $"tensor {i}");
            else Assert.That(got[i], Is.EqualTo(want).Within(2e-6 * Math.Abs(want) + 1e-30), $"tensor {i}");
        }
        foreach (var p in ps) p.Dispose();
    }

    [Test]
    public void ClipGradNorm_MatchesThePerTensorReference([ValueSource(nameof(Devices))] Device d)
    {
        var ps = Params(d, 4);
        SetGrads(ps, 0);
        foreach (var p in ps) p.Grad!.MulInPlace(Tensor.Scalar(3.0, p.DType, d));
        // The reference: per-tensor norms, stacked, the factor rounded to each gradient's dtype, one multiply each.
        var reference = ps.Select(p => p.Grad!.Clone().DetachFromScopes()).ToList();
        float refTotal;
        using (var scope = Tensor.NewScope())
        {
            var total = Tensor.Stack(reference.Select(g => g.To(DType.Float32).Norm(2)).ToArray()).Norm(2);
            refTotal = total.Item<float>();
            var coef = total.Add(1e-6).Pow(-1).Mul(1.0).Clamp(max: 1.0);
            foreach (var g in reference) g.MulInPlace(coef.To(g.DType));
        }
        using var got = ClipGrad.ClipGradNorm(ps, 1.0);
        if (d == Device.Cpu)
        {
            Assert.That(got.Item<float>(), Is.EqualTo(refTotal));
            AssertSameBits(ps.Select(p => p.Grad!).ToList(), reference, "clipped gradients");
        }
        else
        {
            Assert.That(got.Item<float>(), Is.EqualTo(refTotal).Within(1e-5 * refTotal));
            for (int i = 0; i < ps.Count; i++)
                Assert.That(ps[i].Grad!.To(DType.Float32).To(Device.Cpu).ToArray<float>(),
                    Is.EqualTo(reference[i].To(DType.Float32).To(Device.Cpu).ToArray<float>()).Within(1e-2), $"gradient {i}");
        }
        foreach (var g in reference) g.Dispose();
        foreach (var p in ps) { p.Grad?.Dispose(); p.Dispose(); }
    }

    [TestCase(null)]
    [TestCase(DType.Float16)]
    public void CudaGptStep_NoDeviceAllocationAndNoHostWaitAfterWarmUp(DType? autocast)
    {
        var d = CudaBackend.EmulatedDevice;
        var backend = (CudaBackend)BackendRegistry.Get(d);
        using var run = WorkloadCatalog.GptStep(d, autocast, new GptConfig(64, 16, 4, 4, 32), 2);
        run.Run(); run.Run(); // warm-up: gradients, optimizer state, the allocator's blocks
        backend.Synchronize();
        long allocations = backend.Allocator.DeviceAllocations, syncs = CudaBackend.HostSynchronizations;
        run.Step();
        Assert.That(CudaBackend.HostSynchronizations - syncs, Is.Zero, "host synchronizations inside one training step");
        Assert.That(backend.Allocator.DeviceAllocations - allocations, Is.Zero, "device allocations inside one training step");
    }

    /// <summary>
    /// The TensorList kernels compile for the GPU (sm_90 PTX): ILGPU passes the structure of 32 views in parameter
    /// space, and the entry switch needs no local-memory array (only AdamPrepare-style float64 pow may use a frame).
    /// </summary>
    [Test]
    public void TensorListKernels_CompileToPtxWithoutLocalArrays()
    {
        var entries = KernelRegistry.All.Where(e => e.Name.StartsWith("Foreach", StringComparison.Ordinal)).ToList();
        Assert.That(entries.Select(e => e.Name), Is.SupersetOf(new[] { "ForeachAdam", "ForeachSgd", "ForeachUnscale", "ForeachNormPartials<PlainNorm>", "ForeachNormPartials<PowerNorm>", "ForeachMul" }));
        foreach (var e in entries)
        {
            var ptx = PtxCompiler.Compile(e);
            Assert.That(ptx, Does.Contain(".entry"), e.Name);
            if (e.Name is "ForeachAdam" or "ForeachSgd" or "ForeachUnscale" or "ForeachMul")
                Assert.That(ptx, Does.Not.Contain(".local"), $"{e.Name} uses local memory");
        }
    }
}

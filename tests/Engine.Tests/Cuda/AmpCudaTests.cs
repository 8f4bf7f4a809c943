using Engine.Amp;
using Engine.Backends.Cuda;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The CUDA backend's two AMP kernels against the CPU backend on ILGPU's CPU accelerator (bit for bit: both multiply
/// once in float32 and round once), and a scaled training step on the device that skips an overflowing update without
/// the host ever waiting for the device.
/// </summary>
[TestFixture]
[NonParallelizable]
public class AmpCudaTests
{
    Device _dev;

    [OneTimeSetUp]
    public void EnableEmulation()
    {
        CudaBackend.EnableEmulation();
        _dev = CudaBackend.EmulatedDevice;
    }

    static double[] Read(Tensor t)
    {
        using var c = t.To(Device.Cpu);
        return c.ToArray<double>();
    }

    static long[] Bits(Tensor t) => Read(t).Select(BitConverter.DoubleToInt64Bits).ToArray();

    Tensor On(double[] values, int[] shape, DType dtype, Device device)
    {
        using var d = Tensor.FromArray(values, shape, device);
        return d.To(dtype);
    }

    [Test]
    public void NonFiniteCheckAndUnscale_MatchesTheCpuBitForBit([Values(DType.Float32, DType.Float16, DType.BFloat16, DType.Float64)] DType dtype)
    {
        var rng = new Random(1);
        int[] sizes = [1, 37, 1000];
        foreach (float inv in new[] { 1f / 1024, 1f / 3, 1f })
        {
            var data = sizes.Select(n => Ref.Random(rng, n, dtype, -100, 100)).ToArray();
            var cpu = data.Select((v, i) => On(v, [sizes[i]], dtype, Device.Cpu)).ToArray();
            var dev = data.Select((v, i) => On(v, [sizes[i]], dtype, _dev)).ToArray();
            using var foundCpu = Tensor.Zeros([]);
            using var foundDev = Tensor.Zeros([], DType.Float32, _dev);
            using var invCpu = Tensor.Scalar(inv);
            using var invDev = Tensor.Scalar(inv, DType.Float32, _dev);
            Tensor.NonFiniteCheckAndUnscale(cpu, foundCpu, invCpu);
            Tensor.NonFiniteCheckAndUnscale(dev, foundDev, invDev);
            for (int i = 0; i < sizes.Length; i++)
                Assert.That(Bits(dev[i]), Is.EqualTo(Bits(cpu[i])), $"{dtype.Name()} gradient {i} × {inv}");
            Assert.That(Read(foundDev), Is.EqualTo(new[] { 0.0 }));
            foreach (var t in cpu.Concat(dev)) t.Dispose();
        }

        foreach (var bad in new[] { double.PositiveInfinity, double.NegativeInfinity, double.NaN })
        {
            var v = Ref.Random(rng, 1000, dtype);
            v[731] = bad;
            using var clean = On(Ref.Random(rng, 5, dtype), [5], dtype, _dev);
            using var g = On(v, [1000], dtype, _dev);
            using var found = Tensor.Zeros([], DType.Float32, _dev);
            using var invT = Tensor.Scalar(0.5, DType.Float32, _dev);
            Tensor.NonFiniteCheckAndUnscale([clean, g], found, invT);
            Assert.That(Read(found), Is.EqualTo(new[] { 1.0 }), $"{bad} flagged");
            Tensor.NonFiniteCheckAndUnscale([clean], found, invT);
            Assert.That(Read(found), Is.EqualTo(new[] { 1.0 }), "never reset by a clean pass");
        }
    }

    [Test]
    public void UpdateScale_MatchesTheCpu()
    {
        using var sc = Tensor.Scalar(1024);
        using var tc = Tensor.Zeros([], DType.Int32);
        using var fc = Tensor.Zeros([]);
        using var sd = Tensor.Scalar(1024, DType.Float32, _dev);
        using var td = Tensor.Zeros([], DType.Int32, _dev);
        using var fd = Tensor.Zeros([], DType.Float32, _dev);
        foreach (var f in new double[] { 0, 0, 0, 1, 0, double.NaN, 0, 0, 0, 0 })
        {
            fc.FillInPlace(f);
            fd.FillInPlace(f);
            Tensor.UpdateScale(sc, tc, fc, 2.0, 0.3, 3);
            Tensor.UpdateScale(sd, td, fd, 2.0, 0.3, 3);
            Assert.That(Bits(sd), Is.EqualTo(Bits(sc)), $"scale after found-inf {f}");
            Assert.That(Read(td), Is.EqualTo(Read(tc)), $"tracker after found-inf {f}");
        }
    }

    [Test]
    public void ScaledStepOnTheDevice_SkipsAnOverflowWithoutWaitingForTheDevice()
    {
        using var lin = new Linear(4, 3, device: _dev, generator: new Generator(2));
        using var opt = new Adam(lin.Parameters(), lr: 1e-2);
        using var scaler = new GradScaler(initScale: 1024, growthInterval: 2);
        using var x = On(Ref.Random(new Random(3), 8, DType.Float32), [2, 4], DType.Float32, _dev);
        using var y = Tensor.FromArray(new long[] { 0, 2 }, [2], _dev);

        long Step(double factor)
        {
            using var scope = Tensor.NewScope();
            var loss = lin.Forward(x).CrossEntropy(y).Mul(factor);
            opt.ZeroGrad();
            scaler.Scale(loss).Backward();
            long before = CudaBackend.HostSynchronizations;
            scaler.Step(opt);
            scaler.Update();
            return CudaBackend.HostSynchronizations - before;
        }

        Assert.That(Step(1), Is.Zero, "a clean scaled step: no host synchronization in Step and Update");
        Assert.That(Read(scaler.LastStepTaken!), Is.EqualTo(new[] { 1.0 }));
        var weights = Bits(lin.Weight);
        var state = opt.StateDict().Tensors.Values.Select(Bits).ToList();
        Assert.That(Step(double.PositiveInfinity), Is.Zero, "an overflowing step: skipped on the device");
        Assert.That(Read(scaler.LastStepTaken!), Is.EqualTo(new[] { 0.0 }));
        Assert.That(Bits(lin.Weight), Is.EqualTo(weights), "parameters untouched");
        Assert.That(opt.StateDict().Tensors.Values.Select(Bits).ToList(), Is.EqualTo(state), "Adam's state (step count included) untouched");
        Assert.That(scaler.GetScale(), Is.EqualTo(512));
        Step(1);
        Step(1);
        Assert.That(scaler.GetScale(), Is.EqualTo(1024), "grew after 2 clean steps");
        Assert.That(scaler.ScaleTensor!.Device, Is.EqualTo(_dev), "the scale lives on the device");
    }

    // One region for every device type, two tables: the op's input device picks the table (PyTorch's CUDA list casts
    // softmax and layer norm to float32, its CPU list does not).
    [Test]
    public void OneRegion_UsesTheTableOfEachInputsDeviceType()
    {
        using var scope = Tensor.NewScope();
        var v = Ref.Random(new Random(4), 2 * 6, DType.BFloat16);
        var onCpu = On(v, [2, 6], DType.BFloat16, Device.Cpu);
        var onDev = On(v, [2, 6], DType.BFloat16, _dev);
        using (AutocastMode.Autocast(DType.BFloat16))
        {
            Assert.That(onDev.Softmax(-1).DType, Is.EqualTo(DType.Float32), "CUDA table: Softmax in float32");
            Assert.That(onDev.LayerNorm([6]).DType, Is.EqualTo(DType.Float32), "CUDA table: LayerNorm in float32");
            Assert.That(onDev.Exp().DType, Is.EqualTo(DType.Float32), "CUDA table: Exp in float32");
            Assert.That(onCpu.Softmax(-1).DType, Is.EqualTo(DType.BFloat16), "CPU table: Softmax in its input type");
            Assert.That(onCpu.LayerNorm([6]).DType, Is.EqualTo(DType.BFloat16), "CPU table: LayerNorm in its input type");
            Assert.That(onCpu.Exp().DType, Is.EqualTo(DType.BFloat16), "CPU table: Exp in its input type");
            using var target = Tensor.FromArray(new long[] { 1, 4 }, [2], _dev);
            Assert.That(onDev.CrossEntropy(target).DType, Is.EqualTo(DType.Float32), "both tables: CrossEntropy in float32");
        }
    }
}

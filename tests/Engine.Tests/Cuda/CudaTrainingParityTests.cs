using Engine.Backends.Cuda;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// Whole training runs on the CPU backend and on the CUDA backend (ILGPU's CPU accelerator standing in for the GPU)
/// from the same initial weights and data: the losses of 20 steps agree within float32 tolerance, a training step
/// performs no host synchronization, and every device buffer comes back after the run.
/// </summary>
[TestFixture]
[NonParallelizable]
public class CudaTrainingParityTests
{
    Device _dev;

    [OneTimeSetUp]
    public void EnableEmulation()
    {
        CudaBackend.EnableEmulation();
        _dev = CudaBackend.EmulatedDevice;
    }

    // Trains a model built (on the CPU, so both runs start from identical weights) by `make`, moved to `device`.
    static double[] Train(Device device, Func<Module> make, Func<int, (Tensor X, Tensor Y)> batch, Func<Module, Tensor, Tensor, Tensor> loss, int steps)
    {
        using var model = make();
        model.To(device);
        using var opt = new AdamW(model.Parameters(), 1e-2);
        var losses = new double[steps];
        var pending = new Tensor[steps];
        for (int s = 0; s < steps; s++)
        {
            using var scope = Tensor.NewScope();
            var (xc, yc) = batch(s);
            var x = xc.To(device);
            var y = yc.To(device);
            long syncs = CudaBackend.HostSynchronizations;
            var l = loss(model, x, y);
            l.Backward();
            ClipGrad.ClipGradNorm(model.Parameters(), 1.0);
            opt.Step();
            opt.ZeroGrad();
            if (device.Type == DeviceType.Cuda)
                Assert.That(CudaBackend.HostSynchronizations, Is.EqualTo(syncs), $"step {s}: a training step must not wait for the device");
            pending[s] = l.MoveToOuterScope();
        }
        for (int s = 0; s < steps; s++) { losses[s] = pending[s].Item<float>(); pending[s].Dispose(); }
        return losses;
    }

    // Earlier tests may leave unreferenced tensors for the finalizer: collect them before counting.
    static long SettledLiveCount()
    {
        for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        return Engine.Backends.Storage.LiveCount(DeviceType.Cuda);
    }

    static void AssertSameLosses(double[] cpu, double[] cuda)
    {
        for (int s = 0; s < cpu.Length; s++)
            Assert.That(cuda[s], Is.EqualTo(cpu[s]).Within(2e-3 * Math.Max(1, Math.Abs(cpu[s]))), $"step {s}: cpu {cpu[s]} cuda {cuda[s]}");
        Assert.That(cpu[^1], Is.LessThan(cpu[0]), "the model learns");
    }

    [Test]
    public void MlpTrainingMatchesTheCpu()
    {
        Module Make() => new Mlp([8, 32, 32, 4], "gelu", null, DType.Float32, new Generator(11));
        (Tensor, Tensor) Batch(int s)
        {
            var g = new Generator(100 + (ulong)s);
            var x = Tensor.Randn([16, 8], DType.Float32, null, g);
            using var w = Tensor.Arange(0, 8, 1, DType.Float32);
            using var proj = x.Mul(w).Sum(1);
            var y = proj.Gt(0).To(DType.Int64).Add(proj.Gt(4).To(DType.Int64));
            return (x, y);
        }
        Tensor Loss(Module m, Tensor x, Tensor y) => m.Forward(x).CrossEntropy(y);
        long live = SettledLiveCount();
        var cpu = Train(Device.Cpu, Make, Batch, Loss, 20);
        var cuda = Train(_dev, Make, Batch, Loss, 20);
        AssertSameLosses(cpu, cuda);
        Assert.That(SettledLiveCount(), Is.EqualTo(live), "device buffers all returned");
    }

    [Test]
    public void GptTrainingMatchesTheCpu()
    {
        var config = new GptConfig(VocabSize: 16, ContextLength: 8, Layers: 2, Heads: 2, DModel: 32);
        Module Make() => new Gpt(config, null, DType.Float32, new Generator(12));
        (Tensor, Tensor) Batch(int s)
        {
            // Predict the previous token: learnable within a few steps.
            var g = new Generator(200 + (ulong)s);
            var x = Tensor.RandInt(0, 16, [2, 8], DType.Int64, null, g);
            using var first = x.Narrow(1, 0, 1);
            using var rest = x.Narrow(1, 0, 7);
            var y = Tensor.Cat([first, rest], 1);
            return (x, y);
        }
        Tensor Loss(Module m, Tensor x, Tensor y)
        {
            using var logits = m.Forward(x);
            using var flat = logits.View(-1, 16);
            using var t = y.View(-1);
            return flat.CrossEntropy(t);
        }
        long live = SettledLiveCount();
        var cpu = Train(Device.Cpu, Make, Batch, Loss, 20);
        var cuda = Train(_dev, Make, Batch, Loss, 20);
        AssertSameLosses(cpu, cuda);
        Assert.That(SettledLiveCount(), Is.EqualTo(live), "device buffers all returned");
    }
}

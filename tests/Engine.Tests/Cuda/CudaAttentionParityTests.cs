using Engine.Backends;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The CUDA attention kernels (Kernels/AttentionKernels.cs) on ILGPU's CPU accelerator against the CPU backend's
/// flash kernel: forward and the three gradients, small odd sizes with L ≠ S, causal, Bool and additive masks and none,
/// in every float dtype with a tolerance per dtype.
/// </summary>
[NonParallelizable]
public class CudaAttentionParityTests
{
    [OneTimeSetUp]
    public void EnableEmulator() => CudaBackend.EnableEmulation();

    static double[] Rand(int n, int seed, double lo = -1.5, double hi = 1.5)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => lo + (hi - lo) * rng.NextDouble()).ToArray();
    }

    static double[][] Run(Device dev, DType dt, double[] q, double[] k, double[] v, double[] g, int[] qs, int[] ks, int[] vs, string mode)
    {
        using var scope = Tensor.NewScope();
        Tensor Leaf(double[] x, int[] shape)
        {
            var t = Tensor.FromArray(x, shape).To(dev, dt);
            t.RequiresGrad = true;
            return t;
        }
        var tq = Leaf(q, qs); var tk = Leaf(k, ks); var tv = Leaf(v, vs);
        int l = qs[^2], s = ks[^2];
        Tensor? mask = mode switch
        {
            "bool" => Tensor.FromArray(Rand(l * s, 9, 0, 1).Select((x, i) => x < 0.7 || i % s == 0).ToArray(), [l, s]).To(dev),
            "additive" => Tensor.FromArray(Rand(qs[0] * l * s, 10, -2, 1), [qs[0], 1, l, s]).To(dev, dt),
            _ => null,
        };
        var o = Tensor.ScaledDotProductAttention(tq, tk, tv, mask, isCausal: mode == "causal", scale: mode == "additive" ? 0.45 : null);
        var tg = Tensor.FromArray(g, o.Layout.Shape.ToArray()).To(dev, dt);
        o.Mul(tg).Sum().Backward();
        return [o.ToArray<double>(), tq.Grad!.ToArray<double>(), tk.Grad!.ToArray<double>(), tv.Grad!.ToArray<double>()];
    }

    [Test]
    public void ForwardAndBackward_MatchTheCpu([Values(DType.Float32, DType.BFloat16, DType.Float16, DType.Float64)] DType dt,
        [Values("none", "causal", "bool", "additive")] string mode)
    {
        int b = 2, h = 3, l = 5, s = 7, e = 6, ev = 3;
        int[] qs = [b, h, l, e], ks = [b, h, s, e], vs = [b, h, s, ev];
        double[] q = Rand(b * h * l * e, 1), k = Rand(b * h * s * e, 2), v = Rand(b * h * s * ev, 3), g = Rand(b * h * l * ev, 4);
        using var counter = KernelCounter.Begin();
        var cuda = Run(CudaBackend.EmulatedDevice, dt, q, k, v, g, qs, ks, vs, mode);
        Assert.That(counter.Count(nameof(IBackend.ScaledDotProductAttention)), Is.EqualTo(1));
        var cpu = Run(Device.Cpu, dt, q, k, v, g, qs, ks, vs, mode);
        // Both accumulate in float32 but in different orders; a half type rounds each result once.
        double tol = dt switch { DType.BFloat16 => 1.6e-2, DType.Float16 => 2e-3, DType.Float64 => 1e-12, _ => 2e-5 };
        string[] names = ["o", "dq", "dk", "dv"];
        for (int r = 0; r < 4; r++)
        {
            double max = cpu[r].Select(Math.Abs).Max();
            for (int i = 0; i < cpu[r].Length; i++)
                Assert.That(cuda[r][i], Is.EqualTo(cpu[r][i]).Within(tol * (Math.Abs(cpu[r][i]) + 0.1 * max) + 1e-12), $"{names[r]} [{i}] ({dt}, {mode})");
        }
    }
}

using Engine.Backends;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The CUDA attention kernels (Kernels/FlashAttentionKernels.cs; Kernels/AttentionKernels.cs for heads wider than 64)
/// on ILGPU's CPU accelerator against the CPU backend's flash kernel: forward and the three gradients, small odd sizes
/// with L ≠ S that cross the emulator tiling's blocks, causal, Bool and additive masks and none, transposed-view
/// operands, size-1 and empty sizes, in every float dtype with a tolerance per dtype.
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

    // o and the gradients of q, k, v (of the leaves: with strided, q and k are [b, l, h, e] and [b, s, h, e] leaves
    // read through their [b, h, ·, e] transposed views, as attention reads a fused projection).
    static double[][] Run(Device dev, DType dt, int b, int h, int l, int s, int e, int ev, string mode, bool strided = false)
    {
        using var scope = Tensor.NewScope();
        Tensor Leaf(int[] shape, int seed)
        {
            var t = Tensor.FromArray(Rand(shape.Aggregate(1, (x, y) => x * y), seed), shape).To(dev, dt);
            t.RequiresGrad = true;
            return t;
        }
        var tq = strided ? Leaf([b, l, h, e], 1) : Leaf([b, h, l, e], 1);
        var tk = strided ? Leaf([b, s, h, e], 2) : Leaf([b, h, s, e], 2);
        var tv = Leaf([b, h, s, ev], 3);
        Tensor? mask = mode switch
        {
            "bool" => Tensor.FromArray(Rand(l * s, 9, 0, 1).Select((x, i) => x < 0.7 || i % s == 0).ToArray(), [l, s]).To(dev),
            "additive" => Tensor.FromArray(Rand(b * l * s, 10, -2, 1), [b, 1, l, s]).To(dev, dt),
            _ => null,
        };
        var o = Tensor.ScaledDotProductAttention(strided ? tq.Transpose(1, 2) : tq, strided ? tk.Transpose(1, 2) : tk, tv, mask,
            isCausal: mode == "causal", scale: mode == "additive" ? 0.45 : null);
        var tg = Tensor.FromArray(Rand(b * h * l * ev, 4), o.Layout.Shape.ToArray()).To(dev, dt);
        o.Mul(tg).Sum().Backward();
        return [o.ToArray<double>(), tq.Grad!.ToArray<double>(), tk.Grad!.ToArray<double>(), tv.Grad!.ToArray<double>()];
    }

    // The emulated CUDA backend against the CPU's: both accumulate in float32 but in different orders; a half type
    // rounds each result once. Checks that the forward is one contract call.
    static void Compare(DType dt, int b, int h, int l, int s, int e, int ev, string mode, bool strided = false)
    {
        using var counter = KernelCounter.Begin();
        var cuda = Run(CudaBackend.EmulatedDevice, dt, b, h, l, s, e, ev, mode, strided);
        Assert.That(counter.Count(nameof(IBackend.ScaledDotProductAttention)), Is.EqualTo(1));
        var cpu = Run(Device.Cpu, dt, b, h, l, s, e, ev, mode, strided);
        double tol = dt switch { DType.BFloat16 => 1.6e-2, DType.Float16 => 2e-3, DType.Float64 => 1e-12, _ => 2e-5 };
        string[] names = ["o", "dq", "dk", "dv"];
        for (int r = 0; r < 4; r++)
        {
            Assert.That(cuda[r], Has.Length.EqualTo(cpu[r].Length), names[r]);
            double max = cpu[r].Select(Math.Abs).DefaultIfEmpty(0).Max();
            for (int i = 0; i < cpu[r].Length; i++)
                Assert.That(cuda[r][i], Is.EqualTo(cpu[r][i]).Within(tol * (Math.Abs(cpu[r][i]) + 0.1 * max) + 1e-12), $"{names[r]} [{i}] ({dt}, {mode})");
        }
    }

    [Test]
    public void ForwardAndBackward_MatchTheCpu([Values(DType.Float32, DType.BFloat16, DType.Float16, DType.Float64)] DType dt,
        [Values("none", "causal", "bool", "additive")] string mode) =>
        Compare(dt, 2, 3, 5, 7, 6, 3, mode);

    // Sizes that cross the emulator tiling's blocks (FlashEmulatorTile: 4 query rows per forward and dq group, 4 keys
    // per dk/dv group, key and query blocks of 16) with partial last blocks, L < S and L > S under the causal mask,
    // both masks, the half types, transposed-view q and k, and head dims at the tiles' width (64).
    [TestCase(DType.Float32, 1, 2, 9, 37, 20, 12, "none", false)]
    [TestCase(DType.Float32, 1, 2, 9, 37, 20, 12, "causal", false)]
    [TestCase(DType.Float32, 1, 2, 37, 9, 20, 12, "causal", false)]
    [TestCase(DType.Float32, 2, 1, 18, 33, 8, 5, "causal", true)]
    [TestCase(DType.Float32, 2, 1, 7, 21, 8, 5, "additive", false)]
    [TestCase(DType.Float32, 1, 2, 11, 19, 5, 9, "bool", true)]
    [TestCase(DType.BFloat16, 1, 2, 9, 37, 20, 12, "causal", true)]
    [TestCase(DType.Float16, 1, 2, 9, 37, 20, 12, "none", true)]
    [TestCase(DType.Float16, 2, 1, 13, 17, 8, 5, "additive", false)]
    [TestCase(DType.Float32, 1, 1, 6, 18, 64, 64, "causal", false)]
    [TestCase(DType.BFloat16, 1, 1, 6, 18, 64, 64, "none", true)]
    public void TiledBlocks_MatchTheCpu(DType dt, int b, int h, int l, int s, int e, int ev, string mode, bool strided) =>
        Compare(dt, b, h, l, s, e, ev, mode, strided);

    // Heads wider than the tiles (FlashGpuTile.Width = 64) run the one-thread-per-element kernels.
    [TestCase(DType.Float32, 65, 5, "causal")]
    [TestCase(DType.Float16, 8, 70, "none")]
    [TestCase(DType.BFloat16, 66, 66, "additive")]
    public void WideHeads_MatchTheCpu(DType dt, int e, int ev, string mode) => Compare(dt, 1, 2, 5, 7, e, ev, mode);

    // One query, one key, one column; no key (o = 0, lse = −∞), no query, no value column, no q/k column.
    [TestCase(1, 1, 1, 1, "none")]
    [TestCase(1, 1, 1, 1, "causal")]
    [TestCase(3, 0, 4, 2, "none")]
    [TestCase(0, 5, 4, 2, "none")]
    [TestCase(3, 5, 4, 0, "causal")]
    [TestCase(3, 5, 0, 2, "additive")] // not the default scale 1/√E, infinite at E = 0
    public void SmallAndEmptySizes_MatchTheCpu(int l, int s, int e, int ev, string mode) => Compare(DType.Float32, 1, 2, l, s, e, ev, mode);
}

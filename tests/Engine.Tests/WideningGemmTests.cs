using Engine.Backends.Cpu;
using Engine.Backends.Cpu.Gemm;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// The CPU's 16-bit GEMMs (bf16 and float16 MatMul and Linear, and the bf16 GEMM's fallback) read their operands by
/// widening them while packing and write a 16-bit C rounded once per block. They promise the bits of the composition
/// they replaced, widen to float32 copies → float32 GEMM → round, so they are compared with that composition bit for
/// bit, at sizes that take the packed path (several k panels, several column blocks, edge tiles, transposed and
/// batched operands), and with a float64 product computed here.
/// </summary>
public class WideningGemmTests
{
    static readonly DType[] Halves = [DType.BFloat16, DType.Float16];

    // (m, k, n): past the direct-path threshold; k over one 256-deep panel; n over the 16-bit path's 512-column
    // block; m over one MC block of 192 rows; and odd edges everywhere.
    static readonly (int M, int K, int N)[] Sizes = [(7, 33, 37), (61, 300, 45), (197, 70, 533), (13, 515, 29)];

    static Tensor Random(int[] shape, DType dtype, int seed) =>
        Tensor.Randn(shape, DType.Float32, Device.Cpu, new Generator((ulong)seed)).To(dtype);

    static ushort[] Bits(Tensor t) { using var c = t.Contiguous(); return c.ToArray<ushort>(); }

    [Test]
    public void MatMul_EqualsTheFloat32CompositionBitForBit([ValueSource(nameof(Halves))] DType dtype, [Values(0, 1, 2, 3)] int size, [Values] bool transposeA, [Values] bool transposeB)
    {
        var (m, k, n) = Sizes[size];
        using var scope = Tensor.NewScope();
        var a = transposeA ? Random([k, m], dtype, 1).T : Random([m, k], dtype, 1);
        var b = transposeB ? Random([n, k], dtype, 2).T : Random([k, n], dtype, 2);
        var y = a.MatMul(b);
        var reference = a.To(DType.Float32).MatMul(b.To(DType.Float32)).To(dtype);
        Assert.That(y.DType, Is.EqualTo(dtype));
        Assert.That(Bits(y), Is.EqualTo(Bits(reference)), $"{dtype} {m}x{k}x{n} transposeA={transposeA} transposeB={transposeB}");
    }

    [Test]
    public void BatchedMatMul_EqualsTheFloat32CompositionAndAFloat64Product([ValueSource(nameof(Halves))] DType dtype)
    {
        using var scope = Tensor.NewScope();
        int batch = 3, m = 40, k = 290, n = 50;
        // A batch of non-contiguous left operands: every other row of a taller tensor.
        var a = Random([batch, 2 * m, k], dtype, 3).Slice(1, 0, 2 * m, 2);
        var b = Random([batch, k, n], dtype, 4);
        var y = a.MatMul(b);
        Assert.That(Bits(y), Is.EqualTo(Bits(a.To(DType.Float32).MatMul(b.To(DType.Float32)).To(dtype))));

        var ad = a.To(DType.Float64).Contiguous().ToArray<double>();
        var bd = b.To(DType.Float64).ToArray<double>();
        var yd = y.To(DType.Float64).ToArray<double>();
        double unit = dtype == DType.BFloat16 ? 1.0 / 256 : 1.0 / 2048;
        for (int t = 0; t < batch; t++)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double s = 0, mag = 0;
                    for (int p = 0; p < k; p++) { double v = ad[(t * m + i) * k + p] * bd[(t * k + p) * n + j]; s += v; mag += Math.Abs(v); }
                    Assert.That(yd[(t * m + i) * n + j], Is.EqualTo(s).Within(unit * Math.Abs(s) + 1e-5 * mag), $"[{t},{i},{j}]");
                }
    }

    [Test]
    public void Linear_EqualsTheFloat32CompositionBitForBit([ValueSource(nameof(Halves))] DType dtype, [Values(1, 2, 3)] int size, [Values] Activation activation, [Values] bool withBias)
    {
        var (m, k, n) = Sizes[size];
        using var scope = Tensor.NewScope();
        var x = Random([m, k], dtype, 5);
        var w = Random([n, k], dtype, 6);
        var bias = withBias ? Random([n], dtype, 7) : null;
        var y = Tensor.Linear(x, w, bias, activation);
        var reference = Tensor.Linear(x.To(DType.Float32), w.To(DType.Float32), bias?.To(DType.Float32), activation).To(dtype);
        Assert.That(Bits(y), Is.EqualTo(Bits(reference)), $"{dtype} {m}x{k}x{n} {activation} bias={withBias}");
    }

    [Test]
    public void LinearBackward_WithAHalfSavedPreActivation_MatchesTheUnfusedComposition([ValueSource(nameof(Halves))] DType dtype)
    {
        // The fused op saves the pre-activation the GEMM's epilogue wrote in the half type; its gradients must be
        // those of gelu(x·wᵀ + b) composed from separate ops on the same rounded values.
        using var scope = Tensor.NewScope();
        var x = Random([61, 300], dtype, 8); x.RequiresGrad = true;
        var w = Random([45, 300], dtype, 9); w.RequiresGrad = true;
        var b = Random([45], dtype, 10); b.RequiresGrad = true;
        Tensor.Linear(x, w, b, Activation.Relu).Sum().Backward();
        var fused = (x.Grad!.To(DType.Float64).ToArray<double>(), w.Grad!.To(DType.Float64).ToArray<double>(), b.Grad!.To(DType.Float64).ToArray<double>());
        x.Grad = null; w.Grad = null; b.Grad = null;
        x.MatMul(w.T).Add(b).Relu().Sum().Backward();
        var plain = (x.Grad!.To(DType.Float64).ToArray<double>(), w.Grad!.To(DType.Float64).ToArray<double>(), b.Grad!.To(DType.Float64).ToArray<double>());
        Assert.That(fused.Item1, Is.EqualTo(plain.Item1).Within(1e-2), "x grad");
        Assert.That(fused.Item2, Is.EqualTo(plain.Item2).Within(0.5), "w grad (sums of 61 terms)");
        Assert.That(fused.Item3, Is.EqualTo(plain.Item3), "bias grad: a count of positive outputs");
    }

    [Test]
    public unsafe void Bf16Gemm_Fallback_FromFloat32Operands_RoundsThemToBf16First([Values] bool accumulate)
    {
        // A float32 operand of the bf16 GEMM is rounded to bf16 before the product (the JIT kernel reads bf16 pairs).
        int m = 50, k = 270, n = 60;
        var g = new Random(11);
        var a = new float[m * k]; var b = new float[k * n]; var c = new float[m * n]; var c0 = new float[m * n];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(g.NextDouble() * 2 - 1);
        for (int i = 0; i < b.Length; i++) b[i] = (float)(g.NextDouble() * 2 - 1);
        for (int i = 0; i < c.Length; i++) c[i] = c0[i] = (float)(g.NextDouble() * 2 - 1);
        using (CpuBackend.UseOptions(CpuBackend.Options with { Bf16Gemm = Bf16GemmPath.Fallback }))
            fixed (float* pa = a, pb = b, pc = c)
                Bf16Gemm.Gemm(1, m, n, k, pa, [0], k, 1, pb, [0], n, 1, pc, [0], n, accumulate, 2);

        // The same product from rounded float32 copies through the float32 GEMM.
        var ar = a.Select(v => (float)(BFloat16)v).ToArray();
        var br = b.Select(v => (float)(BFloat16)v).ToArray();
        var expected = accumulate ? (float[])c0.Clone() : new float[m * n];
        fixed (float* pa = ar, pb = br, pc = expected)
            Sgemm.Gemm(1, m, n, k, pa, [0], k, 1, pb, [0], n, 1, pc, [0], n, accumulate, 2);
        Assert.That(c, Is.EqualTo(expected));
    }

    [Test]
    public void ThreadCount_DoesNotChangeTheBits([ValueSource(nameof(Halves))] DType dtype)
    {
        using var scope = Tensor.NewScope();
        var a = Random([197, 300], dtype, 12);
        var b = Random([300, 533], dtype, 13);
        ushort[] Run(int threads)
        {
            using var _ = CpuBackend.UseOptions(CpuBackend.Options with { Threads = threads });
            using var y = a.MatMul(b);
            return Bits(y);
        }
        var one = Run(1);
        Assert.That(Run(2), Is.EqualTo(one));
        Assert.That(Run(3), Is.EqualTo(one));
    }
}

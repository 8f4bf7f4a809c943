using Engine.Backends;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

[TestFixture]
[NonParallelizable]
public class CudaGemmParityTests
{
    [Test]
    public void Smoke()
    {
        CudaBackend.EnableEmulation();
        var dev = CudaBackend.EmulatedDevice;
        foreach (var dt in new[] { DType.Float32, DType.Float64, DType.BFloat16, DType.Float16 })
        {
            var rng = new Random(1);
            int m = 5, k = 7, n = 3;
            var a = new double[m * k]; var b = new double[k * n];
            for (int i = 0; i < a.Length; i++) a[i] = rng.Next(-3, 4);
            for (int i = 0; i < b.Length; i++) b[i] = rng.Next(-3, 4);
            using var ta0 = Tensor.FromArray(a, [m, k], dev); using var ta = ta0.To(dt);
            using var tb0 = Tensor.FromArray(b, [k, n], dev); using var tb = tb0.To(dt);
            ta.MatMul(tb).Dispose();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            using var y = ta.MatMul(tb);
            y.ToArray<double>();
            TestContext.Out.WriteLine($"{dt}: warm {sw.ElapsedMilliseconds} ms");
            foreach (var (mm, nn, kk) in new[] { (33, 17, 65), (64, 64, 64) })
            {
                using var x1 = Tensor.Zeros([mm, kk], dt, dev); using var x2 = Tensor.Zeros([kk, nn], dt, dev);
                sw.Restart(); using var x3 = x1.MatMul(x2); x3.ToArray<double>();
                TestContext.Out.WriteLine($"{dt} {mm}x{nn}x{kk}: {sw.ElapsedMilliseconds} ms");
            }
            sw.Restart();
            var got = y.ToArray<double>();
            TestContext.Out.WriteLine($"{dt}: {sw.ElapsedMilliseconds} ms");
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double s = 0;
                    for (int p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
                    Assert.That(got[i * n + j], Is.EqualTo(s), $"{dt} [{i},{j}]");
                }
        }
    }
}

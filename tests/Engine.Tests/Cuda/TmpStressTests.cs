using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

[TestFixture]
public class TmpStressTests
{
    [Test]
    public void LeakAndCollect()
    {
        CudaBackend.EnableEmulation();
        var dev = CudaBackend.EmulatedDevice;
        using var w = Tensor.Ones([4, 37], DType.Float32, dev);
        for (int i = 0; i < 200; i++)
        {
            using var y = w.Mul(w).Tanh();
            using var s = y.Sum(-1, keepDim: true);
            if (i % 10 == 0) { GC.Collect(); }
        }
        Assert.That(w.Sum().Item(), Is.EqualTo(148));
    }
}

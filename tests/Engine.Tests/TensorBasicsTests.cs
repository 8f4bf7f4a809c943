using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

public class TensorBasicsTests
{
    [Test]
    public void AddBroadcastsAndMatchesReference()
    {
        var rng = new Random(1);
        foreach (var dt in new[] { DType.Float64, DType.Float32, DType.Float16, DType.BFloat16 })
        {
            var a = Ref.Random(rng, 12, dt); var b = Ref.Random(rng, 4, dt);
            using var ta = Layouts.Make(a, [3, 4], dt, Layouts.Kind.Transposed);
            using var tb = Layouts.Make(b, [4], dt, Layouts.Kind.Contiguous);
            using var y = ta + tb;
            var exp = new double[12];
            for (int i = 0; i < 3; i++) for (int j = 0; j < 4; j++) exp[i * 4 + j] = Ref.RoundTo(a[i * 4 + j] + b[j], dt);
            Ref.AssertClose(y.ToArray<double>(), exp, dt, $"add {dt}");
        }
    }
}

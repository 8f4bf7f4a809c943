using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The kernels' division-free index math, checked on the host (it is plain C#, the same code ILGPU compiles):
/// <see cref="FastDivisor"/> against the hardware's division, and <see cref="Geometry.Offsets"/> in its 32-bit and
/// 64-bit walks against offsets computed from the layout's strides in the test.
/// </summary>
public class FastDivisorTests
{
    [Test]
    public void Divide_MatchesDivision_AtTheEdges()
    {
        long[] divisors = [1, 2, 3, 5, 7, 10, 255, 256, 257, 641, 65535, 65536, 65537, 1 << 20, (1 << 30) + 1,
            int.MaxValue - 1, int.MaxValue, 1L << 31, (1L << 31) + 1, (1L << 40) - 3, (1L << 62) + 1, long.MaxValue - 1, long.MaxValue];
        foreach (long d in divisors)
        {
            var q = FastDivisor.Of(d);
            foreach (long n in Dividends(d, long.MaxValue))
                Assert.That(q.Divide(n), Is.EqualTo(n / d), $"{n} / {d}");
            if (d > int.MaxValue) continue;
            foreach (long n in Dividends(d, int.MaxValue))
                Assert.That(q.Divide32((int)n), Is.EqualTo((int)n / (int)d), $"{n} / {d} (32-bit)");
        }
    }

    [Test]
    public void Divide_MatchesDivision_OnRandomPairs()
    {
        var rng = new Random(7);
        for (int k = 0; k < 200_000; k++)
        {
            long d = 1 + (rng.NextInt64(long.MaxValue) >> rng.Next(63));
            long n = rng.NextInt64(long.MaxValue) >> rng.Next(63);
            var q = FastDivisor.Of(d);
            Assert.That(q.Divide(n), Is.EqualTo(n / d), $"{n} / {d}");
            if (d <= int.MaxValue)
            {
                int n32 = (int)(n & int.MaxValue);
                Assert.That(q.Divide32(n32), Is.EqualTo(n32 / (int)d), $"{n32} / {d} (32-bit)");
            }
        }
    }

    static IEnumerable<long> Dividends(long d, long max)
    {
        yield return 0;
        yield return max;
        if (max > 0) yield return max - 1;
        // Around multiples of d, where a quotient that is one off shows.
        foreach (long m in new long[] { 1, 2, 3, 1000, max / d - 1, max / d })
        {
            if (m <= 0 || m > max / d) continue;
            long p = m * d;
            yield return p;
            yield return p - 1;
            if (p < max) yield return p + 1;
        }
    }

    [Test]
    public void Offsets_BothWalks_MatchTheStrides()
    {
        var rng = new Random(3);
        for (int k = 0; k < 300; k++)
        {
            int rank = rng.Next(1, 6);
            var shape = Enumerable.Range(0, rank).Select(_ => rng.Next(1, 6)).ToArray();
            // Operand strides: a permuted/expanded/sliced view of a bigger buffer (some zero for broadcasting).
            Layout Operand()
            {
                var strides = shape.Select(_ => rng.Next(4) == 0 ? 0L : rng.Next(1, 40)).ToArray();
                return new Layout(shape, strides, rng.Next(0, 50));
            }
            Layout y = Layout.Contiguous(shape), a = Operand(), b = Operand();
            var g = Geometry.Of("test", y, a, b);
            Assert.That(g.Index32, Is.EqualTo(1));
            var wide = g;
            wide.Index32 = 0;
            long count = shape.Aggregate(1L, (p, s) => p * s);
            for (long i = 0; i < count; i++)
            {
                var expected = (Offset(y, i), Offset(a, i), Offset(b, i));
                g.Offsets(i, out long y32, out long a32, out long b32, out _);
                wide.Offsets(i, out long y64, out long a64, out long b64, out _);
                Assert.That((y32, a32, b32), Is.EqualTo(expected), $"32-bit walk, position {i} of [{string.Join(", ", shape)}]");
                Assert.That((y64, a64, b64), Is.EqualTo(expected), $"64-bit walk, position {i} of [{string.Join(", ", shape)}]");
            }
        }
    }

    [Test]
    public void Offsets_PastTwoToThe31_TakeThe64BitWalk()
    {
        // A broadcast view whose farthest element sits past 2^31 (no memory behind it: only the arithmetic is checked).
        long big = 3L << 30;
        var a = new Layout([4, 3], [big, 1], 5);
        var g = Geometry.Of("test", Layout.Contiguous([4, 3]), a);
        Assert.That(g.Index32, Is.EqualTo(0));
        g.Offsets(11, out long y, out long ao, out _, out _);
        Assert.That((y, ao), Is.EqualTo((11L, 5 + 3 * big + 2)));
    }

    static long Offset(Layout l, long linear)
    {
        long off = l.Offset;
        for (int d = l.Rank - 1; d >= 0; d--)
        {
            long size = l.Shape[d];
            off += linear % size * l.Strides[d];
            linear /= size;
        }
        return off;
    }
}

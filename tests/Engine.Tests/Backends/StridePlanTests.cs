using Engine.Backends;
using Engine.Backends.Cpu;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Backends;

/// <summary>
/// The shared stride planner against the plain walk (offset + Σ index·stride for each operand, in row-major order of
/// the shape), over random shapes with size-1 and empty dims and operands that are permuted, sliced, stepped, offset
/// and expanded; and the two backends' walks built from it (the CPU's rows, CUDA's <see cref="Geometry"/>) against the
/// same reference.
/// </summary>
[TestFixture]
public class StridePlanTests
{
    const int Cases = 400;

    /// <summary>Each operand's storage offset of every element, row-major over the shape: the reference.</summary>
    static long[][] Reference(Layout[] layouts)
    {
        var shape = layouts[0].Shape;
        long n = Shape.Numel(shape);
        var r = new long[n][];
        var idx = new int[shape.Rank];
        for (long f = 0; f < n; f++)
        {
            r[f] = new long[layouts.Length];
            for (int k = 0; k < layouts.Length; k++)
            {
                long o = layouts[k].Offset;
                for (int d = 0; d < shape.Rank; d++) o += idx[d] * layouts[k].Strides[d];
                r[f][k] = o;
            }
            for (int d = shape.Rank - 1; d >= 0; d--)
            {
                if (++idx[d] < shape[d]) break;
                idx[d] = 0;
            }
        }
        return r;
    }

    static int[] RandomShape(Random rng)
    {
        int rank = rng.Next(0, 7);
        var shape = new int[rank];
        for (int d = 0; d < rank; d++)
            shape[d] = rng.Next(10) switch { 0 => 1, 1 => 1, 2 => 2, 3 => 3, 4 => 4, 5 => 5, 6 => 2, 7 => 3, 8 => 6, _ => rng.Next(20) == 0 ? 0 : 2 };
        // Keep the walk small enough to enumerate.
        while (Shape.Numel(shape) > 4096) shape[rng.Next(rank)] = 1;
        return shape;
    }

    /// <summary>
    /// A layout of <paramref name="shape"/>: contiguous, or a view of a larger buffer whose dims are laid out in a
    /// random order (permuted), each stepped and padded (sliced), some broadcast with stride 0 (expanded), at an offset.
    /// </summary>
    static Layout RandomLayout(Random rng, int[] shape)
    {
        int rank = shape.Length;
        if (rng.Next(3) == 0) return new Layout(shape, Shape.ContiguousStrides(shape), rng.Next(2) * rng.Next(50));
        var order = Enumerable.Range(0, rank).OrderBy(_ => rng.Next()).ToArray(); // order[0] is the innermost in storage
        var strides = new long[rank];
        long extent = 1;
        foreach (var d in order)
        {
            int step = rng.Next(4) == 0 ? 2 : 1;
            int pad = rng.Next(4) == 0 ? rng.Next(1, 3) : 0;
            strides[d] = extent * step;
            extent *= (long)shape[d] * step + pad;
        }
        for (int d = 0; d < rank; d++)
            if (rng.Next(5) == 0) strides[d] = 0; // expanded (or a size-1 dim with any stride)
        if (rank > 0 && rng.Next(6) == 0) strides[rng.Next(rank)] = 99; // a size-1 dim's stride is never read
        for (int d = 0; d < rank; d++) if (shape[d] != 1 && strides[d] == 99) strides[d] = 0;
        return new Layout(shape, strides, rng.Next(100));
    }

    static Layout[] RandomOperands(Random rng, int count)
    {
        var shape = RandomShape(rng);
        return Enumerable.Range(0, count).Select(_ => RandomLayout(rng, shape)).ToArray();
    }

    [Test]
    public void Plan_WalksEveryOperandAsThePlainReference_AndLeavesNothingToMerge()
    {
        var rng = new Random(13);
        for (int c = 0; c < Cases; c++)
        {
            var layouts = RandomOperands(rng, rng.Next(1, 5));
            long maxDim = rng.Next(4) == 0 ? rng.Next(2, 30) : long.MaxValue;
            var plan = StridePlan.Of(layouts, maxDim);
            var expected = Reference(layouts);
            string what = $"case {c}: shape {Shape.Format(layouts[0].Shape)}, strides {string.Join(" | ", layouts.Select(l => string.Join(",", l.Strides.ToArray())))}, cap {maxDim}";

            Assert.That(plan.Count, Is.EqualTo(expected.LongLength), what);
            Assert.That(plan.Offsets, Is.EqualTo(layouts.Select(l => l.Offset).ToArray()), what);
            Assert.That(plan.Dims.Aggregate(1L, (a, d) => a * d), Is.EqualTo(plan.Count <= 1 ? 1 : plan.Count), what);
            for (int d = 0; d < plan.Rank; d++)
            {
                Assert.That(plan.Dims[d], Is.GreaterThan(1), what);
                Assert.That(plan.Dims[d] <= maxDim || layouts[0].Shape.Contains((int)plan.Dims[d]), Is.True, what + $": dim {d} passes the cap");
                if (d + 1 < plan.Rank)
                {
                    bool continues = plan.Strides[d].Select((s, k) => s == plan.Strides[d + 1][k] * plan.Dims[d + 1]).All(x => x);
                    Assert.That(continues && plan.Dims[d] * plan.Dims[d + 1] <= maxDim, Is.False, what + $": dims {d} and {d + 1} could merge");
                }
            }
            var offs = new long[layouts.Length];
            for (long i = 0; i < expected.LongLength; i++)
            {
                plan.OffsetsAt(i, offs);
                if (!offs.AsSpan().SequenceEqual(expected[i]))
                    Assert.Fail($"{what}: element {i} at [{string.Join(",", offs)}], expected [{string.Join(",", expected[i])}]");
            }
        }
    }

    [Test]
    public void CpuRows_WalkAsTheReference()
    {
        var rng = new Random(31);
        for (int c = 0; c < Cases; c++)
        {
            var layouts = RandomOperands(rng, rng.Next(1, 5));
            var expected = Reference(layouts);
            var plan = new StridedPlan(layouts);
            Assert.That(plan.Outer * plan.Inner, Is.EqualTo(expected.LongLength), $"case {c}");
            var offs = new long[layouts.Length];
            long f = 0;
            for (long r = 0; r < plan.Outer; r++)
            {
                plan.RowOffsets(r, offs);
                for (int j = 0; j < plan.Inner; j++, f++)
                    for (int k = 0; k < layouts.Length; k++)
                        Assert.That(offs[k] + j * plan.InnerStrides[k], Is.EqualTo(expected[f][k]), $"case {c}, element {f}, operand {k}");
            }
        }
    }

    [Test]
    public void CudaGeometry_WalksAsTheReference()
    {
        var rng = new Random(57);
        for (int c = 0; c < Cases; c++)
        {
            var layouts = RandomOperands(rng, rng.Next(1, 5));
            var expected = Reference(layouts);
            Layout? At(int k) => k < layouts.Length ? layouts[k] : null;
            var g = Geometry.Of("Test", layouts[0], At(1), At(2), At(3));
            Assert.That(g.Count, Is.EqualTo(expected.LongLength), $"case {c}");
            for (long i = 0; i < expected.LongLength; i++)
            {
                g.Offsets(i, out long y, out long a, out long b, out long cc);
                long[] got = [y, a, b, cc];
                for (int k = 0; k < layouts.Length; k++)
                    Assert.That(got[k], Is.EqualTo(expected[i][k]), $"case {c}, element {i}, operand {k}");
                for (int k = layouts.Length; k < 4; k++) Assert.That(got[k], Is.Zero, $"case {c}: missing operand {k} moves");
            }
        }
    }

    [Test]
    public void Plan_MergesDenseDropsOnesAndCapsFromTheInside()
    {
        var dense = StridePlan.Of([Layout.Contiguous([2, 3, 4]), new Layout([2, 3, 4], [0, 0, 0], 7)]);
        Assert.That(dense.Dims, Is.EqualTo(new long[] { 24 }));
        Assert.That(dense.Strides[0], Is.EqualTo(new long[] { 1, 0 }));
        var ones = StridePlan.Of([new Layout([2, 1, 3], [3, 99, 1], 4)]);
        Assert.That(ones.Dims, Is.EqualTo(new long[] { 6 }));
        var transposed = StridePlan.Of([Layout.Contiguous([3, 4]), new Layout([3, 4], [1, 3], 0)]);
        Assert.That(transposed.Dims, Is.EqualTo(new long[] { 3, 4 }));
        // The cap leaves the inner dim as long as it can be: 4·3 fits under 12, the 2 does not.
        var capped = StridePlan.Of([Layout.Contiguous([2, 3, 4])], 12);
        Assert.That(capped.Dims, Is.EqualTo(new long[] { 2, 12 }));
        var empty = StridePlan.Of([Layout.Contiguous([3, 0, 2])]);
        Assert.That((empty.Count, empty.Rank), Is.EqualTo((0L, 0)));
        var scalar = StridePlan.Of([new Layout([], [], 5)]);
        Assert.That((scalar.Count, scalar.Rank, scalar.Offsets[0]), Is.EqualTo((1L, 0, 5L)));
        Assert.Throws<ArgumentException>(() => StridePlan.Of([Layout.Contiguous([2, 3]), Layout.Contiguous([6])]));
    }
}

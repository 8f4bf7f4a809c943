using Engine.Backends.Cpu;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>Layout and Shape arithmetic: contiguity, views without copies (PyTorch's rules), broadcasting, inference.</summary>
[TestFixture]
public class LayoutTests
{
    static Layout L(int[] shape, long[] strides, long offset = 0) => new(shape, strides, offset);

    /// <summary>Storage position of every element, in row-major order of the logical shape.</summary>
    static long[] Positions(Layout l)
    {
        int n = 1;
        foreach (var d in l.Shape) n *= d;
        var r = new long[n];
        var idx = new int[l.Rank];
        for (int f = 0; f < n; f++)
        {
            int rem = f;
            for (int d = l.Rank - 1; d >= 0; d--) { idx[d] = rem % l.Shape[d]; rem /= l.Shape[d]; }
            long p = l.Offset;
            for (int d = 0; d < l.Rank; d++) p += idx[d] * l.Strides[d];
            r[f] = p;
        }
        return r;
    }

    /// <summary>
    /// Brute force: a view of <paramref name="l"/> with <paramref name="newShape"/> exists iff the storage positions, read
    /// in row-major order under the new shape, are an affine function of the new index.
    /// </summary>
    static bool Viewable(Layout l, int[] newShape)
    {
        var pos = Positions(l);
        if (pos.Length == 0) return true;
        var strides = new long[newShape.Length];
        var rowMajor = new long[newShape.Length];
        long acc = 1;
        for (int d = newShape.Length - 1; d >= 0; d--) { rowMajor[d] = acc; acc *= newShape[d]; }
        for (int d = 0; d < newShape.Length; d++) strides[d] = newShape[d] > 1 ? pos[rowMajor[d]] - pos[0] : 0;
        var idx = new int[newShape.Length];
        for (int f = 0; f < pos.Length; f++)
        {
            int rem = f;
            long p = pos[0];
            for (int d = newShape.Length - 1; d >= 0; d--) { idx[d] = rem % newShape[d]; rem /= newShape[d]; p += idx[d] * strides[d]; }
            if (p != pos[f]) return false;
        }
        return true;
    }

    [Test]
    public void IsContiguous()
    {
        Assert.That(Layout.Contiguous([2, 3, 4]).IsContiguous, Is.True);
        Assert.That(Layout.Contiguous([]).IsContiguous, Is.True);
        Assert.That(L([3, 1, 4], [4, 999, 1]).IsContiguous, Is.True, "a size-1 dim may have any stride");
        Assert.That(L([1, 1], [7, 3]).IsContiguous, Is.True);
        Assert.That(L([1, 5], [1, 1]).IsContiguous, Is.True);
        Assert.That(L([2, 3], [1, 2]).IsContiguous, Is.False, "transposed");
        Assert.That(L([2, 3], [4, 1]).IsContiguous, Is.False, "narrowed rows");
        Assert.That(L([3], [2]).IsContiguous, Is.False, "stepped");
        Assert.That(L([3, 4], [0, 1]).IsContiguous, Is.False, "expanded");
        Assert.That(L([0, 3], [5, 7]).IsContiguous, Is.True, "empty");
        Assert.That(L([2, 3], [3, 1], 17).IsContiguous, Is.True, "an offset does not matter");
    }

    [Test]
    public void HasOverlapAndStorageExtent()
    {
        Assert.That(L([3, 4], [0, 1]).HasOverlap, Is.True);
        Assert.That(L([1, 4], [0, 1]).HasOverlap, Is.False);
        Assert.That(L([3, 4], [4, 1]).HasOverlap, Is.False);
        Assert.That(L([3, 4], [4, 1], 2).StorageExtent, Is.EqualTo(14));
        Assert.That(L([3, 4], [1, 3]).StorageExtent, Is.EqualTo(12));
        Assert.That(L([3, 0], [1, 3]).StorageExtent, Is.Zero);
        Assert.That(L([], [], 5).StorageExtent, Is.EqualTo(6));
    }

    [Test]
    public void TryViewOnKnownPatterns()
    {
        // Expected strides as PyTorch's computeStride gives them.
        var cases = new (Layout From, int[] To, long[]? Strides)[]
        {
            (Layout.Contiguous([2, 3, 4]), [6, 4], [4, 1]),
            (L([3, 4], [1, 3]), [12], null),                     // x.T.view(-1)
            (L([4, 3], [1, 4]), [2, 2, 3], [2, 1, 4]),           // split the first dim of x.T
            (L([4, 3], [1, 4]), [4, 3, 1], [1, 4, 4]),
            (L([4, 3], [1, 4]), [2, 6], null),
            (L([3, 2], [4, 1], 1), [3, 2, 1], [4, 1, 1]),        // narrowed rows: split ok
            (L([3, 2], [4, 1], 1), [6], null),                   // ... merge not
            (L([3, 4], [0, 1]), [3, 2, 2], [0, 2, 1]),           // expanded rows
            (L([3, 4], [0, 1]), [12], null),
            (L([2, 3], [0, 0]), [3, 2], [0, 0]),                 // an expanded scalar
            (L([2, 1, 3], [3, 100, 1]), [6], [1]),               // size-1 dims with odd strides are transparent
            (L([6], [2]), [2, 3], [6, 2]),                       // stepped
            (L([2, 3, 4], [12, 1, 3]), [2, 12], null),
            (L([2, 3, 4], [12, 1, 3]), [6, 4], null),
            (L([2, 3, 4], [1, 8, 2]), [2, 3, 2, 2], [1, 8, 4, 2]),
        };
        foreach (var (from, to, want) in cases)
        {
            var v = from.TryView(to);
            string what = $"{from} → {Shape.Format(to)}";
            if (want is null) { Assert.That(v, Is.Null, what); continue; }
            Assert.That(v, Is.Not.Null, what);
            Assert.That(v!.Shape, Is.EqualTo(to), what);
            Assert.That(v.Strides.ToArray(), Is.EqualTo(want), what);
            Assert.That(v.Offset, Is.EqualTo(from.Offset), what);
        }
    }

    [Test]
    public void TryViewAgreesWithBruteForceOnRandomLayouts()
    {
        var rng = new Random(51);
        int viewable = 0, refused = 0;
        for (int trial = 0; trial < 3000; trial++)
        {
            // A random layout: a contiguous buffer permuted, narrowed, stepped and expanded at random.
            int rank = rng.Next(1, 5);
            var shape = Enumerable.Range(0, rank).Select(_ => rng.Next(1, 5)).ToArray();
            var l = Layout.Contiguous(shape);
            var perm = Enumerable.Range(0, rank).OrderBy(_ => rng.Next()).ToArray();
            if (rng.Next(2) == 0) l = l.Permute(perm);
            if (rng.Next(3) == 0) { int d = rng.Next(rank); if (l.Shape[d] > 1) l = l.Narrow(d, 1, l.Shape[d] - 1); }
            if (rng.Next(3) == 0) { int d = rng.Next(rank); l = l.Slice(d, 0, (l.Shape[d] + 1) / 2, 2); }
            if (rng.Next(4) == 0)
            {
                int d = rng.Next(rank);
                var sh = l.Shape.ToArray(); var st = l.Strides.ToArray();
                sh[d] = 1; l = new Layout(sh, st, l.Offset); // take one slice, then expand it
                var target = (int[])sh.Clone(); target[d] = rng.Next(1, 4);
                l = l.TryBroadcastTo(target)!;
            }
            if (rng.Next(4) == 0) l = l.Unsqueeze(rng.Next(l.Rank + 1));
            long numel = l.Numel;
            var to = RandomShape(numel, rng);
            var v = l.TryView(to);
            bool brute = Viewable(l, to);
            Assert.That(v is not null, Is.EqualTo(brute), $"{l} → {Shape.Format(to)}");
            if (v is null) { refused++; continue; }
            viewable++;
            Assert.That(Positions(v), Is.EqualTo(Positions(l)), $"{l} → {v}");
        }
        Assert.That(viewable, Is.GreaterThan(300));
        Assert.That(refused, Is.GreaterThan(300));
    }

    static int[] RandomShape(long numel, Random rng)
    {
        var dims = new List<int>();
        long rest = numel;
        while (rest > 1)
        {
            var divs = Enumerable.Range(2, (int)rest - 1).Where(d => rest % d == 0).ToArray();
            int d = divs[rng.Next(Math.Min(divs.Length, 3))];
            dims.Add(d); rest /= d;
            if (rng.Next(5) == 0) dims.Add(1);
        }
        if (dims.Count == 0 || rng.Next(6) == 0) dims.Insert(rng.Next(dims.Count + 1), 1);
        return dims.ToArray();
    }

    [Test]
    public void LayoutOps()
    {
        var l = L([2, 3, 4], [12, 4, 1], 5);
        var t = l.Transpose(0, 2);
        Assert.That(t.Shape, Is.EqualTo(new[] { 4, 3, 2 }));
        Assert.That(t.Strides.ToArray(), Is.EqualTo(new long[] { 1, 4, 12 }));
        var p = l.Permute([1, 2, 0]);
        Assert.That(p.Shape, Is.EqualTo(new[] { 3, 4, 2 }));
        Assert.That(p.Strides.ToArray(), Is.EqualTo(new long[] { 4, 1, 12 }));
        var n = l.Narrow(1, 1, 2);
        Assert.That(n.Offset, Is.EqualTo(9));
        Assert.That(n.Shape, Is.EqualTo(new[] { 2, 2, 4 }));
        var s = l.Slice(2, 1, 2, 2);
        Assert.That(s.Strides.ToArray(), Is.EqualTo(new long[] { 12, 4, 2 }));
        Assert.That(s.Offset, Is.EqualTo(6));
        var se = l.Select(1, 2);
        Assert.That(se.Shape, Is.EqualTo(new[] { 2, 4 }));
        Assert.That(se.Offset, Is.EqualTo(13));
        var u = l.Unsqueeze(1);
        Assert.That(u.Shape, Is.EqualTo(new[] { 2, 1, 3, 4 }));
        Assert.That(u.Strides.ToArray(), Is.EqualTo(new long[] { 12, 12, 4, 1 }), "PyTorch: the new dim's stride is size·stride of the dim it precedes");
        var ue = l.Unsqueeze(3);
        Assert.That(ue.Strides.ToArray(), Is.EqualTo(new long[] { 12, 4, 1, 1 }));
        var sq = u.Squeeze([1]);
        Assert.That(sq.Shape, Is.EqualTo(new[] { 2, 3, 4 }));
        var b = L([3, 1], [1, 1]).TryBroadcastTo([2, 3, 5]);
        Assert.That(b!.Shape, Is.EqualTo(new[] { 2, 3, 5 }));
        Assert.That(b.Strides.ToArray(), Is.EqualTo(new long[] { 0, 1, 0 }));
        Assert.That(L([3, 2], [2, 1]).TryBroadcastTo([3, 4]), Is.Null);
        Assert.That(L([3, 2], [2, 1]).TryBroadcastTo([2]), Is.Null);
        Assert.That(l.ToString(), Does.Contain("[2, 3, 4]").And.Contain("12, 4, 1").And.Contain("5"));
    }

    [Test]
    public void ShapeBroadcast()
    {
        Assert.That(Shape.Broadcast([3, 1, 4], [2, 4], "T"), Is.EqualTo(new[] { 3, 2, 4 }));
        Assert.That(Shape.Broadcast([], [2, 4], "T"), Is.EqualTo(new[] { 2, 4 }));
        Assert.That(Shape.Broadcast([], [], "T"), Is.Empty);
        Assert.That(Shape.Broadcast([2, 0, 3], [1, 3], "T"), Is.EqualTo(new[] { 2, 0, 3 }));
        Assert.That(Shape.Broadcast([0], [1], "T"), Is.EqualTo(new[] { 0 }));
        Assert.That(Shape.Broadcast([5, 1], [1, 6], "T"), Is.EqualTo(new[] { 5, 6 }));
        Assert.That(() => Shape.Broadcast([0], [2], "Op"), Throws.TypeOf<ShapeException>().With.Message.Contains("Op"));
        Assert.That(() => Shape.Broadcast([2, 3], [3, 3], "Op"), Throws.TypeOf<ShapeException>().With.Message.Contains("[2, 3]").And.Message.Contains("[3, 3]"));
        Assert.That(() => Shape.Broadcast([4], [3, 5], "Op"), Throws.TypeOf<ShapeException>());
    }

    [Test]
    public void ShapeInfer()
    {
        Assert.That(Shape.Infer([2, -1], 6, "T"), Is.EqualTo(new[] { 2, 3 }));
        Assert.That(Shape.Infer([-1], 0, "T"), Is.EqualTo(new[] { 0 }));
        Assert.That(Shape.Infer([], 1, "T"), Is.Empty);
        Assert.That(Shape.Infer([0, 5], 0, "T"), Is.EqualTo(new[] { 0, 5 }));
        Assert.That(Shape.Infer([1, -1, 1], 7, "T"), Is.EqualTo(new[] { 1, 7, 1 }));
        Assert.That(() => Shape.Infer([-1, -1], 4, "Op"), Throws.TypeOf<ShapeException>().With.Message.Contains("Op"));
        Assert.That(() => Shape.Infer([-2, 2], 4, "Op"), Throws.TypeOf<ShapeException>());
        Assert.That(() => Shape.Infer([4, -1], 6, "Op"), Throws.TypeOf<ShapeException>());
        Assert.That(() => Shape.Infer([0, -1], 0, "Op"), Throws.TypeOf<ShapeException>(), "ambiguous, as PyTorch");
        Assert.That(() => Shape.Infer([2, 2], 5, "Op"), Throws.TypeOf<ShapeException>());
        Assert.That(() => Shape.Infer([], 2, "Op"), Throws.TypeOf<ShapeException>());
    }

    [Test]
    public void ShapeNormalizeDimNumelStrides()
    {
        Assert.That(Shape.NormalizeDim(-1, 3, "T"), Is.EqualTo(2));
        Assert.That(Shape.NormalizeDim(-3, 3, "T"), Is.Zero);
        Assert.That(Shape.NormalizeDim(0, 0, "T"), Is.Zero);
        Assert.That(Shape.NormalizeDim(-1, 0, "T"), Is.Zero);
        Assert.That(() => Shape.NormalizeDim(3, 3, "Op"), Throws.TypeOf<ShapeException>());
        Assert.That(() => Shape.NormalizeDim(-4, 3, "Op"), Throws.TypeOf<ShapeException>());
        Assert.That(() => Shape.NormalizeDim(1, 0, "Op"), Throws.TypeOf<ShapeException>());
        Assert.That(Shape.Numel([]), Is.EqualTo(1));
        Assert.That(Shape.Numel([2, 0, 3]), Is.Zero);
        Assert.That(Shape.ContiguousStrides([2, 3, 4]), Is.EqualTo(new long[] { 12, 4, 1 }));
        Assert.That(Shape.ContiguousStrides([2, 0, 4]), Is.EqualTo(new long[] { 4, 4, 1 }));
        Assert.That(Shape.Format([2, 3]), Is.EqualTo("[2, 3]"));
        Assert.That(Shape.Format([]), Is.EqualTo("[]"));
    }

    [Test]
    public void StridedPlanMergesAndDrops()
    {
        var dense = new StridedPlan(Layout.Contiguous([2, 3, 4]), Layout.Contiguous([2, 3, 4]));
        Assert.That(dense.IsDense, Is.True);
        Assert.That(dense.Inner, Is.EqualTo(24));
        var withOnes = new StridedPlan(L([2, 1, 3], [3, 99, 1], 4));
        Assert.That(withOnes.Inner, Is.EqualTo(6));
        Assert.That(withOnes.Outer, Is.EqualTo(1));
        Assert.That(withOnes.Offsets, Is.EqualTo(new long[] { 4 }));
        var t = new StridedPlan(Layout.Contiguous([3, 4]), L([3, 4], [1, 3]));
        Assert.That(t.IsDense, Is.False);
        Assert.That(t.Inner, Is.EqualTo(4));
        Assert.That(t.Outer, Is.EqualTo(3));
        Span<long> offs = stackalloc long[2];
        t.RowOffsets(2, offs);
        Assert.That(offs.ToArray(), Is.EqualTo(new long[] { 8, 2 }));
        var empty = new StridedPlan(Layout.Contiguous([3, 0]));
        Assert.That(empty.Outer, Is.Zero);
        var scalar = new StridedPlan(Layout.Contiguous([]));
        Assert.That(scalar.Inner, Is.EqualTo(1));
        Assert.That(scalar.Outer, Is.EqualTo(1));
    }
}

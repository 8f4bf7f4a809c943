using Engine.Autograd;
using Engine.Backends.Cpu;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Indexing and joining ops (Gather, ScatterAdd, IndexSelect, IndexAdd, Embedding, Cat, Stack, Split, Chunk, Tril,
/// Triu) against plain float64 loops over multi-indices, in every float dtype and int64, on non-contiguous inputs and
/// indices, with error cases and gradient checks.
/// </summary>
[TestFixture]
public class IndexOpsTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];
    static readonly DType[] Values = [.. Floats, DType.Int64];

    // ---- plain references ----

    static long Wrap(double v, int size) => v < 0 ? (long)v + size : (long)v;

    static double[] GatherRef(double[] x, int[] xs, double[] idx, int[] iS, int dim)
    {
        var y = new double[Ref.Numel(iS)];
        for (int f = 0; f < y.Length; f++)
        {
            var p = Ref.Unravel(f, iS);
            p[dim] = (int)Wrap(idx[f], xs[dim]);
            y[f] = x[Ref.Ravel(p, xs)];
        }
        return y;
    }

    static double[] ScatterAddRef(double[] self, int[] ss, double[] idx, int[] iS, double[] src, int[] srcS, int dim)
    {
        var y = (double[])self.Clone();
        for (int f = 0; f < idx.Length; f++)
        {
            var p = Ref.Unravel(f, iS);
            double v = src[Ref.Ravel(p, srcS)];
            p[dim] = (int)Wrap(idx[f], ss[dim]);
            y[Ref.Ravel(p, ss)] += v;
        }
        return y;
    }

    static double[] RandomIndex(Random rng, int n, int size)
    {
        var r = new double[n];
        for (int i = 0; i < n; i++) r[i] = rng.Next(0, size);
        return r;
    }

    static double[] RandomValues(Random rng, int n, DType dt) =>
        dt == DType.Int64 ? Ref.Random(rng, n, dt, -50, 50) : Ref.Random(rng, n, dt);

    static int[] RandomShape(Random rng, int rank, int max = 4)
    {
        var s = new int[rank];
        for (int i = 0; i < rank; i++) s[i] = rng.Next(1, max + 1);
        return s;
    }

    static void AssertExact(Tensor t, double[] expected, string what) =>
        Ref.AssertClose(t.ToArray<double>(), expected, 0, 0, what);

    // ---- Gather ----

    [Test]
    public void GatherMatchesReference()
    {
        var rng = new Random(11);
        foreach (var dt in Values)
            foreach (var kind in Layouts.All)
                for (int trial = 0; trial < 6; trial++)
                {
                    int rank = 1 + trial % 3;
                    var xs = RandomShape(rng, rank);
                    int dim = rng.Next(-rank, rank), d = dim < 0 ? dim + rank : dim;
                    var iS = new int[rank];
                    for (int k = 0; k < rank; k++) iS[k] = k == d ? rng.Next(0, 6) : rng.Next(1, xs[k] + 1);
                    var x = RandomValues(rng, Ref.Numel(xs), dt);
                    var idx = RandomIndex(rng, Ref.Numel(iS), xs[d]);
                    using var tx = Layouts.Make(x, xs, dt, kind);
                    var ikind = Layouts.All[(trial + 1) % Layouts.All.Length];
                    using var ti = Layouts.Make(idx, iS, DType.Int64, Ref.Numel(iS) == 0 ? Layouts.Kind.Contiguous : ikind);
                    using var y = tx.Gather(dim, ti);
                    var what = $"gather {dt} {kind} x{Shape.Format(xs)} dim {dim} index{Shape.Format(iS)} ({ikind})";
                    Assert.That(y.Shape, Is.EqualTo(iS), what);
                    Assert.That(y.DType, Is.EqualTo(dt), what);
                    AssertExact(y, GatherRef(x, xs, idx, iS, d), what);
                }
    }

    [Test]
    public void GatherTakesBroadcastAndInt32Indices()
    {
        var rng = new Random(12);
        var x = Ref.Random(rng, 12, DType.Float32);
        using var tx = Tensor.FromArray(x.Select(v => (float)v).ToArray(), [3, 4]);
        // An index column broadcast along dim 1 (stride 0): every column picks the same rows.
        using var col = Tensor.FromArray(new long[] { 2, 0, 1 }, [3, 1]);
        using var idx = col.Expand(3, 4);
        using var y = tx.Gather(0, idx);
        var iv = new double[] { 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 1 };
        AssertExact(y, GatherRef(x, [3, 4], iv, [3, 4], 0), "broadcast index");

        // The adjoint with the same broadcast index adds whole rows.
        var src = Ref.Random(rng, 12, DType.Float32);
        using var tsrc = Tensor.FromArray(src.Select(v => (float)v).ToArray(), [3, 4]);
        using var sa = tx.ScatterAdd(0, idx, tsrc);
        Ref.AssertClose(sa.ToArray<double>(), ScatterAddRef(x, [3, 4], iv, [3, 4], src, [3, 4], 0), DType.Float32, "broadcast index scatter");

        using var i32 = Tensor.FromArray(new[] { 3, 0, 2 }, [1, 3]);
        using var y32 = tx.Gather(1, i32);
        AssertExact(y32, GatherRef(x, [3, 4], [3, 0, 2], [1, 3], 1), "int32 index");
    }

    [Test]
    public void GatherHandlesZeroDimAndEmptyTensors()
    {
        using var s = Tensor.Scalar(2.5, DType.Float64);
        using var i0 = Tensor.FromArray(new long[] { 0 }, []);
        using var y0 = s.Gather(0, i0);
        Assert.That(y0.Shape, Is.Empty);
        Assert.That(y0.Item(), Is.EqualTo(2.5));

        using var x = Tensor.Zeros([0, 3], DType.Float32);
        using var ie = Tensor.Zeros([0, 2], DType.Int64);
        using var ye = x.Gather(0, ie);
        Assert.That(ye.Shape, Is.EqualTo(new[] { 0, 2 }));

        using var x2 = Tensor.Ones([2, 3], DType.Float32);
        using var ie2 = Tensor.Zeros([2, 0], DType.Int64);
        using var ye2 = x2.Gather(1, ie2);
        Assert.That(ye2.Shape, Is.EqualTo(new[] { 2, 0 }));

        // Gathering from an empty dim with a non-empty index has no valid index.
        using var xz = Tensor.Zeros([2, 0], DType.Float32);
        using var iz = Tensor.Zeros([2, 1], DType.Int64);
        Assert.That(() => xz.Gather(1, iz), Throws.TypeOf<ShapeException>().With.Message.Contains("Gather"));
    }

    [Test]
    public void GatherRejectsBadIndicesAndLeavesInputsUntouched()
    {
        var x = new double[] { 1, 2, 3, 4, 5, 6 };
        using var tx = Tensor.FromArray(x, [2, 3]);
        foreach (var bad in new long[] { 3, -4, long.MaxValue, long.MinValue })
        {
            var iv = new long[] { 0, 1, bad, 2, 0, 1 };
            using var ti = Tensor.FromArray(iv, [2, 3]);
            var ex = Assert.Throws<ShapeException>(() => tx.Gather(1, ti))!;
            Assert.That(ex.Message, Does.StartWith("Gather:").And.Contain($"index {bad}").And.Contain("size 3"));
            Assert.That(tx.ToArray<double>(), Is.EqualTo(x));
            Assert.That(ti.ToArray<long>(), Is.EqualTo(iv));
        }
        using var i1 = Tensor.FromArray(new long[] { 0, 1 });
        Assert.That(() => tx.Gather(0, i1), Throws.TypeOf<ShapeException>().With.Message.Contains("Gather").And.Message.Contains("same number of dims"));
        using var big = Tensor.Zeros([2, 4], DType.Int64);
        Assert.That(() => tx.Gather(0, big), Throws.TypeOf<ShapeException>().With.Message.Contains("Gather"));
        using var fi = Tensor.Zeros([2, 3], DType.Float32);
        Assert.That(() => tx.Gather(0, fi), Throws.TypeOf<DTypeException>().With.Message.Contains("Gather"));
        using var ok = Tensor.Zeros([2, 3], DType.Int64);
        Assert.That(() => tx.Gather(2, ok), Throws.TypeOf<ShapeException>().With.Message.Contains("Gather"));
    }

    // ---- ScatterAdd ----

    [Test]
    public void ScatterAddMatchesReference()
    {
        var rng = new Random(21);
        foreach (var dt in Values)
            foreach (var kind in Layouts.All)
                for (int trial = 0; trial < 6; trial++)
                {
                    int rank = 1 + trial % 3;
                    var ss = RandomShape(rng, rank);
                    int dim = rng.Next(-rank, rank), d = dim < 0 ? dim + rank : dim;
                    // The index reaches part of the input in the other dims (trial ≥ 3) and part of a larger source.
                    var iS = new int[rank];
                    for (int k = 0; k < rank; k++) iS[k] = k == d ? rng.Next(0, 7) : trial >= 3 ? rng.Next(1, ss[k] + 1) : ss[k];
                    var srcS = iS.Select(v => v + rng.Next(0, 2)).ToArray();
                    var self = RandomValues(rng, Ref.Numel(ss), dt);
                    var src = RandomValues(rng, Ref.Numel(srcS), dt);
                    var idx = RandomIndex(rng, Ref.Numel(iS), ss[d]);
                    using var ts = Layouts.Make(self, ss, dt, kind);
                    using var tsrc = Layouts.Make(src, srcS, dt, Layouts.All[(trial + 2) % 4]);
                    using var ti = Layouts.Make(idx, iS, DType.Int64, Ref.Numel(iS) == 0 ? Layouts.Kind.Contiguous : Layouts.All[(trial + 1) % 4]);
                    using var y = ts.ScatterAdd(dim, ti, tsrc);
                    var what = $"scatter_add {dt} {kind} self{Shape.Format(ss)} dim {dim} index{Shape.Format(iS)} src{Shape.Format(srcS)}";
                    Assert.That(y.Shape, Is.EqualTo(ss), what);
                    Ref.AssertClose(y.ToArray<double>(), ScatterAddRef(self, ss, idx, iS, src, srcS, d), dt, what);
                    Assert.That(ts.ToArray<double>(), Is.EqualTo(self), what + ": input changed");
                }
    }

    [Test]
    public void ScatterAddHalfRoundsOnceAfterSummingInFloat32()
    {
        // 1 + 4·2⁻¹¹ in float16: adding 2⁻¹¹ four times to 1 rounds back to 1 each time, summing first gives 1 + 2⁻⁹.
        using var self = Tensor.Ones([1], DType.Float16);
        using var src = Tensor.Full([4], Math.Pow(2, -11), DType.Float16);
        using var idx = Tensor.Zeros([4], DType.Int64);
        using var y = self.ScatterAdd(0, idx, src);
        Assert.That(y.Item(), Is.EqualTo(1 + Math.Pow(2, -9)));
        // The same through whole rows (an index broadcast along the row), in both half types.
        foreach (var dt in new[] { DType.Float16, DType.BFloat16 })
        {
            double tiny = dt == DType.Float16 ? Math.Pow(2, -11) : Math.Pow(2, -8);
            using var rows = Tensor.Ones([2, 3], dt);
            using var srcRows = Tensor.Full([4, 3], tiny, dt);
            using var y2 = rows.IndexAdd(0, idx, srcRows);
            Assert.That(y2.ToArray<double>(), Is.EqualTo(new double[] { 1 + 4 * tiny, 1 + 4 * tiny, 1 + 4 * tiny, 1, 1, 1 }), dt.Name());
        }
    }

    [Test]
    public void ScatterAddIsBitIdenticalAcrossThreadCounts()
    {
        var rng = new Random(22);
        foreach (var dt in new[] { DType.Float32, DType.BFloat16, DType.Float64 })
        {
            // Heavy collisions (80 updates into 7 rows per column) on rows wide enough that the work splits
            // differently for each thread count; the source is a transposed view.
            const int outer = 2, size = 7, count = 80, inner = 512;
            var self = Ref.Random(rng, outer * size * inner, DType.Float64);
            var src = Ref.Random(rng, outer * count * inner, DType.Float64, -1000, 1000);
            var idx = new long[outer * count * inner];
            for (int i = 0; i < idx.Length; i++) idx[i] = rng.Next(0, size);
            using var ts64 = Tensor.FromArray(self, [outer, size, inner]);
            using var ts = ts64.To(dt);
            using var src64 = Tensor.FromArray(src, [outer, inner, count]);
            using var srcD = src64.To(dt);
            using var tsrc = srcD.Transpose(1, 2);
            using var ti = Tensor.FromArray(idx, [outer, count, inner]);
            var results = new List<double[]>();
            foreach (var threads in new[] { 1, 2, 3 })
            {
                using var threads1 = CpuBackend.UseOptions(CpuBackend.Options with { Threads = threads });
                using var y = ts.ScatterAdd(1, ti, tsrc);
                results.Add(y.ToArray<double>());
            }
            Assert.That(results[1], Is.EqualTo(results[0]), $"{dt}: 2 threads vs 1");
            Assert.That(results[2], Is.EqualTo(results[0]), $"{dt}: 3 threads vs 1");
        }
    }

    [Test]
    public void ScatterAddRejectsBadArguments()
    {
        var self = new double[] { 1, 2, 3, 4, 5, 6 };
        using var ts = Tensor.FromArray(self, [2, 3]);
        using var src = Tensor.Ones([2, 3], DType.Float64);
        using var bad = Tensor.FromArray(new long[] { 0, 1, 2, 0, 5, 1 }, [2, 3]);
        var ex = Assert.Throws<ShapeException>(() => ts.ScatterAdd(1, bad, src))!;
        Assert.That(ex.Message, Does.StartWith("ScatterAdd:").And.Contain("index 5").And.Contain("size 3"));
        Assert.That(ts.ToArray<double>(), Is.EqualTo(self));
        using var f32 = Tensor.Ones([2, 3], DType.Float32);
        using var idx = Tensor.Zeros([2, 3], DType.Int64);
        Assert.That(() => ts.ScatterAdd(1, idx, f32), Throws.TypeOf<DTypeException>().With.Message.Contains("ScatterAdd"));
        using var small = Tensor.Ones([2, 2], DType.Float64);
        Assert.That(() => ts.ScatterAdd(1, idx, small), Throws.TypeOf<ShapeException>().With.Message.Contains("ScatterAdd"));
    }

    // ---- IndexSelect, IndexAdd, Embedding ----

    [Test]
    public void IndexSelectMatchesReference()
    {
        var rng = new Random(31);
        foreach (var dt in Values)
            foreach (var kind in Layouts.All)
                for (int trial = 0; trial < 4; trial++)
                {
                    int rank = 1 + trial % 3;
                    var xs = RandomShape(rng, rank);
                    int dim = rng.Next(-rank, rank), d = dim < 0 ? dim + rank : dim;
                    int n = rng.Next(0, 6);
                    var x = RandomValues(rng, Ref.Numel(xs), dt);
                    var iv = RandomIndex(rng, n, xs[d]);
                    using var tx = Layouts.Make(x, xs, dt, kind);
                    using var ti = n == 0 ? Tensor.Zeros([0], DType.Int64)
                        : trial % 2 == 0 ? Layouts.Make(iv, [n], DType.Int64, Layouts.Kind.Strided) : Tensor.FromArray(iv.Select(v => (int)v).ToArray());
                    using var y = tx.IndexSelect(dim, ti);
                    var ys = (int[])xs.Clone();
                    ys[d] = n;
                    var exp = new double[Ref.Numel(ys)];
                    for (int f = 0; f < exp.Length; f++)
                    {
                        var p = Ref.Unravel(f, ys);
                        p[d] = (int)Wrap(iv[p[d]], xs[d]);
                        exp[f] = x[Ref.Ravel(p, xs)];
                    }
                    var what = $"index_select {dt} {kind} x{Shape.Format(xs)} dim {dim} n {n}";
                    Assert.That(y.Shape, Is.EqualTo(ys), what);
                    AssertExact(y, exp, what);
                }
        using var s = Tensor.Scalar(4, DType.Float64);
        using var i0 = Tensor.FromArray(new long[] { 0 });
        using var y0 = s.IndexSelect(0, i0);
        Assert.That(y0.Shape, Is.Empty);
        Assert.That(y0.Item(), Is.EqualTo(4));
    }

    [Test]
    public void IndexSelectRejectsBadIndices()
    {
        var x = new double[] { 1, 2, 3, 4, 5, 6 };
        using var tx = Tensor.FromArray(x, [3, 2]);
        using var bad = Tensor.FromArray(new long[] { 0, 3 });
        var ex = Assert.Throws<ShapeException>(() => tx.IndexSelect(0, bad))!;
        Assert.That(ex.Message, Does.StartWith("IndexSelect:").And.Contain("index 3").And.Contain("size 3"));
        Assert.That(tx.ToArray<double>(), Is.EqualTo(x));
        using var m = Tensor.Zeros([1, 2], DType.Int64);
        Assert.That(() => tx.IndexSelect(0, m), Throws.TypeOf<ShapeException>().With.Message.Contains("IndexSelect"));
        using var f = Tensor.Zeros([2], DType.Float32);
        Assert.That(() => tx.IndexSelect(0, f), Throws.TypeOf<DTypeException>().With.Message.Contains("IndexSelect"));
    }

    [Test]
    public void IndexAddMatchesReference()
    {
        var rng = new Random(32);
        foreach (var dt in Values)
        {
            var x = RandomValues(rng, 3 * 4 * 2, dt);
            var src = RandomValues(rng, 3 * 5 * 2, dt);
            var iv = new double[] { 1, 3, 1, 0, 3 };
            using var tx = Layouts.Make(x, [3, 4, 2], dt, Layouts.Kind.Transposed);
            using var tsrc = Layouts.Make(src, [3, 5, 2], dt, Layouts.Kind.Strided);
            using var ti = Tensor.FromArray(iv.Select(v => (long)v).ToArray());
            using var y = tx.IndexAdd(1, ti, tsrc);
            var exp = (double[])x.Clone();
            for (int f = 0; f < src.Length; f++)
            {
                var p = Ref.Unravel(f, [3, 5, 2]);
                p[1] = (int)Wrap(iv[p[1]], 4);
                exp[Ref.Ravel(p, [3, 4, 2])] += src[f];
            }
            Ref.AssertClose(y.ToArray<double>(), exp, dt, $"index_add {dt}");
        }
    }

    [Test]
    public void EmbeddingMatchesReference()
    {
        var rng = new Random(41);
        foreach (var dt in Values)
            foreach (var idxType in new[] { DType.Int64, DType.Int32 })
            {
                const int v = 7, dm = 5;
                var w = RandomValues(rng, v * dm, dt);
                var iv = RandomIndex(rng, 2 * 3, v);
                using var tw = Layouts.Make(w, [v, dm], dt, Layouts.Kind.Transposed);
                using var ti = Layouts.Make(iv, [2, 3], idxType, Layouts.Kind.Transposed);
                using var y = Tensor.Embedding(ti, tw);
                Assert.That(y.Shape, Is.EqualTo(new[] { 2, 3, dm }));
                var exp = new double[2 * 3 * dm];
                for (int k = 0; k < 6; k++)
                    for (int c = 0; c < dm; c++) exp[k * dm + c] = w[Wrap(iv[k], v) * dm + c];
                AssertExact(y, exp, $"embedding {dt} {idxType}");
            }
        using var w0 = Tensor.Ones([4, 3], DType.Float32);
        using var none = Tensor.Zeros([0], DType.Int64);
        using var e = Tensor.Embedding(none, w0);
        Assert.That(e.Shape, Is.EqualTo(new[] { 0, 3 }));
        using var sc = Tensor.FromArray(new long[] { 2 }, []);
        using var e0 = Tensor.Embedding(sc, w0);
        Assert.That(e0.Shape, Is.EqualTo(new[] { 3 }));
    }

    [Test]
    public void EmbeddingRejectsBadArguments()
    {
        using var w = Tensor.Ones([4, 3], DType.Float32);
        using var bad = Tensor.FromArray(new long[] { 1, 4 });
        var ex = Assert.Throws<ShapeException>(() => Tensor.Embedding(bad, w))!;
        Assert.That(ex.Message, Does.StartWith("Embedding:").And.Contain("index 4").And.Contain("size 4"));
        using var w3 = Tensor.Ones([4, 3, 2], DType.Float32);
        using var ok = Tensor.FromArray(new long[] { 1 });
        Assert.That(() => Tensor.Embedding(ok, w3), Throws.TypeOf<ShapeException>().With.Message.Contains("Embedding"));
        using var fi = Tensor.Ones([2], DType.Float32);
        Assert.That(() => Tensor.Embedding(fi, w), Throws.TypeOf<DTypeException>().With.Message.Contains("Embedding"));
    }

    // ---- Cat, Stack ----

    [Test]
    public void CatMatchesReference()
    {
        var rng = new Random(51);
        foreach (var dt in Values)
            for (int trial = 0; trial < 8; trial++)
            {
                int rank = 1 + trial % 3;
                var baseShape = RandomShape(rng, rank);
                int dim = rng.Next(-rank, rank), d = dim < 0 ? dim + rank : dim;
                int count = 1 + trial % 3;
                var shapes = new int[count][];
                var vals = new double[count][];
                var ts = new Tensor[count];
                try
                {
                    for (int i = 0; i < count; i++)
                    {
                        shapes[i] = (int[])baseShape.Clone();
                        shapes[i][d] = rng.Next(0, 4);
                        vals[i] = RandomValues(rng, Ref.Numel(shapes[i]), dt);
                        ts[i] = Layouts.Make(vals[i], shapes[i], dt, Ref.Numel(shapes[i]) == 0 ? Layouts.Kind.Contiguous : Layouts.All[(trial + i) % 4]);
                    }
                    using var y = Tensor.Cat(ts, dim);
                    var ys = (int[])baseShape.Clone();
                    ys[d] = shapes.Sum(s => s[d]);
                    var exp = new double[Ref.Numel(ys)];
                    for (int f = 0; f < exp.Length; f++)
                    {
                        var p = Ref.Unravel(f, ys);
                        int i = 0;
                        while (p[d] >= shapes[i][d]) { p[d] -= shapes[i][d]; i++; }
                        exp[f] = vals[i][Ref.Ravel(p, shapes[i])];
                    }
                    var what = $"cat {dt} dim {dim} of {string.Join(" ", shapes.Select(s => Shape.Format(s)))}";
                    Assert.That(y.Shape, Is.EqualTo(ys), what);
                    Assert.That(y.DType, Is.EqualTo(dt), what);
                    AssertExact(y, exp, what);
                }
                finally { foreach (var t in ts) t?.Dispose(); }
            }
    }

    [Test]
    public void CatSkipsOneDimEmptyTensorsAndPromotes()
    {
        using var a = Tensor.FromArray(new float[] { 1, 2, 3, 4 }, [2, 2]);
        using var e = Tensor.Zeros([0], DType.Float64);
        using var b = Tensor.FromArray(new long[] { 5, 6 }, [1, 2]);
        using var y = Tensor.Cat([e, a, e, b], 0);
        Assert.That(y.Shape, Is.EqualTo(new[] { 3, 2 }));
        Assert.That(y.DType, Is.EqualTo(DType.Float64)); // the skipped tensors still take part in promotion
        Assert.That(y.ToArray<double>(), Is.EqualTo(new double[] { 1, 2, 3, 4, 5, 6 }));

        using var only = Tensor.Cat([e, e]);
        Assert.That(only.Shape, Is.EqualTo(new[] { 0 }));

        using var h = Tensor.Ones([2], DType.Float16);
        using var bf = Tensor.Ones([1], DType.BFloat16);
        using var hb = Tensor.Cat([h, bf]);
        Assert.That(hb.DType, Is.EqualTo(DType.Float32));
        using var i32 = Tensor.FromArray(new[] { 1, 2 });
        using var i64 = Tensor.FromArray(new long[] { 3 });
        using var ii = Tensor.Cat([i32, i64]);
        Assert.That(ii.DType, Is.EqualTo(DType.Int64));
        Assert.That(ii.ToArray<long>(), Is.EqualTo(new long[] { 1, 2, 3 }));
    }

    [Test]
    public void CatRejectsBadArguments()
    {
        using var a = Tensor.Zeros([2, 3]);
        using var b = Tensor.Zeros([2, 4]);
        var ex = Assert.Throws<ShapeException>(() => Tensor.Cat([a, b], 0))!;
        Assert.That(ex.Message, Does.StartWith("Cat:").And.Contain("[2, 3]").And.Contain("[2, 4]"));
        using var ok = Tensor.Cat([a, b], 1);
        Assert.That(ok.Shape, Is.EqualTo(new[] { 2, 7 }));
        using var c = Tensor.Zeros([2, 3, 1]);
        Assert.That(() => Tensor.Cat([a, c]), Throws.TypeOf<ShapeException>().With.Message.Contains("[2, 3, 1]"));
        using var s = Tensor.Scalar(1);
        Assert.That(() => Tensor.Cat([s, s]), Throws.TypeOf<ShapeException>().With.Message.Contains("zero-dimensional"));
        Assert.That(() => Tensor.Cat([]), Throws.TypeOf<ShapeException>().With.Message.Contains("Cat"));
        Assert.That(() => Tensor.Cat([a], 2), Throws.TypeOf<ShapeException>().With.Message.Contains("Cat"));
        // Tensors on different devices: only the CPU exists in these tests.
    }

    [Test]
    public void StackMatchesReference()
    {
        var rng = new Random(61);
        foreach (var dt in Values)
            foreach (var dim in new[] { 0, 1, 2, -1, -3 })
            {
                var a = RandomValues(rng, 6, dt);
                var b = RandomValues(rng, 6, dt);
                using var ta = Layouts.Make(a, [2, 3], dt, Layouts.Kind.Transposed);
                using var tb = Layouts.Make(b, [2, 3], dt, Layouts.Kind.Offset);
                using var y = Tensor.Stack([ta, tb], dim);
                int d = dim < 0 ? dim + 3 : dim;
                var ys = new List<int> { 2, 3 };
                ys.Insert(d, 2);
                Assert.That(y.Shape, Is.EqualTo(ys.ToArray()));
                var exp = new double[12];
                for (int f = 0; f < 12; f++)
                {
                    var p = Ref.Unravel(f, [.. ys]).ToList();
                    int which = p[d];
                    p.RemoveAt(d);
                    exp[f] = (which == 0 ? a : b)[Ref.Ravel([.. p], [2, 3])];
                }
                AssertExact(y, exp, $"stack {dt} dim {dim}");
            }
        using var s0 = Tensor.Scalar(1, DType.Float64);
        using var s1 = Tensor.Scalar(2, DType.Float64);
        using var v = Tensor.Stack([s0, s1]);
        Assert.That(v.ToArray<double>(), Is.EqualTo(new double[] { 1, 2 }));
        using var e = Tensor.Zeros([0]);
        using var ee = Tensor.Stack([e, e]);
        Assert.That(ee.Shape, Is.EqualTo(new[] { 2, 0 }));
        using var x = Tensor.Zeros([2, 3]);
        using var z = Tensor.Zeros([3, 2]);
        Assert.That(() => Tensor.Stack([x, z]), Throws.TypeOf<ShapeException>().With.Message.Contains("Stack").And.Message.Contains("[3, 2]"));
        Assert.That(() => Tensor.Stack([x, x], 3), Throws.TypeOf<ShapeException>().With.Message.Contains("Stack"));
    }

    // ---- Split, Chunk ----

    static int[] SizesAlong(Tensor[] parts, int dim) => parts.Select(p => p.Size(dim)).ToArray();

    static void DisposeAll(Tensor[] parts) { foreach (var p in parts) p.Dispose(); }

    [Test]
    public void SplitAndChunkFollowPyTorchSizing()
    {
        var vals = Enumerable.Range(0, 30).Select(i => (double)i).ToArray();
        using var x = Layouts.Make(vals, [3, 10], DType.Float32, Layouts.Kind.Transposed);
        var cases = new (Func<Tensor[]> f, int[] sizes, string what)[]
        {
            (() => x.Split(3, 1), [3, 3, 3, 1], "split 3"),
            (() => x.Split(10, -1), [10], "split 10"),
            (() => x.Split(20, 1), [10], "split 20"),
            (() => x.Split([2, 0, 8], 1), [2, 0, 8], "split sizes"),
            (() => x.Split(2, 0), [2, 1], "split dim 0"),
            (() => x.Chunk(3, 1), [4, 4, 2], "chunk 3"),
            (() => x.Chunk(6, 1), [2, 2, 2, 2, 2], "chunk 6 gives 5"),
            (() => x.Chunk(4, -1), [3, 3, 3, 1], "chunk 4"),
            (() => x.Chunk(20, 1), Enumerable.Repeat(1, 10).ToArray(), "chunk more than size"),
            (() => x.Chunk(1, 1), [10], "chunk 1"),
        };
        foreach (var (f, sizes, what) in cases)
        {
            var parts = f();
            try
            {
                int dim = what.Contains("dim 0") ? 0 : 1;
                Assert.That(SizesAlong(parts, dim), Is.EqualTo(sizes), what);
                int start = 0;
                foreach (var p in parts)
                {
                    Assert.That(p.Storage, Is.SameAs(x.Storage), what + ": a view");
                    var exp = new List<double>();
                    var ps = p.Shape;
                    for (int i = 0; i < ps[0]; i++)
                        for (int j = 0; j < ps[1]; j++)
                            exp.Add(dim == 1 ? vals[i * 10 + start + j] : vals[(start + i) * 10 + j]);
                    Assert.That(p.ToArray<double>(), Is.EqualTo(exp.ToArray()), what);
                    start += p.Size(dim);
                }
            }
            finally { DisposeAll(parts); }
        }
        using var empty = Tensor.Zeros([0, 2]);
        var ec = empty.Chunk(3);
        Assert.That(SizesAlong(ec, 0), Is.EqualTo(new[] { 0, 0, 0 }));
        DisposeAll(ec);
        var es = empty.Split(2);
        Assert.That(SizesAlong(es, 0), Is.EqualTo(new[] { 0 }));
        DisposeAll(es);
        var ez = empty.Split(0);
        Assert.That(ez, Has.Length.EqualTo(1));
        DisposeAll(ez);
    }

    [Test]
    public void SplitAndChunkRejectBadArguments()
    {
        using var x = Tensor.Zeros([4, 5]);
        Assert.That(() => x.Split([2, 2], 1), Throws.TypeOf<ShapeException>().With.Message.Contains("Split").And.Message.Contains("5"));
        Assert.That(() => x.Split([5, -1], 1), Throws.TypeOf<ShapeException>().With.Message.Contains("Split"));
        Assert.That(() => x.Split(0, 1), Throws.TypeOf<ShapeException>().With.Message.Contains("Split"));
        Assert.That(() => x.Split(-2), Throws.TypeOf<ShapeException>().With.Message.Contains("Split"));
        Assert.That(() => x.Chunk(0), Throws.TypeOf<ShapeException>().With.Message.Contains("Chunk"));
        Assert.That(() => x.Chunk(2, 2), Throws.TypeOf<ShapeException>().With.Message.Contains("Chunk"));
        using var s = Tensor.Scalar(1);
        Assert.That(() => s.Chunk(2), Throws.TypeOf<ShapeException>().With.Message.Contains("Chunk"));
        Assert.That(() => s.Split(1), Throws.TypeOf<ShapeException>().With.Message.Contains("Split"));
    }

    // ---- Tril, Triu ----

    [Test]
    public void TrilAndTriuMatchReference()
    {
        var rng = new Random(71);
        foreach (var dt in Values)
            foreach (var shape in new[] { new[] { 3, 4 }, new[] { 4, 3 }, new[] { 2, 3, 3 }, new[] { 2, 1, 2, 5 }, new[] { 0, 3 } })
                foreach (var diag in new[] { -5, -2, -1, 0, 1, 2, 6 })
                {
                    var x = RandomValues(rng, Ref.Numel(shape), dt);
                    var kind = Ref.Numel(shape) == 0 ? Layouts.Kind.Contiguous : Layouts.All[(diag + 5) % 4];
                    using var tx = Layouts.Make(x, shape, dt, kind);
                    using var lo = tx.Tril(diag);
                    using var up = tx.Triu(diag);
                    var expLo = new double[x.Length];
                    var expUp = new double[x.Length];
                    for (int f = 0; f < x.Length; f++)
                    {
                        var p = Ref.Unravel(f, shape);
                        int i = p[^2], j = p[^1];
                        expLo[f] = j - i <= diag ? x[f] : 0;
                        expUp[f] = j - i >= diag ? x[f] : 0;
                    }
                    var what = $"{dt} {Shape.Format(shape)} {kind} diagonal {diag}";
                    Assert.That(lo.DType, Is.EqualTo(dt), what);
                    Assert.That(lo.Shape, Is.EqualTo(shape), what);
                    AssertExact(lo, expLo, "tril " + what);
                    AssertExact(up, expUp, "triu " + what);
                }
        using var v = Tensor.Zeros([3]);
        Assert.That(() => v.Tril(), Throws.TypeOf<ShapeException>().With.Message.Contains("Tril"));
        Assert.That(() => v.Triu(), Throws.TypeOf<ShapeException>().With.Message.Contains("Triu"));
    }

    // ---- gradients (float64, central differences) ----

    static Tensor Leaf(Random rng, int[] shape) => Tensor.FromArray(Ref.Random(rng, Ref.Numel(shape), DType.Float64), shape, requiresGrad: true);

    static Tensor LongIndex(long[] values, int[] shape) => Tensor.FromArray(values, shape);

    [Test]
    public void GatherAndScatterAddGradientsMatchFiniteDifferences()
    {
        var rng = new Random(81);
        using var x = Leaf(rng, [3, 4]);
        // Duplicates: the gradient of a row picked twice is the sum of both.
        using var idx = LongIndex([2, 0, 2, 2, 1, 1, 0, 0], [2, 4]);
        GradCheck.Check(t => t[0].Gather(0, idx), [x]);
        using var idx1 = LongIndex([3, 3, 0, 3, 1, 2], [3, 2]);
        GradCheck.Check(t => t[0].Gather(1, idx1), [x]);

        using var self = Leaf(rng, [3, 4]);
        using var src = Leaf(rng, [3, 5]); // larger than the index: its unreached elements get zero gradient
        GradCheck.Check(t => t[0].ScatterAdd(0, idx, t[1]), [self, src]);
        GradCheck.Check(t => t[0].ScatterAdd(1, idx1, t[1]).Mul(t[0]), [self, src]);
    }

    [Test]
    public void IndexSelectAndEmbeddingGradientsMatchFiniteDifferences()
    {
        var rng = new Random(82);
        using var x = Leaf(rng, [4, 3]);
        using var idx = LongIndex([1, 3, 1, 0, 2], [5]);
        GradCheck.Check(t => t[0].IndexSelect(0, idx), [x]);
        using var idx3 = LongIndex([1, 0, 1, 2, 2], [5]);
        GradCheck.Check(t => t[0].IndexSelect(-1, idx3), [x]);

        using var src = Leaf(rng, [4, 5]);
        GradCheck.Check(t => t[0].IndexAdd(1, idx3, t[1]), [x, src]);

        using var w = Leaf(rng, [5, 3]);
        using var tokens = LongIndex([0, 4, 4, 2, 4, 0], [2, 3]);
        GradCheck.Check(t => Tensor.Embedding(tokens, t[0]), [w]);
    }

    [Test]
    public void CatStackSplitChunkGradientsMatchFiniteDifferences()
    {
        var rng = new Random(83);
        using var a = Leaf(rng, [2, 3]);
        using var b = Leaf(rng, [2, 1]);
        using var c = Leaf(rng, [2, 2]);
        using var e = Tensor.Zeros([0], DType.Float64);
        GradCheck.Check(t => Tensor.Cat([t[0], t[3], t[1], t[2]], -1), [a, b, c, e]);
        using var d = Leaf(rng, [2, 3]);
        GradCheck.Check(t => Tensor.Stack([t[0], t[1]], 1), [a, d]);
        using var x = Leaf(rng, [2, 7]);
        GradCheck.Check(t =>
        {
            var p = t[0].Chunk(3, -1); // sizes 3, 3, 1
            return Tensor.Cat([p[2], p[0].Mul(p[0])], -1);
        }, [x]);
        GradCheck.Check(t =>
        {
            var p = t[0].Split([2, 0, 5], 1);
            return p[2].Exp();
        }, [x]);
    }

    [Test]
    public void CatGradientReachesInputsOfOtherDTypes()
    {
        using var a = Tensor.FromArray(new double[] { 1, 2 }, requiresGrad: true);
        using var b = Tensor.FromArray(new float[] { 3 }, requiresGrad: true);
        using var y = Tensor.Cat([a, b]);
        Assert.That(y.DType, Is.EqualTo(DType.Float64));
        using var w = Tensor.FromArray(new double[] { 10, 20, 30 });
        y.Backward(w);
        Assert.That(a.Grad!.ToArray<double>(), Is.EqualTo(new double[] { 10, 20 }));
        Assert.That(b.Grad!.DType, Is.EqualTo(DType.Float32));
        Assert.That(b.Grad!.ToArray<double>(), Is.EqualTo(new double[] { 30 }));
        a.Grad.Dispose(); b.Grad.Dispose();
    }

    [Test]
    public void TrilTriuGradientsMatchFiniteDifferences()
    {
        var rng = new Random(84);
        using var x = Leaf(rng, [2, 3, 4]);
        GradCheck.Check(t => t[0].Tril(), [x]);
        GradCheck.Check(t => t[0].Tril(-1), [x]);
        GradCheck.Check(t => t[0].Triu(1), [x]);
        GradCheck.Check(t => t[0].Triu(-2).Mul(t[0]), [x]);
    }
}

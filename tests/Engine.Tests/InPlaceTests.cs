using Engine.Graph;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>In-place ops: results, broadcasting into self, strided targets, version counters, and the errors.</summary>
[TestFixture]
public class InPlaceTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];

    public sealed record InPlaceCase(string Name, Func<Tensor, Tensor, Tensor> Op, Func<double, double, double> F, double BLo, double BHi)
    {
        public override string ToString() => Name;
    }

    public static readonly InPlaceCase[] TensorCases =
    [
        new("AddInPlace", (x, o) => x.AddInPlace(o), (a, b) => a + b, -3, 3),
        new("AddInPlace(alpha)", (x, o) => x.AddInPlace(o, -2), (a, b) => a - 2 * b, -3, 3),
        new("SubInPlace", (x, o) => x.SubInPlace(o), (a, b) => a - b, -3, 3),
        new("MulInPlace", (x, o) => x.MulInPlace(o), (a, b) => a * b, -3, 3),
        new("DivInPlace", (x, o) => x.DivInPlace(o), (a, b) => a / b, 0.5, 3),
        new("CopyInPlace", (x, o) => x.CopyInPlace(o), (_, b) => b, -3, 3),
    ];

    [TestCaseSource(nameof(TensorCases))]
    public void TensorOperandBroadcastsIntoSelf(InPlaceCase c)
    {
        var rng = new Random(c.Name.Length);
        foreach (var dt in Floats)
            foreach (var (sx, so) in new (int[], int[])[] { ([3, 4], [3, 4]), ([3, 4], [4]), ([3, 4], [3, 1]), ([3, 4], []), ([2, 1, 3], [1, 3]), ([0, 3], [3]), ([], []) })
                foreach (var kind in Layouts.All)
                {
                    var x = Ref.Random(rng, Ref.Numel(sx), dt, -3, 3);
                    var o = Ref.Random(rng, Ref.Numel(so), dt, c.BLo, c.BHi);
                    using var tx = Layouts.Make(x, sx, dt, kind);
                    using var to = Layouts.Make(o, so, dt, Layouts.All[(Array.IndexOf(Layouts.All, kind) + 1) % 4]);
                    var storage = tx.Storage;
                    int v0 = tx.Version;
                    var r = c.Op(tx, to);
                    Assert.That(ReferenceEquals(r, tx), Is.True, "returns this");
                    Assert.That(ReferenceEquals(tx.Storage, storage), Is.True, "writes in place");
                    Assert.That(tx.Version, Is.EqualTo(v0 + 1), "one version bump");
                    var exp = new double[x.Length];
                    for (int i = 0; i < exp.Length; i++) exp[i] = Ref.RoundTo(c.F(x[i], Ref.Broadcast(o, so, Ref.Unravel(i, sx))), dt);
                    Ref.AssertClose(tx.ToArray<double>(), exp, dt, $"{c.Name} {dt} {Shape.Format(sx)} {kind}", c.Name.Contains("alpha") ? 2 : 1);
                    Assert.That(to.ToArray<double>(), Is.EqualTo(o));
                }
    }

    [Test]
    public void ScalarOperands()
    {
        var rng = new Random(41);
        var cases = new (string Name, Func<Tensor, Tensor> Op, Func<double, double> F)[]
        {
            ("AddInPlace(2.5)", x => x.AddInPlace(2.5), x => x + 2.5),
            ("SubInPlace(0.5)", x => x.SubInPlace(0.5), x => x - 0.5),
            ("MulInPlace(-3)", x => x.MulInPlace(-3), x => x * -3),
            ("DivInPlace(4)", x => x.DivInPlace(4), x => x / 4),
            ("FillInPlace(1.25)", x => x.FillInPlace(1.25), _ => 1.25),
            ("ZeroInPlace", x => x.ZeroInPlace(), _ => 0),
            ("ClampInPlace(min)", x => x.ClampInPlace(min: -0.5), x => Math.Max(x, -0.5)),
            ("ClampInPlace(max)", x => x.ClampInPlace(max: 0.5), x => Math.Min(x, 0.5)),
            ("ClampInPlace(both)", x => x.ClampInPlace(-0.5, 0.5), x => Math.Clamp(x, -0.5, 0.5)),
        };
        foreach (var (name, op, f) in cases)
            foreach (var dt in Floats)
                foreach (var kind in Layouts.All)
                    foreach (var shape in new[] { new[] { 3, 4 }, [], [0, 2] })
                    {
                        var x = Ref.Random(rng, Ref.Numel(shape), dt, -2, 2);
                        using var t = Layouts.Make(x, shape, dt, kind);
                        int v0 = t.Version;
                        Assert.That(ReferenceEquals(op(t), t), Is.True);
                        Assert.That(t.Version, Is.EqualTo(v0 + 1), name);
                        Ref.AssertClose(t.ToArray<double>(), x.Select(v => Ref.RoundTo(f(v), dt)).ToArray(), dt, $"{name} {dt} {kind}");
                    }
        // Integer tensors keep integer scalars in place.
        using var i = Tensor.FromArray(new[] { 1, -2, 3 });
        i.AddInPlace(2).MulInPlace(3).SubInPlace(1);
        Assert.That(i.ToArray<int>(), Is.EqualTo(new[] { 8, -1, 14 }));
        i.ClampInPlace(0, 10);
        Assert.That(i.ToArray<int>(), Is.EqualTo(new[] { 8, 0, 10 }));
        i.FillInPlace(2.9);
        Assert.That(i.ToArray<int>(), Is.EqualTo(new[] { 2, 2, 2 }));
    }

    [Test]
    public void CopyInPlaceBroadcastsAndCasts()
    {
        using var x = Tensor.Zeros([2, 3], DType.Float16);
        using var src = Tensor.FromArray(new[] { 1, 2, 3 });
        x.CopyInPlace(src);
        Assert.That(x.ToArray<double>(), Is.EqualTo(new double[] { 1, 2, 3, 1, 2, 3 }));
        using var f = Tensor.FromArray(new[] { 1.7, -2.7 }, [2, 1]);
        using var ints = Tensor.Zeros([2, 2], DType.Int64);
        ints.CopyInPlace(f);
        Assert.That(ints.ToArray<long>(), Is.EqualTo(new long[] { 1, 1, -2, -2 }), "float to int truncates");
        using var b = Tensor.Zeros([3], DType.Bool);
        using var fb = Tensor.FromArray(new[] { 0.0, 0.5, -1 });
        b.CopyInPlace(fb);
        Assert.That(b.ToArray<bool>(), Is.EqualTo(new[] { false, true, true }));
        // Into a transposed view of a bigger tensor.
        using var big = Tensor.Zeros([3, 2]);
        using (var t = big.T)
        {
            using var rows = Tensor.FromArray(new[] { 1f, 2, 3, 4, 5, 6 }, [2, 3]);
            t.CopyInPlace(rows);
        }
        Assert.That(big.ToArray<float>(), Is.EqualTo(new[] { 1f, 4, 2, 5, 3, 6 }));
        // From a 0-d tensor.
        using var s = Tensor.Scalar(7, DType.Int32);
        big.CopyInPlace(s);
        Assert.That(big.ToArray<float>(), Is.All.EqualTo(7f));
    }

    [Test]
    public void MaskedFillInPlaceOnContiguousAndStridedViews()
    {
        foreach (var dt in new[] { DType.Float64, DType.Float32, DType.Float16, DType.BFloat16, DType.Int32, DType.Int64 })
            foreach (var kind in Layouts.All)
            {
                var x = new double[] { 1, 2, 3, 4, 5, 6 };
                using var t = Layouts.Make(x, [2, 3], dt, kind);
                using var m = Tensor.FromArray(new[] { true, false, true });
                int v0 = t.Version;
                Assert.That(ReferenceEquals(t.MaskedFillInPlace(m, -4), t), Is.True);
                Assert.That(t.Version, Is.EqualTo(v0 + 1));
                Assert.That(t.ToArray<double>(), Is.EqualTo(new double[] { -4, 2, -4, -4, 5, -4 }), $"{dt} {kind}");
            }
        // Through a strided view of a base: only the view's elements change.
        using var @base = Tensor.Zeros([4, 4]);
        using (var v = @base[TensorIndex.Slice(.., 2), TensorIndex.Slice(1.., 2)])
        {
            using var m = Tensor.FromArray(new[] { true, false, false, true }, [2, 2]);
            v.MaskedFillInPlace(m, 9);
        }
        var exp = new float[16];
        exp[0 * 4 + 1] = 9; exp[2 * 4 + 3] = 9;
        Assert.That(@base.ToArray<float>(), Is.EqualTo(exp));
    }

    [Test]
    public void IntegerSelfWithFloatOperandThrowsDTypeException()
    {
        using var i = Tensor.FromArray(new[] { 1, 2, 3 });
        using var f = Tensor.FromArray(new[] { 1f, 2, 3 });
        using var f0 = Tensor.Scalar(1.5, DType.Float64);
        using var b = Tensor.FromArray(new[] { true, false, true });
        using var l = Tensor.FromArray(new long[] { 1, 2, 3 });
        void Untouched() { Assert.That(i.ToArray<int>(), Is.EqualTo(new[] { 1, 2, 3 })); Assert.That(i.Version, Is.Zero); }
        Assert.That(() => i.AddInPlace(f), Throws.TypeOf<DTypeException>().With.Message.Contains("AddInPlace").And.Message.Contains("float32").And.Message.Contains("int32"));
        Untouched();
        Assert.That(() => i.MulInPlace(f0), Throws.TypeOf<DTypeException>(), "a 0-d float tensor still makes the result float");
        Assert.That(() => i.AddInPlace(2.5), Throws.TypeOf<DTypeException>());
        Assert.That(() => i.MulInPlace(0.5), Throws.TypeOf<DTypeException>());
        Assert.That(() => i.DivInPlace(2), Throws.TypeOf<DTypeException>().With.Message.Contains("DivInPlace"));
        Assert.That(() => i.DivInPlace(i), Throws.TypeOf<DTypeException>());
        Untouched();
        Assert.That(() => b.AddInPlace(l), Throws.TypeOf<DTypeException>(), "bool += int64");
        Assert.That(() => b.AddInPlace(1), Throws.TypeOf<DTypeException>(), "bool += 1");
        Assert.That(b.ToArray<bool>(), Is.EqualTo(new[] { true, false, true }));
        // Same category, different width: allowed (the result is cast), as PyTorch.
        i.AddInPlace(l);
        Assert.That(i.ToArray<int>(), Is.EqualTo(new[] { 2, 4, 6 }));
        f.AddInPlace(i);
        Assert.That(f.ToArray<float>(), Is.EqualTo(new[] { 3f, 6, 9 }));
        using var h = Tensor.Ones([3], DType.Float16);
        using var d = Tensor.FromArray(new[] { 0.5, 0.25, 0.125 });
        h.AddInPlace(d);
        Assert.That(h.ToArray<double>(), Is.EqualTo(new[] { 1.5, 1.25, 1.125 }));
    }

    [Test]
    public void ExpandedSelfThrowsShapeException()
    {
        using var x = Tensor.FromArray(new[] { 1f, 2, 3 }, [3, 1]);
        using var e = x.Expand(3, 4);
        using var o = Tensor.Ones([3, 4]);
        Assert.That(() => e.AddInPlace(o), Throws.TypeOf<ShapeException>().With.Message.Contains("AddInPlace"));
        Assert.That(() => e.AddInPlace(1), Throws.TypeOf<ShapeException>());
        Assert.That(() => e.FillInPlace(1), Throws.TypeOf<ShapeException>());
        Assert.That(() => e.CopyInPlace(o), Throws.TypeOf<ShapeException>());
        using var m = Tensor.Ones([3, 4], DType.Bool);
        Assert.That(() => e.MaskedFillInPlace(m, 0), Throws.TypeOf<ShapeException>());
        Assert.That(() => e.ClampInPlace(0, 1), Throws.TypeOf<ShapeException>());
        Assert.That(x.ToArray<float>(), Is.EqualTo(new[] { 1f, 2, 3 }));
        Assert.That(x.Version, Is.Zero);
        // A size-1 dim with stride 0 is not an overlap.
        using var s = Tensor.Scalar(1);
        using var s1 = s.Expand(1, 1);
        s1.AddInPlace(1);
        Assert.That(s.Item(), Is.EqualTo(2));
    }

    [Test]
    public void BroadcastingSelfToABiggerShapeThrows()
    {
        using var x = Tensor.FromArray(new[] { 1f, 2, 3 });
        using var o = Tensor.Ones([2, 3]);
        using var o4 = Tensor.Ones([4]);
        Assert.That(() => x.AddInPlace(o), Throws.TypeOf<ShapeException>().With.Message.Contains("AddInPlace").And.Message.Contains("[2, 3]"));
        Assert.That(() => x.MulInPlace(o4), Throws.TypeOf<ShapeException>());
        Assert.That(() => x.CopyInPlace(o), Throws.TypeOf<ShapeException>().With.Message.Contains("CopyInPlace"));
        using var m = Tensor.Ones([2, 3], DType.Bool);
        Assert.That(() => x.MaskedFillInPlace(m, 0), Throws.TypeOf<ShapeException>());
        Assert.That(x.ToArray<float>(), Is.EqualTo(new[] { 1f, 2, 3 }));
        Assert.That(x.Version, Is.Zero);
    }

    [Test]
    public void OperandOverlappingSelfGivesTheOutOfPlaceResult()
    {
        // x += x.T reads elements the loop has already written, unless the operand is copied first.
        foreach (var dt in Floats)
        {
            var v = Enumerable.Range(0, 16).Select(i => (double)i).ToArray();
            using var x = Make(v, [4, 4], dt);
            using (var xt = x.T) x.AddInPlace(xt);
            var exp = new double[16];
            for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) exp[i * 4 + j] = v[i * 4 + j] + v[j * 4 + i];
            Assert.That(x.ToArray<double>(), Is.EqualTo(exp), $"x += x.T {dt}");
            using var w = Make(v, [4, 4], dt);
            using (var wt = w.T) w.CopyInPlace(wt); // transpose in place
            var wexp = new double[16];
            for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) wexp[i * 4 + j] = v[j * 4 + i];
            Assert.That(w.ToArray<double>(), Is.EqualTo(wexp), $"x.CopyInPlace(x.T) {dt}");
            using var r = Make(v, [4, 4], dt);
            using (var row0 = r[0]) r.MulInPlace(row0);
            var rexp = new double[16];
            for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) rexp[i * 4 + j] = v[i * 4 + j] * v[j];
            Assert.That(r.ToArray<double>(), Is.EqualTo(rexp), $"x *= x[0] {dt}");
            using var y = Make(v, [16], dt);
            using (var head = y.Narrow(0, 0, 15))
            using (var tail = y.Narrow(0, 1, 15))
                tail.CopyInPlace(head); // shift right by one
            Assert.That(y.ToArray<double>(), Is.EqualTo(new[] { 0.0 }.Concat(v.Take(15)).ToArray()), $"overlapping copy {dt}");
            using var z = Make(v, [16], dt);
            using (var head = z.Narrow(0, 0, 15))
            using (var tail = z.Narrow(0, 1, 15))
                tail.SubInPlace(head);
            Assert.That(z.ToArray<double>(), Is.EqualTo(new[] { 0.0 }.Concat(Enumerable.Repeat(1.0, 15)).ToArray()), $"overlapping sub {dt}");
        }
    }

    static Tensor Make(double[] v, int[] shape, DType dt)
    {
        using var t = Tensor.FromArray(v, shape);
        return t.To(dt);
    }

    [Test]
    public void LeafRequiringGradRejectsInPlaceUnderGradMode()
    {
        using var w = Tensor.FromArray(new[] { 1.0, 2, 3 }, requiresGrad: true);
        using var g = Tensor.Ones([3], DType.Float64);
        Assert.That(() => w.AddInPlace(g), Throws.TypeOf<EngineException>().With.Message.Contains("AddInPlace").And.Message.Contains("leaf"));
        Assert.That(() => w.MulInPlace(2), Throws.TypeOf<EngineException>());
        Assert.That(() => w.FillInPlace(0), Throws.TypeOf<EngineException>());
        Assert.That(() => w.ZeroInPlace(), Throws.TypeOf<EngineException>());
        Assert.That(() => w.CopyInPlace(g), Throws.TypeOf<EngineException>());
        using var m = Tensor.Ones([3], DType.Bool);
        Assert.That(() => w.MaskedFillInPlace(m, 0), Throws.TypeOf<EngineException>());
        Assert.That(() => w.ClampInPlace(0, 1), Throws.TypeOf<EngineException>());
        Assert.That(w.ToArray<double>(), Is.EqualTo(new[] { 1.0, 2, 3 }));
        Assert.That(w.Version, Is.Zero);
        using (GradMode.NoGrad())
        {
            w.SubInPlace(g).MulInPlace(2).AddInPlace(g, 0.5);
            Assert.That(w.ToArray<double>(), Is.EqualTo(new[] { 0.5, 2.5, 4.5 }));
            Assert.That(w.IsLeaf, Is.True);
            Assert.That(w.RequiresGrad, Is.True);
            w.ZeroInPlace();
            Assert.That(w.ToArray<double>(), Is.All.EqualTo(0.0));
        }
        Assert.That(w.Version, Is.EqualTo(4));
    }

    [Test]
    public void NonLeafInPlaceUnderGradModeTakesOverTheHistory()
    {
        using var w = Tensor.FromArray(new[] { 1.0, 2, 3 }, requiresGrad: true);
        using var y = w * 2;
        Assert.That(y.GradFn, Is.Not.Null);
        var before = y.GradFn;
        int v0 = y.Version;
        y.AddInPlace(1);
        Assert.That(y.ToArray<double>(), Is.EqualTo(new[] { 3.0, 5, 7 }));
        Assert.That(y.Version, Is.EqualTo(v0 + 1));
        Assert.That(y.GradFn, Is.Not.SameAs(before));
        Assert.That(y.RequiresGrad, Is.True);
        // The values saved for backward are the pre-update ones and stay valid (PyTorch saves the original self).
        for (int i = 0; i < y.GradFn!.SavedCount; i++) Assert.That(() => y.GradFn.Saved(i), Throws.Nothing, "saved value after AddInPlace");
        using var u = w * 3;
        u.MulInPlace(w);
        Assert.That(u.ToArray<double>(), Is.EqualTo(new[] { 3.0, 12, 27 }));
        for (int i = 0; i < u.GradFn!.SavedCount; i++)
        {
            Assert.That(() => u.GradFn.Saved(i), Throws.Nothing, "saved value after MulInPlace");
            Assert.That(u.GradFn.Saved(i).ToArray<double>(), Is.EqualTo(i == 0 ? new[] { 3.0, 6, 9 } : new[] { 1.0, 2, 3 }));
        }
        using var c = w * 1;
        c.ClampInPlace(1.5, 2.5);
        Assert.That(c.ToArray<double>(), Is.EqualTo(new[] { 1.5, 2, 2.5 }));
        for (int i = 0; i < c.GradFn!.SavedCount; i++) Assert.That(c.GradFn.Saved(i).ToArray<double>(), Is.EqualTo(new[] { 1.0, 2, 3 }), "clamp saved its input");
        using var z = Tensor.Zeros([3], DType.Float64);
        z.AddInPlace(w); // a plain tensor absorbing one that requires grad joins the graph
        Assert.That(z.ToArray<double>(), Is.EqualTo(new[] { 1.0, 2, 3 }));
        Assert.That(z.RequiresGrad, Is.True);
        Assert.That(z.GradFn, Is.Not.Null);
    }

    // Dense float32 past one work chunk (2^16 elements) and past a huge page (2 MB): the in-place kernels cut their
    // range into 256 KB calls (ElementwiseKernels.StreamPiece) and the buffers come 2 MB aligned (HugePages); the bits
    // must be those of the out-of-place op, whatever the cut, and the chunk seams must be written exactly once.
    [TestCase(3 * 65536 + 77)]
    [TestCase(600_001)]
    public unsafe void DenseFloat32InPlace_EqualsOutOfPlace_AcrossChunksAndHugePages(int n)
    {
        var rng = new Random(n);
        var xs = new float[n]; var ys = new float[n];
        for (int i = 0; i < n; i++) { xs[i] = (float)(rng.NextDouble() * 6 - 3); ys[i] = (float)(rng.NextDouble() * 6 - 3); }
        using var x = Tensor.FromArray(xs); using var y = Tensor.FromArray(ys);
        using var sum = x.Add(y); using var shifted = x.Add(2.5);
        using var a = Tensor.FromArray(xs); using var b = Tensor.FromArray(ys);
        a.AddInPlace(b);
        Assert.That(a.ToArray<float>(), Is.EqualTo(sum.ToArray<float>()), "a += b");
        Assert.That(b.ToArray<float>(), Is.EqualTo(ys), "the operand is untouched");
        using var c = Tensor.FromArray(xs);
        c.AddInPlace(2.5);
        Assert.That(c.ToArray<float>(), Is.EqualTo(shifted.ToArray<float>()), "c += 2.5");
        using var d = Tensor.FromArray(ys);
        using (var xv = Tensor.FromArray(xs)) xv.SubInPlace(d); // d is read, not written: out-of-place inside
        Assert.That(d.ToArray<float>(), Is.EqualTo(ys));
        bool huge = OperatingSystem.IsLinux() && Environment.GetEnvironmentVariable("ENGINE_CPU_THP")?.Trim() is not ("0" or "false" or "off" or "no");
        long p = (long)((Engine.Backends.Cpu.CpuStorage)a.Storage).Pointer;
        if (huge && (long)n * sizeof(float) >= 2 << 20) Assert.That(p % (2L << 20), Is.EqualTo(0L), "a buffer from 2 MB is 2 MB aligned");
        else Assert.That(p % 64, Is.EqualTo(0L), "64-byte aligned");
    }
}

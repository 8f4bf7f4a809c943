using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// View ops checked against index arithmetic on the original row-major data: the base holds 0, 1, 2, ... so that every
/// value names its own row-major position. Views must share storage, and writes through them must show in the base.
/// </summary>
[TestFixture]
public class ViewTests
{
    static readonly DType[] AllTypes = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16, DType.Int32, DType.Int64];

    /// <summary>A plain model of a view: its values (positions in the base) and its shape.</summary>
    sealed record RefView(double[] V, int[] S)
    {
        public RefView Map(int[] newShape, Func<int[], int[]> newToOld)
        {
            var v = new double[Ref.Numel(newShape)];
            for (int i = 0; i < v.Length; i++) v[i] = V[Ref.Ravel(newToOld(Ref.Unravel(i, newShape)), S)];
            return new RefView(v, newShape);
        }

        public static RefView Iota(int[] shape) => new(Enumerable.Range(0, Ref.Numel(shape)).Select(i => (double)i).ToArray(), shape);

        static int Norm(int d, int rank) => d < 0 ? d + rank : d;

        public RefView Transpose(int d0, int d1)
        {
            d0 = Norm(d0, S.Length); d1 = Norm(d1, S.Length);
            var ns = (int[])S.Clone(); (ns[d0], ns[d1]) = (ns[d1], ns[d0]);
            return Map(ns, idx => { var o = (int[])idx.Clone(); (o[d0], o[d1]) = (o[d1], o[d0]); return o; });
        }

        public RefView Permute(int[] perm)
        {
            var p = perm.Select(d => Norm(d, S.Length)).ToArray();
            var ns = p.Select(d => S[d]).ToArray();
            return Map(ns, idx => { var o = new int[S.Length]; for (int i = 0; i < p.Length; i++) o[p[i]] = idx[i]; return o; });
        }

        public RefView Narrow(int d, int start, int len)
        {
            d = Norm(d, S.Length);
            if (start < 0) start += S[d];
            var ns = (int[])S.Clone(); ns[d] = len;
            return Map(ns, idx => { var o = (int[])idx.Clone(); o[d] += start; return o; });
        }

        public RefView Slice(int d, int start, int end, int step)
        {
            d = Norm(d, S.Length);
            int size = S[d];
            // Python's slice.indices for a positive step.
            if (start < 0) start = Math.Max(start + size, 0); else start = Math.Min(start, size);
            if (end < 0) end = Math.Max(end + size, 0); else end = Math.Min(end, size);
            int count = end > start ? (end - start + step - 1) / step : 0;
            var ns = (int[])S.Clone(); ns[d] = count;
            return Map(ns, idx => { var o = (int[])idx.Clone(); o[d] = start + idx[d] * step; return o; });
        }

        public RefView Select(int d, int i)
        {
            d = Norm(d, S.Length);
            if (i < 0) i += S[d];
            var ns = S.Where((_, k) => k != d).ToArray();
            return Map(ns, idx => { var o = idx.ToList(); o.Insert(d, i); return o.ToArray(); });
        }

        public RefView Unsqueeze(int d)
        {
            d = Norm(d, S.Length + 1);
            var ns = S.ToList(); ns.Insert(d, 1);
            return Map(ns.ToArray(), idx => idx.Where((_, k) => k != d).ToArray());
        }

        public RefView SqueezeAll()
        {
            var ns = S.Where(x => x != 1).ToArray();
            return Map(ns, idx =>
            {
                var o = new int[S.Length];
                for (int k = 0, j = 0; k < S.Length; k++) o[k] = S[k] == 1 ? 0 : idx[j++];
                return o;
            });
        }

        public RefView Expand(int[] shape)
        {
            int lead = shape.Length - S.Length;
            var ns = shape.Select((x, i) => x == -1 ? S[i - lead] : x).ToArray();
            return Map(ns, idx => { var o = new int[S.Length]; for (int j = 0; j < S.Length; j++) o[j] = S[j] == 1 ? 0 : idx[j + lead]; return o; });
        }

        public RefView Reshape(int[] shape) => new(V, shape);
    }

    static Tensor Base(int[] shape, DType dt, Layouts.Kind kind = Layouts.Kind.Contiguous) => Layouts.Make(RefView.Iota(shape).V, shape, dt, kind);

    static void AssertView(Tensor view, RefView r, Tensor? @base, string what)
    {
        Assert.That(view.Shape, Is.EqualTo(r.S), what + " shape");
        Assert.That(view.ToArray<double>(), Is.EqualTo(r.V), what + " values");
        if (@base is not null) Assert.That(ReferenceEquals(view.Storage, @base.Storage), Is.True, what + " shares storage");
    }

    [Test]
    public void TransposePermuteAndT()
    {
        foreach (var dt in AllTypes)
        {
            int[] shape = [2, 3, 4];
            using var x = Base(shape, dt);
            var r = RefView.Iota(shape);
            foreach (var (a, b) in new[] { (0, 1), (0, 2), (1, 2), (-1, 0), (2, 2), (-3, -1) })
            {
                using var t = x.Transpose(a, b);
                AssertView(t, r.Transpose(a, b), x, $"transpose {a},{b} {dt}");
            }
            int[][] perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0], [-1, 0, -2]];
            foreach (var p in perms)
            {
                using var t = x.Permute(p);
                AssertView(t, r.Permute(p), x, $"permute [{string.Join(",", p)}] {dt}");
            }
            using var t3 = x.T;
            AssertView(t3, r.Permute([2, 1, 0]), x, "T of rank 3 reverses dims");
            using var m = x.Select(0, 1);
            using var mt = m.T;
            AssertView(mt, r.Select(0, 1).Transpose(0, 1), x, "T of a matrix");
            using var v0 = x.Select(0, 0);
            using var v = v0.Select(0, 2);
            using var vt = v.T;
            AssertView(vt, r.Select(0, 0).Select(0, 2), x, "T of a vector is itself");
        }
        using var s = Tensor.Scalar(3);
        using var st = s.T;
        using var str = s.Transpose(0, -1);
        Assert.That(st.Shape, Is.Empty);
        Assert.That(str.Item(), Is.EqualTo(3));
    }

    [Test]
    public void NarrowSliceSelect()
    {
        foreach (var dt in AllTypes)
            foreach (var kind in Layouts.All)
            {
                int[] shape = [4, 5, 6];
                using var x = Base(shape, dt, kind);
                var r = RefView.Iota(shape);
                foreach (var (d, s, l) in new[] { (0, 1, 2), (1, 0, 5), (2, 3, 3), (-1, -4, 2), (1, 2, 0), (0, 4, 0) })
                {
                    using var n = x.Narrow(d, s, l);
                    AssertView(n, r.Narrow(d, s, l), x, $"narrow {d},{s},{l} {dt} {kind}");
                }
                foreach (var (d, s, e, st) in new[] { (0, 0, 4, 1), (0, 0, 4, 2), (1, 1, 5, 3), (2, -5, -1, 2), (2, 0, 100, 4), (1, 3, 2, 1), (-1, -100, 3, 1), (2, 6, 9, 1), (0, 1, 4, 5) })
                {
                    using var sl = x.Slice(d, s, e, st);
                    AssertView(sl, r.Slice(d, s, e, st), x, $"slice {d},{s}:{e}:{st} {dt} {kind}");
                }
                foreach (var (d, i) in new[] { (0, 0), (0, 3), (1, -1), (2, 5), (-1, -6) })
                {
                    using var se = x.Select(d, i);
                    AssertView(se, r.Select(d, i), x, $"select {d},{i} {dt} {kind}");
                }
            }
    }

    [Test]
    public void Indexer()
    {
        int[] shape = [3, 4, 5];
        using var x = Base(shape, DType.Float32);
        var r = RefView.Iota(shape);
        void Check(Tensor t, RefView want, string what) { using (t) AssertView(t, want, x, what); }
        Check(x[1], r.Select(0, 1), "x[1]");
        Check(x[-1], r.Select(0, 2), "x[-1]");
        Check(x[^1], r.Select(0, 2), "x[^1]");
        Check(x[^3], r.Select(0, 0), "x[^3]");
        Check(x[1, 2], r.Select(0, 1).Select(0, 2), "x[1, 2]");
        Check(x[1, 2, 3], r.Select(0, 1).Select(0, 2).Select(0, 3), "x[1, 2, 3]");
        Check(x[.., 1], r.Select(1, 1), "x[:, 1]");
        Check(x[TensorIndex.All, TensorIndex.All, ^2], r.Select(2, 3), "x[:, :, -2]");
        Check(x[1..3], r.Slice(0, 1, 3, 1), "x[1:3]");
        Check(x[^2..], r.Slice(0, -2, int.MaxValue, 1), "x[-2:]");
        Check(x[..^1, 1..^1], r.Slice(0, 0, -1, 1).Slice(1, 1, -1, 1), "x[:-1, 1:-1]");
        Check(x[TensorIndex.Slice(.., 2)], r.Slice(0, 0, 3, 2), "x[::2]");
        Check(x[TensorIndex.Slice(1.., 2), ^1, TensorIndex.Slice(..4, 3)], r.Slice(0, 1, 3, 2).Select(1, 3).Slice(1, 0, 4, 3), "x[1::2, -1, :4:3]");
        Check(x[TensorIndex.NewAxis], r.Unsqueeze(0), "x[None]");
        Check(x[0, TensorIndex.NewAxis, 2..], r.Select(0, 0).Unsqueeze(0).Slice(1, 2, 4, 1), "x[0, None, 2:]");
        Check(x[TensorIndex.All, TensorIndex.NewAxis, 1, TensorIndex.NewAxis], r.Select(1, 1).Unsqueeze(1).Unsqueeze(2), "x[:, None, 1, None]");
        Check(x[5..7], r.Slice(0, 5, 7, 1), "x[5:7] is empty");
        Check(x[2..1], r.Slice(0, 2, 1, 1), "x[2:1] is empty");
        Assert.That(() => x[3], Throws.TypeOf<ShapeException>());
        Assert.That(() => x[^4], Throws.TypeOf<ShapeException>());
        Assert.That(() => x[^0], Throws.TypeOf<ShapeException>());
        Assert.That(() => x[0, 0, 0, 0], Throws.TypeOf<ShapeException>().With.Message.Contains("Index"));
        Assert.That(() => x[TensorIndex.Slice(.., 0)], Throws.TypeOf<ShapeException>());
        Assert.That(() => x[TensorIndex.Slice(.., -1)], Throws.TypeOf<ShapeException>());
    }

    [Test]
    public void UnsqueezeSqueeze()
    {
        int[] shape = [2, 1, 3, 1];
        foreach (var kind in Layouts.All)
        {
            using var x = Base(shape, DType.Float64, kind);
            var r = RefView.Iota(shape);
            for (int d = -5; d <= 4; d++)
            {
                using var u = x.Unsqueeze(d);
                AssertView(u, r.Unsqueeze(d), x, $"unsqueeze {d} {kind}");
            }
            using var sq = x.Squeeze();
            AssertView(sq, r.SqueezeAll(), x, "squeeze()");
            using var s1 = x.Squeeze(1);
            AssertView(s1, r.Reshape([2, 3, 1]), x, "squeeze(1)");
            using var s3 = x.Squeeze(-1);
            AssertView(s3, r.Reshape([2, 1, 3]), x, "squeeze(-1)");
            using var s0 = x.Squeeze(0);
            AssertView(s0, r, x, "squeeze of a non-1 dim is a no-op");
        }
        using var sc = Tensor.Scalar(5);
        using var u0 = sc.Unsqueeze(0);
        using var um = sc.Unsqueeze(-1);
        Assert.That(u0.Shape, Is.EqualTo(new[] { 1 }));
        Assert.That(um.Shape, Is.EqualTo(new[] { 1 }));
        using var back = u0.Squeeze();
        Assert.That(back.Shape, Is.Empty);
        using var sq0 = sc.Squeeze(0);
        Assert.That(sq0.Shape, Is.Empty);
        Assert.That(() => sc.Unsqueeze(2), Throws.TypeOf<ShapeException>());
    }

    [Test]
    public void ViewReshapeFlatten()
    {
        foreach (var dt in AllTypes)
        {
            int[] shape = [3, 4];
            using var x = Base(shape, dt);
            var r = RefView.Iota(shape);
            using var v = x.View(2, -1, 3);
            AssertView(v, r.Reshape([2, 2, 3]), x, "view contiguous");
            using var v0 = x.View(-1);
            AssertView(v0, r.Reshape([12]), x, "view(-1)");

            // A transposed tensor: view(-1) needs a copy, as PyTorch ("view size is not compatible ... use .reshape").
            using var t = x.T;
            Assert.That(() => t.View(-1), Throws.TypeOf<ShapeException>().With.Message.Contains("View"));
            Assert.That(() => t.View(2, 6), Throws.TypeOf<ShapeException>());
            // Valid views of a transposed tensor: splitting or merging within one contiguous chunk.
            using var tv = t.View(2, 2, 3);
            AssertView(tv, r.Transpose(0, 1).Reshape([2, 2, 3]), x, "split a dim of x.T");
            using var tu = t.View(4, 1, 3);
            AssertView(tu, r.Transpose(0, 1).Reshape([4, 1, 3]), x, "insert a size-1 dim into x.T");
            using var rs = t.Reshape(-1);
            AssertView(rs, r.Transpose(0, 1).Reshape([12]), null, "reshape copies");
            Assert.That(ReferenceEquals(rs.Storage, x.Storage), Is.False, "reshape of x.T must copy");
            using var rv = x.Reshape(6, 2);
            Assert.That(ReferenceEquals(rv.Storage, x.Storage), Is.True, "reshape of a contiguous tensor is a view");

            // A narrowed tensor: rows stay contiguous, so splitting the row dim works but merging rows does not.
            using var n = x.Narrow(1, 1, 2); // [3, 2], strides [4, 1]
            using var nv = n.View(3, 2, 1);
            AssertView(nv, r.Narrow(1, 1, 2).Reshape([3, 2, 1]), x, "narrowed view");
            Assert.That(() => n.View(6), Throws.TypeOf<ShapeException>());
            using var nr = n.Reshape(6);
            AssertView(nr, r.Narrow(1, 1, 2).Reshape([6]), null, "narrowed reshape");

            using var f = x.Flatten();
            AssertView(f, r.Reshape([12]), x, "flatten");
            using var tf = t.Flatten();
            AssertView(tf, r.Transpose(0, 1).Reshape([12]), null, "flatten of x.T copies");
        }
        int[] s3 = [2, 3, 4, 5];
        using var y = Base(s3, DType.Float32);
        var ry = RefView.Iota(s3);
        using var f12 = y.Flatten(1, 2);
        AssertView(f12, ry.Reshape([2, 12, 5]), y, "flatten(1, 2)");
        using var fm = y.Flatten(-2);
        AssertView(fm, ry.Reshape([2, 3, 20]), y, "flatten(-2)");
        using var f33 = y.Flatten(3, 3);
        AssertView(f33, ry, y, "flatten(3, 3)");
        using var sc = Tensor.Scalar(2);
        using var scf = sc.Flatten();
        Assert.That(scf.Shape, Is.EqualTo(new[] { 1 }));
        Assert.That(() => y.Flatten(2, 1), Throws.TypeOf<ShapeException>());
        using var e = Tensor.Zeros([2, 0, 3]);
        using var ev = e.View(-1, 6);
        Assert.That(ev.Shape, Is.EqualTo(new[] { 0, 6 }));
        using var ef = e.Flatten();
        Assert.That(ef.Shape, Is.EqualTo(new[] { 0 }));
        Assert.That(() => e.View(-1, 0), Throws.TypeOf<ShapeException>());
    }

    [Test]
    public void ExpandAndExpandAs()
    {
        foreach (var dt in AllTypes)
        {
            int[] shape = [3, 1];
            using var x = Base(shape, dt);
            var r = RefView.Iota(shape);
            using var e = x.Expand(2, 3, 4);
            AssertView(e, r.Expand([2, 3, 4]), x, "expand");
            using var e1 = x.Expand(-1, 5);
            AssertView(e1, r.Expand([-1, 5]), x, "expand -1");
            using var e2 = x.Expand(2, -1, -1);
            AssertView(e2, r.Expand([2, 3, 1]), x, "expand -1 -1");
            using var e0 = x.Expand(3, 0);
            Assert.That(e0.Shape, Is.EqualTo(new[] { 3, 0 }));
            using var other = Tensor.Zeros([4, 3, 7]);
            using var ea = x.ExpandAs(other);
            AssertView(ea, r.Expand([4, 3, 7]), x, "expand as");
            Assert.That(() => x.Expand(4, 4), Throws.TypeOf<ShapeException>().With.Message.Contains("Expand"));
            Assert.That(() => x.Expand(-1, 3, 4), Throws.TypeOf<ShapeException>());
            Assert.That(() => x.Expand(3), Throws.TypeOf<ShapeException>());
            Assert.That(() => x.Expand(3, -2), Throws.TypeOf<ShapeException>());
        }
        using var s = Tensor.Scalar(7);
        using var se = s.Expand(2, 2);
        Assert.That(se.ToArray<double>(), Is.EqualTo(new double[] { 7, 7, 7, 7 }));
    }

    [Test]
    public void ContiguousCopiesOnlyWhenNeeded()
    {
        foreach (var dt in AllTypes)
            foreach (var kind in Layouts.All)
            {
                int[] shape = [3, 4];
                using var x = Base(shape, dt, kind);
                var r = RefView.Iota(shape);
                using var c = x.Contiguous();
                Assert.That(c.IsContiguous, Is.True);
                AssertView(c, r, null, $"contiguous {dt} {kind}");
                Assert.That(ReferenceEquals(c.Storage, x.Storage), Is.EqualTo(x.IsContiguous), $"{kind}: copy only when not contiguous");
                using var t = x.T;
                using var tc = t.Contiguous();
                Assert.That(tc.IsContiguous, Is.True);
                AssertView(tc, r.Transpose(0, 1), null, "contiguous of x.T");
                Assert.That(ReferenceEquals(tc.Storage, x.Storage), Is.EqualTo(t.IsContiguous), "x.T of a transposed buffer is contiguous");
            }
    }

    [Test]
    public void WritesThroughViewsShowInTheBase()
    {
        foreach (var dt in AllTypes)
        {
            using var x = Tensor.Zeros([3, 4], dt);
            using (var v = x.Narrow(1, 1, 2)) v.FillInPlace(5);
            using (var row = x[2]) row.AddInPlace(1);
            using (var xt = x.T)
            using (var col = xt[0])
            using (var ones = Tensor.Ones([3], dt))
                col.SubInPlace(ones);
            using (var every = x[TensorIndex.All, TensorIndex.Slice(.., 3)]) every.MulInPlace(2);
            var exp = new double[12];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 4; j++)
                {
                    double v = j is 1 or 2 ? 5 : 0;
                    if (i == 2) v += 1;
                    if (j == 0) v -= 1;
                    if (j % 3 == 0) v *= 2;
                    exp[i * 4 + j] = v;
                }
            Assert.That(x.ToArray<double>(), Is.EqualTo(exp), dt.ToString());
            Assert.That(x.Version, Is.EqualTo(4), "one version bump per in-place op, shared by all views");
            using var y = x.Reshape(12);
            Assert.That(y.Version, Is.EqualTo(x.Version));
        }
    }

    [Test]
    public void RandomViewChainsMatchIndexArithmetic()
    {
        var rng = new Random(21);
        for (int trial = 0; trial < 300; trial++)
        {
            var dt = AllTypes[trial % AllTypes.Length];
            var kind = Layouts.All[trial / AllTypes.Length % Layouts.All.Length];
            int[] shape = [3, 4, 5];
            using var @base = Base(shape, dt, kind);
            var r = RefView.Iota(shape);
            var t = @base.Alias0();
            var log = new List<string>();
            bool expanded = false;
            try
            {
                for (int step = 0; step < 6; step++)
                {
                    int rank = r.S.Length;
                    int op = rng.Next(10);
                    Tensor next;
                    RefView nr;
                    if (rank == 0) op = 6;
                    switch (op)
                    {
                        case 0:
                        {
                            int a = rng.Next(rank), b = rng.Next(rank);
                            next = t.Transpose(a, b); nr = r.Transpose(a, b); log.Add($"T({a},{b})");
                            break;
                        }
                        case 1:
                        {
                            var perm = Enumerable.Range(0, rank).OrderBy(_ => rng.Next()).ToArray();
                            next = t.Permute(perm); nr = r.Permute(perm); log.Add($"P({string.Join(",", perm)})");
                            break;
                        }
                        case 2:
                        {
                            int d = rng.Next(rank), size = r.S[d], s = rng.Next(size + 1), l = rng.Next(size - s + 1);
                            next = t.Narrow(d, s, l); nr = r.Narrow(d, s, l); log.Add($"N({d},{s},{l})");
                            break;
                        }
                        case 3:
                        {
                            int d = rng.Next(rank), size = r.S[d], s = rng.Next(-size - 1, size + 2), e = rng.Next(-size - 1, size + 2), st = rng.Next(1, 4);
                            next = t.Slice(d, s, e, st); nr = r.Slice(d, s, e, st); log.Add($"S({d},{s},{e},{st})");
                            break;
                        }
                        case 4:
                        {
                            int d = rng.Next(rank);
                            if (r.S[d] == 0) goto default;
                            int i = rng.Next(-r.S[d], r.S[d]);
                            next = t.Select(d, i); nr = r.Select(d, i); log.Add($"Sel({d},{i})");
                            break;
                        }
                        case 5:
                            next = t.Squeeze(); nr = r.SqueezeAll(); log.Add("Sq");
                            break;
                        case 6:
                        {
                            int d = rng.Next(rank + 1);
                            next = t.Unsqueeze(d); nr = r.Unsqueeze(d); log.Add($"U({d})");
                            break;
                        }
                        case 7:
                        {
                            // Expand the size-1 dims (and maybe add a leading one).
                            var target = r.S.Select(x => x == 1 ? rng.Next(1, 4) : -1).ToList();
                            if (rng.Next(2) == 0) target.Insert(0, 2);
                            next = t.Expand([.. target]); nr = r.Expand([.. target]); log.Add($"E({string.Join(",", target)})");
                            expanded |= target.Any(x => x > 1);
                            break;
                        }
                        default:
                        {
                            // Reshape to a random regrouping; View when the engine can, else Reshape.
                            int n = r.V.Length;
                            var ns = Factor(n, rng);
                            nr = r.Reshape(ns);
                            try { next = t.View(ns); log.Add($"V({string.Join(",", ns)})"); }
                            catch (ShapeException) { next = t.Reshape(ns); log.Add($"R({string.Join(",", ns)})"); }
                            break;
                        }
                    }
                    t.Dispose();
                    t = next;
                    r = nr;
                    AssertView(t, r, null, $"trial {trial} {dt} {kind}: {string.Join(" ", log)}");
                }
                // Write through the final tensor if it is a writable view of the base: the base changes at exactly the
                // positions the reference names.
                if (ReferenceEquals(t.Storage, @base.Storage) && !expanded && r.V.Distinct().Count() == r.V.Length)
                {
                    var before = @base.ToArray<double>();
                    var marks = Enumerable.Range(0, r.V.Length).Select(i => -(double)(i + 1)).ToArray();
                    using var src = Tensor.FromArray(marks, r.S);
                    t.CopyInPlace(src);
                    for (int i = 0; i < marks.Length; i++) before[(int)r.V[i]] = marks[i];
                    Assert.That(@base.ToArray<double>(), Is.EqualTo(before), $"write through {string.Join(" ", log)}");
                }
            }
            finally { t.Dispose(); }
        }
    }

    static int[] Factor(int n, Random rng)
    {
        if (n == 0) return rng.Next(2) == 0 ? [0] : [2, 0, 1];
        if (n == 1 && rng.Next(3) == 0) return [];
        var dims = new List<int>();
        int rest = n;
        while (rest > 1 && dims.Count < 3)
        {
            var divisors = Enumerable.Range(2, rest - 1).Where(d => rest % d == 0).ToArray();
            int d = divisors[rng.Next(divisors.Length)];
            dims.Add(d); rest /= d;
            if (rng.Next(4) == 0) dims.Add(1);
        }
        if (rest > 1) dims.Add(rest);
        if (dims.Count == 0 || rng.Next(5) == 0) dims.Insert(rng.Next(dims.Count + 1), 1);
        if (rng.Next(6) == 0) dims[rng.Next(dims.Count)] = -1;
        var shape = dims.ToArray();
        if (shape.Contains(-1)) { int known = shape.Where(x => x != -1).Aggregate(1, (a, b) => a * b); shape[Array.IndexOf(shape, -1)] = n / known; }
        return shape;
    }
}

static class ViewTestExtensions
{
    /// <summary>A second handle on the same data (as a view op with the identity layout would give).</summary>
    public static Tensor Alias0(this Tensor t) => t.View(t.Shape);
}

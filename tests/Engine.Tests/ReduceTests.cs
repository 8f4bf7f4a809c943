using Engine.Autograd;
using Engine.Backends.Cpu;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

public class ReduceTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];

    // ---- plain float64 references ----

    /// <summary>
    /// Applies <paramref name="f"/> to each block of the reduced dims (row-major within the block) of a row-major
    /// array; returns the outputs row-major over the kept dims and the output shape.
    /// </summary>
    static (double[] Values, int[] Shape) Reference(double[] x, int[] shape, int[] dims, bool keepDim, Func<double[], double> f)
    {
        var reduced = new bool[shape.Length];
        foreach (var d in dims) reduced[d] = true;
        var kept = new List<int>(); var red = new List<int>(); var outShape = new List<int>();
        for (int i = 0; i < shape.Length; i++)
        {
            if (reduced[i]) { red.Add(i); if (keepDim) outShape.Add(1); }
            else { kept.Add(i); outShape.Add(shape[i]); }
        }
        var keptShape = kept.Select(i => shape[i]).ToArray();
        var redShape = red.Select(i => shape[i]).ToArray();
        int nOut = Ref.Numel(keptShape), nBlock = Ref.Numel(redShape);
        var result = new double[nOut];
        var full = new int[shape.Length];
        for (int o = 0; o < nOut; o++)
        {
            var ko = Ref.Unravel(o, keptShape);
            for (int k = 0; k < kept.Count; k++) full[kept[k]] = ko[k];
            var block = new double[nBlock];
            for (int b = 0; b < nBlock; b++)
            {
                var rb = Ref.Unravel(b, redShape);
                for (int k = 0; k < red.Count; k++) full[red[k]] = rb[k];
                block[b] = x[Ref.Ravel(full, shape)];
            }
            result[o] = f(block);
        }
        return (result, outShape.ToArray());
    }

    static double RefSum(double[] b) { double s = 0; foreach (var v in b) s += v; return s; }
    static double RefMean(double[] b) => RefSum(b) / b.Length;

    static double RefVar(double[] b, double correction)
    {
        double m = RefMean(b), s = 0;
        foreach (var v in b) s += (v - m) * (v - m);
        return s / Math.Max(0, b.Length - correction);
    }

    static double RefLogSumExp(double[] b)
    {
        if (b.Any(double.IsNaN)) return double.NaN;
        if (b.Any(double.IsPositiveInfinity)) return double.PositiveInfinity;
        double m = double.NegativeInfinity;
        foreach (var v in b) m = Math.Max(m, v);
        if (double.IsNegativeInfinity(m)) return m;
        double s = 0;
        foreach (var v in b) s += Math.Exp(v - m);
        return m + Math.Log(s);
    }

    static double RefNorm(double[] b, double p)
    {
        if (double.IsPositiveInfinity(p)) { double m = 0; foreach (var v in b) m = Math.Max(m, Math.Abs(v)); return m; }
        if (double.IsNegativeInfinity(p)) { double m = double.PositiveInfinity; foreach (var v in b) m = Math.Min(m, Math.Abs(v)); return m; }
        if (p == 0) { double c = 0; foreach (var v in b) if (v != 0) c++; return c; }
        double s = 0;
        foreach (var v in b) s += Math.Pow(Math.Abs(v), p);
        return Math.Pow(s, 1 / p);
    }

    /// <summary>First maximum (or minimum) and its index; the first NaN wins.</summary>
    static (double Value, int Index) RefExtremum(double[] b, bool max)
    {
        int best = 0;
        for (int i = 0; i < b.Length; i++)
        {
            if (double.IsNaN(b[i])) return (b[i], i);
            if (max ? b[i] > b[best] : b[i] < b[best]) best = i;
        }
        return (b[best], best);
    }

    // ---- random cases ----

    static int[] RandomShape(Random rng, int rank, bool allowZero)
    {
        var s = new int[rank];
        for (int i = 0; i < rank; i++) s[i] = allowZero && rng.Next(8) == 0 ? 0 : rng.Next(1, rank >= 4 ? 4 : 5);
        return s;
    }

    static IEnumerable<int[]> Shapes(int seed)
    {
        var rng = new Random(seed);
        yield return [];
        yield return [1];
        yield return [5];
        yield return [0];
        yield return [3, 0, 2];
        yield return [1, 4, 1];
        // Wide enough for the kernel's column walk (reducing leading dims) and its vector paths (rows of ≥ 32).
        yield return [6, 20];
        yield return [3, 2, 16];
        yield return [2, 70];
        for (int rank = 1; rank <= 4; rank++)
            for (int k = 0; k < 2; k++) yield return RandomShape(rng, rank, allowZero: k == 1);
    }

    /// <summary>Every subset of the dims (as masks), each given to the engine in a shuffled order, some negative.</summary>
    static IEnumerable<(int[] Normalized, int[] Given)> DimSubsets(Random rng, int rank)
    {
        for (int mask = 0; mask < 1 << rank; mask++)
        {
            var dims = Enumerable.Range(0, rank).Where(d => (mask >> d & 1) != 0).ToArray();
            var given = dims.OrderBy(_ => rng.Next()).Select(d => rng.Next(2) == 0 ? d - rank : d).ToArray();
            yield return (dims.Length == 0 ? Enumerable.Range(0, rank).ToArray() : dims, given);
        }
    }

    delegate Tensor ReduceCall(Tensor t, int[] dims, bool keepDim);

    static void CheckAgainstReference(string what, ReduceCall call, Func<double[], double> reference, bool skipEmpty = false, int seed = 1)
    {
        var rng = new Random(seed);
        int combo = 0;
        foreach (var shape in Shapes(seed))
        {
            if (skipEmpty && Ref.Numel(shape) == 0) continue;
            foreach (var (dims, given) in DimSubsets(rng, shape.Length))
                foreach (var keepDim in new[] { false, true })
                {
                    // Cycle dtypes and layouts so that every pair is covered across the subsets.
                    var dt = Floats[combo % 4];
                    var kind = Layouts.All[combo / 4 % 4];
                    combo++;
                    var x = Ref.Random(rng, Ref.Numel(shape), dt);
                    using var t = Layouts.Make(x, shape, dt, kind);
                    using var y = call(t, given, keepDim);
                    var (expected, outShape) = Reference(x, shape, dims, keepDim, reference);
                    string ctx = $"{what} {dt} {kind} shape {Shape.Format(shape)} dims [{string.Join(", ", given)}] keepDim {keepDim}";
                    Assert.That(y.Shape, Is.EqualTo(outShape), ctx + ": shape");
                    Assert.That(y.DType, Is.EqualTo(dt), ctx + ": dtype");
                    Ref.AssertClose(y.ToArray<double>(), expected.Select(v => Ref.RoundTo(v, dt)).ToArray(), dt, ctx);
                }
        }
    }

    // ---- forward ----

    [Test]
    public void SumMatchesReference() => CheckAgainstReference("Sum", (t, d, k) => t.Sum(d, k), RefSum);

    [Test]
    public void MeanMatchesReference() => CheckAgainstReference("Mean", (t, d, k) => t.Mean(d, k), RefMean);

    [Test]
    public void VarMatchesReference()
    {
        CheckAgainstReference("Var", (t, d, k) => t.Var(d, true, k), b => RefVar(b, 1), seed: 2);
        CheckAgainstReference("VarBiased", (t, d, k) => t.Var(d, false, k), b => RefVar(b, 0), seed: 3);
    }

    [Test]
    public void LogSumExpMatchesReference() => CheckAgainstReference("LogSumExp", (t, d, k) => t.LogSumExp(d, k), RefLogSumExp, seed: 4);

    [Test]
    public void NormMatchesReference()
    {
        foreach (var p in new[] { 2.0, 1.0, 3.0, 0.5, 0.0 })
            CheckAgainstReference($"Norm p={p}", (t, d, k) => t.Norm(p, d, k), b => RefNorm(b, p), seed: 5);
        foreach (var p in new[] { double.PositiveInfinity, double.NegativeInfinity })
            CheckAgainstReference($"Norm p={p}", (t, d, k) => t.Norm(p, d, k), b => RefNorm(b, p), skipEmpty: true, seed: 6);
    }

    [Test]
    public void SingleDimOverloadsMatchReference()
    {
        var rng = new Random(7);
        int[] shape = [3, 4, 2];
        var x = Ref.Random(rng, 24, DType.Float64);
        using var t = Layouts.Make(x, shape, DType.Float64, Layouts.Kind.Transposed);
        for (int dim = -3; dim < 3; dim++)
        {
            int nd = dim < 0 ? dim + 3 : dim;
            foreach (var keep in new[] { false, true })
            {
                using var s = t.Sum(dim, keep);
                using var m = t.Mean(dim, keep);
                using var v = t.Var(dim, keepDim: keep);
                using var l = t.LogSumExp(dim, keep);
                Ref.AssertClose(s.ToArray<double>(), Reference(x, shape, [nd], keep, RefSum).Values, DType.Float64, $"Sum({dim})");
                Ref.AssertClose(m.ToArray<double>(), Reference(x, shape, [nd], keep, RefMean).Values, DType.Float64, $"Mean({dim})");
                Ref.AssertClose(v.ToArray<double>(), Reference(x, shape, [nd], keep, b => RefVar(b, 1)).Values, DType.Float64, $"Var({dim})");
                Ref.AssertClose(l.ToArray<double>(), Reference(x, shape, [nd], keep, RefLogSumExp).Values, DType.Float64, $"LogSumExp({dim})");
            }
        }
        using var all = t.Sum();
        using var allMean = t.Mean();
        using var allVar = t.Var();
        using var allNorm = t.Norm();
        Assert.That(all.Shape, Is.Empty);
        Assert.That(all.Item(), Is.EqualTo(RefSum(x)).Within(1e-12));
        Assert.That(allMean.Item(), Is.EqualTo(RefMean(x)).Within(1e-12));
        Assert.That(allVar.Item(), Is.EqualTo(RefVar(x, 1)).Within(1e-12));
        Assert.That(allNorm.Item(), Is.EqualTo(RefNorm(x, 2)).Within(1e-12));
    }

    [Test]
    public void MaxMinAlongDimMatchReferenceWithFirstIndexOfTies()
    {
        var rng = new Random(8);
        int combo = 0;
        foreach (var shape in Shapes(8))
            for (int dim = -shape.Length; dim < Math.Max(shape.Length, 1); dim++)
            {
                int nd = shape.Length == 0 ? 0 : dim < 0 ? dim + shape.Length : dim;
                if (shape.Length > 0 && shape[nd] == 0) continue;
                foreach (var keepDim in new[] { false, true })
                    foreach (var max in new[] { true, false })
                    {
                        var dt = Floats[combo % 4];
                        var kind = Layouts.All[combo / 4 % 4];
                        combo++;
                        // Values on a coarse grid, so that ties are common.
                        var x = Ref.Random(rng, Ref.Numel(shape), dt).Select(v => Math.Round(v)).ToArray();
                        using var t = Layouts.Make(x, shape, dt, kind);
                        var (values, indices) = max ? t.Max(dim, keepDim) : t.Min(dim, keepDim);
                        using var _v = values;
                        using var _i = indices;
                        int[] dims = shape.Length == 0 ? [] : [nd];
                        var (ev, outShape) = Reference(x, shape, dims, keepDim, b => RefExtremum(b, max).Value);
                        var (ei, _) = Reference(x, shape, dims, keepDim, b => RefExtremum(b, max).Index);
                        string ctx = $"{(max ? "Max" : "Min")} {dt} {kind} {Shape.Format(shape)} dim {dim} keepDim {keepDim}";
                        Assert.That(values.Shape, Is.EqualTo(outShape), ctx);
                        Assert.That(indices.Shape, Is.EqualTo(outShape), ctx);
                        Assert.That(indices.DType, Is.EqualTo(DType.Int64), ctx);
                        Assert.That(values.ToArray<double>(), Is.EqualTo(ev), ctx);
                        Assert.That(indices.ToArray<long>(), Is.EqualTo(ei.Select(v => (long)v).ToArray()), ctx);
                        using var arg = max ? t.ArgMax(dim, keepDim) : t.ArgMin(dim, keepDim);
                        Assert.That(arg.ToArray<long>(), Is.EqualTo(ei.Select(v => (long)v).ToArray()), ctx + " Arg");
                    }
            }
    }

    [Test]
    public void MaxMinAllAndArgMaxFlat()
    {
        var x = new double[] { 1, 5, -3, 5, 0, -3 };
        using var t = Layouts.Make(x, [2, 3], DType.Float32, Layouts.Kind.Transposed);
        using var mx = t.Max();
        using var mn = t.Min();
        using var am = t.ArgMax();
        using var an = t.ArgMin();
        using var amk = t.ArgMax(keepDim: true);
        Assert.That(mx.Shape, Is.Empty);
        Assert.That(mx.Item(), Is.EqualTo(5));
        Assert.That(mn.Item(), Is.EqualTo(-3));
        Assert.That(am.Item<long>(), Is.EqualTo(1));
        Assert.That(an.Item<long>(), Is.EqualTo(2));
        Assert.That(amk.Shape, Is.EqualTo(new[] { 1, 1 }));
        Assert.That(amk.Item<long>(), Is.EqualTo(1));
    }

    [Test]
    public void MaxMinPropagateNaNAtItsFirstIndex()
    {
        foreach (var dt in Floats)
        {
            var x = new double[] { 1, double.NaN, 7, double.NaN, -9, 3, 2, 0 };
            using var t = Layouts.Make(x, [2, 4], dt, Layouts.Kind.Strided);
            var (v, i) = t.Max(1);
            using var _v = v; using var _i = i;
            Assert.That(v.ToArray<double>()[0], Is.NaN, $"{dt}");
            Assert.That(v.ToArray<double>()[1], Is.EqualTo(3), $"{dt}");
            Assert.That(i.ToArray<long>(), Is.EqualTo(new long[] { 1, 1 }), $"{dt}");
            var (mv, mi) = t.Min(1);
            using var _mv = mv; using var _mi = mi;
            Assert.That(mv.ToArray<double>()[0], Is.NaN, $"{dt}");
            Assert.That(mi.ToArray<long>(), Is.EqualTo(new long[] { 1, 0 }), $"{dt}");
            using var all = t.Max();
            using var allMin = t.Min();
            using var arg = t.ArgMin();
            Assert.That(all.Item(), Is.NaN);
            Assert.That(allMin.Item(), Is.NaN);
            Assert.That(arg.Item<long>(), Is.EqualTo(1));
            using var inf = t.Norm(double.PositiveInfinity);
            Assert.That(inf.Item(), Is.NaN);
            using var lse = t.LogSumExp(1);
            Assert.That(lse.ToArray<double>()[0], Is.NaN);
        }
    }

    [Test]
    public void VectorAndColumnPathsKeepFirstIndexAndNaNRules()
    {
        // Rows of 37..99 elements (the contiguous vector path) and their transposes (the column walk), with ties,
        // signed zeros and NaNs at random places.
        var rng = new Random(13);
        foreach (var dt in new[] { DType.Float32, DType.Float64 })
            for (int trial = 0; trial < 12; trial++)
            {
                int rows = rng.Next(1, 12), cols = rng.Next(37, 100);
                var x = new double[rows * cols];
                for (int i = 0; i < x.Length; i++) x[i] = rng.Next(-3, 4) * (rng.Next(2) == 0 ? 1.0 : -1.0);
                for (int i = 0; i < x.Length; i++) if (x[i] == 0 && rng.Next(2) == 0) x[i] = -0.0;
                for (int k = 0; k < trial % 4; k++) x[rng.Next(x.Length)] = double.NaN;
                if (trial % 3 == 0) for (int i = 0; i < x.Length; i++) x[i] = Math.Abs(x[i]) < 3 ? -Math.Abs(x[i]) : x[i];
                using var t = Tensor.FromArray(x, [rows, cols]);
                using var tt = t.To(dt);
                using var tr = Layouts.Make(Transpose(x, rows, cols), [cols, rows], dt, Layouts.Kind.Contiguous);
                foreach (var max in new[] { true, false })
                {
                    var (ev, _) = Reference(x, [rows, cols], [1], false, b => RefExtremum(b, max).Value);
                    var (ei, _) = Reference(x, [rows, cols], [1], false, b => RefExtremum(b, max).Index);
                    var (v, i) = max ? tt.Max(1) : tt.Min(1);
                    var (cv, ci) = max ? tr.Max(0) : tr.Min(0);
                    using var _v = v; using var _i = i; using var _cv = cv; using var _ci = ci;
                    string ctx = $"{dt} {(max ? "max" : "min")} trial {trial}";
                    Assert.That(i.ToArray<long>(), Is.EqualTo(ei.Select(q => (long)q).ToArray()), ctx + " rows: indices");
                    Assert.That(ci.ToArray<long>(), Is.EqualTo(ei.Select(q => (long)q).ToArray()), ctx + " columns: indices");
                    Assert.That(Bits(v.ToArray<double>()), Is.EqualTo(Bits(ev)), ctx + " rows: values (bitwise, signed zeros included)");
                    Assert.That(Bits(cv.ToArray<double>()), Is.EqualTo(Bits(ev)), ctx + " columns: values");
                    using var all = max ? tt.ArgMax() : tt.ArgMin();
                    Assert.That(all.Item<long>(), Is.EqualTo(RefExtremum(x, max).Index), ctx + " all");
                }
                var (el, _) = Reference(x, [rows, cols], [1], false, RefLogSumExp);
                using var lse = tt.LogSumExp(1);
                using var lseCols = tr.LogSumExp(0);
                Ref.AssertClose(lse.ToArray<double>(), el, dt, $"{dt} LogSumExp rows");
                Ref.AssertClose(lseCols.ToArray<double>(), el, dt, $"{dt} LogSumExp columns");
            }

        static double[] Transpose(double[] x, int rows, int cols)
        {
            var r = new double[x.Length];
            for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) r[j * rows + i] = x[i * cols + j];
            return r;
        }
        static long[] Bits(double[] v) => v.Select(q => double.IsNaN(q) ? -1 : BitConverter.DoubleToInt64Bits(q)).ToArray();
    }

    [Test]
    public void LogSumExpOfLongRowsWithInfinities()
    {
        foreach (var dt in new[] { DType.Float32, DType.Float64 })
        {
            var x = new double[3 * 40];
            for (int j = 0; j < 40; j++) { x[j] = double.NegativeInfinity; x[40 + j] = j % 7 == 0 ? double.NegativeInfinity : j * 0.1; x[80 + j] = j * 0.1; }
            x[80 + 17] = double.PositiveInfinity;
            using var t = Layouts.Make(x, [3, 40], dt, Layouts.Kind.Contiguous);
            using var l = t.LogSumExp(1);
            var (e, _) = Reference(x, [3, 40], [1], false, RefLogSumExp);
            Ref.AssertClose(l.ToArray<double>(), e, dt, $"{dt} LogSumExp with infinities");
        }
    }

    [Test]
    public void LongBlocksAreChunkedAndMatchReference()
    {
        // Blocks longer than the kernel's chunk (32768): a full reduction, a row reduction and a strided column.
        var rng = new Random(9);
        int n = 100_003;
        var x = Ref.Random(rng, n, DType.Float32);
        using var t = Tensor.FromArray(x.Select(v => (float)v).ToArray());
        using var s = t.Sum();
        using var m = t.Mean();
        using var v = t.Var();
        using var l = t.LogSumExp(0);
        using var nm = t.Norm();
        using var n1 = t.Norm(1);
        using var mx = t.ArgMax();
        Assert.That(s.Item(), Is.EqualTo(RefSum(x)).Within(1e-6 * n));
        Assert.That(m.Item(), Is.EqualTo(RefMean(x)).Within(1e-6));
        Assert.That(v.Item(), Is.EqualTo(RefVar(x, 1)).Within(2e-5));
        Assert.That(l.Item(), Is.EqualTo(RefLogSumExp(x)).Within(2e-5));
        Assert.That(nm.Item(), Is.EqualTo(RefNorm(x, 2)).Within(2e-5 * RefNorm(x, 2)));
        Assert.That(n1.Item(), Is.EqualTo(RefNorm(x, 1)).Within(2e-5 * RefNorm(x, 1)));
        Assert.That(mx.Item<long>(), Is.EqualTo(RefExtremum(x, true).Index));

        var y = Ref.Random(rng, 2 * 40000, DType.Float64);
        using var ty = Tensor.FromArray(y, [40000, 2]);
        using var cols = ty.Sum(0);
        var (e, _) = Reference(y, [40000, 2], [0], false, RefSum);
        Ref.AssertClose(cols.ToArray<double>(), e, DType.Float64, "column sums");
        var (mxv, mxi) = ty.Max(0);
        using var _a = mxv; using var _b = mxi;
        var (ei, _) = Reference(y, [40000, 2], [0], false, b => RefExtremum(b, true).Index);
        Assert.That(mxi.ToArray<long>(), Is.EqualTo(ei.Select(q => (long)q).ToArray()));
    }

    [Test]
    public void ResultsDoNotDependOnThreadCount()
    {
        var rng = new Random(10);
        var x = new float[40000 * 8];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 4 - 2);
        var xh = x.Select(v => (double)v).ToArray();
        double[][] Run()
        {
            using var t = Tensor.FromArray(x);
            using var m = Tensor.FromArray(x, [80, 4000]);
            using var h = Tensor.FromArray(xh, [400, 800]);
            using var hh = h.To(DType.BFloat16);
            using var a = t.Sum();
            using var b = m.Sum(1);
            using var c = m.Sum(0);
            using var d = m.Var();
            using var e = hh.Mean(0);
            using var f = m.LogSumExp([0, 1]);
            using var g = m.Norm(3, [1]);
            using var cols = Tensor.FromArray(x, [40000, 8]);
            using var k = cols.Sum(0);   // column walk over chunked blocks
            var (lv, l) = cols.Max(0);
            using var _lv = lv; using var _l = l;
            using var q = cols.Var(0);
            return [a.ToArray<double>(), b.ToArray<double>(), c.ToArray<double>(), d.ToArray<double>(), e.ToArray<double>(), f.ToArray<double>(), g.ToArray<double>(),
                k.ToArray<double>(), l.ToArray<double>(), q.ToArray<double>()];
        }
        using var threads1 = CpuBackend.UseOptions(CpuBackend.Options with { Threads = 1 });
        var one = Run();
        using var threads2 = CpuBackend.UseOptions(CpuBackend.Options with { Threads = 2 });
        var two = Run();
        using var threads3 = CpuBackend.UseOptions(CpuBackend.Options with { Threads = 3 });
        var three = Run();
        for (int k = 0; k < one.Length; k++)
        {
            Assert.That(two[k], Is.EqualTo(one[k]), $"result {k}, 2 threads vs 1");
            Assert.That(three[k], Is.EqualTo(one[k]), $"result {k}, 3 threads vs 1");
        }
    }

    [Test]
    public void IntegerAndBoolSumsGiveInt64Exactly()
    {
        var rng = new Random(11);
        var xi = Enumerable.Range(0, 24).Select(_ => rng.Next(-1000, 1000)).ToArray();
        using var ti = Tensor.FromArray(xi, [2, 3, 4]);
        using var tiT = ti.Transpose(0, 2);
        foreach (var (t, name) in new[] { (ti, "int32"), (tiT, "int32 transposed") })
        {
            var shape = t.Shape.ToArray();
            var vals = t.ToArray<double>();
            for (int d = 0; d < 3; d++)
            {
                using var s = t.Sum(d);
                Assert.That(s.DType, Is.EqualTo(DType.Int64), name);
                Assert.That(s.ToArray<double>(), Is.EqualTo(Reference(vals, shape, [d], false, RefSum).Values), name);
            }
        }
        using var big = Tensor.FromArray(new long[] { 1L << 60, 1, 1, -(1L << 59) });
        using var bs = big.Sum();
        Assert.That(bs.Item<long>(), Is.EqualTo((1L << 60) + 2 - (1L << 59)));
        using var bm = big.Max();
        Assert.That(bm.Item<long>(), Is.EqualTo(1L << 60));
        using var big2 = Tensor.FromArray(new long[] { (1L << 60) + 1, 1L << 60, (1L << 60) + 1 });
        var (bv, bi) = big2.Max(0);
        using var _v = bv; using var _i = bi;
        Assert.That(bv.Item<long>(), Is.EqualTo((1L << 60) + 1));
        Assert.That(bi.Item<long>(), Is.EqualTo(0));

        using var tb = Tensor.FromArray(new[] { true, false, true, true, false, true }, [2, 3]);
        using var sb = tb.Sum(1);
        using var sball = tb.Sum();
        Assert.That(sb.DType, Is.EqualTo(DType.Int64));
        Assert.That(sb.ToArray<long>(), Is.EqualTo(new long[] { 2, 2 }));
        Assert.That(sball.Item<long>(), Is.EqualTo(4));
        using var bmax = tb.Max();
        Assert.That(bmax.DType, Is.EqualTo(DType.Bool));
        Assert.That(bmax.Item<bool>(), Is.True);

        using var lseInt = ti.LogSumExp(0);
        Assert.That(lseInt.DType, Is.EqualTo(DType.Float32));
    }

    [Test]
    public void EmptyAndScalarEdgeCases()
    {
        using var e = Tensor.Zeros([2, 0]);
        using var s = e.Sum(1);
        using var m = e.Mean(1);
        using var l = e.LogSumExp(1);
        using var n = e.Norm(2, [1]);
        using var v = e.Var(1);
        Assert.That(s.ToArray<double>(), Is.EqualTo(new double[] { 0, 0 }));
        Assert.That(m.ToArray<double>(), Is.All.NaN);
        Assert.That(l.ToArray<double>(), Is.All.EqualTo(double.NegativeInfinity));
        Assert.That(n.ToArray<double>(), Is.EqualTo(new double[] { 0, 0 }));
        Assert.That(v.ToArray<double>(), Is.All.NaN);
        using var s0 = e.Sum(0);
        Assert.That(s0.Shape, Is.EqualTo(new[] { 0 }));

        using var sc = Tensor.Scalar(2.5, DType.Float64);
        foreach (var dim in new[] { 0, -1 })
        {
            using var a = sc.Sum(dim);
            using var ak = sc.Sum(dim, keepDim: true);
            using var mm = sc.Mean([dim]);
            var (mv, mi) = sc.Max(dim);
            using var _mv = mv; using var _mi = mi;
            Assert.That(a.Shape, Is.Empty);
            Assert.That(ak.Shape, Is.Empty);
            Assert.That(a.Item(), Is.EqualTo(2.5));
            Assert.That(mm.Item(), Is.EqualTo(2.5));
            Assert.That(mv.Item(), Is.EqualTo(2.5));
            Assert.That(mi.Item<long>(), Is.EqualTo(0));
        }
        using var vu = sc.Var();
        using var vb = sc.Var(correction: 0);
        using var am = sc.ArgMax();
        Assert.That(vu.Item(), Is.NaN);
        Assert.That(vb.Item(), Is.EqualTo(0));
        Assert.That(am.Item<long>(), Is.EqualTo(0));

        using var one = Tensor.FromArray(new[] { 3.0, 4.0 }, [2, 1]);
        using var v1 = one.Var(1);
        Assert.That(v1.ToArray<double>(), Is.All.NaN);

        using var inf = Tensor.FromArray(new[] { double.NegativeInfinity, double.NegativeInfinity, double.PositiveInfinity, 1, 1000, 1000 }, [3, 2]);
        using var lse = inf.LogSumExp(1);
        var r = lse.ToArray<double>();
        Assert.That(r[0], Is.EqualTo(double.NegativeInfinity));
        Assert.That(r[1], Is.EqualTo(double.PositiveInfinity));
        Assert.That(r[2], Is.EqualTo(1000 + Math.Log(2)).Within(1e-12));
    }

    [Test]
    public void ExpandedInputsReduceEveryLogicalElement()
    {
        using var row = Tensor.FromArray(new[] { 1.0, 2.0, 3.0 }, [1, 3]);
        using var ex = row.Expand(4, 3);
        using var s0 = ex.Sum(0);
        using var s1 = ex.Sum(1);
        Assert.That(s0.ToArray<double>(), Is.EqualTo(new double[] { 4, 8, 12 }));
        Assert.That(s1.ToArray<double>(), Is.EqualTo(new double[] { 6, 6, 6, 6 }));
    }

    [Test]
    public void InvalidArgumentsThrowNamingTheOp()
    {
        using var t = Tensor.Ones([2, 3]);
        using var ti = Tensor.Ones([2, 3], DType.Int32);
        using var empty = Tensor.Zeros([2, 0]);
        void Throws<TEx>(TestDelegate d, string op) where TEx : EngineException
        {
            var ex = Assert.Throws<TEx>(d);
            Assert.That(ex!.Message, Does.Contain(op));
        }
        Throws<ShapeException>(() => t.Sum([0, 0]), "Sum");
        Throws<ShapeException>(() => t.Sum([1, -1]), "Sum");
        Throws<ShapeException>(() => t.Sum(2), "Sum");
        Throws<ShapeException>(() => t.Mean(-3), "Mean");
        Throws<ShapeException>(() => t.Max(5), "Max");
        Throws<ShapeException>(() => t.Var([0, -2]), "Var");
        Throws<ShapeException>(() => t.LogSumExp(3), "LogSumExp");
        Throws<ShapeException>(() => t.Norm(2, [7]), "Norm");
        Throws<ShapeException>(() => t.ArgMax(2), "ArgMax");
        Throws<DTypeException>(() => ti.Mean(), "Mean");
        Throws<DTypeException>(() => ti.Var(), "Var");
        Throws<DTypeException>(() => ti.Norm(), "Norm");
        Throws<ShapeException>(() => empty.Max(1), "Max");
        Throws<ShapeException>(() => empty.Min(), "Min");
        Throws<ShapeException>(() => empty.ArgMax(), "ArgMax");
        Throws<ShapeException>(() => empty.Norm(double.PositiveInfinity, [1]), "Norm");
        var (ok, okIdx) = empty.Max(0);
        using var _ok = ok; using var _okIdx = okIdx;
        Assert.That(ok.Shape, Is.EqualTo(new[] { 0 }));
    }

    // ---- broadcasting backward helper ----

    [Test]
    public void SumToShapeReducesBroadcastDims()
    {
        var rng = new Random(12);
        var cases = new (int[] Grad, int[] Target)[]
        {
            ([2, 3, 4], [3, 4]), ([2, 3, 4], [1, 4]), ([2, 3, 4], [3, 1]), ([2, 3, 4], [1, 1, 1]),
            ([2, 3, 4], []), ([2, 3, 4], [2, 3, 4]), ([5], [1]), ([], []), ([3, 0], [1, 0]),
        };
        foreach (var (gs, target) in cases)
        {
            var g = Ref.Random(rng, Ref.Numel(gs), DType.Float64);
            using var tg = Layouts.Make(g, gs, DType.Float64, Layouts.Kind.Transposed);
            using var r = tg.SumToSize(target);
            Assert.That(r.Shape, Is.EqualTo(target));
            var expected = new double[Ref.Numel(target)];
            for (int f = 0; f < g.Length; f++)
            {
                var idx = Ref.Unravel(f, gs);
                int lead = gs.Length - target.Length;
                var ti = new int[target.Length];
                for (int i = 0; i < target.Length; i++) ti[i] = target[i] == 1 ? 0 : idx[lead + i];
                expected[Ref.Ravel(ti, target)] += g[f];
            }
            Ref.AssertClose(r.ToArray<double>(), expected, DType.Float64, $"SumToShape {Shape.Format(gs)} → {Shape.Format(target)}");
        }
        using var bad = Tensor.Ones([2, 3]);
        Assert.Throws<ShapeException>(() => bad.SumToSize([2, 3, 1]));
        Assert.Throws<ShapeException>(() => bad.SumToSize([2]));
    }

    // ---- gradients (float64 finite differences) ----

    static Tensor Leaf(Random rng, int[] shape, bool distinct = false)
    {
        var v = Ref.Random(rng, Ref.Numel(shape), DType.Float64, -2, 2);
        if (distinct)
        {
            // Well-separated values, so max/min and the ∞-norm are differentiable at the point.
            var order = Enumerable.Range(0, v.Length).OrderBy(_ => rng.Next()).ToArray();
            for (int i = 0; i < v.Length; i++) v[i] = (order[i] - v.Length / 2.0) * 0.37 + 0.05;
        }
        var t = Tensor.FromArray(v, shape);
        t.RequiresGrad = true;
        return t;
    }

    static readonly int[][] GradShapes = [[], [4], [3, 1], [2, 3], [2, 1, 3], [3, 2, 2]];

    static void GradCheckAllSubsets(string what, Func<Tensor, int[], bool, Tensor> f, bool distinct = false, int seed = 20, int minBlock = 0)
    {
        var rng = new Random(seed);
        foreach (var shape in GradShapes)
            foreach (var (dims, given) in DimSubsets(rng, shape.Length))
                foreach (var keepDim in new[] { false, true })
                {
                    // (The variance of fewer elements than its correction is NaN: no gradient to check.)
                    if (dims.Aggregate(1, (n, d) => n * shape[d]) < minBlock) continue;
                    using var x = Leaf(rng, shape, distinct);
                    var r = GradCheck.TryCheck(xs => f(xs[0], given, keepDim), [x]);
                    Assert.That(r.Passed, Is.True, $"{what} shape {Shape.Format(shape)} dims [{string.Join(", ", given)}] keepDim {keepDim}: {r.Message}");
                }
    }

    [Test]
    public void SumAndMeanGradients()
    {
        GradCheckAllSubsets("Sum", (x, d, k) => x.Sum(d, k));
        GradCheckAllSubsets("Mean", (x, d, k) => x.Mean(d, k));
        using var x = Leaf(new Random(21), [2, 3]);
        GradCheck.Check(xs => xs[0].Sum(), [x]);
        GradCheck.Check(xs => xs[0].Mean(-1), [x]);
    }

    [Test]
    public void VarGradients()
    {
        GradCheckAllSubsets("Var", (x, d, k) => x.Var(d, true, k), seed: 22, minBlock: 2);
        GradCheckAllSubsets("VarBiased", (x, d, k) => x.Var(d, false, k), seed: 23);
    }

    [Test]
    public void LogSumExpGradients() => GradCheckAllSubsets("LogSumExp", (x, d, k) => x.LogSumExp(d, k), seed: 24);

    [Test]
    public void NormGradients()
    {
        foreach (var p in new[] { 2.0, 1.0, 3.0, 1.5, 0.5 })
            GradCheckAllSubsets($"Norm p={p}", (x, d, k) => x.Norm(p, d, k), distinct: true, seed: 25);
        foreach (var p in new[] { double.PositiveInfinity, double.NegativeInfinity })
            GradCheckAllSubsets($"Norm p={p}", (x, d, k) => x.Norm(p, d, k), distinct: true, seed: 26);
    }

    [Test]
    public void MaxMinGradients()
    {
        var rng = new Random(27);
        foreach (var shape in GradShapes)
            for (int dim = -Math.Max(shape.Length, 1); dim < Math.Max(shape.Length, 1); dim++)
                foreach (var keepDim in new[] { false, true })
                {
                    using var x = Leaf(rng, shape, distinct: true);
                    int d = dim;
                    var rMax = GradCheck.TryCheck(xs => xs[0].Max(d, keepDim).Values, [x]);
                    var rMin = GradCheck.TryCheck(xs => xs[0].Min(d, keepDim).Values, [x]);
                    Assert.That(rMax.Passed, Is.True, $"Max {Shape.Format(shape)} dim {dim}: {rMax.Message}");
                    Assert.That(rMin.Passed, Is.True, $"Min {Shape.Format(shape)} dim {dim}: {rMin.Message}");
                }
        using var y = Leaf(rng, [3, 4], distinct: true);
        GradCheck.Check(xs => xs[0].Max(), [y]);
        GradCheck.Check(xs => xs[0].Min(), [y]);
    }

    [Test]
    public void MaxGradientGoesToTheReturnedIndexOrIsSharedAmongTies()
    {
        // max(dim): all of the gradient to the first maximum; max(): shared evenly among the tied maxima.
        using var x = Tensor.FromArray(new[] { 1.0, 3, 3, 2, 0, 2 }, [2, 3], requiresGrad: true);
        var (v, _) = x.Max(1);
        using var _v = v;
        using var s = v.Sum();
        s.Backward();
        Assert.That(x.Grad!.ToArray<double>(), Is.EqualTo(new double[] { 0, 1, 0, 1, 0, 0 }));
        x.Grad.Dispose(); x.Grad = null;

        using var m = x.Max();
        m.Backward();
        Assert.That(x.Grad!.ToArray<double>(), Is.EqualTo(new double[] { 0, 0.5, 0.5, 0, 0, 0 }));
        x.Grad.Dispose(); x.Grad = null;

        using var mn = x.Min(0).Values;
        using var ms = mn.Sum();
        ms.Backward();
        Assert.That(x.Grad!.ToArray<double>(), Is.EqualTo(new double[] { 1, 0, 0, 0, 1, 1 }));
        x.Grad.Dispose();
    }

    [Test]
    public void ReductionsAndTheirGradientsLeakNoStorage()
    {
        using var x = Leaf(new Random(28), [3, 4], distinct: true);
        var ops = new Func<Tensor, Tensor>[]
        {
            t => t.Sum(), t => t.Sum([0], true), t => t.Mean(1), t => t.Var(0), t => t.Var(), t => t.LogSumExp(1),
            t => t.Norm(), t => t.Norm(1, [1]), t => t.Norm(3, [0]), t => t.Norm(0.5), t => t.Norm(double.PositiveInfinity, [1]),
            t => t.Max(), t => t.Min(),
            t => { var (v, i) = t.Max(1); i.Dispose(); return v; },
            t => { var (v, i) = t.Min(0, true); i.Dispose(); return v; },
        };
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
        long before = Engine.Backends.Storage.LiveCount(DeviceType.Cpu);
        foreach (var op in ops)
        {
            using var y = op(x);
            using var s = y.Sum();
            s.Backward();
            x.Grad!.Dispose();
            x.Grad = null;
        }
        using (var a = x.ArgMax(1)) { }
        using (var i = Tensor.Ones([2, 3], DType.Int32))
        using (var si = i.Sum(0)) { }
        Assert.That(Engine.Backends.Storage.LiveCount(DeviceType.Cpu), Is.EqualTo(before));
    }

    [Test]
    public void GradientsOfLowPrecisionInputsKeepTheirDType()
    {
        foreach (var dt in new[] { DType.Float32, DType.Float16, DType.BFloat16 })
        {
            using var x0 = Tensor.FromArray(new[] { 1.0, -2, 3, 0.5, 4, -1 }, [2, 3]);
            using var x = x0.To(dt);
            x.RequiresGrad = true;
            using var y = x.Sum(1);
            using var z = y.Mean();
            z.Backward();
            Assert.That(x.Grad!.DType, Is.EqualTo(dt));
            Assert.That(x.Grad.ToArray<double>(), Is.All.EqualTo(0.5));
            x.Grad.Dispose();
        }
    }
}

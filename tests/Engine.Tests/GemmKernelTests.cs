using System.Runtime.InteropServices;
using Engine.Backends.Cpu.Gemm;
using Engine.Backends.Cpu;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>Tests of the CPU SGEMM/DGEMM kernels against a float64 triple loop.</summary>
[TestFixture]
public unsafe class GemmKernelTests
{
    /// <summary>How an operand is laid out in memory.</summary>
    public enum Layout
    {
        RowMajor,     // (i,j) at i*(cols+pad) + j
        ColMajor,     // transposed storage: (i,j) at j*(rows+pad) + i
        Strided,      // both strides non-unit: (i,j) at i*(2*cols+3) + j*2
        BroadcastRow, // row stride 0: every row is the same vector
        BroadcastCol, // column stride 0: every column is the same vector
    }

    public sealed record Case(int Batch, int M, int N, int K, Layout A, Layout B, bool SharedA, bool SharedB,
        int CPad, bool Accumulate, int Threads);

    private static (long rs, long cs, long size) Strides(Layout layout, int rows, int cols, int pad) => layout switch
    {
        Layout.RowMajor => (cols + pad, 1, (long)rows * (cols + pad)),
        Layout.ColMajor => (1, rows + pad, (long)cols * (rows + pad)),
        Layout.Strided => (2L * cols + 3, 2, (long)rows * (2L * cols + 3)),
        Layout.BroadcastRow => (0, 1, cols),
        Layout.BroadcastCol => (1, 0, rows),
        _ => throw new ArgumentOutOfRangeException(nameof(layout)),
    };

    private static readonly GemmKernelKind[] Kinds =
        new[] { GemmKernelKind.Vector512, GemmKernelKind.Vector256, GemmKernelKind.Scalar }
            .Where(GemmKernelSelection.IsSupported).ToArray();

    /// <summary>Operands, the reference result and the kernel result of one case.</summary>
    private sealed class Run<T> where T : unmanaged
    {
        public T[] A = [], B = [], C = [], C0 = [];
        public long[] AOff = [], BOff = [], COff = [];
        public long Ars, Acs, Brs, Bcs, Crs;
        public double[] Ref = [], Bound = [];
    }

    private static Run<T> Prepare<T>(Case t, int seed, bool reference = true) where T : unmanaged
    {
        var rng = new Random(seed);
        var r = new Run<T>();
        (r.Ars, r.Acs, long aSize) = Strides(t.A, t.M, t.K, 3);
        (r.Brs, r.Bcs, long bSize) = Strides(t.B, t.K, t.N, 5);
        r.Crs = t.N + t.CPad;
        long cSize = (long)t.M * r.Crs;
        r.AOff = new long[t.Batch]; r.BOff = new long[t.Batch]; r.COff = new long[t.Batch];
        for (int b = 0; b < t.Batch; b++)
        {
            r.AOff[b] = t.SharedA ? 7 : 7 + b * (aSize + 11);
            r.BOff[b] = t.SharedB ? 2 : 2 + b * (bSize + 13);
            r.COff[b] = 1 + b * (cSize + 17);
        }
        r.A = Fill<T>(rng, 7 + (t.SharedA ? 1 : t.Batch) * (aSize + 11) + 1, -1, 1);
        r.B = Fill<T>(rng, 2 + (t.SharedB ? 1 : t.Batch) * (bSize + 13) + 1, -1, 1);
        r.C = Fill<T>(rng, 1 + t.Batch * (cSize + 17) + 1, -4, 4);
        r.C0 = (T[])r.C.Clone();

        if (!reference) return r;
        r.Ref = new double[r.C.Length];
        r.Bound = new double[r.C.Length];
        for (int b = 0; b < t.Batch; b++)
            for (int i = 0; i < t.M; i++)
                for (int j = 0; j < t.N; j++)
                {
                    double sum = 0, abs = 0;
                    for (int p = 0; p < t.K; p++)
                    {
                        double x = D(r.A[r.AOff[b] + i * r.Ars + p * r.Acs]) * D(r.B[r.BOff[b] + p * r.Brs + j * r.Bcs]);
                        sum += x;
                        abs += Math.Abs(x);
                    }
                    long ci = r.COff[b] + i * r.Crs + j;
                    double c0 = t.Accumulate ? D(r.C0[ci]) : 0;
                    r.Ref[ci] = c0 + sum;
                    r.Bound[ci] = abs + Math.Abs(c0) + 1e-30;
                }
        return r;
    }

    private static double D<T>(T x) where T : unmanaged => typeof(T) == typeof(float) ? (float)(object)x : (double)(object)x;

    private static T[] Fill<T>(Random rng, long length, double lo, double hi) where T : unmanaged
    {
        var a = new T[length];
        for (long i = 0; i < length; i++)
        {
            double v = lo + (hi - lo) * rng.NextDouble();
            a[i] = typeof(T) == typeof(float) ? (T)(object)(float)v : (T)(object)v;
        }
        return a;
    }

    private static void Gemm<T>(Case t, Run<T> r, T[] c, int threads) where T : unmanaged
    {
        fixed (T* a = r.A, b = r.B, cp = c)
        {
            if (typeof(T) == typeof(float))
                Sgemm.Gemm(t.Batch, t.M, t.N, t.K, (float*)a, r.AOff, r.Ars, r.Acs, (float*)b, r.BOff, r.Brs, r.Bcs,
                    (float*)cp, r.COff, r.Crs, t.Accumulate, threads);
            else
                Dgemm.Gemm(t.Batch, t.M, t.N, t.K, (double*)a, r.AOff, r.Ars, r.Acs, (double*)b, r.BOff, r.Brs, r.Bcs,
                    (double*)cp, r.COff, r.Crs, t.Accumulate, threads);
        }
    }

    /// <summary>Runs the case with the given kernel and thread count, returning the whole C buffer.</summary>
    private static T[] Compute<T>(Case t, Run<T> r, GemmKernelKind kind, int threads) where T : unmanaged
    {
        var c = (T[])r.C0.Clone();
        using (CpuBackend.UseOptions(CpuBackend.Options with { Float32Gemm = kind })) Gemm(t, r, c, threads);
        return c;
    }

    private static void Check<T>(Case t, int seed) where T : unmanaged => Check(t, Prepare<T>(t, seed), GemmKernelKind.Auto);

    /// <summary>Runs the case and checks every C element: covered ones against the reference, the rest unchanged.</summary>
    private static void Check<T>(Case t, Run<T> r, GemmKernelKind kind) where T : unmanaged
    {
        var c = Compute(t, r, kind, t.Threads);

        double rel = typeof(T) == typeof(float) ? 1e-5 : 1e-13;
        var covered = new bool[c.Length];
        for (int b = 0; b < t.Batch; b++)
            for (int i = 0; i < t.M; i++)
                for (int j = 0; j < t.N; j++)
                    covered[r.COff[b] + i * r.Crs + j] = true;
        int bad = 0;
        string first = "";
        for (int x = 0; x < c.Length; x++)
        {
            bool ok = covered[x]
                ? Math.Abs(D(c[x]) - r.Ref[x]) <= rel * r.Bound[x]
                : D(c[x]).Equals(D(r.C0[x]));
            if (!ok && bad++ == 0) first = $"index {x}: got {D(c[x])}, want {(covered[x] ? r.Ref[x] : D(r.C0[x]))}";
        }
        Assert.That(bad, Is.Zero, $"{t} kernel {kind}: {bad} wrong elements, first {first}");
    }

    private static IEnumerable<Case> EdgeSizes()
    {
        int[] sizes = [0, 1, 7, 33, 100, 257];
        foreach (int m in sizes)
            foreach (int n in sizes)
                foreach (int k in new[] { 0, 1, 33, 257 })
                    yield return new Case(1, m, n, k, Layout.RowMajor, Layout.RowMajor, false, false, 0, false, 2);
    }

    [Test]
    public void EdgeSizesMatchReference()
    {
        foreach (var t in EdgeSizes())
        {
            Check<float>(t, 1);
            Check<double>(t, 2);
        }
    }

    [Test]
    public void RandomCasesMatchReferenceOnEveryKernel()
    {
        var rng = new Random(1234);
        var layouts = Enum.GetValues<Layout>();
        int[] dims = [0, 1, 2, 5, 6, 7, 16, 31, 33, 64, 100, 129];
        for (int iter = 0; iter < 60; iter++)
        {
            bool big = iter % 6 == 0;
            int Dim() => big ? rng.Next(60, 260) : dims[rng.Next(dims.Length)];
            var t = new Case(rng.Next(1, 5), Dim(), Dim(), Dim() + (big ? 200 : 0), layouts[rng.Next(layouts.Length)],
                layouts[rng.Next(layouts.Length)], rng.Next(3) == 0, rng.Next(3) == 0, rng.Next(3), rng.Next(2) == 0,
                rng.Next(0, 4));
            var rf = Prepare<float>(t, iter);
            var rd = Prepare<double>(t, iter + 1000);
            foreach (var kind in Kinds)
            {
                Check(t, rf, kind);
                Check(t, rd, kind);
            }
        }
    }

    [TestCase(Layout.RowMajor, Layout.RowMajor)]
    [TestCase(Layout.ColMajor, Layout.RowMajor)]
    [TestCase(Layout.RowMajor, Layout.ColMajor)]
    [TestCase(Layout.ColMajor, Layout.ColMajor)]
    [TestCase(Layout.Strided, Layout.Strided)]
    [TestCase(Layout.BroadcastRow, Layout.BroadcastCol)]
    [TestCase(Layout.BroadcastCol, Layout.BroadcastRow)]
    public void LargeStridedProductsMatchReference(Layout a, Layout b)
    {
        // Crosses several KC/MC blocks and has ragged edges in every dimension.
        Check<float>(new Case(1, 203, 301, 600, a, b, false, false, 3, true, 2), 7);
        Check<double>(new Case(2, 131, 77, 300, a, b, false, true, 1, false, 2), 8);
    }

    [Test]
    public void BatchedWithDistinctAndSharedOffsets()
    {
        Check<float>(new Case(64, 128, 128, 64, Layout.RowMajor, Layout.RowMajor, false, false, 0, false, 0), 3);
        Check<float>(new Case(5, 40, 70, 90, Layout.RowMajor, Layout.ColMajor, true, false, 2, true, 2), 4);
        Check<float>(new Case(3, 9, 300, 50, Layout.ColMajor, Layout.RowMajor, false, true, 0, false, 3), 5);
        Check<double>(new Case(7, 33, 17, 100, Layout.RowMajor, Layout.RowMajor, false, true, 1, true, 2), 6);
    }

    [Test]
    public void VectorTimesMatrixAndMatrixTimesVector()
    {
        Check<float>(new Case(1, 1, 3000, 700, Layout.RowMajor, Layout.RowMajor, false, false, 0, false, 2), 9);
        Check<float>(new Case(2, 3, 1000, 500, Layout.RowMajor, Layout.ColMajor, false, false, 0, true, 2), 10);
        Check<float>(new Case(1, 900, 1, 700, Layout.RowMajor, Layout.RowMajor, false, false, 0, false, 2), 11);
        // Dot-product paths: A rows and B columns contiguous, few rows or few columns.
        Check<float>(new Case(2, 2, 700, 301, Layout.RowMajor, Layout.ColMajor, false, false, 1, true, 2), 12);
        Check<float>(new Case(1, 1, 2000, 333, Layout.RowMajor, Layout.ColMajor, false, false, 0, false, 2), 13);
        Check<float>(new Case(1, 900, 1, 700, Layout.RowMajor, Layout.ColMajor, false, false, 0, false, 2), 14);
        Check<double>(new Case(3, 700, 3, 257, Layout.RowMajor, Layout.ColMajor, false, true, 0, true, 2), 15);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void ZeroDepthClearsOrKeepsC(bool accumulate)
    {
        var t = new Case(2, 5, 9, 0, Layout.RowMajor, Layout.RowMajor, false, false, 2, accumulate, 2);
        var r = Prepare<float>(t, 12);
        var c = (float[])r.C0.Clone();
        Gemm(t, r, c, 2);
        for (int b = 0; b < t.Batch; b++)
            for (int i = 0; i < t.M; i++)
                for (int j = 0; j < t.N; j++)
                {
                    long x = r.COff[b] + i * r.Crs + j;
                    Assert.That(c[x], Is.EqualTo(accumulate ? r.C0[x] : 0f));
                }
    }

    private static IEnumerable<Case> DeterminismCases()
    {
        yield return new Case(1, 517, 389, 700, Layout.RowMajor, Layout.RowMajor, false, false, 0, false, 1);
        yield return new Case(1, 300, 1100, 300, Layout.ColMajor, Layout.RowMajor, false, false, 1, true, 1);
        yield return new Case(3, 130, 70, 300, Layout.RowMajor, Layout.ColMajor, false, false, 0, false, 1);
        yield return new Case(1, 2, 5000, 400, Layout.RowMajor, Layout.RowMajor, false, false, 0, false, 1);
        yield return new Case(1, 5, 3000, 301, Layout.RowMajor, Layout.ColMajor, false, false, 0, false, 1);
        yield return new Case(1, 2, 3000, 300, Layout.RowMajor, Layout.ColMajor, false, false, 0, false, 1);
        yield return new Case(1, 1000, 3, 517, Layout.RowMajor, Layout.ColMajor, false, false, 0, true, 1);
        yield return new Case(64, 20, 30, 40, Layout.RowMajor, Layout.RowMajor, false, true, 0, false, 1);
    }

    [Test]
    public void ResultsAreBitIdenticalForAnyThreadCount()
    {
        foreach (var t in DeterminismCases())
        {
            var rf = Prepare<float>(t, 21, reference: false);
            var rd = Prepare<double>(t, 22, reference: false);
            foreach (var kind in Kinds)
            {
                var one = Compute(t, rf, kind, 1);
                var oneD = Compute(t, rd, kind, 1);
                foreach (int threads in new[] { 2, 3, 4, 0 })
                {
                    var many = Compute(t, rf, kind, threads);
                    var manyD = Compute(t, rd, kind, threads);
                    Assert.That(SameBits(many, one), Is.True, $"{t} float, {threads} threads, {kind}");
                    Assert.That(SameBits(manyD, oneD), Is.True, $"{t} double, {threads} threads, {kind}");
                }
            }
        }
    }

    private static bool SameBits<T>(T[] x, T[] y) where T : unmanaged
        => MemoryMarshal.AsBytes(x.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(y.AsSpan()));

    [Test]
    public void RejectsShortOffsetSpansAndNegativeSizes()
    {
        var a = new float[4];
        fixed (float* p = a)
        {
            float* q = p;
            Assert.Throws<ArgumentException>(() => Sgemm.Gemm(2, 1, 1, 1, q, new long[1], 1, 1, q, new long[2], 1, 1, q, new long[2], 1, false, 1));
            Assert.Throws<ArgumentOutOfRangeException>(() => Sgemm.Gemm(1, -1, 1, 1, q, new long[1], 1, 1, q, new long[1], 1, 1, q, new long[1], 1, false, 1));
        }
        // Nothing to do: no access at all, even through null pointers.
        Sgemm.Gemm(0, 5, 5, 5, null, default, 0, 0, null, default, 0, 0, null, default, 0, false, 1);
        Dgemm.Gemm(1, 0, 5, 5, null, new long[1], 0, 0, null, new long[1], 0, 0, null, new long[1], 0, false, 1);
    }
}

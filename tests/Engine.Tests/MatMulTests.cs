using Engine.Backends;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>MatMul (torch.matmul semantics) against a plain float64 triple loop.</summary>
public class MatMulTests
{
    static readonly DType[] FloatTypes = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];

    // Reference: broadcast batch dims by hand, 1-D operands promoted then squeezed, sums in float64.
    static (double[], int[]) Reference(double[] a, int[] sa, double[] b, int[] sb)
    {
        int[] a2 = sa.Length == 1 ? [1, sa[0]] : sa;
        int[] b2 = sb.Length == 1 ? [sb[0], 1] : sb;
        int m = a2[^2], k = a2[^1], n = b2[^1];
        var ba = a2[..^2]; var bb = b2[..^2];
        var batch = Ref.BroadcastShape(ba, bb);
        int nb = Ref.Numel(batch);
        var y = new double[nb * m * n];
        for (int bi = 0; bi < nb; bi++)
        {
            var idx = Ref.Unravel(bi, batch);
            int offA = 0, offB = 0;
            for (int d = 0; d < ba.Length; d++) offA = offA * ba[d] + (ba[d] == 1 ? 0 : idx[d + batch.Length - ba.Length]);
            for (int d = 0; d < bb.Length; d++) offB = offB * bb[d] + (bb[d] == 1 ? 0 : idx[d + batch.Length - bb.Length]);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double s = 0;
                    for (int p = 0; p < k; p++) s += a[offA * m * k + i * k + p] * b[offB * k * n + p * n + j];
                    y[(bi * m + i) * n + j] = s;
                }
        }
        var shape = new List<int>(batch);
        if (sa.Length > 1) shape.Add(m);
        if (sb.Length > 1) shape.Add(n);
        return (y, shape.ToArray());
    }

    static IEnumerable<TestCaseData> Shapes()
    {
        yield return new TestCaseData(new[] { 5 }, new[] { 5 });
        yield return new TestCaseData(new[] { 4 }, new[] { 4, 3 });
        yield return new TestCaseData(new[] { 3, 4 }, new[] { 4 });
        yield return new TestCaseData(new[] { 7, 9 }, new[] { 9, 5 });
        yield return new TestCaseData(new[] { 1, 1 }, new[] { 1, 1 });
        yield return new TestCaseData(new[] { 2, 3, 4 }, new[] { 4, 6 });
        yield return new TestCaseData(new[] { 3, 4 }, new[] { 2, 4, 5 });
        yield return new TestCaseData(new[] { 2, 1, 3, 4 }, new[] { 5, 4, 2 });
        yield return new TestCaseData(new[] { 2, 3, 4 }, new[] { 2, 4, 3 });
        yield return new TestCaseData(new[] { 4 }, new[] { 2, 4, 3 });
        yield return new TestCaseData(new[] { 0, 4 }, new[] { 4, 3 });
        yield return new TestCaseData(new[] { 3, 0 }, new[] { 0, 2 });
        yield return new TestCaseData(new[] { 33, 70 }, new[] { 70, 65 });
    }

    [TestCaseSource(nameof(Shapes))]
    public void MatchesReference(int[] sa, int[] sb)
    {
        var rng = new Random(sa.Sum() * 31 + sb.Sum());
        foreach (var dt in FloatTypes)
            foreach (var kind in Layouts.All)
            {
                var a = Ref.Random(rng, Ref.Numel(sa), dt);
                var b = Ref.Random(rng, Ref.Numel(sb), dt);
                using var ta = Layouts.Make(a, sa, dt, kind);
                using var tb = Layouts.Make(b, sb, dt, kind == Layouts.Kind.Transposed ? Layouts.Kind.Strided : Layouts.Kind.Transposed);
                using var y = ta.MatMul(tb);
                var (exp, shape) = Reference(a, sa, b, sb);
                Assert.That(y.Shape, Is.EqualTo(shape), $"{dt} {kind}");
                Assert.That(y.DType, Is.EqualTo(dt));
                int k = sa[^1];
                // Products of k terms: the tolerance grows with k for the float types (sums in float32).
                Ref.AssertClose(y.ToArray<double>(), exp, dt, $"matmul {dt} {kind}", scale: Math.Max(1, Math.Sqrt(k)));
            }
    }

    [Test]
    public void ExpandedOperandsAreReadInPlace()
    {
        var rng = new Random(3);
        var a = Ref.Random(rng, 12, DType.Float32);
        var b = Ref.Random(rng, 20, DType.Float32);
        using var ta = Tensor.FromArray(a.Select(v => (float)v).ToArray(), [1, 3, 4]);
        using var ea = ta.Expand(6, 3, 4);
        using var tb = Tensor.FromArray(b.Select(v => (float)v).ToArray(), [4, 5]);
        using var y = ea.MatMul(tb);
        var (exp1, _) = Reference(a, [3, 4], b, [4, 5]);
        var exp = Enumerable.Repeat(exp1, 6).SelectMany(x => x).ToArray();
        Ref.AssertClose(y.ToArray<double>(), exp, DType.Float32, "expanded");
    }

    /// <summary>
    /// y = a·b with a and/or b transposed views (y = x·Wᵀ, nn.Linear's form): the gradients equal dy·bᵀ and aᵀ·dy
    /// computed in float64 here, and a transposed leaf's gradient arrives contiguous, so backward makes no copy of it
    /// (the gradient is computed in the operand's own layout, as PyTorch's mm_mat2_backward).
    /// </summary>
    [TestCase(false, true, new[] { 5, 7 })]
    [TestCase(true, false, new[] { 5, 7 })]
    [TestCase(true, true, new[] { 5, 7 })]
    [TestCase(false, true, new[] { 2, 3, 7 })]
    public void TransposedOperands_GetTheirGradientsInTheirLayout(bool transposeA, bool transposeB, int[] sa)
    {
        var rng = new Random(11);
        int k = sa[^1], n = 6, m = sa.Length == 2 ? sa[0] : sa[0] * sa[1];
        var a = Ref.Random(rng, m * k, DType.Float64);
        var b = Ref.Random(rng, k * n, DType.Float64);
        var dy = Ref.Random(rng, m * n, DType.Float64);
        // Leaves stored as the transposed layouts; the product reads their transposes.
        using var aLeaf = transposeA ? Tensor.FromArray(Transposed(a, m, k), [k, m], requiresGrad: true) : Tensor.FromArray(a, sa, requiresGrad: true);
        using var bLeaf = transposeB ? Tensor.FromArray(Transposed(b, k, n), [n, k], requiresGrad: true) : Tensor.FromArray(b, [k, n], requiresGrad: true);
        using (var scope = Tensor.NewScope())
        {
            var av = transposeA ? aLeaf.Transpose(0, 1) : aLeaf;
            var bv = transposeB ? bLeaf.Transpose(0, 1) : bLeaf;
            var y = av.MatMul(bv);
            var g = Tensor.FromArray(dy, y.Shape);
            using var counts = KernelCounter.Begin();
            y.Backward(g);
            Assert.That(counts.Count(nameof(IBackend.Copy)), Is.Zero, "no copy of a transposed operand's gradient");
        }
        var da = new double[m * k];
        var db = new double[k * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                for (int p = 0; p < k; p++)
                {
                    da[i * k + p] += dy[i * n + j] * b[p * n + j];
                    db[p * n + j] += a[i * k + p] * dy[i * n + j];
                }
        Assert.That(aLeaf.Grad!.IsContiguous && bLeaf.Grad!.IsContiguous);
        Ref.AssertClose(aLeaf.Grad!.ToArray<double>(), transposeA ? Transposed(da, m, k) : da, DType.Float64, "da");
        Ref.AssertClose(bLeaf.Grad!.ToArray<double>(), transposeB ? Transposed(db, k, n) : db, DType.Float64, "db");
        aLeaf.Grad!.Dispose(); bLeaf.Grad!.Dispose();
    }

    // The [cols, rows] row-major copy of a [rows, cols] row-major matrix.
    static double[] Transposed(double[] x, int rows, int cols)
    {
        var t = new double[x.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = x[i * cols + j];
        return t;
    }

    [Test]
    public void IntegerMatMulIsExact()
    {
        using var a = Tensor.FromArray(new long[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        using var b = Tensor.FromArray(new long[] { 7, 8, 9, 10, 11, 12 }, [3, 2]);
        using var y = a.MatMul(b);
        Assert.That(y.DType, Is.EqualTo(DType.Int64));
        Assert.That(y.ToArray<long>(), Is.EqualTo(new long[] { 58, 64, 139, 154 }));
    }

    [Test]
    public void MismatchedInnerDimsThrowNamingShapes()
    {
        using var a = Tensor.Zeros([2, 3]);
        using var b = Tensor.Zeros([4, 5]);
        var e = Assert.Throws<ShapeException>(() => a.MatMul(b).Dispose())!;
        Assert.That(e.Message, Does.Contain("MatMul").And.Contain("[2, 3]").And.Contain("[4, 5]"));
        using var s = Tensor.Scalar(1);
        Assert.Throws<ShapeException>(() => s.MatMul(a).Dispose());
    }
}

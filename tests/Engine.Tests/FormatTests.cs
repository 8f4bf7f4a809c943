using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

// Expected strings are PyTorch's output for the same values (print options: precision 4, threshold 1000,
// edgeitems 3, linewidth 80), with dtypes named without the "torch." prefix.
public class FormatTests
{
    [Test]
    public void FloatMatrixPadsToOneWidth()
    {
        using var x = Tensor.FromArray(new[] { 0.1, -2, 3, 4 }, [2, 2]);
        Assert.That(x.ToString(), Is.EqualTo("tensor([[ 0.1000, -2.0000],\n        [ 3.0000,  4.0000]], dtype=float64)"));
        using var t = Layouts.Make([0.1, -2, 3, 4], [2, 2], DType.Float32, Layouts.Kind.Transposed);
        Assert.That(t.ToString(), Is.EqualTo("tensor([[ 0.1000, -2.0000],\n        [ 3.0000,  4.0000]])"), "logical order of a transposed view");
    }

    [Test]
    public void IntegralFloatsPrintWithATrailingPoint()
    {
        using var x = Tensor.FromArray(new float[] { 1, 2, 30 });
        Assert.That(x.ToString(), Is.EqualTo("tensor([ 1.,  2., 30.])"));
        using var z = Tensor.Zeros([2]);
        Assert.That(z.ToString(), Is.EqualTo("tensor([0., 0.])"));
        using var n = Tensor.FromArray(new float[] { 1, float.NaN, float.PositiveInfinity, float.NegativeInfinity });
        Assert.That(n.ToString(), Is.EqualTo("tensor([1., nan, inf, -inf])"));
        using var m = Tensor.FromArray(new float[] { 0.5f, float.NaN });
        Assert.That(m.ToString(), Is.EqualTo("tensor([0.5000,    nan])"));
    }

    [Test]
    public void ScientificWhenMagnitudesDemand()
    {
        using var small = Tensor.FromArray(new float[] { 1e-5f, 1 });
        Assert.That(small.ToString(), Is.EqualTo("tensor([1.0000e-05, 1.0000e+00])"));
        using var wide = Tensor.FromArray(new float[] { 1, 10000 });
        Assert.That(wide.ToString(), Is.EqualTo("tensor([1.0000e+00, 1.0000e+04])"));
        using var big = Tensor.FromArray(new[] { -1.5e9, 2.5e9 });
        Assert.That(big.ToString(), Is.EqualTo("tensor([-1.5000e+09,  2.5000e+09], dtype=float64)"));
        using var tiny = Tensor.FromArray(new[] { 1.23456e-300 });
        Assert.That(tiny.ToString(), Is.EqualTo("tensor([1.2346e-300], dtype=float64)"));
    }

    [Test]
    public void RoundingIsHalfToEvenOnTheExactValue()
    {
        // 0.03125 and 0.09375 are exact binary ties at 4 decimals; Python rounds them to even.
        using var x = Tensor.FromArray(new[] { 0.03125, 0.09375, 0.99999 });
        Assert.That(x.ToString(), Is.EqualTo("tensor([0.0312, 0.0938, 1.0000], dtype=float64)"));
        using var s = Tensor.FromArray(new[] { 9.99996e10, 0.5 });
        Assert.That(s.ToString(), Is.EqualTo("tensor([1.0000e+11, 5.0000e-01], dtype=float64)"));
    }

    [Test]
    public void IntegersAndBools()
    {
        using var x = Tensor.FromArray(new long[] { 1, -20, 300 });
        Assert.That(x.ToString(), Is.EqualTo("tensor([  1, -20, 300])"));
        using var i = Tensor.FromArray(new[] { 1, 2 });
        Assert.That(i.ToString(), Is.EqualTo("tensor([1, 2], dtype=int32)"));
        using var b = Tensor.FromArray(new[] { true, false, true });
        Assert.That(b.ToString(), Is.EqualTo("tensor([ True, False,  True])"));
        using var l = Tensor.FromArray(new[] { long.MaxValue });
        Assert.That(l.ToString(), Is.EqualTo("tensor([9223372036854775807])"));
    }

    [Test]
    public void ZeroDimAndEmpty()
    {
        using var a = Tensor.Scalar(3.5);
        Assert.That(a.ToString(), Is.EqualTo("tensor(3.5000)"));
        using var b = Tensor.Scalar(2);
        Assert.That(b.ToString(), Is.EqualTo("tensor(2.)"));
        using var c = Tensor.Scalar(7, DType.Int64);
        Assert.That(c.ToString(), Is.EqualTo("tensor(7)"));
        using var d = Tensor.Scalar(-0.5, DType.Float64);
        Assert.That(d.ToString(), Is.EqualTo("tensor(-0.5000, dtype=float64)"));
        using var e = Tensor.Zeros([0, 3]);
        Assert.That(e.ToString(), Is.EqualTo("tensor([], size=(0, 3))"));
        using var f = Tensor.Zeros([0]);
        Assert.That(f.ToString(), Is.EqualTo("tensor([])"));
        using var g = Tensor.Zeros([0], DType.Int64);
        Assert.That(g.ToString(), Is.EqualTo("tensor([], dtype=int64)"));
    }

    [Test]
    public void LargeTensorsAreSummarized()
    {
        using var v = Tensor.Arange(2000);
        Assert.That(v.ToString(), Is.EqualTo("tensor([   0,    1,    2,  ..., 1997, 1998, 1999])"));
        using var m = v.Reshape(40, 50);
        Assert.That(m.ToString(), Is.EqualTo(
            "tensor([[   0,    1,    2,  ...,   47,   48,   49],\n" +
            "        [  50,   51,   52,  ...,   97,   98,   99],\n" +
            "        [ 100,  101,  102,  ...,  147,  148,  149],\n" +
            "        ...,\n" +
            "        [1850, 1851, 1852,  ..., 1897, 1898, 1899],\n" +
            "        [1900, 1901, 1902,  ..., 1947, 1948, 1949],\n" +
            "        [1950, 1951, 1952,  ..., 1997, 1998, 1999]])"));
        using var small = Tensor.Arange(1000);
        Assert.That(small.ToString(), Does.Not.Contain("..."), "1000 elements print in full");

        using var a = Tensor.Arange(28);
        using var c = a.Reshape(7, 2, 2);
        Assert.That(c.ToString(10), Is.EqualTo(
            "tensor([[[ 0,  1],\n" +
            "         [ 2,  3]],\n\n" +
            "        [[ 4,  5],\n" +
            "         [ 6,  7]],\n\n" +
            "        [[ 8,  9],\n" +
            "         [10, 11]],\n\n" +
            "        ...,\n\n" +
            "        [[16, 17],\n" +
            "         [18, 19]],\n\n" +
            "        [[20, 21],\n" +
            "         [22, 23]],\n\n" +
            "        [[24, 25],\n" +
            "         [26, 27]]])"));
    }

    [Test]
    public void LongRowsWrapAtEightyColumns()
    {
        var values = new float[30];
        for (int i = 0; i < 30; i++) values[i] = i + 0.5f;
        using var x = Tensor.FromArray(values);
        var items = values.Select(v => v.ToString("F4", System.Globalization.CultureInfo.InvariantCulture).PadLeft(7)).ToArray();
        // (80 − 7) / (7 + 2) = 8 items per line.
        var lines = Enumerable.Range(0, 4).Select(l => string.Join(", ", items.Skip(8 * l).Take(8)));
        Assert.That(x.ToString(), Is.EqualTo("tensor([" + string.Join(",\n" + new string(' ', 8), lines) + "])"));

        using var d = Tensor.FromArray(new[] { 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5 });
        Assert.That(d.ToString(), Is.EqualTo("tensor([0.5000, 1.5000, 2.5000, 3.5000, 4.5000, 5.5000, 6.5000, 7.5000],\n       dtype=float64)"));
    }

    [Test]
    public void HalfTypesShowTheirDType()
    {
        using var x = Tensor.FromArray(new[] { 1.5f, -0.25f });
        using var b = x.To(DType.BFloat16);
        Assert.That(b.ToString(), Is.EqualTo("tensor([ 1.5000, -0.2500], dtype=bfloat16)"));
        using var h = x.To(DType.Float16);
        Assert.That(h.ToString(), Is.EqualTo("tensor([ 1.5000, -0.2500], dtype=float16)"));
    }

    [Test]
    public void AutogradSuffixesAndDisposed()
    {
        using var x = Tensor.FromArray(new float[] { 1, 2 }, requiresGrad: true);
        Assert.That(x.ToString(), Is.EqualTo("tensor([1., 2.], requires_grad=True)"));
        using var y = x.Mul(x);
        Assert.That(y.ToString(), Is.EqualTo("tensor([1., 4.], grad_fn=<MulBackward>)"));
        var z = Tensor.Zeros([2]);
        z.Dispose();
        Assert.That(z.ToString(), Is.EqualTo("tensor(<disposed>)"));
    }
}

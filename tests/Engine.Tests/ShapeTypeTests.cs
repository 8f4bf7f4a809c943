using NUnit.Framework;

namespace Engine.Tests;

/// <summary>The immutable <see cref="Shape"/> type and immutable <see cref="Layout"/>s: copies in, copies out, equality, formatting.</summary>
[TestFixture]
public class ShapeTypeTests
{
    [Test]
    public void ShapeCopiesWhatItIsGiven()
    {
        int[] dims = [2, 3];
        Shape s = dims;
        var t = new Shape(dims);
        dims[0] = 99;
        Assert.That(s[0], Is.EqualTo(2));
        Assert.That(t[0], Is.EqualTo(2));

        var copy = s.ToArray();
        copy[1] = 99;
        Assert.That(s[1], Is.EqualTo(3), "ToArray returns a copy");
    }

    [Test]
    public void LayoutCopiesWhatItIsGiven()
    {
        int[] shape = [2, 3];
        long[] strides = [3, 1];
        var l = new Layout(shape, strides, 0);
        shape[0] = 99; strides[0] = 99;
        Assert.That(l.Shape, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(l.Strides.ToArray(), Is.EqualTo(new long[] { 3, 1 }));
        Assert.That(l.IsContiguous, Is.True);

        var c = Layout.Contiguous(shape);
        shape[1] = 7;
        Assert.That(c.Shape, Is.EqualTo(new[] { 99, 3 }));
        Assert.That(() => new Layout([2, 3], [1], 0), Throws.ArgumentException, "one stride per dim");
    }

    [Test]
    public void TensorShapeIsReadOnly()
    {
        using var x = Tensor.Zeros([2, 3]);
        var s = x.Shape;
        Assert.That(s, Is.EqualTo(new[] { 2, 3 }));
        Assert.That(typeof(Tensor).GetProperty(nameof(Tensor.Shape))!.CanWrite, Is.False);
        Assert.That(typeof(Shape).GetProperty("Item")!.CanWrite, Is.False, "the indexer has no setter");
        Assert.That(typeof(Layout).GetProperty(nameof(Layout.Strides))!.PropertyType, Is.EqualTo(typeof(ReadOnlySpan<long>)));
        var a = s.ToArray(); a[0] = 5;
        Assert.That(x.Shape[0], Is.EqualTo(2));
        Assert.That(x.Shape, Is.EqualTo(x.Layout.Shape));
    }

    [Test]
    public void Equality()
    {
        Shape a = [2, 3], b = new[] { 2, 3 }, c = [3, 2];
        Assert.That(a == b, Is.True);
        Assert.That(a != c, Is.True);
        Assert.That(a.Equals((object)b), Is.True);
        Assert.That(a.GetHashCode(), Is.EqualTo(b.GetHashCode()));
        Assert.That(a.SequenceEqual([2, 3]), Is.True);
        Assert.That(a.SequenceEqual([2, 3, 1]), Is.False);
        Assert.That(default(Shape) == new Shape(), Is.True, "default is the 0-d shape");
        Assert.That(default(Shape) == Shape.Scalar, Is.True);
        Assert.That(default(Shape).Count, Is.Zero);
        Assert.That(new HashSet<Shape> { a, b, c }, Has.Count.EqualTo(2));
    }

    [Test]
    public void MembersAsTorchSize()
    {
        Shape s = [2, 3, 4];
        Assert.That(s.Count, Is.EqualTo(3));
        Assert.That(s.Rank, Is.EqualTo(3));
        Assert.That(s.Numel(), Is.EqualTo(24));
        Assert.That(default(Shape).Numel(), Is.EqualTo(1));
        Assert.That(s[1..], Is.EqualTo(new[] { 3, 4 }));
        Assert.That(s.AsSpan().ToArray(), Is.EqualTo(new[] { 2, 3, 4 }));
        Assert.That(() => s[3], Throws.TypeOf<ArgumentOutOfRangeException>());
        Assert.That(() => s[-1], Throws.TypeOf<ArgumentOutOfRangeException>(), "no negative indices, unlike Python");
        int sum = 0;
        foreach (var d in s) sum += d;
        Assert.That(sum, Is.EqualTo(9));
        Assert.That(s.ToList(), Is.EqualTo(new[] { 2, 3, 4 }));
    }

    [Test]
    public void Formatting()
    {
        Assert.That(new Shape(2, 3).ToString(), Is.EqualTo("[2, 3]"));
        Assert.That(default(Shape).ToString(), Is.EqualTo("[]"));
        Assert.That(Shape.Format([5]), Is.EqualTo("[5]"));
        using var x = Tensor.Zeros([4, 1]);
        Assert.That($"{x.Shape}", Is.EqualTo("[4, 1]"));
        Assert.That(Layout.Contiguous([2, 3]).ToString(), Is.EqualTo("shape [2, 3], strides [3, 1], offset 0"));
    }

    [Test]
    public void Conversions()
    {
        Shape s = new[] { 2, 3 };
        ReadOnlySpan<int> span = s;
        Assert.That(span.ToArray(), Is.EqualTo(new[] { 2, 3 }));
        Assert.That(Shape.Numel(s), Is.EqualTo(6), "a Shape passes where a span is taken");
        using var x = Tensor.Ones(s);
        using var y = Tensor.Zeros(x.Shape);
        using var z = y.Reshape(-1).Reshape(x.Shape);
        Assert.That(z.Shape, Is.EqualTo(s));
        using var w = Tensor.FromArray(new float[6], s);
        Assert.That(w.Shape, Is.EqualTo(new[] { 2, 3 }));
    }
}

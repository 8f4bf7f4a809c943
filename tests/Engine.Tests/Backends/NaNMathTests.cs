using System.Text.RegularExpressions;
using Engine.Backends.Cuda;
using Engine.Ops;
using NUnit.Framework;

namespace Engine.Tests.Backends;

/// <summary>
/// The shared NaN semantics (<see cref="NaNMath"/>) against .NET's IEEE 754-2019 functions, bit for bit over the
/// special values; and the PTX of the ops that use them, which must not fall back to PTX's NaN-ignoring
/// <c>max</c>/<c>min</c> instructions (ILGPU's CPU accelerator runs .NET code and cannot show that).
/// </summary>
[TestFixture]
public class NaNMathTests
{
    static readonly double[] Specials = [double.NaN, -double.NaN, double.PositiveInfinity, double.NegativeInfinity, 0.0, -0.0, 1, -1, 0.5, 2, -3, 1e-310, double.MaxValue];

    static bool Same(double a, double b) => double.IsNaN(a) ? double.IsNaN(b) : BitConverter.DoubleToInt64Bits(a) == BitConverter.DoubleToInt64Bits(b);

    [Test]
    public void MaximumMinimum_PropagateNaN_AndNumberFormsIgnoreIt_AsIeee()
    {
        foreach (var a in Specials)
            foreach (var b in Specials)
            {
                float fa = (float)a, fb = (float)b;
                string at = $"({a}, {b})";
                Assert.That(Same(NaNMath.Maximum(a, b), Math.Max(a, b)), $"Maximum{at}");
                Assert.That(Same(NaNMath.Minimum(a, b), Math.Min(a, b)), $"Minimum{at}");
                Assert.That(Same(NaNMath.MaximumNumber(a, b), double.MaxNumber(a, b)), $"MaximumNumber{at}");
                Assert.That(Same(NaNMath.MinimumNumber(a, b), double.MinNumber(a, b)), $"MinimumNumber{at}");
                Assert.That(Same(NaNMath.Maximum(fa, fb), MathF.Max(fa, fb)), $"Maximum(float){at}");
                Assert.That(Same(NaNMath.Minimum(fa, fb), MathF.Min(fa, fb)), $"Minimum(float){at}");
                Assert.That(Same(NaNMath.MaximumNumber(fa, fb), float.MaxNumber(fa, fb)), $"MaximumNumber(float){at}");
                Assert.That(Same(NaNMath.MinimumNumber(fa, fb), float.MinNumber(fa, fb)), $"MinimumNumber(float){at}");
            }
    }

    [Test]
    public void Clamp_PropagatesANaNBound_AndTakesHiWhenBoundsCross()
    {
        Assert.That(double.IsNaN(NaNMath.Clamp(1.0, double.NaN, 2)));
        Assert.That(double.IsNaN(NaNMath.Clamp(1.0, 0, double.NaN)));
        Assert.That(float.IsNaN(NaNMath.Clamp(float.NaN, 0f, 1f)));
        Assert.That(NaNMath.Clamp(0.5, 3, 2), Is.EqualTo(2));
        Assert.That(NaNMath.Clamp(-5f, float.NegativeInfinity, 1f), Is.EqualTo(-5f));
        var op = new ClampOp(double.NaN, 1);
        Assert.That(double.IsNaN(op.Apply(0.5)) && float.IsNaN(op.Apply(0.5f)), "ClampOp with a NaN bound");
    }

    [TestCase("Binary<MaximumOp, Narrow>")]
    [TestCase("Binary<MinimumOp, Narrow>")]
    [TestCase("Binary<MaximumOp, Wide>")]
    [TestCase("Binary<MinimumOp, Wide>")]
    [TestCase("Unary<ClampOp, Narrow>")]
    [TestCase("Unary<ClampOp, Wide>")]
    public void Ptx_SpellsOutTheNaNRule_InsteadOfPtxMaxMin(string kernel)
    {
        string ptx = PtxCompiler.Compile(KernelRegistry.Named(kernel));
        var bare = Regex.Matches(ptx, @"^\s*(max|min)\.(f32|f64|ftz\.f32)\b", RegexOptions.Multiline);
        Assert.That(bare, Is.Empty, $"{kernel} uses PTX's NaN-ignoring max/min: {string.Join("; ", bare.Select(m => m.Value.Trim()))}");
    }
}

using System.Globalization;
using System.Numerics;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using NUnit.Framework;

namespace Engine.Tests;

[TestFixture]
public class BFloat16Tests
{
    private const int Seed = 20240611;

    // ------------------------------------------------------------------ independent reference
    //
    // Magnitudes[i] is the value of the non-negative bfloat16 with bits i, computed from the format's definition
    // (exponent e, fraction m: e == 0 ? m * 2^-133 : (128 + m) * 2^(e - 134)); Magnitudes[0x7F80] = 2^128 stands in
    // for infinity, so the overflow rule falls out of round-to-nearest-even: MaxValue (0x7F7F) is odd, 0x7F80 even.
    private static readonly double[] Magnitudes = BuildMagnitudes();

    private static double[] BuildMagnitudes()
    {
        var table = new double[0x7F81];
        for (int i = 0; i < 0x7F80; i++)
        {
            int e = i >> 7;
            int m = i & 0x7F;
            table[i] = e == 0 ? Math.ScaleB(m, -133) : Math.ScaleB(128 + m, e - 134);
        }

        table[0x7F80] = Math.ScaleB(1.0, 128);
        return table;
    }

    /// <summary>Nearest bfloat16 to a non-NaN double, ties to even, by bracketing in the sorted table.</summary>
    private static ushort Reference(double x)
    {
        if (double.IsNaN(x))
        {
            throw new ArgumentException("NaN has no nearest value", nameof(x));
        }

        int sign = double.IsNegative(x) ? 0x8000 : 0;
        double a = Math.Abs(x);
        if (a >= Magnitudes[0x7F80])
        {
            return (ushort)(sign | 0x7F80);
        }

        int index = Array.BinarySearch(Magnitudes, a);
        if (index >= 0)
        {
            return (ushort)(sign | index);
        }

        int hi = ~index;
        int lo = hi - 1;
        double mid = (Magnitudes[lo] + Magnitudes[hi]) / 2; // exact: two adjacent 8-bit values
        int pick = a < mid ? lo : a > mid ? hi : ((lo & 1) == 0 ? lo : hi);
        return (ushort)(sign | pick);
    }

    /// <summary>The NaN rule: quiet bit set, sign and the top payload bits kept.</summary>
    private static ushort ExpectedNaNFromSingle(uint bits) => (ushort)((bits >> 16) | 0x0040);

    private static ushort ExpectedNaNFromDouble(ulong bits) =>
        (ushort)(((bits >> 48) & 0x8000) | 0x7FC0 | ((bits >> 45) & 0x7F));

    private static ushort ExpectedFromSingle(uint bits)
    {
        float f = BitConverter.UInt32BitsToSingle(bits);
        return float.IsNaN(f) ? ExpectedNaNFromSingle(bits) : Reference(f);
    }

    private static ushort ExpectedFromDouble(double d) =>
        double.IsNaN(d) ? ExpectedNaNFromDouble(BitConverter.DoubleToUInt64Bits(d)) : Reference(d);

    private static void AddFailure(List<string> failures, string message)
    {
        if (failures.Count < 20)
        {
            failures.Add(message);
        }
    }

    // Edge float bit patterns: every combination of an interesting upper half (the bf16 candidate) with an
    // interesting lower half (exact, just above/below/at the tie), both signs.
    private static uint[] EdgeFloatBits()
    {
        ushort[] upper =
        [
            0x0000, 0x0001, 0x0002, 0x0003, 0x007E, 0x007F, 0x0080, 0x0081, 0x00FF, 0x0100,
            0x3F7F, 0x3F80, 0x3F81, 0x3F82, 0x3FFF, 0x4000, 0x4049, 0x7F00, 0x7F7E, 0x7F7F,
            0x7F80, 0x7F81, 0x7FA0, 0x7FBF, 0x7FC0, 0x7FFF,
        ];
        ushort[] lower = [0x0000, 0x0001, 0x7FFE, 0x7FFF, 0x8000, 0x8001, 0xC000, 0xFFFF];
        var result = new List<uint>();
        foreach (ushort u in upper)
        {
            foreach (ushort l in lower)
            {
                uint bits = ((uint)u << 16) | l;
                result.Add(bits);
                result.Add(bits | 0x8000_0000u);
            }
        }

        result.Add(BitConverter.SingleToUInt32Bits(float.MaxValue));
        result.Add(BitConverter.SingleToUInt32Bits(float.Epsilon));
        result.Add(BitConverter.SingleToUInt32Bits(float.NaN));
        return [.. result];
    }

    private static uint[] RandomFloatBits(int count, int seed)
    {
        var bits = new uint[count];
        new Random(seed).NextBytes(MemoryMarshal.AsBytes(bits.AsSpan()));
        return bits;
    }

    // ------------------------------------------------------------------ layout and constants

    [Test]
    public void Layout_IsTwoBytes()
    {
        Assert.That(Unsafe.SizeOf<BFloat16>(), Is.EqualTo(2));
        Assert.That(Marshal.SizeOf<BFloat16>(), Is.EqualTo(2));
        Assert.That(BFloat16.FromBits(0xABCD).Bits, Is.EqualTo((ushort)0xABCD));
    }

    [Test]
    public void Constants_HaveExpectedBitsAndValues()
    {
        using (Assert.EnterMultipleScope())
        {
            Assert.That(BFloat16.Epsilon.Bits, Is.EqualTo((ushort)0x0001));
            Assert.That((double)BFloat16.Epsilon, Is.EqualTo(Math.ScaleB(1.0, -133)));
            Assert.That(BFloat16.MaxValue.Bits, Is.EqualTo((ushort)0x7F7F));
            Assert.That((double)BFloat16.MaxValue, Is.EqualTo((2 - Math.ScaleB(1.0, -7)) * Math.ScaleB(1.0, 127)));
            Assert.That(BFloat16.MinValue.Bits, Is.EqualTo((ushort)0xFF7F));
            Assert.That(BFloat16.NaN.Bits, Is.EqualTo((ushort)0x7FC0));
            Assert.That(BFloat16.PositiveInfinity.Bits, Is.EqualTo((ushort)0x7F80));
            Assert.That(BFloat16.NegativeInfinity.Bits, Is.EqualTo((ushort)0xFF80));
            Assert.That(BFloat16.NegativeZero.Bits, Is.EqualTo((ushort)0x8000));
            Assert.That(BFloat16.Zero.Bits, Is.EqualTo((ushort)0x0000));
            Assert.That(BFloat16.One.Bits, Is.EqualTo((ushort)0x3F80));
            Assert.That(BFloat16.NegativeOne.Bits, Is.EqualTo((ushort)0xBF80));
            Assert.That(BFloat16.E.Bits, Is.EqualTo(Reference(Math.E)));
            Assert.That(BFloat16.Pi.Bits, Is.EqualTo(Reference(Math.PI)));
            Assert.That(BFloat16.Tau.Bits, Is.EqualTo(Reference(Math.Tau)));
            Assert.That(BFloat16.AdditiveIdentity.Bits, Is.EqualTo((ushort)0));
            Assert.That(BFloat16.MultiplicativeIdentity.Bits, Is.EqualTo((ushort)0x3F80));
            Assert.That(BFloat16.BitIncrement(BFloat16.Zero).Bits, Is.EqualTo(BFloat16.Epsilon.Bits));
        }
    }

    // ------------------------------------------------------------------ float <-> bf16

    [Test]
    public void AllBitPatterns_RoundTripThroughSingleAndDouble()
    {
        var failures = new List<string>();
        int nanCount = 0;
        for (int i = 0; i <= 0xFFFF; i++)
        {
            BFloat16 b = BFloat16.FromBits((ushort)i);
            float f = (float)b;
            if (BitConverter.SingleToUInt32Bits(f) != (uint)i << 16)
            {
                AddFailure(failures, $"to float {i:X4}");
            }

            bool isNaN = (i & 0x7FFF) > 0x7F80;
            ushort expected = isNaN ? (ushort)(i | 0x0040) : (ushort)i; // NaN: quieted, sign and payload kept
            ushort viaSingle = ((BFloat16)f).Bits;
            ushort viaDouble = ((BFloat16)(double)b).Bits;
            if (viaSingle != expected || viaDouble != expected)
            {
                AddFailure(failures, $"{i:X4}: via float {viaSingle:X4}, via double {viaDouble:X4}, expected {expected:X4}");
            }

            if (isNaN)
            {
                nanCount++;
                if (!BFloat16.IsNaN((BFloat16)f) || BFloat16.IsNegative((BFloat16)f) != ((i & 0x8000) != 0))
                {
                    AddFailure(failures, $"{i:X4}: NaN lost or sign changed");
                }
            }
        }

        Assert.That(failures, Is.Empty);
        Assert.That(nanCount, Is.EqualTo(2 * 127));
    }

    [Test]
    public void FromSingle_EdgeCases_MatchReference()
    {
        var failures = new List<string>();
        foreach (uint bits in EdgeFloatBits())
        {
            ushort actual = ((BFloat16)BitConverter.UInt32BitsToSingle(bits)).Bits;
            ushort expected = ExpectedFromSingle(bits);
            if (actual != expected)
            {
                AddFailure(failures, $"{bits:X8}: got {actual:X4}, expected {expected:X4}");
            }
        }

        Assert.That(failures, Is.Empty);
    }

    [TestCase(0x0000_0000u, (ushort)0x0000, TestName = "FromSingle_Spot(+0)")]
    [TestCase(0x8000_0000u, (ushort)0x8000, TestName = "FromSingle_Spot(-0)")]
    [TestCase(0x3F80_8000u, (ushort)0x3F80, TestName = "FromSingle_Spot(tie 1+2^-8 to even 1)")]
    [TestCase(0x3F80_8001u, (ushort)0x3F81, TestName = "FromSingle_Spot(just above tie)")]
    [TestCase(0x3F81_8000u, (ushort)0x3F82, TestName = "FromSingle_Spot(tie up to even)")]
    [TestCase(0x3F81_7FFFu, (ushort)0x3F81, TestName = "FromSingle_Spot(just below tie)")]
    [TestCase(0x0000_8000u, (ushort)0x0000, TestName = "FromSingle_Spot(2^-134 tie to zero)")]
    [TestCase(0x0000_8001u, (ushort)0x0001, TestName = "FromSingle_Spot(above 2^-134 to Epsilon)")]
    [TestCase(0x0001_8000u, (ushort)0x0002, TestName = "FromSingle_Spot(subnormal tie to even)")]
    [TestCase(0x007F_8000u, (ushort)0x0080, TestName = "FromSingle_Spot(largest subnormal rounds to min normal)")]
    [TestCase(0x0000_0001u, (ushort)0x0000, TestName = "FromSingle_Spot(float.Epsilon to zero)")]
    [TestCase(0x7F7F_7FFFu, (ushort)0x7F7F, TestName = "FromSingle_Spot(below overflow midpoint)")]
    [TestCase(0x7F7F_8000u, (ushort)0x7F80, TestName = "FromSingle_Spot(overflow midpoint to Inf)")]
    [TestCase(0x7F7F_FFFFu, (ushort)0x7F80, TestName = "FromSingle_Spot(float.MaxValue to Inf)")]
    [TestCase(0xFF7F_8000u, (ushort)0xFF80, TestName = "FromSingle_Spot(negative overflow midpoint)")]
    [TestCase(0x7F80_0000u, (ushort)0x7F80, TestName = "FromSingle_Spot(+Inf)")]
    [TestCase(0xFF80_0000u, (ushort)0xFF80, TestName = "FromSingle_Spot(-Inf)")]
    [TestCase(0x7F80_0001u, (ushort)0x7FC0, TestName = "FromSingle_Spot(signaling NaN, low payload)")]
    [TestCase(0xFF80_0001u, (ushort)0xFFC0, TestName = "FromSingle_Spot(negative signaling NaN)")]
    [TestCase(0x7FA0_0000u, (ushort)0x7FE0, TestName = "FromSingle_Spot(signaling NaN payload kept)")]
    [TestCase(0xFFC0_0000u, (ushort)0xFFC0, TestName = "FromSingle_Spot(default x86 NaN)")]
    [TestCase(0x7FFF_FFFFu, (ushort)0x7FFF, TestName = "FromSingle_Spot(all-ones NaN)")]
    public void FromSingle_Spot(uint floatBits, ushort expected)
    {
        ushort actual = ((BFloat16)BitConverter.UInt32BitsToSingle(floatBits)).Bits;
        Assert.That(actual, Is.EqualTo(expected));
        if ((floatBits & 0x7FFF_FFFFu) <= 0x7F80_0000u)
        {
            Assert.That(Reference(BitConverter.UInt32BitsToSingle(floatBits)), Is.EqualTo(expected), "reference agrees");
        }
    }

    [Test]
    public void FromSingle_RandomBitPatterns_MatchReference()
    {
        uint[] random = RandomFloatBits(3_000_000, Seed);
        var rng = new Random(Seed + 1);
        var failures = new List<string>();
        int nanSeen = 0;
        for (int i = 0; i < random.Length; i++)
        {
            uint bits = random[i];
            if (i % 3 == 0)
            {
                bits = (bits & 0xFFFF_0000u) | (uint)(0x8000 + rng.Next(-2, 3)); // at or next to a tie
            }

            ushort actual = ((BFloat16)BitConverter.UInt32BitsToSingle(bits)).Bits;
            ushort expected = ExpectedFromSingle(bits);
            if (actual != expected)
            {
                AddFailure(failures, $"{bits:X8}: got {actual:X4}, expected {expected:X4}");
            }

            nanSeen += (bits & 0x7FFF_FFFFu) > 0x7F80_0000u ? 1 : 0;
        }

        Assert.That(failures, Is.Empty);
        Assert.That(nanSeen, Is.GreaterThan(0), "random set includes NaNs");
    }

    // ------------------------------------------------------------------ double -> bf16

    private static double[] EdgeDoubles()
    {
        double two = 2.0;
        var list = new List<double>
        {
            0.0, -0.0, double.Epsilon, -double.Epsilon, double.MaxValue, double.MinValue,
            double.PositiveInfinity, double.NegativeInfinity, 1.0, -1.0, 0.5,
            Math.ScaleB(1.0, -133), Math.ScaleB(1.0, -134), Math.ScaleB(1.0, -135), Math.ScaleB(1.0, -126),
            Math.ScaleB(1.0, 127), Math.ScaleB(1.0, 128), Math.ScaleB(1.0, -149), Math.ScaleB(1.0, -150),
            float.MaxValue, float.Epsilon, Math.ScaleB(1.0, -1022), Math.ScaleB(1.0, 1023),
            (double)BFloat16.MaxValue + Math.ScaleB(1.0, 119), // overflow midpoint: ties to Inf
            1.0 + Math.ScaleB(1.0, -8), 1.0 + Math.ScaleB(3.0, -8), 3.0 * Math.ScaleB(1.0, -134),
            Math.ScaleB(255.0, -134), Math.ScaleB(1.0, -126) - Math.ScaleB(1.0, -134), two / 3,
            BitConverter.UInt64BitsToDouble(0x7FF0_0000_0000_0001UL), BitConverter.UInt64BitsToDouble(0xFFF4_0000_0000_0000UL),
            BitConverter.UInt64BitsToDouble(0x7FF8_0000_0000_0000UL), BitConverter.UInt64BitsToDouble(0xFFFF_FFFF_FFFF_FFFFUL),
            BitConverter.UInt64BitsToDouble(0x7FFF_F000_0000_0000UL), double.NaN,
        };
        var result = new List<double>();
        foreach (double d in list)
        {
            result.Add(d);
            result.Add(-d);
            if (double.IsFinite(d))
            {
                result.Add(Math.BitIncrement(d));
                result.Add(Math.BitDecrement(d));
            }
        }

        // Every bf16 midpoint's double neighbours for a spread of exponents.
        for (int b = 0; b < 0x7F80; b += 97)
        {
            double mid = (Magnitudes[b] + Magnitudes[b + 1]) / 2;
            result.Add(mid);
            result.Add(Math.BitIncrement(mid));
            result.Add(Math.BitDecrement(mid));
        }

        return [.. result];
    }

    [Test]
    public void FromDouble_EdgeCases_MatchReference()
    {
        var failures = new List<string>();
        foreach (double d in EdgeDoubles())
        {
            ushort actual = ((BFloat16)d).Bits;
            ushort expected = ExpectedFromDouble(d);
            if (actual != expected)
            {
                AddFailure(failures, $"{BitConverter.DoubleToUInt64Bits(d):X16} ({d:R}): got {actual:X4}, expected {expected:X4}");
            }
        }

        Assert.That(failures, Is.Empty);
        Assert.That(((BFloat16)((double)BFloat16.MaxValue + Math.ScaleB(1.0, 119))).Bits, Is.EqualTo((ushort)0x7F80));
        Assert.That(((BFloat16)Math.BitDecrement((double)BFloat16.MaxValue + Math.ScaleB(1.0, 119))).Bits, Is.EqualTo((ushort)0x7F7F));
        Assert.That(((BFloat16)Math.ScaleB(1.0, -134)).Bits, Is.EqualTo((ushort)0x0000));
        Assert.That(((BFloat16)Math.BitIncrement(Math.ScaleB(1.0, -134))).Bits, Is.EqualTo((ushort)0x0001));
        Assert.That(((BFloat16)(-double.Epsilon)).Bits, Is.EqualTo((ushort)0x8000));
        Assert.That(((BFloat16)BitConverter.UInt64BitsToDouble(0xFFF4_0000_0000_0000UL)).Bits, Is.EqualTo((ushort)0xFFE0));
    }

    [Test]
    public void FromDouble_RandomValues_MatchReference()
    {
        const int Count = 1_000_000;
        var rng = new Random(Seed + 2);
        var failures = new List<string>();
        int doubleRoundingCases = 0;
        for (int i = 0; i < Count; i++)
        {
            ulong signBit = (ulong)rng.Next(2) << 63;
            double d;
            switch (i & 3)
            {
                case 0: // any bit pattern
                    d = BitConverter.UInt64BitsToDouble((ulong)rng.NextInt64() ^ signBit);
                    break;
                case 1: // exponents across and around the bf16 range, subnormal results included
                    {
                        ulong exponent = (ulong)rng.Next(1023 - 140, 1023 + 131);
                        ulong mantissa = (ulong)rng.NextInt64() & 0x000F_FFFF_FFFF_FFFFUL;
                        d = BitConverter.UInt64BitsToDouble(signBit | (exponent << 52) | mantissa);
                        break;
                    }

                case 2: // within a few double ulps of a bf16 midpoint: the double-rounding hazard
                    {
                        int b = rng.Next(0, 0x7F80);
                        double mid = (Magnitudes[b] + Magnitudes[b + 1]) / 2;
                        int k = rng.Next(-3, 4);
                        for (; k > 0; k--)
                        {
                            mid = Math.BitIncrement(mid);
                        }

                        for (; k < 0; k++)
                        {
                            mid = Math.BitDecrement(mid);
                        }

                        d = signBit != 0 ? -mid : mid;
                        break;
                    }

                default: // tiny: double subnormals up to bf16 subnormals
                    {
                        ulong exponent = (ulong)rng.Next(0, 1023 - 120);
                        ulong mantissa = (ulong)rng.NextInt64() & 0x000F_FFFF_FFFF_FFFFUL;
                        d = BitConverter.UInt64BitsToDouble(signBit | (exponent << 52) | mantissa);
                        break;
                    }
            }

            ushort actual = ((BFloat16)d).Bits;
            ushort expected = ExpectedFromDouble(d);
            if (actual != expected)
            {
                AddFailure(failures, $"{BitConverter.DoubleToUInt64Bits(d):X16}: got {actual:X4}, expected {expected:X4}");
            }

            if (!double.IsNaN(d) && ((BFloat16)(float)d).Bits != expected)
            {
                doubleRoundingCases++;
            }
        }

        Assert.That(failures, Is.Empty);
        Assert.That(doubleRoundingCases, Is.GreaterThan(1000), "the set must contain values that double rounding gets wrong");
    }

    [Test]
    public void FromDouble_RoundsOnce_WhereViaSingleWouldDoubleRound()
    {
        double d = 1.0 + Math.ScaleB(1.0, -8) + Math.ScaleB(1.0, -40); // just above the midpoint of 1 and 1+2^-7
        float viaSingle = (float)d; // rounds to exactly the midpoint 1 + 2^-8
        using (Assert.EnterMultipleScope())
        {
            Assert.That((double)viaSingle, Is.EqualTo(1.0 + Math.ScaleB(1.0, -8)));
            Assert.That(((BFloat16)d).Bits, Is.EqualTo((ushort)0x3F81));
            Assert.That(Reference(d), Is.EqualTo((ushort)0x3F81));
            Assert.That(((BFloat16)viaSingle).Bits, Is.EqualTo((ushort)0x3F80), "double rounding (ties to even) goes down");
        }
    }

    // ------------------------------------------------------------------ bulk conversions

    private delegate void FromSinglePath(ReadOnlySpan<uint> source, Span<ushort> destination);

    private delegate void ToSinglePath(ReadOnlySpan<ushort> source, Span<uint> destination);

    private static readonly int[] BulkLengths = [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 1_000_003];

    private static T PrivatePath<T>(string name) where T : Delegate =>
        typeof(BFloat16).GetMethod(name, BindingFlags.NonPublic | BindingFlags.Static)!.CreateDelegate<T>();

    private static IEnumerable<(string Name, FromSinglePath Run)> FromSinglePaths()
    {
        yield return ("public", (s, d) => BFloat16.ConvertFromSingle(MemoryMarshal.Cast<uint, float>(s), MemoryMarshal.Cast<ushort, BFloat16>(d)));
        yield return ("Vector512", PrivatePath<FromSinglePath>("FromSingle512"));
        yield return ("Vector256", PrivatePath<FromSinglePath>("FromSingle256"));
    }

    private static IEnumerable<(string Name, ToSinglePath Run)> ToSinglePaths()
    {
        yield return ("public", (s, d) => BFloat16.ConvertToSingle(MemoryMarshal.Cast<ushort, BFloat16>(s), MemoryMarshal.Cast<uint, float>(d)));
        yield return ("Vector512", PrivatePath<ToSinglePath>("ToSingle512"));
        yield return ("Vector256", PrivatePath<ToSinglePath>("ToSingle256"));
    }

    [Test]
    public void ConvertFromSingle_AllPaths_MatchScalarBitForBit()
    {
        uint[] edges = EdgeFloatBits();
        uint[] random = RandomFloatBits(4_000_037, Seed + 3);
        edges.CopyTo(random, 0);
        edges.CopyTo(random, random.Length - edges.Length);
        var tieRng = new Random(Seed + 4);
        for (int i = edges.Length; i < random.Length - edges.Length; i += 5)
        {
            random[i] = (random[i] & 0xFFFF_0000u) | 0x8000u; // exact ties
        }

        var expected = new ushort[random.Length];
        for (int i = 0; i < random.Length; i++)
        {
            expected[i] = ((BFloat16)BitConverter.UInt32BitsToSingle(random[i])).Bits;
        }

        var failures = new List<string>();
        var actual = new ushort[random.Length + 1];
        foreach ((string name, FromSinglePath run) in FromSinglePaths())
        {
            Array.Fill(actual, (ushort)0xDEAD);
            run(random, actual.AsSpan(0, random.Length));
            if (!actual.AsSpan(0, random.Length).SequenceEqual(expected))
            {
                int at = actual.AsSpan(0, random.Length).CommonPrefixLength(expected);
                AddFailure(failures, $"{name} full: first mismatch at {at} ({random[at]:X8}: {actual[at]:X4} vs {expected[at]:X4})");
            }

            foreach (int length in BulkLengths)
            {
                int offset = length < 1_000_000 ? tieRng.Next(0, 64) : 1; // unaligned starts too
                Array.Fill(actual, (ushort)0xDEAD);
                run(random.AsSpan(offset, length), actual.AsSpan(0, length + 1));
                if (!actual.AsSpan(0, length).SequenceEqual(expected.AsSpan(offset, length)) || actual[length] != 0xDEAD)
                {
                    AddFailure(failures, $"{name} length {length} offset {offset}");
                }
            }
        }

        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void ConvertToSingle_AllPatterns_AllPaths_MatchScalar()
    {
        var all = new ushort[0x10000 + 64];
        for (int i = 0; i < all.Length; i++)
        {
            all[i] = (ushort)i;
        }

        var expected = new uint[all.Length];
        for (int i = 0; i < all.Length; i++)
        {
            expected[i] = BitConverter.SingleToUInt32Bits((float)BFloat16.FromBits(all[i]));
        }

        var big = new ushort[1_000_003];
        new Random(Seed + 5).NextBytes(MemoryMarshal.AsBytes(big.AsSpan()));
        var bigExpected = new uint[big.Length];
        for (int i = 0; i < big.Length; i++)
        {
            bigExpected[i] = (uint)big[i] << 16;
        }

        var failures = new List<string>();
        var actual = new uint[big.Length + 1];
        foreach ((string name, ToSinglePath run) in ToSinglePaths())
        {
            run(all.AsSpan(0, 0x10000), actual);
            if (!actual.AsSpan(0, 0x10000).SequenceEqual(expected.AsSpan(0, 0x10000)))
            {
                AddFailure(failures, $"{name}: all patterns");
            }

            foreach (int length in BulkLengths)
            {
                bool isBig = length > 0x10000;
                int offset = isBig ? 0 : length % 7;
                Array.Fill(actual, 0xDEADBEEFu);
                ReadOnlySpan<ushort> src = isBig ? big : all.AsSpan(offset, length);
                ReadOnlySpan<uint> want = isBig ? bigExpected : expected.AsSpan(offset, length);
                run(src, actual.AsSpan(0, length + 1));
                if (!actual.AsSpan(0, length).SequenceEqual(want) || actual[length] != 0xDEADBEEFu)
                {
                    AddFailure(failures, $"{name} length {length}");
                }
            }
        }

        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void BulkConversions_ThrowWhenDestinationTooShort()
    {
        Assert.Throws<ArgumentException>(() => BFloat16.ConvertFromSingle(new float[3], new BFloat16[2]));
        Assert.Throws<ArgumentException>(() => BFloat16.ConvertToSingle(new BFloat16[3], new float[2]));
        Assert.DoesNotThrow(() => BFloat16.ConvertToSingle(new BFloat16[3], new float[4]));
    }

    // ------------------------------------------------------------------ comparisons, equality, hashing

    private static BFloat16[] SpecialValues() =>
    [
        BFloat16.NaN, BFloat16.FromBits(0xFFC0), BFloat16.FromBits(0x7F81), BFloat16.NegativeInfinity, BFloat16.MinValue,
        BFloat16.NegativeOne, (BFloat16)(-0.5f), -BFloat16.Epsilon, BFloat16.NegativeZero, BFloat16.Zero, BFloat16.Epsilon,
        BFloat16.FromBits(0x007F), BFloat16.FromBits(0x0080), (BFloat16)0.5f, BFloat16.One, BFloat16.FromBits(0x3F81),
        BFloat16.Pi, BFloat16.MaxValue, BFloat16.PositiveInfinity,
    ];

    [Test]
    public void ComparisonOperators_FollowIeee()
    {
        BFloat16[] values = SpecialValues();
        var failures = new List<string>();
        foreach (BFloat16 a in values)
        {
            foreach (BFloat16 b in values)
            {
                float fa = (float)a;
                float fb = (float)b;
                bool ok = (a == b) == (fa == fb) && (a != b) == (fa != fb) && (a < b) == (fa < fb)
                    && (a <= b) == (fa <= fb) && (a > b) == (fa > fb) && (a >= b) == (fa >= fb);
                if (!ok)
                {
                    AddFailure(failures, $"{a.Bits:X4} vs {b.Bits:X4}");
                }
            }
        }

        Assert.That(failures, Is.Empty);
        BFloat16 nan = BFloat16.NaN;
        BFloat16 sameNaN = BFloat16.FromBits(0x7FC0);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(nan == sameNaN, Is.False);
            Assert.That(nan != sameNaN, Is.True);
            Assert.That(nan < BFloat16.One || nan >= BFloat16.One, Is.False);
            Assert.That(BFloat16.NegativeZero == BFloat16.Zero, Is.True);
            Assert.That(BFloat16.NegativeZero < BFloat16.Zero, Is.False);
            Assert.That(-BFloat16.Epsilon < BFloat16.NegativeZero, Is.True);
        }
    }

    [Test]
    public void EqualsCompareToAndHashCode_FollowHalfRules()
    {
        BFloat16[] values = SpecialValues();
        var failures = new List<string>();
        foreach (BFloat16 a in values)
        {
            foreach (BFloat16 b in values)
            {
                // Half's rules are float's rules; bf16 -> float and bf16 -> Half (for these values) preserve them.
                float fa = (float)a;
                float fb = (float)b;
                bool equals = fa.Equals(fb);
                int compare = Math.Sign(fa.CompareTo(fb));
                if (a.Equals(b) != equals || a.Equals((object)b) != equals || Math.Sign(a.CompareTo(b)) != compare
                    || Math.Sign(a.CompareTo((object)b)) != compare)
                {
                    AddFailure(failures, $"{a.Bits:X4} vs {b.Bits:X4}");
                }

                if (a.Equals(b) && a.GetHashCode() != b.GetHashCode())
                {
                    AddFailure(failures, $"hash {a.Bits:X4} vs {b.Bits:X4}");
                }
            }
        }

        Assert.That(failures, Is.Empty);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(BFloat16.NaN.Equals(BFloat16.FromBits(0xFFFF)), Is.True);
            Assert.That(BFloat16.NegativeZero.Equals(BFloat16.Zero), Is.True);
            Assert.That(BFloat16.NaN.CompareTo(BFloat16.NegativeInfinity), Is.LessThan(0));
            Assert.That(BFloat16.NaN.CompareTo(BFloat16.FromBits(0xFF81)), Is.Zero);
            Assert.That(BFloat16.NegativeZero.CompareTo(BFloat16.Zero), Is.Zero);
            Assert.That(BFloat16.One.CompareTo(null), Is.GreaterThan(0));
            Assert.That(BFloat16.One.Equals((object)1.0f), Is.False);
            Assert.That(BFloat16.NegativeZero.GetHashCode(), Is.EqualTo(BFloat16.Zero.GetHashCode()));
        }

        Assert.Throws<ArgumentException>(() => BFloat16.One.CompareTo((object)1.0f));

        // Every NaN pattern hashes alike; sorting puts NaN first like Half.
        var nanHashes = new HashSet<int>();
        for (int i = 0; i <= 0xFFFF; i++)
        {
            if ((i & 0x7FFF) > 0x7F80)
            {
                nanHashes.Add(BFloat16.FromBits((ushort)i).GetHashCode());
            }
        }

        Assert.That(nanHashes, Has.Count.EqualTo(1));
        BFloat16[] sorted = [BFloat16.One, BFloat16.NaN, BFloat16.NegativeInfinity, BFloat16.Zero];
        Array.Sort(sorted);
        Assert.That(sorted.Select(x => x.Bits), Is.EqualTo(new ushort[] { 0x7FC0, 0xFF80, 0x0000, 0x3F80 }));
    }

    [Test]
    public void Classification_CountsOverAllPatterns()
    {
        var failures = new List<string>();
        int normal = 0, subnormal = 0, zero = 0, infinity = 0, nan = 0, finite = 0, negative = 0;
        for (int i = 0; i <= 0xFFFF; i++)
        {
            BFloat16 b = BFloat16.FromBits((ushort)i);
            float f = (float)b;
            normal += BFloat16.IsNormal(b) ? 1 : 0;
            subnormal += BFloat16.IsSubnormal(b) ? 1 : 0;
            zero += BFloat16.IsZero(b) ? 1 : 0;
            infinity += BFloat16.IsInfinity(b) ? 1 : 0;
            nan += BFloat16.IsNaN(b) ? 1 : 0;
            finite += BFloat16.IsFinite(b) ? 1 : 0;
            negative += BFloat16.IsNegative(b) ? 1 : 0;
            if (BFloat16.IsNormal(b) != float.IsNormal(f) || BFloat16.IsSubnormal(b) != float.IsSubnormal(f)
                || BFloat16.IsInteger(b) != float.IsInteger(f) || BFloat16.IsPow2(b) != float.IsPow2(f)
                || BFloat16.IsPositiveInfinity(b) != float.IsPositiveInfinity(f))
            {
                AddFailure(failures, $"{i:X4}");
            }
        }

        Assert.That(failures, Is.Empty);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(normal, Is.EqualTo(2 * 254 * 128));
            Assert.That(subnormal, Is.EqualTo(2 * 127));
            Assert.That(zero, Is.EqualTo(2));
            Assert.That(infinity, Is.EqualTo(2));
            Assert.That(nan, Is.EqualTo(2 * 127));
            Assert.That(finite, Is.EqualTo(normal + subnormal + zero));
            Assert.That(negative, Is.EqualTo(0x8000));
            Assert.That(BFloat16.IsPow2(BFloat16.Epsilon), Is.True);
            Assert.That(BFloat16.IsPow2(BFloat16.FromBits(0x0003)), Is.False);
        }
    }

    // ------------------------------------------------------------------ generic math

    private static T HypotGeneric<T>(T x, T y) where T : IBinaryFloatingPointIeee754<T> => T.Sqrt((x * x) + (y * y));

    private static T ExpGeneric<T>(T x) where T : IBinaryFloatingPointIeee754<T> => T.Exp(x);

    private static T SumGeneric<T>(IEnumerable<T> values) where T : INumber<T>
    {
        T sum = T.Zero;
        foreach (T v in values)
        {
            sum += v;
        }

        return sum;
    }

    private static T CreateSaturatingGeneric<T>(BFloat16 value) where T : INumberBase<T> => T.CreateSaturating(value);

    private static int SignificandBits<T>(T x) where T : IFloatingPoint<T> => x.GetSignificandBitLength();

    [Test]
    public void GenericMath_BasicFunctions()
    {
        BFloat16 three = (BFloat16)3.0f;
        BFloat16 four = (BFloat16)4.0f;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(HypotGeneric(three, four).Bits, Is.EqualTo(((BFloat16)5.0f).Bits));
            Assert.That(ExpGeneric(BFloat16.One).Bits, Is.EqualTo(BFloat16.E.Bits));
            Assert.That(ExpGeneric(BFloat16.Zero).Bits, Is.EqualTo(BFloat16.One.Bits));
            Assert.That(SumGeneric(Enumerable.Repeat(BFloat16.One, 300)).Bits, Is.EqualTo(((BFloat16)256.0f).Bits), "bf16 accumulation stalls at 256");
            Assert.That(SignificandBits(BFloat16.One), Is.EqualTo(8));
            Assert.That(BFloat16.IsNaN(BFloat16.Sqrt((BFloat16)(-1.0f))), Is.True);
            Assert.That(BFloat16.Max(BFloat16.NaN, BFloat16.One).Bits, Is.EqualTo(BFloat16.NaN.Bits));
            Assert.That(BFloat16.MaxNumber(BFloat16.NaN, BFloat16.One).Bits, Is.EqualTo(BFloat16.One.Bits));
            Assert.That(BFloat16.Min(BFloat16.Zero, BFloat16.NegativeZero).Bits, Is.EqualTo((ushort)0x8000));
            Assert.That(BFloat16.Max(BFloat16.NegativeZero, BFloat16.Zero).Bits, Is.EqualTo((ushort)0x0000));
            Assert.That(BFloat16.Abs(BFloat16.NegativeInfinity).Bits, Is.EqualTo((ushort)0x7F80));
            Assert.That(BFloat16.CopySign(BFloat16.One, BFloat16.NegativeZero).Bits, Is.EqualTo((ushort)0xBF80));
            Assert.That(BFloat16.ILogB(BFloat16.Epsilon), Is.EqualTo(-133));
            Assert.That(BFloat16.ScaleB(BFloat16.One, -133).Bits, Is.EqualTo((ushort)0x0001));
            Assert.That(BFloat16.ScaleB((BFloat16)1.5f, -133).Bits, Is.EqualTo((ushort)0x0002), "1.5 * 2^-133 ties to even");
            Assert.That(BFloat16.ScaleB(BFloat16.One, 128).Bits, Is.EqualTo((ushort)0x7F80));
            Assert.That(BFloat16.BitIncrement(BFloat16.MaxValue).Bits, Is.EqualTo((ushort)0x7F80));
            Assert.That(BFloat16.BitDecrement(BFloat16.PositiveInfinity).Bits, Is.EqualTo((ushort)0x7F7F));
            Assert.That(BFloat16.BitDecrement(BFloat16.Zero).Bits, Is.EqualTo((ushort)0x8001));
            Assert.That(BFloat16.BitIncrement(BFloat16.NegativeZero).Bits, Is.EqualTo((ushort)0x0001));
            Assert.That(BFloat16.BitIncrement(BFloat16.FromBits(0x8001)).Bits, Is.EqualTo((ushort)0x8000));
            Assert.That(BFloat16.Round((BFloat16)2.5f).Bits, Is.EqualTo(((BFloat16)2.0f).Bits));
            Assert.That(BFloat16.Sign((BFloat16)(-3.0f)), Is.EqualTo(-1));
            Assert.That(BFloat16.Clamp((BFloat16)9.0f, BFloat16.Zero, BFloat16.One).Bits, Is.EqualTo(BFloat16.One.Bits));
            Assert.That(BFloat16.ConvertToInteger<int>((BFloat16)(-2.75f)), Is.EqualTo(-2));
            Assert.That(BFloat16.ConvertToInteger<byte>((BFloat16)1000.0f), Is.EqualTo((byte)255));
        }

        Assert.Throws<ArithmeticException>(() => BFloat16.Sign(BFloat16.NaN));
    }

    [Test]
    public void Sqrt_AllPatterns_CorrectlyRounded()
    {
        var failures = new List<string>();
        for (int i = 0; i <= 0xFFFF; i++)
        {
            BFloat16 x = BFloat16.FromBits((ushort)i);
            double exact = Math.Sqrt((double)x); // correctly rounded to 53 bits: innocuous before rounding to 8
            BFloat16 r = BFloat16.Sqrt(x);
            bool ok = double.IsNaN(exact) ? BFloat16.IsNaN(r) : r.Bits == Reference(exact);
            if (!ok)
            {
                AddFailure(failures, $"sqrt {i:X4}: {r.Bits:X4}");
            }
        }

        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void Exp_AllPatternsInRange_WithinOneUlp()
    {
        var failures = new List<string>();
        for (int i = 0; i <= 0xFFFF; i++)
        {
            BFloat16 x = BFloat16.FromBits((ushort)i);
            double xd = (double)x;
            if (!(Math.Abs(xd) <= 80))
            {
                continue;
            }

            double exact = Math.Exp(xd);
            double got = (double)BFloat16.Exp(x);
            if (Math.Abs(got - exact) > exact * Math.ScaleB(1.0, -8))
            {
                AddFailure(failures, $"exp {i:X4}: {got} vs {exact}");
            }
        }

        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void ArithmeticOperators_RandomPairs_CorrectlyRounded()
    {
        var rng = new Random(Seed + 7);
        var failures = new List<string>();
        for (int k = 0; k < 300_000; k++)
        {
            BFloat16 a = BFloat16.FromBits((ushort)rng.Next(0x10000));
            BFloat16 b = BFloat16.FromBits((ushort)rng.Next(0x10000));
            if (!BFloat16.IsFinite(a) || !BFloat16.IsFinite(b))
            {
                continue;
            }

            double x = (double)a;
            double y = (double)b;
            double sum = x + y;
            bool sumExact = double.IsFinite(sum) && sum - x == y && sum - y == x; // exact sums only (no cancellation error)
            double quotient = x / y; // correctly rounded to 53 bits: innocuous before rounding to 8
            bool ok = (a * b).Bits == Reference(x * y) // 16-bit product: exact in double
                && (!sumExact || ((a + b).Bits == Reference(sum) && (a - (-b)).Bits == Reference(sum)))
                && (double.IsNaN(quotient) ? BFloat16.IsNaN(a / b) : (a / b).Bits == Reference(quotient));
            if (!ok)
            {
                AddFailure(failures, $"{a.Bits:X4} {b.Bits:X4}");
            }
        }

        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void ArithmeticAndFusedMultiplyAdd_RoundOnce()
    {
        BFloat16 three = (BFloat16)3.0f;
        BFloat16 onePlus = BFloat16.FromBits(0x3F81); // 1 + 2^-7; 3 * onePlus = 3.0234375 is a bf16 midpoint
        BFloat16 tiny = (BFloat16)Math.ScaleB(1.0, -100);
        using (Assert.EnterMultipleScope())
        {
            Assert.That((double)BFloat16.FusedMultiplyAdd(three, onePlus, BFloat16.Zero), Is.EqualTo(3.03125), "exact tie to even");
            Assert.That((double)BFloat16.FusedMultiplyAdd(three, onePlus, -tiny), Is.EqualTo(3.015625), "just below the tie");
            Assert.That((double)BFloat16.FusedMultiplyAdd(three, onePlus, tiny), Is.EqualTo(3.03125), "just above the tie");
            Assert.That((double)(BFloat16)((3.0 * (double)onePlus) + (double)-tiny), Is.EqualTo(3.03125), "naive double FMA double-rounds");
            Assert.That((double)((BFloat16)1.5f + (BFloat16)2.25f), Is.EqualTo(3.75));
            Assert.That((double)((BFloat16)256.0f + BFloat16.One), Is.EqualTo(256.0), "257 ties to even 256");
            Assert.That((double)(BFloat16.One / (BFloat16)3.0f), Is.EqualTo((double)(BFloat16)(1.0 / 3.0)));
            Assert.That((double)((BFloat16)7.0f % (BFloat16)2.0f), Is.EqualTo(1.0));
            Assert.That((-BFloat16.Zero).Bits, Is.EqualTo((ushort)0x8000));
            BFloat16 v = BFloat16.One;
            v++;
            Assert.That((double)v, Is.EqualTo(2.0));
            Assert.That((BFloat16.One & BFloat16.NegativeOne).Bits, Is.EqualTo((ushort)0x3F80));
            Assert.That((~BFloat16.Zero).Bits, Is.EqualTo((ushort)0xFFFF));
        }
    }

    // ------------------------------------------------------------------ formatting and parsing

    [Test]
    public void ToStringParse_RoundTripsEverySeventhFinitePattern()
    {
        var failures = new List<string>();
        Span<char> chars = stackalloc char[64];
        Span<byte> utf8 = stackalloc byte[64];
        for (int i = 0; i <= 0xFFFF; i += 7)
        {
            BFloat16 b = BFloat16.FromBits((ushort)i);
            if (!BFloat16.IsFinite(b))
            {
                continue;
            }

            string s = b.ToString(CultureInfo.InvariantCulture);
            if (BFloat16.Parse(s, CultureInfo.InvariantCulture).Bits != b.Bits)
            {
                AddFailure(failures, $"{i:X4} -> \"{s}\"");
            }

            if (!b.TryFormat(chars, out int written, default, CultureInfo.InvariantCulture)
                || !chars[..written].SequenceEqual(s)
                || BFloat16.Parse(chars[..written], CultureInfo.InvariantCulture).Bits != b.Bits)
            {
                AddFailure(failures, $"{i:X4}: span format");
            }

            if (!b.TryFormat(utf8, out int bytes, default, CultureInfo.InvariantCulture)
                || !BFloat16.TryParse(utf8[..bytes], CultureInfo.InvariantCulture, out BFloat16 back)
                || back.Bits != b.Bits)
            {
                AddFailure(failures, $"{i:X4}: utf8 format");
            }
        }

        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void ToString_IsShortestAndDelegatesFormats()
    {
        CultureInfo inv = CultureInfo.InvariantCulture;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(BFloat16.One.ToString(inv), Is.EqualTo("1"));
            Assert.That(((BFloat16)0.1f).ToString(inv), Is.EqualTo("0.1"));
            Assert.That(BFloat16.Pi.ToString(inv), Is.EqualTo("3.14"));
            Assert.That(BFloat16.MaxValue.ToString(inv), Is.EqualTo("3.39E+38"));
            Assert.That(BFloat16.NegativeZero.ToString(inv), Is.EqualTo("-0"));
            Assert.That(BFloat16.NaN.ToString(inv), Is.EqualTo(float.NaN.ToString(inv)));
            Assert.That(BFloat16.PositiveInfinity.ToString(inv), Is.EqualTo(float.PositiveInfinity.ToString(inv)));
            Assert.That(BFloat16.NegativeInfinity.ToString(inv), Is.EqualTo(float.NegativeInfinity.ToString(inv)));
            Assert.That(BFloat16.Pi.ToString("R", inv), Is.EqualTo("3.14"));
            Assert.That(((BFloat16)1e-20f).ToString("g", inv), Does.Contain("e-"));
            Assert.That(((BFloat16)1.5f).ToString("F2", inv), Is.EqualTo("1.50"));
            Assert.That(BFloat16.Pi.ToString("G9", inv), Is.EqualTo("3.140625"));
            Assert.That(((BFloat16)1.5f).ToString("E3", inv), Is.EqualTo("1.500E+000"));
            var comma = new NumberFormatInfo { NumberDecimalSeparator = "," };
            Assert.That(((BFloat16)1.5f).ToString(comma), Is.EqualTo("1,5"));
            Assert.That(BFloat16.Parse("1,5", comma).Bits, Is.EqualTo(((BFloat16)1.5f).Bits));
            Assert.That(BFloat16.Pi.TryFormat(new char[3], out int w, default, inv), Is.False);
            Assert.That(BFloat16.Pi.TryFormat(new char[4], out w, default, inv) && w == 4, Is.True);
            Assert.That(BFloat16.Pi.TryFormat(new byte[3], out int wb, default, inv), Is.False);
            byte[] bytes = new byte[16];
            Assert.That(BFloat16.Pi.TryFormat(bytes, out wb, default, inv), Is.True);
            Assert.That(Encoding.UTF8.GetString(bytes, 0, wb), Is.EqualTo("3.14"));
            Assert.That($"{BFloat16.One:F1}", Is.EqualTo("1.0"));
        }
    }

    [Test]
    public void Parse_RoundsOnceAndHandlesSpecials()
    {
        CultureInfo inv = CultureInfo.InvariantCulture;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(BFloat16.Parse("1.00390625", inv).Bits, Is.EqualTo((ushort)0x3F80), "tie to even");
            Assert.That(BFloat16.Parse("1.0039062500001", inv).Bits, Is.EqualTo((ushort)0x3F81));
            Assert.That(BFloat16.Parse("1e39", inv).Bits, Is.EqualTo((ushort)0x7F80));
            Assert.That(BFloat16.Parse("-1e-50", inv).Bits, Is.EqualTo((ushort)0x8000));
            Assert.That(BFloat16.Parse(" 1,000 ", inv).Bits, Is.EqualTo(((BFloat16)1000.0f).Bits));
            Assert.That(BFloat16.IsNaN(BFloat16.Parse("NaN", inv)), Is.True);
            Assert.That(BFloat16.Parse("-Infinity", inv).Bits, Is.EqualTo((ushort)0xFF80));
            Assert.That(BFloat16.Parse("2.5".AsSpan(), inv).Bits, Is.EqualTo(((BFloat16)2.5f).Bits));
            Assert.That(BFloat16.Parse("2.5"u8, NumberStyles.Float, inv).Bits, Is.EqualTo(((BFloat16)2.5f).Bits));
        }
    }

    [Test]
    public void TryParse_RejectsGarbage()
    {
        CultureInfo inv = CultureInfo.InvariantCulture;
        using (Assert.EnterMultipleScope())
        {
            Assert.That(BFloat16.TryParse("abc", inv, out BFloat16 r1), Is.False);
            Assert.That(r1.Bits, Is.EqualTo((ushort)0));
            Assert.That(BFloat16.TryParse((string?)null, out _), Is.False);
            Assert.That(BFloat16.TryParse("1.5".AsSpan(), out BFloat16 r2) && r2.Bits == 0x3FC0, Is.True);
            Assert.That(BFloat16.TryParse("1.5"u8, out BFloat16 r3) && r3.Bits == 0x3FC0, Is.True);
            Assert.That(BFloat16.TryParse("x"u8, NumberStyles.Float, inv, out _), Is.False);
        }

        Assert.Throws<FormatException>(() => BFloat16.Parse("abc", inv));
        Assert.Throws<ArgumentNullException>(() => BFloat16.Parse((string)null!));
    }

    // ------------------------------------------------------------------ conversions

    [Test]
    public void IntegerConversions_IntoBFloat16_RoundOnce()
    {
        var failures = new List<string>();
        for (int i = -70_000; i <= 70_000; i++)
        {
            ushort expected = Reference(i);
            if (((BFloat16)i).Bits != expected || ((BFloat16)(long)i).Bits != expected || ((BFloat16)(Int128)i).Bits != expected
                || ((BFloat16)(nint)i).Bits != expected || (i >= short.MinValue && i <= short.MaxValue && ((BFloat16)(short)i).Bits != expected))
            {
                AddFailure(failures, $"{i}");
            }

            if (i >= 0 && (((BFloat16)(uint)i).Bits != expected || ((BFloat16)(ulong)i).Bits != expected
                || ((BFloat16)(UInt128)(uint)i).Bits != expected || ((BFloat16)(nuint)(uint)i).Bits != expected
                || (i <= ushort.MaxValue && (((BFloat16)(ushort)i).Bits != expected || ((BFloat16)(char)i).Bits != expected))))
            {
                AddFailure(failures, $"unsigned {i}");
            }
        }

        var rng = new Random(Seed + 6);
        for (int k = 0; k < 200_000; k++)
        {
            long v = rng.NextInt64(-(1L << 53), 1L << 53) >> rng.Next(0, 50); // exact in double
            if (((BFloat16)v).Bits != Reference(v) || ((BFloat16)(Int128)v).Bits != Reference(v))
            {
                AddFailure(failures, $"long {v}");
            }
        }

        Assert.That(failures, Is.Empty);

        ulong hazard = (1UL << 40) + (1UL << 32) + 1; // float rounds to the tie 2^40 + 2^32, which then goes to even
        BFloat16 fromByte = (byte)200;
        BFloat16 fromSByte = (sbyte)-128;
        using (Assert.EnterMultipleScope())
        {
            Assert.That((double)(BFloat16)hazard, Is.EqualTo(Math.ScaleB(1.0, 40) + Math.ScaleB(1.0, 33)));
            Assert.That((double)(BFloat16)(float)hazard, Is.EqualTo(Math.ScaleB(1.0, 40)), "via float double-rounds");
            Assert.That((double)(BFloat16)(long)hazard, Is.EqualTo(Math.ScaleB(1.0, 40) + Math.ScaleB(1.0, 33)));
            Assert.That((double)(BFloat16)(-(long)hazard), Is.EqualTo(-(Math.ScaleB(1.0, 40) + Math.ScaleB(1.0, 33))));
            Assert.That(((BFloat16)long.MaxValue).Bits, Is.EqualTo((ushort)0x5F00));
            Assert.That(((BFloat16)long.MinValue).Bits, Is.EqualTo((ushort)0xDF00));
            Assert.That(((BFloat16)ulong.MaxValue).Bits, Is.EqualTo((ushort)0x5F80));
            Assert.That(((BFloat16)Int128.MaxValue).Bits, Is.EqualTo((ushort)0x7F00));
            Assert.That(((BFloat16)Int128.MinValue).Bits, Is.EqualTo((ushort)0xFF00));
            Assert.That(((BFloat16)UInt128.MaxValue).Bits, Is.EqualTo((ushort)0x7F80));
            UInt128 midpoint = UInt128.MaxValue - ((UInt128.One << 119) - 1); // 2^128 - 2^119 = MaxValue + half ulp
            Assert.That(((BFloat16)midpoint).Bits, Is.EqualTo((ushort)0x7F80), "overflow midpoint ties to Inf");
            Assert.That(((BFloat16)(midpoint - 1)).Bits, Is.EqualTo((ushort)0x7F7F));
            Assert.That(((BFloat16)(UInt128)(BFloat16.MaxValue)).Bits, Is.EqualTo((ushort)0x7F7F));
            Assert.That((double)fromByte, Is.EqualTo(200.0));
            Assert.That((double)fromSByte, Is.EqualTo(-128.0));
            Assert.That(((BFloat16)257).Bits, Is.EqualTo(((BFloat16)256).Bits), "257 ties to even");
            Assert.That(((BFloat16)1.5m).Bits, Is.EqualTo((ushort)0x3FC0));
        }
    }

    [Test]
    public void IntegerConversions_OutOfBFloat16_TruncateAndSaturate()
    {
        BFloat16 big = (BFloat16)1e10f;
        using (Assert.EnterMultipleScope())
        {
            Assert.That((int)(BFloat16)(-2.75f), Is.EqualTo(-2));
            Assert.That((int)big, Is.EqualTo(int.MaxValue));
            Assert.That((int)BFloat16.NaN, Is.Zero);
            Assert.That((byte)(BFloat16)(-3.0f), Is.EqualTo((byte)(Half)(-3.0f)), "narrow casts wrap via int, as Half's do");
            Assert.That((sbyte)(BFloat16)200.0f, Is.EqualTo((sbyte)(Half)200.0f));
            Assert.That((uint)(BFloat16)(-3.0f), Is.Zero);
            Assert.That(byte.CreateSaturating((BFloat16)(-3.0f)), Is.EqualTo((byte)0));
            Assert.That(sbyte.CreateTruncating((BFloat16)200.0f), Is.EqualTo(sbyte.MaxValue));
            Assert.That(short.CreateSaturating(BFloat16.NegativeInfinity), Is.EqualTo(short.MinValue));
            Assert.That(CreateSaturatingGeneric<char>(BFloat16.NaN), Is.EqualTo('\0'));
            Assert.That(CreateSaturatingGeneric<char>((BFloat16)(-5.0f)), Is.EqualTo('\0'));
            Assert.That((long)BFloat16.NegativeInfinity, Is.EqualTo(long.MinValue));
            Assert.That((ulong)(BFloat16)1e10f, Is.EqualTo((ulong)(float)big));
            Assert.That((char)(BFloat16)65.0f, Is.EqualTo('A'));
            Assert.That((Int128)BFloat16.MaxValue, Is.EqualTo((Int128)(float)BFloat16.MaxValue));
            Assert.That((UInt128)BFloat16.MaxValue, Is.EqualTo((UInt128)(float)BFloat16.MaxValue));
            Assert.That((nint)(BFloat16)(-7.0f), Is.EqualTo((nint)(-7)));
            Assert.That((decimal)(BFloat16)1.5f, Is.EqualTo(1.5m));
            Assert.That(checked((int)(BFloat16)100.0f), Is.EqualTo(100));
            Assert.That(int.CreateChecked((BFloat16)(-5.0f)), Is.EqualTo(-5));
            Assert.That(int.CreateSaturating(big), Is.EqualTo(int.MaxValue));
            Assert.That(ushort.CreateTruncating((BFloat16)(-1.0f)), Is.EqualTo((ushort)0));
            Assert.That(double.CreateChecked(BFloat16.Pi), Is.EqualTo(3.140625));
            Assert.That(BFloat16.CreateChecked(2.5).Bits, Is.EqualTo((ushort)0x4020));
            Assert.That(BFloat16.CreateSaturating(long.MaxValue).Bits, Is.EqualTo((ushort)0x5F00));
            Assert.That(BFloat16.CreateTruncating(1.5m).Bits, Is.EqualTo((ushort)0x3FC0));
            Assert.That(BFloat16.CreateChecked(BFloat16.Pi).Bits, Is.EqualTo(BFloat16.Pi.Bits));
            Assert.That(decimal.CreateSaturating(BFloat16.PositiveInfinity), Is.EqualTo(decimal.MaxValue));
        }

        Assert.Throws<OverflowException>(() => _ = checked((int)BFloat16.NaN));
        Assert.Throws<OverflowException>(() => _ = checked((byte)(BFloat16)(-1.0f)));
        Assert.Throws<OverflowException>(() => _ = int.CreateChecked(BFloat16.PositiveInfinity));
        Assert.Throws<OverflowException>(() => _ = (decimal)BFloat16.NaN);
    }

    [Test]
    public void IntegerConversions_MatchHalf_WhereHalfIsExact()
    {
        var failures = new List<string>();
        for (int i = 0; i <= 0xFFFF; i++)
        {
            BFloat16 b = BFloat16.FromBits((ushort)i);
            Half h = (Half)b;
            if (!(BFloat16.IsNaN(b) || (double)h == (double)b))
            {
                continue;
            }

            bool same = (byte)b == (byte)h && (sbyte)b == (sbyte)h && (short)b == (short)h && (ushort)b == (ushort)h
                && (char)b == (char)h && (int)b == (int)h && (uint)b == (uint)h && (long)b == (long)h && (ulong)b == (ulong)h
                && (nint)b == (nint)h && (nuint)b == (nuint)h && (Int128)b == (Int128)h && (UInt128)b == (UInt128)h
                && int.CreateSaturating(b) == int.CreateSaturating(h) && byte.CreateSaturating(b) == byte.CreateSaturating(h)
                && short.CreateTruncating(b) == short.CreateTruncating(h) && ulong.CreateTruncating(b) == ulong.CreateTruncating(h);
            if (!same)
            {
                AddFailure(failures, $"{i:X4}");
            }
        }

        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void HalfConversions_RoundTripWhereExact()
    {
        var failures = new List<string>();
        int exact = 0;
        for (int i = 0; i <= 0xFFFF; i++)
        {
            BFloat16 b = BFloat16.FromBits((ushort)i);
            Half h = (Half)b;
            if (BFloat16.IsNaN(b))
            {
                if (!Half.IsNaN(h))
                {
                    AddFailure(failures, $"{i:X4} NaN to Half");
                }

                continue;
            }

            if ((double)h == (double)b && Half.IsNegative(h) == BFloat16.IsNegative(b))
            {
                exact++;
                if (((BFloat16)h).Bits != b.Bits)
                {
                    AddFailure(failures, $"{i:X4} bf16 -> Half -> bf16");
                }
            }

            // Half -> bf16 for every Half pattern against the reference.
            Half hp = BitConverter.UInt16BitsToHalf((ushort)i);
            if (!Half.IsNaN(hp) && ((BFloat16)hp).Bits != Reference((double)hp))
            {
                AddFailure(failures, $"Half {i:X4} -> bf16");
            }
        }

        Assert.That(failures, Is.Empty);
        Assert.That(exact, Is.GreaterThan(8_000));
        Assert.That((double)(Half)BFloat16.MaxValue, Is.EqualTo(double.PositiveInfinity));
    }
}

namespace Engine.Backends.Cuda;

/// <summary>
/// Division by a divisor fixed at launch, as a multiply-high and a shift (Granlund and Montgomery's invariant-integer
/// division), computed once on the host. A 64-bit <c>/</c> in a kernel becomes PTX <c>div.s64</c>, an ~80-instruction
/// software routine, per dim per element; this is a handful of integer multiplies. Two forms: <see cref="Divide32"/>
/// for dividends below 2^31 (one 32-bit multiply-high) and <see cref="Divide"/> for any non-negative long.
/// Public because ILGPU's launchers must see kernel parameter types.
/// </summary>
public struct FastDivisor
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public ulong Magic;   // ⌈2^(63+c) / d⌉ with c = ⌈log2 d⌉: below 2^64 for every d ≥ 1
    public uint Magic32;  // ⌈2^(31+c) / d⌉: below 2^32 for 1 ≤ d < 2^31 (0 when d does not fit)
    public int Shift;     // c
#pragma warning restore CS1591

    /// <summary>The divisor for <paramref name="d"/> ≥ 1 (0 gives a zero divisor that divides nothing: its users have no elements).</summary>
    public static FastDivisor Of(long d)
    {
        if (d < 0) throw new ArgumentOutOfRangeException(nameof(d), d, "a divisor of an index must be non-negative");
        if (d == 0) return default;
        int c = d == 1 ? 0 : 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)d - 1);
        UInt128 magic = (((UInt128)1 << (63 + c)) + (ulong)d - 1) / (ulong)d;
        ulong m32 = d < (1L << 31) ? (ulong)((((UInt128)1 << (31 + c)) + (ulong)d - 1) / (ulong)d) : 0;
        return new FastDivisor { Magic = (ulong)magic, Magic32 = (uint)m32, Shift = c };
    }

    // Why it is exact: with m = 2^s/d + e (0 ≤ e < 1, s = 63 + c) and 0 ≤ n < 2^63, n·m/2^s = n/d + n·e/2^s and
    // n·e/2^s < 2^(63−s) = 2^−c ≤ 1/d, too little to carry n/d = q + r/d (r ≤ d − 1) past q + 1. Doubling n first
    // turns the shift by s into the high word (a shift by 64) and a shift by c, so d = 1 (c = 0) needs no case.

    /// <summary>⌊n / d⌋ for 0 ≤ n &lt; 2^63.</summary>
    public readonly long Divide(long n) => (long)(MulHigh((ulong)n << 1, Magic) >> Shift);

    /// <summary>⌊n / d⌋ for 0 ≤ n &lt; 2^31 and d &lt; 2^31.</summary>
    public readonly int Divide32(int n) => (int)((uint)(((ulong)((uint)n << 1) * Magic32) >> 32) >> Shift);

    /// <summary>The high 64 bits of a 128-bit product, from 32-bit halves (ILGPU maps no 128-bit multiply).</summary>
    static ulong MulHigh(ulong a, ulong b)
    {
        ulong aLo = (uint)a, aHi = a >> 32, bLo = (uint)b, bHi = b >> 32;
        ulong lo = aLo * bLo, mid1 = aHi * bLo, mid2 = aLo * bHi;
        ulong carry = ((lo >> 32) + (uint)mid1 + (uint)mid2) >> 32;
        return aHi * bHi + (mid1 >> 32) + (mid2 >> 32) + carry;
    }
}

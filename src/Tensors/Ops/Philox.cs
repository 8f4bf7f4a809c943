using System.Runtime.CompilerServices;

namespace Engine.Ops;

/// <summary>
/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the counter-based generator
/// of cuRAND and PyTorch's CUDA backend: a pure function from a 128-bit counter and a 64-bit key to four 32-bit
/// words. Element i of a draw at (seed, offset) takes counter <c>offset + i/4</c> (c0 = low 32 bits, c1 = high 32
/// bits, c2 = c3 = 0), key (seed low, seed high), and lane <c>i % 4</c>; so any element can be computed on its own,
/// by any thread of any device, and a seed gives the same uniforms everywhere. Everything here is static, allocation
/// free and on uint/float locals only, so the same methods can run inside ILGPU kernels.
/// </summary>
public static class Philox
{
    /// <summary>Multiplier of counter word 0.</summary>
    public const uint M0 = 0xD2511F53;
    /// <summary>Multiplier of counter word 2.</summary>
    public const uint M1 = 0xCD9E8D57;
    /// <summary>Weyl increment of key word 0 (golden ratio).</summary>
    public const uint W0 = 0x9E3779B9;
    /// <summary>Weyl increment of key word 1 (√3 − 1).</summary>
    public const uint W1 = 0xBB67AE85;

    /// <summary>The Philox4x32-10 block function: ten rounds over counter (c0..c3) with key (k0, k1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Block(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1, out uint r0, out uint r1, out uint r2, out uint r3)
    {
        // Unrolled by hand: a loop with a key bump between rounds is what Random123 writes, but this form keeps
        // everything in registers on every JIT (and in ILGPU's PTX).
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1); k0 += W0; k1 += W1;
        Round(ref c0, ref c1, ref c2, ref c3, k0, k1);
        r0 = c0; r1 = c1; r2 = c2; r3 = c3;
    }

    /// <summary>The block for a 64-bit counter (c2 = c3 = 0) and a 64-bit key, the layout every draw uses.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Block(ulong counter, ulong key, out uint r0, out uint r1, out uint r2, out uint r3) =>
        Block((uint)counter, (uint)(counter >> 32), 0, 0, (uint)key, (uint)(key >> 32), out r0, out r1, out r2, out r3);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Round(ref uint c0, ref uint c1, ref uint c2, ref uint c3, uint k0, uint k1)
    {
        ulong p0 = (ulong)M0 * c0, p1 = (ulong)M1 * c2;
        uint hi0 = (uint)(p0 >> 32), lo0 = (uint)p0, hi1 = (uint)(p1 >> 32), lo1 = (uint)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }

    /// <summary>The random word of element <paramref name="index"/> of the draw at (seed, offset), computed on its own.</summary>
    public static uint Word(ulong seed, ulong offset, long index)
    {
        Block(offset + (ulong)index / 4, seed, out uint r0, out uint r1, out uint r2, out uint r3);
        return Lane(r0, r1, r2, r3, (int)((ulong)index % 4));
    }

    /// <summary>Word <paramref name="lane"/> (0..3) of a block's output.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Lane(uint r0, uint r1, uint r2, uint r3, int lane) => lane == 0 ? r0 : lane == 1 ? r1 : lane == 2 ? r2 : r3;

    /// <summary>A float uniform in [0, 1) from the top 24 bits: (u &gt;&gt; 8)·2⁻²⁴, every value exact in float32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(uint u) => (u >> 8) * (1f / 16777216f);

    /// <summary>
    /// A uniform in [0, 1) on a grid of 2^-<paramref name="bits"/> from the top bits of <paramref name="u"/>
    /// (1 ≤ bits ≤ 24): with the significand width of the target type (24 float32, 11 float16, 8 bfloat16) every
    /// value is exact there, so rounding on store can never give 1 (PyTorch's rule for half types).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(uint u, int bits) => (u >> (32 - bits)) * (1f / (1 << bits));

    /// <summary>A double uniform in [0, 1) from all 32 bits: u·2⁻³².</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double ToDouble(uint u) => u * (1.0 / 4294967296.0);

    /// <summary>
    /// Two standard normals from two words by Box–Muller in float32: r = √(−2 ln u₁), θ = 2π u₂, with u₁ taken in
    /// (0, 1] so the log is finite (|z| ≤ 5.77).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void BoxMuller(uint a, uint b, out float z0, out float z1)
    {
        float u1 = ((a >> 8) + 1) * (1f / 16777216f);
        float theta = 2 * MathF.PI * ToFloat(b);
        float r = MathF.Sqrt(-2 * MathF.Log(u1));
        z0 = r * MathF.Cos(theta);
        z1 = r * MathF.Sin(theta);
    }

    /// <summary>Two standard normals from two words by Box–Muller in float64, u₁ = (a + 1)·2⁻³² in (0, 1] (|z| ≤ 6.66).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void BoxMuller(uint a, uint b, out double z0, out double z1)
    {
        double u1 = (a + 1.0) * (1.0 / 4294967296.0);
        double theta = 2 * Math.PI * ToDouble(b);
        double r = Math.Sqrt(-2 * Math.Log(u1));
        z0 = r * Math.Cos(theta);
        z1 = r * Math.Sin(theta);
    }
}

namespace Engine.Backends.Cuda;

/// <summary>
/// The shape walked by an elementwise kernel and the element strides and offsets of up to four operands (Y, A, B, C;
/// Y is the output by convention), passed by value as a kernel parameter. The host plans it with the shared
/// <see cref="StridePlan"/> (dims contiguous in every operand merged, size-1 dims dropped), so most launches have rank
/// 1 or 2. No kernel divides: each dim's <see cref="FastDivisor"/> is precomputed, and launches whose indices fit
/// walk in 32-bit arithmetic. Dims are stored innermost first (D0 is the fastest-varying).
/// Public because ILGPU's launchers must see kernel parameter types.
/// </summary>
public struct Geometry
{
    /// <summary>The most dims left after merging.</summary>
    public const int MaxRank = 8;

#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int Rank;
    public long Count;
    public long D0, D1, D2, D3, D4, D5, D6, D7;
    public long Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7;
    public long A0, A1, A2, A3, A4, A5, A6, A7;
    public long B0, B1, B2, B3, B4, B5, B6, B7;
    public long C0, C1, C2, C3, C4, C5, C6, C7;
    public long OffY, OffA, OffB, OffC;
    public FastDivisor Q0, Q1, Q2, Q3, Q4, Q5, Q6; // divide by D0..D6
    public int Index32; // 1: every linear index and every operand's element offset is below 2^31
#pragma warning restore CS1591

    /// <summary>True when every operand is dense with unit stride from its offset (one merged dim, or one element).</summary>
    public readonly bool IsDense => Rank == 0 || Rank == 1 && Y0 == 1 && A0 == 1 && B0 == 1 && C0 == 1;

    /// <summary>Element offsets of the four operands at linear (row-major) position <paramref name="i"/>.</summary>
    public readonly void Offsets(long i, out long y, out long a, out long b, out long c)
    {
        if (Index32 != 0) { Offsets32((int)i, out y, out a, out b, out c); return; }
        y = OffY; a = OffA; b = OffB; c = OffC;
        if (Rank == 0) return;
        // The outermost dim takes the remaining quotient without a division; the others divide by multiplying.
        long r;
        if (Rank > 1) { long q = Q0.Divide(i); r = i - q * D0; i = q; } else r = i;
        y += r * Y0; a += r * A0; b += r * B0; c += r * C0;
        if (Rank == 1) return;
        if (Rank > 2) { long q = Q1.Divide(i); r = i - q * D1; i = q; } else r = i;
        y += r * Y1; a += r * A1; b += r * B1; c += r * C1;
        if (Rank == 2) return;
        if (Rank > 3) { long q = Q2.Divide(i); r = i - q * D2; i = q; } else r = i;
        y += r * Y2; a += r * A2; b += r * B2; c += r * C2;
        if (Rank == 3) return;
        if (Rank > 4) { long q = Q3.Divide(i); r = i - q * D3; i = q; } else r = i;
        y += r * Y3; a += r * A3; b += r * B3; c += r * C3;
        if (Rank == 4) return;
        if (Rank > 5) { long q = Q4.Divide(i); r = i - q * D4; i = q; } else r = i;
        y += r * Y4; a += r * A4; b += r * B4; c += r * C4;
        if (Rank == 5) return;
        if (Rank > 6) { long q = Q5.Divide(i); r = i - q * D5; i = q; } else r = i;
        y += r * Y5; a += r * A5; b += r * B5; c += r * C5;
        if (Rank == 6) return;
        if (Rank > 7) { long q = Q6.Divide(i); r = i - q * D6; i = q; } else r = i;
        y += r * Y6; a += r * A6; b += r * B6; c += r * C6;
        if (Rank == 7) return;
        y += i * Y7; a += i * A7; b += i * B7; c += i * C7;
    }

    // The same walk in 32-bit arithmetic, valid when the host found every index and offset below 2^31 (Index32).
    readonly void Offsets32(int i, out long y, out long a, out long b, out long c)
    {
        int yi = (int)OffY, ai = (int)OffA, bi = (int)OffB, ci = (int)OffC;
        if (Rank != 0)
        {
            int r;
            if (Rank > 1) { int q = Q0.Divide32(i); r = i - q * (int)D0; i = q; } else r = i;
            yi += r * (int)Y0; ai += r * (int)A0; bi += r * (int)B0; ci += r * (int)C0;
            if (Rank > 1)
            {
                if (Rank > 2) { int q = Q1.Divide32(i); r = i - q * (int)D1; i = q; } else r = i;
                yi += r * (int)Y1; ai += r * (int)A1; bi += r * (int)B1; ci += r * (int)C1;
                if (Rank > 2)
                {
                    if (Rank > 3) { int q = Q2.Divide32(i); r = i - q * (int)D2; i = q; } else r = i;
                    yi += r * (int)Y2; ai += r * (int)A2; bi += r * (int)B2; ci += r * (int)C2;
                    if (Rank > 3)
                    {
                        if (Rank > 4) { int q = Q3.Divide32(i); r = i - q * (int)D3; i = q; } else r = i;
                        yi += r * (int)Y3; ai += r * (int)A3; bi += r * (int)B3; ci += r * (int)C3;
                        if (Rank > 4)
                        {
                            if (Rank > 5) { int q = Q4.Divide32(i); r = i - q * (int)D4; i = q; } else r = i;
                            yi += r * (int)Y4; ai += r * (int)A4; bi += r * (int)B4; ci += r * (int)C4;
                            if (Rank > 5)
                            {
                                if (Rank > 6) { int q = Q5.Divide32(i); r = i - q * (int)D5; i = q; } else r = i;
                                yi += r * (int)Y5; ai += r * (int)A5; bi += r * (int)B5; ci += r * (int)C5;
                                if (Rank > 6)
                                {
                                    if (Rank > 7) { int q = Q6.Divide32(i); r = i - q * (int)D6; i = q; } else r = i;
                                    yi += r * (int)Y6; ai += r * (int)A6; bi += r * (int)B6; ci += r * (int)C6;
                                    if (Rank > 7) { yi += i * (int)Y7; ai += i * (int)A7; bi += i * (int)B7; ci += i * (int)C7; }
                                }
                            }
                        }
                    }
                }
            }
        }
        y = yi; a = ai; b = bi; c = ci;
    }

    /// <summary>
    /// The walk over layouts of one shape as the shared <see cref="StridePlan"/> plans it (the first is Y; missing
    /// operands get zero strides). Throws when more than <see cref="MaxRank"/> dims remain after merging.
    /// </summary>
    public static Geometry Of(string op, Layout y, Layout? a = null, Layout? b = null, Layout? c = null)
    {
        // No cap on a merged dim: kernels index in 64 bits.
        Layout still = new(y.Shape, new long[y.Rank], 0);
        var plan = StridePlan.Of([y, a ?? still, b ?? still, c ?? still]);
        if (plan.Rank > MaxRank)
            throw new ShapeException(op, $"the CUDA backend walks at most {MaxRank} non-mergeable dims, got {plan.Rank} for {y}");
        var g = new Geometry
        {
            Rank = plan.Rank,
            Count = plan.Count,
            OffY = y.Offset, OffA = a?.Offset ?? 0, OffB = b?.Offset ?? 0, OffC = c?.Offset ?? 0,
        };
        for (int r = 0; r < g.Rank; r++)
        {
            int src = plan.Rank - 1 - r; // innermost first
            g.SetDim(r, plan.Dims[src], plan.Strides[src]);
        }
        // Rank 0 (one element or none) reads as dense with unit strides.
        if (g.Rank == 0) { g.Y0 = g.A0 = g.B0 = g.C0 = 1; }
        g.Index32 = Fits32(plan, g.Count, [g.OffY, g.OffA, g.OffB, g.OffC]) ? 1 : 0;
        return g;
    }

    // The 32-bit walk holds when the count and, for each operand, its offset plus its farthest element stay below 2^31
    // (strides are never negative here, but a negative one sends the launch to the 64-bit walk all the same).
    static bool Fits32(StridePlan plan, long count, long[] offsets)
    {
        if (count > int.MaxValue) return false;
        for (int k = 0; k < offsets.Length; k++)
        {
            long far = offsets[k];
            for (int r = 0; r < plan.Rank; r++)
            {
                long s = plan.Strides[r][k];
                if (s < 0) return false;
                far += (plan.Dims[r] - 1) * s;
                if (far > int.MaxValue) return false;
            }
            if (far < 0 || far > int.MaxValue) return false;
        }
        return true;
    }

    void SetDim(int r, long size, long[] s)
    {
        var q = FastDivisor.Of(size);
        switch (r)
        {
            case 0: D0 = size; Y0 = s[0]; A0 = s[1]; B0 = s[2]; C0 = s[3]; Q0 = q; break;
            case 1: D1 = size; Y1 = s[0]; A1 = s[1]; B1 = s[2]; C1 = s[3]; Q1 = q; break;
            case 2: D2 = size; Y2 = s[0]; A2 = s[1]; B2 = s[2]; C2 = s[3]; Q2 = q; break;
            case 3: D3 = size; Y3 = s[0]; A3 = s[1]; B3 = s[2]; C3 = s[3]; Q3 = q; break;
            case 4: D4 = size; Y4 = s[0]; A4 = s[1]; B4 = s[2]; C4 = s[3]; Q4 = q; break;
            case 5: D5 = size; Y5 = s[0]; A5 = s[1]; B5 = s[2]; C5 = s[3]; Q5 = q; break;
            case 6: D6 = size; Y6 = s[0]; A6 = s[1]; B6 = s[2]; C6 = s[3]; Q6 = q; break;
            default: D7 = size; Y7 = s[0]; A7 = s[1]; B7 = s[2]; C7 = s[3]; break;
        }
    }
}

/// <summary>Four float32 values: the unit of the vectorized (16-byte) contiguous float32 paths (<c>ld.global.v4.f32</c>).</summary>
public struct F4
{
#pragma warning disable CS1591
    public float X, Y, Z, W;
#pragma warning restore CS1591
}

namespace Engine.Backends.Cuda;

/// <summary>
/// The shape walked by an elementwise kernel and the element strides and offsets of up to four operands (Y, A, B, C;
/// Y is the output by convention), passed by value as a kernel parameter. The host plans it with the shared
/// <see cref="StridePlan"/> (dims contiguous in every operand merged, size-1 dims dropped), so most launches have rank
/// 1 or 2 and need one 64-bit division or none per element. Dims are stored innermost first (D0 is the fastest-varying).
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
#pragma warning restore CS1591

    /// <summary>True when every operand is dense with unit stride from its offset (one merged dim, or one element).</summary>
    public readonly bool IsDense => Rank == 0 || Rank == 1 && Y0 == 1 && A0 == 1 && B0 == 1 && C0 == 1;

    /// <summary>Element offsets of the four operands at linear (row-major) position <paramref name="i"/>.</summary>
    public readonly void Offsets(long i, out long y, out long a, out long b, out long c)
    {
        y = OffY; a = OffA; b = OffB; c = OffC;
        if (Rank == 0) return;
        // The outermost dim takes the remaining quotient without a division.
        long r;
        if (Rank > 1) { long q = i / D0; r = i - q * D0; i = q; } else r = i;
        y += r * Y0; a += r * A0; b += r * B0; c += r * C0;
        if (Rank == 1) return;
        if (Rank > 2) { long q = i / D1; r = i - q * D1; i = q; } else r = i;
        y += r * Y1; a += r * A1; b += r * B1; c += r * C1;
        if (Rank == 2) return;
        if (Rank > 3) { long q = i / D2; r = i - q * D2; i = q; } else r = i;
        y += r * Y2; a += r * A2; b += r * B2; c += r * C2;
        if (Rank == 3) return;
        if (Rank > 4) { long q = i / D3; r = i - q * D3; i = q; } else r = i;
        y += r * Y3; a += r * A3; b += r * B3; c += r * C3;
        if (Rank == 4) return;
        if (Rank > 5) { long q = i / D4; r = i - q * D4; i = q; } else r = i;
        y += r * Y4; a += r * A4; b += r * B4; c += r * C4;
        if (Rank == 5) return;
        if (Rank > 6) { long q = i / D5; r = i - q * D5; i = q; } else r = i;
        y += r * Y5; a += r * A5; b += r * B5; c += r * C5;
        if (Rank == 6) return;
        if (Rank > 7) { long q = i / D6; r = i - q * D6; i = q; } else r = i;
        y += r * Y6; a += r * A6; b += r * B6; c += r * C6;
        if (Rank == 7) return;
        y += i * Y7; a += i * A7; b += i * B7; c += i * C7;
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
        return g;
    }

    void SetDim(int r, long size, long[] s)
    {
        switch (r)
        {
            case 0: D0 = size; Y0 = s[0]; A0 = s[1]; B0 = s[2]; C0 = s[3]; break;
            case 1: D1 = size; Y1 = s[0]; A1 = s[1]; B1 = s[2]; C1 = s[3]; break;
            case 2: D2 = size; Y2 = s[0]; A2 = s[1]; B2 = s[2]; C2 = s[3]; break;
            case 3: D3 = size; Y3 = s[0]; A3 = s[1]; B3 = s[2]; C3 = s[3]; break;
            case 4: D4 = size; Y4 = s[0]; A4 = s[1]; B4 = s[2]; C4 = s[3]; break;
            case 5: D5 = size; Y5 = s[0]; A5 = s[1]; B5 = s[2]; C5 = s[3]; break;
            case 6: D6 = size; Y6 = s[0]; A6 = s[1]; B6 = s[2]; C6 = s[3]; break;
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

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Engine.Backends.Cpu.Jit;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// Packing for <see cref="Bf16Gemm"/>: operands (float32, rounded to bf16 on the way, or bf16 bits as ushort) become
/// the k-pair-interleaved panels vdpbf16ps reads. A 32-bit lane holds {x[k] low, x[k+1] high} for an even k; an odd
/// kc pads the last pair with +0. A panel (6 rows): lane [q*6 + r] = pair q of row r. B panel (64 columns):
/// lane [q*64 + j] = pair q of column j. Rows or columns past the matrix edge are zero.
/// </summary>
/// <remarks>
/// Packing changes nothing but speed: every path produces the same bits (float32 goes through the same
/// round-to-nearest-even as <c>(BFloat16)x</c>; the vector paths use <see cref="BFloat16.ConvertFromSingle"/>).
/// </remarks>
internal static unsafe class Bf16Pack
{
    private const int MR = Bf16Microkernel.MR, NR = Bf16Microkernel.NR;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Bits<TS>(TS* p) where TS : unmanaged =>
        typeof(TS) == typeof(float) ? ((BFloat16)(*(float*)p)).Bits : *(ushort*)p;

    /// <summary>n contiguous source values to bf16 bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ToBf16<TS>(TS* src, int n, ushort* dst) where TS : unmanaged
    {
        if (typeof(TS) == typeof(float))
            BFloat16.ConvertFromSingle(new ReadOnlySpan<float>(src, n), new Span<BFloat16>(dst, n));
        else
            Buffer.MemoryCopy(src, dst, n * 2L, n * 2L);
    }

    /// <summary>Packs an mc x kc block of A (element (i,p) at src[i*rs + p*cs]) into 6-row panels at dst + i*kp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackA<TS>(int mc, int kc, TS* src, long rs, long cs, uint* dst, ushort* tmp) where TS : unmanaged
    {
        int kp = (kc + 1) / 2;
        for (int ir = 0; ir < mc; ir += MR)
        {
            int rows = Math.Min(MR, mc - ir);
            TS* s = src + ir * rs;
            uint* d = dst + ir * kp;
            if (cs == 1 && rows == MR && Avx512F.IsSupported)
            {
                // A bf16 row-major row with an even row stride already is a stream of 32-bit pairs: interleaving six
                // such streams is the float32 packer's 6-row transpose (pure data movement, any 32-bit payload).
                if (typeof(TS) == typeof(ushort) && (rs & 1) == 0 && (kc & 1) == 0)
                {
                    GemmPackAvx512.Interleave6(kp, (float*)s, rs / 2, (float*)d);
                    continue;
                }
                for (int r = 0; r < MR; r++)
                {
                    ToBf16(s + r * rs, kc, tmp + r * 2 * kp);
                    if ((kc & 1) != 0) tmp[r * 2 * kp + kc] = 0;
                }
                GemmPackAvx512.Interleave6(kp, (float*)tmp, kp, (float*)d);
                continue;
            }
            for (int q = 0; q < kp; q++)
            {
                long k0 = 2L * q;
                bool has1 = k0 + 1 < kc;
                for (int r = 0; r < MR; r++)
                {
                    uint v = 0;
                    if (r < rows)
                    {
                        TS* e = s + r * rs + k0 * cs;
                        v = Bits(e) | (has1 ? Bits(e + cs) << 16 : 0);
                    }
                    d[q * MR + r] = v;
                }
            }
        }
    }

    /// <summary>Packs a kc x nc block of B (element (p,j) at src[p*rs + j*cs]) into 64-column panels at dst + j*kp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackB<TS>(int kc, int nc, TS* src, long rs, long cs, uint* dst, ushort* tmp) where TS : unmanaged
    {
        int kp = (kc + 1) / 2;
        if (cs == 1 && Avx512F.IsSupported) { RowMajorB(kc, nc, kp, src, rs, dst, tmp); return; }
        if (rs == 1 && Avx512F.IsSupported) { ColumnMajorB(kc, nc, kp, src, cs, dst, tmp); return; }
        for (int jr = 0; jr < nc; jr += NR)
        {
            int cols = Math.Min(NR, nc - jr);
            uint* d = dst + jr * kp;
            for (int q = 0; q < kp; q++)
            {
                long k0 = 2L * q;
                bool has1 = k0 + 1 < kc;
                for (int j = 0; j < NR; j++)
                {
                    uint v = 0;
                    if (j < cols)
                    {
                        TS* e = src + k0 * rs + (jr + j) * cs;
                        v = Bits(e) | (has1 ? Bits(e + rs) << 16 : 0);
                    }
                    d[q * NR + j] = v;
                }
            }
        }
    }

    /// <summary>
    /// Rows of B contiguous: per k-pair, zero-extend 16 bf16 of row k and of row k+1 to 32 bits and merge them
    /// (lo | hi &lt;&lt; 16). float32 rows are first rounded to bf16 into <paramref name="tmp"/>, two rows at a time.
    /// </summary>
    private static void RowMajorB<TS>(int kc, int nc, int kp, TS* src, long rs, uint* dst, ushort* tmp) where TS : unmanaged
    {
        int full = nc / NR * NR;
        int pitch = (nc + 31) & ~31;
        for (int q = 0; q < kp; q++)
        {
            TS* r0 = src + 2L * q * rs;
            bool has1 = 2 * q + 1 < kc;
            ushort* u0, u1 = null;
            if (typeof(TS) == typeof(ushort))
            {
                u0 = (ushort*)r0;
                if (has1) u1 = (ushort*)(r0 + rs);
            }
            else
            {
                u0 = tmp;
                ToBf16(r0, nc, u0);
                if (has1) { u1 = tmp + pitch; ToBf16(r0 + rs, nc, u1); }
            }
            for (int jr = 0; jr < full; jr += NR)
            {
                uint* d = dst + jr * kp + q * NR;
                for (int j = 0; j < NR; j += 16)
                {
                    var lo = Avx512F.ConvertToVector512UInt32(Vector256.Load(u0 + jr + j));
                    var hi = u1 == null ? Vector512<uint>.Zero : Avx512F.ConvertToVector512UInt32(Vector256.Load(u1 + jr + j));
                    Vector512.Store(lo | (hi << 16), d + j);
                }
            }
            if (full < nc)
            {
                uint* d = dst + full * kp + q * NR;
                for (int j = 0; j < NR; j++)
                {
                    int col = full + j;
                    d[j] = col < nc ? u0[col] | (u1 == null ? 0u : (uint)u1[col] << 16) : 0;
                }
            }
        }
    }

    /// <summary>
    /// Columns of B contiguous (a transposed weight, as in x @ W^T): stage 64 columns as bf16 rows of 2*kp values in
    /// <paramref name="tmp"/>, each then a stream of kp pairs, and transpose 16 x 16 blocks of pairs into the panel.
    /// </summary>
    private static void ColumnMajorB<TS>(int kc, int nc, int kp, TS* src, long cs, uint* dst, ushort* tmp) where TS : unmanaged
    {
        int row = 2 * kp;
        for (int jr = 0; jr < nc; jr += NR)
        {
            int cols = Math.Min(NR, nc - jr);
            for (int j = 0; j < NR; j++)
            {
                ushort* t = tmp + j * row;
                if (j >= cols) { new Span<ushort>(t, row).Clear(); continue; }
                ToBf16(src + (jr + j) * cs, kc, t);
                if ((kc & 1) != 0) t[kc] = 0;
            }
            uint* d = dst + jr * kp;
            int q = 0;
            for (; q + 16 <= kp; q += 16)
                for (int g = 0; g < NR / 16; g++)
                    GemmPackAvx512.Transpose16((float*)(tmp + g * 16 * row) + q, kp, (float*)(d + q * NR + 16 * g), NR);
            for (; q < kp; q++)
                for (int j = 0; j < NR; j++) d[q * NR + j] = ((uint*)(tmp + j * row))[q];
        }
    }
}

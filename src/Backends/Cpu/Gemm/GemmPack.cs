using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// Packing of GEMM operands into micro-panels. Any strides work (including 0 and transposed layouts);
/// unit-stride layouts take copy-friendly fast paths. Panels are zero-padded to a whole micro-tile.
/// </summary>
internal static unsafe class GemmPack<T> where T : unmanaged
{
    /// <summary>
    /// Packs an mc x kc block of A (element (i,p) at src[i*rs + p*cs]) into panels of <paramref name="mr"/> rows:
    /// panel q holds rows [q*mr, q*mr+mr) at dst + q*mr*kc, element (r,p) at [p*mr + r].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackA(int mc, int kc, int mr, T* src, long rs, long cs, T* dst)
    {
        for (int ir = 0; ir < mc; ir += mr)
        {
            int rows = Math.Min(mr, mc - ir);
            T* s = src + ir * rs;
            T* d = dst + ir * kc;
            if (cs == 1 && rows == 6 && mr == 6 && Avx512F.IsSupported && (typeof(T) == typeof(float) || typeof(T) == typeof(double)))
            {
                if (typeof(T) == typeof(float)) GemmPackAvx512.Interleave6(kc, (float*)s, rs, (float*)d);
                else GemmPackAvx512.Interleave6(kc, (double*)s, rs, (double*)d);
                continue;
            }
            if (cs == 1 && rows == 6 && mr == 6)
            {
                T* s0 = s, s1 = s + rs, s2 = s + 2 * rs, s3 = s + 3 * rs, s4 = s + 4 * rs, s5 = s + 5 * rs;
                for (int p = 0; p < kc; p++, d += 6)
                {
                    d[0] = s0[p]; d[1] = s1[p]; d[2] = s2[p]; d[3] = s3[p]; d[4] = s4[p]; d[5] = s5[p];
                }
                continue;
            }
            if (rs == 1 && rows == mr)
            {
                for (int p = 0; p < kc; p++) Unsafe.CopyBlockUnaligned(d + p * mr, s + p * cs, (uint)(mr * sizeof(T)));
                continue;
            }
            for (int p = 0; p < kc; p++)
            {
                T* sp = s + p * cs;
                T* dp = d + p * mr;
                int r = 0;
                for (; r < rows; r++) dp[r] = sp[r * rs];
                for (; r < mr; r++) dp[r] = default;
            }
        }
    }

    /// <summary>
    /// Packs a kc x nc block of B (element (p,j) at src[p*rs + j*cs]) into panels of <paramref name="nr"/> columns:
    /// panel q holds columns [q*nr, q*nr+nr) at dst + q*nr*kc, element (p,c) at [p*nr + c].
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackB(int kc, int nc, int nr, T* src, long rs, long cs, T* dst)
    {
        for (int jr = 0; jr < nc; jr += nr)
        {
            int cols = Math.Min(nr, nc - jr);
            T* s = src + jr * cs;
            T* d = dst + jr * kc;
            if (cs == 1 && cols == nr)
            {
                uint bytes = (uint)(nr * sizeof(T));
                for (int p = 0; p < kc; p++, d += nr, s += rs) Unsafe.CopyBlockUnaligned(d, s, bytes);
                continue;
            }
            if (rs == 1 && cols == nr && Avx512F.IsSupported)
            {
                if (typeof(T) == typeof(float) && nr == 32) { GemmPackAvx512.Interleave32(kc, (float*)s, cs, (float*)d); continue; }
                if (typeof(T) == typeof(double) && nr == 16) { GemmPackAvx512.Interleave16(kc, (double*)s, cs, (double*)d); continue; }
            }
            if (rs == 1 && cols == nr)
            {
                // Column-major B (e.g. a transposed weight): each column is contiguous in k.
                for (int c = 0; c < nr; c++)
                {
                    T* sc = s + c * cs;
                    T* dc = d + c;
                    for (int p = 0; p < kc; p++) dc[p * nr] = sc[p];
                }
                continue;
            }
            for (int p = 0; p < kc; p++)
            {
                T* sp = s + p * rs;
                T* dp = d + p * nr;
                int c = 0;
                for (; c < cols; c++) dp[c] = sp[c * cs];
                for (; c < nr; c++) dp[c] = default;
            }
        }
    }
}

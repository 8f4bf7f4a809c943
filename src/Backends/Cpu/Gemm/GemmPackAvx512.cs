using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// AVX-512 interleaving for packing: <c>dst[p*R + r] = src[r*stride + p]</c> for R streams that are contiguous in p
/// (the columns of a column-major B, R = NR; the rows of a row-major A, R = MR = 6). Exact copies, so they change
/// speed only, never results. Callers check <see cref="Avx512F.IsSupported"/>.
/// </summary>
internal static unsafe class GemmPackAvx512
{
    /// <summary>32 float streams: two 16x16 transposes per 16 values of p; the p tail is copied one by one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Interleave32(int kc, float* src, long stride, float* dst)
    {
        int p = 0;
        for (; p + 16 <= kc; p += 16)
        {
            Transpose16(src + p, stride, dst + p * 32);
            Transpose16(src + 16 * stride + p, stride, dst + p * 32 + 16);
        }
        for (; p < kc; p++)
            for (int c = 0; c < 32; c++) dst[p * 32 + c] = src[c * stride + p];
    }

    /// <summary>16 double streams: two 8x8 transposes per 8 values of p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Interleave16(int kc, double* src, long stride, double* dst)
    {
        int p = 0;
        for (; p + 8 <= kc; p += 8)
        {
            Transpose8(src + p, stride, dst + p * 16);
            Transpose8(src + 8 * stride + p, stride, dst + p * 16 + 8);
        }
        for (; p < kc; p++)
            for (int c = 0; c < 16; c++) dst[p * 16 + c] = src[c * stride + p];
    }

    // Interleaving 6 rows: output vector j of a block takes its lanes from the row pairs (0,1), (2,3), (4,5) through
    // three two-source permutes, merged by two lane masks. Tables: [j][pair][lane] indices, then [j][2][lane] masks.
    private static readonly int[] s_six32, s_six32Masks;
    private static readonly long[] s_six64, s_six64Masks;

    static GemmPackAvx512()
    {
        s_six32 = SixTables(16, out s_six32Masks);
        s_six64 = Array.ConvertAll(SixTables(8, out var masks64), x => (long)x);
        s_six64Masks = Array.ConvertAll(masks64, x => (long)x);
    }

    private static int[] SixTables(int w, out int[] masks)
    {
        var idx = new int[6 * 3 * w];
        masks = new int[6 * 2 * w];
        for (int j = 0; j < 6; j++)
            for (int l = 0; l < w; l++)
            {
                int e = j * w + l, p = e / 6, r = e % 6, pair = r / 2;
                idx[(j * 3 + pair) * w + l] = p + (r % 2) * w;
                if (pair < 2) masks[(j * 2 + pair) * w + l] = -1;
            }
        return idx;
    }

    /// <summary>6 float streams (an A micro-panel from a row-major A), 16 values of p per step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Interleave6(int kc, float* src, long stride, float* dst)
    {
        int p = 0;
        fixed (int* idx = s_six32, mask = s_six32Masks)
        {
            for (; p + 16 <= kc; p += 16)
            {
                var x0 = Vector512.Load(src + p); var x1 = Vector512.Load(src + stride + p);
                var x2 = Vector512.Load(src + 2 * stride + p); var x3 = Vector512.Load(src + 3 * stride + p);
                var x4 = Vector512.Load(src + 4 * stride + p); var x5 = Vector512.Load(src + 5 * stride + p);
                float* d = dst + p * 6;
                for (int j = 0; j < 6; j++)
                {
                    var a = Avx512F.PermuteVar16x32x2(x0, Vector512.Load(idx + (j * 3) * 16), x1);
                    var b = Avx512F.PermuteVar16x32x2(x2, Vector512.Load(idx + (j * 3 + 1) * 16), x3);
                    var c = Avx512F.PermuteVar16x32x2(x4, Vector512.Load(idx + (j * 3 + 2) * 16), x5);
                    var m0 = Vector512.Load(mask + (j * 2) * 16).AsSingle();
                    var m1 = Vector512.Load(mask + (j * 2 + 1) * 16).AsSingle();
                    Vector512.Store(Vector512.ConditionalSelect(m0, a, Vector512.ConditionalSelect(m1, b, c)), d + j * 16);
                }
            }
        }
        for (; p < kc; p++)
            for (int r = 0; r < 6; r++) dst[p * 6 + r] = src[r * stride + p];
    }

    /// <summary>6 double streams, 8 values of p per step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Interleave6(int kc, double* src, long stride, double* dst)
    {
        int p = 0;
        fixed (long* idx = s_six64, mask = s_six64Masks)
        {
            for (; p + 8 <= kc; p += 8)
            {
                var x0 = Vector512.Load(src + p); var x1 = Vector512.Load(src + stride + p);
                var x2 = Vector512.Load(src + 2 * stride + p); var x3 = Vector512.Load(src + 3 * stride + p);
                var x4 = Vector512.Load(src + 4 * stride + p); var x5 = Vector512.Load(src + 5 * stride + p);
                double* d = dst + p * 6;
                for (int j = 0; j < 6; j++)
                {
                    var a = Avx512F.PermuteVar8x64x2(x0, Vector512.Load(idx + (j * 3) * 8), x1);
                    var b = Avx512F.PermuteVar8x64x2(x2, Vector512.Load(idx + (j * 3 + 1) * 8), x3);
                    var c = Avx512F.PermuteVar8x64x2(x4, Vector512.Load(idx + (j * 3 + 2) * 8), x5);
                    var m0 = Vector512.Load(mask + (j * 2) * 8).AsDouble();
                    var m1 = Vector512.Load(mask + (j * 2 + 1) * 8).AsDouble();
                    Vector512.Store(Vector512.ConditionalSelect(m0, a, Vector512.ConditionalSelect(m1, b, c)), d + j * 8);
                }
            }
        }
        for (; p < kc; p++)
            for (int r = 0; r < 6; r++) dst[p * 6 + r] = src[r * stride + p];
    }

    /// <summary>Transposes a 16x16 float block: row r (16 values at s + r*stride) becomes column r of d (row pitch <paramref name="pitch"/>, 32 for Interleave32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose16(float* s, long stride, float* d, int pitch = 32)
    {
        var r0 = Vector512.Load(s); var r1 = Vector512.Load(s + stride);
        var r2 = Vector512.Load(s + 2 * stride); var r3 = Vector512.Load(s + 3 * stride);
        var r4 = Vector512.Load(s + 4 * stride); var r5 = Vector512.Load(s + 5 * stride);
        var r6 = Vector512.Load(s + 6 * stride); var r7 = Vector512.Load(s + 7 * stride);
        var r8 = Vector512.Load(s + 8 * stride); var r9 = Vector512.Load(s + 9 * stride);
        var r10 = Vector512.Load(s + 10 * stride); var r11 = Vector512.Load(s + 11 * stride);
        var r12 = Vector512.Load(s + 12 * stride); var r13 = Vector512.Load(s + 13 * stride);
        var r14 = Vector512.Load(s + 14 * stride); var r15 = Vector512.Load(s + 15 * stride);

        // 32-bit interleave within 128-bit lanes.
        var t0 = Avx512F.UnpackLow(r0, r1); var t1 = Avx512F.UnpackHigh(r0, r1);
        var t2 = Avx512F.UnpackLow(r2, r3); var t3 = Avx512F.UnpackHigh(r2, r3);
        var t4 = Avx512F.UnpackLow(r4, r5); var t5 = Avx512F.UnpackHigh(r4, r5);
        var t6 = Avx512F.UnpackLow(r6, r7); var t7 = Avx512F.UnpackHigh(r6, r7);
        var t8 = Avx512F.UnpackLow(r8, r9); var t9 = Avx512F.UnpackHigh(r8, r9);
        var t10 = Avx512F.UnpackLow(r10, r11); var t11 = Avx512F.UnpackHigh(r10, r11);
        var t12 = Avx512F.UnpackLow(r12, r13); var t13 = Avx512F.UnpackHigh(r12, r13);
        var t14 = Avx512F.UnpackLow(r14, r15); var t15 = Avx512F.UnpackHigh(r14, r15);

        // 64-bit interleave: u[4q + x] holds, per 128-bit lane j, rows 4q..4q+3 at p = 4j + x.
        var u0 = Lo64(t0, t2); var u1 = Hi64(t0, t2); var u2 = Lo64(t1, t3); var u3 = Hi64(t1, t3);
        var u4 = Lo64(t4, t6); var u5 = Hi64(t4, t6); var u6 = Lo64(t5, t7); var u7 = Hi64(t5, t7);
        var u8 = Lo64(t8, t10); var u9 = Hi64(t8, t10); var u10 = Lo64(t9, t11); var u11 = Hi64(t9, t11);
        var u12 = Lo64(t12, t14); var u13 = Hi64(t12, t14); var u14 = Lo64(t13, t15); var u15 = Hi64(t13, t15);

        // 128-bit lane shuffles: gather the four row groups of each p.
        var v0 = Avx512F.Shuffle4x128(u0, u4, 0x88); var v4 = Avx512F.Shuffle4x128(u0, u4, 0xDD);
        var v1 = Avx512F.Shuffle4x128(u1, u5, 0x88); var v5 = Avx512F.Shuffle4x128(u1, u5, 0xDD);
        var v2 = Avx512F.Shuffle4x128(u2, u6, 0x88); var v6 = Avx512F.Shuffle4x128(u2, u6, 0xDD);
        var v3 = Avx512F.Shuffle4x128(u3, u7, 0x88); var v7 = Avx512F.Shuffle4x128(u3, u7, 0xDD);
        var v8 = Avx512F.Shuffle4x128(u8, u12, 0x88); var v12 = Avx512F.Shuffle4x128(u8, u12, 0xDD);
        var v9 = Avx512F.Shuffle4x128(u9, u13, 0x88); var v13 = Avx512F.Shuffle4x128(u9, u13, 0xDD);
        var v10 = Avx512F.Shuffle4x128(u10, u14, 0x88); var v14 = Avx512F.Shuffle4x128(u10, u14, 0xDD);
        var v11 = Avx512F.Shuffle4x128(u11, u15, 0x88); var v15 = Avx512F.Shuffle4x128(u11, u15, 0xDD);

        Vector512.Store(Avx512F.Shuffle4x128(v0, v8, 0x88), d);
        Vector512.Store(Avx512F.Shuffle4x128(v1, v9, 0x88), d + pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v2, v10, 0x88), d + 2 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v3, v11, 0x88), d + 3 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v4, v12, 0x88), d + 4 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v5, v13, 0x88), d + 5 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v6, v14, 0x88), d + 6 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v7, v15, 0x88), d + 7 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v0, v8, 0xDD), d + 8 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v1, v9, 0xDD), d + 9 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v2, v10, 0xDD), d + 10 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v3, v11, 0xDD), d + 11 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v4, v12, 0xDD), d + 12 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v5, v13, 0xDD), d + 13 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v6, v14, 0xDD), d + 14 * pitch);
        Vector512.Store(Avx512F.Shuffle4x128(v7, v15, 0xDD), d + 15 * pitch);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Lo64(Vector512<float> a, Vector512<float> b)
        => Avx512F.UnpackLow(a.AsDouble(), b.AsDouble()).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Hi64(Vector512<float> a, Vector512<float> b)
        => Avx512F.UnpackHigh(a.AsDouble(), b.AsDouble()).AsSingle();

    /// <summary>Transposes an 8x8 double block: row r (8 values at s + r*stride) becomes column r of d (row pitch 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8(double* s, long stride, double* d)
    {
        var r0 = Vector512.Load(s); var r1 = Vector512.Load(s + stride);
        var r2 = Vector512.Load(s + 2 * stride); var r3 = Vector512.Load(s + 3 * stride);
        var r4 = Vector512.Load(s + 4 * stride); var r5 = Vector512.Load(s + 5 * stride);
        var r6 = Vector512.Load(s + 6 * stride); var r7 = Vector512.Load(s + 7 * stride);

        // Per 128-bit lane j: t0 = rows 0,1 at p = 2j; t1 = rows 0,1 at p = 2j+1; and so on.
        var t0 = Avx512F.UnpackLow(r0, r1); var t1 = Avx512F.UnpackHigh(r0, r1);
        var t2 = Avx512F.UnpackLow(r2, r3); var t3 = Avx512F.UnpackHigh(r2, r3);
        var t4 = Avx512F.UnpackLow(r4, r5); var t5 = Avx512F.UnpackHigh(r4, r5);
        var t6 = Avx512F.UnpackLow(r6, r7); var t7 = Avx512F.UnpackHigh(r6, r7);

        // 128-bit lanes of v0: (rows 0,1 | p 0), (rows 0,1 | p 4), (rows 2,3 | p 0), (rows 2,3 | p 4); v1: p 1 | 5;
        // v2: p 2 | 6; v3: p 3 | 7; v4..v7 the same for rows 4-7.
        var v0 = Avx512F.Shuffle4x128(t0, t2, 0x88); var v2 = Avx512F.Shuffle4x128(t0, t2, 0xDD);
        var v1 = Avx512F.Shuffle4x128(t1, t3, 0x88); var v3 = Avx512F.Shuffle4x128(t1, t3, 0xDD);
        var v4 = Avx512F.Shuffle4x128(t4, t6, 0x88); var v6 = Avx512F.Shuffle4x128(t4, t6, 0xDD);
        var v5 = Avx512F.Shuffle4x128(t5, t7, 0x88); var v7 = Avx512F.Shuffle4x128(t5, t7, 0xDD);

        Vector512.Store(Avx512F.Shuffle4x128(v0, v4, 0x88), d);
        Vector512.Store(Avx512F.Shuffle4x128(v1, v5, 0x88), d + 16);
        Vector512.Store(Avx512F.Shuffle4x128(v2, v6, 0x88), d + 2 * 16);
        Vector512.Store(Avx512F.Shuffle4x128(v3, v7, 0x88), d + 3 * 16);
        Vector512.Store(Avx512F.Shuffle4x128(v0, v4, 0xDD), d + 4 * 16);
        Vector512.Store(Avx512F.Shuffle4x128(v1, v5, 0xDD), d + 5 * 16);
        Vector512.Store(Avx512F.Shuffle4x128(v2, v6, 0xDD), d + 6 * 16);
        Vector512.Store(Avx512F.Shuffle4x128(v3, v7, 0xDD), d + 7 * 16);
    }
}

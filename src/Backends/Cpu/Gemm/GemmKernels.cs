using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// A GEMM micro-kernel: computes an <c>MR x NR</c> tile of C from a packed A micro-panel
/// (<c>kc</c> columns of <c>MR</c> values) and a packed B micro-panel (<c>kc</c> rows of <c>NR</c> values),
/// plus the cache-blocking parameters that suit it and a direct (unpacked) row routine for small problems.
/// </summary>
/// <remarks>
/// Every implementation sums each output element in a fixed order: the accumulator starts at zero, takes
/// <c>kc</c> fused multiply-adds in k order, and is then stored (<c>add == false</c>) or added to C once.
/// The driver relies on that for results that do not depend on the thread count.
/// </remarks>
internal unsafe interface IGemmKernel<T> where T : unmanaged
{
    /// <summary>Rows of the micro-tile.</summary>
    static abstract int MR { get; }
    /// <summary>Columns of the micro-tile.</summary>
    static abstract int NR { get; }
    /// <summary>Depth of a packed block (elements of k).</summary>
    static abstract int KC { get; }
    /// <summary>Rows of a packed A block (kept in L2).</summary>
    static abstract int MC { get; }
    /// <summary>Columns of a packed B block (kept in L3).</summary>
    static abstract int NC { get; }

    /// <summary>C[0..MR, 0..NR] = (add ? C + acc : acc), acc = sum over p of a[p*MR + i] * b[p*NR + j].</summary>
    static abstract void Tile(int kc, T* a, T* b, T* c, long ldc, bool add);

    /// <summary>
    /// Up to <see cref="GemmDirect.MaxRows"/> rows of a product without packing, B rows contiguous:
    /// c[i*ldc + j] (+)= sum_p a[i*aRow + p*aCol] * b[p*bRow + j] for i in [0, rows), j in [0, n).
    /// </summary>
    static abstract void DirectRows(int rows, int n, int k, T* a, long aRow, long aCol, T* b, long bRow, T* c, long ldc, bool add);

    /// <summary>
    /// Up to <see cref="GemmDirect.MaxDotRows"/> rows of a product without packing, A rows and B columns contiguous
    /// (dot products): c[i*ldc + j] (+)= sum_p a[i*aRow + p] * b[p + j*bCol].
    /// </summary>
    static abstract void DotRows(int rows, int n, int k, T* a, long aRow, T* b, long bCol, T* c, long ldc, bool add);
}

/// <summary>Fused multiply-add helpers generic over float/double (the type tests fold away at JIT time).</summary>
internal static class GemmMath
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Fma<T>(Vector512<T> a, Vector512<T> b, Vector512<T> c)
    {
        if (typeof(T) == typeof(float))
            return Vector512.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
        if (typeof(T) == typeof(double))
            return Vector512.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
        throw new NotSupportedException();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> Fma<T>(Vector256<T> a, Vector256<T> b, Vector256<T> c)
    {
        if (typeof(T) == typeof(float))
            return Vector256.FusedMultiplyAdd(a.AsSingle(), b.AsSingle(), c.AsSingle()).As<float, T>();
        if (typeof(T) == typeof(double))
            return Vector256.FusedMultiplyAdd(a.AsDouble(), b.AsDouble(), c.AsDouble()).As<double, T>();
        throw new NotSupportedException();
    }

    /// <summary>Prefetches the C micro-tile (read back at the end of the kernel) while the k loop runs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void PrefetchTile<T>(T* c, long ldc, int rows, int rowBytes) where T : unmanaged
    {
        if (!Sse.IsSupported) return;
        for (int i = 0; i < rows; i++)
        {
            byte* row = (byte*)(c + i * ldc);
            for (int off = 0; off < rowBytes; off += 64) Sse.Prefetch0(row + off);
        }
    }
}

/// <summary>AVX-512 kernel: 6 rows x 2 Vector512 (6x32 float, 6x16 double), 12 accumulators in registers.</summary>
internal readonly unsafe struct Avx512Kernel<T> : IGemmKernel<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public static int MR => 6;
    public static int NR => 2 * Vector512<T>.Count;
    public static int KC => 256;
    public static int MC => sizeof(T) == 4 ? 192 : 96;
    public static int NC => sizeof(T) == 4 ? 2048 : 1024;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Tile(int kc, T* a, T* b, T* c, long ldc, bool add)
    {
        int w = Vector512<T>.Count;
        GemmMath.PrefetchTile(c, ldc, 6, 2 * w * sizeof(T));
        Vector512<T> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector512<T> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + w);
            var av = Vector512.Create(a[0]); c00 = GemmMath.Fma(av, b0, c00); c01 = GemmMath.Fma(av, b1, c01);
            av = Vector512.Create(a[1]); c10 = GemmMath.Fma(av, b0, c10); c11 = GemmMath.Fma(av, b1, c11);
            av = Vector512.Create(a[2]); c20 = GemmMath.Fma(av, b0, c20); c21 = GemmMath.Fma(av, b1, c21);
            av = Vector512.Create(a[3]); c30 = GemmMath.Fma(av, b0, c30); c31 = GemmMath.Fma(av, b1, c31);
            av = Vector512.Create(a[4]); c40 = GemmMath.Fma(av, b0, c40); c41 = GemmMath.Fma(av, b1, c41);
            av = Vector512.Create(a[5]); c50 = GemmMath.Fma(av, b0, c50); c51 = GemmMath.Fma(av, b1, c51);
            a += 6;
            b += 2 * w;
        }
        Put(c, w, c00, c01, add); c += ldc;
        Put(c, w, c10, c11, add); c += ldc;
        Put(c, w, c20, c21, add); c += ldc;
        Put(c, w, c30, c31, add); c += ldc;
        Put(c, w, c40, c41, add); c += ldc;
        Put(c, w, c50, c51, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(T* c, int w, Vector512<T> x0, Vector512<T> x1, bool add)
    {
        if (add)
        {
            x0 += Vector512.Load(c);
            x1 += Vector512.Load(c + w);
        }
        Vector512.Store(x0, c);
        Vector512.Store(x1, c + w);
    }

    public static void DirectRows(int rows, int n, int k, T* a, long aRow, long aCol, T* b, long bRow, T* c, long ldc, bool add)
        => GemmDirect.Rows512(rows, n, k, a, aRow, aCol, b, bRow, c, ldc, add);

    public static void DotRows(int rows, int n, int k, T* a, long aRow, T* b, long bCol, T* c, long ldc, bool add)
        => GemmDirect.Dot512(rows, n, k, a, aRow, b, bCol, c, ldc, add);
}

/// <summary>AVX2/FMA kernel: 6 rows x 2 Vector256 (6x16 float, 6x8 double), 12 accumulators in registers.</summary>
internal readonly unsafe struct Avx2Kernel<T> : IGemmKernel<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public static int MR => 6;
    public static int NR => 2 * Vector256<T>.Count;
    public static int KC => 256;
    public static int MC => sizeof(T) == 4 ? 144 : 72;
    public static int NC => sizeof(T) == 4 ? 2048 : 1024;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Tile(int kc, T* a, T* b, T* c, long ldc, bool add)
    {
        int w = Vector256<T>.Count;
        GemmMath.PrefetchTile(c, ldc, 6, 2 * w * sizeof(T));
        Vector256<T> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<T> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + w);
            var av = Vector256.Create(a[0]); c00 = GemmMath.Fma(av, b0, c00); c01 = GemmMath.Fma(av, b1, c01);
            av = Vector256.Create(a[1]); c10 = GemmMath.Fma(av, b0, c10); c11 = GemmMath.Fma(av, b1, c11);
            av = Vector256.Create(a[2]); c20 = GemmMath.Fma(av, b0, c20); c21 = GemmMath.Fma(av, b1, c21);
            av = Vector256.Create(a[3]); c30 = GemmMath.Fma(av, b0, c30); c31 = GemmMath.Fma(av, b1, c31);
            av = Vector256.Create(a[4]); c40 = GemmMath.Fma(av, b0, c40); c41 = GemmMath.Fma(av, b1, c41);
            av = Vector256.Create(a[5]); c50 = GemmMath.Fma(av, b0, c50); c51 = GemmMath.Fma(av, b1, c51);
            a += 6;
            b += 2 * w;
        }
        Put(c, w, c00, c01, add); c += ldc;
        Put(c, w, c10, c11, add); c += ldc;
        Put(c, w, c20, c21, add); c += ldc;
        Put(c, w, c30, c31, add); c += ldc;
        Put(c, w, c40, c41, add); c += ldc;
        Put(c, w, c50, c51, add);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(T* c, int w, Vector256<T> x0, Vector256<T> x1, bool add)
    {
        if (add)
        {
            x0 += Vector256.Load(c);
            x1 += Vector256.Load(c + w);
        }
        Vector256.Store(x0, c);
        Vector256.Store(x1, c + w);
    }

    public static void DirectRows(int rows, int n, int k, T* a, long aRow, long aCol, T* b, long bRow, T* c, long ldc, bool add)
        => GemmDirect.Rows256(rows, n, k, a, aRow, aCol, b, bRow, c, ldc, add);

    public static void DotRows(int rows, int n, int k, T* a, long aRow, T* b, long bCol, T* c, long ldc, bool add)
        => GemmDirect.Dot256(rows, n, k, a, aRow, b, bCol, c, ldc, add);
}

/// <summary>Portable scalar kernel (4x4), used when no FMA vector unit is available.</summary>
internal readonly unsafe struct ScalarKernel<T> : IGemmKernel<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    public static int MR => 4;
    public static int NR => 4;
    public static int KC => 256;
    public static int MC => 64;
    public static int NC => 1024;

    public static void Tile(int kc, T* a, T* b, T* c, long ldc, bool add)
    {
        T c00 = T.Zero, c01 = T.Zero, c02 = T.Zero, c03 = T.Zero, c10 = T.Zero, c11 = T.Zero, c12 = T.Zero, c13 = T.Zero;
        T c20 = T.Zero, c21 = T.Zero, c22 = T.Zero, c23 = T.Zero, c30 = T.Zero, c31 = T.Zero, c32 = T.Zero, c33 = T.Zero;
        for (int p = 0; p < kc; p++, a += 4, b += 4)
        {
            T b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
            T a0 = a[0]; c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
            T a1 = a[1]; c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
            T a2 = a[2]; c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
            T a3 = a[3]; c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
        }
        Put(c, c00, c01, c02, c03, add); c += ldc;
        Put(c, c10, c11, c12, c13, add); c += ldc;
        Put(c, c20, c21, c22, c23, add); c += ldc;
        Put(c, c30, c31, c32, c33, add);
    }

    private static void Put(T* c, T x0, T x1, T x2, T x3, bool add)
    {
        if (add) { c[0] += x0; c[1] += x1; c[2] += x2; c[3] += x3; }
        else { c[0] = x0; c[1] = x1; c[2] = x2; c[3] = x3; }
    }

    public static void DirectRows(int rows, int n, int k, T* a, long aRow, long aCol, T* b, long bRow, T* c, long ldc, bool add)
    {
        for (int i = 0; i < rows; i++) GemmScalar.DirectTail(0, n, k, a + i * aRow, aCol, b, bRow, c + i * ldc, add, fused: false);
    }

    public static void DotRows(int rows, int n, int k, T* a, long aRow, T* b, long bCol, T* c, long ldc, bool add)
    {
        for (int i = 0; i < rows; i++) GemmScalar.StridedRow(n, k, a + i * aRow, 1, b, 1, bCol, c + i * ldc, add, fused: false);
    }
}

/// <summary>Scalar loops shared by the kernels (direct-path tails and arbitrary-stride small products).</summary>
internal static unsafe class GemmScalar
{
    /// <summary>c[j] (+)= sum_p a[p*aStride] * b[p*bStride + j] for j in [j0, n), one element at a time.</summary>
    public static void DirectTail<T>(int j0, int n, int k, T* a, long aStride, T* b, long bStride, T* c, bool add, bool fused)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int j = j0; j < n; j++)
        {
            T acc = T.Zero;
            T* pa = a, pb = b + j;
            if (fused)
                for (int p = 0; p < k; p++, pa += aStride, pb += bStride) acc = T.FusedMultiplyAdd(*pa, *pb, acc);
            else
                for (int p = 0; p < k; p++, pa += aStride, pb += bStride) acc += *pa * *pb;
            c[j] = add ? c[j] + acc : acc;
        }
    }

    /// <summary>One row with an arbitrary B column stride: c[j] (+)= sum_p a[p*aStride] * b[p*bRow + j*bCol].</summary>
    public static void StridedRow<T>(int n, int k, T* a, long aStride, T* b, long bRow, long bCol, T* c, bool add, bool fused)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int j = 0; j < n; j++)
        {
            T acc = T.Zero;
            T* pa = a, pb = b + j * bCol;
            if (fused)
                for (int p = 0; p < k; p++, pa += aStride, pb += bRow) acc = T.FusedMultiplyAdd(*pa, *pb, acc);
            else
                for (int p = 0; p < k; p++, pa += aStride, pb += bRow) acc += *pa * *pb;
            c[j] = add ? c[j] + acc : acc;
        }
    }
}

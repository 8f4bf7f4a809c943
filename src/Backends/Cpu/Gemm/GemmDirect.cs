using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// Unpacked GEMM paths for small or thin products (few rows, or few columns with contiguous dot products), where
/// packing would cost more than it saves. Each output element has one fixed summation order, independent of how
/// rows and columns are grouped, so thread splits do not change results.
/// </summary>
internal static unsafe class GemmDirect
{
    /// <summary>Rows computed together by the row paths (they share each B load).</summary>
    public const int MaxRows = 4;
    /// <summary>Rows computed together by the dot-product paths.</summary>
    public const int MaxDotRows = 2;

    // ---- Row paths: c[i, j..j+w) accumulates broadcast(a[i,p]) * b[p, j..j+w) in p order, in blocks of
    // DepthBlock values of p (each block summed from zero, then added to C), so that a large B is walked one
    // TLB-friendly band of rows at a time; the next column strip is prefetched while the current one is summed. ----

    /// <summary>Depth of one block of the row paths (a constant, so the summation order depends on k only).</summary>
    private const int DepthBlock = 256;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(void* p, int bytes)
    {
        if (!Sse.IsSupported) return;
        for (int off = 0; off < bytes; off += 64) Sse.Prefetch0((byte*)p + off);
    }

    public static void Rows512<T>(int rows, int n, int k, T* a, long aRow, long aCol, T* b, long bRow, T* c, long ldc, bool add)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int p0 = 0; p0 < k; p0 += DepthBlock)
            RowsBlock512(rows, n, Math.Min(DepthBlock, k - p0), a + p0 * aCol, aRow, aCol, b + p0 * bRow, bRow, c, ldc, add || p0 > 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowsBlock512<T>(int rows, int n, int k, T* a, long aRow, long aCol, T* b, long bRow, T* c, long ldc, bool add)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int w = Vector512<T>.Count;
        // Rows past `rows` repeat row 0 (computed, never stored) so the loop body stays branch-free.
        T* a0 = a, a1 = a + (rows > 1 ? aRow : 0), a2 = a + (rows > 2 ? 2 * aRow : 0), a3 = a + (rows > 3 ? 3 * aRow : 0);
        int j = 0;
        for (; j + 2 * w <= n; j += 2 * w)
        {
            Vector512<T> x00 = default, x01 = default, x10 = default, x11 = default;
            Vector512<T> x20 = default, x21 = default, x30 = default, x31 = default;
            T* pb = b + j;
            long o = 0;
            for (int p = 0; p < k; p++, pb += bRow, o += aCol)
            {
                Prefetch(pb + 2 * w, 2 * w * sizeof(T));
                var b0 = Vector512.Load(pb);
                var b1 = Vector512.Load(pb + w);
                var av = Vector512.Create(a0[o]); x00 = GemmMath.Fma(av, b0, x00); x01 = GemmMath.Fma(av, b1, x01);
                av = Vector512.Create(a1[o]); x10 = GemmMath.Fma(av, b0, x10); x11 = GemmMath.Fma(av, b1, x11);
                av = Vector512.Create(a2[o]); x20 = GemmMath.Fma(av, b0, x20); x21 = GemmMath.Fma(av, b1, x21);
                av = Vector512.Create(a3[o]); x30 = GemmMath.Fma(av, b0, x30); x31 = GemmMath.Fma(av, b1, x31);
            }
            T* cj = c + j;
            Put(cj, x00, add); Put(cj + w, x01, add);
            if (rows > 1) { Put(cj + ldc, x10, add); Put(cj + ldc + w, x11, add); }
            if (rows > 2) { Put(cj + 2 * ldc, x20, add); Put(cj + 2 * ldc + w, x21, add); }
            if (rows > 3) { Put(cj + 3 * ldc, x30, add); Put(cj + 3 * ldc + w, x31, add); }
        }
        for (; j + w <= n; j += w)
        {
            Vector512<T> x0 = default, x1 = default, x2 = default, x3 = default;
            T* pb = b + j;
            long o = 0;
            for (int p = 0; p < k; p++, pb += bRow, o += aCol)
            {
                var b0 = Vector512.Load(pb);
                x0 = GemmMath.Fma(Vector512.Create(a0[o]), b0, x0);
                x1 = GemmMath.Fma(Vector512.Create(a1[o]), b0, x1);
                x2 = GemmMath.Fma(Vector512.Create(a2[o]), b0, x2);
                x3 = GemmMath.Fma(Vector512.Create(a3[o]), b0, x3);
            }
            T* cj = c + j;
            Put(cj, x0, add);
            if (rows > 1) Put(cj + ldc, x1, add);
            if (rows > 2) Put(cj + 2 * ldc, x2, add);
            if (rows > 3) Put(cj + 3 * ldc, x3, add);
        }
        if (j < n)
            for (int i = 0; i < rows; i++) GemmScalar.DirectTail(j, n, k, a + i * aRow, aCol, b, bRow, c + i * ldc, add, fused: true);
    }

    public static void Rows256<T>(int rows, int n, int k, T* a, long aRow, long aCol, T* b, long bRow, T* c, long ldc, bool add)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int p0 = 0; p0 < k; p0 += DepthBlock)
            RowsBlock256(rows, n, Math.Min(DepthBlock, k - p0), a + p0 * aCol, aRow, aCol, b + p0 * bRow, bRow, c, ldc, add || p0 > 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowsBlock256<T>(int rows, int n, int k, T* a, long aRow, long aCol, T* b, long bRow, T* c, long ldc, bool add)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int w = Vector256<T>.Count;
        T* a0 = a, a1 = a + (rows > 1 ? aRow : 0), a2 = a + (rows > 2 ? 2 * aRow : 0), a3 = a + (rows > 3 ? 3 * aRow : 0);
        int j = 0;
        for (; j + 2 * w <= n; j += 2 * w)
        {
            Vector256<T> x00 = default, x01 = default, x10 = default, x11 = default;
            Vector256<T> x20 = default, x21 = default, x30 = default, x31 = default;
            T* pb = b + j;
            long o = 0;
            for (int p = 0; p < k; p++, pb += bRow, o += aCol)
            {
                Prefetch(pb + 2 * w, 2 * w * sizeof(T));
                var b0 = Vector256.Load(pb);
                var b1 = Vector256.Load(pb + w);
                var av = Vector256.Create(a0[o]); x00 = GemmMath.Fma(av, b0, x00); x01 = GemmMath.Fma(av, b1, x01);
                av = Vector256.Create(a1[o]); x10 = GemmMath.Fma(av, b0, x10); x11 = GemmMath.Fma(av, b1, x11);
                av = Vector256.Create(a2[o]); x20 = GemmMath.Fma(av, b0, x20); x21 = GemmMath.Fma(av, b1, x21);
                av = Vector256.Create(a3[o]); x30 = GemmMath.Fma(av, b0, x30); x31 = GemmMath.Fma(av, b1, x31);
            }
            T* cj = c + j;
            Put(cj, x00, add); Put(cj + w, x01, add);
            if (rows > 1) { Put(cj + ldc, x10, add); Put(cj + ldc + w, x11, add); }
            if (rows > 2) { Put(cj + 2 * ldc, x20, add); Put(cj + 2 * ldc + w, x21, add); }
            if (rows > 3) { Put(cj + 3 * ldc, x30, add); Put(cj + 3 * ldc + w, x31, add); }
        }
        for (; j + w <= n; j += w)
        {
            Vector256<T> x0 = default, x1 = default, x2 = default, x3 = default;
            T* pb = b + j;
            long o = 0;
            for (int p = 0; p < k; p++, pb += bRow, o += aCol)
            {
                var b0 = Vector256.Load(pb);
                x0 = GemmMath.Fma(Vector256.Create(a0[o]), b0, x0);
                x1 = GemmMath.Fma(Vector256.Create(a1[o]), b0, x1);
                x2 = GemmMath.Fma(Vector256.Create(a2[o]), b0, x2);
                x3 = GemmMath.Fma(Vector256.Create(a3[o]), b0, x3);
            }
            T* cj = c + j;
            Put(cj, x0, add);
            if (rows > 1) Put(cj + ldc, x1, add);
            if (rows > 2) Put(cj + 2 * ldc, x2, add);
            if (rows > 3) Put(cj + 3 * ldc, x3, add);
        }
        if (j < n)
            for (int i = 0; i < rows; i++) GemmScalar.DirectTail(j, n, k, a + i * aRow, aCol, b, bRow, c + i * ldc, add, fused: true);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put<T>(T* c, Vector512<T> x, bool add) where T : unmanaged
    {
        if (add) x += Vector512.Load(c);
        Vector512.Store(x, c);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put<T>(T* c, Vector256<T> x, bool add) where T : unmanaged
    {
        if (add) x += Vector256.Load(c);
        Vector256.Store(x, c);
    }

    // ---- Dot paths: c[i,j] = (lane-wise FMA over whole vectors of p, then Sum) then a scalar FMA tail. ----

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Dot512<T>(int rows, int n, int k, T* a, long aRow, T* b, long bCol, T* c, long ldc, bool add)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int w = Vector512<T>.Count, kv = k - k % w;
        T* a0 = a, a1 = a + (rows > 1 ? aRow : 0);
        int j = 0;
        for (; j + 4 <= n; j += 4)
        {
            T* b0 = b + j * bCol, b1 = b0 + bCol, b2 = b1 + bCol, b3 = b2 + bCol;
            Vector512<T> s00 = default, s01 = default, s02 = default, s03 = default;
            Vector512<T> s10 = default, s11 = default, s12 = default, s13 = default;
            for (int p = 0; p < kv; p += w)
            {
                var x0 = Vector512.Load(a0 + p);
                var x1 = Vector512.Load(a1 + p);
                var y = Vector512.Load(b0 + p); s00 = GemmMath.Fma(x0, y, s00); s10 = GemmMath.Fma(x1, y, s10);
                y = Vector512.Load(b1 + p); s01 = GemmMath.Fma(x0, y, s01); s11 = GemmMath.Fma(x1, y, s11);
                y = Vector512.Load(b2 + p); s02 = GemmMath.Fma(x0, y, s02); s12 = GemmMath.Fma(x1, y, s12);
                y = Vector512.Load(b3 + p); s03 = GemmMath.Fma(x0, y, s03); s13 = GemmMath.Fma(x1, y, s13);
            }
            DotPut(c + j, Vector512.Sum(s00), a0, b0, kv, k, add); DotPut(c + j + 1, Vector512.Sum(s01), a0, b1, kv, k, add);
            DotPut(c + j + 2, Vector512.Sum(s02), a0, b2, kv, k, add); DotPut(c + j + 3, Vector512.Sum(s03), a0, b3, kv, k, add);
            if (rows > 1)
            {
                T* c1 = c + ldc + j;
                DotPut(c1, Vector512.Sum(s10), a1, b0, kv, k, add); DotPut(c1 + 1, Vector512.Sum(s11), a1, b1, kv, k, add);
                DotPut(c1 + 2, Vector512.Sum(s12), a1, b2, kv, k, add); DotPut(c1 + 3, Vector512.Sum(s13), a1, b3, kv, k, add);
            }
        }
        for (; j < n; j++)
        {
            T* b0 = b + j * bCol;
            Vector512<T> s0 = default, s1 = default;
            for (int p = 0; p < kv; p += w)
            {
                var y = Vector512.Load(b0 + p);
                s0 = GemmMath.Fma(Vector512.Load(a0 + p), y, s0);
                s1 = GemmMath.Fma(Vector512.Load(a1 + p), y, s1);
            }
            DotPut(c + j, Vector512.Sum(s0), a0, b0, kv, k, add);
            if (rows > 1) DotPut(c + ldc + j, Vector512.Sum(s1), a1, b0, kv, k, add);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Dot256<T>(int rows, int n, int k, T* a, long aRow, T* b, long bCol, T* c, long ldc, bool add)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int w = Vector256<T>.Count, kv = k - k % w;
        T* a0 = a, a1 = a + (rows > 1 ? aRow : 0);
        int j = 0;
        for (; j + 4 <= n; j += 4)
        {
            T* b0 = b + j * bCol, b1 = b0 + bCol, b2 = b1 + bCol, b3 = b2 + bCol;
            Vector256<T> s00 = default, s01 = default, s02 = default, s03 = default;
            Vector256<T> s10 = default, s11 = default, s12 = default, s13 = default;
            for (int p = 0; p < kv; p += w)
            {
                var x0 = Vector256.Load(a0 + p);
                var x1 = Vector256.Load(a1 + p);
                var y = Vector256.Load(b0 + p); s00 = GemmMath.Fma(x0, y, s00); s10 = GemmMath.Fma(x1, y, s10);
                y = Vector256.Load(b1 + p); s01 = GemmMath.Fma(x0, y, s01); s11 = GemmMath.Fma(x1, y, s11);
                y = Vector256.Load(b2 + p); s02 = GemmMath.Fma(x0, y, s02); s12 = GemmMath.Fma(x1, y, s12);
                y = Vector256.Load(b3 + p); s03 = GemmMath.Fma(x0, y, s03); s13 = GemmMath.Fma(x1, y, s13);
            }
            DotPut(c + j, Vector256.Sum(s00), a0, b0, kv, k, add); DotPut(c + j + 1, Vector256.Sum(s01), a0, b1, kv, k, add);
            DotPut(c + j + 2, Vector256.Sum(s02), a0, b2, kv, k, add); DotPut(c + j + 3, Vector256.Sum(s03), a0, b3, kv, k, add);
            if (rows > 1)
            {
                T* c1 = c + ldc + j;
                DotPut(c1, Vector256.Sum(s10), a1, b0, kv, k, add); DotPut(c1 + 1, Vector256.Sum(s11), a1, b1, kv, k, add);
                DotPut(c1 + 2, Vector256.Sum(s12), a1, b2, kv, k, add); DotPut(c1 + 3, Vector256.Sum(s13), a1, b3, kv, k, add);
            }
        }
        for (; j < n; j++)
        {
            T* b0 = b + j * bCol;
            Vector256<T> s0 = default, s1 = default;
            for (int p = 0; p < kv; p += w)
            {
                var y = Vector256.Load(b0 + p);
                s0 = GemmMath.Fma(Vector256.Load(a0 + p), y, s0);
                s1 = GemmMath.Fma(Vector256.Load(a1 + p), y, s1);
            }
            DotPut(c + j, Vector256.Sum(s0), a0, b0, kv, k, add);
            if (rows > 1) DotPut(c + ldc + j, Vector256.Sum(s1), a1, b0, kv, k, add);
        }
    }

    /// <summary>Finishes one dot product with the scalar tail [kv, k) and stores or adds it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DotPut<T>(T* c, T sum, T* a, T* b, int kv, int k, bool add) where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int p = kv; p < k; p++) sum = T.FusedMultiplyAdd(a[p], b[p], sum);
        *c = add ? *c + sum : sum;
    }
}

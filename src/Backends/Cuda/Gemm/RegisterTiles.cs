// Register tiles: one field per accumulator and straight-line code, because ILGPU does not unroll loops and keeps a
// struct local's fields in registers only when each is named by a constant (the PTX of the 8×8 tile has no local
// memory; a test checks). Mechanical code: a new shape is a copy with the indices renumbered.
// A thread's rows (and columns) come in runs of four consecutive ones (two in the 2×2 tile), run q starting q·stride
// after the first: element i lies at row + i % 4 + (i / 4)·rowStride. Shared a is [k][m] and b [k][n], so a run is
// one 16-byte shared load (Run4: ld.shared.v4.f32, LDS.128) where single rows took four. Step's indices count runs.
using ILGPU;

namespace Engine.Backends.Cuda.Gemm;

/// <summary>A thread's 2×2 accumulators of the SIMT GEMM (rows <c>row + i % 4 + (i / 4)·rowStride</c>, columns likewise).</summary>
public struct Micro2x2<T, TMath> : IMicroTile<T> where T : unmanaged where TMath : struct, IGemmMath<T>
{
    T c00, c01;
    T c10, c11;

    /// <inheritdoc/>
    public readonly int TM => 2;

    /// <inheritdoc/>
    public readonly int TN => 2;

    /// <inheritdoc/>
    public readonly int Run => 2;

    /// <inheritdoc/>
    public void Step(ArrayView<T> sA, int a, int aStride, ArrayView<T> sB, int b, int bStride)
    {
        TMath f = default;
        // Runs of two: the pair's elements at 2a, 2a + 1 (scalar loads; this tile is a 64-thread test tiling).
        T a0 = sA[2 * a], a1 = sA[2 * a + 1];
        T b0 = sB[2 * b], b1 = sB[2 * b + 1];
        c00 = f.Fma(a0, b0, c00); c01 = f.Fma(a0, b1, c01);
        c10 = f.Fma(a1, b0, c10); c11 = f.Fma(a1, b1, c11);
    }

    /// <inheritdoc/>
    public readonly void Store(ArrayView<byte> y, long yBase, int row, int rowStride, int col, int colStride, int m, int n)
    {
        TMath f = default;
        int j0 = col, j1 = col + 1;
        long o;
        if (row < m)
        {
            o = yBase + (long)(row) * n;
            if (j0 < n) f.Store(y, o + j0, c00); if (j1 < n) f.Store(y, o + j1, c01);
        }
        if (row + 1 < m)
        {
            o = yBase + (long)(row + 1) * n;
            if (j0 < n) f.Store(y, o + j0, c10); if (j1 < n) f.Store(y, o + j1, c11);
        }
    }
}

/// <summary>A thread's 4×4 accumulators of the SIMT GEMM (rows <c>row + i % 4 + (i / 4)·rowStride</c>, columns likewise).</summary>
public struct Micro4x4<T, TMath> : IMicroTile<T> where T : unmanaged where TMath : struct, IGemmMath<T>
{
    T c00, c01, c02, c03;
    T c10, c11, c12, c13;
    T c20, c21, c22, c23;
    T c30, c31, c32, c33;

    /// <inheritdoc/>
    public readonly int TM => 4;

    /// <inheritdoc/>
    public readonly int TN => 4;

    /// <inheritdoc/>
    public readonly int Run => 4;

    /// <inheritdoc/>
    public void Step(ArrayView<T> sA, int a, int aStride, ArrayView<T> sB, int b, int bStride)
    {
        TMath f = default;
        var ra = sA.Cast<Run4<T>>()[a];
        var rb = sB.Cast<Run4<T>>()[b];
        T a0 = ra.X, a1 = ra.Y, a2 = ra.Z, a3 = ra.W;
        T b0 = rb.X, b1 = rb.Y, b2 = rb.Z, b3 = rb.W;
        c00 = f.Fma(a0, b0, c00); c01 = f.Fma(a0, b1, c01); c02 = f.Fma(a0, b2, c02); c03 = f.Fma(a0, b3, c03);
        c10 = f.Fma(a1, b0, c10); c11 = f.Fma(a1, b1, c11); c12 = f.Fma(a1, b2, c12); c13 = f.Fma(a1, b3, c13);
        c20 = f.Fma(a2, b0, c20); c21 = f.Fma(a2, b1, c21); c22 = f.Fma(a2, b2, c22); c23 = f.Fma(a2, b3, c23);
        c30 = f.Fma(a3, b0, c30); c31 = f.Fma(a3, b1, c31); c32 = f.Fma(a3, b2, c32); c33 = f.Fma(a3, b3, c33);
    }

    /// <inheritdoc/>
    public readonly void Store(ArrayView<byte> y, long yBase, int row, int rowStride, int col, int colStride, int m, int n)
    {
        TMath f = default;
        int j0 = col, j1 = col + 1, j2 = col + 2, j3 = col + 3;
        long o;
        if (row < m)
        {
            o = yBase + (long)(row) * n;
            if (j0 < n) f.Store(y, o + j0, c00); if (j1 < n) f.Store(y, o + j1, c01); if (j2 < n) f.Store(y, o + j2, c02); if (j3 < n) f.Store(y, o + j3, c03);
        }
        if (row + 1 < m)
        {
            o = yBase + (long)(row + 1) * n;
            if (j0 < n) f.Store(y, o + j0, c10); if (j1 < n) f.Store(y, o + j1, c11); if (j2 < n) f.Store(y, o + j2, c12); if (j3 < n) f.Store(y, o + j3, c13);
        }
        if (row + 2 < m)
        {
            o = yBase + (long)(row + 2) * n;
            if (j0 < n) f.Store(y, o + j0, c20); if (j1 < n) f.Store(y, o + j1, c21); if (j2 < n) f.Store(y, o + j2, c22); if (j3 < n) f.Store(y, o + j3, c23);
        }
        if (row + 3 < m)
        {
            o = yBase + (long)(row + 3) * n;
            if (j0 < n) f.Store(y, o + j0, c30); if (j1 < n) f.Store(y, o + j1, c31); if (j2 < n) f.Store(y, o + j2, c32); if (j3 < n) f.Store(y, o + j3, c33);
        }
    }
}

/// <summary>A thread's 8×8 accumulators of the SIMT GEMM (rows <c>row + i % 4 + (i / 4)·rowStride</c>, columns likewise).</summary>
public struct Micro8x8<T, TMath> : IMicroTile<T> where T : unmanaged where TMath : struct, IGemmMath<T>
{
    T c00, c01, c02, c03, c04, c05, c06, c07;
    T c10, c11, c12, c13, c14, c15, c16, c17;
    T c20, c21, c22, c23, c24, c25, c26, c27;
    T c30, c31, c32, c33, c34, c35, c36, c37;
    T c40, c41, c42, c43, c44, c45, c46, c47;
    T c50, c51, c52, c53, c54, c55, c56, c57;
    T c60, c61, c62, c63, c64, c65, c66, c67;
    T c70, c71, c72, c73, c74, c75, c76, c77;

    /// <inheritdoc/>
    public readonly int TM => 8;

    /// <inheritdoc/>
    public readonly int TN => 8;

    /// <inheritdoc/>
    public readonly int Run => 4;

    /// <inheritdoc/>
    public void Step(ArrayView<T> sA, int a, int aStride, ArrayView<T> sB, int b, int bStride)
    {
        TMath f = default;
        var va = sA.Cast<Run4<T>>(); var vb = sB.Cast<Run4<T>>();
        var ra0 = va[a]; var ra1 = va[a + aStride];
        var rb0 = vb[b]; var rb1 = vb[b + bStride];
        T a0 = ra0.X, a1 = ra0.Y, a2 = ra0.Z, a3 = ra0.W, a4 = ra1.X, a5 = ra1.Y, a6 = ra1.Z, a7 = ra1.W;
        T b0 = rb0.X, b1 = rb0.Y, b2 = rb0.Z, b3 = rb0.W, b4 = rb1.X, b5 = rb1.Y, b6 = rb1.Z, b7 = rb1.W;
        c00 = f.Fma(a0, b0, c00); c01 = f.Fma(a0, b1, c01); c02 = f.Fma(a0, b2, c02); c03 = f.Fma(a0, b3, c03); c04 = f.Fma(a0, b4, c04); c05 = f.Fma(a0, b5, c05); c06 = f.Fma(a0, b6, c06); c07 = f.Fma(a0, b7, c07);
        c10 = f.Fma(a1, b0, c10); c11 = f.Fma(a1, b1, c11); c12 = f.Fma(a1, b2, c12); c13 = f.Fma(a1, b3, c13); c14 = f.Fma(a1, b4, c14); c15 = f.Fma(a1, b5, c15); c16 = f.Fma(a1, b6, c16); c17 = f.Fma(a1, b7, c17);
        c20 = f.Fma(a2, b0, c20); c21 = f.Fma(a2, b1, c21); c22 = f.Fma(a2, b2, c22); c23 = f.Fma(a2, b3, c23); c24 = f.Fma(a2, b4, c24); c25 = f.Fma(a2, b5, c25); c26 = f.Fma(a2, b6, c26); c27 = f.Fma(a2, b7, c27);
        c30 = f.Fma(a3, b0, c30); c31 = f.Fma(a3, b1, c31); c32 = f.Fma(a3, b2, c32); c33 = f.Fma(a3, b3, c33); c34 = f.Fma(a3, b4, c34); c35 = f.Fma(a3, b5, c35); c36 = f.Fma(a3, b6, c36); c37 = f.Fma(a3, b7, c37);
        c40 = f.Fma(a4, b0, c40); c41 = f.Fma(a4, b1, c41); c42 = f.Fma(a4, b2, c42); c43 = f.Fma(a4, b3, c43); c44 = f.Fma(a4, b4, c44); c45 = f.Fma(a4, b5, c45); c46 = f.Fma(a4, b6, c46); c47 = f.Fma(a4, b7, c47);
        c50 = f.Fma(a5, b0, c50); c51 = f.Fma(a5, b1, c51); c52 = f.Fma(a5, b2, c52); c53 = f.Fma(a5, b3, c53); c54 = f.Fma(a5, b4, c54); c55 = f.Fma(a5, b5, c55); c56 = f.Fma(a5, b6, c56); c57 = f.Fma(a5, b7, c57);
        c60 = f.Fma(a6, b0, c60); c61 = f.Fma(a6, b1, c61); c62 = f.Fma(a6, b2, c62); c63 = f.Fma(a6, b3, c63); c64 = f.Fma(a6, b4, c64); c65 = f.Fma(a6, b5, c65); c66 = f.Fma(a6, b6, c66); c67 = f.Fma(a6, b7, c67);
        c70 = f.Fma(a7, b0, c70); c71 = f.Fma(a7, b1, c71); c72 = f.Fma(a7, b2, c72); c73 = f.Fma(a7, b3, c73); c74 = f.Fma(a7, b4, c74); c75 = f.Fma(a7, b5, c75); c76 = f.Fma(a7, b6, c76); c77 = f.Fma(a7, b7, c77);
    }

    /// <inheritdoc/>
    public readonly void Store(ArrayView<byte> y, long yBase, int row, int rowStride, int col, int colStride, int m, int n)
    {
        TMath f = default;
        int j0 = col, j1 = col + 1, j2 = col + 2, j3 = col + 3, j4 = col + colStride, j5 = col + colStride + 1, j6 = col + colStride + 2, j7 = col + colStride + 3;
        long o;
        if (row < m)
        {
            o = yBase + (long)(row) * n;
            if (j0 < n) f.Store(y, o + j0, c00); if (j1 < n) f.Store(y, o + j1, c01); if (j2 < n) f.Store(y, o + j2, c02); if (j3 < n) f.Store(y, o + j3, c03); if (j4 < n) f.Store(y, o + j4, c04); if (j5 < n) f.Store(y, o + j5, c05); if (j6 < n) f.Store(y, o + j6, c06); if (j7 < n) f.Store(y, o + j7, c07);
        }
        if (row + 1 < m)
        {
            o = yBase + (long)(row + 1) * n;
            if (j0 < n) f.Store(y, o + j0, c10); if (j1 < n) f.Store(y, o + j1, c11); if (j2 < n) f.Store(y, o + j2, c12); if (j3 < n) f.Store(y, o + j3, c13); if (j4 < n) f.Store(y, o + j4, c14); if (j5 < n) f.Store(y, o + j5, c15); if (j6 < n) f.Store(y, o + j6, c16); if (j7 < n) f.Store(y, o + j7, c17);
        }
        if (row + 2 < m)
        {
            o = yBase + (long)(row + 2) * n;
            if (j0 < n) f.Store(y, o + j0, c20); if (j1 < n) f.Store(y, o + j1, c21); if (j2 < n) f.Store(y, o + j2, c22); if (j3 < n) f.Store(y, o + j3, c23); if (j4 < n) f.Store(y, o + j4, c24); if (j5 < n) f.Store(y, o + j5, c25); if (j6 < n) f.Store(y, o + j6, c26); if (j7 < n) f.Store(y, o + j7, c27);
        }
        if (row + 3 < m)
        {
            o = yBase + (long)(row + 3) * n;
            if (j0 < n) f.Store(y, o + j0, c30); if (j1 < n) f.Store(y, o + j1, c31); if (j2 < n) f.Store(y, o + j2, c32); if (j3 < n) f.Store(y, o + j3, c33); if (j4 < n) f.Store(y, o + j4, c34); if (j5 < n) f.Store(y, o + j5, c35); if (j6 < n) f.Store(y, o + j6, c36); if (j7 < n) f.Store(y, o + j7, c37);
        }
        if (row + rowStride < m)
        {
            o = yBase + (long)(row + rowStride) * n;
            if (j0 < n) f.Store(y, o + j0, c40); if (j1 < n) f.Store(y, o + j1, c41); if (j2 < n) f.Store(y, o + j2, c42); if (j3 < n) f.Store(y, o + j3, c43); if (j4 < n) f.Store(y, o + j4, c44); if (j5 < n) f.Store(y, o + j5, c45); if (j6 < n) f.Store(y, o + j6, c46); if (j7 < n) f.Store(y, o + j7, c47);
        }
        if (row + rowStride + 1 < m)
        {
            o = yBase + (long)(row + rowStride + 1) * n;
            if (j0 < n) f.Store(y, o + j0, c50); if (j1 < n) f.Store(y, o + j1, c51); if (j2 < n) f.Store(y, o + j2, c52); if (j3 < n) f.Store(y, o + j3, c53); if (j4 < n) f.Store(y, o + j4, c54); if (j5 < n) f.Store(y, o + j5, c55); if (j6 < n) f.Store(y, o + j6, c56); if (j7 < n) f.Store(y, o + j7, c57);
        }
        if (row + rowStride + 2 < m)
        {
            o = yBase + (long)(row + rowStride + 2) * n;
            if (j0 < n) f.Store(y, o + j0, c60); if (j1 < n) f.Store(y, o + j1, c61); if (j2 < n) f.Store(y, o + j2, c62); if (j3 < n) f.Store(y, o + j3, c63); if (j4 < n) f.Store(y, o + j4, c64); if (j5 < n) f.Store(y, o + j5, c65); if (j6 < n) f.Store(y, o + j6, c66); if (j7 < n) f.Store(y, o + j7, c67);
        }
        if (row + rowStride + 3 < m)
        {
            o = yBase + (long)(row + rowStride + 3) * n;
            if (j0 < n) f.Store(y, o + j0, c70); if (j1 < n) f.Store(y, o + j1, c71); if (j2 < n) f.Store(y, o + j2, c72); if (j3 < n) f.Store(y, o + j3, c73); if (j4 < n) f.Store(y, o + j4, c74); if (j5 < n) f.Store(y, o + j5, c75); if (j6 < n) f.Store(y, o + j6, c76); if (j7 < n) f.Store(y, o + j7, c77);
        }
    }
}

using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// How a float32 GEMM reads or writes an operand that is not stored as float32. The products are always float32
/// FMAs over exactly widened values, so a 16-bit operand read this way gives the same bits as widening it into a
/// float32 copy first; only the copy (its allocation, page faults and an extra pass over memory) is gone.
/// </summary>
internal enum GemmElement : byte
{
    /// <summary>float32, read as is.</summary>
    Float32,
    /// <summary>bfloat16, widened exactly.</summary>
    BFloat16,
    /// <summary>IEEE half, widened exactly.</summary>
    Float16,
    /// <summary>float32 rounded to bfloat16 first (a bf16 GEMM given a float32 operand, as <see cref="Bf16Gemm"/>).</summary>
    Float32AsBf16,
}

/// <summary>
/// Packing from 16-bit (or bf16-rounded) operands into the float32 micro-panels of <see cref="GemmPack{T}"/>: each
/// micro-panel is widened row by row (vectorized conversions on the contiguous side) into a small staging block and
/// then packed by the float32 routines, or widened straight into the panel when the panel's rows are the source's
/// contiguous runs. Also the 16-bit store of a finished float32 block.
/// </summary>
internal static unsafe class GemmWiden
{
    /// <summary>Staging floats a packing call needs: one micro-panel.</summary>
    public static int StagingFloats(int mr, int nr, int kc) => Math.Max(mr, nr) * kc;

    public static int ElementSize(GemmElement e) => e is GemmElement.BFloat16 or GemmElement.Float16 ? 2 : 4;

    /// <summary>Widens <paramref name="len"/> contiguous elements at element index <paramref name="at"/> of <paramref name="src"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Row(GemmElement kind, void* src, long at, int len, float* dst)
    {
        switch (kind)
        {
            case GemmElement.BFloat16:
                BFloat16.ConvertToSingle(new ReadOnlySpan<BFloat16>((BFloat16*)src + at, len), new Span<float>(dst, len));
                break;
            case GemmElement.Float16:
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((Half*)src + at, len), new Span<float>(dst, len));
                break;
            case GemmElement.Float32AsBf16:
                for (int i = 0; i < len; i++) dst[i] = (float)(BFloat16)((float*)src)[at + i];
                break;
            default:
                new ReadOnlySpan<float>((float*)src + at, len).CopyTo(new Span<float>(dst, len));
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float One(GemmElement kind, void* src, long at) => kind switch
    {
        GemmElement.BFloat16 => (float)((BFloat16*)src)[at],
        GemmElement.Float16 => (float)((Half*)src)[at],
        GemmElement.Float32AsBf16 => (float)(BFloat16)((float*)src)[at],
        _ => ((float*)src)[at],
    };

    /// <summary>As <see cref="GemmPack{T}.PackA"/> for float32, reading A element (i, p) at <c>src[at + i·rs + p·cs]</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackA(GemmElement kind, int mc, int kc, int mr, void* src, long at, long rs, long cs, float* dst, float* staging)
    {
        for (int ir = 0; ir < mc; ir += mr)
        {
            int rows = Math.Min(mr, mc - ir);
            long s = at + ir * rs;
            float* d = dst + ir * kc;
            if (cs == 1)
            {
                // Rows of A are contiguous: widen each, then interleave them as the float32 pack does.
                for (int r = 0; r < rows; r++) Row(kind, src, s + r * rs, kc, staging + r * kc);
                GemmPack<float>.PackA(rows, kc, mr, staging, kc, 1, d);
                continue;
            }
            if (rs == 1 && rows == mr)
            {
                // Columns of A are contiguous and exactly a panel's width: widen straight into the panel.
                for (int p = 0; p < kc; p++) Row(kind, src, s + p * cs, mr, d + p * mr);
                continue;
            }
            for (int p = 0; p < kc; p++)
            {
                float* dp = d + p * mr;
                int r = 0;
                for (; r < rows; r++) dp[r] = One(kind, src, s + r * rs + p * cs);
                for (; r < mr; r++) dp[r] = 0;
            }
        }
    }

    /// <summary>As <see cref="GemmPack{T}.PackB"/> for float32, reading B element (p, j) at <c>src[at + p·rs + j·cs]</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackB(GemmElement kind, int kc, int nc, int nr, void* src, long at, long rs, long cs, float* dst, float* staging)
    {
        for (int jr = 0; jr < nc; jr += nr)
        {
            int cols = Math.Min(nr, nc - jr);
            long s = at + jr * cs;
            float* d = dst + jr * kc;
            if (cs == 1 && cols == nr)
            {
                // Rows of B are contiguous: each row of the panel is a widened run of the source.
                for (int p = 0; p < kc; p++) Row(kind, src, s + p * rs, nr, d + p * nr);
                continue;
            }
            if (rs == 1)
            {
                // Column-major B (a transposed weight): widen each column, then transpose them as the float32 pack does.
                for (int c = 0; c < cols; c++) Row(kind, src, s + c * cs, kc, staging + c * kc);
                GemmPack<float>.PackB(kc, cols, nr, staging, 1, kc, d);
                continue;
            }
            for (int p = 0; p < kc; p++)
            {
                float* dp = d + p * nr;
                int c = 0;
                for (; c < cols; c++) dp[c] = One(kind, src, s + p * rs + c * cs);
                for (; c < nr; c++) dp[c] = 0;
            }
        }
    }

    /// <summary>
    /// Finishes a float32 block of a 16-bit C: the epilogue (bias, pre-activation copy, activation; bias and
    /// pre-activation in C's type) and one rounding on store. <paramref name="block"/> holds rows
    /// <c>[i0, i0 + rows)</c> and columns <c>[j0, j0 + cols)</c> of the product with row pitch <paramref name="pitch"/>;
    /// C element (i, j) is at <c>c[cOffset + i·ldc + j]</c>.
    /// </summary>
    public static void StoreBlock(GemmElement kind, float* block, long pitch, int rows, int cols,
        void* c, long cOffset, long ldc, int i0, int j0, in GemmEpilogue epilogue, float* bias)
    {
        if (epilogue.Bias != null) Row(kind, epilogue.Bias, j0, cols, bias);
        for (int i = 0; i < rows; i++)
        {
            float* row = block + i * pitch;
            long at = cOffset + (i0 + i) * ldc + j0;
            if (epilogue.Bias != null) TensorPrimitives.Add(new ReadOnlySpan<float>(row, cols), new ReadOnlySpan<float>(bias, cols), new Span<float>(row, cols));
            if (epilogue.Pre != null) Narrow(kind, row, cols, epilogue.Pre, at);
            epilogue.Activate(row, cols);
            Narrow(kind, row, cols, c, at);
        }
    }

    /// <summary>Rounds <paramref name="len"/> floats once into a 16-bit destination at element index <paramref name="at"/>.</summary>
    public static void Narrow(GemmElement kind, float* row, int len, void* dst, long at)
    {
        var src = new ReadOnlySpan<float>(row, len);
        if (kind == GemmElement.BFloat16) BFloat16.ConvertFromSingle(src, new Span<BFloat16>((BFloat16*)dst + at, len));
        else if (kind == GemmElement.Float16) TensorPrimitives.ConvertToHalf(src, new Span<Half>((Half*)dst + at, len));
        else src.CopyTo(new Span<float>((float*)dst + at, len));
    }
}

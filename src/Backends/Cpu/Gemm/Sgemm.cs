namespace Engine.Backends.Cpu.Gemm;

/// <summary>
/// Batched, strided single-precision (float32) matrix multiply on the CPU: cache-blocked, packed, vectorized
/// (AVX-512 or AVX2 FMA micro-kernels, scalar fallback) and multi-threaded.
/// Results are bit-identical for any thread count.
/// </summary>
public static unsafe class Sgemm
{
    /// <summary>
    /// C[b][i,j] (+)= sum_k A[b][i,k] * B[b][k,j] for b in [0, <paramref name="batch"/>).
    /// A element (i,k) of batch b is at <c>a + aOffsets[b] + i*aRowStride + k*aColStride</c> (strides in elements,
    /// any values including 0 or transposed); the same for B; C element (i,j) is at
    /// <c>c + cOffsets[b] + i*cRowStride + j</c> (C rows contiguous).
    /// </summary>
    /// <param name="batch">Number of independent products.</param>
    /// <param name="m">Rows of A and C.</param>
    /// <param name="n">Columns of B and C.</param>
    /// <param name="k">Columns of A, rows of B (the summed dimension).</param>
    /// <param name="a">Base pointer of A.</param>
    /// <param name="aOffsets">Per-batch element offsets of A (at least <paramref name="batch"/> entries).</param>
    /// <param name="aRowStride">Element stride between rows of A.</param>
    /// <param name="aColStride">Element stride between columns of A.</param>
    /// <param name="b">Base pointer of B.</param>
    /// <param name="bOffsets">Per-batch element offsets of B.</param>
    /// <param name="bRowStride">Element stride between rows of B.</param>
    /// <param name="bColStride">Element stride between columns of B.</param>
    /// <param name="c">Base pointer of C.</param>
    /// <param name="cOffsets">Per-batch element offsets of C.</param>
    /// <param name="cRowStride">Element stride between rows of C.</param>
    /// <param name="accumulate">False overwrites C; true adds the product to it.</param>
    /// <param name="maxThreads">Worker limit; 0 or less means <see cref="Environment.ProcessorCount"/>.</param>
    public static void Gemm(int batch, int m, int n, int k,
        float* a, ReadOnlySpan<long> aOffsets, long aRowStride, long aColStride,
        float* b, ReadOnlySpan<long> bOffsets, long bRowStride, long bColStride,
        float* c, ReadOnlySpan<long> cOffsets, long cRowStride,
        bool accumulate, int maxThreads) =>
        GemmWithEpilogue(batch, m, n, k, a, aOffsets, aRowStride, aColStride, b, bOffsets, bRowStride, bColStride, c, cOffsets, cRowStride,
            accumulate, maxThreads, default);

    /// <summary>
    /// <see cref="Gemm"/>
    /// with an epilogue run on each finished block of C (the fused Linear's bias and activation).
    /// </summary>
    internal static void GemmWithEpilogue(int batch, int m, int n, int k,
        float* a, ReadOnlySpan<long> aOffsets, long aRowStride, long aColStride,
        float* b, ReadOnlySpan<long> bOffsets, long bRowStride, long bColStride,
        float* c, ReadOnlySpan<long> cOffsets, long cRowStride,
        bool accumulate, int maxThreads, in GemmEpilogue epilogue)
    {
        GemmKernelSelection.Validate(batch, m, n, k, aOffsets.Length, bOffsets.Length, cOffsets.Length);
        if (batch == 0 || m == 0 || n == 0) return;
        fixed (long* ao = aOffsets, bo = bOffsets, co = cOffsets)
        {
            var p = new GemmProblem<float>
            {
                Batch = batch, M = m, N = n, K = k,
                A = a, AOffsets = ao, ARowStride = aRowStride, AColStride = aColStride,
                B = b, BOffsets = bo, BRowStride = bRowStride, BColStride = bColStride,
                C = c, COffsets = co, CRowStride = cRowStride,
                Accumulate = accumulate, Epilogue = epilogue,
            };
            switch (GemmKernelSelection.Current)
            {
                case GemmKernelKind.Vector512: GemmDriver<float, Avx512Kernel<float>>.Run(p, maxThreads); break;
                case GemmKernelKind.Vector256: GemmDriver<float, Avx2Kernel<float>>.Run(p, maxThreads); break;
                default: GemmDriver<float, ScalarKernel<float>>.Run(p, maxThreads); break;
            }
        }
    }
}

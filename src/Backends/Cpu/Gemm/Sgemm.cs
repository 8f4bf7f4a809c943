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
    /// <summary>
    /// The float32 GEMM over operands stored in other types (<see cref="GemmElement"/>): 16-bit A and B are widened
    /// while packing and a 16-bit C is summed in float32 blocks and rounded once on store, with the epilogue (bias and
    /// pre-activation in C's type) applied before rounding. The bits equal those of widening everything into float32
    /// copies, running <see cref="GemmWithEpilogue"/> and rounding the result, without the copies. Pointers point at
    /// elements of each operand's type; offsets and strides count elements.
    /// </summary>
    internal static void GemmWidening(int batch, int m, int n, int k,
        void* a, GemmElement aKind, ReadOnlySpan<long> aOffsets, long aRowStride, long aColStride,
        void* b, GemmElement bKind, ReadOnlySpan<long> bOffsets, long bRowStride, long bColStride,
        void* c, GemmElement cKind, ReadOnlySpan<long> cOffsets, long cRowStride,
        bool accumulate, int maxThreads, in GemmEpilogue epilogue)
    {
        GemmKernelSelection.Validate(batch, m, n, k, aOffsets.Length, bOffsets.Length, cOffsets.Length);
        if (batch == 0 || m == 0 || n == 0) return;
        if (cKind == GemmElement.Float32AsBf16) throw new ArgumentException("Sgemm: C is stored as float32, bfloat16 or half", nameof(cKind));
        fixed (long* ao = aOffsets, bo = bOffsets, co = cOffsets)
        {
            var p = new GemmProblem<float>
            {
                Batch = batch, M = m, N = n, K = k,
                A = (float*)a, AOffsets = ao, ARowStride = aRowStride, AColStride = aColStride, AKind = aKind,
                B = (float*)b, BOffsets = bo, BRowStride = bRowStride, BColStride = bColStride, BKind = bKind,
                C = (float*)c, COffsets = co, CRowStride = cRowStride, CKind = cKind,
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

    /// <summary>Whether a product of this size runs faster from dense float32 copies (the driver's direct paths) than widened while packing.</summary>
    internal static bool PrefersCopies(int m, int n, int k) => GemmKernelSelection.Current switch
    {
        GemmKernelKind.Vector512 => GemmDriver<float, Avx512Kernel<float>>.PrefersDirect(m, n, k),
        GemmKernelKind.Vector256 => GemmDriver<float, Avx2Kernel<float>>.PrefersDirect(m, n, k),
        _ => GemmDriver<float, ScalarKernel<float>>.PrefersDirect(m, n, k),
    };

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

using ILGPU;
using ILGPU.Runtime;
using Engine.Backends.Cuda.Gemm;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // The batched GEMM. Float32 and Float64 run the shared-memory, register-blocked SIMT kernel (Gemm/SimtGemm.cs);
    // Float16 and BFloat16 the tensor-core kernel (Gemm/MmaGemm.cs: mma.sync m16n8k16, float32 accumulation, one
    // rounding on store); integer types go through float64 as on the CPU. Operands are read in place with any strides,
    // so transposed and broadcast (stride-0) operands need no copies. Gemm/GemmPlans.cs picks the tiling.

    /// <summary>
    /// Forces a GEMM tiling by name (see Gemm/GemmPlans.cs) for the dtypes it serves; null restores the automatic
    /// choice. For tests that run every tiling on the emulator.
    /// </summary>
    internal string? GemmPlanOverride { get; set; }

    /// <inheritdoc/>
    public void MatMul(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k)
    {
        const string op = "MatMul";
        var dt = a.DType;
        ContractChecks.SameDType(op, a, b, y);
        ContractChecks.Gemm(op, aLayout, bLayout, batch, m, n, k);
        if (batch == 0 || m == 0 || n == 0) return;
        if (k == 0)
        {
            Fill(y, Layout.Contiguous([batch, m, n]), 0);
            return;
        }
        if (!dt.IsFloatingPoint())
        {
            MatMulThroughFloat64(a, aLayout, b, bLayout, y, batch, m, n, k);
            return;
        }

        var plan = GemmPlanOverride is { } forced && GemmPlans.Named(forced) is var p && p.Serves(dt)
            ? p
            : GemmPlans.Choose(dt, batch, m, n, Accelerator.MaxNumThreadsPerGroup, Accelerator.NumMultiprocessors);
        if (plan.Threads > Accelerator.MaxNumThreadsPerGroup)
            throw new EngineException(op, $"the {plan.Name} tiling needs {plan.Threads} threads per group; {Device} runs at most {Accelerator.MaxNumThreadsPerGroup}");
        int tilesM = (m + plan.BM - 1) / plan.BM, tilesN = (n + plan.BN - 1) / plan.BN;
        long tiles = (long)tilesM * tilesN;
        if (tiles > int.MaxValue)
            throw new ShapeException(op, $"{m}×{n} outputs need {tiles} tiles of {plan.BM}×{plan.BN}, more than one launch holds");
        var args = new GemmArgs
        {
            M = m, N = n, K = k, TilesN = tilesN,
            OffsetA = aLayout.Offset, OffsetB = bLayout.Offset,
            BatchStrideA = batch > 1 ? aLayout.Strides[0] : 0, BatchStrideB = batch > 1 ? bLayout.Strides[0] : 0,
            StrideAm = aLayout.Strides[1], StrideAk = aLayout.Strides[2],
            StrideBk = bLayout.Strides[1], StrideBn = bLayout.Strides[2],
            // Consecutive threads walk each operand along its smaller stride (size-1 dims do not count).
            AAlongM = m > 1 && (k == 1 || Math.Abs(aLayout.Strides[1]) < Math.Abs(aLayout.Strides[2])) ? 1 : 0,
            BAlongN = n > 1 && (k == 1 || Math.Abs(bLayout.Strides[2]) < Math.Abs(bLayout.Strides[1])) ? 1 : 0,
            DType = (int)dt,
        };
        // ILGPU's CPU accelerator gets the kernel whose warp instructions are emulated (Gemm/WarpMma.cs).
        var entry = plan.For(dt, IsEmulated);
        var kernel = Kernel("Gemm", entry.Key, acc => acc.LoadStreamKernel(entry.Kernel));
        var av = V(a); var bv = V(b); var yv = V(y);
        // Grid y counts batches; CUDA caps it at 65535, so larger batches take several launches.
        const int maxGridY = 65535;
        for (int b0 = 0; b0 < batch; b0 += maxGridY)
        {
            args.BatchStart = b0;
            int nb = Math.Min(maxGridY, batch - b0);
            kernel(new KernelConfig(new Index2D((int)tiles, nb), new Index2D(plan.Threads, 1)), args, av, bv, yv);
        }
    }

    // Integer GEMM, rare on a GPU: exact through float64 while sums stay below 2^53, the CPU backend's rule.
    void MatMulThroughFloat64(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k)
    {
        var aw = Allocate(Device, DType.Float64, (long)batch * m * k);
        var bw = Allocate(Device, DType.Float64, (long)batch * k * n);
        var yw = Allocate(Device, DType.Float64, (long)batch * m * n);
        aw.AddRef(); bw.AddRef(); yw.AddRef();
        try
        {
            var al = Layout.Contiguous([batch, m, k]);
            var bl = Layout.Contiguous([batch, k, n]);
            var yl = Layout.Contiguous([batch, m, n]);
            Copy(a, aLayout, aw, al);
            Copy(b, bLayout, bw, bl);
            MatMul(aw, al, bw, bl, yw, batch, m, n, k);
            Copy(yw, yl, y, yl);
        }
        finally { aw.Release(); bw.Release(); yw.Release(); }
    }
}

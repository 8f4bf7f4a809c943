using Engine.Backends.Cpu.Gemm;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void MatMul(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k)
    {
        ContractChecks.SameDType(nameof(MatMul), a, b, y);
        ContractChecks.Gemm(nameof(MatMul), aLayout, bLayout, batch, m, n, k);
        var dtype = a.DType;
        if (dtype == DType.Float32)
        {
            Sgemm.Gemm(batch, m, n, k,
                (float*)P(a), BatchOffsets(aLayout, batch), aLayout.Strides[1], aLayout.Strides[2],
                (float*)P(b), BatchOffsets(bLayout, batch), bLayout.Strides[1], bLayout.Strides[2],
                (float*)P(y), DenseOffsets(batch, (long)m * n), n, accumulate: false, CpuParallel.MaxThreads);
            return;
        }
        if (dtype == DType.Float64)
        {
            Dgemm.Gemm(batch, m, n, k,
                (double*)P(a), BatchOffsets(aLayout, batch), aLayout.Strides[1], aLayout.Strides[2],
                (double*)P(b), BatchOffsets(bLayout, batch), bLayout.Strides[1], bLayout.Strides[2],
                (double*)P(y), DenseOffsets(batch, (long)m * n), n, accumulate: false, CpuParallel.MaxThreads);
            return;
        }
        if (dtype == DType.BFloat16)
        {
            // Bf16Gemm runs the generated AVX512_BF16 kernel when enabled (ENGINE_CPU_JIT=1), else exactly the
            // widening path below (bf16 -> float32 copies, Sgemm, one rounding on store), bit for bit.
            Bf16Gemm.Gemm(batch, m, n, k,
                (BFloat16*)P(a), BatchOffsets(aLayout, batch), aLayout.Strides[1], aLayout.Strides[2],
                (BFloat16*)P(b), BatchOffsets(bLayout, batch), bLayout.Strides[1], bLayout.Strides[2],
                (BFloat16*)P(y), DenseOffsets(batch, (long)m * n), n, accumulate: false, CpuParallel.MaxThreads);
            return;
        }
        // Half types multiply in float32 (exact products, float32 sums) and round once on store; integer types go
        // through float64, exact while the sums stay below 2^53.
        if (dtype == DType.Float16 && !Sgemm.PrefersCopies(m, n, k))
        {
            Sgemm.GemmWidening(batch, m, n, k,
                (Half*)P(a), GemmElement.Float16, BatchOffsets(aLayout, batch), aLayout.Strides[1], aLayout.Strides[2],
                (Half*)P(b), GemmElement.Float16, BatchOffsets(bLayout, batch), bLayout.Strides[1], bLayout.Strides[2],
                (Half*)P(y), GemmElement.Float16, DenseOffsets(batch, (long)m * n), n, accumulate: false, CpuParallel.MaxThreads, default);
            return;
        }
        var wide = dtype.IsFloatingPoint() ? DType.Float32 : DType.Float64;
        var dev = a.Device;
        var aw = Allocate(dev, wide, (long)batch * m * k);
        var bw = Allocate(dev, wide, (long)batch * k * n);
        var yw = Allocate(dev, wide, (long)batch * m * n);
        aw.AddRef(); bw.AddRef(); yw.AddRef();
        try
        {
            var al = Layout.Contiguous([batch, m, k]);
            var bl = Layout.Contiguous([batch, k, n]);
            CopyUncounted(a, aLayout, aw, al);
            CopyUncounted(b, bLayout, bw, bl);
            MatMul(aw, al, bw, bl, yw, batch, m, n, k);
            var yl = Layout.Contiguous([batch, m, n]);
            CopyUncounted(yw, yl, y, yl);
        }
        finally { aw.Release(); bw.Release(); yw.Release(); }
    }

    static long[] BatchOffsets(Layout l, int batch)
    {
        var r = new long[batch];
        for (int i = 0; i < batch; i++) r[i] = l.Offset + i * l.Strides[0];
        return r;
    }

    static long[] DenseOffsets(int batch, long size)
    {
        var r = new long[batch];
        for (int i = 0; i < batch; i++) r[i] = i * size;
        return r;
    }
}

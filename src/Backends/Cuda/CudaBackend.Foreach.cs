using Engine.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // The multi-tensor norm, multiply and copy (Kernels/ForeachKernels.cs), one TensorList per launch. The norm's parts are
    // sized so that all entries together fill about MaxGroups groups, and its partial results go to a device buffer
    // kept for the device's lifetime (stream order makes reuse safe), so a step allocates nothing.

    MemoryBuffer1D<byte, Stride1D.Dense>? _normPartials;

    ArrayView<byte> NormPartials
    {
        get
        {
            lock (_kernelLock)
            {
                Bind();
                _normPartials ??= Accelerator.Allocate1D<byte>((long)(MaxGroups + MultiTensor.MaxTensors) * sizeof(double));
                return _normPartials.View.AsContiguous();
            }
        }
    }

    /// <inheritdoc/>
    public void ForeachNorm(IReadOnlyList<Storage> xs, double ord, Storage norms, int offset)
    {
        ContractChecks.Foreach(nameof(ForeachNorm), xs.Count);
        long n = 0;
        foreach (var x in xs) n = Math.Max(n, x.Count);
        int count = xs.Count;
        int parts = (int)Math.Clamp((n + GroupSize - 1) / GroupSize, 1, Math.Max(1, MaxGroups / count));
        int kind = ForeachKernels.KindOf(ord);
        var partials = NormPartials;
        var list = TensorList.Of(xs);
        var cfg = new KernelConfig(count * parts, GroupSize);
        var finish = new KernelConfig(1, MultiTensor.MaxTensors);
        if (kind == ForeachKernels.General)
        {
            Kernel("ForeachNormPartials", typeof(PowerNorm), k => k.LoadStreamKernel<TensorList, ArrayView<byte>, int, int, double>(ForeachKernels.NormPartials<PowerNorm>))
                (cfg, list, partials, parts, kind, ord);
            Kernel("ForeachNormFinish", typeof(PowerNorm), k => k.LoadStreamKernel<ArrayView<byte>, int, int, ArrayView<byte>, int, int, int, double>(ForeachKernels.NormFinish<PowerNorm>))
                (finish, partials, parts, count, V(norms), (int)norms.DType, offset, kind, ord);
            return;
        }
        Kernel("ForeachNormPartials", typeof(PlainNorm), k => k.LoadStreamKernel<TensorList, ArrayView<byte>, int, int, double>(ForeachKernels.NormPartials<PlainNorm>))
            (cfg, list, partials, parts, kind, ord);
        Kernel("ForeachNormFinish", typeof(PlainNorm), k => k.LoadStreamKernel<ArrayView<byte>, int, int, ArrayView<byte>, int, int, int, double>(ForeachKernels.NormFinish<PlainNorm>))
            (finish, partials, parts, count, V(norms), (int)norms.DType, offset, kind, ord);
    }

    /// <inheritdoc/>
    public void ForeachMul(IReadOnlyList<Storage> xs, Storage scalar)
    {
        ContractChecks.Foreach(nameof(ForeachMul), xs.Count);
        long n = 0;
        foreach (var x in xs) n = Math.Max(n, x.Count);
        if (n == 0) return;
        Kernel("ForeachMul", null, k => k.LoadStreamKernel<TensorList, ArrayView<byte>>(ForeachKernels.Mul))
            (Grid(n), TensorList.Of(xs), V(scalar));
    }

    /// <inheritdoc/>
    public void ForeachCopy(IReadOnlyList<Storage> xs, IReadOnlyList<Storage> ys)
    {
        ContractChecks.Foreach(nameof(ForeachCopy), xs.Count, ys.Count);
        long n = 0;
        for (int j = 0; j < xs.Count; j++)
        {
            ContractChecks.ForeachCopyEntry(nameof(ForeachCopy), xs[j], ys[j]);
            n = Math.Max(n, xs[j].Count);
        }
        if (n == 0) return;
        Kernel("ForeachCopy", null, k => k.LoadStreamKernel<TensorList, TensorList>(ForeachKernels.Copy))
            (Grid(n), TensorList.Of(xs), TensorList.Of(ys));
    }
}

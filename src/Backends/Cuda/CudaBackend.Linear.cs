using Engine.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

/// <summary>The fused Linear's store epilogue for one GEMM launch: default (all null/None) for a plain MatMul.</summary>
readonly record struct GemmEpilogue(Storage? Bias, Storage? Pre, Activation Activation);

// The fused linear layer: the GEMM (Gemm/SimtGemm.cs for float32/float64, Gemm/MmaGemm.cs for the half types) with
// the bias, the pre-activation store and the activation in its store epilogue, one device launch; and the backward's
// dz = dy·act′ and bias gradient in one more (Kernels/LinearKernels.cs).
public sealed partial class CudaBackend
{
    /// <inheritdoc cref="IBackend.Linear"/>
    public void Linear(Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? bias, Storage y, Storage? pre, int m, int n, int k, Activation activation)
    {
        const string op = nameof(Linear);
        ContractChecks.Linear(op, xLayout, wLayout, m, n, k);
        ContractChecks.SameDType(op, x, w, y);
        ContractChecks.Floating(op, x.DType);
        if (m == 0 || n == 0) return;
        // y = x·wᵀ: a is x [m, k], b is w read transposed in place, b(p, j) = w(j, p).
        var a3 = new Layout([1, m, k], [0, xLayout.Strides[0], xLayout.Strides[1]], xLayout.Offset);
        var b3 = new Layout([1, k, n], [0, wLayout.Strides[1], wLayout.Strides[0]], wLayout.Offset);
        Gemm(x, a3, w, b3, y, 1, m, n, k, new GemmEpilogue(bias, pre, activation));
    }

    /// <inheritdoc cref="IBackend.LinearBackward"/>
    public void LinearBackward(Storage dy, Storage? saved, Storage? dz, Storage? dBias, int m, int n, Activation activation)
    {
        const string op = nameof(LinearBackward);
        ContractChecks.Floating(op, dy.DType);
        if (activation != Activation.None && (saved is null || dz is null))
            throw new EngineException(op, $"{activation} needs the saved activation and dz (a contract violation)");
        if (n == 0 || activation == Activation.None && dBias is null) return;
        if (m == 0)
        {
            if (dBias is not null) Fill(dBias, Layout.Contiguous([n]), 0);
            return;
        }
        var dyv = V(dy);
        var kernel = dy.DType == DType.Float64
            ? Kernel("LinearBackward", typeof(Wide), a => a.LoadStreamKernel<int, int, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, int, int, int>(LinearKernels.Backward<Wide>))
            : Kernel("LinearBackward", typeof(Narrow), a => a.LoadStreamKernel<int, int, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, int, int, int>(LinearKernels.Backward<Narrow>));
        kernel(Grid(n), m, n, dyv, saved is null ? dyv : V(saved), dz is null ? dyv : V(dz), dBias is null ? dyv : V(dBias),
            (int)dy.DType, (int)activation, dBias is null ? 0 : 1);
    }
}

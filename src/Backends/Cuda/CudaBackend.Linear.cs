using Engine.Backends.Cuda.Gemm;
using Engine.Backends.Cuda.Kernels;
using Engine.Ops;
using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

/// <summary>The fused Linear's store epilogue for one GEMM launch: default (all null/None) for a plain MatMul.</summary>
readonly record struct GemmEpilogue(Storage? Bias, Storage? Pre, Activation Activation);

// The fused linear layer: the GEMM (Gemm/SimtGemm.cs for float32/float64, Gemm/MmaGemm.cs for the half types) with
// the bias, the pre-activation store and the activation in its store epilogue, one device launch (float64 GELUs: a
// second, see GemmActivation); and the backward's
// dz = dy·act′ and bias gradient in one kernel (Kernels/LinearKernels.cs; with ColumnFinish adding the row blocks'
// partial sums when there are several, the scheme of LayerNorm's column sums).
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
        if (x.DType == DType.Float64 && !GemmActivation.InFloat64Epilogue(activation))
        {
            // float64 GELUs: the GEMM stores z (and pre), then the activation in place, a second device launch.
            Gemm(x, a3, w, b3, y, 1, m, n, k, new GemmEpilogue(bias, pre, Activation.None));
            var mat = Layout.Contiguous([m, n]);
            if (activation == Activation.Gelu) Unary(new GeluOp(), y, mat, y, mat);
            else Unary(new GeluTanhOp(), y, mat, y, mat);
            return;
        }
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
        // Blocks of rows give partial bias sums that ColumnFinish adds in block order (LayerNorm's scheme): enough
        // threads for a GPU at GPT widths, and sums that depend only on the shape.
        int blocks = RowKernels.ColumnBlocks(m, n);
        var c = new ColumnArgs
        {
            Rows = m, Cols = n, Type = (int)dy.DType, Blocks = blocks, PerBlock = (m + blocks - 1) / blocks, ByCols = FastDivisor.Of(n),
            Flags = dBias is null ? 0 : RowKernels.HasBias,
        };
        var dyv = V(dy);
        var sv = saved is null ? dyv : V(saved);
        var dzv = dz is null ? dyv : V(dz);
        var dbv = dBias is null ? dyv : V(dBias);
        var width = WidthOf(dy.DType);
        var kernel = Kernel("LinearBackward", width, a => a.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ColumnArgs, int>(
            dy.DType == DType.Float64 ? LinearKernels.Backward<Wide> : LinearKernels.Backward<Narrow>));
        if (blocks == 1 || dBias is null)
        {
            kernel(Grid((long)blocks * n), dyv, sv, dzv, dyv, dbv, c, (int)activation);
            return;
        }
        var scratch = Allocate(Device, dy.DType == DType.Float64 ? DType.Float64 : DType.Float32, 2L * blocks * n);
        scratch.AddRef();
        try
        {
            kernel(Grid((long)blocks * n), dyv, sv, dzv, V(scratch), dbv, c, (int)activation);
            Kernel("ColumnFinish", width, k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ColumnArgs>(dy.DType == DType.Float64 ? RowKernels.ColumnFinish<Wide> : RowKernels.ColumnFinish<Narrow>))
                (Grid(n), V(scratch), dbv, dbv, c);
        }
        finally
        {
            // Back to the pool; stream order keeps the queued kernels' reads ahead of any reuse.
            scratch.Release();
        }
    }
}

using Engine.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    /// <inheritdoc/>
    public void Reduce(ReduceOp op, Storage x, Layout xLayout, int reducedDims, Storage y, Storage? indices, double argument)
    {
        string name = op.ToString();
        ContractChecks.Reduction(name, xLayout, reducedDims, indices);
        int kept = xLayout.Rank - reducedDims;
        var keptShape = xLayout.Shape[..kept];
        var outer = Geometry.Of(name, Layout.Contiguous(keptShape), new Layout(keptShape, xLayout.Strides[..kept], xLayout.Offset));
        var inner = Geometry.Of(name, new Layout(xLayout.Shape[kept..], xLayout.Strides[kept..], 0));
        long n = inner.Count;
        int code = op switch
        {
            ReduceOp.Sum => ReduceKernels.Sum,
            ReduceOp.Mean => ReduceKernels.Mean,
            ReduceOp.Max => ReduceKernels.Max,
            ReduceOp.Min => ReduceKernels.Min,
            ReduceOp.Var => ReduceKernels.Var,
            ReduceOp.LogSumExp => ReduceKernels.LogSumExp,
            ReduceOp.Norm when double.IsPositiveInfinity(argument) => ReduceKernels.AbsMax,
            ReduceOp.Norm when double.IsNegativeInfinity(argument) => ReduceKernels.AbsMin,
            ReduceOp.Norm => ReduceKernels.Norm,
            _ => throw new EngineException("Reduce", $"unknown reduction {op}"),
        };
        // An empty block for max, min or an ∞-norm (no identity) is rejected by the front end (Tensor.CheckNonEmpty).
        if (outer.Count == 0) return;
        // One group per output walks its block with all threads and combines them in a fixed tree: bit-stable from
        // run to run. Short blocks, enough outputs to fill the device, or outputs that lie closer together than the
        // elements of a block (a reduction over a leading dim, where a group would read one strided column) take one
        // thread per output instead: neighbouring threads then read neighbouring addresses.
        bool columns = outer.Rank > 0 && Math.Abs(outer.A0) < Math.Abs(inner.Rank > 0 ? inner.Y0 : 1) && outer.Count >= 32;
        bool threadPerOutput = n <= 32 || columns || outer.Count >= (long)GroupSize * MaxGroups * 4;
        var p = new ReduceParams
        {
            Op = code, XType = (int)x.DType, YType = (int)y.DType, HasIndices = indices is null ? 0 : 1,
            ThreadPerOutput = threadPerOutput ? 1 : 0, Outputs = outer.Count, N = n, Argument = argument,
            NormKind = argument == 0 ? 0 : argument == 1 ? 1 : argument == 2 ? 2 : 3,
        };
        var config = threadPerOutput ? Grid(outer.Count) : new KernelConfig((int)Math.Min(outer.Count, MaxGroups * 4L), GroupSize);
        var xv = V(x); var yv = V(y); var iv = indices is null ? yv : V(indices);
        bool integer = x.DType is DType.Int32 or DType.Int64 or DType.Bool;
        if (integer && code is ReduceKernels.Sum or ReduceKernels.Mean or ReduceKernels.Max or ReduceKernels.Min)
            Kernel("ReduceLong", null, k => k.LoadStreamKernel<Geometry, Geometry, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ReduceParams>(ReduceKernels.Run<long, LongMath>))
                (config, outer, inner, xv, yv, iv, p);
        else if (IsWide(p.XType))
            Kernel("ReduceDouble", null, k => k.LoadStreamKernel<Geometry, Geometry, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ReduceParams>(ReduceKernels.Run<double, DoubleMath>))
                (config, outer, inner, xv, yv, iv, p);
        else
            Kernel("ReduceFloat", null, k => k.LoadStreamKernel<Geometry, Geometry, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ReduceParams>(ReduceKernels.Run<float, FloatMath>))
                (config, outer, inner, xv, yv, iv, p);
    }
}

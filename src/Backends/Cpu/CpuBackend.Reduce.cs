using Engine.Backends.Cpu.Kernels;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Reduce(ReduceOp op, Storage x, Layout xLayout, int reducedDims, Storage y, Storage? indices, double argument)
    {
        ContractChecks.Reduction(nameof(Reduce), xLayout, reducedDims, indices);
        var plan = new ReducePlan(xLayout, reducedDims);
        // An empty block for max, min or an ∞-norm (no identity) is rejected by the front end (Tensor.CheckNonEmpty)
        // before any call.
        var v = new ReduceVisitor { Op = op, X = P(x), Plan = plan, Y = P(y), Indices = indices is null ? 0 : P(indices), Argument = argument };
        DTypeDispatch.Visit(x.DType, ref v);
    }

    struct ReduceVisitor : IDTypeVisitor
    {
        public ReduceOp Op; public nint X, Y, Indices; public ReducePlan Plan; public double Argument;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> =>
            ReduceKernels.Run<T, TE>(Op, (T*)X, Plan, (T*)Y, (long*)Indices, Argument);
    }
}

using Engine.Backends.Cpu.Kernels;

namespace Engine.Backends.Cpu;

// The layouts of x, index and dy may have any rank: each is split into [outer, mid, inner] dim groups
// (IndexKernels.Split); y and dx are contiguous [outer, count or size, inner] from offset 0. Every index is validated
// before anything is written, so a failed call leaves the output as it was.
public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Gather(Storage x, Layout xLayout, Storage index, Layout indexLayout, Storage y, int outer, int size, int count, int inner)
    {
        const string op = "Gather";
        IndexKernels.CheckTypes(op, x, y, index);
        if ((long)outer * count * inner == 0) return;
        var ix = IndexKernels.Split(op, indexLayout, outer, count, inner);
        IndexKernels.Validate(op, (long*)P(index), ix, outer, count, inner, size);
        var v = new GatherVisitor
        {
            X = P(x), XS = IndexKernels.Split(op, xLayout, outer, size, inner), I = P(index), IS = ix,
            Y = P(y), YS = IndexKernels.Dense(count, inner),
            Outer = outer, Size = size, Count = count, Inner = inner,
        };
        DTypeDispatch.Visit(x.DType, ref v);
    }

    struct GatherVisitor : IDTypeVisitor
    {
        public nint X, I, Y; public IndexKernels.Operand XS, IS, YS; public int Outer, Size, Count, Inner;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> =>
            IndexKernels.Gather<T>(X, XS, I, IS, Y, YS, Outer, Size, Count, Inner);
    }

    /// <inheritdoc/>
    public void ScatterAdd(Storage dy, Layout dyLayout, Storage index, Layout indexLayout, Storage dx, int outer, int size, int count, int inner)
    {
        const string op = "ScatterAdd";
        IndexKernels.CheckTypes(op, dy, dx, index);
        if ((long)outer * count * inner == 0) return;
        var ix = IndexKernels.Split(op, indexLayout, outer, count, inner);
        IndexKernels.Validate(op, (long*)P(index), ix, outer, count, inner, size);
        var v = new ScatterAddVisitor
        {
            DY = P(dy), DYS = IndexKernels.Split(op, dyLayout, outer, count, inner), I = P(index), IS = ix, DX = P(dx),
            Outer = outer, Size = size, Count = count, Inner = inner,
        };
        DTypeDispatch.Visit(dx.DType, ref v);
    }

    struct ScatterAddVisitor : IDTypeVisitor
    {
        public nint DY, I, DX; public IndexKernels.Operand DYS, IS; public int Outer, Size, Count, Inner;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> =>
            IndexKernels.ScatterAdd<T, TE>(DY, DYS, I, IS, DX, Outer, Size, Count, Inner);
    }
}

using Engine.Backends.Cuda.Kernels;
using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // Gather and its adjoint. Each operand's layout (any rank and strides) is walked by a Geometry over its own shape:
    // the row-major position of (o, m, i) in a layout that holds [outer, mid, inner] elements is (o·mid + m)·inner + i,
    // whatever its dims, so one Offsets call per element finds it. Indices are validated on the device: an index out
    // of [−size, size) raises the device error flag (see CheckDeviceErrors), which the next host synchronization
    // turns into a ShapeException naming Gather or ScatterAdd; the CPU backend throws before writing anything.

    /// <summary>
    /// When true, <see cref="ScatterAdd"/> runs without atomics: one thread per (outer, inner) column adds its
    /// updates in increasing index order, so the result is the same on every run and bit-identical to the CPU
    /// backend's. When false (the default), every update is one atomic add (float32 atomics into a float32 buffer for
    /// the half types, rounded once afterwards): faster when many updates hit few rows, but the order in which
    /// duplicate indices accumulate, and so the last bits of float results, varies from run to run, as with
    /// PyTorch's CUDA <c>index_add_</c>/<c>scatter_add_</c> (its <c>torch.use_deterministic_algorithms</c> is this
    /// switch). Bool always takes the ordered path; integer sums are exact either way. Process-wide.
    /// </summary>
    public static bool DeterministicScatter { get; set; }

    /// <inheritdoc/>
    public void Gather(Storage x, Layout xLayout, Storage index, Layout indexLayout, Storage y, int outer, int size, int count, int inner)
    {
        const string op = "Gather";
        CheckIndexTypes(op, x, y, index);
        long n = (long)outer * count * inner;
        if (n == 0) return;
        var a = IndexArgs.Of(outer, size, count, inner, x.DType);
        var gx = Geometry.Of(op, xLayout);
        var gi = Geometry.Of(op, indexLayout);
        var errors = DeviceErrors();
        Kernel("Gather", null, k => k.LoadStreamKernel<ArrayView<byte>, Geometry, ArrayView<byte>, Geometry, ArrayView<byte>, IndexArgs, ArrayView<long>>(IndexKernels.Gather))
            (Grid(n), V(x), gx, V(index), gi, V(y), a, errors);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The accumulation order is fixed only under <see cref="DeterministicScatter"/>; by default updates are atomic.
    /// </remarks>
    public void ScatterAdd(Storage dy, Layout dyLayout, Storage index, Layout indexLayout, Storage dx, int outer, int size, int count, int inner)
    {
        const string op = "ScatterAdd";
        CheckIndexTypes(op, dy, dx, index);
        long n = (long)outer * count * inner;
        if (n == 0) return;
        var t = dx.DType;
        var gdy = Geometry.Of(op, dyLayout);
        var gi = Geometry.Of(op, indexLayout);
        bool half = t is DType.Float16 or DType.BFloat16;
        bool ordered = DeterministicScatter || t == DType.Bool;
        var a = IndexArgs.Of(outer, size, count, inner, t);
        a.Flags = half ? IndexKernels.FloatTarget : 0;
        var errors = DeviceErrors();
        long total = (long)outer * size * inner;
        Storage? scratch = null;
        var target = dx;
        if (half)
        {
            // The sums of a half-type dx are kept in float32 and rounded once at the end, as the CPU's.
            scratch = Allocate(Device, DType.Float32, total);
            scratch.AddRef();
            var whole = Layout.Contiguous([checked((int)total)]);
            Copy(dx, whole, scratch, whole);
            target = scratch;
        }
        try
        {
            if (ordered)
                Kernel("ScatterAddOrdered", null, k => k.LoadStreamKernel<ArrayView<byte>, Geometry, ArrayView<byte>, Geometry, ArrayView<byte>, IndexArgs, ArrayView<long>>(IndexKernels.ScatterOrdered))
                    (Grid((long)outer * inner), V(dy), gdy, V(index), gi, V(target), a, errors);
            else
                Kernel("ScatterAddAtomic", null, k => k.LoadStreamKernel<ArrayView<byte>, Geometry, ArrayView<byte>, Geometry, ArrayView<byte>, IndexArgs, ArrayView<long>>(IndexKernels.ScatterAtomic))
                    (Grid(n), V(dy), gdy, V(index), gi, V(target), a, errors);
            if (scratch is not null)
            {
                var whole = Layout.Contiguous([checked((int)total)]);
                Copy(scratch, whole, dx, whole);
            }
        }
        finally
        {
            scratch?.Release(); // stream order keeps the queued kernels ahead of any reuse
        }
    }

    static void CheckIndexTypes(string op, Storage a, Storage b, Storage index)
    {
        ContractChecks.Int64(op, "the index", index);
        ContractChecks.SameDType(op, a, b);
    }
}

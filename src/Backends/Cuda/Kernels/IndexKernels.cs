using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

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
        var a = new IndexArgs { Outer = outer, Size = size, Count = count, Inner = inner, Type = (int)x.DType, ElementSize = x.DType.ElementSize() };
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
        var a = new IndexArgs
        {
            Outer = outer, Size = size, Count = count, Inner = inner, Type = (int)t, ElementSize = t.ElementSize(),
            Flags = half ? IndexKernels.FloatTarget : 0,
        };
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

/// <summary>The sizes of one gather or scatter launch: operands viewed as [outer, size or count, inner].</summary>
public struct IndexArgs
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int Outer, Size, Count, Inner, Type, ElementSize, Flags;
#pragma warning restore CS1591
}

/// <summary>
/// The index kernels. Gather copies raw element bits (every dtype exact). ScatterAtomic adds each update atomically;
/// ScatterOrdered gives each (o, i) column to one thread, which walks j in order, so every destination element
/// receives its updates in increasing j, exactly as the CPU backend's ScatterAdd (whose order is the same).
/// </summary>
static class IndexKernels
{
    public const long ErrorGather = 3, ErrorScatterAdd = 4;

    /// <summary>The destination is a float32 buffer standing in for a half-type dx.</summary>
    public const int FloatTarget = 1;

    // The index at row-major position p of the index layout, or −1 after reporting it when out of [0, size): negative
    // indices are refused, as PyTorch's gather/scatter/index_select/embedding (one unsigned compare covers both ends).
    static long Wrapped(ArrayView<byte> index, in Geometry gi, long p, int size, ArrayView<long> errors, long code)
    {
        gi.Offsets(p, out long io, out _, out _, out _);
        long k = index.Cast<long>()[io];
        if ((ulong)k >= (ulong)size)
        {
            RowKernels.Report(errors, code, p, k, size, 0);
            return -1;
        }
        return k;
    }

    public static void Gather(ArrayView<byte> x, Geometry gx, ArrayView<byte> index, Geometry gi, ArrayView<byte> y, IndexArgs a, ArrayView<long> errors)
    {
        long n = (long)a.Outer * a.Count * a.Inner, stride = (long)Grid.DimX * Group.DimX;
        for (long p = Grid.GlobalIndex.X; p < n; p += stride)
        {
            long q = p / a.Inner, i = p - q * a.Inner, o = q / a.Count;
            long k = Wrapped(index, gi, p, a.Size, errors, ErrorGather);
            if (k < 0)
            {
                StoreRaw(y, p, a.ElementSize, 0);
                continue;
            }
            gx.Offsets((o * a.Size + k) * a.Inner + i, out long xo, out _, out _, out _);
            CopyRaw(x, xo, y, p, a.ElementSize);
        }
    }

    public static void ScatterAtomic(ArrayView<byte> dy, Geometry gdy, ArrayView<byte> index, Geometry gi, ArrayView<byte> dst, IndexArgs a, ArrayView<long> errors)
    {
        long n = (long)a.Outer * a.Count * a.Inner, stride = (long)Grid.DimX * Group.DimX;
        int t = a.Type;
        bool floatTarget = (a.Flags & FloatTarget) != 0 || t == F32;
        for (long p = Grid.GlobalIndex.X; p < n; p += stride)
        {
            long q = p / a.Inner, i = p - q * a.Inner, o = q / a.Count;
            long k = Wrapped(index, gi, p, a.Size, errors, ErrorScatterAdd);
            if (k < 0) continue;
            long e = (o * a.Size + k) * a.Inner + i;
            gdy.Offsets(p, out long s, out _, out _, out _);
            if (floatTarget) Atomic.Add(ref dst.Cast<float>()[e], LoadFloat(dy, t, s));
            else if (t == F64) Atomic.Add(ref dst.Cast<double>()[e], dy.Cast<double>()[s]);
            else if (t == I64) Atomic.Add(ref dst.Cast<long>()[e], dy.Cast<long>()[s]);
            else if (t == I32) Atomic.Add(ref dst.Cast<int>()[e], dy.Cast<int>()[s]);
        }
    }

    public static void ScatterOrdered(ArrayView<byte> dy, Geometry gdy, ArrayView<byte> index, Geometry gi, ArrayView<byte> dst, IndexArgs a, ArrayView<long> errors)
    {
        long columns = (long)a.Outer * a.Inner, stride = (long)Grid.DimX * Group.DimX;
        int t = a.Type;
        bool floatTarget = (a.Flags & FloatTarget) != 0 || t == F32;
        for (long q = Grid.GlobalIndex.X; q < columns; q += stride)
        {
            long o = q / a.Inner, i = q - o * a.Inner;
            for (int j = 0; j < a.Count; j++)
            {
                long p = (o * a.Count + j) * a.Inner + i;
                long k = Wrapped(index, gi, p, a.Size, errors, ErrorScatterAdd);
                if (k < 0) continue;
                long e = (o * a.Size + k) * a.Inner + i;
                gdy.Offsets(p, out long s, out _, out _, out _);
                if (floatTarget) { var f = dst.Cast<float>(); f[e] = f[e] + LoadFloat(dy, t, s); }
                else if (t == F64) { var d = dst.Cast<double>(); d[e] = d[e] + dy.Cast<double>()[s]; }
                else if (t == I64) { var l = dst.Cast<long>(); l[e] = l[e] + dy.Cast<long>()[s]; }
                else if (t == I32) { var v = dst.Cast<int>(); v[e] = v[e] + dy.Cast<int>()[s]; }
                else if (dy[s] != 0) dst[e] = 1; // Bool: or
            }
        }
    }
}

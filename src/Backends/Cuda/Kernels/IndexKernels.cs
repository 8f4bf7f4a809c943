using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>The sizes of one gather or scatter launch: operands viewed as [outer, size or count, inner].</summary>
public struct IndexArgs
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int Outer, Size, Count, Inner, Type, ElementSize, Flags;
    public FastDivisor ByInner, ByCount; // divide by Inner and by Count without div.s64
#pragma warning restore CS1591

    /// <summary>The sizes with their divisors.</summary>
    public static IndexArgs Of(int outer, int size, int count, int inner, DType type) => new()
    {
        Outer = outer, Size = size, Count = count, Inner = inner, Type = (int)type, ElementSize = type.ElementSize(),
        ByInner = FastDivisor.Of(inner), ByCount = FastDivisor.Of(count),
    };
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
            long q = a.ByInner.Divide(p), i = p - q * a.Inner, o = a.ByCount.Divide(q);
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
            long q = a.ByInner.Divide(p), i = p - q * a.Inner, o = a.ByCount.Divide(q);
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
            long o = a.ByInner.Divide(q), i = q - o * a.Inner;
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

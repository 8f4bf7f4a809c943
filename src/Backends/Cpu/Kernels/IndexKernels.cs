using System.Buffers;
using System.Runtime.CompilerServices;

namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// Gather and its adjoint over operands viewed as [outer, mid, inner]. Each operand's layout may have any rank and
/// strides: its dims are split into an outer group, one middle dim and an inner group, and each group becomes either
/// one stride (when its dims merge) or a table of offsets.
/// </summary>
static unsafe class IndexKernels
{
    /// <summary>Offsets of one dim group: k·Stride, or Table[k] when the dims do not merge into one stride.</summary>
    public readonly struct Group(long stride, long[]? table)
    {
        readonly long[]? _table = table;

        /// <summary>The stride when there is no table.</summary>
        public long Stride { get; } = stride;

        /// <summary>True when the offsets are k·Stride.</summary>
        public bool IsStrided => _table is null;

        /// <summary>True when every element of the group sits at offset 0 (a broadcast or empty group).</summary>
        public bool IsZero => _table is null && Stride == 0;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public long At(long k) => _table is null ? k * Stride : _table[k];
    }

    /// <summary>An operand viewed as [outer, mid, inner]: element (o, m, i) sits at Base + Outer.At(o) + m·Mid + Inner.At(i).</summary>
    public readonly record struct Operand(long Base, Group Outer, long Mid, Group Inner);

    /// <summary>A contiguous [outer, mid, inner] operand at offset 0.</summary>
    public static Operand Dense(int mid, int inner) => new(0, new Group((long)mid * inner, null), inner, new Group(1, null));

    public static void CheckTypes(string op, Storage a, Storage b, Storage index)
    {
        ContractChecks.Int64(op, "the index", index);
        ContractChecks.SameDType(op, a, b);
    }

    /// <summary>Splits a layout holding outer·mid·inner elements into [outer, mid, inner].</summary>
    public static Operand Split(string op, Layout l, long outer, int mid, long inner)
    {
        var sh = l.Shape;
        int r = sh.Rank;
        var pre = new long[r + 1];
        var suf = new long[r + 1];
        pre[0] = 1; suf[r] = 1;
        for (int d = 0; d < r; d++) pre[d + 1] = pre[d] * sh[d];
        for (int d = r - 1; d >= 0; d--) suf[d] = suf[d + 1] * sh[d];
        if (pre[r] != outer * mid * inner)
            throw new EngineException(op, $"layout ({l}) does not hold [{outer}, {mid}, {inner}] elements");
        for (int d = 0; d < r; d++)
            if (pre[d] == outer && sh[d] == mid && suf[d + 1] == inner)
                return new Operand(l.Offset, MakeGroup(l, 0, d), l.Strides[d], MakeGroup(l, d + 1, r));
        if (mid == 1)
            for (int p = 0; p <= r; p++)
                if (pre[p] == outer && suf[p] == inner)
                    return new Operand(l.Offset, MakeGroup(l, 0, p), 0, MakeGroup(l, p, r));
        var v = l.TryView([checked((int)outer), mid, checked((int)inner)]) ?? throw new EngineException(op,
            $"layout ({l}) cannot be viewed as [{outer}, {mid}, {inner}]");
        return new Operand(v.Offset, new Group(v.Strides[0], null), v.Strides[1], new Group(v.Strides[2], null));
    }

    // Dims [from, to) of a layout as one group: a single stride when the non-unit dims are mutually contiguous.
    static Group MakeGroup(Layout l, int from, int to)
    {
        var dims = new List<int>();
        for (int d = from; d < to; d++) if (l.Shape[d] != 1) dims.Add(d);
        if (dims.Count == 0) return new Group(0, null);
        bool merges = true;
        for (int k = 0; k + 1 < dims.Count && merges; k++)
            merges = l.Strides[dims[k]] == l.Strides[dims[k + 1]] * l.Shape[dims[k + 1]];
        if (merges) return new Group(l.Strides[dims[^1]], null);
        long n = 1;
        foreach (var d in dims) n *= l.Shape[d];
        var table = new long[n];
        var idx = new int[dims.Count];
        long off = 0;
        for (long k = 0; k < n; k++)
        {
            table[k] = off;
            for (int q = dims.Count - 1; q >= 0; q--)
            {
                int d = dims[q];
                off += l.Strides[d];
                if (++idx[q] < l.Shape[d]) break;
                off -= l.Strides[d] * l.Shape[d];
                idx[q] = 0;
            }
        }
        return new Group(0, table);
    }

    /// <summary>
    /// Checks every index lies in [0, size) before anything is written (negative ones are refused, as PyTorch); throws naming the first bad one in
    /// row-major order (the same one for any thread count).
    /// </summary>
    public static void Validate(string op, long* idx, Operand ix, long outer, int count, long inner, int size)
    {
        long rows = outer * count;
        // An index broadcast along the inner group holds one value per row.
        long perRow = ix.Inner.IsZero ? 1 : inner;
        var firstBad = new[] { long.MaxValue };
        CpuParallel.For(rows, Math.Max(1, (1 << 15) / perRow), (s, e) =>
        {
            for (long r = s; r < e; r++)
                if (FirstBad(idx, ix, r / count, (int)(r % count), perRow, size) >= 0) { InterlockedMin(ref firstBad[0], r); return; }
        });
        long row = firstBad[0];
        if (row == long.MaxValue) return;
        long i = FirstBad(idx, ix, row / count, (int)(row % count), perRow, size);
        long v = idx[ix.Base + ix.Outer.At(row / count) + (row % count) * ix.Mid + ix.Inner.At(i)];
        throw new ShapeException(op, $"index {v} is out of bounds for a dim of size {size} (valid indices are 0 to {size - 1})");
    }

    // The position of the first index of a row outside [0, size), or −1.
    static long FirstBad(long* idx, Operand ix, long o, int j, long n, int size)
    {
        long* p = idx + ix.Base + ix.Outer.At(o) + j * ix.Mid;
        for (long i = 0; i < n; i++)
            if ((ulong)p[ix.Inner.At(i)] >= (ulong)size) return i; // one unsigned compare: negative or too large
        return -1;
    }

    static void InterlockedMin(ref long target, long value)
    {
        long cur = Volatile.Read(ref target);
        while (value < cur)
        {
            long seen = Interlocked.CompareExchange(ref target, value, cur);
            if (seen == cur) return;
            cur = seen;
        }
    }


    /// <summary>
    /// y[o, j, i] = x[o, index[o, j, i], i]: a pure copy of elements, so every dtype is bit-exact. An index broadcast
    /// along the inner group (IndexSelect, Embedding) copies whole rows.
    /// </summary>
    public static void Gather<T>(nint x, Operand xs, nint index, Operand ix, nint y, Operand ys, long outer, int size, int count, long inner)
        where T : unmanaged
    {
        bool rows = ix.Inner.IsZero;
        bool strided = xs.Inner.IsStrided && ys.Inner.IsStrided && ix.Inner.IsStrided;
        long sx = xs.Inner.Stride, sy = ys.Inner.Stride, si = ix.Inner.Stride;
        CpuParallel.For(outer * count, Math.Max(1, (1 << 15) / inner), (s, e) =>
        {
            T* px = (T*)x; long* pi = (long*)index; T* py = (T*)y;
            for (long r = s; r < e; r++)
            {
                long o = r / count; int j = (int)(r % count);
                T* xo = px + xs.Base + xs.Outer.At(o);
                long* io = pi + ix.Base + ix.Outer.At(o) + j * ix.Mid;
                T* yo = py + ys.Base + ys.Outer.At(o) + j * ys.Mid;
                if (rows)
                {
                    T* src = xo + *io * xs.Mid;
                    if (strided && sx == 1 && sy == 1) Buffer.MemoryCopy(src, yo, inner * sizeof(T), inner * sizeof(T));
                    else if (strided) for (long i = 0; i < inner; i++) yo[i * sy] = src[i * sx];
                    else for (long i = 0; i < inner; i++) yo[ys.Inner.At(i)] = src[xs.Inner.At(i)];
                }
                else if (strided)
                    for (long i = 0; i < inner; i++) yo[i * sy] = xo[io[i * si] * xs.Mid + i * sx];
                else
                    for (long i = 0; i < inner; i++) yo[ys.Inner.At(i)] = xo[io[ix.Inner.At(i)] * xs.Mid + xs.Inner.At(i)];
            }
        });
    }

    /// <summary>
    /// dx[o, index[o, j, i], i] += dy[o, j, i] with dx contiguous [outer, size, inner]. Every dx element sums its
    /// updates in increasing j, whatever the thread count: work is split only over disjoint sets of dx elements.
    /// Half types sum in float32 and round once per element.
    /// </summary>
    public static void ScatterAdd<T, TE>(nint dy, Operand dys, nint index, Operand ix, nint dx, long outer, int size, int count, long inner)
        where T : unmanaged where TE : struct, IElement<T>
    {
        if (inner > 1 && ix.Inner.IsZero) ScatterRows<T, TE>(dy, dys, index, ix, dx, outer, size, count, inner);
        else ScatterColumns<T, TE>(dy, dys, index, ix, dx, outer, size, count, inner);
    }

    // The index is one value per (o, j) (IndexAdd, Embedding's backward): whole rows of dy add into rows of dx. The
    // (o, j) pairs are sorted by target row (then j), and each target row is one task.
    static void ScatterRows<T, TE>(nint dy, Operand dys, nint index, Operand ix, nint dx, long outer, int size, int count, long inner)
        where T : unmanaged where TE : struct, IElement<T>
    {
        long n = outer * count;
        var keys = new long[n];
        long* pi = (long*)index;
        for (long r = 0; r < n; r++)
        {
            long o = r / count; int j = (int)(r % count);
            keys[r] = (o * size + pi[ix.Base + ix.Outer.At(o) + j * ix.Mid]) * count + j;
        }
        Array.Sort(keys);
        var starts = new List<long>();
        for (long r = 0; r < n; r++)
            if (r == 0 || keys[r] / count != keys[r - 1] / count) starts.Add(r);
        starts.Add(n);
        bool half = typeof(T) == typeof(Half) || typeof(T) == typeof(BFloat16);
        bool dense = dys.Inner.IsStrided && dys.Inner.Stride == 1;
        CpuParallel.For(starts.Count - 1, Math.Max(1, (1 << 15) / inner / Math.Max(1, n / (starts.Count - 1))), (s, e) =>
        {
            float[]? buf = half ? ArrayPool<float>.Shared.Rent(checked((int)inner)) : null;
            try
            {
                for (long g = s; g < e; g++)
                {
                    long row = keys[starts[(int)g]] / count, o = row / size;
                    T* d = (T*)dx + row * inner;
                    T* dyo = (T*)dy + dys.Base + dys.Outer.At(o);
                    if (buf is not null)
                        for (long i = 0; i < inner; i++) buf[i] = TE.ToFloat(d[i]);
                    for (long q = starts[(int)g]; q < starts[(int)g + 1]; q++)
                    {
                        T* src = dyo + keys[q] % count * dys.Mid;
                        if (buf is not null)
                            for (long i = 0; i < inner; i++) buf[i] += TE.ToFloat(src[dys.Inner.At(i)]);
                        else if (typeof(T) == typeof(float) && dense && inner <= int.MaxValue)
                        {
                            var ds = new Span<float>(d, (int)inner);
                            System.Numerics.Tensors.TensorPrimitives.Add(ds, new ReadOnlySpan<float>(src, (int)inner), ds);
                        }
                        else
                            for (long i = 0; i < inner; i++) d[i] = Add<T, TE>(d[i], src[dys.Inner.At(i)]);
                    }
                    if (buf is not null)
                        for (long i = 0; i < inner; i++) d[i] = TE.FromFloat(buf[i]);
                }
            }
            finally { if (buf is not null) ArrayPool<float>.Shared.Return(buf); }
        });
    }

    // The general case: tasks are (o, block of i); each walks j in order over its block of columns. Half types sum a
    // block in a float32 buffer of size × width whose rows are loaded from dx when first touched and stored back
    // (rounded once) at the end, so a sparse scatter costs O(count), not O(size).
    static void ScatterColumns<T, TE>(nint dy, Operand dys, nint index, Operand ix, nint dx, long outer, int size, int count, long inner)
        where T : unmanaged where TE : struct, IElement<T>
    {
        bool half = typeof(T) == typeof(Half) || typeof(T) == typeof(BFloat16);
        long width;
        if (half) width = Math.Clamp((1 << 16) / Math.Max(size, 1), 1, inner);
        else
        {
            long wantTasks = 4L * CpuParallel.MaxThreads;
            width = outer >= wantTasks ? inner : Math.Clamp(inner * outer / wantTasks, Math.Min(64, inner), inner);
        }
        long blocks = (inner + width - 1) / width;
        CpuParallel.For(outer * blocks, Math.Max(1, (1 << 15) / Math.Max(1, (long)count * width)), (s, e) =>
        {
            T* pdy = (T*)dy; long* pi = (long*)index;
            float[]? buf = half ? ArrayPool<float>.Shared.Rent(checked((int)(size * width))) : null;
            int[]? stamp = half ? ArrayPool<int>.Shared.Rent(size) : null;
            var touched = half ? new List<long>() : null;
            if (stamp is not null) Array.Clear(stamp, 0, size);
            try
            {
                for (long t = s; t < e; t++)
                {
                    long o = t / blocks, i0 = t % blocks * width, i1 = Math.Min(inner, i0 + width), w = i1 - i0;
                    T* dxo = (T*)dx + o * size * inner;
                    T* dyo = pdy + dys.Base + dys.Outer.At(o);
                    long* io = pi + ix.Base + ix.Outer.At(o);
                    if (buf is not null)
                    {
                        int gen = (int)(t - s) + 1;
                        touched!.Clear();
                        for (int j = 0; j < count; j++)
                            for (long i = i0; i < i1; i++)
                            {
                                long k = io[j * ix.Mid + ix.Inner.At(i)];
                                if (stamp![k] != gen)
                                {
                                    stamp[k] = gen;
                                    touched.Add(k);
                                    for (long c = i0; c < i1; c++) buf[k * w + c - i0] = TE.ToFloat(dxo[k * inner + c]);
                                }
                                buf[k * w + i - i0] += TE.ToFloat(dyo[j * dys.Mid + dys.Inner.At(i)]);
                            }
                        foreach (var k in touched)
                            for (long i = i0; i < i1; i++) dxo[k * inner + i] = TE.FromFloat(buf[k * w + i - i0]);
                    }
                    else
                    {
                        for (int j = 0; j < count; j++)
                            for (long i = i0; i < i1; i++)
                            {
                                ref T d = ref dxo[io[j * ix.Mid + ix.Inner.At(i)] * inner + i];
                                d = Add<T, TE>(d, dyo[j * dys.Mid + dys.Inner.At(i)]);
                            }
                    }
                }
            }
            finally
            {
                if (buf is not null) ArrayPool<float>.Shared.Return(buf);
                if (stamp is not null) ArrayPool<int>.Shared.Return(stamp);
            }
        });
    }

    // a + b in the compute type of T; integers add exactly (int64 does not go through float64).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static T Add<T, TE>(T a, T b) where T : unmanaged where TE : struct, IElement<T>
    {
        if (typeof(T) == typeof(float)) { float r = Unsafe.As<T, float>(ref a) + Unsafe.As<T, float>(ref b); return Unsafe.As<float, T>(ref r); }
        if (typeof(T) == typeof(double)) { double r = Unsafe.As<T, double>(ref a) + Unsafe.As<T, double>(ref b); return Unsafe.As<double, T>(ref r); }
        if (typeof(T) == typeof(long)) { long r = Unsafe.As<T, long>(ref a) + Unsafe.As<T, long>(ref b); return Unsafe.As<long, T>(ref r); }
        if (typeof(T) == typeof(int)) { int r = Unsafe.As<T, int>(ref a) + Unsafe.As<T, int>(ref b); return Unsafe.As<int, T>(ref r); }
        if (typeof(T) == typeof(bool)) { bool r = Unsafe.As<T, bool>(ref a) | Unsafe.As<T, bool>(ref b); return Unsafe.As<bool, T>(ref r); }
        return TE.FromFloat(TE.ToFloat(a) + TE.ToFloat(b));
    }
}

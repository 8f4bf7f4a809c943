using Engine.Ops;

namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// The strided loops of the elementwise families. One generic loop per family serves every op struct and dtype;
/// a dense float32 operand set takes the op's <c>TryApply</c> fast path (VectorMath or an exact TensorPrimitives routine)
/// in parallel chunks. float64 always takes the op's scalar <c>Math</c> functions, which are deterministic.
/// </summary>
static unsafe class ElementwiseKernels
{
    // Work is cut in chunks of this many elements; counts of chunks are long, since a row may be int.MaxValue long.
    const int DenseChunk = 1 << 16;

    // Operands that are all dense, in the output's shape, and fit one chunk: the loop runs inline. Building a stride
    // plan and a parallel closure costs more than the work on the small tensors of scalar bookkeeping (a loss, a
    // learning rate, a norm), which is what bounds the per-op overhead.
    // 16-bit elements go through the float32 vector path this many at a time (two or three stack buffers).
    const int HalfChunk = 2048;

    // How much of a dense float32 range one TryApply call gets. TensorPrimitives stores its results past the cache
    // (non-temporal stores) once a call covers more than 256 KB: right for a fresh output, whose lines then need no
    // read for ownership, wrong for an update in place, whose lines the loads just brought in. So an in-place range
    // goes in calls of DenseChunk (exactly 256 KB of float32, not above the threshold) and any other in one call.
    // Measured on 16M float32 with huge pages, 2 threads, interleaved (benchmarks/RESULTS.md, 2026-12-04): a += b
    // 4.9–5.1 ms in one call per chunk, 4.2–4.4 in 256 KB calls; y = a + b the other way round, 4.8–5.0 against 6.9.
    static long StreamPiece(bool inPlace) => inPlace ? DenseChunk : long.MaxValue;

    static bool IsHalf<T>() => typeof(T) == typeof(BFloat16) || typeof(T) == typeof(Half);

    /// <summary>Widens <paramref name="dst"/>.Length 16-bit elements exactly.</summary>
    internal static void Widen<T>(T* src, Span<float> dst) where T : unmanaged
    {
        if (typeof(T) == typeof(BFloat16)) BFloat16.ConvertToSingle(new ReadOnlySpan<BFloat16>(src, dst.Length), dst);
        else System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, dst.Length), dst);
    }

    /// <summary>Rounds <paramref name="src"/> once into 16-bit elements (round to nearest even).</summary>
    internal static void Narrow<T>(ReadOnlySpan<float> src, T* dst) where T : unmanaged
    {
        if (typeof(T) == typeof(BFloat16)) BFloat16.ConvertFromSingle(src, new Span<BFloat16>(dst, src.Length));
        else System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(src, new Span<Half>(dst, src.Length));
    }

    static bool SmallDense(Layout y, Layout a, out int n)
    {
        long count = y.Numel;
        n = (int)count;
        return count <= DenseChunk && y.IsContiguous && a.IsContiguous;
    }

    public static void Unary<T, TE, TOp>(TOp op, nint x, Layout xl, nint y, Layout yl)
        where T : unmanaged where TE : struct, IElement<T> where TOp : struct, IUnaryOp
    {
        if (SmallDense(yl, xl, out int count))
        {
            T* px = (T*)x + xl.Offset, py = (T*)y + yl.Offset;
            if (typeof(T) == typeof(float) && op.TryApply(new ReadOnlySpan<float>(px, count), new Span<float>(py, count))) return;
            if (TE.Wide) for (int i = 0; i < count; i++) py[i] = TE.FromDouble(op.Apply(TE.ToDouble(px[i])));
            else for (int i = 0; i < count; i++) py[i] = TE.FromFloat(op.Apply(TE.ToFloat(px[i])));
            return;
        }
        var plan = new StridedPlan(yl, xl);
        if (IsHalf<T>() && plan.IsDense && op.TryApply(default, default))
        {
            // Dense 16-bit: the float32 vector path on widened chunks, rounded once on store — the bits of the op on
            // the widened values, without a scalar call per element (GELU's erf, say).
            nint hx = (nint)((T*)x + plan.Offsets[1]), hy = (nint)((T*)y + plan.Offsets[0]);
            CpuParallel.For(((long)plan.Inner + DenseChunk - 1) / DenseChunk, 1, (s, e) =>
            {
                Span<float> buf = stackalloc float[HalfChunk];
                for (long i = s * DenseChunk, end = Math.Min(plan.Inner, e * DenseChunk); i < end; i += HalfChunk)
                {
                    var part = buf[..(int)Math.Min(HalfChunk, end - i)];
                    Widen((T*)hx + i, part);
                    op.TryApply(part, part);
                    Narrow(part, (T*)hy + i);
                }
            });
            return;
        }
        if (typeof(T) == typeof(float) && plan.IsDense && op.TryApply(default, default))
        {
            float* px = (float*)x + plan.Offsets[1], py = (float*)y + plan.Offsets[0];
            long piece = StreamPiece(px == py);
            CpuParallel.For(((long)plan.Inner + DenseChunk - 1) / DenseChunk, 1, (s, e) =>
            {
                for (long a = s * DenseChunk, end = Math.Min(plan.Inner, e * DenseChunk), len; a < end; a += len)
                {
                    len = Math.Min(piece, end - a);
                    op.TryApply(new ReadOnlySpan<float>(px + a, (int)len), new Span<float>(py + a, (int)len));
                }
            });
            return;
        }
        if (plan.Outer == 1 && plan.Inner > DenseChunk)
        {
            // One long row (a dense tensor): split it, or a single thread does all the work.
            long sx = plan.InnerStrides[1], sy = plan.InnerStrides[0];
            T* bx = (T*)x + plan.Offsets[1]; T* by = (T*)y + plan.Offsets[0];
            nint nx = (nint)bx, ny = (nint)by;
            CpuParallel.For(((long)plan.Inner + DenseChunk - 1) / DenseChunk, 1, (s, e) =>
            {
                long i0 = s * DenseChunk, i1 = Math.Min(plan.Inner, e * DenseChunk);
                T* px = (T*)nx, py = (T*)ny;
                if (TE.Wide) for (long i = i0; i < i1; i++) py[i * sy] = TE.FromDouble(op.Apply(TE.ToDouble(px[i * sx])));
                else for (long i = i0; i < i1; i++) py[i * sy] = TE.FromFloat(op.Apply(TE.ToFloat(px[i * sx])));
            });
            return;
        }
        plan.ForEachRow(offs =>
        {
            T* px = (T*)x + offs[1], py = (T*)y + offs[0];
            long sx = plan.InnerStrides[1], sy = plan.InnerStrides[0];
            int n = plan.Inner;
            if (TE.Wide) for (int i = 0; i < n; i++) py[i * sy] = TE.FromDouble(op.Apply(TE.ToDouble(px[i * sx])));
            else for (int i = 0; i < n; i++) py[i * sy] = TE.FromFloat(op.Apply(TE.ToFloat(px[i * sx])));
        });
    }

    public static void Binary<T, TE, TY, TEY, TOp>(TOp op, nint a, Layout al, nint b, Layout bl, nint y, Layout yl)
        where T : unmanaged where TE : struct, IElement<T> where TY : unmanaged where TEY : struct, IElement<TY>
        where TOp : struct, IBinaryOp
    {
        if (SmallDense(yl, al, out int count) && bl.IsContiguous)
        {
            T* pa = (T*)a + al.Offset, pb = (T*)b + bl.Offset; TY* py = (TY*)y + yl.Offset;
            if (typeof(T) == typeof(float) && typeof(TY) == typeof(float)
                && op.TryApply(new ReadOnlySpan<float>(pa, count), new ReadOnlySpan<float>(pb, count), new Span<float>(py, count))) return;
            if (TE.Wide) for (int i = 0; i < count; i++) py[i] = TEY.FromDouble(op.Apply(TE.ToDouble(pa[i]), TE.ToDouble(pb[i])));
            else for (int i = 0; i < count; i++) py[i] = TEY.FromFloat(op.Apply(TE.ToFloat(pa[i]), TE.ToFloat(pb[i])));
            return;
        }
        var plan = new StridedPlan(yl, al, bl);
        if (IsHalf<T>() && typeof(TY) == typeof(T) && plan.IsDense && op.TryApply(default, default, default))
        {
            // Dense 16-bit, as Unary: widened chunks through the float32 vector path, one rounding on store.
            nint ha = (nint)((T*)a + plan.Offsets[1]), hb = (nint)((T*)b + plan.Offsets[2]), hy = (nint)((TY*)y + plan.Offsets[0]);
            CpuParallel.For(((long)plan.Inner + DenseChunk - 1) / DenseChunk, 1, (s, e) =>
            {
                Span<float> bufA = stackalloc float[HalfChunk], bufB = stackalloc float[HalfChunk];
                for (long i = s * DenseChunk, end = Math.Min(plan.Inner, e * DenseChunk); i < end; i += HalfChunk)
                {
                    int len = (int)Math.Min(HalfChunk, end - i);
                    var pa = bufA[..len]; var pb = bufB[..len];
                    Widen((T*)ha + i, pa);
                    Widen((T*)hb + i, pb);
                    op.TryApply(pa, pb, pa);
                    Narrow(pa, (T*)hy + i);
                }
            });
            return;
        }
        if (typeof(T) == typeof(float) && typeof(TY) == typeof(float) && plan.IsDense && op.TryApply(default, default, default))
        {
            float* pa = (float*)a + plan.Offsets[1], pb = (float*)b + plan.Offsets[2], py = (float*)y + plan.Offsets[0];
            long piece = StreamPiece(py == pa || py == pb);
            CpuParallel.For(((long)plan.Inner + DenseChunk - 1) / DenseChunk, 1, (s, e) =>
            {
                for (long i = s * DenseChunk, end = Math.Min(plan.Inner, e * DenseChunk), len; i < end; i += len)
                {
                    len = Math.Min(piece, end - i);
                    op.TryApply(new ReadOnlySpan<float>(pa + i, (int)len), new ReadOnlySpan<float>(pb + i, (int)len), new Span<float>(py + i, (int)len));
                }
            });
            return;
        }
        if (plan.Outer == 1 && plan.Inner > DenseChunk)
        {
            long sa = plan.InnerStrides[1], sb = plan.InnerStrides[2], sy = plan.InnerStrides[0];
            nint na = (nint)((T*)a + plan.Offsets[1]), nbp = (nint)((T*)b + plan.Offsets[2]), ny = (nint)((TY*)y + plan.Offsets[0]);
            CpuParallel.For(((long)plan.Inner + DenseChunk - 1) / DenseChunk, 1, (s, e) =>
            {
                long i0 = s * DenseChunk, i1 = Math.Min(plan.Inner, e * DenseChunk);
                T* pa = (T*)na, pb = (T*)nbp; TY* py = (TY*)ny;
                if (TE.Wide) for (long i = i0; i < i1; i++) py[i * sy] = TEY.FromDouble(op.Apply(TE.ToDouble(pa[i * sa]), TE.ToDouble(pb[i * sb])));
                else for (long i = i0; i < i1; i++) py[i * sy] = TEY.FromFloat(op.Apply(TE.ToFloat(pa[i * sa]), TE.ToFloat(pb[i * sb])));
            });
            return;
        }
        plan.ForEachRow(offs =>
        {
            T* pa = (T*)a + offs[1], pb = (T*)b + offs[2];
            TY* py = (TY*)y + offs[0];
            long sa = plan.InnerStrides[1], sb = plan.InnerStrides[2], sy = plan.InnerStrides[0];
            int n = plan.Inner;
            if (TE.Wide) for (int i = 0; i < n; i++) py[i * sy] = TEY.FromDouble(op.Apply(TE.ToDouble(pa[i * sa]), TE.ToDouble(pb[i * sb])));
            else for (int i = 0; i < n; i++) py[i * sy] = TEY.FromFloat(op.Apply(TE.ToFloat(pa[i * sa]), TE.ToFloat(pb[i * sb])));
        });
    }

    public static void Copy<TX, TEX, TY, TEY>(nint x, Layout xl, nint y, Layout yl)
        where TX : unmanaged where TEX : struct, IElement<TX> where TY : unmanaged where TEY : struct, IElement<TY>
    {
        var plan = new StridedPlan(yl, xl);
        if (typeof(TX) == typeof(TY) && plan.IsDense)
        {
            TX* px = (TX*)x + plan.Offsets[1]; TY* py = (TY*)y + plan.Offsets[0];
            Buffer.MemoryCopy(px, py, (long)plan.Inner * sizeof(TY), (long)plan.Inner * sizeof(TY));
            return;
        }
        if (typeof(TX) == typeof(float) && typeof(TY) == typeof(BFloat16) && plan.IsDense)
        {
            float* px = (float*)x + plan.Offsets[1]; BFloat16* py = (BFloat16*)y + plan.Offsets[0];
            CpuParallel.For(((long)plan.Inner + DenseChunk - 1) / DenseChunk, 1, (s, e) =>
            {
                long i0 = s * DenseChunk, i1 = Math.Min(plan.Inner, e * DenseChunk);
                BFloat16.ConvertFromSingle(new ReadOnlySpan<float>(px + i0, (int)(i1 - i0)), new Span<BFloat16>(py + i0, (int)(i1 - i0)));
            });
            return;
        }
        if (typeof(TX) == typeof(BFloat16) && typeof(TY) == typeof(float) && plan.IsDense)
        {
            BFloat16* px = (BFloat16*)x + plan.Offsets[1]; float* py = (float*)y + plan.Offsets[0];
            CpuParallel.For(((long)plan.Inner + DenseChunk - 1) / DenseChunk, 1, (s, e) =>
            {
                long i0 = s * DenseChunk, i1 = Math.Min(plan.Inner, e * DenseChunk);
                BFloat16.ConvertToSingle(new ReadOnlySpan<BFloat16>(px + i0, (int)(i1 - i0)), new Span<float>(py + i0, (int)(i1 - i0)));
            });
            return;
        }
        plan.ForEachRow(offs =>
        {
            TX* px = (TX*)x + offs[1]; TY* py = (TY*)y + offs[0];
            long sx = plan.InnerStrides[1], sy = plan.InnerStrides[0];
            int n = plan.Inner;
            // A broadcast source (Expand(...).Contiguous()) materializes as a fill.
            if (typeof(TX) == typeof(TY) && sx == 0 && sy == 1) new Span<TY>(py, n).Fill(*(TY*)px);
            else if (typeof(TX) == typeof(TY)) for (int i = 0; i < n; i++) py[i * sy] = *(TY*)(px + i * sx);
            // One rounding: a wide source or a wide destination goes through float64, which holds every value of
            // the narrower types exactly; half-to-half goes through float32, which does too.
            else if (TEX.Wide || TEY.Wide) for (int i = 0; i < n; i++) py[i * sy] = TEY.FromDouble(TEX.ToDouble(px[i * sx]));
            else for (int i = 0; i < n; i++) py[i * sy] = TEY.FromFloat(TEX.ToFloat(px[i * sx]));
        });
    }

    public static void Fill<T, TE>(nint y, Layout yl, double value) where T : unmanaged where TE : struct, IElement<T>
    {
        T v = TE.FromDouble(value);
        var plan = new StridedPlan(yl);
        plan.ForEachRow(offs =>
        {
            T* py = (T*)y + offs[0];
            long sy = plan.InnerStrides[0];
            if (sy == 1) new Span<T>(py, plan.Inner).Fill(v);
            else for (int i = 0; i < plan.Inner; i++) py[i * sy] = v;
        });
    }

    public static void Where<T>(nint c, Layout cl, nint a, Layout al, nint b, Layout bl, nint y, Layout yl) where T : unmanaged
    {
        var plan = new StridedPlan(yl, cl, al, bl);
        plan.ForEachRow(offs =>
        {
            bool* pc = (bool*)c + offs[1];
            T* pa = (T*)a + offs[2], pb = (T*)b + offs[3], py = (T*)y + offs[0];
            long sc = plan.InnerStrides[1], sa = plan.InnerStrides[2], sb = plan.InnerStrides[3], sy = plan.InnerStrides[0];
            for (int i = 0; i < plan.Inner; i++) py[i * sy] = pc[i * sc] ? pa[i * sa] : pb[i * sb];
        });
    }
}

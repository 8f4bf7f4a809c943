using System.Runtime.CompilerServices;

namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// An accumulator over elements of one block: adds runs of elements (a pointer, a stride, a count and the flat index
/// of the first within the block), and merges with the accumulator of the block's next chunk.
/// </summary>
unsafe interface IAccumulator<TSelf> where TSelf : struct, IAccumulator<TSelf>
{
    /// <summary>Adds one element at flat block position <paramref name="index"/>.</summary>
    void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T>;

    /// <summary>Adds p[0], p[stride], ... (n elements), the first at flat block position <paramref name="first"/>.</summary>
    void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>;

    /// <summary>Combines with the accumulator of the following chunk of the same block.</summary>
    void Merge(in TSelf later);

    /// <summary>Adds element p[q·laneStride] to accs[q] for every q, all at flat block position <paramref name="index"/>.</summary>
    static virtual void AddAcross<T, TE>(Span<TSelf> accs, T* p, long laneStride, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        for (int q = 0; q < accs.Length; q++) accs[q].Push<T, TE>(p[q * laneStride], index);
    }
}

/// <summary>Where a reduction's accumulators come from (one per output, carrying e.g. a mean) and where they go.</summary>
interface IReduceSink<TAcc> where TAcc : struct, IAccumulator<TAcc>
{
    TAcc Seed(long o);
    void Store(long o, in TAcc acc);
}

/// <summary>
/// The reduction kernels: every op accumulates in float64 (integer sums and int64 extrema exactly in int64) and
/// rounds once on store. Work is split over outputs; a block longer than <see cref="Chunk"/> is split into
/// fixed-size chunks whose partial results are combined in chunk order, so a result depends on the block's values
/// and layout only, never on the thread count.
/// </summary>
static unsafe partial class ReduceKernels
{
    const long Chunk = 1 << 15;
    const long GrainElements = 1 << 15;
    const int Tile = 4096;

    public static void Run<T, TE>(ReduceOp op, T* x, ReducePlan p, T* y, long* indices, double argument)
        where T : unmanaged where TE : struct, IElement<T>
    {
        switch (op)
        {
            case ReduceOp.Sum:
            case ReduceOp.Mean:
                if (IsInteger<T>())
                    Drive<T, TE, IntSumAcc, IntSumSink<T, TE>>(x, p, new IntSumSink<T, TE> { Y = y, Mean = op == ReduceOp.Mean, N = p.BlockSize });
                else
                    Drive<T, TE, SumAcc, SumSink<T, TE>>(x, p, new SumSink<T, TE> { Y = y, Mean = op == ReduceOp.Mean, N = p.BlockSize });
                break;
            case ReduceOp.Max:
                Drive<T, TE, ExtremumAcc<Greater>, ExtremumSink<T, TE, Greater>>(x, p, new ExtremumSink<T, TE, Greater> { Y = y, Indices = indices });
                break;
            case ReduceOp.Min:
                Drive<T, TE, ExtremumAcc<Less>, ExtremumSink<T, TE, Less>>(x, p, new ExtremumSink<T, TE, Less> { Y = y, Indices = indices });
                break;
            case ReduceOp.Var:
            {
                // Two passes (the mean, then squared deviations with the compensation term Σd), the accurate
                // textbook algorithm; both passes are chunked alike.
                var means = new double[p.OuterCount];
                Drive<T, TE, SumAcc, StatSink<T>>(x, p, new StatSink<T> { Stats = means, Divisor = p.BlockSize });
                Drive<T, TE, SquaredDeviationAcc, VarSink<T, TE>>(x, p, new VarSink<T, TE> { Y = y, Means = means, N = p.BlockSize, Correction = argument });
                break;
            }
            case ReduceOp.LogSumExp:
            {
                var max = new double[p.OuterCount];
                Drive<T, TE, ExtremumAcc<Greater>, MaxStatSink>(x, p, new MaxStatSink { Stats = max });
                Drive<T, TE, ExpSumAcc, LogSumExpSink<T, TE>>(x, p, new LogSumExpSink<T, TE> { Y = y, Max = max });
                break;
            }
            case ReduceOp.Norm:
                if (double.IsPositiveInfinity(argument))
                    Drive<T, TE, AbsExtremumAcc<Greater>, AbsExtremumSink<T, TE, Greater>>(x, p, new AbsExtremumSink<T, TE, Greater> { Y = y });
                else if (double.IsNegativeInfinity(argument))
                    Drive<T, TE, AbsExtremumAcc<Less>, AbsExtremumSink<T, TE, Less>>(x, p, new AbsExtremumSink<T, TE, Less> { Y = y });
                else
                    Drive<T, TE, PowerSumAcc, NormSink<T, TE>>(x, p, new NormSink<T, TE> { Y = y, P = argument });
                break;
            default:
                throw new EngineException("Reduce", $"unknown reduction {op}");
        }
    }

    /// <summary>Seeds, accumulates and stores every output, chunking long blocks (see the class summary).</summary>
    static void Drive<T, TE, TAcc, TSink>(T* x, ReducePlan p, TSink sink)
        where T : unmanaged where TE : struct, IElement<T> where TAcc : struct, IAccumulator<TAcc> where TSink : struct, IReduceSink<TAcc>
    {
        long outs = p.OuterCount, n = p.BlockSize;
        if (outs == 0) return;
        if (p.UseColumns)
        {
            DriveColumns<T, TE, TAcc, TSink>(x, p, sink);
            return;
        }
        if (n <= Chunk)
        {
            CpuParallel.For(outs, Math.Max(1, GrainElements / Math.Max(n, 1)), (s, e) =>
            {
                for (long o = s; o < e; o++)
                {
                    var acc = sink.Seed(o);
                    Accumulate<T, TE, TAcc>(x + p.OuterOffset(o), p.Block, 0, n, ref acc);
                    sink.Store(o, acc);
                }
            });
            return;
        }
        long chunks = (n + Chunk - 1) / Chunk;
        var partial = new TAcc[outs * chunks];
        CpuParallel.For(outs * chunks, 1, (s, e) =>
        {
            for (long k = s; k < e; k++)
            {
                long o = k / chunks, c = k % chunks;
                var acc = sink.Seed(o);
                Accumulate<T, TE, TAcc>(x + p.OuterOffset(o), p.Block, c * Chunk, Math.Min(n, (c + 1) * Chunk), ref acc);
                partial[k] = acc;
            }
        });
        MergeChunks<TAcc, TSink>(partial, outs, chunks, sink);
    }

    /// <summary>Combines each output's chunk accumulators in chunk order and stores the result.</summary>
    static void MergeChunks<TAcc, TSink>(TAcc[] partial, long outs, long chunks, TSink sink)
        where TAcc : struct, IAccumulator<TAcc> where TSink : struct, IReduceSink<TAcc>
    {
        for (long o = 0; o < outs; o++)
        {
            var acc = partial[o * chunks];
            for (long c = 1; c < chunks; c++) acc.Merge(partial[o * chunks + c]);
            sink.Store(o, acc);
        }
    }

    /// <summary>
    /// The walk for blocks whose elements lie far apart while neighbouring outputs lie close (reducing a leading dim
    /// of a row-major tensor): tiles of up to <see cref="Tile"/> neighbouring outputs advance through their blocks together,
    /// each reading a short contiguous run per block position. Each output still adds its elements in block order,
    /// and long blocks are chunked as in the row walk.
    /// </summary>
    static void DriveColumns<T, TE, TAcc, TSink>(T* x, ReducePlan p, TSink sink)
        where T : unmanaged where TE : struct, IElement<T> where TAcc : struct, IAccumulator<TAcc> where TSink : struct, IReduceSink<TAcc>
    {
        long outs = p.OuterCount, n = p.BlockSize;
        int lanes = p.LastOuterSize;
        long laneStride = p.LastOuterStride;
        // A tile's accumulators stay within 64 KiB (L2, and clear of the large-object heap).
        int tile = Math.Min(lanes, Math.Min(Tile, (64 << 10) / Unsafe.SizeOf<TAcc>()));
        long groups = outs / lanes, tiles = (lanes + tile - 1) / tile;
        long chunks = n <= Chunk ? 1 : (n + Chunk - 1) / Chunk;
        var partial = chunks > 1 ? new TAcc[outs * chunks] : null;
        long grain = Math.Max(1, GrainElements / (Math.Min(n, Chunk) * tile));
        CpuParallel.For(groups * tiles * chunks, grain, (s, e) =>
        {
            var accs = new TAcc[tile];
            for (long k = s; k < e; k++)
            {
                long c = k % chunks, gt = k / chunks, g = gt / tiles;
                int j0 = (int)(gt % tiles) * tile, w = Math.Min(tile, lanes - j0);
                long o0 = g * lanes + j0;
                for (int q = 0; q < w; q++) accs[q] = sink.Seed(o0 + q);
                AccumulateColumns<T, TE, TAcc>(x + p.OuterOffset(o0), laneStride, w, p.Block, c * Chunk, Math.Min(n, (c + 1) * Chunk), accs);
                if (partial is null) for (int q = 0; q < w; q++) sink.Store(o0 + q, accs[q]);
                else for (int q = 0; q < w; q++) partial[(o0 + q) * chunks + c] = accs[q];
            }
        });
        if (partial is not null) MergeChunks<TAcc, TSink>(partial, outs, chunks, sink);
    }

    static void AccumulateColumns<T, TE, TAcc>(T* first, long laneStride, int w, StridedPlan plan, long a, long b, TAcc[] accs)
        where T : unmanaged where TE : struct, IElement<T> where TAcc : struct, IAccumulator<TAcc>
    {
        if (a >= b) return;
        int inner = plan.Inner;
        long stride = plan.InnerStrides[0];
        var span = accs.AsSpan(0, w);
        Span<long> off = stackalloc long[1];
        long row = a / inner;
        int i = (int)(a % inner);
        while (a < b)
        {
            plan.RowOffsets(row, off);
            int m = (int)Math.Min(inner - i, b - a);
            T* r = first + off[0] + i * stride;
            for (int q = 0; q < m; q++) TAcc.AddAcross<T, TE>(span, r + q * stride, laneStride, a + q);
            a += m; row++; i = 0;
        }
    }

    /// <summary>Adds elements [a, b) (flat row-major positions in the block) to <paramref name="acc"/>, row by row.</summary>
    static void Accumulate<T, TE, TAcc>(T* block, StridedPlan plan, long a, long b, ref TAcc acc)
        where T : unmanaged where TE : struct, IElement<T> where TAcc : struct, IAccumulator<TAcc>
    {
        if (a >= b) return;
        int inner = plan.Inner;
        long stride = plan.InnerStrides[0];
        if (plan.Outer == 1)
        {
            acc.Add<T, TE>(block + plan.Offsets[0] + a * stride, stride, (int)(b - a), a);
            return;
        }
        Span<long> off = stackalloc long[1];
        long row = a / inner;
        int i = (int)(a % inner);
        while (a < b)
        {
            plan.RowOffsets(row, off);
            int m = (int)Math.Min(inner - i, b - a);
            acc.Add<T, TE>(block + off[0] + i * stride, stride, m, a);
            a += m; row++; i = 0;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsInteger<T>() => typeof(T) == typeof(int) || typeof(T) == typeof(long) || typeof(T) == typeof(bool);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static long ToLong<T>(T v) where T : unmanaged =>
        typeof(T) == typeof(long) ? Unsafe.As<T, long>(ref v)
        : typeof(T) == typeof(int) ? Unsafe.As<T, int>(ref v)
        : typeof(T) == typeof(bool) ? (Unsafe.As<T, bool>(ref v) ? 1 : 0)
        : 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static T FromLong<T>(long v) where T : unmanaged
    {
        if (typeof(T) == typeof(long)) return Unsafe.As<long, T>(ref v);
        if (typeof(T) == typeof(int)) { int i = unchecked((int)v); return Unsafe.As<int, T>(ref i); }
        bool b = v != 0;
        return Unsafe.As<bool, T>(ref b);
    }
}

using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Reduce(ReduceOp op, Storage x, Layout xLayout, int reducedDims, Storage y, Storage? indices, double argument)
    {
        if (reducedDims < 0 || reducedDims > xLayout.Rank)
            throw new ShapeException(op.ToString(), $"cannot reduce the last {reducedDims} dims of a layout of rank {xLayout.Rank}");
        if (indices is not null && indices.DType != DType.Int64)
            throw new DTypeException(op.ToString(), $"indices must be int64, got {indices.DType.Name()}");
        var plan = new ReducePlan(xLayout, reducedDims);
        bool needsElement = op is ReduceOp.Max or ReduceOp.Min || op == ReduceOp.Norm && double.IsInfinity(argument);
        if (needsElement && plan.BlockSize == 0)
            throw new ShapeException(op.ToString(), $"expected a non-empty reduced block, got shape {Shape.Format(xLayout.Shape)} reduced over its last {reducedDims} dims (the op has no identity)");
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

/// <summary>
/// A reduction's geometry: the outer (kept) dims, one output each, and the reduced block walked in row-major order
/// as rows of a <see cref="StridedPlan"/> (contiguous reduced dims merged, so a dense block is one row).
/// </summary>
sealed class ReducePlan
{
    readonly int[] _outerShape;
    readonly long[] _outerStrides;
    readonly long _offset;

    public ReducePlan(Layout x, int reducedDims)
    {
        int kept = x.Rank - reducedDims;
        _outerShape = x.Shape[..kept];
        _outerStrides = x.Strides[..kept];
        _offset = x.Offset;
        OuterCount = Shape.Numel(_outerShape);
        var blockShape = x.Shape[kept..];
        BlockSize = Shape.Numel(blockShape);
        Block = new StridedPlan(new Layout(blockShape, x.Strides[kept..], 0));
    }

    /// <summary>Number of outputs.</summary>
    public long OuterCount { get; }

    /// <summary>Elements reduced into each output.</summary>
    public long BlockSize { get; }

    /// <summary>The walk of one block (offsets relative to the block's start).</summary>
    public StridedPlan Block { get; }

    /// <summary>Element offset of the first element of output <paramref name="o"/>'s block.</summary>
    public long OuterOffset(long o)
    {
        long off = _offset;
        for (int d = _outerShape.Length - 1; d >= 0 && o > 0; d--)
        {
            off += o % _outerShape[d] * _outerStrides[d];
            o /= _outerShape[d];
        }
        return off;
    }

    /// <summary>The x stride of the innermost kept dim: the distance between neighbouring outputs' blocks (0 when there is none).</summary>
    public long LastOuterStride => _outerShape.Length == 0 ? 0 : _outerStrides[^1];

    /// <summary>Extent of the innermost kept dim (1 when there is none).</summary>
    public int LastOuterSize => _outerShape.Length == 0 ? 1 : _outerShape[^1];

    /// <summary>
    /// True when neighbouring outputs are closer in memory than neighbouring block elements (a reduction over a
    /// leading dim): the column walk then reads memory in order where the row walk would stride through it.
    /// </summary>
    public bool UseColumns => LastOuterSize >= 8 && BlockSize > 1 && Math.Abs(LastOuterStride) < Math.Abs(Block.InnerStrides[0]);
}

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
static unsafe class ReduceKernels
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

    // ---- contiguous fast paths: a fixed lane structure (float64 partial sums in Vector256 lanes, combined in a fixed
    // order), so a sum is the same on every machine (Vector256 is emulated where AVX is missing, with the same
    // arithmetic); the vectorized exponential may differ from Math.Exp in the last bit ----

    internal static double SumF32(float* p, int n)
    {
        int i = 0;
        double r = 0;
        if (n >= 16)
        {
            Vector256<double> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i <= n - 16; i += 16)
            {
                var (l0, h0) = Vector256.Widen(Vector256.Load(p + i));
                var (l1, h1) = Vector256.Widen(Vector256.Load(p + i + 8));
                a0 += l0; a1 += h0; a2 += l1; a3 += h1;
            }
            r = HorizontalSum((a0 + a1) + (a2 + a3));
        }
        for (; i < n; i++) r += p[i];
        return r;
    }

    internal static double SumF64(double* p, int n)
    {
        int i = 0;
        double r = 0;
        if (n >= 16)
        {
            Vector256<double> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i <= n - 16; i += 16)
            {
                a0 += Vector256.Load(p + i); a1 += Vector256.Load(p + i + 4);
                a2 += Vector256.Load(p + i + 8); a3 += Vector256.Load(p + i + 12);
            }
            r = HorizontalSum((a0 + a1) + (a2 + a3));
        }
        for (; i < n; i++) r += p[i];
        return r;
    }

    internal static double SumSquaresF32(float* p, int n)
    {
        int i = 0;
        double r = 0;
        if (n >= 16)
        {
            Vector256<double> a0 = default, a1 = default, a2 = default, a3 = default;
            for (; i <= n - 16; i += 16)
            {
                var (l0, h0) = Vector256.Widen(Vector256.Load(p + i));
                var (l1, h1) = Vector256.Widen(Vector256.Load(p + i + 8));
                a0 += l0 * l0; a1 += h0 * h0; a2 += l1 * l1; a3 += h1 * h1;
            }
            r = HorizontalSum((a0 + a1) + (a2 + a3));
        }
        for (; i < n; i++) r += (double)p[i] * p[i];
        return r;
    }

    /// <summary>(Σ(x−m)², Σ(x−m)) over a contiguous run, 8 float64 lanes.</summary>
    internal static (double S, double C) SquaredDeviationsF32(float* p, int n, double m)
    {
        int i = 0;
        double s = 0, c = 0;
        if (n >= 8)
        {
            var mv = Vector256.Create(m);
            Vector256<double> s0 = default, s1 = default, c0 = default, c1 = default;
            for (; i <= n - 8; i += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(p + i));
                lo -= mv; hi -= mv;
                s0 += lo * lo; s1 += hi * hi; c0 += lo; c1 += hi;
            }
            s = HorizontalSum(s0 + s1); c = HorizontalSum(c0 + c1);
        }
        for (; i < n; i++) { double d = p[i] - m; s += d * d; c += d; }
        return (s, c);
    }

    internal static (double S, double C) SquaredDeviationsF64(double* p, int n, double m)
    {
        int i = 0;
        double s = 0, c = 0;
        if (n >= 8)
        {
            var mv = Vector256.Create(m);
            Vector256<double> s0 = default, s1 = default, c0 = default, c1 = default;
            for (; i <= n - 8; i += 8)
            {
                var lo = Vector256.Load(p + i) - mv;
                var hi = Vector256.Load(p + i + 4) - mv;
                s0 += lo * lo; s1 += hi * hi; c0 += lo; c1 += hi;
            }
            s = HorizontalSum(s0 + s1); c = HorizontalSum(c0 + c1);
        }
        for (; i < n; i++) { double d = p[i] - m; s += d * d; c += d; }
        return (s, c);
    }

    /// <summary>Σ e^(x−m) over a contiguous run, with the vectorized float64 exponential.</summary>
    internal static double ExpSumF32(float* p, int n, double m)
    {
        int i = 0;
        double s = 0;
        if (n >= 8)
        {
            var mv = Vector256.Create(m);
            Vector256<double> s0 = default, s1 = default;
            for (; i <= n - 8; i += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(p + i));
                s0 += Vector256.Exp(lo - mv); s1 += Vector256.Exp(hi - mv);
            }
            s = HorizontalSum(s0 + s1);
        }
        for (; i < n; i++) s += Math.Exp(p[i] - m);
        return s;
    }

    internal static double ExpSumF64(double* p, int n, double m)
    {
        int i = 0;
        double s = 0;
        if (n >= 8)
        {
            var mv = Vector256.Create(m);
            Vector256<double> s0 = default, s1 = default;
            for (; i <= n - 8; i += 8)
            {
                s0 += Vector256.Exp(Vector256.Load(p + i) - mv); s1 += Vector256.Exp(Vector256.Load(p + i + 4) - mv);
            }
            s = HorizontalSum(s0 + s1);
        }
        for (; i < n; i++) s += Math.Exp(p[i] - m);
        return s;
    }

    /// <summary>
    /// The first extremum of a contiguous run and its index, PyTorch's rule (the first NaN wins; ties keep the first):
    /// one vector pass for the extremum and any NaN, a second for the first element equal to it (so −0 and +0, which
    /// compare equal, resolve to the first of them, as the scalar walk does).
    /// </summary>
    internal static (double Value, int Index) Extremum<TF, TOrder>(TF* p, int n)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF> where TOrder : struct, IOrder
    {
        int lanes = Vector256<TF>.Count, i = lanes;
        var best = Vector256.Load(p);
        var nan = ~Vector256.Equals(best, best);
        for (; i <= n - lanes; i += lanes)
        {
            var v = Vector256.Load(p + i);
            nan |= ~Vector256.Equals(v, v);
            best = Vector256.ConditionalSelect(typeof(TOrder) == typeof(Greater) ? Vector256.GreaterThan(v, best) : Vector256.LessThan(v, best), v, best);
        }
        bool anyNaN = nan != Vector256<TF>.Zero;
        TF m = best.GetElement(0);
        for (int k = 1; k < lanes; k++) if (Beats<TF, TOrder>(best.GetElement(k), m)) m = best.GetElement(k);
        for (; i < n; i++)
        {
            if (TF.IsNaN(p[i])) anyNaN = true;
            else if (Beats<TF, TOrder>(p[i], m)) m = p[i];
        }
        if (anyNaN)
        {
            for (int k = 0; k < n; k++) if (TF.IsNaN(p[k])) return (double.NaN, k);
        }
        var mv = Vector256.Create(m);
        for (i = 0; i <= n - lanes; i += lanes)
        {
            uint bits = Vector256.Equals(Vector256.Load(p + i), mv).ExtractMostSignificantBits();
            if (bits != 0) { int k = i + BitOperations.TrailingZeroCount(bits); return (double.CreateTruncating(p[k]), k); }
        }
        for (; i < n; i++) if (p[i] == m) return (double.CreateTruncating(p[i]), i);
        return (double.CreateTruncating(m), 0); // unreachable: m is one of the elements
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool Beats<TF, TOrder>(TF a, TF b) where TF : IBinaryFloatingPointIeee754<TF> where TOrder : struct, IOrder =>
        typeof(TOrder) == typeof(Greater) ? a > b : a < b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static double HorizontalSum(Vector256<double> v) => (v.GetElement(0) + v.GetElement(1)) + (v.GetElement(2) + v.GetElement(3));

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

// ---- accumulators ----

/// <summary>Σx in float64.</summary>
unsafe struct SumAcc : IAccumulator<SumAcc>
{
    public double S;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T> => S += TE.ToDouble(v);

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (typeof(T) == typeof(float) && stride == 1) S += ReduceKernels.SumF32((float*)p, n);
        else if (typeof(T) == typeof(double) && stride == 1) S += ReduceKernels.SumF64((double*)p, n);
        else
        {
            double s = S;
            for (int i = 0; i < n; i++) s += TE.ToDouble(p[i * stride]);
            S = s;
        }
    }

    public void Merge(in SumAcc later) => S += later.S;

    // Lane q adds its element exactly as Push would (one widening, one float64 add), so the vector form changes
    // nothing but speed.
    public static void AddAcross<T, TE>(Span<SumAcc> accs, T* p, long laneStride, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        var d = MemoryMarshal.Cast<SumAcc, double>(accs);
        ref double d0 = ref MemoryMarshal.GetReference(d);
        int q = 0;
        if (typeof(T) == typeof(float) && laneStride == 1)
            for (; q <= d.Length - 8; q += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load((float*)p + q));
                (Vector256.LoadUnsafe(ref d0, (nuint)q) + lo).StoreUnsafe(ref d0, (nuint)q);
                (Vector256.LoadUnsafe(ref d0, (nuint)q + 4) + hi).StoreUnsafe(ref d0, (nuint)q + 4);
            }
        else if (typeof(T) == typeof(double) && laneStride == 1)
            for (; q <= d.Length - 4; q += 4)
                (Vector256.LoadUnsafe(ref d0, (nuint)q) + Vector256.Load((double*)p + q)).StoreUnsafe(ref d0, (nuint)q);
        for (; q < d.Length; q++) d[q] += TE.ToDouble(p[q * laneStride]);
    }
}

/// <summary>Σx exactly in int64 (wrapping on overflow, as PyTorch) for integer and Bool elements.</summary>
unsafe struct IntSumAcc : IAccumulator<IntSumAcc>
{
    public long I;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T> => I += ReduceKernels.ToLong(v);

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        long s = I;
        for (int i = 0; i < n; i++) s += ReduceKernels.ToLong(p[i * stride]);
        I = s;
    }

    public void Merge(in IntSumAcc later) => I += later.I;
}

/// <summary>Orders for extrema: whether a beats b.</summary>
interface IOrder
{
    static abstract bool Beats(double a, double b);
    static abstract bool Beats(long a, long b);
}

readonly struct Greater : IOrder
{
    public static bool Beats(double a, double b) => a > b;
    public static bool Beats(long a, long b) => a > b;
}

readonly struct Less : IOrder
{
    public static bool Beats(double a, double b) => a < b;
    public static bool Beats(long a, long b) => a < b;
}

/// <summary>
/// The first extremum and its flat index. NaN beats everything (the first NaN wins and ends the search), as
/// PyTorch's max/min; equal values keep the earlier index. Int64 compares exactly.
/// </summary>
unsafe struct ExtremumAcc<TOrder> : IAccumulator<ExtremumAcc<TOrder>> where TOrder : struct, IOrder
{
    public double V;
    public long L;
    public long Index;
    public bool Has;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (n <= 0) return;
        if (stride == 1 && n >= 32 && (typeof(T) == typeof(float) || typeof(T) == typeof(double)))
        {
            var (v, k) = typeof(T) == typeof(float) ? ReduceKernels.Extremum<float, TOrder>((float*)p, n) : ReduceKernels.Extremum<double, TOrder>((double*)p, n);
            if (!Has) { V = v; L = 0; Index = first + k; Has = true; }
            else if (!double.IsNaN(V) && (double.IsNaN(v) || TOrder.Beats(v, V))) { V = v; Index = first + k; }
            return;
        }
        int i = 0;
        if (!Has) { V = TE.ToDouble(p[0]); L = typeof(T) == typeof(long) ? ReduceKernels.ToLong(p[0]) : 0; Index = first; Has = true; i = 1; }
        if (typeof(T) == typeof(long))
        {
            long best = L, idx = Index;
            for (; i < n; i++)
            {
                long v = ReduceKernels.ToLong(p[i * stride]);
                if (TOrder.Beats(v, best)) { best = v; idx = first + i; }
            }
            L = best; V = best; Index = idx;
            return;
        }
        double b = V;
        long at = Index;
        if (!double.IsNaN(b))
            for (; i < n; i++)
            {
                double v = TE.ToDouble(p[i * stride]);
                if (TOrder.Beats(v, b)) { b = v; at = first + i; }
                else if (double.IsNaN(v)) { b = v; at = first + i; break; }
            }
        V = b; Index = at;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        if (!Has) { V = TE.ToDouble(v); L = typeof(T) == typeof(long) ? ReduceKernels.ToLong(v) : 0; Index = index; Has = true; return; }
        if (typeof(T) == typeof(long))
        {
            long l = ReduceKernels.ToLong(v);
            if (TOrder.Beats(l, L)) { L = l; V = l; Index = index; }
            return;
        }
        if (double.IsNaN(V)) return;
        double d = TE.ToDouble(v);
        if (TOrder.Beats(d, V) || double.IsNaN(d)) { V = d; Index = index; }
    }

    public void Merge(in ExtremumAcc<TOrder> later)
    {
        if (!later.Has) return;
        if (!Has) { this = later; return; }
        if (double.IsNaN(V)) return;
        // Int64 values beyond 2^53 are compared exactly through L (0 for the other types); V is then their rounding.
        bool wins = double.IsNaN(later.V) || (V == later.V ? TOrder.Beats(later.L, L) : TOrder.Beats(later.V, V));
        if (wins) { V = later.V; L = later.L; Index = later.Index; }
    }
}

/// <summary>The extremum of |x| (NaN propagates), for the ±∞ norms.</summary>
unsafe struct AbsExtremumAcc<TOrder> : IAccumulator<AbsExtremumAcc<TOrder>> where TOrder : struct, IOrder
{
    public double V;
    public bool Has;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (n <= 0) return;
        int i = 0;
        if (!Has) { V = Math.Abs(TE.ToDouble(p[0])); Has = true; i = 1; }
        double b = V;
        if (!double.IsNaN(b))
            for (; i < n; i++)
            {
                double v = Math.Abs(TE.ToDouble(p[i * stride]));
                if (TOrder.Beats(v, b)) b = v;
                else if (double.IsNaN(v)) { b = v; break; }
            }
        V = b;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        double d = Math.Abs(TE.ToDouble(v));
        if (!Has) { V = d; Has = true; }
        else if (!double.IsNaN(V) && (TOrder.Beats(d, V) || double.IsNaN(d))) V = d;
    }

    public void Merge(in AbsExtremumAcc<TOrder> later)
    {
        if (!later.Has) return;
        if (!Has || double.IsNaN(later.V) || !double.IsNaN(V) && TOrder.Beats(later.V, V)) { V = later.V; Has = true; }
    }
}

/// <summary>Σd² and Σd for d = x − mean (the second pass of the variance).</summary>
unsafe struct SquaredDeviationAcc : IAccumulator<SquaredDeviationAcc>
{
    public double Mean, S, C;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (stride == 1 && (typeof(T) == typeof(float) || typeof(T) == typeof(double)))
        {
            var (ds, dc) = typeof(T) == typeof(float) ? ReduceKernels.SquaredDeviationsF32((float*)p, n, Mean) : ReduceKernels.SquaredDeviationsF64((double*)p, n, Mean);
            S += ds; C += dc;
            return;
        }
        double m = Mean, s = S, c = C;
        for (int i = 0; i < n; i++)
        {
            double d = TE.ToDouble(p[i * stride]) - m;
            s += d * d; c += d;
        }
        S = s; C = c;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        double d = TE.ToDouble(v) - Mean;
        S += d * d; C += d;
    }

    public void Merge(in SquaredDeviationAcc later) { S += later.S; C += later.C; }
}

/// <summary>Σ e^(x − M) for a fixed M (the second pass of log-sum-exp).</summary>
unsafe struct ExpSumAcc : IAccumulator<ExpSumAcc>
{
    public double M, S;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        if (stride == 1 && typeof(T) == typeof(float)) { S += ReduceKernels.ExpSumF32((float*)p, n, M); return; }
        if (stride == 1 && typeof(T) == typeof(double)) { S += ReduceKernels.ExpSumF64((double*)p, n, M); return; }
        double m = M, s = S;
        for (int i = 0; i < n; i++) s += Math.Exp(TE.ToDouble(p[i * stride]) - m);
        S = s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T> => S += Math.Exp(TE.ToDouble(v) - M);

    public void Merge(in ExpSumAcc later) => S += later.S;
}

/// <summary>Σ|x|ᵖ (p = 0 counts non-zeros).</summary>
unsafe struct PowerSumAcc : IAccumulator<PowerSumAcc>
{
    public double P, S;

    public void Add<T, TE>(T* p, long stride, int n, long first) where T : unmanaged where TE : struct, IElement<T>
    {
        double s = S;
        if (P == 2)
        {
            if (typeof(T) == typeof(float) && stride == 1) s += ReduceKernels.SumSquaresF32((float*)p, n);
            else for (int i = 0; i < n; i++) { double v = TE.ToDouble(p[i * stride]); s += v * v; }
        }
        else if (P == 1) for (int i = 0; i < n; i++) s += Math.Abs(TE.ToDouble(p[i * stride]));
        else if (P == 0) for (int i = 0; i < n; i++) s += TE.ToDouble(p[i * stride]) != 0 ? 1 : 0;
        else for (int i = 0; i < n; i++) s += Math.Pow(Math.Abs(TE.ToDouble(p[i * stride])), P);
        S = s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push<T, TE>(T v, long index) where T : unmanaged where TE : struct, IElement<T>
    {
        double a = Math.Abs(TE.ToDouble(v));
        S += P switch { 2 => a * a, 1 => a, 0 => a != 0 ? 1 : 0, _ => Math.Pow(a, P) };
    }

    public void Merge(in PowerSumAcc later) => S += later.S;
}

// ---- sinks ----

unsafe struct SumSink<T, TE> : IReduceSink<SumAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public bool Mean;
    public long N;

    public readonly SumAcc Seed(long o) => default;

    // An empty mean is 0/0 = NaN, as PyTorch's.
    public readonly void Store(long o, in SumAcc acc) => Y[o] = TE.FromDouble(Mean ? acc.S / N : acc.S);
}

unsafe struct IntSumSink<T, TE> : IReduceSink<IntSumAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public bool Mean;
    public long N;

    public readonly IntSumAcc Seed(long o) => default;

    public readonly void Store(long o, in IntSumAcc acc) =>
        Y[o] = Mean ? TE.FromDouble((double)acc.I / N) : ReduceKernels.FromLong<T>(acc.I);
}

struct StatSink<T> : IReduceSink<SumAcc> where T : unmanaged
{
    public double[] Stats;
    public long Divisor;
    public readonly SumAcc Seed(long o) => default;
    public readonly void Store(long o, in SumAcc acc) => Stats[o] = acc.S / Divisor;
}

struct MaxStatSink : IReduceSink<ExtremumAcc<Greater>>
{
    public double[] Stats;
    public readonly ExtremumAcc<Greater> Seed(long o) => default;
    public readonly void Store(long o, in ExtremumAcc<Greater> acc) => Stats[o] = acc.Has ? acc.V : double.NegativeInfinity;
}

unsafe struct ExtremumSink<T, TE, TOrder> : IReduceSink<ExtremumAcc<TOrder>>
    where T : unmanaged where TE : struct, IElement<T> where TOrder : struct, IOrder
{
    public T* Y;
    public long* Indices;

    public readonly ExtremumAcc<TOrder> Seed(long o) => default;

    public readonly void Store(long o, in ExtremumAcc<TOrder> acc)
    {
        Y[o] = typeof(T) == typeof(long) ? ReduceKernels.FromLong<T>(acc.L) : TE.FromDouble(acc.V);
        if (Indices != null) Indices[o] = acc.Index;
    }
}

unsafe struct AbsExtremumSink<T, TE, TOrder> : IReduceSink<AbsExtremumAcc<TOrder>>
    where T : unmanaged where TE : struct, IElement<T> where TOrder : struct, IOrder
{
    public T* Y;
    public readonly AbsExtremumAcc<TOrder> Seed(long o) => default;
    public readonly void Store(long o, in AbsExtremumAcc<TOrder> acc) => Y[o] = TE.FromDouble(acc.V);
}

unsafe struct VarSink<T, TE> : IReduceSink<SquaredDeviationAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public double[] Means;
    public long N;
    public double Correction;

    public readonly SquaredDeviationAcc Seed(long o) => new() { Mean = Means[o] };

    // Σd² − (Σd)²/n removes the error of the rounded mean; the divisor is max(0, n − correction) as PyTorch's, so
    // too few elements give NaN (0/0) or ∞.
    public readonly void Store(long o, in SquaredDeviationAcc acc) =>
        Y[o] = TE.FromDouble(Math.Max(0, acc.S - acc.C * acc.C / N) / Math.Max(0, N - Correction));
}

unsafe struct LogSumExpSink<T, TE> : IReduceSink<ExpSumAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public double[] Max;

    // An infinite maximum is replaced by 0 (as PyTorch does): all −∞ give log 0 = −∞, a +∞ gives +∞.
    public readonly ExpSumAcc Seed(long o) => new() { M = double.IsInfinity(Max[o]) ? 0 : Max[o] };

    public readonly void Store(long o, in ExpSumAcc acc) => Y[o] = TE.FromDouble(Math.Log(acc.S) + acc.M);
}

unsafe struct NormSink<T, TE> : IReduceSink<PowerSumAcc> where T : unmanaged where TE : struct, IElement<T>
{
    public T* Y;
    public double P;

    public readonly PowerSumAcc Seed(long o) => new() { P = P };

    public readonly void Store(long o, in PowerSumAcc acc) =>
        Y[o] = TE.FromDouble(P switch { 0 or 1 => acc.S, 2 => Math.Sqrt(acc.S), _ => Math.Pow(acc.S, 1 / P) });
}

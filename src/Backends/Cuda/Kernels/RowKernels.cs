using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>The scalars of one row-kernel launch.</summary>
public struct RowArgs
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int Rows, Cols, Type, Flags;
    public double Eps;
    public long Ignore;
#pragma warning restore CS1591
    /// <summary>
    /// LayerNorm's residual dtype and its output's (y, and dy in the backward): Type, or float16/bfloat16 with a
    /// float32 Type (a float32 residual stream under autocast), converted on load and rounded once on store.
    /// </summary>
    public int ResidualType, OutputType;
}

/// <summary>The scalars of the column-sum kernels (LayerNorm's dWeight and dBias).</summary>
public struct ColumnArgs
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int Rows, Cols, Type, Flags, Blocks, PerBlock;
    public FastDivisor ByCols;
#pragma warning restore CS1591
    /// <summary>dy's dtype: Type, or float16/bfloat16 with a float32 Type (see RowArgs.OutputType).</summary>
    public int OutputType;
}

/// <summary>
/// The row kernels on the device. Each group owns a row at a time; threads stride over its columns. Float32 and the
/// half types compute in float32 (row sums too), rounding once on store, in the <see cref="Narrow"/> instantiation;
/// Float64 computes in float64 in the <see cref="Wide"/> one. Group
/// reductions (<see cref="Reduce{T, TR}"/>) combine within warps by shuffles, then the warps' results in warp order,
/// so a row's result depends only on the group size, which depends only on the row length. The CPU references are in
/// src/Backends/Cpu/Kernels/RowKernels.cs; both follow the same formulas step by step.
/// </summary>
static class RowKernels
{
    public const int Log = 1, Rms = 2, HasWeight = 4, HasBias = 8, WideLoss = 16, HasResidual = 32, HasDxAdd = 64;
    public const int ErrorSlots = 5;
    public const long ErrorCrossEntropy = 1, ErrorCrossEntropyBackward = 2;

    // Partial column sums for dWeight/dBias: about 16 rows per block, at most 256 blocks and 4M partials (so
    // 8192 rows of 768 give 256 × 768 threads of 32 rows each).
    public static int ColumnBlocks(int rows, int cols) =>
        (int)Math.Clamp(Math.Min((rows + 15L) / 16, (1L << 22) / Math.Max(cols, 1)), 1, 256);

    /// <summary>Records the first error since the last host check; later ones are dropped (the CAS picks one).</summary>
    public static void Report(ArrayView<long> errors, long code, long position, long value, long bound, long extra)
    {
        if (Atomic.CompareExchange(ref errors[0], 0, code) != 0) return;
        errors[1] = position; errors[2] = value; errors[3] = bound; errors[4] = extra;
    }

    // ---- group reductions ----

    public interface IReduce<T> where T : unmanaged
    {
        T Apply(T a, T b);
    }

    public readonly struct SumF : IReduce<float> { public float Apply(float a, float b) => a + b; }

    public readonly struct SumD : IReduce<double> { public double Apply(double a, double b) => a + b; }

    // NaN-propagating max, as the CPU's TensorPrimitives.Max (PTX's max.f32 would drop NaN).
    public readonly struct MaxF : IReduce<float> { public float Apply(float a, float b) => a > b || float.IsNaN(a) ? a : b; }

    public readonly struct MaxD : IReduce<double> { public double Apply(double a, double b) => a > b || double.IsNaN(a) ? a : b; }

    /// <summary>
    /// The group-wide reduction of one value per thread, returned to every thread: a shuffle tree within each warp,
    /// then thread 0 combines the warps' results in order. <paramref name="shared"/> holds 33 elements; two barriers
    /// make back-to-back calls safe (the next call writes slots 0..31 only after every read of this one).
    /// </summary>
    public static T Reduce<T, TR>(T v, ArrayView<T> shared) where T : unmanaged where TR : struct, IReduce<T>
    {
        TR op = default;
        for (int d = Warp.WarpSize / 2; d > 0; d >>= 1) v = op.Apply(v, Warp.ShuffleDown(v, d));
        if (Warp.IsFirstLane) shared[Warp.WarpIdx] = v;
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            int warps = Group.DimX / Warp.WarpSize;
            T r = shared[0];
            for (int w = 1; w < warps; w++) r = op.Apply(r, shared[w]);
            shared[32] = r;
        }
        Group.Barrier();
        return shared[32];
    }

    // ---- softmax ----

    // Stable: exp(x − max) ≤ 1; log-softmax is (x − max) − log Σ. Three passes over the row (max, Σ, store), the
    // later ones mostly from cache.
    public static void Softmax<TW>(ArrayView<byte> x, ArrayView<byte> y, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        bool log = (a.Flags & Log) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long o = (long)r * cols;
            if (TW.Wide)
            {
                double m = double.NegativeInfinity;
                for (int c = tid; c < cols; c += step) m = new MaxD().Apply(m, LoadDouble(x, t, o + c));
                m = Reduce<double, MaxD>(m, sd);
                double s = 0;
                for (int c = tid; c < cols; c += step) s += Math.Exp(LoadDouble(x, t, o + c) - m);
                s = Reduce<double, SumD>(s, sd);
                double ls = Math.Log(s), inv = 1 / s;
                for (int c = tid; c < cols; c += step)
                {
                    double d = LoadDouble(x, t, o + c) - m;
                    StoreDouble(y, t, o + c, log ? d - ls : Math.Exp(d) * inv);
                }
            }
            else
            {
                float m = float.NegativeInfinity;
                for (int c = tid; c < cols; c += step) m = new MaxF().Apply(m, LoadFloat(x, t, o + c));
                m = Reduce<float, MaxF>(m, sf);
                float s = 0;
                for (int c = tid; c < cols; c += step) s += MathF.Exp(LoadFloat(x, t, o + c) - m);
                s = Reduce<float, SumF>(s, sf);
                float ls = MathF.Log(s), inv = 1 / s;
                for (int c = tid; c < cols; c += step)
                {
                    float d = LoadFloat(x, t, o + c) - m;
                    StoreFloat(y, t, o + c, log ? d - ls : MathF.Exp(d) * inv);
                }
            }
        }
    }

    // softmax: dx = y·(dy − Σ dy·y); log-softmax: dx = dy − eʸ·Σ dy.
    public static void SoftmaxBackward<TW>(ArrayView<byte> y, ArrayView<byte> dy, ArrayView<byte> dx, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        bool log = (a.Flags & Log) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long o = (long)r * cols;
            if (TW.Wide)
            {
                double s = 0;
                for (int c = tid; c < cols; c += step) s += log ? LoadDouble(dy, t, o + c) : LoadDouble(dy, t, o + c) * LoadDouble(y, t, o + c);
                s = Reduce<double, SumD>(s, sd);
                for (int c = tid; c < cols; c += step)
                {
                    double yi = LoadDouble(y, t, o + c), gi = LoadDouble(dy, t, o + c);
                    StoreDouble(dx, t, o + c, log ? gi - Math.Exp(yi) * s : yi * (gi - s));
                }
            }
            else
            {
                float s = 0;
                for (int c = tid; c < cols; c += step) s += log ? LoadFloat(dy, t, o + c) : LoadFloat(dy, t, o + c) * LoadFloat(y, t, o + c);
                s = Reduce<float, SumF>(s, sf);
                for (int c = tid; c < cols; c += step)
                {
                    float yi = LoadFloat(y, t, o + c), gi = LoadFloat(dy, t, o + c);
                    StoreFloat(dx, t, o + c, log ? gi - MathF.Exp(yi) * s : yi * (gi - s));
                }
            }
        }
    }

    // ---- layer norm / RMS norm ----

    // Two passes for the statistics (mean, then Σ (x − mean)², so no cancellation); the normalization uses the stored
    // (rounded) mean and rstd, exactly as the backward will. rstd = 1/√(var + eps) is formed in float64 once per row.
    // With a residual, a first pass writes sum = x + residual (rounded as the elementwise Add) and the passes after it
    // read the sum back: each thread reads only the elements it wrote, so no barrier is needed.
    public static void LayerNorm<TW>(ArrayView<byte> x, ArrayView<byte> res, ArrayView<byte> sum, ArrayView<byte> w, ArrayView<byte> b, ArrayView<byte> y,
        ArrayView<byte> mean, ArrayView<byte> rstd, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, tr = a.ResidualType, ty = a.OutputType, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        bool rms = (a.Flags & Rms) != 0, hasW = (a.Flags & HasWeight) != 0, hasB = (a.Flags & HasBias) != 0, hasR = (a.Flags & HasResidual) != 0;
        var src = hasR ? sum : x;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long o = (long)r * cols;
            if (TW.Wide)
            {
                if (hasR)
                    for (int c = tid; c < cols; c += step) StoreDouble(sum, t, o + c, LoadDouble(x, t, o + c) + LoadDouble(res, tr, o + c));
                double mu = 0;
                if (!rms)
                {
                    double s = 0;
                    for (int c = tid; c < cols; c += step) s += LoadDouble(src, t, o + c);
                    mu = Reduce<double, SumD>(s, sd) / cols;
                }
                double v = 0;
                for (int c = tid; c < cols; c += step) { double d = LoadDouble(src, t, o + c) - mu; v += d * d; }
                double rs = 1 / Math.Sqrt(Reduce<double, SumD>(v, sd) / cols + a.Eps);
                if (tid == 0) { mean.Cast<double>()[r] = mu; rstd.Cast<double>()[r] = rs; }
                for (int c = tid; c < cols; c += step)
                {
                    double h = (LoadDouble(src, t, o + c) - mu) * rs;
                    if (hasW) h *= LoadDouble(w, t, c);
                    if (hasB) h += LoadDouble(b, t, c);
                    StoreDouble(y, ty, o + c, h);
                }
            }
            else
            {
                if (hasR)
                    for (int c = tid; c < cols; c += step) StoreFloat(sum, t, o + c, LoadFloat(x, t, o + c) + LoadFloat(res, tr, o + c));
                float mu = 0;
                if (!rms)
                {
                    float s = 0;
                    for (int c = tid; c < cols; c += step) s += LoadFloat(src, t, o + c);
                    mu = Reduce<float, SumF>(s, sf) / cols;
                }
                float v = 0;
                for (int c = tid; c < cols; c += step) { float d = LoadFloat(src, t, o + c) - mu; v += d * d; }
                float rs = (float)(1 / Math.Sqrt((double)(Reduce<float, SumF>(v, sf) / cols) + a.Eps));
                if (tid == 0) { mean.Cast<float>()[r] = mu; rstd.Cast<float>()[r] = rs; }
                for (int c = tid; c < cols; c += step)
                {
                    float h = (LoadFloat(src, t, o + c) - mu) * rs;
                    if (hasW) h *= LoadFloat(w, t, c);
                    if (hasB) h += LoadFloat(b, t, c);
                    StoreFloat(y, ty, o + c, h);
                }
            }
        }
    }

    // With x̂ = (x − mean)·rstd and g = dy·w: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (RMSNorm drops mean(g)). A dxAdd is
    // added after dx is rounded to the dtype (stored, read back, summed, stored), the bits of an Add after this kernel.
    public static void LayerNormBackward<TW>(ArrayView<byte> x, ArrayView<byte> w, ArrayView<byte> mean, ArrayView<byte> rstd, ArrayView<byte> dy,
        ArrayView<byte> add, ArrayView<byte> dx, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, tg = a.OutputType, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        bool rms = (a.Flags & Rms) != 0, hasW = (a.Flags & HasWeight) != 0, hasAdd = (a.Flags & HasDxAdd) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long o = (long)r * cols;
            if (TW.Wide)
            {
                double mu = mean.Cast<double>()[r], rs = rstd.Cast<double>()[r];
                double s1 = 0, s2 = 0;
                for (int c = tid; c < cols; c += step)
                {
                    double h = (LoadDouble(x, t, o + c) - mu) * rs, g = LoadDouble(dy, tg, o + c);
                    if (hasW) g *= LoadDouble(w, t, c);
                    s1 += g; s2 += g * h;
                }
                double ma = rms ? 0 : Reduce<double, SumD>(s1, sd) / cols;
                double mc = Reduce<double, SumD>(s2, sd) / cols;
                for (int c = tid; c < cols; c += step)
                {
                    double h = (LoadDouble(x, t, o + c) - mu) * rs, g = LoadDouble(dy, tg, o + c);
                    if (hasW) g *= LoadDouble(w, t, c);
                    StoreDouble(dx, t, o + c, rs * (g - ma - h * mc));
                    if (hasAdd) StoreDouble(dx, t, o + c, LoadDouble(add, t, o + c) + LoadDouble(dx, t, o + c));
                }
            }
            else
            {
                float mu = mean.Cast<float>()[r], rs = rstd.Cast<float>()[r];
                float s1 = 0, s2 = 0;
                for (int c = tid; c < cols; c += step)
                {
                    float h = (LoadFloat(x, t, o + c) - mu) * rs, g = LoadFloat(dy, tg, o + c);
                    if (hasW) g *= LoadFloat(w, t, c);
                    s1 += g; s2 += g * h;
                }
                float ma = rms ? 0 : Reduce<float, SumF>(s1, sf) / cols;
                float mc = Reduce<float, SumF>(s2, sf) / cols;
                for (int c = tid; c < cols; c += step)
                {
                    float h = (LoadFloat(x, t, o + c) - mu) * rs, g = LoadFloat(dy, tg, o + c);
                    if (hasW) g *= LoadFloat(w, t, c);
                    StoreFloat(dx, t, o + c, rs * (g - ma - h * mc));
                    if (hasAdd) StoreFloat(dx, t, o + c, LoadFloat(add, t, o + c) + LoadFloat(dx, t, o + c));
                }
            }
        }
    }

    // One thread per (block of rows, column): Σ dy·x̂ and Σ dy over the block's rows in order. With one block the sums
    // are the results (rounded once); otherwise they go to partials [2, blocks, cols] for ColumnFinish. Adjacent
    // threads read adjacent columns, so the loads coalesce.
    public static void LayerNormColumns<TW>(ArrayView<byte> x, ArrayView<byte> mean, ArrayView<byte> rstd, ArrayView<byte> dy,
        ArrayView<byte> partials, ArrayView<byte> dw, ArrayView<byte> db, ColumnArgs a) where TW : struct, IComputeWidth
    {
        int t = a.Type, tg = a.OutputType, cols = a.Cols;
        bool wantW = (a.Flags & HasWeight) != 0, wantB = (a.Flags & HasBias) != 0, final = a.Blocks == 1;
        long n = (long)a.Blocks * cols, stride = (long)Grid.DimX * Group.DimX;
        for (long q = Grid.GlobalIndex.X; q < n; q += stride)
        {
            int blk = (int)a.ByCols.Divide(q), c = (int)(q - (long)blk * cols);
            int r0 = blk * a.PerBlock, r1 = Math.Min(a.Rows, r0 + a.PerBlock);
            if (TW.Wide)
            {
                double sw = 0, sb = 0;
                for (int r = r0; r < r1; r++)
                {
                    long i = (long)r * cols + c;
                    double g = LoadDouble(dy, tg, i);
                    if (wantW) sw += g * ((LoadDouble(x, t, i) - mean.Cast<double>()[r]) * rstd.Cast<double>()[r]);
                    sb += g;
                }
                if (final)
                {
                    if (wantW) StoreDouble(dw, t, c, sw);
                    if (wantB) StoreDouble(db, t, c, sb);
                }
                else
                {
                    var p = partials.Cast<double>();
                    p[q] = sw; p[n + q] = sb;
                }
            }
            else
            {
                float sw = 0, sb = 0;
                for (int r = r0; r < r1; r++)
                {
                    long i = (long)r * cols + c;
                    float g = LoadFloat(dy, tg, i);
                    if (wantW) sw += g * ((LoadFloat(x, t, i) - mean.Cast<float>()[r]) * rstd.Cast<float>()[r]);
                    sb += g;
                }
                if (final)
                {
                    if (wantW) StoreFloat(dw, t, c, sw);
                    if (wantB) StoreFloat(db, t, c, sb);
                }
                else
                {
                    var p = partials.Cast<float>();
                    p[q] = sw; p[n + q] = sb;
                }
            }
        }
    }

    // Adds the blocks' partial column sums in block order and rounds once.
    public static void ColumnFinish<TW>(ArrayView<byte> partials, ArrayView<byte> dw, ArrayView<byte> db, ColumnArgs a) where TW : struct, IComputeWidth
    {
        int t = a.Type, cols = a.Cols;
        bool wantW = (a.Flags & HasWeight) != 0, wantB = (a.Flags & HasBias) != 0;
        long n = (long)a.Blocks * cols, stride = (long)Grid.DimX * Group.DimX;
        for (long c = Grid.GlobalIndex.X; c < cols; c += stride)
        {
            if (TW.Wide)
            {
                var p = partials.Cast<double>();
                double sw = 0, sb = 0;
                for (int blk = 0; blk < a.Blocks; blk++) { long q = (long)blk * cols + c; sw += p[q]; sb += p[n + q]; }
                if (wantW) StoreDouble(dw, t, c, sw);
                if (wantB) StoreDouble(db, t, c, sb);
            }
            else
            {
                var p = partials.Cast<float>();
                float sw = 0, sb = 0;
                for (int blk = 0; blk < a.Blocks; blk++) { long q = (long)blk * cols + c; sw += p[q]; sb += p[n + q]; }
                if (wantW) StoreFloat(dw, t, c, sw);
                if (wantB) StoreFloat(db, t, c, sb);
            }
        }
    }

    // ---- cross entropy ----

    // With lse = max + log Σ e^(x−max) and q = (1−ε)·onehot(t) + ε/C: loss = (1−ε)(lse − x_t) + ε(lse − mean(x)),
    // the per-row scalars in float64. A target that is neither ignored nor in range gives NaN and a device report.
    public static void CrossEntropy<TW>(ArrayView<byte> x, ArrayView<byte> targets, ArrayView<byte> loss, ArrayView<long> errors, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        double eps = a.Eps;
        bool wideLoss = (a.Flags & WideLoss) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long target = targets.Cast<long>()[r];
            double result = 0;
            if (target != a.Ignore)
            {
                if (target < 0 || target >= cols)
                {
                    result = double.NaN;
                    if (tid == 0) Report(errors, ErrorCrossEntropy, r, target, cols, a.Ignore);
                }
                else
                {
                    long o = (long)r * cols;
                    double lse, xt, mu = 0;
                    if (TW.Wide)
                    {
                        double m = double.NegativeInfinity, sx = 0;
                        for (int c = tid; c < cols; c += step) { double v = LoadDouble(x, t, o + c); m = new MaxD().Apply(m, v); sx += v; }
                        m = Reduce<double, MaxD>(m, sd);
                        if (eps != 0) mu = Reduce<double, SumD>(sx, sd) / cols;
                        double s = 0;
                        for (int c = tid; c < cols; c += step) s += Math.Exp(LoadDouble(x, t, o + c) - m);
                        lse = m + Math.Log(Reduce<double, SumD>(s, sd));
                        xt = LoadDouble(x, t, o + target);
                    }
                    else
                    {
                        float m = float.NegativeInfinity, sx = 0;
                        for (int c = tid; c < cols; c += step) { float v = LoadFloat(x, t, o + c); m = new MaxF().Apply(m, v); sx += v; }
                        m = Reduce<float, MaxF>(m, sf);
                        if (eps != 0) mu = (double)Reduce<float, SumF>(sx, sf) / cols;
                        float s = 0;
                        for (int c = tid; c < cols; c += step) s += MathF.Exp(LoadFloat(x, t, o + c) - m);
                        // The log in float32 (the CPU's is float64): Math.Log would put float64 software math, its
                        // calls and a stack frame into this float32 kernel; the two differ within float32 rounding.
                        lse = m + (double)MathF.Log(Reduce<float, SumF>(s, sf));
                        xt = LoadFloat(x, t, o + target);
                    }
                    result = (1 - eps) * (lse - xt);
                    if (eps != 0) result += eps * (lse - mu);
                }
            }
            if (tid == 0)
            {
                if (wideLoss) loss.Cast<double>()[r] = result;
                else loss.Cast<float>()[r] = (float)result;
            }
        }
    }

    // dx = (softmax(x) − q)·dloss[r]; 0 for ignored rows, NaN (and a device report) for a target out of range.
    public static void CrossEntropyBackward<TW>(ArrayView<byte> x, ArrayView<byte> targets, ArrayView<byte> dloss, ArrayView<byte> dx, ArrayView<long> errors, RowArgs a) where TW : struct, IComputeWidth
    {
        var sf = SharedMemory.Allocate<float>(33);
        var sd = SharedMemory.Allocate<double>(33);
        int t = a.Type, cols = a.Cols, tid = Group.IdxX, step = Group.DimX;
        double eps = a.Eps;
        bool wideLoss = (a.Flags & WideLoss) != 0;
        for (int r = Grid.IdxX; r < a.Rows; r += Grid.DimX)
        {
            long target = targets.Cast<long>()[r];
            long o = (long)r * cols;
            if (target == a.Ignore || target < 0 || target >= cols)
            {
                bool bad = target != a.Ignore;
                if (bad && tid == 0) Report(errors, ErrorCrossEntropyBackward, r, target, cols, a.Ignore);
                for (int c = tid; c < cols; c += step)
                {
                    if (TW.Wide) StoreDouble(dx, t, o + c, bad ? double.NaN : 0);
                    else StoreFloat(dx, t, o + c, bad ? float.NaN : 0);
                }
                continue;
            }
            double g = wideLoss ? dloss.Cast<double>()[r] : dloss.Cast<float>()[r];
            if (TW.Wide)
            {
                double m = double.NegativeInfinity;
                for (int c = tid; c < cols; c += step) m = new MaxD().Apply(m, LoadDouble(x, t, o + c));
                m = Reduce<double, MaxD>(m, sd);
                double s = 0;
                for (int c = tid; c < cols; c += step) s += Math.Exp(LoadDouble(x, t, o + c) - m);
                double inv = 1 / Reduce<double, SumD>(s, sd), off = eps / cols;
                for (int c = tid; c < cols; c += step)
                    StoreDouble(dx, t, o + c, (Math.Exp(LoadDouble(x, t, o + c) - m) * inv - off - (c == target ? 1 - eps : 0)) * g);
            }
            else
            {
                float m = float.NegativeInfinity;
                for (int c = tid; c < cols; c += step) m = new MaxF().Apply(m, LoadFloat(x, t, o + c));
                m = Reduce<float, MaxF>(m, sf);
                float s = 0;
                for (int c = tid; c < cols; c += step) s += MathF.Exp(LoadFloat(x, t, o + c) - m);
                float inv = 1 / Reduce<float, SumF>(s, sf), off = (float)(eps / cols), hit = (float)(1 - eps), gf = (float)g;
                for (int c = tid; c < cols; c += step)
                    StoreFloat(dx, t, o + c, (MathF.Exp(LoadFloat(x, t, o + c) - m) * inv - off - (c == target ? hit : 0)) * gf);
            }
        }
    }
}

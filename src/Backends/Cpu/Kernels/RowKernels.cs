using System.Numerics.Tensors;
using Engine.Ops;

// The exponentials of softmax, log-softmax and cross entropy are VectorMath's, whose bits depend on neither the JIT tier
// nor the vector width, so a forward pass is bit-reproducible; TensorPrimitives remains for Max, Subtract and Multiply,
// which are exact per element (Max is order-independent, NaN included).

namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// The fused row kernels: softmax, layer/RMS norm and cross entropy over contiguous [rows, cols] operands, forward and
/// backward. Parallel over rows; within a row the order is fixed, and column sums over rows (dWeight, dBias) go
/// through partial sums over a row partition that depends only on the shape, so no result depends on the thread
/// count. Float32 and the half types compute elementwise in float32 (rounding once on store) and accumulate row sums
/// in float64; Float64 computes in float64. The plain float64 references these must match are in
/// tests/Engine.Tests/RowOpsTests.cs.
/// </summary>
static unsafe class RowKernels
{
    // Rows per parallel chunk: about 16K elements, so a chunk amortizes its task.
    static long Grain(int cols) => Math.Max(1, 16384 / Math.Max(cols, 1));

    public static void CheckFloat(string op, DType dtype)
    {
        ContractChecks.Floating(op, dtype);
    }

    // Every target is checked before anything is written, so a failed call leaves its outputs untouched.
    public static void CheckTargets(string op, Storage targets, int rows, int cols, long ignoreIndex)
    {
        ContractChecks.Int64(op, "targets", targets);
        long* t = (long*)CpuBackend.P(targets);
        for (long r = 0; r < rows; r++)
        {
            long v = t[r];
            if (v != ignoreIndex && (v < 0 || v >= cols))
                throw new ShapeException(op, $"target {v} (row {r}) is out of bounds for {cols} classes (expected in [0, {cols}) or the ignore index {ignoreIndex})");
        }
    }

    // A row widened to float32; float32 rows are used in place.
    static ReadOnlySpan<float> LoadF<T, TE>(T* p, float[] buffer, int n) where T : unmanaged where TE : struct, IElement<T>
    {
        if (typeof(T) == typeof(float)) return new ReadOnlySpan<float>(p, n);
        for (int i = 0; i < n; i++) buffer[i] = TE.ToFloat(p[i]);
        return buffer.AsSpan(0, n);
    }

    static void StoreF<T, TE>(ReadOnlySpan<float> v, T* p) where T : unmanaged where TE : struct, IElement<T>
    {
        for (int i = 0; i < v.Length; i++) p[i] = TE.FromFloat(v[i]);
    }

    static double SumD(ReadOnlySpan<float> v)
    {
        double s = 0;
        foreach (var f in v) s += f;
        return s;
    }

    static double SumD(ReadOnlySpan<double> v)
    {
        double s = 0;
        foreach (var f in v) s += f;
        return s;
    }

    // ---- softmax ----

    // Stable: exp(x − max) ≤ 1 and the max term contributes exactly 1, so Σ ∈ [1, cols] never overflows;
    // log-softmax is (x − max) − log Σ, which keeps full precision for large |x|.
    public static void Softmax<T, TE>(nint xp, nint yp, int rows, int cols, bool log) where T : unmanaged where TE : struct, IElement<T>
    {
        if (rows <= 0 || cols <= 0) return;
        T* x = (T*)xp, y = (T*)yp;
        CpuParallel.For(rows, Grain(cols), (r0, r1) =>
        {
            if (typeof(T) == typeof(double))
            {
                var e = new double[cols];
                for (long r = r0; r < r1; r++)
                {
                    var xs = new ReadOnlySpan<double>((double*)x + r * cols, cols);
                    var ys = new Span<double>((double*)y + r * cols, cols);
                    double max = TensorPrimitives.Max(xs);
                    TensorPrimitives.Subtract(xs, max, e);
                    VectorMath.Exp(e, e);
                    double sum = SumD(e);
                    if (log)
                    {
                        TensorPrimitives.Subtract(xs, max, ys);
                        TensorPrimitives.Subtract(ys, Math.Log(sum), ys);
                    }
                    else TensorPrimitives.Multiply(e, 1 / sum, ys);
                }
                return;
            }
            var xf = new float[cols];
            var ef = new float[cols];
            for (long r = r0; r < r1; r++)
            {
                var xs = LoadF<T, TE>(x + r * cols, xf, cols);
                // Float32 writes straight into y; half types compute into xf (no longer needed) and round on store.
                var ys = typeof(T) == typeof(float) ? new Span<float>((float*)y + r * cols, cols) : xf.AsSpan();
                float max = TensorPrimitives.Max(xs);
                TensorPrimitives.Subtract(xs, max, ef);
                VectorMath.Exp(ef, ef);
                double sum = SumD(ef);
                if (log)
                {
                    TensorPrimitives.Subtract(xs, max, ys);
                    TensorPrimitives.Subtract(ys, (float)Math.Log(sum), ys);
                }
                else TensorPrimitives.Multiply(ef, (float)(1 / sum), ys);
                if (typeof(T) != typeof(float)) StoreF<T, TE>(ys, y + r * cols);
            }
        });
    }

    // softmax: dx = y·(dy − Σ dy·y); log-softmax: dx = dy − eʸ·Σ dy.
    public static void SoftmaxBackward<T, TE>(nint yp, nint dyp, nint dxp, int rows, int cols, bool log) where T : unmanaged where TE : struct, IElement<T>
    {
        if (rows <= 0 || cols <= 0) return;
        T* y = (T*)yp, dy = (T*)dyp, dx = (T*)dxp;
        CpuParallel.For(rows, Grain(cols), (r0, r1) =>
        {
            for (long r = r0; r < r1; r++)
            {
                T* yr = y + r * cols, gr = dy + r * cols, dr = dx + r * cols;
                double s = 0;
                if (TE.Wide)
                {
                    if (log) for (int i = 0; i < cols; i++) s += TE.ToDouble(gr[i]);
                    else for (int i = 0; i < cols; i++) s += TE.ToDouble(gr[i]) * TE.ToDouble(yr[i]);
                    if (log) for (int i = 0; i < cols; i++) dr[i] = TE.FromDouble(TE.ToDouble(gr[i]) - Math.Exp(TE.ToDouble(yr[i])) * s);
                    else for (int i = 0; i < cols; i++) dr[i] = TE.FromDouble(TE.ToDouble(yr[i]) * (TE.ToDouble(gr[i]) - s));
                }
                else
                {
                    if (log) for (int i = 0; i < cols; i++) s += TE.ToFloat(gr[i]);
                    else for (int i = 0; i < cols; i++) s += (double)TE.ToFloat(gr[i]) * TE.ToFloat(yr[i]);
                    float sf = (float)s;
                    if (log) for (int i = 0; i < cols; i++) dr[i] = TE.FromFloat(TE.ToFloat(gr[i]) - MathF.Exp(TE.ToFloat(yr[i])) * sf);
                    else for (int i = 0; i < cols; i++) dr[i] = TE.FromFloat(TE.ToFloat(yr[i]) * (TE.ToFloat(gr[i]) - sf));
                }
            }
        });
    }

    // ---- layer norm / RMS norm ----

    // Mean and variance in float64 with two passes (no cancellation); the normalization itself uses the stored
    // (rounded) mean and rstd, exactly as the backward will. With a residual (rp, sp nonzero) the row is first
    // summed into sp, rounded as the elementwise Add rounds (float32 for the narrow types), and the sum is normalized.
    // A float16/bfloat16 residual or y with a float32 x (xType; the norms of a float32 residual stream under autocast)
    // goes through a float32 row buffer, widened exactly on load and rounded once on store: the bits of casting it
    // before (the residual) or after (y) the same-dtype kernel.
    public static void LayerNorm<T, TE>(nint xp, nint rp, nint sp, nint wp, nint bp, nint yp, nint meanp, nint rstdp, int rows, int cols, double eps, bool rms,
        DType xType, DType rType, DType yType)
        where T : unmanaged where TE : struct, IElement<T>
    {
        if (rows <= 0) return;
        bool rNarrow = rp != 0 && rType != xType, yNarrow = yType != xType;
        if ((rNarrow || yNarrow) && (xType != DType.Float32 || rNarrow && !rType.IsHalf() || yNarrow && !yType.IsHalf()))
            throw new DTypeException("LayerNorm", $"a residual or output of another dtype than the input must be 16-bit with a float32 input, got {xType.Name()}, {rType.Name()}, {yType.Name()}");
        T* x = (T*)xp, res = (T*)rp, sum = (T*)sp, w = (T*)wp, b = (T*)bp, y = (T*)yp;
        CpuParallel.For(rows, Grain(cols), (r0, r1) =>
        {
            var rowBuf = rNarrow || yNarrow ? new float[2 * (long)cols] : null;
            fixed (float* buf = rowBuf)
            for (long r = r0; r < r1; r++)
            {
                T* xr = x + r * cols, yr = yNarrow ? (T*)(buf + cols) : y + r * cols;
                if (res != null)
                {
                    T* rr = res + r * cols, sr = sum + r * cols;
                    if (rNarrow) { WidenRow(rType, (nint)(rp + r * cols * 2), buf, cols); rr = (T*)buf; }
                    if (TE.Wide)
                        for (int i = 0; i < cols; i++) sr[i] = TE.FromDouble(TE.ToDouble(xr[i]) + TE.ToDouble(rr[i]));
                    else
                        for (int i = 0; i < cols; i++) sr[i] = TE.FromFloat(TE.ToFloat(xr[i]) + TE.ToFloat(rr[i]));
                    xr = sr;
                }
                double mean = 0, variance = 0;
                if (!rms)
                {
                    for (int i = 0; i < cols; i++) mean += TE.ToDouble(xr[i]);
                    mean /= cols;
                }
                for (int i = 0; i < cols; i++) { double d = TE.ToDouble(xr[i]) - mean; variance += d * d; }
                variance /= cols;
                double rstd = 1 / Math.Sqrt(variance + eps);
                if (TE.Wide)
                {
                    ((double*)meanp)[r] = mean; ((double*)rstdp)[r] = rstd;
                    for (int i = 0; i < cols; i++)
                    {
                        double v = (TE.ToDouble(xr[i]) - mean) * rstd;
                        if (w != null) v *= TE.ToDouble(w[i]);
                        if (b != null) v += TE.ToDouble(b[i]);
                        yr[i] = TE.FromDouble(v);
                    }
                }
                else
                {
                    float mf = (float)mean, rf = (float)rstd;
                    ((float*)meanp)[r] = mf; ((float*)rstdp)[r] = rf;
                    for (int i = 0; i < cols; i++)
                    {
                        float v = (TE.ToFloat(xr[i]) - mf) * rf;
                        if (w != null) v *= TE.ToFloat(w[i]);
                        if (b != null) v += TE.ToFloat(b[i]);
                        yr[i] = TE.FromFloat(v);
                    }
                }
                if (yNarrow) NarrowRow(yType, buf + cols, (nint)(yp + r * cols * 2), cols);
            }
        });
    }

    static void WidenRow(DType t, nint src, float* dst, int n)
    {
        if (t == DType.BFloat16) ElementwiseKernels.Widen((BFloat16*)src, new Span<float>(dst, n));
        else ElementwiseKernels.Widen((Half*)src, new Span<float>(dst, n));
    }

    static void NarrowRow(DType t, float* src, nint dst, int n)
    {
        if (t == DType.BFloat16) ElementwiseKernels.Narrow(new ReadOnlySpan<float>(src, n), (BFloat16*)dst);
        else ElementwiseKernels.Narrow(new ReadOnlySpan<float>(src, n), (Half*)dst);
    }

    // The most partial column sums kept for dWeight/dBias; fewer when a row is long, to bound the scratch memory.
    const int MaxColumnBlocks = 32;

    static int ColumnBlocks(int rows, int cols) =>
        (int)Math.Clamp(Math.Min(Math.Min(MaxColumnBlocks, rows), (1L << 20) / Math.Max(cols, 1)), 1, MaxColumnBlocks);

    // With x̂ = (x − mean)·rstd and g = dy·w: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (RMSNorm drops mean(g));
    // dWeight = Σ_rows dy·x̂, dBias = Σ_rows dy. The column sums are taken per block of rows (the blocks depend only
    // on the shape) in float64 and the blocks are added in order, so the result is the same on any thread count.
    // A dxAdd (addp nonzero) is added to each dx element after it is rounded, as an Add after this kernel would.
    // A float16/bfloat16 dy with a float32 x (dyType names its dtype, else it is T's: the gradient of a 16-bit y) is
    // widened a row at a time into a float32 buffer, the bits of casting it first.
    public static void LayerNormBackward<T, TE>(nint xp, nint wp, nint meanp, nint rstdp, nint dyp, nint addp, nint dxp, nint dwp, nint dbp, int rows, int cols, bool rms,
        DType xType, DType dyType)
        where T : unmanaged where TE : struct, IElement<T>
    {
        if (rows <= 0) { ZeroColumns<T, TE>(dwp, dbp, cols); return; }
        bool dyNarrow = dyType != xType;
        if (dyNarrow && (xType != DType.Float32 || !dyType.IsHalf()))
            throw new DTypeException("LayerNormBackward", $"a dy of another dtype than the input must be 16-bit with a float32 input, got {xType.Name()} and {dyType.Name()}");
        T* x = (T*)xp, w = (T*)wp, dy = (T*)dyp, add = (T*)addp, dx = (T*)dxp;
        bool columns = dwp != 0 || dbp != 0;
        int blocks = columns ? ColumnBlocks(rows, cols) : 1;
        long perBlock = (rows + blocks - 1) / blocks;
        double[]? pw = dwp != 0 ? new double[(long)blocks * cols] : null;
        double[]? pb = dbp != 0 ? new double[(long)blocks * cols] : null;

        void Rows(long r0, long r1, double[]? accW, double[]? accB, long accAt)
        {
            var xh = new double[cols];
            var dyBuf = dyNarrow ? new float[cols] : null;
            fixed (float* buf = dyBuf)
            for (long r = r0; r < r1; r++)
            {
                T* xr = x + r * cols, gr = dy + r * cols, dr = dx + r * cols, ar = add == null ? null : add + r * cols;
                if (dyNarrow) { WidenRow(dyType, (nint)(dyp + r * cols * 2), buf, cols); gr = (T*)buf; }
                double mean = TE.Wide ? ((double*)meanp)[r] : ((float*)meanp)[r];
                double rstd = TE.Wide ? ((double*)rstdp)[r] : ((float*)rstdp)[r];
                double s1 = 0, s2 = 0;
                if (TE.Wide)
                {
                    for (int i = 0; i < cols; i++)
                    {
                        double h = (TE.ToDouble(xr[i]) - mean) * rstd, g = TE.ToDouble(gr[i]);
                        xh[i] = h;
                        if (accW != null) accW[accAt + i] += g * h;
                        if (accB != null) accB[accAt + i] += g;
                        if (w != null) g *= TE.ToDouble(w[i]);
                        s1 += g; s2 += g * h;
                    }
                    double a = rms ? 0 : s1 / cols, c = s2 / cols;
                    for (int i = 0; i < cols; i++)
                    {
                        double g = TE.ToDouble(gr[i]);
                        if (w != null) g *= TE.ToDouble(w[i]);
                        dr[i] = TE.FromDouble(rstd * (g - a - xh[i] * c));
                    }
                    if (ar != null)
                        for (int i = 0; i < cols; i++) dr[i] = TE.FromDouble(TE.ToDouble(ar[i]) + TE.ToDouble(dr[i]));
                }
                else
                {
                    float mf = (float)mean, rf = (float)rstd;
                    for (int i = 0; i < cols; i++)
                    {
                        float h = (TE.ToFloat(xr[i]) - mf) * rf, g = TE.ToFloat(gr[i]);
                        xh[i] = h;
                        if (accW != null) accW[accAt + i] += (double)g * h;
                        if (accB != null) accB[accAt + i] += g;
                        if (w != null) g *= TE.ToFloat(w[i]);
                        s1 += g; s2 += (double)g * h;
                    }
                    float a = rms ? 0 : (float)(s1 / cols), c = (float)(s2 / cols);
                    for (int i = 0; i < cols; i++)
                    {
                        float g = TE.ToFloat(gr[i]);
                        if (w != null) g *= TE.ToFloat(w[i]);
                        dr[i] = TE.FromFloat(rf * (g - a - (float)xh[i] * c));
                    }
                    if (ar != null)
                        for (int i = 0; i < cols; i++) dr[i] = TE.FromFloat(TE.ToFloat(ar[i]) + TE.ToFloat(dr[i]));
                }
            }
        }

        if (!columns)
        {
            CpuParallel.For(rows, Grain(cols), (r0, r1) => Rows(r0, r1, null, null, 0));
            return;
        }
        CpuParallel.For(blocks, 1, (b0, b1) =>
        {
            for (long b = b0; b < b1; b++)
                Rows(b * perBlock, Math.Min(rows, (b + 1) * perBlock), pw, pb, b * cols);
        });
        CpuParallel.For(cols, 4096, (c0, c1) =>
        {
            for (long c = c0; c < c1; c++)
            {
                if (pw != null)
                {
                    double s = 0;
                    for (int b = 0; b < blocks; b++) s += pw[b * cols + c];
                    ((T*)dwp)[c] = TE.FromDouble(s);
                }
                if (pb != null)
                {
                    double s = 0;
                    for (int b = 0; b < blocks; b++) s += pb[b * cols + c];
                    ((T*)dbp)[c] = TE.FromDouble(s);
                }
            }
        });
    }

    static void ZeroColumns<T, TE>(nint dwp, nint dbp, int cols) where T : unmanaged where TE : struct, IElement<T>
    {
        if (dwp != 0) new Span<T>((T*)dwp, cols).Fill(TE.FromDouble(0));
        if (dbp != 0) new Span<T>((T*)dbp, cols).Fill(TE.FromDouble(0));
    }

    // Σ_rows dy per column, by the same fixed row blocks as LayerNormBackward.
    public static void ColumnSum<T, TE>(nint dyp, nint dbp, int rows, int cols) where T : unmanaged where TE : struct, IElement<T>
    {
        if (rows <= 0) { ZeroColumns<T, TE>(0, dbp, cols); return; }
        T* dy = (T*)dyp;
        int blocks = ColumnBlocks(rows, cols);
        long perBlock = (rows + blocks - 1) / blocks;
        var pb = new double[(long)blocks * cols];
        CpuParallel.For(blocks, 1, (b0, b1) =>
        {
            for (long b = b0; b < b1; b++)
                for (long r = b * perBlock; r < Math.Min(rows, (b + 1) * perBlock); r++)
                    for (int i = 0; i < cols; i++) pb[b * cols + i] += TE.ToDouble(dy[r * cols + i]);
        });
        for (int c = 0; c < cols; c++)
        {
            double s = 0;
            for (int b = 0; b < blocks; b++) s += pb[b * cols + c];
            ((T*)dbp)[c] = TE.FromDouble(s);
        }
    }

    // ---- cross entropy ----

    // With lse = max + log Σ e^(x−max) and q = (1−ε)·onehot(t) + ε/C:
    // loss = −Σ q_c (x_c − lse) = (1−ε)(lse − x_t) + ε(lse − mean(x)).
    public static void CrossEntropy<T, TE>(nint xp, nint tp, nint lossp, bool lossWide, int rows, int cols, long ignore, double eps)
        where T : unmanaged where TE : struct, IElement<T>
    {
        if (rows <= 0) return;
        T* x = (T*)xp;
        long* t = (long*)tp;
        CpuParallel.For(rows, Grain(cols), (r0, r1) =>
        {
            var xf = new float[cols];
            var ef = new float[cols];
            var ed = new double[cols];
            for (long r = r0; r < r1; r++)
            {
                long target = t[r];
                double loss = 0;
                if (target != ignore)
                {
                    double lse, xt, mean = 0;
                    if (typeof(T) == typeof(double))
                    {
                        var xs = new ReadOnlySpan<double>((double*)x + r * cols, cols);
                        double max = TensorPrimitives.Max(xs);
                        TensorPrimitives.Subtract(xs, max, ed);
                        VectorMath.Exp(ed, ed);
                        lse = max + Math.Log(SumD(ed));
                        xt = xs[(int)target];
                        if (eps != 0) mean = SumD(xs) / cols;
                    }
                    else
                    {
                        var xs = LoadF<T, TE>(x + r * cols, xf, cols);
                        float max = TensorPrimitives.Max(xs);
                        TensorPrimitives.Subtract(xs, max, ef);
                        VectorMath.Exp(ef, ef);
                        lse = max + Math.Log(SumD(ef));
                        xt = xs[(int)target];
                        if (eps != 0) mean = SumD(xs) / cols;
                    }
                    loss = (1 - eps) * (lse - xt);
                    if (eps != 0) loss += eps * (lse - mean);
                }
                if (lossWide) ((double*)lossp)[r] = loss;
                else ((float*)lossp)[r] = (float)loss;
            }
        });
    }

    // dx = (softmax(x) − q)·dloss[r]; 0 for ignored rows.
    public static void CrossEntropyBackward<T, TE>(nint xp, nint tp, nint dlossp, bool dlossWide, nint dxp, int rows, int cols, long ignore, double eps)
        where T : unmanaged where TE : struct, IElement<T>
    {
        if (rows <= 0 || cols <= 0) return;
        T* x = (T*)xp, dx = (T*)dxp;
        long* t = (long*)tp;
        CpuParallel.For(rows, Grain(cols), (r0, r1) =>
        {
            var xf = new float[cols];
            var ef = new float[cols];
            var ed = new double[cols];
            for (long r = r0; r < r1; r++)
            {
                long target = t[r];
                T* dr = dx + r * cols;
                double g = dlossWide ? ((double*)dlossp)[r] : ((float*)dlossp)[r];
                if (target == ignore)
                {
                    new Span<T>(dr, cols).Fill(TE.FromDouble(0));
                    continue;
                }
                if (typeof(T) == typeof(double))
                {
                    var xs = new ReadOnlySpan<double>((double*)x + r * cols, cols);
                    double max = TensorPrimitives.Max(xs);
                    TensorPrimitives.Subtract(xs, max, ed);
                    VectorMath.Exp(ed, ed);
                    double inv = 1 / SumD(ed), off = eps / cols;
                    for (int i = 0; i < cols; i++)
                        dr[i] = TE.FromDouble((ed[i] * inv - off - (i == target ? 1 - eps : 0)) * g);
                }
                else
                {
                    var xs = LoadF<T, TE>(x + r * cols, xf, cols);
                    float max = TensorPrimitives.Max(xs);
                    TensorPrimitives.Subtract(xs, max, ef);
                    VectorMath.Exp(ef, ef);
                    float inv = (float)(1 / SumD(ef)), off = (float)(eps / cols), hit = (float)(1 - eps), gf = (float)g;
                    for (int i = 0; i < cols; i++)
                        dr[i] = TE.FromFloat((ef[i] * inv - off - (i == target ? hit : 0)) * gf);
                }
            }
        });
    }
}

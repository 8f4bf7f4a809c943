using Engine.Ops;

namespace Engine.Backends;

/// <summary>
/// The fused capabilities of <see cref="IBackend"/> written once from its required kernels (Copy, Fill, Unary,
/// Binary, Where, Reduce, Gather, ScatterAdd): the default bodies a backend gets when it does not implement a fused
/// kernel, and the plain reference each fused kernel must match. Each composite computes in float32 (float64 for
/// Float64 operands) in temporaries, with the statistics the fused kernels keep in float64 also in float64, and rounds
/// once when it stores a result, as the fused kernels do. Nothing is read back to the host except the targets of
/// cross entropy, which are checked before anything is written (one synchronization). Temporaries are released when a
/// call returns, so a backend with an asynchronous queue must let a storage be released while work that uses it is
/// still queued on that queue (as the chunked host copies already assume).
/// Storages larger than 2³¹ − 1 elements are not supported by the optimizer and scaler composites.
/// </summary>
public static partial class CompositeKernels
{
    // ---- softmax ----

    /// <summary>
    /// <see cref="IBackend.Softmax"/> composed: m = max-reduce(x), e = exp(x − m), Σ = sum-reduce(e); softmax is e / Σ,
    /// log-softmax is (x − m) − log Σ. Stable: exp(x − m) ≤ 1 and the max term contributes 1, so Σ ∈ [1, cols].
    /// </summary>
    public static void Softmax(IBackend backend, Storage x, Storage y, int rows, int cols, bool log)
    {
        ContractChecks.Floating(log ? "LogSoftmax" : "Softmax", x.DType);
        if (rows <= 0 || cols <= 0) return;
        using var s = new Scratch(backend, x.Device);
        var w = Work(x.DType);
        var m = Matrix(rows, cols);
        var xw = s.As(x, w, m);
        var max = s.New(w, rows);
        backend.Reduce(ReduceOp.Max, xw, m, 1, max, null, 0);
        var shifted = s.New(w, m);
        backend.Binary(new SubOp(), xw, m, max, PerRow(rows, cols), shifted, m);
        var e = s.New(w, m);
        backend.Unary(new ExpOp(), shifted, m, e, m);
        var sum = s.New(w, rows);
        backend.Reduce(ReduceOp.Sum, e, m, 1, sum, null, 0);
        var yw = y.DType == w ? y : log ? shifted : e;
        if (log)
        {
            backend.Unary(new LogOp(), sum, Vector(rows), sum, Vector(rows));
            backend.Binary(new SubOp(), shifted, m, sum, PerRow(rows, cols), yw, m);
        }
        else backend.Binary(new DivOp(), e, m, sum, PerRow(rows, cols), yw, m);
        if (yw != y) backend.Copy(yw, m, y, m);
    }

    /// <summary>
    /// <see cref="IBackend.SoftmaxBackward"/> composed: softmax dx = y·(dy − Σ dy·y); log-softmax dx = dy − eʸ·Σ dy.
    /// </summary>
    public static void SoftmaxBackward(IBackend backend, Storage y, Storage dy, Storage dx, int rows, int cols, bool log)
    {
        ContractChecks.Floating(log ? "LogSoftmaxBackward" : "SoftmaxBackward", y.DType);
        if (rows <= 0 || cols <= 0) return;
        using var s = new Scratch(backend, y.Device);
        var w = Work(y.DType);
        var m = Matrix(rows, cols);
        var yw = s.As(y, w, m);
        var gw = s.As(dy, w, m);
        var sum = s.New(w, rows);
        var t = s.New(w, m);
        var dxw = dx.DType == w ? dx : t;
        if (log)
        {
            backend.Reduce(ReduceOp.Sum, gw, m, 1, sum, null, 0);
            backend.Unary(new ExpOp(), yw, m, t, m);
            backend.Binary(new MulOp(), t, m, sum, PerRow(rows, cols), t, m);
            backend.Binary(new SubOp(), gw, m, t, m, dxw, m);
        }
        else
        {
            backend.Binary(new MulOp(), gw, m, yw, m, t, m);
            backend.Reduce(ReduceOp.Sum, t, m, 1, sum, null, 0);
            backend.Binary(new SubOp(), gw, m, sum, PerRow(rows, cols), t, m);
            backend.Binary(new MulOp(), yw, m, t, m, dxw, m);
        }
        if (dxw != dx) backend.Copy(dxw, m, dx, m);
    }

    // ---- layer norm / RMS norm ----

    /// <summary>
    /// <see cref="IBackend.LayerNorm"/> composed: mean and variance per row in float64 (two passes, no cancellation),
    /// rstd = 1/√(var + eps), stored rounded to the statistics' dtype; then y = (x − mean)·rstd·w + b from the stored
    /// statistics, exactly as the backward will see them. RMSNorm uses mean 0 and ignores the bias. A residual is
    /// added first (an Add into sum), and the sum is what is normalized. A y of another dtype than x is rounded from
    /// the float32 result once.
    /// </summary>
    public static void LayerNorm(IBackend backend, Storage x, Storage? residual, Storage? weight, Storage? bias, Storage? sum, Storage y, Storage mean, Storage rstd, int rows, int cols, double eps, bool rms)
    {
        ContractChecks.Floating(rms ? "RmsNorm" : "LayerNorm", x.DType);
        if (rows <= 0) return;
        if (residual is not null)
        {
            if (sum is null) throw new ArgumentNullException(nameof(sum), "LayerNorm: a residual needs a sum output");
            if (cols > 0)
            {
                // A 16-bit residual of a float32 x is widened first (exact), as the Add's type promotion would.
                using var rs = new Scratch(backend, x.Device);
                var r = residual.DType == x.DType ? residual : rs.As(residual, x.DType, Matrix(rows, cols));
                backend.Binary(new AddOp(), x, Matrix(rows, cols), r, Matrix(rows, cols), sum, Matrix(rows, cols));
            }
            x = sum;
        }
        var v = Vector(rows);
        if (cols <= 0)
        {
            // The statistics of an empty row, as the fused kernels compute them: 0/0.
            backend.Fill(mean, v, rms ? 0 : double.NaN);
            backend.Fill(rstd, v, double.NaN);
            return;
        }
        using var s = new Scratch(backend, x.Device);
        var m = Matrix(rows, cols);
        var x64 = s.As(x, DType.Float64, m);
        var mean64 = s.New(DType.Float64, rows);
        if (rms) backend.Fill(mean64, v, 0);
        else backend.Reduce(ReduceOp.Mean, x64, m, 1, mean64, null, 0);
        var d64 = s.New(DType.Float64, m);
        backend.Binary(new SubOp(), x64, m, mean64, PerRow(rows, cols), d64, m);
        backend.Binary(new MulOp(), d64, m, d64, m, d64, m);
        var var64 = s.New(DType.Float64, rows);
        backend.Reduce(ReduceOp.Mean, d64, m, 1, var64, null, 0);
        backend.Unary(new AffineOp(1, eps), var64, v, var64, v);
        backend.Unary(new RsqrtOp(), var64, v, var64, v);
        backend.Copy(mean64, v, mean, v);
        backend.Copy(var64, v, rstd, v);

        var w = Work(x.DType);
        var xw = s.As(x, w, m);
        var yw = y.DType == w ? y : s.New(w, m);
        backend.Binary(new SubOp(), xw, m, mean, PerRow(rows, cols), yw, m);
        backend.Binary(new MulOp(), yw, m, rstd, PerRow(rows, cols), yw, m);
        if (weight is not null) backend.Binary(new MulOp(), yw, m, s.As(weight, w, Vector(cols)), PerColumn(rows, cols), yw, m);
        if (bias is not null && !rms) backend.Binary(new AddOp(), yw, m, s.As(bias, w, Vector(cols)), PerColumn(rows, cols), yw, m);
        if (yw != y) backend.Copy(yw, m, y, m);
    }

    /// <summary>
    /// <see cref="IBackend.LayerNormBackward"/> composed. With x̂ = (x − mean)·rstd and g = dy·w:
    /// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (RMSNorm drops mean(g)); dWeight = Σ_rows dy·x̂, dBias = Σ_rows dy (also
    /// for RMSNorm when asked for: what a bias would get). A dxAdd is added to the finished dx (an Add in place).
    /// </summary>
    public static void LayerNormBackward(IBackend backend, Storage x, Storage? weight, Storage mean, Storage rstd, Storage dy, Storage? dxAdd, Storage dx, Storage? dWeight, Storage? dBias, int rows, int cols, bool rms)
    {
        ContractChecks.Floating(rms ? "RmsNormBackward" : "LayerNormBackward", x.DType);
        if (cols <= 0) return;
        if (rows <= 0)
        {
            if (dWeight is not null) backend.Fill(dWeight, Vector(cols), 0);
            if (dBias is not null) backend.Fill(dBias, Vector(cols), 0);
            return;
        }
        using var s = new Scratch(backend, x.Device);
        var w = Work(x.DType);
        var m = Matrix(rows, cols);
        var perRow = PerRow(rows, cols);
        var xw = s.As(x, w, m);
        var gw = s.As(dy, w, m);
        var xh = s.New(w, m);
        backend.Binary(new SubOp(), xw, m, mean, perRow, xh, m);
        backend.Binary(new MulOp(), xh, m, rstd, perRow, xh, m);
        var t = s.New(w, m);
        if (dWeight is not null)
        {
            backend.Binary(new MulOp(), gw, m, xh, m, t, m);
            ColumnSum(backend, s, t, dWeight, rows, cols);
        }
        if (dBias is not null) ColumnSum(backend, s, gw, dBias, rows, cols);

        var g = gw;
        if (weight is not null)
        {
            g = s.New(w, m);
            backend.Binary(new MulOp(), gw, m, s.As(weight, w, Vector(cols)), PerColumn(rows, cols), g, m);
        }
        var c = s.New(w, rows);
        backend.Binary(new MulOp(), g, m, xh, m, t, m);
        backend.Reduce(ReduceOp.Mean, t, m, 1, c, null, 0);
        backend.Binary(new MulOp(), xh, m, c, perRow, xh, m); // x̂·mean(g·x̂)
        var u = g;
        if (!rms)
        {
            var a = s.New(w, rows);
            backend.Reduce(ReduceOp.Mean, g, m, 1, a, null, 0);
            backend.Binary(new SubOp(), g, m, a, perRow, t, m);
            u = t;
        }
        var dxw = dx.DType == w ? dx : t;
        backend.Binary(new SubOp(), u, m, xh, m, dxw, m);
        backend.Binary(new MulOp(), dxw, m, rstd, perRow, dxw, m);
        if (dxw != dx) backend.Copy(dxw, m, dx, m);
        if (dxAdd is not null) backend.Binary(new AddOp(), dx, m, dxAdd, m, dx, m);
    }

    // Σ over rows of a contiguous [rows, cols] operand into a [cols] output: the reduction of its transpose.
    static void ColumnSum(IBackend backend, Scratch s, Storage xw, Storage y, int rows, int cols)
    {
        var yw = y.DType == xw.DType ? y : s.New(xw.DType, cols);
        backend.Reduce(ReduceOp.Sum, xw, new Layout([cols, rows], [1, cols], 0), 1, yw, null, 0);
        if (yw != y) backend.Copy(yw, Vector(cols), y, Vector(cols));
    }

    // ---- cross entropy ----

    /// <summary>
    /// <see cref="IBackend.CrossEntropy"/> composed. With lse = max + log Σ e^(x−max) (the row statistics in float64)
    /// and q = (1−ε)·onehot(t) + ε/C: loss = −Σ q_c (x_c − lse) = (1−ε)(lse − x_t) + ε(lse − mean(x)); x_t is a
    /// gather; ignored rows give 0.
    /// </summary>
    public static void CrossEntropy(IBackend backend, Storage logits, Storage targets, Storage loss, int rows, int cols, long ignoreIndex, double labelSmoothing)
    {
        const string op = "CrossEntropy";
        ContractChecks.Floating(op, logits.DType);
        CheckTargets(op, backend, targets, rows, cols, ignoreIndex);
        if (rows <= 0) return;
        var v = Vector(rows);
        if (cols <= 0) { backend.Fill(loss, v, 0); return; } // every target is the ignore index
        using var s = new Scratch(backend, logits.Device);
        var w = Work(logits.DType);
        var m = Matrix(rows, cols);
        var xw = s.As(logits, w, m);
        var lse = LogSumExp(backend, s, xw, rows, cols, out _);
        var (safe, ignored) = SafeTargets(backend, s, targets, rows, ignoreIndex);
        var xt = s.New(w, rows);
        backend.Gather(xw, new Layout([rows, cols, 1], [cols, 1, 1], 0), safe, new Layout([rows, 1, 1], [1, 1, 1], 0), xt, rows, cols, 1, 1);
        var l64 = s.New(DType.Float64, rows);
        backend.Binary(new SubOp(), lse, v, s.As(xt, DType.Float64, v), v, l64, v);
        backend.Unary(new AffineOp(1 - labelSmoothing, -0.0), l64, v, l64, v);
        if (labelSmoothing != 0)
        {
            var mean = s.New(w, rows);
            backend.Reduce(ReduceOp.Mean, xw, m, 1, mean, null, 0);
            var t = s.New(DType.Float64, rows);
            backend.Binary(new SubOp(), lse, v, s.As(mean, DType.Float64, v), v, t, v);
            backend.Unary(new AffineOp(labelSmoothing, -0.0), t, v, t, v);
            backend.Binary(new AddOp(), l64, v, t, v, l64, v);
        }
        backend.Where(ignored, v, s.Constant(DType.Float64, 0), Broadcast(rows), l64, v, l64, v);
        backend.Copy(l64, v, loss, v);
    }

    /// <summary>
    /// <see cref="IBackend.CrossEntropyBackward"/> composed: dlogits = (softmax(x) − ε/C − (1−ε)·onehot(t))·dloss[r],
    /// the one-hot term a scatter-add at the targets; ignored rows give 0.
    /// </summary>
    public static void CrossEntropyBackward(IBackend backend, Storage logits, Storage targets, Storage dloss, Storage dlogits, int rows, int cols, long ignoreIndex, double labelSmoothing)
    {
        const string op = "CrossEntropyBackward";
        ContractChecks.Floating(op, logits.DType);
        CheckTargets(op, backend, targets, rows, cols, ignoreIndex);
        if (dloss.DType is not (DType.Float32 or DType.Float64))
            throw new DTypeException(op, $"dloss must be float32 or float64, got {dloss.DType.Name()}");
        if (rows <= 0 || cols <= 0) return;
        using var s = new Scratch(backend, logits.Device);
        var w = Work(logits.DType);
        var m = Matrix(rows, cols);
        var perRow = PerRow(rows, cols);
        var xw = s.As(logits, w, m);
        var max = s.New(w, rows);
        backend.Reduce(ReduceOp.Max, xw, m, 1, max, null, 0);
        var p = s.New(w, m);
        backend.Binary(new SubOp(), xw, m, max, perRow, p, m);
        backend.Unary(new ExpOp(), p, m, p, m);
        var sum = s.New(w, rows);
        backend.Reduce(ReduceOp.Sum, p, m, 1, sum, null, 0);
        backend.Binary(new DivOp(), p, m, sum, perRow, p, m);
        backend.Unary(new AffineOp(1, -(labelSmoothing / cols)), p, m, p, m);
        var (safe, ignored) = SafeTargets(backend, s, targets, rows, ignoreIndex);
        var hit = s.Constant(w, -(1 - labelSmoothing));
        backend.ScatterAdd(hit, new Layout([rows, 1, 1], [0, 0, 0], 0), safe, new Layout([rows, 1, 1], [1, 1, 1], 0), p, rows, cols, 1, 1);
        backend.Binary(new MulOp(), p, m, s.As(dloss, w, Vector(rows)), perRow, p, m);
        var dxw = dlogits.DType == w ? dlogits : p;
        backend.Where(ignored, perRow, s.Constant(w, 0), new Layout([rows, cols], [0, 0], 0), p, m, dxw, m);
        if (dxw != dlogits) backend.Copy(dxw, m, dlogits, m);
    }

    // lse = max + log Σ e^(x − max) per row, in float64.
    static Storage LogSumExp(IBackend backend, Scratch s, Storage xw, int rows, int cols, out Storage max)
    {
        var m = Matrix(rows, cols);
        var v = Vector(rows);
        max = s.New(xw.DType, rows);
        backend.Reduce(ReduceOp.Max, xw, m, 1, max, null, 0);
        var e = s.New(xw.DType, m);
        backend.Binary(new SubOp(), xw, m, max, PerRow(rows, cols), e, m);
        backend.Unary(new ExpOp(), e, m, e, m);
        var sum = s.New(xw.DType, rows);
        backend.Reduce(ReduceOp.Sum, e, m, 1, sum, null, 0);
        var lse = s.New(DType.Float64, rows);
        backend.Copy(sum, v, lse, v);
        backend.Unary(new LogOp(), lse, v, lse, v);
        backend.Binary(new AddOp(), lse, v, s.As(max, DType.Float64, v), v, lse, v);
        return lse;
    }

    // The targets with the ignore index replaced by 0 (so that a gather or scatter stays in range), and which rows are ignored.
    static (Storage Safe, Storage Ignored) SafeTargets(IBackend backend, Scratch s, Storage targets, int rows, long ignoreIndex)
    {
        var v = Vector(rows);
        var ignored = s.New(DType.Bool, rows);
        backend.Binary(new CompareOp(Comparison.Eq), targets, v, s.Constant(DType.Int64, ignoreIndex), Broadcast(rows), ignored, v);
        var safe = s.New(DType.Int64, rows);
        backend.Where(ignored, v, s.Constant(DType.Int64, 0), Broadcast(rows), targets, v, safe, v);
        return (safe, ignored);
    }

    // Every target is checked before anything is written, so a failed call leaves its outputs untouched. The check
    // reads the targets back: the one host read of the composites, since throwing needs the value.
    static void CheckTargets(string op, IBackend backend, Storage targets, int rows, int cols, long ignoreIndex)
    {
        ContractChecks.Int64(op, "targets", targets);
        if (rows <= 0) return;
        var t = new long[rows];
        backend.CopyToHost<long>(targets, t);
        for (int r = 0; r < rows; r++)
        {
            long v = t[r];
            if (v != ignoreIndex && (v < 0 || v >= cols))
                throw new ShapeException(op, $"target {v} (row {r}) is out of bounds for {cols} classes (expected in [0, {cols}) or the ignore index {ignoreIndex})");
        }
    }

    // ---- shared plumbing ----

    // The dtype a composite computes in: float32, or float64 for Float64 operands.
    static DType Work(DType t) => t == DType.Float64 ? DType.Float64 : DType.Float32;

    static Layout Matrix(int rows, int cols) => Layout.Contiguous([rows, cols]);

    static Layout Vector(int n) => new([n], [1], 0);

    static Layout Vector(long n, string op) => n <= int.MaxValue
        ? Vector((int)n)
        : throw new ShapeException(op, $"the composite kernel takes at most {int.MaxValue} elements per storage, got {n}");

    // A [rows] vector broadcast along the columns of [rows, cols].
    static Layout PerRow(int rows, int cols) => new([rows, cols], [1, 0], 0);

    // A [cols] vector broadcast along the rows of [rows, cols].
    static Layout PerColumn(int rows, int cols) => new([rows, cols], [0, 1], 0);

    // One element broadcast to [n].
    static Layout Broadcast(int n) => new([n], [0], 0);

    /// <summary>The temporaries of one composite call, released together when it returns.</summary>
    sealed class Scratch(IBackend backend, Device device) : IDisposable
    {
        readonly List<Storage> _held = [];

        public Storage New(DType dtype, long count)
        {
            var st = backend.Allocate(device, dtype, count);
            st.AddRef();
            _held.Add(st);
            return st;
        }

        public Storage New(DType dtype, Layout shape) => New(dtype, shape.Numel);

        public Storage Constant(DType dtype, double value)
        {
            var st = New(dtype, 1);
            backend.Fill(st, Vector(1), value);
            return st;
        }

        /// <summary>x itself when it already has the dtype, else a converted copy laid out contiguously as <paramref name="layout"/>.</summary>
        public Storage As(Storage x, DType dtype, Layout layout)
        {
            if (x.DType == dtype) return x;
            var y = New(dtype, layout.Numel);
            backend.Copy(x, layout, y, layout);
            return y;
        }

        /// <summary>Always a fresh copy in the dtype (for values updated in temporaries before a conditional store).</summary>
        public Storage Copy(Storage x, DType dtype, Layout layout)
        {
            var y = New(dtype, layout.Numel);
            backend.Copy(x, layout, y, layout);
            return y;
        }

        public void Dispose()
        {
            foreach (var st in _held) st.Release();
            _held.Clear();
        }
    }
}

using Engine.Ops;

namespace Engine.Backends;

// The fused linear layer composed of the required kernels: the reference the CPU epilogue and the CUDA bias-activation
// kernel must match (tests/Engine.Tests/Backends/CompositeKernelsTests.cs).
public static partial class CompositeKernels
{
    /// <summary>
    /// <see cref="IBackend.Linear"/> composed: z = x·wᵀ (MatMul, reading w transposed in place; a fill for k = 0),
    /// z += bias (Binary, broadcast over rows), y = act(z) (Unary). Half types go through float32 temporaries and
    /// round once on store.
    /// </summary>
    public static void Linear(IBackend backend, Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? bias, Storage y, Storage? pre,
        int m, int n, int k, Activation activation)
    {
        const string op = "Linear";
        ContractChecks.Linear(op, xLayout, wLayout, m, n, k);
        ContractChecks.SameDType(op, x, w, y);
        ContractChecks.Floating(op, x.DType);
        if (m == 0 || n == 0) return;
        using var s = new Scratch(backend, x.Device);
        var wt = Work(x.DType);
        var mat = Matrix(m, n);
        // z: the pre-activation in the work type, written where it is wanted when the dtypes allow.
        var z = pre is not null && pre.DType == wt ? pre : activation == Activation.None && y.DType == wt ? y : s.New(wt, mat);
        if (k == 0) backend.Fill(z, mat, 0);
        else
        {
            var (xs, xl) = x.DType == wt ? (x, xLayout) : (Widen(backend, s, x, xLayout, wt), Matrix(m, k));
            var (ws, wl) = w.DType == wt ? (w, wLayout) : (Widen(backend, s, w, wLayout, wt), Matrix(n, k));
            var a3 = new Layout([1, m, k], [0, xl.Strides[0], xl.Strides[1]], xl.Offset);
            var b3 = new Layout([1, k, n], [0, wl.Strides[1], wl.Strides[0]], wl.Offset);
            backend.MatMul(xs, a3, ws, b3, z, 1, m, n, k);
        }
        if (bias is not null) backend.Binary(new AddOp(), z, mat, s.As(bias, wt, Vector(n)), PerColumn(m, n), z, mat);
        if (pre is not null && pre != z) backend.Copy(z, mat, pre, mat);
        var yw = y.DType == wt ? y : s.New(wt, mat);
        switch (activation)
        {
            case Activation.Relu: backend.Unary(new ReluOp(), z, mat, yw, mat); break;
            case Activation.Gelu: backend.Unary(new GeluOp(), z, mat, yw, mat); break;
            case Activation.GeluTanh: backend.Unary(new GeluTanhOp(), z, mat, yw, mat); break;
            default: if (yw != z) backend.Copy(z, mat, yw, mat); break;
        }
        if (yw != y) backend.Copy(yw, mat, y, mat);
    }

    /// <summary>
    /// <see cref="IBackend.LinearBackward"/> composed: dz = dy·act′(saved) (Binary with the activation's derivative)
    /// and dBias = Σ_rows dz (a sum-reduce of its transpose).
    /// </summary>
    public static void LinearBackward(IBackend backend, Storage dy, Storage? saved, Storage? dz, Storage? dBias, int m, int n, Activation activation)
    {
        const string op = "LinearBackward";
        ContractChecks.Floating(op, dy.DType);
        if (n == 0) return;
        if (m == 0)
        {
            if (dBias is not null) backend.Fill(dBias, Vector(n), 0);
            return;
        }
        using var s = new Scratch(backend, dy.Device);
        var wt = Work(dy.DType);
        var mat = Matrix(m, n);
        var g = s.As(dy, wt, mat);
        if (activation != Activation.None)
        {
            if (saved is null || dz is null) throw new EngineException(op, $"{activation} needs the saved activation and dz (a contract violation)");
            var sv = s.As(saved, wt, mat);
            var d = dz.DType == wt ? dz : s.New(wt, mat);
            switch (activation)
            {
                case Activation.Relu: backend.Binary(new UnaryGradOp<ReluOp>(new ReluOp()), sv, mat, g, mat, d, mat); break;
                case Activation.Gelu: backend.Binary(new UnaryGradOp<GeluOp>(new GeluOp()), sv, mat, g, mat, d, mat); break;
                default: backend.Binary(new UnaryGradOp<GeluTanhOp>(new GeluTanhOp()), sv, mat, g, mat, d, mat); break;
            }
            if (d != dz) backend.Copy(d, mat, dz, mat);
            g = d;
        }
        if (dBias is not null) ColumnSum(backend, s, g, dBias, m, n);
    }

    /// <summary>
    /// <see cref="IBackend.LinearGradients"/> composed: dx = dz·w and dw = dzᵀ·x as two MatMuls reading the transposes
    /// in place (fills when the inner size is 0). A Float32 dw of 16-bit operands multiplies float32 copies of dz and x
    /// (exact widenings, so the same float32 sums of exact products).
    /// </summary>
    public static void LinearGradients(IBackend backend, Storage dz, Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? dx, Storage? dw,
        int m, int n, int k)
    {
        const string op = "LinearGradients";
        ContractChecks.LinearGradients(op, dz, x, xLayout, w, wLayout, dx, dw, m, n, k);
        if (dx is not null && m > 0 && k > 0)
        {
            if (n == 0) backend.Fill(dx, Matrix(m, k), 0);
            else
                backend.MatMul(dz, new Layout([1, m, n], [0, n, 1], 0), w, new Layout([1, n, k], [0, wLayout.Strides[0], wLayout.Strides[1]], wLayout.Offset),
                    dx, 1, m, k, n);
        }
        if (dw is null || n == 0 || k == 0) return;
        if (m == 0)
        {
            backend.Fill(dw, Matrix(n, k), 0);
            return;
        }
        using var s = new Scratch(backend, dz.Device);
        var (zs, xs, xl) = dw.DType == dz.DType
            ? (dz, x, xLayout)
            : (s.As(dz, dw.DType, Matrix(m, n)), Widen(backend, s, x, xLayout, dw.DType), Matrix(m, k));
        // dzᵀ [n, m] read in place: element (j, i) of dz at i·n + j.
        backend.MatMul(zs, new Layout([1, n, m], [0, 1, n], 0), xs, new Layout([1, m, k], [0, xl.Strides[0], xl.Strides[1]], xl.Offset), dw, 1, n, k, m);
    }

    // A strided 2-D operand as a contiguous copy in the work type.
    static Storage Widen(IBackend backend, Scratch s, Storage x, Layout layout, DType wt)
    {
        var t = s.New(wt, layout.Numel);
        backend.Copy(x, layout, t, Layout.Contiguous(layout.Shape));
        return t;
    }
}

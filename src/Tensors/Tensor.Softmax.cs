using Engine.Autocast;
using Engine.Graph;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// e^x / Σ e^x along <paramref name="dim"/>, computed stably (the row max is subtracted first) by one fused kernel.
    /// Float types only. Recorded as <see cref="SoftmaxBackward"/> (saving the output).
    /// </summary>
    public Tensor Softmax(int dim) => SoftmaxForward(dim, log: false);

    /// <summary>
    /// log softmax along <paramref name="dim"/>, computed as x − max − log Σ e^(x−max), so large values neither
    /// overflow nor lose precision. Float types only. Recorded as <see cref="LogSoftmaxBackward"/> (saving the output).
    /// </summary>
    public Tensor LogSoftmax(int dim) => SoftmaxForward(dim, log: true);

    Tensor SoftmaxForward(int dim, bool log)
    {
        string op = log ? "LogSoftmax" : "Softmax";
        if (AutocastDispatch.TryAutocast(log ? typeof(LogSoftmaxBackward) : typeof(SoftmaxBackward), this, out var ac)) using (ac) return ac[0].SoftmaxForward(dim, log);
        if (!DType.IsFloatingPoint()) throw new DTypeException(op, $"expected a floating point tensor, got {Describe()}");
        int d = Shape.NormalizeDim(dim, Rank, op);
        using var xd = DimLastDense(this, d, DType);
        var (rows, cols) = RowsCols(op, xd);
        var ym = Empty(op, xd.Layout.Shape, DType, Device);
        try
        {
            Backend.Softmax(xd.Storage, ym.Storage, rows, cols, log);
        }
        catch
        {
            ym.Dispose();
            throw;
        }
        var y = MoveDimBack(ym, d);
        if (!ShouldRecord(this)) return y;
        return y.Record(log ? new LogSoftmaxBackward(d, y) : new SoftmaxBackward(d, y), this);
    }

    // dx = y·(dy − Σ dy·y) (softmax) or dy − eʸ·Σ dy (log-softmax), one fused kernel from the saved output.
    internal sealed class SoftmaxBackward : GradFunction
    {
        readonly int _dim;
        readonly SavedTensor _y;
        internal SoftmaxBackward(int dim, Tensor y) { _dim = dim; _y = Save(y); }
        protected internal override Tensor?[] Backward(Tensor grad) => [SoftmaxGradient(_y.Value, grad, _dim, log: false)];
    }

    internal sealed class LogSoftmaxBackward : GradFunction
    {
        readonly int _dim;
        readonly SavedTensor _y;
        internal LogSoftmaxBackward(int dim, Tensor y) { _dim = dim; _y = Save(y); }
        protected internal override Tensor?[] Backward(Tensor grad) => [SoftmaxGradient(_y.Value, grad, _dim, log: true)];
    }

    /// <summary>
    /// The gradient of <see cref="Softmax"/> (or <see cref="LogSoftmax"/> when <paramref name="log"/>) along
    /// <paramref name="dim"/> from its output <paramref name="y"/> and the output gradient <paramref name="dy"/>:
    /// y·(dy − Σ dy·y), or dy − eʸ·Σ dy. One fused kernel; not recorded (no double backward).
    /// </summary>
    public static Tensor SoftmaxGradient(Tensor y, Tensor dy, int dim, bool log)
    {
        string op = log ? "LogSoftmaxBackward" : "SoftmaxBackward";
        y.CheckFloating(op);
        CheckSameDevice(op, y, dy);
        if (!y.Layout.Shape.AsSpan().SequenceEqual(dy.Layout.Shape))
            throw new ShapeException(op, $"the output {y.Describe()} and its gradient {dy.Describe()} must have one shape");
        int d = Shape.NormalizeDim(dim, y.Rank, op);
        using var yd = DimLastDense(y, d, y.DType);
        using var gd = DimLastDense(dy, d, y.DType);
        var (rows, cols) = RowsCols(op, yd);
        var dxm = Empty(op, yd.Layout.Shape, y.DType, y.Device);
        try
        {
            y.Backend.SoftmaxBackward(yd.Storage, gd.Storage, dxm.Storage, rows, cols, log);
        }
        catch
        {
            dxm.Dispose();
            throw;
        }
        return MoveDimBack(dxm, d);
    }

    // ---- shared by the row ops (softmax, norms, cross entropy): the kernels take contiguous [rows, cols] storages
    // read from element 0, so operands are brought into that form here, unrecorded. ----

    /// <summary>This tensor's values, contiguous from storage element 0, as <paramref name="dtype"/>: an alias when already so, a copy otherwise. Not recorded.</summary>
    internal Tensor DenseRows(DType dtype) =>
        dtype == DType && IsContiguous && Layout.Offset == 0 ? Alias() : CastCopy(dtype, Device);

    /// <summary><paramref name="t"/> with dim <paramref name="d"/> swapped with the last dim, dense from element 0, as <paramref name="dtype"/>.</summary>
    static Tensor DimLastDense(Tensor t, int d, DType dtype)
    {
        if (t.Rank == 0 || d == t.Rank - 1) return t.DenseRows(dtype);
        using var v = t.NewView(t.Layout.Transpose(d, t.Rank - 1));
        return v.DenseRows(dtype);
    }

    /// <summary>Undoes <see cref="DimLastDense"/> on a kernel output: a view that swaps the dims back (takes ownership of <paramref name="m"/>).</summary>
    static Tensor MoveDimBack(Tensor m, int d)
    {
        if (m.Rank == 0 || d == m.Rank - 1) return m;
        var y = m.NewView(m.Layout.Transpose(d, m.Rank - 1));
        m.Dispose();
        return y;
    }

    /// <summary>The [rows, cols] view of a tensor whose last dim is the row (a 0-d tensor is one row of one).</summary>
    static (int Rows, int Cols) RowsCols(string op, Tensor t)
    {
        int cols = t.Rank == 0 ? 1 : t.Layout.Shape[^1];
        long rows = 1;
        for (int i = 0; i < t.Rank - 1; i++) rows *= t.Layout.Shape[i];
        if (rows > int.MaxValue) throw new ShapeException(op, $"too many rows ({rows}) in {t.Describe()}");
        return ((int)rows, cols);
    }
}

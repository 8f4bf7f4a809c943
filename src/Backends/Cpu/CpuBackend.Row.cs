using Engine.Backends.Cpu.Kernels;

namespace Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc/>
    public void Softmax(Storage x, Storage y, int rows, int cols, bool log)
    {
        RowKernels.CheckFloat(log ? "LogSoftmax" : "Softmax", x.DType);
        var v = new SoftmaxVisitor { X = P(x), Y = P(y), Rows = rows, Cols = cols, Log = log };
        DTypeDispatch.Visit(x.DType, ref v);
    }

    /// <inheritdoc/>
    public void SoftmaxBackward(Storage y, Storage dy, Storage dx, int rows, int cols, bool log)
    {
        RowKernels.CheckFloat(log ? "LogSoftmaxBackward" : "SoftmaxBackward", y.DType);
        var v = new SoftmaxBackwardVisitor { Y = P(y), DY = P(dy), DX = P(dx), Rows = rows, Cols = cols, Log = log };
        DTypeDispatch.Visit(y.DType, ref v);
    }

    /// <inheritdoc/>
    public void LayerNorm(Storage x, Storage? residual, Storage? weight, Storage? bias, Storage? sum, Storage y, Storage mean, Storage rstd, int rows, int cols, double eps, bool rms)
    {
        RowKernels.CheckFloat(rms ? "RmsNorm" : "LayerNorm", x.DType);
        if (residual is not null && sum is null) throw new ArgumentNullException(nameof(sum), "LayerNorm: a residual needs a sum output");
        var v = new LayerNormVisitor
        {
            X = P(x), R = residual is null ? 0 : P(residual), S = residual is null ? 0 : P(sum!), W = weight is null ? 0 : P(weight), B = bias is null || rms ? 0 : P(bias), Y = P(y),
            Mean = P(mean), Rstd = P(rstd), Rows = rows, Cols = cols, Eps = eps, Rms = rms, XType = x.DType, RType = residual?.DType ?? x.DType, YType = y.DType,
        };
        DTypeDispatch.Visit(x.DType, ref v);
    }

    /// <inheritdoc/>
    public void LayerNormBackward(Storage x, Storage? weight, Storage mean, Storage rstd, Storage dy, Storage? dxAdd, Storage dx, Storage? dWeight, Storage? dBias, int rows, int cols, bool rms)
    {
        RowKernels.CheckFloat(rms ? "RmsNormBackward" : "LayerNormBackward", x.DType);
        var v = new LayerNormBackwardVisitor
        {
            X = P(x), W = weight is null ? 0 : P(weight), Mean = P(mean), Rstd = P(rstd), DY = P(dy), DXAdd = dxAdd is null ? 0 : P(dxAdd), DX = P(dx),
            DW = dWeight is null ? 0 : P(dWeight), DB = dBias is null || rms ? 0 : P(dBias), Rows = rows, Cols = cols, Rms = rms, XType = x.DType, DYType = dy.DType,
        };
        DTypeDispatch.Visit(x.DType, ref v);
        // RMSNorm has no bias; a dBias asked for anyway is Σ dy, which is what a bias would get (a 16-bit dy of a
        // float32 norm widened first, exactly, so the sum is the float32 kernel's).
        if (rms && dBias is not null)
        {
            Storage? wide = null;
            if (dy.DType != x.DType && rows > 0)
            {
                var m = Layout.Contiguous([rows, cols]);
                wide = Allocate(x.Device, x.DType, (long)rows * cols);
                wide.AddRef();
                Copy(dy, m, wide, m);
            }
            try
            {
                var s = new ColumnSumVisitor { DY = P(wide ?? dy), DB = P(dBias), Rows = rows, Cols = cols };
                DTypeDispatch.Visit(x.DType, ref s);
            }
            finally { wide?.Release(); }
        }
    }

    /// <inheritdoc/>
    public void CrossEntropy(Storage logits, Storage targets, Storage loss, int rows, int cols, long ignoreIndex, double labelSmoothing)
    {
        RowKernels.CheckFloat("CrossEntropy", logits.DType);
        RowKernels.CheckTargets("CrossEntropy", targets, rows, cols, ignoreIndex);
        var v = new CrossEntropyVisitor
        {
            X = P(logits), T = P(targets), Loss = P(loss), LossWide = loss.DType == DType.Float64,
            Rows = rows, Cols = cols, Ignore = ignoreIndex, Smoothing = labelSmoothing,
        };
        DTypeDispatch.Visit(logits.DType, ref v);
    }

    /// <inheritdoc/>
    public void CrossEntropyBackward(Storage logits, Storage targets, Storage dloss, Storage dlogits, int rows, int cols, long ignoreIndex, double labelSmoothing)
    {
        RowKernels.CheckFloat("CrossEntropyBackward", logits.DType);
        RowKernels.CheckTargets("CrossEntropyBackward", targets, rows, cols, ignoreIndex);
        ContractChecks.Accumulator("CrossEntropyBackward", "dloss", dloss);
        var v = new CrossEntropyBackwardVisitor
        {
            X = P(logits), T = P(targets), DLoss = P(dloss), DLossWide = dloss.DType == DType.Float64, DX = P(dlogits),
            Rows = rows, Cols = cols, Ignore = ignoreIndex, Smoothing = labelSmoothing,
        };
        DTypeDispatch.Visit(logits.DType, ref v);
    }

    struct SoftmaxVisitor : IDTypeVisitor
    {
        public nint X, Y; public int Rows, Cols; public bool Log;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> => RowKernels.Softmax<T, TE>(X, Y, Rows, Cols, Log);
    }

    struct SoftmaxBackwardVisitor : IDTypeVisitor
    {
        public nint Y, DY, DX; public int Rows, Cols; public bool Log;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> => RowKernels.SoftmaxBackward<T, TE>(Y, DY, DX, Rows, Cols, Log);
    }

    struct LayerNormVisitor : IDTypeVisitor
    {
        public nint X, R, S, W, B, Y, Mean, Rstd; public int Rows, Cols; public double Eps; public bool Rms; public DType XType, RType, YType;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> =>
            RowKernels.LayerNorm<T, TE>(X, R, S, W, B, Y, Mean, Rstd, Rows, Cols, Eps, Rms, XType, RType, YType);
    }

    struct LayerNormBackwardVisitor : IDTypeVisitor
    {
        public nint X, W, Mean, Rstd, DY, DXAdd, DX, DW, DB; public int Rows, Cols; public bool Rms; public DType XType, DYType;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> =>
            RowKernels.LayerNormBackward<T, TE>(X, W, Mean, Rstd, DY, DXAdd, DX, DW, DB, Rows, Cols, Rms, XType, DYType);
    }

    struct ColumnSumVisitor : IDTypeVisitor
    {
        public nint DY, DB; public int Rows, Cols;
        public void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T> => RowKernels.ColumnSum<T, TE>(DY, DB, Rows, Cols);
    }

    struct CrossEntropyVisitor : IDTypeVisitor
    {
        public nint X, T, Loss; public bool LossWide; public int Rows, Cols; public long Ignore; public double Smoothing;
        public void Visit<TX, TE>() where TX : unmanaged where TE : struct, IElement<TX> =>
            RowKernels.CrossEntropy<TX, TE>(X, T, Loss, LossWide, Rows, Cols, Ignore, Smoothing);
    }

    struct CrossEntropyBackwardVisitor : IDTypeVisitor
    {
        public nint X, T, DLoss, DX; public bool DLossWide; public int Rows, Cols; public long Ignore; public double Smoothing;
        public void Visit<TX, TE>() where TX : unmanaged where TE : struct, IElement<TX> =>
            RowKernels.CrossEntropyBackward<TX, TE>(X, T, DLoss, DLossWide, DX, Rows, Cols, Ignore, Smoothing);
    }
}

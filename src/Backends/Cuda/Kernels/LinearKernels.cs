using ILGPU;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>
/// The elementwise half of the fused Linear's backward (IBackend.LinearBackward): dz = dy·act′(saved) and the bias
/// gradient Σ_rows dz. The forward is the GEMM with its store epilogue (Gemm/SimtGemm.cs, Gemm/MmaGemm.cs).
/// </summary>
static class LinearKernels
{
    /// <summary>
    /// One thread per (block of rows, column), as LayerNorm's column sums (RowKernels.LayerNormColumns): it walks its
    /// block's rows in order, storing dz when <paramref name="act"/> is not 0 (Activation.None reads dy itself) and
    /// summing the stored, rounded dz, as the CPU does (what the weight GEMMs read). With one block the sum is the bias
    /// gradient (rounded once); otherwise it goes to partials[Blocks·Cols + block·Cols + column] (the bias half of
    /// ColumnFinish's [2, blocks, cols] layout), which ColumnFinish adds in block order: the same sums every run.
    /// Adjacent threads take adjacent columns, so the loads coalesce. float32 sums for the narrow types (the contract's
    /// "float32 or wider"), float64 for Float64. The final sum is stored as <paramref name="dbType"/>: dy's type, or
    /// Float32 for a 16-bit dy whose bias gradient goes to a float32 master bias (unrounded).
    /// </summary>
    public static void Backward<TW>(ArrayView<byte> dy, ArrayView<byte> saved, ArrayView<byte> dz, ArrayView<byte> partials, ArrayView<byte> db,
        ColumnArgs a, int act, int dbType) where TW : struct, IComputeWidth
    {
        int t = a.Type, cols = a.Cols;
        bool wantB = (a.Flags & RowKernels.HasBias) != 0, final = a.Blocks == 1;
        long n = (long)a.Blocks * cols, stride = (long)Grid.DimX * Group.DimX;
        for (long q = Grid.GlobalIndex.X; q < n; q += stride)
        {
            int blk = (int)a.ByCols.Divide(q), c = (int)(q - (long)blk * cols);
            int r0 = blk * a.PerBlock, r1 = Math.Min(a.Rows, r0 + a.PerBlock);
            if (TW.Wide)
            {
                double sum = 0;
                for (int r = r0; r < r1; r++)
                {
                    long i = (long)r * cols + c;
                    double d = LoadDouble(dy, t, i);
                    if (act != 0)
                    {
                        d *= Gemm.GemmActivation.Derivative(LoadDouble(saved, t, i), act);
                        StoreDouble(dz, t, i, d);
                    }
                    sum += d;
                }
                if (!wantB) continue;
                if (final) StoreDouble(db, t, c, sum);
                else partials.Cast<double>()[n + q] = sum;
            }
            else
            {
                float sum = 0;
                for (int r = r0; r < r1; r++)
                {
                    long i = (long)r * cols + c;
                    float d = LoadFloat(dy, t, i);
                    if (act != 0)
                    {
                        StoreFloat(dz, t, i, d * Gemm.GemmActivation.Derivative(LoadFloat(saved, t, i), act));
                        d = LoadFloat(dz, t, i); // the rounded value, as stored
                    }
                    sum += d;
                }
                if (!wantB) continue;
                if (final) StoreFloat(db, dbType, c, sum);
                else partials.Cast<float>()[n + q] = sum;
            }
        }
    }
}

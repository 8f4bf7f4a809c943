using ILGPU;
using Engine.Backends.Cuda.Gemm;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>
/// The elementwise half of the fused Linear's backward (IBackend.LinearBackward) in one launch: dz = dy·act′(saved)
/// and the bias gradient Σ_rows dz. The forward is the GEMM with its store epilogue (Gemm/SimtGemm.cs, Gemm/MmaGemm.cs).
/// </summary>
static class LinearKernels
{
    /// <summary>
    /// One thread per column (grid-stride over the n columns) walks the m rows in order: the sums are the same from run
    /// to run and a warp reads 32 neighbouring elements of a row per step. dz is stored when <paramref name="act"/> is
    /// not 0 (Activation.None reads dy itself) and the bias gradient sums the stored, rounded dz, as the CPU does
    /// (what the weight GEMMs read); float32 accumulation for the narrow types (the contract's "float32 or wider"),
    /// float64 for Float64. A column-per-thread walk leaves a GPU idle below a few thousand columns; the GPT widths
    /// (768–3072 columns) fill a few waves. <paramref name="hasBias"/> 0: dz only.
    /// </summary>
    public static void Backward<TW>(int m, int n, ArrayView<byte> dy, ArrayView<byte> saved, ArrayView<byte> dz, ArrayView<byte> db,
        int t, int act, int hasBias) where TW : struct, IComputeWidth
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long c = Grid.GlobalIndex.X; c < n; c += stride)
        {
            if (TW.Wide)
            {
                double sum = 0;
                for (long i = c, end = (long)m * n; i < end; i += n)
                {
                    double d = LoadDouble(dy, t, i);
                    if (act != 0)
                    {
                        d *= GemmActivation.Derivative(LoadDouble(saved, t, i), act);
                        StoreDouble(dz, t, i, d);
                    }
                    sum += d;
                }
                if (hasBias != 0) StoreDouble(db, t, c, sum);
            }
            else
            {
                float sum = 0;
                for (long i = c, end = (long)m * n; i < end; i += n)
                {
                    float d = LoadFloat(dy, t, i);
                    if (act != 0)
                    {
                        StoreFloat(dz, t, i, d * GemmActivation.Derivative(LoadFloat(saved, t, i), act));
                        d = LoadFloat(dz, t, i); // the rounded value, as stored
                    }
                    sum += d;
                }
                if (hasBias != 0) StoreFloat(db, t, c, sum);
            }
        }
    }
}

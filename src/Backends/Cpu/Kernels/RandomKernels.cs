using Engine.Ops;

namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// The Philox fill: one block of four words per counter, counters split over threads in chunks. Each element depends
/// only on (seed, offset, index), so the result is the same for any thread count and on any device.
/// </summary>
static unsafe class RandomKernels
{
    const long Grain = 4096; // counters per chunk: ~16K elements, enough to amortize a task

    /// <summary>
    /// Fills <paramref name="n"/> elements. Float64 uses 32-bit double uniforms and float64 Box–Muller; the other
    /// types take uniforms on a grid of 2^-<paramref name="bits"/> (exact in the type, so never 1 after rounding) and
    /// float32 Box–Muller. The affine map a + (b − a)·u (or a + b·z) is done in float64 and rounded once on store.
    /// </summary>
    public static void Fill<T, TE>(nint y, long n, ulong seed, ulong offset, bool normal, double a, double b, int bits)
        where T : unmanaged where TE : struct, IElement<T>
    {
        long counters = (n + 3) / 4;
        CpuParallel.For(counters, Grain, (s, e) =>
        {
            T* py = (T*)y;
            Span<double> v = stackalloc double[4];
            for (long c = s; c < e; c++)
            {
                Philox.Block(offset + (ulong)c, seed, out uint r0, out uint r1, out uint r2, out uint r3);
                if (normal)
                {
                    if (TE.Wide)
                    {
                        Philox.BoxMuller(r0, r1, out double z0, out double z1);
                        Philox.BoxMuller(r2, r3, out double z2, out double z3);
                        v[0] = z0; v[1] = z1; v[2] = z2; v[3] = z3;
                    }
                    else
                    {
                        Philox.BoxMuller(r0, r1, out float z0, out float z1);
                        Philox.BoxMuller(r2, r3, out float z2, out float z3);
                        v[0] = z0; v[1] = z1; v[2] = z2; v[3] = z3;
                    }
                    for (int l = 0; l < 4; l++) v[l] = a + b * v[l];
                }
                else
                {
                    if (TE.Wide)
                    {
                        v[0] = Philox.ToDouble(r0); v[1] = Philox.ToDouble(r1); v[2] = Philox.ToDouble(r2); v[3] = Philox.ToDouble(r3);
                    }
                    else
                    {
                        v[0] = Philox.ToFloat(r0, bits); v[1] = Philox.ToFloat(r1, bits); v[2] = Philox.ToFloat(r2, bits); v[3] = Philox.ToFloat(r3, bits);
                    }
                    for (int l = 0; l < 4; l++) v[l] = a + (b - a) * v[l];
                }
                long i0 = c * 4;
                int m = (int)Math.Min(4, n - i0);
                for (int l = 0; l < m; l++) py[i0 + l] = TE.FromDouble(v[l]);
            }
        });
    }
}

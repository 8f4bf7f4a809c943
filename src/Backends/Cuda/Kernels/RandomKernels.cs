using ILGPU;
using ILGPU.Runtime;
using Engine.Ops;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>
/// The Philox fill with the CPU backend's element-to-counter layout (element i: counter offset + i/4, lane i%4) and
/// its arithmetic, so uniforms are the CPU's bit for bit and normals agree within float tolerance (the device's
/// log/sin/cos differ from .NET's in the last bits).
/// </summary>
static class RandomKernels
{
    public static void Fill<TW>(ArrayView<byte> y, int t, long n, ulong seed, ulong offset, int normal, double a, double b, int bits)
        where TW : struct, IComputeWidth
    {
        long counters = (n + 3) / 4;
        long stride = (long)Grid.DimX * Group.DimX;
        bool wide = TW.Wide; // Float64: float64 Box-Muller; the float32 instantiation carries none of its math
        for (long c = Grid.GlobalIndex.X; c < counters; c += stride)
        {
            Philox.Block(offset + (ulong)c, seed, out uint r0, out uint r1, out uint r2, out uint r3);
            double v0, v1, v2, v3;
            if (normal != 0)
            {
                if (wide)
                {
                    Philox.BoxMuller(r0, r1, out double z0, out double z1);
                    Philox.BoxMuller(r2, r3, out double z2, out double z3);
                    v0 = z0; v1 = z1; v2 = z2; v3 = z3;
                }
                else
                {
                    Philox.BoxMuller(r0, r1, out float z0, out float z1);
                    Philox.BoxMuller(r2, r3, out float z2, out float z3);
                    v0 = z0; v1 = z1; v2 = z2; v3 = z3;
                }
                v0 = a + b * v0; v1 = a + b * v1; v2 = a + b * v2; v3 = a + b * v3;
            }
            else
            {
                if (wide)
                {
                    v0 = Philox.ToDouble(r0); v1 = Philox.ToDouble(r1); v2 = Philox.ToDouble(r2); v3 = Philox.ToDouble(r3);
                }
                else
                {
                    v0 = Philox.ToFloat(r0, bits); v1 = Philox.ToFloat(r1, bits); v2 = Philox.ToFloat(r2, bits); v3 = Philox.ToFloat(r3, bits);
                }
                double w = b - a;
                v0 = a + w * v0; v1 = a + w * v1; v2 = a + w * v2; v3 = a + w * v3;
            }
            long i0 = c * 4;
            StoreDouble(y, t, i0, v0);
            if (i0 + 1 < n) StoreDouble(y, t, i0 + 1, v1);
            if (i0 + 2 < n) StoreDouble(y, t, i0 + 2, v2);
            if (i0 + 3 < n) StoreDouble(y, t, i0 + 3, v3);
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

[assembly: InternalsVisibleTo("Engine.Tests")]

namespace Engine.Backends.Cpu.Gemm;

/// <summary>The micro-kernel families of the CPU float32/float64 GEMM (<see cref="CpuBackendOptions.Float32Gemm"/>).</summary>
public enum GemmKernelKind
{
    /// <summary>The best kernel the hardware supports.</summary>
    Auto,
    /// <summary>AVX-512 FMA, two Vector512 per micro-tile row.</summary>
    Vector512,
    /// <summary>AVX2 FMA, two Vector256 per micro-tile row.</summary>
    Vector256,
    /// <summary>Portable scalar code.</summary>
    Scalar,
}

/// <summary>Chooses the GEMM micro-kernel: the options' (<see cref="CpuBackendOptions.Float32Gemm"/>) or the best the hardware has.</summary>
internal static class GemmKernelSelection
{
    /// <summary>Whether <paramref name="kind"/> runs natively on this machine.</summary>
    public static bool IsSupported(GemmKernelKind kind) => kind switch
    {
        GemmKernelKind.Auto or GemmKernelKind.Scalar => true,
        GemmKernelKind.Vector512 => Vector512.IsHardwareAccelerated && Avx512F.IsSupported,
        GemmKernelKind.Vector256 => Vector256.IsHardwareAccelerated && Fma.IsSupported,
        _ => false,
    };

    /// <summary>The kernel the next call uses.</summary>
    public static GemmKernelKind Current
    {
        get
        {
            var forced = CpuBackend.Options.Float32Gemm;
            if (forced != GemmKernelKind.Auto) return forced;
            if (IsSupported(GemmKernelKind.Vector512)) return GemmKernelKind.Vector512;
            if (IsSupported(GemmKernelKind.Vector256)) return GemmKernelKind.Vector256;
            return GemmKernelKind.Scalar;
        }
    }

    /// <summary>Validates the common arguments of <see cref="Sgemm.Gemm"/> and <see cref="Dgemm.Gemm"/>.</summary>
    public static void Validate(int batch, int m, int n, int k, int aOffsets, int bOffsets, int cOffsets)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (aOffsets < batch) throw new ArgumentException($"aOffsets has {aOffsets} entries, batch is {batch}.", nameof(aOffsets));
        if (bOffsets < batch) throw new ArgumentException($"bOffsets has {bOffsets} entries, batch is {batch}.", nameof(bOffsets));
        if (cOffsets < batch) throw new ArgumentException($"cOffsets has {cOffsets} entries, batch is {batch}.", nameof(cOffsets));
    }
}

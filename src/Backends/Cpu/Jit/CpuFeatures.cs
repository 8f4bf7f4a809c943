using System.Runtime.Intrinsics.X86;

namespace Engine.Backends.Cpu.Jit;

/// <summary>CPU features that .NET exposes no <c>IsSupported</c> flag for, read once from CPUID.</summary>
internal static class CpuFeatures
{
    /// <summary>
    /// Whether the CPU executes AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16) on zmm registers: CPUID leaf 7 subleaf 1,
    /// EAX bit 5, plus AVX512F/BW/VL. <see cref="Avx512F.IsSupported"/> already implies that the OS saves the
    /// opmask and zmm state (XGETBV XCR0 bits 5-7), which the runtime checks before reporting AVX-512.
    /// .NET 10 has no intrinsic for vdpbf16ps (its Avx10v1/Avx10v2 classes carry none), hence the generated kernel.
    /// </summary>
    public static bool HasAvx512Bf16 { get; } = DetectAvx512Bf16();

    private static bool DetectAvx512Bf16()
    {
        if (!X86Base.IsSupported || !Avx512F.IsSupported || !Avx512BW.IsSupported || !Avx512F.VL.IsSupported) return false;
        // Leaf 7 subleaf 0 returns in EAX the highest subleaf of leaf 7; subleaf 1 exists only when it is >= 1.
        if (X86Base.CpuId(0, 0).Eax < 7 || X86Base.CpuId(7, 0).Eax < 1) return false;
        return (X86Base.CpuId(7, 1).Eax & (1 << 5)) != 0;
    }
}

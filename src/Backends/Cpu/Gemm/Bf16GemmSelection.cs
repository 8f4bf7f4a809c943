using Engine.Backends.Cpu.Jit;

namespace Engine.Backends.Cpu.Gemm;

/// <summary>The two implementations behind the CPU's bf16 GEMM (<see cref="CpuBackendOptions.Bf16Gemm"/>); both give the same bits.</summary>
public enum Bf16GemmPath
{
    /// <summary>The generated kernel where this CPU can run it, else the fallback.</summary>
    Auto,
    /// <summary>The generated vdpbf16ps micro-kernel.</summary>
    Jit,
    /// <summary>bf16-rounded operands widened to float32 and multiplied by <see cref="Sgemm"/> (FMA).</summary>
    Fallback,
}

/// <summary>
/// Chooses the bf16 GEMM path from <see cref="CpuBackendOptions.Bf16Gemm"/> (whose default <c>ENGINE_CPU_JIT</c>
/// sets); the generated kernel is built on first use. Tests choose a path per region with
/// <see cref="CpuBackend.UseOptions"/>, so one process can compare them.
/// </summary>
internal static class Bf16GemmSelection
{
    /// <summary>
    /// Whether the generated kernel runs when <c>ENGINE_CPU_JIT</c> is unset. Off: on the CPUs measured so far
    /// (Xeon family 6 model 0xCF, Emerald Rapids, under KVM, no AMX exposed) vdpbf16ps zmm issues about once per two
    /// cycles against two vfmadd231ps zmm per cycle (1.0-1.3 versus 4.7-5.3 instructions/ns in one process), so 64
    /// flops per vdpbf16ps give half the float32 FMA rate and the fallback is about twice as fast. Turn it on with
    /// <c>ENGINE_CPU_JIT=1</c> on a CPU whose vdpbf16ps keeps pace with its FMAs (the Explicit throughput tests
    /// measure both).
    /// </summary>
    public const bool JitByDefault = false;

    private static readonly Lazy<Bf16Microkernel?> s_kernel = new(CreateKernel);
    private static string? s_unavailable;

    /// <summary>The choice of the <c>ENGINE_CPU_JIT</c> environment variable (read once): on, off, or null when unset.</summary>
    public static bool? EnvironmentChoice { get; } = ParseSwitch(Environment.GetEnvironmentVariable("ENGINE_CPU_JIT"));

    /// <summary>
    /// An <c>ENGINE_CPU_JIT</c> value: 0/false/off/no is false, 1/true/on/yes is true (any case, blanks ignored),
    /// anything else (or unset) null.
    /// </summary>
    public static bool? ParseSwitch(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        "0" or "false" or "off" or "no" => false,
        "1" or "true" or "on" or "yes" => true,
        _ => null,
    };

    /// <summary>The generated kernel, or null when this machine cannot run it (see <see cref="UnavailableReason"/>).</summary>
    public static Bf16Microkernel? Kernel => s_kernel.Value;

    /// <summary>Why <see cref="Kernel"/> is null; null when it is available.</summary>
    public static string? UnavailableReason => Kernel is null ? s_unavailable : null;

    /// <summary>Whether the next call from this code runs the generated kernel (per <see cref="CpuBackend.Options"/>).</summary>
    public static bool UseJit => CpuBackend.Options.Bf16Gemm switch
    {
        Bf16GemmPath.Jit => true,
        Bf16GemmPath.Fallback => false,
        _ => Kernel is not null,
    };

    private static Bf16Microkernel? CreateKernel()
    {
        if (!CpuFeatures.HasAvx512Bf16)
        {
            s_unavailable = "the CPU lacks AVX512_BF16 (or AVX512F/BW/VL)";
            return null;
        }
        // Register broadcast: 10 instead of 28 load uops per 24 vdpbf16ps; measured 5-10% faster in L1 here (noisy).
        var kernel = Bf16Microkernel.TryCreate(Bf16Microkernel.Variant.RegisterBroadcast, out var error);
        s_unavailable = error;
        return kernel;
    }
}

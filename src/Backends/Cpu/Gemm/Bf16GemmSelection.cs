using Engine.Backends.Cpu.Jit;

namespace Engine.Backends.Cpu;

/// <summary>The two implementations behind <see cref="Bf16Gemm"/>.</summary>
internal enum Bf16GemmPath
{
    /// <summary>The generated AVX512_BF16 kernel when the CPU, the OS and <c>ENGINE_CPU_JIT</c> allow it, else the fallback.</summary>
    Auto,
    /// <summary>The generated vdpbf16ps micro-kernel.</summary>
    Jit,
    /// <summary>bf16-rounded operands widened to float32 and multiplied by <see cref="Sgemm"/> (FMA).</summary>
    Fallback,
}

/// <summary>
/// Chooses the bf16 GEMM path: the generated kernel is built on first use; users switch it off with
/// <c>ENGINE_CPU_JIT=0</c>, tests force either path per thread (the way <see cref="GemmKernelSelection"/> forces
/// float32 kernels) so one process can compare them.
/// </summary>
internal static class Bf16GemmSelection
{
    [ThreadStatic] private static Bf16GemmPath t_forced;
    private static readonly Lazy<Bf16Microkernel?> s_kernel = new(CreateKernel);
    private static string? s_unavailable;

    /// <summary>False when the <c>ENGINE_CPU_JIT</c> environment variable (read once) switches code generation off.</summary>
    public static bool EnvironmentAllows { get; } = !IsDisabledBy(Environment.GetEnvironmentVariable("ENGINE_CPU_JIT"));

    /// <summary>Whether an <c>ENGINE_CPU_JIT</c> value means "off": 0, false, off or no (any case, surrounding blanks ignored).</summary>
    public static bool IsDisabledBy(string? value) =>
        value?.Trim().ToLowerInvariant() is "0" or "false" or "off" or "no";

    /// <summary>The generated kernel, or null when this machine cannot run it (see <see cref="UnavailableReason"/>).</summary>
    public static Bf16Microkernel? Kernel => s_kernel.Value;

    /// <summary>Why <see cref="Kernel"/> is null; null when it is available.</summary>
    public static string? UnavailableReason => Kernel is null ? s_unavailable : null;

    /// <summary>The path forced for calls from the current thread (Auto = the default choice); meant for tests.</summary>
    public static Bf16GemmPath Forced
    {
        get => t_forced;
        set
        {
            if (value == Bf16GemmPath.Jit && Kernel is null)
                throw new NotSupportedException($"bf16 GEMM: the generated kernel is unavailable: {UnavailableReason}.");
            t_forced = value;
        }
    }

    /// <summary>Whether the next call from this thread runs the generated kernel.</summary>
    public static bool UseJit => t_forced switch
    {
        Bf16GemmPath.Jit => true,
        Bf16GemmPath.Fallback => false,
        _ => EnvironmentAllows && Kernel is not null,
    };

    private static Bf16Microkernel? CreateKernel()
    {
        if (!CpuFeatures.HasAvx512Bf16)
        {
            s_unavailable = "the CPU lacks AVX512_BF16 (or AVX512F/BW/VL)";
            return null;
        }
        var kernel = Bf16Microkernel.TryCreate(Bf16Microkernel.Variant.EmbeddedBroadcast, out var error);
        s_unavailable = error;
        return kernel;
    }
}

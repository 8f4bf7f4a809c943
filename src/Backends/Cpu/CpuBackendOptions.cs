using System.Globalization;
using Engine.Backends.Cpu.Gemm;

namespace Engine.Backends.Cpu;

/// <summary>
/// The CPU backend's tuning and test switches, none of which changes a result: only speed, or which of two
/// bit-compatible implementations runs. An immutable record: change one with <c>with</c>, for the whole process
/// (<see cref="CpuBackend.DefaultOptions"/>) or for one region of code (<see cref="CpuBackend.UseOptions"/>, the way
/// <c>torch.backends.*.flags(...)</c> scopes PyTorch's). Environment variables set only the defaults, read once by
/// <see cref="FromEnvironment"/>: <c>ENGINE_NUM_THREADS</c> and <c>ENGINE_CPU_JIT</c>.
/// </summary>
public sealed record CpuBackendOptions
{
    readonly int _threads = Environment.ProcessorCount;
    readonly Bf16GemmPath _bf16Gemm = Bf16GemmSelection.JitByDefault ? Bf16GemmPath.Auto : Bf16GemmPath.Fallback;

    /// <summary>
    /// Threads the kernels may use (at least 1; <c>torch.set_num_threads</c>). Default: <c>ENGINE_NUM_THREADS</c> when
    /// it is a positive integer, else all cores. Results do not depend on it.
    /// </summary>
    public int Threads
    {
        get => _threads;
        init
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1, nameof(Threads));
            _threads = value;
        }
    }

    /// <summary>
    /// Which bf16 GEMM runs: <see cref="Bf16GemmPath.Auto"/> (the generated AVX512_BF16 kernel where this CPU can run
    /// it), <see cref="Bf16GemmPath.Jit"/> (that kernel; setting it throws <see cref="NotSupportedException"/> where it
    /// is unavailable) or <see cref="Bf16GemmPath.Fallback"/> (float32 FMA on widened operands). Default:
    /// <c>ENGINE_CPU_JIT=1</c> gives Auto, <c>0</c> gives Fallback; unset, Fallback, because the generated kernel is
    /// slower on the CPUs measured so far (see <see cref="Bf16GemmSelection.JitByDefault"/>). Both paths give the
    /// same bits.
    /// </summary>
    public Bf16GemmPath Bf16Gemm
    {
        get => _bf16Gemm;
        init
        {
            if (value == Bf16GemmPath.Jit && Bf16GemmSelection.Kernel is null)
                throw new NotSupportedException($"bf16 GEMM: the generated kernel is unavailable: {Bf16GemmSelection.UnavailableReason}.");
            _bf16Gemm = value;
        }
    }

    /// <summary>
    /// Which float32/float64 GEMM micro-kernel runs: <see cref="GemmKernelKind.Auto"/> (the widest this CPU supports,
    /// the default) or a named one (setting one this CPU cannot run throws <see cref="NotSupportedException"/>). The
    /// kernels give the same results up to FMA contraction order within a tile; tests use it to check each.
    /// </summary>
    public GemmKernelKind Float32Gemm
    {
        get => _float32Gemm;
        init
        {
            if (!GemmKernelSelection.IsSupported(value)) throw new NotSupportedException($"GEMM kernel {value} is not supported here.");
            _float32Gemm = value;
        }
    }

    readonly GemmKernelKind _float32Gemm = GemmKernelKind.Auto;

    /// <summary>The defaults with the environment variables applied (what <see cref="CpuBackend.DefaultOptions"/> starts as).</summary>
    public static CpuBackendOptions FromEnvironment()
    {
        var o = new CpuBackendOptions();
        if (int.TryParse(Environment.GetEnvironmentVariable("ENGINE_NUM_THREADS"), NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n > 0)
            o = o with { Threads = n };
        if (Bf16GemmSelection.EnvironmentChoice is bool jit)
            o = o with { Bf16Gemm = jit ? Bf16GemmPath.Auto : Bf16GemmPath.Fallback };
        return o;
    }
}

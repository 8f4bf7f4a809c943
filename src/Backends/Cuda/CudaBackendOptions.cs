namespace Engine.Backends.Cuda;

/// <summary>
/// The CUDA backend's test and tuning switches, read when a device is first opened (the registry keeps one backend
/// per device, so a change applies to devices opened afterwards). An immutable record: change one with <c>with</c>,
/// <c>CudaBackend.Options = CudaBackend.Options with { Emulation = true }</c>. Environment variables set only the
/// defaults, read once by <see cref="FromEnvironment"/>: <c>ENGINE_CUDA_EMULATION</c>.
/// </summary>
public sealed record CudaBackendOptions
{
    readonly int _maxGroupSize = 256;
    readonly int _groupsPerMultiprocessor = 8;

    /// <summary>
    /// Lets the first CUDA device index past the real devices run on ILGPU's CPU accelerator with NVIDIA's 32-lane
    /// warps: what tests use on a machine without a GPU. Default: <c>ENGINE_CUDA_EMULATION=1</c>, else off.
    /// </summary>
    public bool Emulation { get; init; }

    /// <summary>
    /// Threads per group of the elementwise and reduction kernels, at most (a power of two; the accelerator's limit
    /// caps it). Default 256.
    /// </summary>
    public int MaxGroupSize
    {
        get => _maxGroupSize;
        init
        {
            if (value < 1 || (value & (value - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(MaxGroupSize), value, "a power of two is required");
            _maxGroupSize = value;
        }
    }

    /// <summary>
    /// Groups per multiprocessor of a grid-stride launch on a real GPU. Default 8, which measured best on the H200
    /// (shared/gpu/README.md); the emulator always uses two groups.
    /// </summary>
    public int GroupsPerMultiprocessor
    {
        get => _groupsPerMultiprocessor;
        init
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1, nameof(GroupsPerMultiprocessor));
            _groupsPerMultiprocessor = value;
        }
    }

    /// <summary>The defaults with the environment variables applied (what <see cref="CudaBackend.Options"/> starts as).</summary>
    public static CudaBackendOptions FromEnvironment() =>
        new() { Emulation = Environment.GetEnvironmentVariable("ENGINE_CUDA_EMULATION") == "1" };
}

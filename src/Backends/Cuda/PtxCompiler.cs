using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Engine.Backends.Cuda;

/// <summary>
/// The PTX the CUDA backend runs, generated without a GPU: the one way tests and <c>engine ptx</c> compile kernels.
/// It compiles in a context configured as the backend's own (<see cref="CudaBackend.CreateToolsContext"/>: O2 and
/// ILGPU.Algorithms, so the same intrinsic mappings and the same optimization passes), for an sm_90 device (the H200) with the
/// capabilities a CUDA accelerator for such a device reports, through the same <see cref="PTXBackend"/> compile call
/// an accelerator's <c>LoadStreamKernel</c> makes, with the same empty kernel specialization. ILGPU's CPU accelerator
/// runs kernels as .NET code and sees nothing of what the PTX backend rejects or what ptxas makes of it, so the
/// registry (<see cref="KernelRegistry"/>) is compiled here and assembled by NVIDIA's ptxas in the tests.
/// </summary>
public static class PtxCompiler
{
    /// <summary>The device architecture compiled for: sm_90 (Hopper, the H200).</summary>
    public static CudaArchitecture Architecture => CudaArchitecture.SM_90;

    /// <summary>
    /// The PTX ISA version written. At run time a CUDA accelerator uses the newest ISA its installed driver supports
    /// (8.8 under driver 13.0 on the H200), so the text would change with the machine that generates it; pinning 8.3
    /// makes the output reproducible everywhere and readable by CUDA 12.4's ptxas (which takes ISA 8.4 at most), the
    /// one CI installs (scripts/ci-deps.sh). ILGPU 1.5.3 uses the instruction set for the <c>.version</c> line only, so
    /// the rest of the text is what a GPU loads.
    /// </summary>
    public static CudaInstructionSet InstructionSet => CudaInstructionSet.ISA_83;

    static Context? s_context;
    static PTXBackend? s_backend;
    static readonly Dictionary<MethodInfo, string> s_compiled = [];
    static readonly Lock s_lock = new();

    /// <summary>
    /// The PTX of one explicitly grouped kernel (static, generic arguments bound), as a GPU would load it. Each kernel
    /// is compiled once per process (the whole registry is about 7 MB of PTX and 40 s of compiling on two cores,
    /// which several test fixtures would otherwise repeat).
    /// </summary>
    public static string Compile(MethodInfo kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        lock (s_lock)
        {
            if (s_compiled.TryGetValue(kernel, out var cached)) return cached;
            // What CudaAccelerator's constructor builds for an sm_90 device: its capability context, its architecture,
            // and (pinned, see InstructionSet) its instruction set; no NVVM (the context configures none).
            s_context ??= CudaBackend.CreateToolsContext();
            s_backend ??= new PTXBackend(s_context, new CudaCapabilityContext(Architecture), Architecture, InstructionSet, null);
            var compiled = (PTXCompiledKernel)s_backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel), KernelSpecialization.Empty);
            IrCacheTrim.AfterCompile(s_context);
            // The rewrite the backend applies before loading a cp.async kernel on a GPU (see PtxDepots, CudaBackend.LoadPromoted).
            return s_compiled[kernel] = Promote(compiled).PTXAssembly;
        }
    }

    /// <summary>
    /// <paramref name="kernel"/> with <see cref="PtxDepots.Promote"/> applied to its PTX, the text a GPU loads for a
    /// cp.async kernel. ILGPU 1.5.3 offers no public way to build a compiled kernel from edited text, so the text is
    /// replaced in place through the property's backing field; a test checks that this still works.
    /// </summary>
    public static PTXCompiledKernel Promote(PTXCompiledKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        string promoted = PtxDepots.Promote(kernel.PTXAssembly);
        if (ReferenceEquals(promoted, kernel.PTXAssembly)) return kernel;
        var field = typeof(PTXCompiledKernel).GetField("<PTXAssembly>k__BackingField", BindingFlags.Instance | BindingFlags.NonPublic)
            ?? throw new InvalidOperationException("ILGPU's PTXCompiledKernel has no PTXAssembly backing field any more: PtxCompiler.Promote needs another way to replace the text");
        field.SetValue(kernel, promoted);
        return kernel;
    }

    /// <summary>The PTX of a registry entry.</summary>
    public static string Compile(KernelEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return Compile(entry.Method);
    }

    /// <summary>The optimization level of the context kernels compile in (O2: a test pins it, since ptxas's results depend on it).</summary>
    public static OptimizationLevel OptimizationLevel
    {
        get { lock (s_lock) return (s_context ??= CudaBackend.CreateToolsContext()).Properties.OptimizationLevel; }
    }
}

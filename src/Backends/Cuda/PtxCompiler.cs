using System.Reflection;
using Engine.Ops;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Engine.Backends.Cuda;

/// <summary>
/// Compiles the backend's kernels to PTX without a GPU, with the same ILGPU context (and so the same intrinsic
/// mappings) a CUDA accelerator uses. ILGPU's CPU accelerator runs kernels as .NET code and does not see what the PTX
/// backend rejects (BitConverter's bit casts, for one), so the tests compile every kernel instantiation here.
/// </summary>
static class PtxCompiler
{
    static PTXBackend? s_backend;
    static readonly Lock s_lock = new();

    /// <summary>The PTX of one explicitly grouped kernel, for sm_90 (the H200) and PTX ISA 8.3.</summary>
    public static string Compile(MethodInfo kernel)
    {
        lock (s_lock)
        {
            s_backend ??= new PTXBackend(CudaBackend.SharedContextForTools, new CudaCapabilityContext(CudaArchitecture.SM_90),
                CudaArchitecture.SM_90, CudaInstructionSet.ISA_83, null);
            var compiled = (PTXCompiledKernel)s_backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel), new KernelSpecialization());
            return compiled.PTXAssembly;
        }
    }

    /// <summary>
    /// Every kernel instantiation the backend can launch: the fixed kernels, the unary and binary kernels for each op
    /// struct of Engine.Ops (the unary gradients included), and the three reductions.
    /// </summary>
    public static IEnumerable<(string Name, MethodInfo Kernel)> Kernels()
    {
        var flags = BindingFlags.Public | BindingFlags.Static;
        var ew = typeof(ElementwiseKernels);
        yield return ("Copy", ew.GetMethod(nameof(ElementwiseKernels.Copy), flags)!);
        yield return ("Fill", ew.GetMethod(nameof(ElementwiseKernels.Fill), flags)!);
        yield return ("Where", ew.GetMethod(nameof(ElementwiseKernels.Where), flags)!);
        var ops = typeof(IUnaryOp).Assembly.GetTypes().Where(t => t.IsValueType && !t.IsGenericTypeDefinition).ToList();
        var unary = ew.GetMethod(nameof(ElementwiseKernels.Unary), flags)!;
        var binary = ew.GetMethod(nameof(ElementwiseKernels.Binary), flags)!;
        foreach (var w in new[] { typeof(Narrow), typeof(Wide) })
        {
            foreach (var t in ops.Where(t => typeof(IUnaryOp).IsAssignableFrom(t)).OrderBy(t => t.Name))
                yield return ($"Unary<{t.Name}, {w.Name}>", unary.MakeGenericMethod(t, w));
            var binaryOps = ops.Where(t => typeof(IBinaryOp).IsAssignableFrom(t)).Append(typeof(PropagatingMaximumOp)).Append(typeof(PropagatingMinimumOp));
            foreach (var t in binaryOps.OrderBy(t => t.Name))
                yield return ($"Binary<{t.Name}, {w.Name}>", binary.MakeGenericMethod(t, w));
            foreach (var t in ops.Where(t => typeof(IDifferentiableUnaryOp).IsAssignableFrom(t)).OrderBy(t => t.Name))
                yield return ($"Binary<UnaryGradOp<{t.Name}>, {w.Name}>", binary.MakeGenericMethod(typeof(UnaryGradOp<>).MakeGenericType(t), w));
        }
        var reduce = typeof(ReduceKernels).GetMethod(nameof(ReduceKernels.Run), flags)!;
        yield return ("Reduce<float>", reduce.MakeGenericMethod(typeof(float), typeof(FloatMath)));
        yield return ("Reduce<double>", reduce.MakeGenericMethod(typeof(double), typeof(DoubleMath)));
        yield return ("Reduce<long>", reduce.MakeGenericMethod(typeof(long), typeof(LongMath)));
        yield return ("Random", typeof(RandomKernels).GetMethod(nameof(RandomKernels.Fill), flags)!);
        foreach (var name in new[] { nameof(OptimizerKernels.AdamPrepare), nameof(OptimizerKernels.Adam), nameof(OptimizerKernels.Sgd) })
            yield return (name, typeof(OptimizerKernels).GetMethod(name, flags)!);
        foreach (var name in new[] { nameof(AmpKernels.Unscale), nameof(AmpKernels.UpdateScale) })
            yield return (name, typeof(AmpKernels).GetMethod(name, flags)!);
    }
}

using System.Reflection;
using System.Text;
using Engine.Backends.Cuda.Gemm;
using Engine.Backends.Cuda.Kernels;
using Engine.Ops;

namespace Engine.Backends.Cuda;

/// <summary>
/// One kernel instantiation the CUDA backend can launch on a GPU: its entry method (generic arguments bound), the
/// family it belongs to, the element types it serves and, when the backend fixes it, its threads per group.
/// </summary>
/// <param name="Name">A readable name, unique in the registry: <c>Unary&lt;ExpOp, Narrow&gt;</c>, <c>Gemm&lt;mma-128x128x32-4x8, bf16, NN&gt;</c>.</param>
/// <param name="Family">elementwise, reduce, row, index, random, optimizer, amp, gemm-simt or gemm-mma.</param>
/// <param name="DTypes">The tensor element types a launch of this instantiation can serve.</param>
/// <param name="Method">The kernel's entry point, as the backend passes it to ILGPU's <c>LoadStreamKernel</c>.</param>
/// <param name="ThreadsPerGroup">
/// Threads per group of every launch (grid-stride kernels: 256 on a GPU; the GEMM tilings: their own); null when it
/// varies by launch (the row kernels take 32 to 1024 threads by row length).
/// </param>
public sealed record KernelEntry(string Name, string Family, IReadOnlyList<DType> DTypes, MethodInfo Method, int? ThreadsPerGroup)
{
    /// <summary>True when a launch can serve float32, float16 or bfloat16 tensors (the types a GPT step runs in).</summary>
    public bool ServesNarrowFloat => DTypes.Any(t => t is DType.Float32 or DType.Float16 or DType.BFloat16);

    /// <summary>The element types as a comma-separated list of PyTorch names.</summary>
    public string DTypeList => string.Join(",", DTypes.Select(t => t.Name()));

    /// <summary>A file name for this entry's PTX: <see cref="Name"/> with every run of other characters than letters, digits, '-' and '.' replaced by one '_'.</summary>
    public string FileName => Sanitize(Name) + ".ptx";

    /// <summary>True for the tensor-core kernels (inline PTX: ldmatrix and mma.sync).</summary>
    public bool IsTensorCore => Family == KernelRegistry.GemmMma;

    static string Sanitize(string name)
    {
        var sb = new StringBuilder(name.Length);
        foreach (char c in name)
        {
            bool keep = char.IsAsciiLetterOrDigit(c) || c is '-' or '.';
            if (keep) sb.Append(c);
            else if (sb.Length > 0 && sb[^1] != '_') sb.Append('_');
        }
        return sb.ToString().TrimEnd('_');
    }
}

/// <summary>
/// Every kernel instantiation the CUDA backend can launch on a GPU, grouped by family, in a fixed order: what
/// <c>engine ptx</c> writes and the PtxasTests assemble. It mirrors the <c>Kernel(...)</c> load sites in CudaBackend.*.cs
/// (one kernel per op struct and compute width for the elementwise families, because the width is a type argument;
/// one kernel for all dtypes where the dtype is a run-time argument) and the GPU kernels of every tiling in
/// <see cref="GemmPlans.All"/> (the tensor-core ones with their real inline PTX, never the emulated warp
/// instructions that only ILGPU's CPU accelerator runs). A load site added there needs its line here.
/// </summary>
public static class KernelRegistry
{
    /// <summary>Family names.</summary>
    public const string Elementwise = "elementwise", Reduce = "reduce", Row = "row", Index = "index", Random = "random",
        Optimizer = "optimizer", Amp = "amp", GemmSimt = "gemm-simt", GemmMma = "gemm-mma";

    /// <summary>Threads per group of the grid-stride kernels on a GPU (<see cref="CudaBackend"/>'s GroupSize).</summary>
    public const int GridGroupSize = 256;

    static readonly DType[] s_all = Enum.GetValues<DType>();
    static readonly DType[] s_floats = [DType.Float32, DType.Float16, DType.BFloat16, DType.Float64];
    static readonly DType[] s_narrow = [DType.Float32, DType.Float16, DType.BFloat16];
    static readonly DType[] s_f64 = [DType.Float64];
    static readonly DType[] s_wide = [DType.Float64, DType.Int32, DType.Int64, DType.Bool];
    static readonly Lazy<IReadOnlyList<KernelEntry>> s_entries = new(() => Build().ToList());

    /// <summary>The entries, in family order.</summary>
    public static IReadOnlyList<KernelEntry> All => s_entries.Value;

    /// <summary>The entry named <paramref name="name"/>; throws <see cref="ArgumentException"/> when there is none.</summary>
    public static KernelEntry Named(string name) =>
        All.FirstOrDefault(e => e.Name == name) ?? throw new ArgumentException($"no kernel named '{name}' in the registry", nameof(name));

    static IEnumerable<KernelEntry> Build()
    {
        const BindingFlags flags = BindingFlags.Public | BindingFlags.Static;
        static MethodInfo M(Type t, string name) => t.GetMethod(name, BindingFlags.Public | BindingFlags.Static)
            ?? throw new InvalidOperationException($"kernel {t.Name}.{name} not found");

        // ---- elementwise: Kernels/ElementwiseKernels.cs ----
        var ew = typeof(ElementwiseKernels);
        yield return new("Copy", Elementwise, s_all, M(ew, nameof(ElementwiseKernels.Copy)), GridGroupSize);
        yield return new("Fill", Elementwise, s_all, M(ew, nameof(ElementwiseKernels.Fill)), GridGroupSize);
        yield return new("Where", Elementwise, s_all, M(ew, nameof(ElementwiseKernels.Where)), GridGroupSize);
        var ops = typeof(IUnaryOp).Assembly.GetTypes()
            .Where(t => t.IsValueType && t.IsPublic && !t.IsGenericTypeDefinition).OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var unaryOps = ops.Where(t => typeof(IUnaryOp).IsAssignableFrom(t)).ToList();
        var binaryOps = ops.Where(t => typeof(IBinaryOp).IsAssignableFrom(t)).ToList();
        var gradOps = ops.Where(t => typeof(IDifferentiableUnaryOp).IsAssignableFrom(t)).ToList();
        var unary = M(ew, nameof(ElementwiseKernels.Unary));
        var binary = M(ew, nameof(ElementwiseKernels.Binary));
        foreach (var (w, types) in new[] { (typeof(Narrow), s_narrow), (typeof(Wide), s_wide) })
        {
            foreach (var t in unaryOps)
                yield return new($"Unary<{t.Name}, {w.Name}>", Elementwise, types, unary.MakeGenericMethod(t, w), GridGroupSize);
            foreach (var t in binaryOps)
                yield return new($"Binary<{t.Name}, {w.Name}>", Elementwise, types, binary.MakeGenericMethod(t, w), GridGroupSize);
            foreach (var t in gradOps)
                yield return new($"Binary<UnaryGradOp<{t.Name}>, {w.Name}>", Elementwise, types,
                    binary.MakeGenericMethod(typeof(UnaryGradOp<>).MakeGenericType(t), w), GridGroupSize);
        }

        // ---- reductions: Kernels/ReduceKernels.cs (a thread per output or a group per output, 256 threads either way) ----
        var run = typeof(ReduceKernels).GetMethod(nameof(ReduceKernels.Run), flags)!;
        yield return new("Reduce<float>", Reduce, s_narrow, run.MakeGenericMethod(typeof(float), typeof(Kernels.FloatMath)), GridGroupSize);
        yield return new("Reduce<double>", Reduce, s_wide, run.MakeGenericMethod(typeof(double), typeof(Kernels.DoubleMath)), GridGroupSize);
        yield return new("Reduce<long>", Reduce, [DType.Int32, DType.Int64, DType.Bool], run.MakeGenericMethod(typeof(long), typeof(LongMath)), GridGroupSize);

        // ---- row kernels: Kernels/RowKernels.cs, one per compute width (one group per row, 32-1024 threads by row length) ----
        var row = typeof(RowKernels);
        foreach (var (w, types) in new[] { (typeof(Narrow), s_narrow), (typeof(Wide), s_f64) })
        {
            foreach (var name in new[] { nameof(RowKernels.Softmax), nameof(RowKernels.SoftmaxBackward), nameof(RowKernels.LayerNorm), nameof(RowKernels.LayerNormBackward),
                nameof(RowKernels.CrossEntropy), nameof(RowKernels.CrossEntropyBackward) })
                yield return new($"{name}<{w.Name}>", Row, types, M(row, name).MakeGenericMethod(w), null);
            // The column sums of LayerNorm's dWeight/dBias are grid-stride kernels.
            foreach (var name in new[] { nameof(RowKernels.LayerNormColumns), nameof(RowKernels.ColumnFinish) })
                yield return new($"{name}<{w.Name}>", Row, types, M(row, name).MakeGenericMethod(w), GridGroupSize);
        }

        // ---- index kernels: Kernels/IndexKernels.cs ----
        var ix = typeof(IndexKernels);
        yield return new("Gather", Index, s_all, M(ix, nameof(IndexKernels.Gather)), GridGroupSize);
        yield return new("ScatterAddOrdered", Index, s_all, M(ix, nameof(IndexKernels.ScatterOrdered)), GridGroupSize);
        // Half-type targets accumulate in a float32 scratch buffer; Bool always takes the ordered path.
        yield return new("ScatterAddAtomic", Index, [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16, DType.Int32, DType.Int64],
            M(ix, nameof(IndexKernels.ScatterAtomic)), GridGroupSize);

        // ---- random, optimizer, AMP ----
        var fill = M(typeof(RandomKernels), nameof(RandomKernels.Fill));
        yield return new("Random<Narrow>", Random, s_narrow, fill.MakeGenericMethod(typeof(Narrow)), GridGroupSize);
        yield return new("Random<Wide>", Random, s_f64, fill.MakeGenericMethod(typeof(Wide)), GridGroupSize);
        var opt = typeof(OptimizerKernels);
        yield return new("AdamPrepare", Optimizer, s_floats, M(opt, nameof(OptimizerKernels.AdamPrepare)), 1);
        yield return new("Adam", Optimizer, s_floats, M(opt, nameof(OptimizerKernels.Adam)), GridGroupSize);
        yield return new("Sgd", Optimizer, s_floats, M(opt, nameof(OptimizerKernels.Sgd)), GridGroupSize);
        yield return new("ForeachAdamPrepare", Optimizer, s_floats, M(opt, nameof(OptimizerKernels.ForeachAdamPrepare)), MultiTensor.MaxTensors);
        yield return new("ForeachAdam", Optimizer, s_floats, M(opt, nameof(OptimizerKernels.ForeachAdam)), GridGroupSize);
        yield return new("ForeachSgd", Optimizer, s_floats, M(opt, nameof(OptimizerKernels.ForeachSgd)), GridGroupSize);
        yield return new("ForeachUnscale", Amp, s_floats, M(typeof(AmpKernels), nameof(AmpKernels.ForeachUnscale)), GridGroupSize);
        var fe = typeof(ForeachKernels);
        foreach (var power in new[] { typeof(PlainNorm), typeof(PowerNorm) })
        {
            yield return new($"ForeachNormPartials<{power.Name}>", Reduce, s_floats, M(fe, nameof(ForeachKernels.NormPartials)).MakeGenericMethod(power), GridGroupSize);
            yield return new($"ForeachNormFinish<{power.Name}>", Reduce, s_floats, M(fe, nameof(ForeachKernels.NormFinish)).MakeGenericMethod(power), MultiTensor.MaxTensors);
        }
        yield return new("ForeachMul", Elementwise, s_floats, M(fe, nameof(ForeachKernels.Mul)), GridGroupSize);
        yield return new("ForeachCopy", Elementwise, s_floats, M(fe, nameof(ForeachKernels.Copy)), GridGroupSize);
        yield return new("UpdateScale", Amp, [DType.Float32], M(typeof(AmpKernels), nameof(AmpKernels.UpdateScale)), 1);

        // ---- attention: Kernels/AttentionKernels.cs (grid-stride, a thread per output element; Float64 runs the composite) ----
        var att = typeof(AttentionKernels);
        foreach (var name in new[] { nameof(AttentionKernels.RowStats), nameof(AttentionKernels.Output), nameof(AttentionKernels.Delta),
            nameof(AttentionKernels.GradQuery), nameof(AttentionKernels.GradKeyValue) })
            yield return new($"Attention{name}", Row, s_narrow, M(att, name), GridGroupSize);
        // The tiled kernels (Kernels/FlashAttentionKernels.cs) for heads up to FlashGpuTile.Width; the above serve wider ones.
        var flash = typeof(FlashAttentionKernels<FlashGpuTile>);
        foreach (var name in new[] { nameof(FlashAttentionKernels<FlashGpuTile>.Forward), nameof(FlashAttentionKernels<FlashGpuTile>.GradQuery),
            nameof(FlashAttentionKernels<FlashGpuTile>.GradKeyValue) })
            yield return new($"FlashAttention{name}", Row, s_narrow, M(flash, name), default(FlashGpuTile).Threads);

        // ---- the fused Linear's backward: Kernels/LinearKernels.cs (its forward is the GEMM's epilogue, below) ----
        var lb = M(typeof(LinearKernels), nameof(LinearKernels.Backward));
        yield return new("LinearBackward<Narrow>", Reduce, s_narrow, lb.MakeGenericMethod(typeof(Narrow)), GridGroupSize);
        yield return new("LinearBackward<Wide>", Reduce, s_f64, lb.MakeGenericMethod(typeof(Wide)), GridGroupSize);

        // ---- GEMM (MatMul and the fused Linear, whose bias/pre-activation/activation epilogue is in every tiling):
        // CudaBackend.MatMul.cs, Gemm/GemmPlans.cs (every tiling; GemmPlans.Choose picks among them) ----
        foreach (var p in GemmPlans.All.Where(p => !p.EmulatorOnly))
        {
            if (p.Family == GemmFamily.Half)
            {
                for (int i = 0; i < 8; i++)
                    yield return new($"Gemm<{p.Name}, {(i < 4 ? "bf16" : "f16")}, {GemmPlan.LayoutNames[i % 4]}>", GemmMma,
                        [i < 4 ? DType.BFloat16 : DType.Float16], p.Gpu[i].Method, p.Threads);
                // The fused Linear's backward: dx (NN) and dw (TN, half or float32) in one launch (MmaGemm.Grouped).
                // Not the bf16 variant with a bf16 dw (i = 0): it spills, so a GPU never launches it (TryGroupedTensorCore).
                for (int i = 1; i < 4; i++)
                    yield return new($"GemmGrouped<{p.Name}, {(i < 2 ? "bf16" : "f16")}, NN+TN, {(i % 2 == 0 ? "half" : "f32")}>", GemmMma,
                        [i < 2 ? DType.BFloat16 : DType.Float16], p.GroupedGpu[i].Method, p.Threads);
            }
            else
            {
                yield return new($"Gemm<{p.Name}>", GemmSimt, [p.Family == GemmFamily.Float32 ? DType.Float32 : DType.Float64], p.Gpu[0].Method, p.Threads);
                // The fused Linear's backward: dx and dw in one launch (SimtGemm.Grouped).
                yield return new($"GemmGrouped<{p.Name}>", GemmSimt, [p.Family == GemmFamily.Float32 ? DType.Float32 : DType.Float64], p.Grouped!.Method, p.Threads);
            }
        }
    }
}

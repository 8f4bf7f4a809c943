using System.Reflection;
using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda.Gemm;

/// <summary>Which element types a GEMM tiling serves.</summary>
enum GemmFamily { Float32, Float64, Half }

/// <summary>
/// One tiling of a GEMM kernel: its tile, group size and kernels. The GPU tilings use 128–256 threads; the emulator's
/// ILGPU CPU accelerator runs at most 64 threads per group, so every register-tile and warp-tile struct also appears in
/// a 64-thread tiling that the CI tests run. A tensor-core tiling has one kernel per operand layout
/// (<see cref="IMmaLayout"/>: NT, NN, TT, TN in that order, index <c>2·ATrans + BTrans</c>) and input type.
/// </summary>
sealed class GemmPlan
{
    public required string Name { get; init; }
    public required GemmFamily Family { get; init; }
    public required int BM { get; init; }
    public required int BN { get; init; }
    public required int Threads { get; init; }

    /// <summary>
    /// True for a tiling that exists only to run a warp tile on the emulator's 64 threads and that a GPU does not get
    /// (its copies per thread would cost spills: 8 bytes in the 64×64 warp tile at 64 threads), so the registry omits it.
    /// </summary>
    public bool EmulatorOnly { get; init; }

    /// <summary>The tensor-core tilings' shared allocation, bytes (0 for SIMT tilings).</summary>
    public int SharedBytes { get; init; }

    /// <summary>
    /// The GPU kernels (each with its class, the kernel cache's key): one for a SIMT tiling; for a tensor-core tiling
    /// the bfloat16 kernels of the four layouts, then the float16 ones.
    /// </summary>
    public required IReadOnlyList<GemmKernel> Gpu { get; init; }

    /// <summary>The kernels for ILGPU's CPU accelerator (warp instructions emulated, one per layout; the GPU kernel for SIMT tilings).</summary>
    public required IReadOnlyList<GemmKernel> Emulated { get; init; }

    /// <summary>The SIMT tilings' grouped kernel (two problems in one launch, SimtGemm.Grouped); null for tensor-core tilings.</summary>
    public GroupedGemmKernel? Grouped { get; init; }

    /// <summary>
    /// The tensor-core tilings' grouped kernels (MmaGemm.Grouped: dx = dz·w in layout NN, then dw = dzᵀ·x in TN, the
    /// layouts of contiguous Linear operands): on a GPU bfloat16 with a half dw, bfloat16 with a float32 dw, then the
    /// float16 pair; emulated the half and float32 ones. Empty for SIMT tilings.
    /// </summary>
    public IReadOnlyList<GroupedGemmKernel> GroupedGpu { get; init; } = [];

    /// <inheritdoc cref="GroupedGpu"/>
    public IReadOnlyList<GroupedGemmKernel> GroupedEmulated { get; init; } = [];

    /// <summary>The tensor-core grouped kernel for <paramref name="dtype"/> operands and a float32 or half second output.</summary>
    public GroupedGemmKernel GroupedFor(DType dtype, bool emulated, bool float32Out) =>
        emulated ? GroupedEmulated[float32Out ? 1 : 0] : GroupedGpu[(dtype == DType.Float16 ? 2 : 0) + (float32Out ? 1 : 0)];

    /// <summary>The layout names of the tensor-core kernels, by index.</summary>
    public static readonly string[] LayoutNames = ["NT", "NN", "TT", "TN"];

    public GemmKernel For(DType dtype, bool emulated, int layout = 0)
    {
        if (Family != GemmFamily.Half) return emulated ? Emulated[0] : Gpu[0];
        return emulated ? Emulated[layout] : Gpu[(dtype == DType.Float16 ? 4 : 0) + layout];
    }

    public bool Serves(DType dtype) => Family switch
    {
        GemmFamily.Float32 => dtype == DType.Float32,
        GemmFamily.Float64 => dtype == DType.Float64,
        _ => dtype is DType.Float16 or DType.BFloat16,
    };

    public override string ToString() => Name;
}

/// <summary>A kernel entry point and the generic class it belongs to (the kernel cache's key).</summary>
sealed record GemmKernel(Type Key, Action<GemmArgs, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>> Kernel)
{
    public MethodInfo Method => Kernel.Method;
}

/// <summary>A grouped GEMM entry point and its class (the kernel cache's key).</summary>
sealed record GroupedGemmKernel(Type Key, Action<GroupedGemmArgs, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>> Kernel)
{
    public MethodInfo Method => Kernel.Method;
}

/// <summary>The GEMM tilings and the choice among them (their GPU kernels are in <see cref="KernelRegistry"/>).</summary>
static class GemmPlans
{
    static GemmPlan Simt<T, TMath, TTile, TMicro>(string name, GemmFamily family)
        where T : unmanaged where TMath : struct, IGemmMath<T> where TTile : struct, ISimtTile where TMicro : struct, IMicroTile<T>
    {
        GemmKernel k = new(typeof(SimtGemm<T, TMath, TTile, TMicro>), SimtGemm<T, TMath, TTile, TMicro>.Kernel);
        return new()
        {
            Name = name, Family = family, BM = default(TTile).BM, BN = default(TTile).BN,
            Threads = SimtGemm<T, TMath, TTile, TMicro>.Threads, Gpu = [k], Emulated = [k],
            Grouped = new(typeof(SimtGemm<T, TMath, TTile, TMicro>), SimtGemm<T, TMath, TTile, TMicro>.Grouped),
        };
    }

    static GemmKernel MmaKernel<TBlock, TWarp, TInstr, TLayout>()
        where TBlock : struct, IMmaBlock where TWarp : struct, IMmaWarpTile<TInstr> where TInstr : struct, IWarpMma where TLayout : struct, IMmaLayout =>
        new(typeof(MmaGemm<TBlock, TWarp, TInstr, TLayout>), MmaGemm<TBlock, TWarp, TInstr, TLayout>.Kernel);

    static GemmKernel[] MmaLayouts<TBlock, TWarp, TInstr>()
        where TBlock : struct, IMmaBlock where TWarp : struct, IMmaWarpTile<TInstr> where TInstr : struct, IWarpMma =>
        [MmaKernel<TBlock, TWarp, TInstr, AkBk>(), MmaKernel<TBlock, TWarp, TInstr, AkBn>(), MmaKernel<TBlock, TWarp, TInstr, AmBk>(), MmaKernel<TBlock, TWarp, TInstr, AmBn>()];

    static GroupedGemmKernel[] MmaGrouped<TBlock, TWarp, TInstr>()
        where TBlock : struct, IMmaBlock where TWarp : struct, IMmaWarpTile<TInstr> where TInstr : struct, IWarpMma =>
        [new(typeof(MmaGemm<TBlock, TWarp, TInstr, AkBn>), MmaGemm<TBlock, TWarp, TInstr, AkBn>.Grouped<AmBn, HalfOutput>),
         new(typeof(MmaGemm<TBlock, TWarp, TInstr, AkBn>), MmaGemm<TBlock, TWarp, TInstr, AkBn>.Grouped<AmBn, Float32Output>)]; // one key: the cache name tells them apart

    static GemmPlan Mma<TBlock, TWarpBf16, TWarpF16, TWarpEmulated>(string name, bool emulatorOnly = false)
        where TBlock : struct, IMmaBlock
        where TWarpBf16 : struct, IMmaWarpTile<PtxWarpMmaBf16>
        where TWarpF16 : struct, IMmaWarpTile<PtxWarpMmaF16>
        where TWarpEmulated : struct, IMmaWarpTile<EmulatedWarpMma> =>
        new()
        {
            Name = name, Family = GemmFamily.Half, EmulatorOnly = emulatorOnly,
            BM = MmaGemm<TBlock, TWarpBf16, PtxWarpMmaBf16, AkBk>.BM, BN = MmaGemm<TBlock, TWarpBf16, PtxWarpMmaBf16, AkBk>.BN,
            Threads = MmaGemm<TBlock, TWarpBf16, PtxWarpMmaBf16, AkBk>.Threads,
            SharedBytes = MmaGemm<TBlock, TWarpBf16, PtxWarpMmaBf16, AkBk>.SharedBytes,
            Gpu = [.. MmaLayouts<TBlock, TWarpBf16, PtxWarpMmaBf16>(), .. MmaLayouts<TBlock, TWarpF16, PtxWarpMmaF16>()],
            Emulated = MmaLayouts<TBlock, TWarpEmulated, EmulatedWarpMma>(),
            GroupedGpu = [.. MmaGrouped<TBlock, TWarpBf16, PtxWarpMmaBf16>(), .. MmaGrouped<TBlock, TWarpF16, PtxWarpMmaF16>()],
            GroupedEmulated = MmaGrouped<TBlock, TWarpEmulated, EmulatedWarpMma>(),
        };

    // Names: family-BMxBNxBK-(per-thread or per-warp tile).
    public static readonly GemmPlan F32Large = Simt<float, FloatMath, Tile128x128x8, Micro8x8<float, FloatMath>>("f32-128x128x8-8x8", GemmFamily.Float32);
    public static readonly GemmPlan F32Small = Simt<float, FloatMath, Tile64x64x8, Micro4x4<float, FloatMath>>("f32-64x64x8-4x4", GemmFamily.Float32);
    public static readonly GemmPlan F32Emulated = Simt<float, FloatMath, Tile32x32x32, Micro4x4<float, FloatMath>>("f32-32x32x32-4x4", GemmFamily.Float32);
    public static readonly GemmPlan F64 = Simt<double, DoubleMath, Tile64x64x8, Micro4x4<double, DoubleMath>>("f64-64x64x8-4x4", GemmFamily.Float64);
    public static readonly GemmPlan F64Emulated = Simt<double, DoubleMath, Tile32x32x32, Micro4x4<double, DoubleMath>>("f64-32x32x32-4x4", GemmFamily.Float64);
    public static readonly GemmPlan HalfLarge = Mma<Warps2x2, Mma4x8<PtxWarpMmaBf16>, Mma4x8<PtxWarpMmaF16>, Mma4x8<EmulatedWarpMma>>("mma-128x128x32-4x8");
    public static readonly GemmPlan HalfSmall = Mma<Warps2x2, Mma2x4<PtxWarpMmaBf16>, Mma2x4<PtxWarpMmaF16>, Mma2x4<EmulatedWarpMma>>("mma-64x64x32-2x4");
    public static readonly GemmPlan HalfEmulated = Mma<Warps2x1, Mma2x4<PtxWarpMmaBf16>, Mma2x4<PtxWarpMmaF16>, Mma2x4<EmulatedWarpMma>>("mma-64x32x32-2x4");

    /// <summary>Every tiling: the defaults above, plus 64-thread ones that give each register and warp tile a CI run.</summary>
    public static readonly IReadOnlyList<GemmPlan> All =
    [
        F32Large, F32Small, F32Emulated,
        Simt<float, FloatMath, Tile64x64x16, Micro8x8<float, FloatMath>>("f32-64x64x16-8x8", GemmFamily.Float32),
        Simt<float, FloatMath, Tile16x16x32, Micro2x2<float, FloatMath>>("f32-16x16x32-2x2", GemmFamily.Float32),
        Simt<float, FloatMath, Tile32x32x8, Micro4x4<float, FloatMath>>("f32-32x32x8-4x4", GemmFamily.Float32),
        F64, F64Emulated,
        Simt<double, DoubleMath, Tile16x16x32, Micro2x2<double, DoubleMath>>("f64-16x16x32-2x2", GemmFamily.Float64),
        Simt<double, DoubleMath, Tile32x32x8, Micro4x4<double, DoubleMath>>("f64-32x32x8-4x4", GemmFamily.Float64),
        HalfLarge, HalfSmall, HalfEmulated,
        // The large tiling's 64×64 warp tile at the emulator's 64 threads.
        Mma<Warps1x2, Mma4x8<PtxWarpMmaBf16>, Mma4x8<PtxWarpMmaF16>, Mma4x8<EmulatedWarpMma>>("mma-64x128x32-4x8", emulatorOnly: true),
    ];

    public static GemmPlan Named(string name) =>
        All.FirstOrDefault(p => p.Name == name) ?? throw new ArgumentException($"no GEMM plan named '{name}'", nameof(name));

    /// <summary>
    /// The default tiling: on a GPU the 128×128 one when its tiles fill every multiprocessor at least once, else the
    /// 64×64 one (more groups for small products); under emulation the 64-thread one.
    /// </summary>
    public static GemmPlan Choose(DType dtype, int batch, int m, int n, int maxThreads, int multiprocessors)
    {
        bool small = maxThreads < 256;
        if (dtype == DType.Float64) return small ? F64Emulated : F64;
        var (emulated, large, fallback) = dtype == DType.Float32 ? (F32Emulated, F32Large, F32Small) : (HalfEmulated, HalfLarge, HalfSmall);
        if (small) return emulated;
        long tiles = (long)((m + 127) / 128) * ((n + 127) / 128) * batch;
        return tiles >= multiprocessors ? large : fallback;
    }

    /// <summary>The tiling of a grouped launch of two products (the rule of <see cref="Choose"/> over both problems' tiles).</summary>
    public static GemmPlan ChooseGrouped(DType dtype, int m0, int n0, int m1, int n1, int maxThreads, int multiprocessors)
    {
        bool small = maxThreads < 256;
        if (dtype == DType.Float64) return small ? F64Emulated : F64;
        var (emulated, large, fallback) = dtype == DType.Float32 ? (F32Emulated, F32Large, F32Small) : (HalfEmulated, HalfLarge, HalfSmall);
        if (small) return emulated;
        long tiles = (long)((m0 + 127) / 128) * ((n0 + 127) / 128) + (long)((m1 + 127) / 128) * ((n1 + 127) / 128);
        return tiles >= multiprocessors ? large : fallback;
    }
}

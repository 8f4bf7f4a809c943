using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Engine.Backends.Cuda.Gemm;

namespace Engine.Backends.Cuda;

public sealed partial class CudaBackend
{
    // The batched GEMM. Float32 and Float64 run the shared-memory, register-blocked SIMT kernel (Gemm/SimtGemm.cs);
    // Float16 and BFloat16 the tensor-core kernel (Gemm/MmaGemm.cs: mma.sync m16n8k16, float32 accumulation, one
    // rounding on store); integer types go through float64 as on the CPU. Operands are read in place with any strides,
    // so transposed and broadcast (stride-0) operands need no copies. Gemm/GemmPlans.cs picks the tiling.

    /// <summary>
    /// Forces a GEMM tiling by name (see Gemm/GemmPlans.cs) for the dtypes it serves; null restores the automatic
    /// choice. For tests that run every tiling on the emulator.
    /// </summary>
    internal string? GemmPlanOverride { get; set; }

    /// <inheritdoc/>
    public void MatMul(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k)
    {
        const string op = "MatMul";
        var dt = a.DType;
        ContractChecks.SameDType(op, a, b, y);
        ContractChecks.Gemm(op, aLayout, bLayout, batch, m, n, k);
        if (batch == 0 || m == 0 || n == 0) return;
        if (k == 0)
        {
            Fill(y, Layout.Contiguous([batch, m, n]), 0);
            return;
        }
        if (!dt.IsFloatingPoint())
        {
            MatMulThroughFloat64(a, aLayout, b, bLayout, y, batch, m, n, k);
            return;
        }
        Gemm(a, aLayout, b, bLayout, y, batch, m, n, k, default);
    }

    /// <summary>
    /// The floating-point GEMM with its store epilogue (<paramref name="e"/>: default for a plain MatMul, the fused
    /// Linear's bias, pre-activation and activation otherwise; see CudaBackend.Linear.cs). k may be 0 here: the tile
    /// loops then run no stage and the epilogue sees zeros.
    /// </summary>
    void Gemm(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k, in GemmEpilogue e)
    {
        const string op = "MatMul";
        var dt = a.DType;

        var plan = GemmPlanOverride is { } forced && GemmPlans.Named(forced) is var p && p.Serves(dt)
            ? p
            : GemmPlans.Choose(dt, batch, m, n, Accelerator.MaxNumThreadsPerGroup, Accelerator.NumMultiprocessors);
        if (plan.EmulatorOnly && !IsEmulated)
            throw new EngineException(op, $"the {plan.Name} tiling runs on the emulator only; {Device} is a GPU");
        if (plan.Threads > Accelerator.MaxNumThreadsPerGroup)
            throw new EngineException(op, $"the {plan.Name} tiling needs {plan.Threads} threads per group; {Device} runs at most {Accelerator.MaxNumThreadsPerGroup}");
        if (plan.Family == GemmFamily.Half)
        {
            MatMulTensorCore(plan, a, aLayout, b, bLayout, y, batch, m, n, k, e);
            return;
        }
        var args = Args(plan, aLayout, bLayout, batch, m, n, k, dt, e);
        // Consecutive threads walk each operand along its smaller stride (size-1 dims do not count).
        args.AAlongM = m > 1 && (k == 1 || Math.Abs(aLayout.Strides[1]) < Math.Abs(aLayout.Strides[2])) ? 1 : 0;
        args.BAlongN = n > 1 && (k == 1 || Math.Abs(bLayout.Strides[2]) < Math.Abs(bLayout.Strides[1])) ? 1 : 0;
        var yv = V(y);
        VectorRuns(ref args, Address(V(a)), Address(V(b)), batch, IsEmulated);
        Launch(plan, plan.For(dt, IsEmulated), args, V(a), V(b), yv, e.Bias is null ? yv : V(e.Bias), e.Pre is null ? yv : V(e.Pre), batch);
    }

    /// <summary>
    /// Sets the SIMT kernel's VectorA/VectorB (GemmArgs): an operand is staged 16 bytes at a time when it is contiguous
    /// along the dim its stage loads walk (AAlongM/BAlongN), with that dim's extent, the other stride (when that dim
    /// is longer than 1), the offset and the batch stride multiples of 4 elements, and the buffer 16-byte aligned (ILGPU's
    /// CPU accelerator needs no alignment; the emulator runs the same index math). Anything else keeps the scalar loads.
    /// </summary>
    static void VectorRuns(ref GemmArgs g, long addressA, long addressB, int batch, bool emulated)
    {
        g.VectorA = VectorRun(g.AAlongM != 0, g.StrideAm, g.StrideAk, g.M, g.K, g.OffsetA, batch > 1 ? g.BatchStrideA : 0, addressA, emulated) ? 1 : 0;
        g.VectorB = VectorRun(g.BAlongN != 0, g.StrideBn, g.StrideBk, g.N, g.K, g.OffsetB, batch > 1 ? g.BatchStrideB : 0, addressB, emulated) ? 1 : 0;
    }

    internal static bool VectorRun(bool alongRows, long strideRows, long strideK, int rows, int depth, long offset, long batchStride, long address, bool emulated)
    {
        if (offset % 4 != 0 || batchStride % 4 != 0 || !emulated && address % 16 != 0) return false;
        return alongRows
            ? strideRows == 1 && rows % 4 == 0 && (depth == 1 || strideK % 4 == 0)
            : strideK == 1 && depth % 4 == 0 && (rows == 1 || strideRows % 4 == 0);
    }

    static GemmArgs Args(GemmPlan plan, Layout aLayout, Layout bLayout, int batch, int m, int n, int k, DType dt, in GemmEpilogue e)
    {
        const string op = "MatMul";
        int tilesM = (m + plan.BM - 1) / plan.BM, tilesN = (n + plan.BN - 1) / plan.BN;
        long tiles = (long)tilesM * tilesN;
        if (tiles > int.MaxValue)
            throw new ShapeException(op, $"{m}×{n} outputs need {tiles} tiles of {plan.BM}×{plan.BN}, more than one launch holds");
        return new GemmArgs
        {
            M = m, N = n, K = k, TilesM = tilesM, TilesN = tilesN,
            OffsetA = aLayout.Offset, OffsetB = bLayout.Offset,
            BatchStrideA = batch > 1 ? aLayout.Strides[0] : 0, BatchStrideB = batch > 1 ? bLayout.Strides[0] : 0,
            StrideAm = aLayout.Strides[1], StrideAk = aLayout.Strides[2],
            StrideBk = bLayout.Strides[1], StrideBn = bLayout.Strides[2],
            DType = (int)dt,
            Bias = e.Bias is null ? 0 : 1, Pre = e.Pre is null ? 0 : 1, Activation = (int)e.Activation,
        };
    }

    void Launch(GemmPlan plan, GemmKernel entry, GemmArgs args, ArrayView<byte> av, ArrayView<byte> bv, ArrayView<byte> yv,
        ArrayView<byte> biasV, ArrayView<byte> preV, int batch)
    {
        // ILGPU's CPU accelerator gets the kernel whose warp instructions are emulated (Gemm/WarpMma.cs); a GPU's
        // tensor-core kernels are loaded from their PTX after the operand-slot rewrite (PtxDepots).
        var kernel = Kernel("Gemm", entry.Key, acc => plan.Family == GemmFamily.Half && !IsEmulated ? LoadPromoted(acc, entry) : acc.LoadStreamKernel(entry.Kernel));
        int tiles = args.TilesM * args.TilesN;
        // Grid y counts batches; CUDA caps it at 65535, so larger batches take several launches.
        const int maxGridY = 65535;
        for (int b0 = 0; b0 < batch; b0 += maxGridY)
        {
            args.BatchStart = b0;
            int nb = Math.Min(maxGridY, batch - b0);
            kernel(new KernelConfig(new Index2D(tiles, nb), new Index2D(plan.Threads, 1)), args, av, bv, yv, biasV, preV);
        }
    }

    /// <summary>
    /// The tensor-core GEMM (Gemm/MmaGemm.cs) copies 16-byte chunks along each operand's contiguous dim, so each operand
    /// must be contiguous along k or along its other dim, with the other stride, the offset and the batch stride
    /// multiples of 8 elements and a 16-byte aligned buffer. An operand that is not (a general strided view, rows of
    /// odd length) is first packed into a temporary [batch, rows, k] buffer with k contiguous and rows padded to a
    /// multiple of 8 (one Copy launch, O(rows·k) against the product's O(m·n·k); counted as part of the MatMul).
    /// The padding is never read: the kernel's copies stop at k.
    /// </summary>
    void MatMulTensorCore(GemmPlan plan, Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k, in GemmEpilogue e)
    {
        var dt = a.DType;
        var av = V(a); var bv = V(b); var yv = V(y);
        long pa = Address(av), pb = Address(bv), py = Address(yv);
        var packed = new List<Storage>(2);
        try
        {
            int aT = MmaOperand(aLayout.Strides[1], aLayout.Strides[2], m, k, aLayout.Offset, batch > 1 ? aLayout.Strides[0] : 0, pa);
            if (aT < 0)
            {
                (a, aLayout) = Pack(a, aLayout, batch, m, k, packed);
                av = V(a); pa = Address(av); aT = 0;
            }
            // b is [k, n]: its "rows" are n.
            int bK = MmaOperand(bLayout.Strides[2], bLayout.Strides[1], n, k, bLayout.Offset, batch > 1 ? bLayout.Strides[0] : 0, pb);
            if (bK < 0)
            {
                var bt = new Layout([bLayout.Shape[0], bLayout.Shape[2], bLayout.Shape[1]], [bLayout.Strides[0], bLayout.Strides[2], bLayout.Strides[1]], bLayout.Offset);
                var (pbs, pl) = Pack(b, bt, batch, n, k, packed);
                (b, bLayout) = (pbs, new Layout([pl.Shape[0], pl.Shape[2], pl.Shape[1]], [pl.Strides[0], pl.Strides[2], pl.Strides[1]], pl.Offset));
                bv = V(b); pb = Address(bv); bK = 0;
            }
            // The bias is staged by 16-byte cp.async copies: a GPU needs its address aligned (a fresh buffer always is).
            var biasS = e.Bias;
            if (biasS is not null && !IsEmulated && Address(V(biasS)) % 16 != 0)
            {
                var (aligned, _) = Pack(biasS, new Layout([1, 1, n], [0, n, 1], 0), 1, 1, n, packed);
                biasS = aligned;
            }
            var args = Args(plan, aLayout, bLayout, batch, m, n, k, dt, e);
            var biasV = biasS is null ? yv : V(biasS);
            var preV = e.Pre is null ? yv : V(e.Pre);
            long pp = e.Pre is null ? py : Address(preV);
            args.PtrA = pa; args.PtrB = pb; args.PtrY = py; args.PtrPre = pp; args.PtrBias = Address(biasV);
            args.VectorY = n % 8 == 0 && (IsEmulated || py % 16 == 0 && pp % 16 == 0) ? 1 : 0;
            Launch(plan, plan.For(dt, IsEmulated, 2 * aT + bK), args, av, bv, yv, biasV, preV, batch);
        }
        finally
        {
            foreach (var p in packed) p.Release();
        }

    }

    /// <summary>
    /// How a tensor-core operand lies for the 16-byte copies: 0 contiguous along k, 1 along its other dim ("rows": m
    /// for a, n for b), −1 neither, or misaligned (then it is packed first).
    /// </summary>
    int MmaOperand(long strideRows, long strideK, int rows, int depth, long offset, long batchStride, long address)
    {
        if (offset % 8 != 0 || batchStride % 8 != 0 || !IsEmulated && address % 16 != 0) return -1;
        if ((strideK == 1 || depth == 1) && (rows == 1 || strideRows % 8 == 0)) return 0;
        if ((strideRows == 1 || rows == 1) && (depth == 1 || strideK % 8 == 0)) return 1;
        return -1;
    }

    /// <summary>
    /// Loads a cp.async kernel the way <c>LoadStreamKernel</c> does (the accelerator's own PTX backend, no
    /// specialization, the default stream) but from its PTX with ILGPU's inline-asm operand slots turned into registers:
    /// ptxas promotes no local memory in a function that issues cp.async (see <see cref="PtxDepots"/>), and every mma
    /// would otherwise go through local memory.
    /// </summary>
    static Action<KernelConfig, GroupedGemmArgs, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>> LoadPromoted(
        Accelerator acc, GroupedGemmKernel entry)
    {
        var backend = ((CudaAccelerator)acc).Backend;
        var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(entry.Method), KernelSpecialization.Empty);
        var kernel = acc.LoadKernel(PtxCompiler.Promote(compiled));
        var launch = kernel.CreateLauncherDelegate<Action<AcceleratorStream, KernelConfig, GroupedGemmArgs, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>>>();
        return (config, g, a0, b0, y0, a1, b1, y1) =>
        {
            launch(acc.DefaultStream, config, g, a0, b0, y0, a1, b1, y1);
            GC.KeepAlive(kernel);
        };
    }

    /// <inheritdoc cref="LoadPromoted(Accelerator, GroupedGemmKernel)"/>
    static Action<KernelConfig, GemmArgs, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>> LoadPromoted(Accelerator acc, GemmKernel entry)
    {
        var backend = ((CudaAccelerator)acc).Backend;
        var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(entry.Method), KernelSpecialization.Empty);
        var kernel = acc.LoadKernel(PtxCompiler.Promote(compiled));
        var launch = kernel.CreateLauncherDelegate<Action<AcceleratorStream, KernelConfig, GemmArgs, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>>>();
        return (config, g, a, b, y, bias, pre) =>
        {
            launch(acc.DefaultStream, config, g, a, b, y, bias, pre);
            GC.KeepAlive(kernel); // the delegate's module lives as long as the launcher
        };
    }

    // The view's device address (the emulator's views are host memory; the emulated kernel never reads the address).
    static long Address(ArrayView<byte> v) => v.Length == 0 ? 0 : (long)v.LoadEffectiveAddressAsPtr();

    /// <summary>Copies [batch, rows, k] (batch stride 0: one matrix) into a fresh buffer with k contiguous and rows padded to 8.</summary>
    (Storage, Layout) Pack(Storage x, Layout layout, int batch, int rows, int k, List<Storage> owned)
    {
        int nb = batch > 1 && layout.Strides[0] != 0 ? batch : 1;
        long pitch = (k + 7) / 8 * 8;
        var tmp = Allocate(Device, x.DType, nb * rows * pitch);
        tmp.AddRef();
        owned.Add(tmp);
        var src = new Layout([nb, rows, k], [nb > 1 ? layout.Strides[0] : 0, layout.Strides[1], layout.Strides[2]], layout.Offset);
        var dst = new Layout([nb, rows, k], [nb > 1 ? rows * pitch : 0, pitch, 1], 0);
        Copy(x, src, tmp, dst);
        return (tmp, new Layout([batch, rows, k], [nb > 1 ? rows * pitch : 0, pitch, 1], 0));
    }

    // Integer GEMM, rare on a GPU: exact through float64 while sums stay below 2^53, the CPU backend's rule.
    void MatMulThroughFloat64(Storage a, Layout aLayout, Storage b, Layout bLayout, Storage y, int batch, int m, int n, int k)
    {
        var aw = Allocate(Device, DType.Float64, (long)batch * m * k);
        var bw = Allocate(Device, DType.Float64, (long)batch * k * n);
        var yw = Allocate(Device, DType.Float64, (long)batch * m * n);
        aw.AddRef(); bw.AddRef(); yw.AddRef();
        try
        {
            var al = Layout.Contiguous([batch, m, k]);
            var bl = Layout.Contiguous([batch, k, n]);
            var yl = Layout.Contiguous([batch, m, n]);
            Copy(a, aLayout, aw, al);
            Copy(b, bLayout, bw, bl);
            MatMul(aw, al, bw, bl, yw, batch, m, n, k);
            Copy(yw, yl, y, yl);
        }
        finally { aw.Release(); bw.Release(); yw.Release(); }
    }
}

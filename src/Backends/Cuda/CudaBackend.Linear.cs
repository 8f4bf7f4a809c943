using Engine.Backends.Cuda.Gemm;
using Engine.Backends.Cuda.Kernels;
using Engine.Ops;
using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

/// <summary>The fused Linear's store epilogue for one GEMM launch: default (all null/None) for a plain MatMul.</summary>
readonly record struct GemmEpilogue(Storage? Bias, Storage? Pre, Activation Activation);

// The fused linear layer: the GEMM (Gemm/SimtGemm.cs for float32/float64, Gemm/MmaGemm.cs for the half types) with
// the bias, the pre-activation store and the activation in its store epilogue, one device launch (float64 GELUs: a
// second, see GemmActivation); and the backward's
// dz = dy·act′ and bias gradient in one kernel (Kernels/LinearKernels.cs; with ColumnFinish adding the row blocks'
// partial sums when there are several, the scheme of LayerNorm's column sums); and both products of the backward,
// dx = dz·w and dw = dzᵀ·x, in one grouped GEMM launch (Gemm/SimtGemm.cs and Gemm/MmaGemm.cs, Grouped).
public sealed partial class CudaBackend
{
    /// <inheritdoc cref="IBackend.Linear"/>
    public void Linear(Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? bias, Storage y, Storage? pre, int m, int n, int k, Activation activation)
    {
        const string op = nameof(Linear);
        ContractChecks.Linear(op, xLayout, wLayout, m, n, k);
        ContractChecks.SameDType(op, x, w, y);
        ContractChecks.Floating(op, x.DType);
        if (m == 0 || n == 0) return;
        // y = x·wᵀ: a is x [m, k], b is w read transposed in place, b(p, j) = w(j, p).
        var a3 = new Layout([1, m, k], [0, xLayout.Strides[0], xLayout.Strides[1]], xLayout.Offset);
        var b3 = new Layout([1, k, n], [0, wLayout.Strides[1], wLayout.Strides[0]], wLayout.Offset);
        if (x.DType == DType.Float64 && !GemmActivation.InFloat64Epilogue(activation))
        {
            // float64 GELUs: the GEMM stores z (and pre), then the activation in place, a second device launch.
            Gemm(x, a3, w, b3, y, 1, m, n, k, new GemmEpilogue(bias, pre, Activation.None));
            var mat = Layout.Contiguous([m, n]);
            if (activation == Activation.Gelu) Unary(new GeluOp(), y, mat, y, mat);
            else Unary(new GeluTanhOp(), y, mat, y, mat);
            return;
        }
        Gemm(x, a3, w, b3, y, 1, m, n, k, new GemmEpilogue(bias, pre, activation));
    }

    /// <summary>Grouped GEMM launches so far (both products of a Linear's backward in one kernel): what the tests count.</summary>
    internal long GroupedGemmLaunches => Interlocked.Read(ref _groupedGemmLaunches);

    long _groupedGemmLaunches;

    /// <inheritdoc cref="IBackend.LinearGradients"/>
    public void LinearGradients(Storage dz, Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? dx, Storage? dw, int m, int n, int k)
    {
        const string op = nameof(LinearGradients);
        ContractChecks.LinearGradients(op, dz, x, xLayout, w, wLayout, dx, dw, m, n, k);
        bool wantX = dx is not null && m > 0 && k > 0, wantW = dw is not null && n > 0 && k > 0;
        // An empty inner size leaves zeros.
        if (wantX && n == 0) { Fill(dx!, Layout.Contiguous([m, k]), 0); wantX = false; }
        if (wantW && m == 0) { Fill(dw!, Layout.Contiguous([n, k]), 0); wantW = false; }
        if (!wantX && !wantW) return;
        // dx = dz·w: a is dz [m, n] row-major, b is w [n, k] as it lies. dw = dzᵀ·x: a is dz read transposed, b is x.
        var dxA = new Layout([1, m, n], [0, n, 1], 0);
        var dxB = new Layout([1, n, k], [0, wLayout.Strides[0], wLayout.Strides[1]], wLayout.Offset);
        var dwA = new Layout([1, n, m], [0, 1, n], 0);
        var dwB = new Layout([1, m, k], [0, xLayout.Strides[0], xLayout.Strides[1]], xLayout.Offset);
        var dt = dz.DType;
        if (dt is DType.Float32 or DType.Float64)
        {
            if (wantX && wantW) GemmGrouped(dz, dxA, w, dxB, dx!, m, k, n, dz, dwA, x, dwB, dw!, n, k, m);
            else if (wantX) Gemm(dz, dxA, w, dxB, dx!, 1, m, k, n, default);
            else Gemm(dz, dwA, x, dwB, dw!, 1, n, k, m, default);
            return;
        }
        // 16-bit operands: one grouped tensor-core launch when the operands lie as a Linear's do (dz, w and x
        // contiguous along their rows, 16-byte aligned: layouts NN and TN), the float32 or half dw straight from the
        // accumulators; otherwise one tensor-core GEMM per product, below.
        if (wantX && wantW && TryGroupedTensorCore(dz, dxA, w, dxB, dx!, dwA, x, dwB, dw!, m, n, k)) return;
        // A Float32 dw (the master weight's gradient) then runs the float32 SIMT GEMM on exact float32 widenings of dz
        // and x, so that it is the float32 sum of the exact products, never rounded to 16 bits.
        if (wantX) Gemm(dz, dxA, w, dxB, dx!, 1, m, k, n, default);
        if (!wantW) return;
        if (dw!.DType == dt)
        {
            Gemm(dz, dwA, x, dwB, dw, 1, n, k, m, default);
            return;
        }
        var zf = Allocate(Device, DType.Float32, (long)m * n);
        var xf = Allocate(Device, DType.Float32, (long)m * k);
        zf.AddRef(); xf.AddRef();
        try
        {
            Copy(dz, Layout.Contiguous([m, n]), zf, Layout.Contiguous([m, n]));
            Copy(x, xLayout, xf, Layout.Contiguous([m, k]));
            Gemm(zf, dwA, xf, new Layout([1, m, k], [0, k, 1], 0), dw, 1, n, k, m, default);
        }
        finally { zf.Release(); xf.Release(); }
    }

    /// <summary>
    /// Two float32 or float64 GEMMs (batch 1, no epilogue) in one launch of the SIMT kernel's grouped entry
    /// (SimtGemm.Grouped): the first problem's tiles, then the second's, each with its own strides and coalescing.
    /// </summary>
    void GemmGrouped(Storage a0, Layout a0l, Storage b0, Layout b0l, Storage y0, int m0, int n0, int k0,
        Storage a1, Layout a1l, Storage b1, Layout b1l, Storage y1, int m1, int n1, int k1)
    {
        const string op = "LinearGradients";
        var dt = a0.DType;
        var plan = GemmPlanOverride is { } forced && GemmPlans.Named(forced) is var p && p.Serves(dt)
            ? p
            : GemmPlans.ChooseGrouped(dt, m0, n0, m1, n1, Accelerator.MaxNumThreadsPerGroup, Accelerator.NumMultiprocessors);
        if (plan.EmulatorOnly && !IsEmulated)
            throw new EngineException(op, $"the {plan.Name} tiling runs on the emulator only; {Device} is a GPU");
        if (plan.Threads > Accelerator.MaxNumThreadsPerGroup)
            throw new EngineException(op, $"the {plan.Name} tiling needs {plan.Threads} threads per group; {Device} runs at most {Accelerator.MaxNumThreadsPerGroup}");
        var entry = plan.Grouped ?? throw new EngineException(op, $"the {plan.Name} tiling has no grouped kernel");
        var g = new GroupedGemmArgs { First = SimtArgs(plan, a0l, b0l, m0, n0, k0, dt), Second = SimtArgs(plan, a1l, b1l, m1, n1, k1, dt) };
        VectorRuns(ref g.First, Address(V(a0)), Address(V(b0)), 1, IsEmulated);
        VectorRuns(ref g.Second, Address(V(a1)), Address(V(b1)), 1, IsEmulated);
        g.FirstTiles = g.First.TilesM * g.First.TilesN;
        long tiles = (long)g.FirstTiles + (long)g.Second.TilesM * g.Second.TilesN;
        if (tiles > int.MaxValue)
            throw new ShapeException(op, $"{m0}×{n0} and {m1}×{n1} outputs need {tiles} tiles of {plan.BM}×{plan.BN}, more than one launch holds");
        var kernel = Kernel("GemmGrouped", entry.Key, acc => acc.LoadStreamKernel(entry.Kernel));
        kernel(new KernelConfig(new Index2D((int)tiles, 1), new Index2D(plan.Threads, 1)), g, V(a0), V(b0), V(y0), V(a1), V(b1), V(y1));
        Interlocked.Increment(ref _groupedGemmLaunches);
    }

    /// <summary>
    /// Both products of 16-bit operands in one launch of the tensor-core kernel's grouped entry (MmaGemm.Grouped): dx
    /// = dz·w in layout NN and dw = dzᵀ·x in TN (the second stored as float32 when dw is Float32). False, launching
    /// nothing, when an operand does not lie that way (then each product runs alone, packing what it must).
    /// </summary>
    bool TryGroupedTensorCore(Storage dz, Layout dxA, Storage w, Layout dxB, Storage dx, Layout dwA, Storage x, Layout dwB, Storage dw, int m, int n, int k)
    {
        const string op = "LinearGradients";
        var dt = dz.DType;
        var zv = V(dz); var wv = V(w); var xv = V(x); var dxv = V(dx); var dwv = V(dw);
        long pz = Address(zv), pw = Address(wv), px = Address(xv);
        // dx: a = dz along k (its rows n apart), b = w along n; dw: a = dzᵀ along m, b = x along n.
        if (MmaOperand(dxA.Strides[1], dxA.Strides[2], m, n, dxA.Offset, 0, pz) != 0
            || MmaOperand(dxB.Strides[2], dxB.Strides[1], k, n, dxB.Offset, 0, pw) != 1
            || MmaOperand(dwA.Strides[1], dwA.Strides[2], n, m, dwA.Offset, 0, pz) != 1
            || MmaOperand(dwB.Strides[2], dwB.Strides[1], k, m, dwB.Offset, 0, px) != 1)
            return false;
        var plan = GemmPlanOverride is { } forced && GemmPlans.Named(forced) is var p && p.Serves(dt)
            ? p
            : GemmPlans.ChooseGrouped(dt, m, k, n, k, Accelerator.MaxNumThreadsPerGroup, Accelerator.NumMultiprocessors);
        if (plan.EmulatorOnly && !IsEmulated)
            throw new EngineException(op, $"the {plan.Name} tiling runs on the emulator only; {Device} is a GPU");
        if (plan.Threads > Accelerator.MaxNumThreadsPerGroup)
            throw new EngineException(op, $"the {plan.Name} tiling needs {plan.Threads} threads per group; {Device} runs at most {Accelerator.MaxNumThreadsPerGroup}");
        bool f32 = dw.DType == DType.Float32;
        // ptxas (sm_90) spills 8 bytes in the bf16 variant that stores both products in bf16 (the f16 and float32-dw
        // variants do not): until its epilogue is slimmed, a GPU runs that case as two single GEMMs. The emulator
        // still runs the grouped kernel, so its tiling stays tested (LinearGradientsTests).
        if (!IsEmulated && dt == DType.BFloat16 && !f32) return false;
        var g = new GroupedGemmArgs { First = Args(plan, dxA, dxB, 1, m, k, n, dt, default), Second = Args(plan, dwA, dwB, 1, n, k, m, dt, default) };
        long pdx = Address(dxv), pdw = Address(dwv);
        g.First.PtrA = pz; g.First.PtrB = pw; g.First.PtrY = pdx; g.First.PtrPre = pdx; g.First.PtrBias = pdx;
        g.First.VectorY = k % 8 == 0 && (IsEmulated || pdx % 16 == 0) ? 1 : 0;
        g.Second.PtrA = pz; g.Second.PtrB = px; g.Second.PtrY = pdw; g.Second.PtrPre = pdw; g.Second.PtrBias = pdw;
        g.Second.VectorY = !f32 && k % 8 == 0 && (IsEmulated || pdw % 16 == 0) ? 1 : 0;
        g.FirstTiles = g.First.TilesM * g.First.TilesN;
        long tiles = (long)g.FirstTiles + (long)g.Second.TilesM * g.Second.TilesN;
        if (tiles > int.MaxValue)
            throw new ShapeException(op, $"{m}×{k} and {n}×{k} outputs need {tiles} tiles of {plan.BM}×{plan.BN}, more than one launch holds");
        var entry = plan.GroupedFor(dt, IsEmulated, f32);
        var kernel = Kernel(f32 ? "GemmGroupedF32" : "GemmGrouped", entry.Key, acc => IsEmulated ? acc.LoadStreamKernel(entry.Kernel) : LoadPromoted(acc, entry));
        kernel(new KernelConfig(new Index2D((int)tiles, 1), new Index2D(plan.Threads, 1)), g, zv, wv, dxv, zv, xv, dwv);
        Interlocked.Increment(ref _groupedGemmLaunches);
        return true;
    }

    // One problem of a grouped launch: the single GEMM's arguments and coalescing choice (CudaBackend.MatMul.cs).
    static GemmArgs SimtArgs(GemmPlan plan, Layout aLayout, Layout bLayout, int m, int n, int k, DType dt)
    {
        var args = Args(plan, aLayout, bLayout, 1, m, n, k, dt, default);
        args.AAlongM = m > 1 && (k == 1 || Math.Abs(aLayout.Strides[1]) < Math.Abs(aLayout.Strides[2])) ? 1 : 0;
        args.BAlongN = n > 1 && (k == 1 || Math.Abs(bLayout.Strides[2]) < Math.Abs(bLayout.Strides[1])) ? 1 : 0;
        return args;
    }

    /// <inheritdoc cref="IBackend.LinearBackward"/>
    public void LinearBackward(Storage dy, Storage? saved, Storage? dz, Storage? dBias, int m, int n, Activation activation)
    {
        const string op = nameof(LinearBackward);
        ContractChecks.Floating(op, dy.DType);
        if (dBias is not null && dBias.DType != dy.DType && !(dBias.DType == DType.Float32 && dy.DType is DType.BFloat16 or DType.Float16))
            throw new DTypeException(op, $"dBias {dBias.DType.Name()} must be {dy.DType.Name()} or, for 16-bit dy, float32 (a contract violation)");
        if (activation != Activation.None && (saved is null || dz is null))
            throw new EngineException(op, $"{activation} needs the saved activation and dz (a contract violation)");
        if (n == 0 || activation == Activation.None && dBias is null) return;
        if (m == 0)
        {
            if (dBias is not null) Fill(dBias, Layout.Contiguous([n]), 0);
            return;
        }
        // Blocks of rows give partial bias sums that ColumnFinish adds in block order (LayerNorm's scheme): enough
        // threads for a GPU at GPT widths, and sums that depend only on the shape.
        int blocks = RowKernels.ColumnBlocks(m, n);
        var c = new ColumnArgs
        {
            Rows = m, Cols = n, Type = (int)dy.DType, Blocks = blocks, PerBlock = (m + blocks - 1) / blocks, ByCols = FastDivisor.Of(n),
            Flags = dBias is null ? 0 : RowKernels.HasBias,
        };
        var dyv = V(dy);
        var sv = saved is null ? dyv : V(saved);
        var dzv = dz is null ? dyv : V(dz);
        var dbv = dBias is null ? dyv : V(dBias);
        var width = WidthOf(dy.DType);
        var kernel = Kernel("LinearBackward", width, a => a.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ColumnArgs, int, int>(
            dy.DType == DType.Float64 ? LinearKernels.Backward<Wide> : LinearKernels.Backward<Narrow>));
        int dbType = (int)(dBias ?? dy).DType;
        if (blocks == 1 || dBias is null)
        {
            kernel(Grid((long)blocks * n), dyv, sv, dzv, dyv, dbv, c, (int)activation, dbType);
            return;
        }
        var scratch = Allocate(Device, dy.DType == DType.Float64 ? DType.Float64 : DType.Float32, 2L * blocks * n);
        scratch.AddRef();
        try
        {
            kernel(Grid((long)blocks * n), dyv, sv, dzv, V(scratch), dbv, c, (int)activation, dbType);
            // ColumnFinish stores in its Type: the bias gradient's (Float32 for a float32 master bias of a 16-bit dy).
            Kernel("ColumnFinish", width, k => k.LoadStreamKernel<ArrayView<byte>, ArrayView<byte>, ArrayView<byte>, ColumnArgs>(dy.DType == DType.Float64 ? RowKernels.ColumnFinish<Wide> : RowKernels.ColumnFinish<Narrow>))
                (Grid(n), V(scratch), dbv, dbv, c with { Type = dbType });
        }
        finally
        {
            // Back to the pool; stream order keeps the queued kernels' reads ahead of any reuse.
            scratch.Release();
        }
    }
}

using Engine.Backends.Cpu.Gemm;
using Engine.Ops;

namespace Engine.Backends.Cpu;

// The fused linear layer: one GEMM whose store epilogue adds the bias and applies the activation block by block
// (GemmEpilogue), and a one-pass backward for dz = dy·act′ and the bias gradient.
public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc cref="IBackend.Linear"/>
    public void Linear(Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? bias, Storage y, Storage? pre, int m, int n, int k, Activation activation)
    {
        const string op = nameof(Linear);
        ContractChecks.Linear(op, xLayout, wLayout, m, n, k);
        ContractChecks.SameDType(op, x, w, y);
        ContractChecks.Floating(op, x.DType);
        if (m == 0 || n == 0) return;
        var dtype = x.DType;
        if (dtype == DType.Float32 || dtype == DType.Float64)
        {
            var e = new GemmEpilogue { Bias = bias is null ? null : (void*)P(bias), Pre = pre is null ? null : (void*)P(pre), Activation = activation };
            // y = x·wᵀ: B is w read transposed, B(k, j) = w(j, k).
            if (dtype == DType.Float32)
                Sgemm.GemmWithEpilogue(1, m, n, k, (float*)P(x), [xLayout.Offset], xLayout.Strides[0], xLayout.Strides[1],
                    (float*)P(w), [wLayout.Offset], wLayout.Strides[1], wLayout.Strides[0],
                    (float*)P(y), [0], n, accumulate: false, CpuParallel.MaxThreads, e);
            else
                Dgemm.GemmWithEpilogue(1, m, n, k, (double*)P(x), [xLayout.Offset], xLayout.Strides[0], xLayout.Strides[1],
                    (double*)P(w), [wLayout.Offset], wLayout.Strides[1], wLayout.Strides[0],
                    (double*)P(y), [0], n, accumulate: false, CpuParallel.MaxThreads, e);
            return;
        }
        // Half types: the float32 GEMM widens x and w while packing and rounds each finished block once, after the
        // epilogue (bias and pre-activation in the half type), as MatMul's half path.
        if (!Sgemm.PrefersCopies(m, n, k))
        {
            var kind = dtype == DType.BFloat16 ? GemmElement.BFloat16 : GemmElement.Float16;
            var e16 = new GemmEpilogue { Bias = bias is null ? null : (void*)P(bias), Pre = pre is null ? null : (void*)P(pre), Activation = activation };
            Sgemm.GemmWidening(1, m, n, k, (void*)P(x), kind, [xLayout.Offset], xLayout.Strides[0], xLayout.Strides[1],
                (void*)P(w), kind, [wLayout.Offset], wLayout.Strides[1], wLayout.Strides[0],
                (void*)P(y), kind, [0], n, accumulate: false, CpuParallel.MaxThreads, e16);
            return;
        }
        // Small products: widen the operands to float32 copies (uncounted: part of this one kernel) for the GEMM's
        // direct paths, run the fused float32 GEMM, round once on store.
        var dev = x.Device;
        var xw = Allocate(dev, DType.Float32, (long)m * k);
        var ww = Allocate(dev, DType.Float32, (long)n * k);
        var bw = bias is null ? null : Allocate(dev, DType.Float32, n);
        var yw = Allocate(dev, DType.Float32, (long)m * n);
        var pw = pre is null ? null : Allocate(dev, DType.Float32, (long)m * n);
        xw.AddRef(); ww.AddRef(); bw?.AddRef(); yw.AddRef(); pw?.AddRef();
        try
        {
            var xl = Layout.Contiguous([m, k]);
            var wl = Layout.Contiguous([n, k]);
            var yl = Layout.Contiguous([m, n]);
            CopyUncounted(x, xLayout, xw, xl);
            CopyUncounted(w, wLayout, ww, wl);
            if (bias is not null) CopyUncounted(bias, Layout.Contiguous([n]), bw!, Layout.Contiguous([n]));
            Linear(xw, xl, ww, wl, bw, yw, pw, m, n, k, activation);
            CopyUncounted(yw, yl, y, yl);
            if (pre is not null) CopyUncounted(pw!, yl, pre, yl);
        }
        finally { xw.Release(); ww.Release(); bw?.Release(); yw.Release(); pw?.Release(); }
    }

    /// <inheritdoc cref="IBackend.LinearGradients"/>
    public void LinearGradients(Storage dz, Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? dx, Storage? dw, int m, int n, int k)
    {
        const string op = nameof(LinearGradients);
        ContractChecks.LinearGradients(op, dz, x, xLayout, w, wLayout, dx, dw, m, n, k);
        // Each product as one GEMM call with its operands' strides (dzᵀ is dz read column-major): dx = dz·w, with
        // B(p, j) = w(p, j); dw = dzᵀ·x. An empty inner size leaves zeros.
        if (dx is not null && m > 0 && k > 0)
        {
            if (n == 0) System.Runtime.InteropServices.NativeMemory.Clear((void*)P(dx), (nuint)((long)m * k * dx.DType.ElementSize()));
            else Gemm2(dz, 0, n, 1, w, wLayout.Offset, wLayout.Strides[0], wLayout.Strides[1], dx, m, k, n);
        }
        if (dw is null || n == 0 || k == 0) return;
        if (m == 0) System.Runtime.InteropServices.NativeMemory.Clear((void*)P(dw), (nuint)((long)n * k * dw.DType.ElementSize()));
        else Gemm2(dz, 0, 1, n, x, xLayout.Offset, xLayout.Strides[0], xLayout.Strides[1], dw, n, k, m);
    }

    // c [rows, cols] (contiguous, of its own dtype) = a·b for a [rows, depth] and b [depth, cols] at the given offsets
    // and strides, a and b of one dtype. Float32 and float64 run their GEMMs; 16-bit operands the widening float32 GEMM
    // (exact products, float32 sums), whose C is either their type (rounded once) or float32 (not rounded).
    void Gemm2(Storage a, long aOff, long aRs, long aCs, Storage b, long bOff, long bRs, long bCs, Storage c, int rows, int cols, int depth)
    {
        switch (a.DType)
        {
            case DType.Float32:
                Sgemm.Gemm(1, rows, cols, depth, (float*)P(a), [aOff], aRs, aCs, (float*)P(b), [bOff], bRs, bCs, (float*)P(c), [0], cols,
                    accumulate: false, CpuParallel.MaxThreads);
                break;
            case DType.Float64:
                Dgemm.Gemm(1, rows, cols, depth, (double*)P(a), [aOff], aRs, aCs, (double*)P(b), [bOff], bRs, bCs, (double*)P(c), [0], cols,
                    accumulate: false, CpuParallel.MaxThreads);
                break;
            default:
                var kind = a.DType == DType.BFloat16 ? GemmElement.BFloat16 : GemmElement.Float16;
                var ck = c.DType == DType.Float32 ? GemmElement.Float32 : kind;
                Sgemm.GemmWidening(1, rows, cols, depth, (void*)P(a), kind, [aOff], aRs, aCs, (void*)P(b), kind, [bOff], bRs, bCs,
                    (void*)P(c), ck, [0], cols, accumulate: false, CpuParallel.MaxThreads, default);
                break;
        }
    }

    /// <inheritdoc cref="IBackend.LinearBackward"/>
    public void LinearBackward(Storage dy, Storage? saved, Storage? dz, Storage? dBias, int m, int n, Activation activation)
    {
        ContractChecks.Floating(nameof(LinearBackward), dy.DType);
        if (dBias is not null && dBias.DType != dy.DType && !(dBias.DType == DType.Float32 && dy.DType is DType.BFloat16 or DType.Float16))
            throw new DTypeException(nameof(LinearBackward), $"dBias {dBias.DType.Name()} must be {dy.DType.Name()} or, for 16-bit dy, float32 (a contract violation)");
        if (activation != Activation.None && (saved is null || dz is null))
            throw new EngineException(nameof(LinearBackward), $"{activation} needs the saved activation and dz (a contract violation)");
        if (n == 0 || activation == Activation.None && dBias is null) return;
        var v = new LinearBackwardVisitor
        {
            DY = P(dy), Saved = saved is null ? 0 : P(saved), DZ = dz is null ? 0 : P(dz), DB = dBias is null ? 0 : P(dBias),
            M = m, N = n, Activation = activation, DbFloat32 = dBias is not null && dBias.DType != dy.DType,
        };
        DTypeDispatch.Visit(dy.DType, ref v);
    }

    struct LinearBackwardVisitor : IDTypeVisitor
    {
        public nint DY, Saved, DZ, DB; public int M, N; public Activation Activation; public bool DbFloat32;
        public readonly void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>
        {
            switch (Activation)
            {
                case Activation.Relu: LinearBackwardKernel<T, TE, ReluOp>(DY, Saved, DZ, DB, M, N, true, DbFloat32); break;
                case Activation.Gelu: LinearBackwardKernel<T, TE, GeluOp>(DY, Saved, DZ, DB, M, N, true, DbFloat32); break;
                case Activation.GeluTanh: LinearBackwardKernel<T, TE, GeluTanhOp>(DY, Saved, DZ, DB, M, N, true, DbFloat32); break;
                default: LinearBackwardKernel<T, TE, ReluOp>(DY, 0, 0, DB, M, N, false, DbFloat32); break;
            }
        }
    }

    // Two passes, each over contiguous memory: dz = dy·act′ by row ranges (as the elementwise kernels), then the bias
    // sums by column blocks, each block walking every row in order, so dz and the sums (float64 accumulators) do not
    // depend on the thread count. (One pass by column blocks, writing dz 64 columns per row, ran about 20 times
    // slower than the elementwise backward.) Float32 and half math in float32, float64 in float64.
    const int LinearColumnBlock = 64;
    const int HalfChunk = 2048;

    static void LinearBackwardKernel<T, TE, TOp>(nint dyP, nint savedP, nint dzP, nint dbP, int m, int n, bool act, bool dbFloat32)
        where T : unmanaged where TE : struct, IElement<T> where TOp : struct, IDifferentiableUnaryOp
    {
        long total = (long)m * n;
        if (act)
        {
            CpuParallel.For(total, 1L << 14, (s, e) =>
            {
                T* dy = (T*)dyP, sv = (T*)savedP, dz = (T*)dzP;
                var op = default(TOp);
                if (typeof(T) == typeof(double))
                    for (long i = s; i < e; i++) dz[i] = TE.FromDouble(TE.ToDouble(dy[i]) * op.Derivative(TE.ToDouble(sv[i])));
                // Float32 takes the op's vectorized dy·f′(x) where it has one, as the unfused UnaryGradOp does; 16-bit
                // types the same on widened chunks, rounded once.
                else if ((typeof(T) == typeof(BFloat16) || typeof(T) == typeof(Half)) && op.TryBackward(default, default, default))
                {
                    Span<float> bx = stackalloc float[HalfChunk], bg = stackalloc float[HalfChunk];
                    for (long i = s; i < e; i += HalfChunk)
                    {
                        int len = (int)Math.Min(HalfChunk, e - i);
                        var px = bx[..len]; var pg = bg[..len];
                        Kernels.ElementwiseKernels.Widen(sv + i, px);
                        Kernels.ElementwiseKernels.Widen(dy + i, pg);
                        op.TryBackward(px, pg, pg);
                        Kernels.ElementwiseKernels.Narrow(pg, dz + i);
                    }
                }
                else if (typeof(T) != typeof(float) || e - s > int.MaxValue
                    || !op.TryBackward(new ReadOnlySpan<float>((float*)sv + s, (int)(e - s)), new ReadOnlySpan<float>((float*)dy + s, (int)(e - s)), new Span<float>((float*)dz + s, (int)(e - s))))
                    for (long i = s; i < e; i++) dz[i] = TE.FromFloat(TE.ToFloat(dy[i]) * op.Derivative(TE.ToFloat(sv[i])));
            });
        }
        if (dbP == 0) return;
        // The bias gradient sums the stored dz (what the weight GEMMs read), as the composite does.
        nint src = act ? dzP : dyP;
        int blocks = (n + LinearColumnBlock - 1) / LinearColumnBlock;
        long grain = Math.Max(1, (1L << 15) / Math.Max(1L, (long)m * LinearColumnBlock));
        CpuParallel.For(blocks, grain, (s, e) =>
        {
            T* g = (T*)src, db = (T*)dbP;
            Span<double> acc = stackalloc double[LinearColumnBlock];
            for (long blk = s; blk < e; blk++)
            {
                int j0 = (int)blk * LinearColumnBlock, cols = Math.Min(LinearColumnBlock, n - j0);
                acc.Clear();
                for (int i = 0; i < m; i++)
                {
                    long at = (long)i * n + j0;
                    for (int j = 0; j < cols; j++) acc[j] += TE.ToDouble(g[at + j]);
                }
                // A Float32 bias gradient of a 16-bit dy (the master bias's, IBackend.LinearBackward) is not rounded to 16 bits.
                if (dbFloat32) for (int j = 0; j < cols; j++) ((float*)db)[j0 + j] = (float)acc[j];
                else for (int j = 0; j < cols; j++) db[j0 + j] = TE.FromDouble(acc[j]);
            }
        });
    }
}

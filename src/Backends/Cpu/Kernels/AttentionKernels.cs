using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Engine.Backends.Cpu.Gemm;

namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// Flash-style scaled-dot-product attention (FlashAttention-2's forward and backward) over q [batch, L, E],
/// k [batch, S, E], v [batch, S, Ev], each row-strided as its <see cref="Operand"/> says (the transposed views of one
/// fused projection are read in place; o, dq, dk and dv are written through their strides). Work is a tile of <see cref="QueryTile"/> queries against a tile of
/// <see cref="KeyTile"/> keys, each product of the tile pair (scores q·kᵀ, p·v and the backward's four) one small GEMM
/// by the CPU GEMM's unpacked register-blocked row kernel (<see cref="IGemmKernel{T}.DirectRows"/>: 4 rows × 2 vectors
/// of accumulators), in float32 (float64 for Float64). The forward keeps each row's running max and sum (online
/// softmax), so no [L, S] score matrix exists, and stores o rounded once and the row logsumexp. The backward is one
/// walk per head: for each key tile, for each query tile that sees it, it recomputes P = exp(s − lse) and adds to dv
/// and dk (owned by the key tile) and to a float32 dq for the whole head, so every output element is summed by one
/// thread in a fixed order and no result depends on the thread count. The forward splits over (head, query tile),
/// the backward over heads. Half types are converted to float32 as they are loaded; float32 operands are read in
/// place (only kᵀ and, in the backward, vᵀ are copied, transposed). Scratch is a per-thread native buffer that only
/// grows. The reference is the composite (CompositeKernels.Attention.cs) and the float64 computation in
/// tests/Engine.Tests/Autograd/SdpaTests.cs.
/// </summary>
static unsafe class AttentionKernels
{
    /// <summary>Queries per tile (and per parallel work item of the forward with its batch index).</summary>
    public const int QueryTile = 32;
    /// <summary>Keys per tile (also the row stride of the score tiles).</summary>
    public const int KeyTile = 64;

    const int Rows = GemmDirect.MaxRows;

    /// <summary>An <see cref="AttentionOperand"/> as a pointer: row i of head n at Base + (n / heads)·Batch + (n % heads)·Head + i·Row.</summary>
    public readonly struct Operand(nint @base, long batch, long head, long row)
    {
        /// <summary>Element (0, 0, 0).</summary>
        public readonly nint Base = @base;
        /// <summary>Strides, in elements.</summary>
        public readonly long Batch = batch, Head = head, Row = row;

        /// <summary>Row <paramref name="i"/> of head <paramref name="n"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public T* At<T>(long n, int heads, long i) where T : unmanaged => (T*)Base + n / heads * Batch + n % heads * Head + i * Row;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static TA In<T, TE, TA>(T x) where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA> =>
        typeof(TA) == typeof(double) ? (TA)(object)TE.ToDouble(x) : (TA)(object)TE.ToFloat(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static T Out<T, TE, TA>(TA x) where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA> =>
        typeof(TA) == typeof(double) ? TE.FromDouble((double)(object)x) : TE.FromFloat((float)(object)x);

    // True when T is the compute type, so operands are read in place.
    static bool Same<T, TA>() => typeof(T) == typeof(TA);

    // rows rows of width elements (row stride srcRow) from src into contiguous dst, converted.
    static void Load<T, TE, TA>(T* src, long srcRow, int rows, int width, TA* dst) where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA>
    {
        for (int r = 0; r < rows; r++)
            for (int x = 0; x < width; x++) dst[(long)r * width + x] = In<T, TE, TA>(src[r * srcRow + x]);
    }

    // Rows [j0, j1) of src [·, width] (row stride srcRow) into the columns [j0 - c0, j1 - c0) of dst [width, ld], converted.
    static void LoadTransposed<T, TE, TA>(T* src, long srcRow, int width, int j0, int j1, int c0, TA* dst, long ld)
        where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA>
    {
        for (int j = j0; j < j1; j++)
        {
            T* row = src + j * srcRow;
            TA* col = dst + (j - c0);
            for (int x = 0; x < width; x++) col[x * ld] = In<T, TE, TA>(row[x]);
        }
    }

    // c[rows, n] (+)= a[rows, k] (element (i, p) at a[i·aRow + p·aCol]) · b[k, n] (row stride bRow), by the GEMM's
    // direct row kernel four rows at a time.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Gemm<TA, TK>(int rows, int n, int k, TA* a, long aRow, long aCol, TA* b, long bRow, TA* c, long ldc, bool add)
        where TA : unmanaged, IFloatingPointIeee754<TA> where TK : struct, IGemmKernel<TA>
    {
        if (k == 0)
        {
            if (!add) for (int i = 0; i < rows; i++) new Span<TA>(c + i * ldc, n).Clear();
            return;
        }
        for (int r0 = 0; r0 < rows; r0 += Rows)
            TK.DirectRows(Math.Min(Rows, rows - r0), n, k, a + r0 * aRow, aRow, aCol, b, bRow, c + r0 * ldc, ldc, add);
    }

    // The scaled, masked scores of queries [i0, i0 + rows) (q rows of length e, row stride qRow) against keys
    // [j0, j0 + cols) (kᵀ: e rows of stride ktRow, starting at key j0) into sc [rows, KeyTile]; −∞ where hidden.
    // maskRow is the additive mask's row of query i0 at key j0 (row stride s), or null.
    static void Scores<TA, TK>(TA* q, long qRow, int e, TA* kt, long ktRow, int rows, int cols, TA* sc, TA scale, TA* maskRow, int s, int i0, int j0, bool causal)
        where TA : unmanaged, IFloatingPointIeee754<TA> where TK : struct, IGemmKernel<TA>
    {
        Gemm<TA, TK>(rows, cols, e, q, qRow, 1, kt, ktRow, sc, KeyTile, false);
        for (int r = 0; r < rows; r++)
        {
            var row = new Span<TA>(sc + r * KeyTile, cols);
            TensorPrimitives.Multiply(row, scale, row);
            if (maskRow is not null) TensorPrimitives.Add(row, new ReadOnlySpan<TA>(maskRow + (long)r * s, cols), row);
            if (causal)
            {
                int first = i0 + r - j0 + 1; // the first key after query i0 + r
                if (first < cols) row[Math.Max(first, 0)..].Fill(TA.NegativeInfinity);
            }
        }
    }

    /// <summary>Runs <c>Forward</c> with the GEMM micro-kernel family the GEMM uses now.</summary>
    public static void Forward<T, TE, TA>(Operand qp, Operand kp, Operand vp, nint maskp, Operand op, nint lsep, AttentionShape a)
        where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA>
    {
        switch (GemmKernelSelection.Current)
        {
            case GemmKernelKind.Vector512: Forward<T, TE, TA, Avx512Kernel<TA>>(qp, kp, vp, maskp, op, lsep, a); break;
            case GemmKernelKind.Vector256: Forward<T, TE, TA, Avx2Kernel<TA>>(qp, kp, vp, maskp, op, lsep, a); break;
            default: Forward<T, TE, TA, ScalarKernel<TA>>(qp, kp, vp, maskp, op, lsep, a); break;
        }
    }

    /// <summary>Runs <c>Backward</c> with the GEMM micro-kernel family the GEMM uses now.</summary>
    public static void Backward<T, TE, TA>(Operand qp, Operand kp, Operand vp, nint maskp, Operand op, nint lsep, Operand dop, Operand dqp, Operand dkp, Operand dvp, AttentionShape a)
        where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA>
    {
        switch (GemmKernelSelection.Current)
        {
            case GemmKernelKind.Vector512: Backward<T, TE, TA, Avx512Kernel<TA>>(qp, kp, vp, maskp, op, lsep, dop, dqp, dkp, dvp, a); break;
            case GemmKernelKind.Vector256: Backward<T, TE, TA, Avx2Kernel<TA>>(qp, kp, vp, maskp, op, lsep, dop, dqp, dkp, dvp, a); break;
            default: Backward<T, TE, TA, ScalarKernel<TA>>(qp, kp, vp, maskp, op, lsep, dop, dqp, dkp, dvp, a); break;
        }
    }

    static void Forward<T, TE, TA, TK>(Operand qp, Operand kp, Operand vp, nint maskp, Operand op, nint lsep, AttentionShape a)
        where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA> where TK : struct, IGemmKernel<TA>
    {
        int l = a.Queries, s = a.Keys, e = a.HeadDim, ev = a.ValueDim;
        int tiles = (l + QueryTile - 1) / QueryTile;
        if (a.Batch == 0 || tiles == 0) return;
        int heads = Math.Max(a.Heads, 1);
        TA* mask = (TA*)maskp, lse = (TA*)lsep;
        TA scale = TA.CreateChecked(a.Scale);
        bool same = Same<T, TA>();
        CpuParallel.For((long)a.Batch * tiles, 1, (w0, w1) =>
        {
            // kᵀ [e, s] and v [s, ev] of the current head (v only when converted), the q tile, scores, accumulators.
            long vSize = same ? 0 : (long)s * ev, qSize = same ? 0 : (long)QueryTile * e;
            TA* kt = Scratch.Get<TA>((long)e * s + vSize + qSize + QueryTile * KeyTile + (long)QueryTile * ev + 2 * QueryTile);
            TA* vc = kt + (long)e * s, qc = vc + vSize, sc = qc + qSize, acc = sc + QueryTile * KeyTile, mx = acc + QueryTile * ev, sum = mx + QueryTile;
            int head = -1, loaded = 0; // keys [0, loaded) of head are in kt (and vc)
            for (long w = w0; w < w1; w++)
            {
                int b = (int)(w / tiles), i0 = (int)(w % tiles) * QueryTile, rows = Math.Min(QueryTile, l - i0);
                int kEnd = a.Causal ? Math.Min(s, i0 + rows) : s;
                if (b != head) { head = b; loaded = 0; }
                if (loaded < kEnd)
                {
                    LoadTransposed<T, TE, TA>(kp.At<T>(b, heads, 0), kp.Row, e, loaded, kEnd, 0, kt, s);
                    if (!same) Load<T, TE, TA>(vp.At<T>(b, heads, loaded), vp.Row, kEnd - loaded, ev, vc + (long)loaded * ev);
                    loaded = kEnd;
                }
                TA* qt = (TA*)qp.At<T>(b, heads, i0);
                long qRow = qp.Row;
                if (!same) { Load<T, TE, TA>(qp.At<T>(b, heads, i0), qp.Row, rows, e, qc); qt = qc; qRow = e; }
                TA* vh = same ? (TA*)vp.At<T>(b, heads, 0) : vc;
                long vRow = same ? vp.Row : ev;
                new Span<TA>(acc, rows * ev).Clear();
                new Span<TA>(mx, rows).Fill(TA.NegativeInfinity);
                new Span<TA>(sum, rows).Clear();
                TA* maskHead = mask is null ? null : mask + (a.SharedMask ? 0 : (long)b * l * s) + (long)i0 * s;
                for (int j0 = 0; j0 < kEnd; j0 += KeyTile)
                {
                    int cols = Math.Min(KeyTile, kEnd - j0);
                    Scores<TA, TK>(qt, qRow, e, kt + j0, s, rows, cols, sc, scale, maskHead is null ? null : maskHead + j0, s, i0, j0, a.Causal);
                    for (int r = 0; r < rows; r++)
                    {
                        var row = new Span<TA>(sc + r * KeyTile, cols);
                        TA newMax = TA.Max(mx[r], TensorPrimitives.Max<TA>(row));
                        if (TA.IsNegativeInfinity(newMax)) { row.Clear(); continue; } // every key so far hidden: nothing to add
                        TA alpha = TA.Exp(mx[r] - newMax);
                        if (alpha != TA.One)
                        {
                            var ar = new Span<TA>(acc + r * ev, ev);
                            TensorPrimitives.Multiply(ar, alpha, ar);
                        }
                        TensorPrimitives.Subtract(row, newMax, row);
                        TensorPrimitives.Exp<TA>(row, row);
                        sum[r] = sum[r] * alpha + TensorPrimitives.Sum<TA>(row);
                        mx[r] = newMax;
                    }
                    Gemm<TA, TK>(rows, ev, cols, sc, KeyTile, 1, vh + j0 * vRow, vRow, acc, ev, true);
                }
                for (int r = 0; r < rows; r++)
                {
                    long row = (long)b * l + i0 + r;
                    T* orow = op.At<T>(b, heads, i0 + r);
                    if (s == 0)
                    {
                        // No key at all: the empty sum, as q·kᵀ·v with S = 0 gives.
                        for (int c = 0; c < ev; c++) orow[c] = Out<T, TE, TA>(TA.Zero);
                        lse[row] = TA.NegativeInfinity;
                        continue;
                    }
                    TA inv = TA.One / sum[r];
                    for (int c = 0; c < ev; c++) orow[c] = Out<T, TE, TA>(acc[r * ev + c] * inv);
                    lse[row] = mx[r] + TA.Log(sum[r]);
                }
            }
        });
    }

    static void Backward<T, TE, TA, TK>(Operand qp, Operand kp, Operand vp, nint maskp, Operand op, nint lsep, Operand dop, Operand dqp, Operand dkp, Operand dvp, AttentionShape a)
        where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA> where TK : struct, IGemmKernel<TA>
    {
        int l = a.Queries, s = a.Keys, e = a.HeadDim, ev = a.ValueDim, batch = a.Batch;
        if (batch == 0) return;
        int heads = Math.Max(a.Heads, 1);
        TA* mask = (TA*)maskp, lse = (TA*)lsep;
        TA scale = TA.CreateChecked(a.Scale);
        bool causal = a.Causal, same = Same<T, TA>();
        CpuParallel.For(batch, 1, (b0, b1) =>
        {
            // Per head: q and dO (when converted), the dq accumulator, D; per key tile: k (when converted), kᵀ, vᵀ,
            // the dk and dv accumulators; per tile pair: P and dP/dS.
            long qSize = same ? 0 : (long)l * e, gSize = same ? 0 : (long)l * ev, kSize = same ? 0 : (long)KeyTile * e;
            long total = qSize + gSize + (long)l * e + l + kSize + 2L * KeyTile * e + 2L * KeyTile * ev + 2L * QueryTile * KeyTile;
            TA* qc = Scratch.Get<TA>(total);
            TA* gc = qc + qSize, dqa = gc + gSize, delta = dqa + (long)l * e, kc = delta + l, kt = kc + kSize, vt = kt + e * KeyTile;
            TA* dka = vt + ev * KeyTile, dva = dka + e * KeyTile, p = dva + ev * KeyTile, ds = p + QueryTile * KeyTile;
            for (long b = b0; b < b1; b++)
            {
                TA* qh = (TA*)qp.At<T>(b, heads, 0), gh = (TA*)dop.At<T>(b, heads, 0);
                long qRow = qp.Row, gRow = dop.Row;
                if (!same)
                {
                    Load<T, TE, TA>(qp.At<T>(b, heads, 0), qp.Row, l, e, qc); qh = qc; qRow = e;
                    Load<T, TE, TA>(dop.At<T>(b, heads, 0), dop.Row, l, ev, gc); gh = gc; gRow = ev;
                }
                // D = rowsum(dO∘o), one value per query row.
                for (int i = 0; i < l; i++)
                {
                    T* orow = op.At<T>(b, heads, i);
                    TA d = TA.Zero;
                    for (int c = 0; c < ev; c++) d += gh[i * gRow + c] * In<T, TE, TA>(orow[c]);
                    delta[i] = d;
                }
                new Span<TA>(dqa, l * e).Clear();
                TA* lseHead = lse + b * l;
                TA* maskHead = mask is null ? null : mask + (a.SharedMask ? 0 : b * l * s);
                for (int j0 = 0; j0 < s; j0 += KeyTile)
                {
                    int keys = Math.Min(KeyTile, s - j0);
                    TA* kj = (TA*)kp.At<T>(b, heads, j0);
                    long kRow = kp.Row;
                    if (!same) { Load<T, TE, TA>(kp.At<T>(b, heads, j0), kp.Row, keys, e, kc); kj = kc; kRow = e; }
                    LoadTransposed<T, TE, TA>(kp.At<T>(b, heads, 0), kp.Row, e, j0, j0 + keys, j0, kt, KeyTile);
                    LoadTransposed<T, TE, TA>(vp.At<T>(b, heads, 0), vp.Row, ev, j0, j0 + keys, j0, vt, KeyTile);
                    new Span<TA>(dka, keys * e).Clear();
                    new Span<TA>(dva, keys * ev).Clear();
                    // Causal: queries before j0 see none of these keys; start at the query tile holding j0.
                    for (int i0 = causal ? j0 / QueryTile * QueryTile : 0; i0 < l; i0 += QueryTile)
                    {
                        int rows = Math.Min(QueryTile, l - i0);
                        // Causal: keys after the tile's last query are hidden from all of it; leave them out.
                        int cols = causal ? Math.Min(keys, i0 + rows - j0) : keys;
                        if (cols <= 0) continue;
                        TA* qi = qh + i0 * qRow, gi = gh + i0 * gRow;
                        Scores<TA, TK>(qi, qRow, e, kt, KeyTile, rows, cols, p, scale, maskHead is null ? null : maskHead + (long)i0 * s + j0, s, i0, j0, causal);
                        for (int r = 0; r < rows; r++)
                        {
                            var row = new Span<TA>(p + r * KeyTile, cols);
                            TensorPrimitives.Subtract(row, lseHead[i0 + r], row);
                            TensorPrimitives.Exp<TA>(row, row);
                        }
                        // dv += Pᵀ·dO; dP = dO·vᵀ; dS = P∘(dP − D); dk += dSᵀ·q; dq += dS·k.
                        Gemm<TA, TK>(cols, ev, rows, p, 1, KeyTile, gi, gRow, dva, ev, true);
                        Gemm<TA, TK>(rows, cols, ev, gi, gRow, 1, vt, KeyTile, ds, KeyTile, false);
                        for (int r = 0; r < rows; r++)
                        {
                            var dsr = new Span<TA>(ds + r * KeyTile, cols);
                            TensorPrimitives.Subtract(dsr, delta[i0 + r], dsr);
                            TensorPrimitives.Multiply(dsr, new ReadOnlySpan<TA>(p + r * KeyTile, cols), dsr);
                        }
                        Gemm<TA, TK>(cols, e, rows, ds, 1, KeyTile, qi, qRow, dka, e, true);
                        Gemm<TA, TK>(rows, e, cols, ds, KeyTile, 1, kj, kRow, dqa + (long)i0 * e, e, true);
                    }
                    for (int c = 0; c < keys; c++)
                    {
                        T* krow = dkp.At<T>(b, heads, j0 + c);
                        for (int x = 0; x < e; x++) krow[x] = Out<T, TE, TA>(dka[c * e + x] * scale);
                        T* vrow = dvp.At<T>(b, heads, j0 + c);
                        for (int x = 0; x < ev; x++) vrow[x] = Out<T, TE, TA>(dva[c * ev + x]);
                    }
                }
                for (int i = 0; i < l; i++)
                {
                    T* qrow = dqp.At<T>(b, heads, i);
                    for (int x = 0; x < e; x++) qrow[x] = Out<T, TE, TA>(dqa[(long)i * e + x] * scale);
                }
            }
        });
    }

    /// <summary>The attention tiles' per-thread buffer (a <see cref="ThreadScratch{TUse}"/> apart from the GEMM's, whose row kernels it calls).</summary>
    sealed class Scratch
    {
        Scratch() { }

        /// <summary>The calling thread's buffer, at least <paramref name="count"/> elements (contents unspecified).</summary>
        public static TA* Get<TA>(long count) where TA : unmanaged => (TA*)ThreadScratch<Scratch>.Get((nuint)(Math.Max(count, 1) * sizeof(TA)));
    }
}

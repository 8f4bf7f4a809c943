using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace Engine.Backends.Cpu.Kernels;

/// <summary>
/// Flash-style scaled-dot-product attention (FlashAttention-2's forward and backward) over contiguous q [batch, L, E],
/// k [batch, S, E], v [batch, S, Ev]. The forward walks tiles of <see cref="QueryTile"/> queries against tiles of
/// <see cref="KeyTile"/> keys keeping each row's running max and sum (online softmax) and a float32 accumulator
/// (float64 for Float64), so no [L, S] score matrix exists; it stores o rounded once and the row logsumexp. The
/// backward recomputes P = exp(s − lse) tile by tile: dq in a pass over query tiles, dk and dv in a pass over key
/// tiles, so every output element is accumulated by one thread in a fixed order and no result depends on the
/// thread count. Half types are converted to float32 as a tile is loaded. The reference is the composite
/// (CompositeKernels.Attention.cs) and the float64 computation in tests/Engine.Tests/Autograd/SdpaTests.cs.
/// </summary>
static unsafe class AttentionKernels
{
    /// <summary>Queries per tile (and per parallel work item with its batch index).</summary>
    public const int QueryTile = 32;
    /// <summary>Keys per tile.</summary>
    public const int KeyTile = 64;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static TA In<T, TE, TA>(T x) where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA> =>
        typeof(TA) == typeof(double) ? (TA)(object)TE.ToDouble(x) : (TA)(object)TE.ToFloat(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static T Out<T, TE, TA>(TA x) where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA> =>
        typeof(TA) == typeof(double) ? TE.FromDouble((double)(object)x) : TE.FromFloat((float)(object)x);

    // rows × width elements from src (row stride width) into dst, converted.
    static void Load<T, TE, TA>(T* src, Span<TA> dst, int count) where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA>
    {
        for (int i = 0; i < count; i++) dst[i] = In<T, TE, TA>(src[i]);
    }

    // The scaled, masked score of query i (row r of the q tile) and key j (row c of the k tile); −∞ when hidden.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static TA Score<TA>(ReadOnlySpan<TA> qr, ReadOnlySpan<TA> kc, TA scale, TA* mask, long maskRow, int i, int j, bool causal) where TA : unmanaged, IFloatingPointIeee754<TA>
    {
        if (causal && j > i) return TA.NegativeInfinity;
        TA s = TensorPrimitives.Dot(qr, kc) * scale;
        return mask is null ? s : s + mask[maskRow + j];
    }

    public static void Forward<T, TE, TA>(nint qp, nint kp, nint vp, nint maskp, nint op, nint lsep, AttentionShape a)
        where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA>
    {
        int l = a.Queries, s = a.Keys, e = a.HeadDim, ev = a.ValueDim;
        int tiles = (l + QueryTile - 1) / QueryTile;
        if (a.Batch == 0 || tiles == 0) return;
        T* q = (T*)qp, k = (T*)kp, v = (T*)vp, o = (T*)op;
        TA* mask = (TA*)maskp, lse = (TA*)lsep;
        TA scale = TA.CreateChecked(a.Scale);
        CpuParallel.For((long)a.Batch * tiles, 1, (w0, w1) =>
        {
            var qt = new TA[QueryTile * e]; var kt = new TA[KeyTile * e]; var vt = new TA[KeyTile * ev];
            var sc = new TA[KeyTile]; var acc = new TA[QueryTile * ev]; var mx = new TA[QueryTile]; var sum = new TA[QueryTile];
            for (long w = w0; w < w1; w++)
            {
                int b = (int)(w / tiles), i0 = (int)(w % tiles) * QueryTile, rows = Math.Min(QueryTile, l - i0);
                Load<T, TE, TA>(q + ((long)b * l + i0) * e, qt, rows * e);
                Array.Fill(acc, TA.Zero); Array.Fill(mx, TA.NegativeInfinity); Array.Fill(sum, TA.Zero);
                int kEnd = a.Causal ? Math.Min(s, i0 + rows) : s;
                long maskBase = mask is null ? 0 : (a.SharedMask ? 0 : (long)b * l * s);
                for (int j0 = 0; j0 < kEnd; j0 += KeyTile)
                {
                    int cols = Math.Min(KeyTile, kEnd - j0);
                    Load<T, TE, TA>(k + ((long)b * s + j0) * e, kt, cols * e);
                    Load<T, TE, TA>(v + ((long)b * s + j0) * ev, vt, cols * ev);
                    for (int r = 0; r < rows; r++)
                    {
                        int i = i0 + r;
                        var qr = new ReadOnlySpan<TA>(qt, r * e, e);
                        TA rowMax = TA.NegativeInfinity;
                        for (int c = 0; c < cols; c++)
                        {
                            TA x = Score(qr, new ReadOnlySpan<TA>(kt, c * e, e), scale, mask, maskBase + (long)i * s, i, j0 + c, a.Causal);
                            sc[c] = x;
                            if (x > rowMax) rowMax = x;
                        }
                        TA newMax = TA.Max(mx[r], rowMax);
                        if (TA.IsNegativeInfinity(newMax)) continue; // every key so far hidden: nothing to add
                        TA alpha = TA.Exp(mx[r] - newMax);
                        var ar = new Span<TA>(acc, r * ev, ev);
                        if (alpha != TA.One) TensorPrimitives.Multiply(ar, alpha, ar);
                        TA total = sum[r] * alpha;
                        for (int c = 0; c < cols; c++)
                        {
                            TA p = TA.Exp(sc[c] - newMax);
                            total += p;
                            if (p != TA.Zero) TensorPrimitives.MultiplyAdd(new ReadOnlySpan<TA>(vt, c * ev, ev), p, ar, ar);
                        }
                        sum[r] = total;
                        mx[r] = newMax;
                    }
                }
                for (int r = 0; r < rows; r++)
                {
                    long row = (long)b * l + i0 + r;
                    T* orow = o + row * ev;
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

    public static void Backward<T, TE, TA>(nint qp, nint kp, nint vp, nint maskp, nint op, nint lsep, nint dop, nint dqp, nint dkp, nint dvp, AttentionShape a)
        where T : unmanaged where TE : struct, IElement<T> where TA : unmanaged, IFloatingPointIeee754<TA>
    {
        int l = a.Queries, s = a.Keys, e = a.HeadDim, ev = a.ValueDim, batch = a.Batch;
        if (batch == 0) return;
        T* q = (T*)qp, k = (T*)kp, v = (T*)vp, o = (T*)op, dO = (T*)dop, dq = (T*)dqp, dk = (T*)dkp, dv = (T*)dvp;
        TA* mask = (TA*)maskp, lse = (TA*)lsep;
        TA scale = TA.CreateChecked(a.Scale);
        bool causal = a.Causal;

        // D = rowsum(dO∘o), one value per query row.
        var delta = new TA[(long)batch * l];
        CpuParallel.For((long)batch * l, 256, (r0, r1) =>
        {
            for (long r = r0; r < r1; r++)
            {
                TA d = TA.Zero;
                for (int c = 0; c < ev; c++) d += In<T, TE, TA>(dO[r * ev + c]) * In<T, TE, TA>(o[r * ev + c]);
                delta[r] = d;
            }
        });

        // dq: per query tile, over the key tiles it sees.
        int qTiles = (l + QueryTile - 1) / QueryTile;
        CpuParallel.For((long)batch * qTiles, 1, (w0, w1) =>
        {
            var qt = new TA[QueryTile * e]; var gt = new TA[QueryTile * ev]; var kt = new TA[KeyTile * e]; var vt = new TA[KeyTile * ev];
            var acc = new TA[QueryTile * e];
            for (long w = w0; w < w1; w++)
            {
                int b = (int)(w / qTiles), i0 = (int)(w % qTiles) * QueryTile, rows = Math.Min(QueryTile, l - i0);
                Load<T, TE, TA>(q + ((long)b * l + i0) * e, qt, rows * e);
                Load<T, TE, TA>(dO + ((long)b * l + i0) * ev, gt, rows * ev);
                Array.Fill(acc, TA.Zero);
                int kEnd = causal ? Math.Min(s, i0 + rows) : s;
                long maskBase = mask is null ? 0 : (a.SharedMask ? 0 : (long)b * l * s);
                for (int j0 = 0; j0 < kEnd; j0 += KeyTile)
                {
                    int cols = Math.Min(KeyTile, kEnd - j0);
                    Load<T, TE, TA>(k + ((long)b * s + j0) * e, kt, cols * e);
                    Load<T, TE, TA>(v + ((long)b * s + j0) * ev, vt, cols * ev);
                    for (int r = 0; r < rows; r++)
                    {
                        int i = i0 + r;
                        long row = (long)b * l + i;
                        var qr = new ReadOnlySpan<TA>(qt, r * e, e);
                        var gr = new ReadOnlySpan<TA>(gt, r * ev, ev);
                        var ar = new Span<TA>(acc, r * e, e);
                        for (int c = 0; c < cols; c++)
                        {
                            TA p = TA.Exp(Score(qr, new ReadOnlySpan<TA>(kt, c * e, e), scale, mask, maskBase + (long)i * s, i, j0 + c, causal) - lse[row]);
                            if (p == TA.Zero) continue;
                            TA ds = p * (TensorPrimitives.Dot(gr, new ReadOnlySpan<TA>(vt, c * ev, ev)) - delta[row]);
                            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<TA>(kt, c * e, e), ds, ar, ar);
                        }
                    }
                }
                for (int r = 0; r < rows; r++)
                {
                    T* drow = dq + ((long)b * l + i0 + r) * e;
                    for (int c = 0; c < e; c++) drow[c] = Out<T, TE, TA>(acc[r * e + c] * scale);
                }
            }
        });

        // dk and dv: per key tile, over the query tiles that see it.
        int kTiles = (s + KeyTile - 1) / KeyTile;
        CpuParallel.For((long)batch * kTiles, 1, (w0, w1) =>
        {
            var qt = new TA[QueryTile * e]; var gt = new TA[QueryTile * ev]; var kt = new TA[KeyTile * e]; var vt = new TA[KeyTile * ev];
            var dkAcc = new TA[KeyTile * e]; var dvAcc = new TA[KeyTile * ev];
            for (long w = w0; w < w1; w++)
            {
                int b = (int)(w / kTiles), j0 = (int)(w % kTiles) * KeyTile, cols = Math.Min(KeyTile, s - j0);
                Load<T, TE, TA>(k + ((long)b * s + j0) * e, kt, cols * e);
                Load<T, TE, TA>(v + ((long)b * s + j0) * ev, vt, cols * ev);
                Array.Fill(dkAcc, TA.Zero); Array.Fill(dvAcc, TA.Zero);
                long maskBase = mask is null ? 0 : (a.SharedMask ? 0 : (long)b * l * s);
                // Causal: queries before j0 see none of these keys; start at the query tile holding j0.
                for (int i0 = causal ? j0 / QueryTile * QueryTile : 0; i0 < l; i0 += QueryTile)
                {
                    int rows = Math.Min(QueryTile, l - i0);
                    Load<T, TE, TA>(q + ((long)b * l + i0) * e, qt, rows * e);
                    Load<T, TE, TA>(dO + ((long)b * l + i0) * ev, gt, rows * ev);
                    for (int r = 0; r < rows; r++)
                    {
                        int i = i0 + r;
                        long row = (long)b * l + i;
                        var qr = new ReadOnlySpan<TA>(qt, r * e, e);
                        var gr = new ReadOnlySpan<TA>(gt, r * ev, ev);
                        for (int c = 0; c < cols; c++)
                        {
                            TA p = TA.Exp(Score(qr, new ReadOnlySpan<TA>(kt, c * e, e), scale, mask, maskBase + (long)i * s, i, j0 + c, causal) - lse[row]);
                            if (p == TA.Zero) continue;
                            var dvr = new Span<TA>(dvAcc, c * ev, ev);
                            TensorPrimitives.MultiplyAdd(gr, p, dvr, dvr);
                            TA ds = p * (TensorPrimitives.Dot(gr, new ReadOnlySpan<TA>(vt, c * ev, ev)) - delta[row]);
                            var dkr = new Span<TA>(dkAcc, c * e, e);
                            TensorPrimitives.MultiplyAdd(qr, ds, dkr, dkr);
                        }
                    }
                }
                for (int c = 0; c < cols; c++)
                {
                    T* krow = dk + ((long)b * s + j0 + c) * e;
                    for (int x = 0; x < e; x++) krow[x] = Out<T, TE, TA>(dkAcc[c * e + x] * scale);
                    T* vrow = dv + ((long)b * s + j0 + c) * ev;
                    for (int x = 0; x < ev; x++) vrow[x] = Out<T, TE, TA>(dvAcc[c * ev + x]);
                }
            }
        });
    }
}

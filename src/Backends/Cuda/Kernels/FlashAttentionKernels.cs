using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>
/// The shape of the flash attention kernels' group (<see cref="FlashAttentionKernels{TTile}"/>): threads, the widest
/// head dim served, and the key and query block lengths. Every thread owns one column of four output rows, so a
/// group owns <c>4·Threads / Width</c> rows (queries in the forward and dq kernels, keys in the dk/dv kernel).
/// </summary>
public interface IFlashTile
{
    /// <summary>Threads per group, a multiple of <see cref="Width"/> and of 32.</summary>
    int Threads { get; }
    /// <summary>Columns of every staged tile: the largest E and Ev the kernels serve (wider heads run AttentionKernels).</summary>
    int Width { get; }
    /// <summary>Keys per staged block of the forward and dq kernels.</summary>
    int KeyBlock { get; }
    /// <summary>Queries per staged block of the dk/dv kernel.</summary>
    int QueryBlock { get; }
}

/// <summary>
/// The GPU tiling. 256 threads, because ptxas assembles an ILGPU kernel without a thread-count bound and may then use
/// up to 255 registers, which 256 threads always fit (65,536 per multiprocessor); Width 64 because that is GPT-2's
/// head dim (and every thread then owns one column of 4 rows: 16 query rows per forward group); KeyBlock 64 so that
/// the 16 threads of a score row each compute 4 scores per block and the forward's shared tiles (q 16×65, k 64×65,
/// v 64×64, p 16×64 floats: 41.6 KB) and the dq kernel's (45.7 KB) stay under the 48 KB of static shared memory;
/// QueryBlock 32 keeps the dk/dv kernel's (q and dO 32×65, k and v 16×65, P and dS 32×16) at 29 KB. ptxas (sm_90)
/// gives each of the three 32 registers, no stack frame and no spills, so shared memory bounds the groups per
/// multiprocessor.
/// </summary>
public struct FlashGpuTile : IFlashTile
{
    /// <inheritdoc/>
    public readonly int Threads => 256;
    /// <inheritdoc/>
    public readonly int Width => 64;
    /// <inheritdoc/>
    public readonly int KeyBlock => 64;
    /// <inheritdoc/>
    public readonly int QueryBlock => 32;
}

/// <summary>
/// The emulator's tiling: ILGPU's CPU accelerator runs at most 64 threads per group (CudaBackend's emulated device:
/// two 32-lane warps), and small blocks let small test sizes cross several of them. Same Width as the GPU, so the
/// same head dims take the tiled path.
/// </summary>
public struct FlashEmulatorTile : IFlashTile
{
    /// <inheritdoc/>
    public readonly int Threads => 64;
    /// <inheritdoc/>
    public readonly int Width => 64;
    /// <inheritdoc/>
    public readonly int KeyBlock => 16;
    /// <inheritdoc/>
    public readonly int QueryBlock => 16;
}

/// <summary>
/// Scaled-dot-product attention on the device, tiled as FlashAttention-2 on CUDA cores: a group stages blocks of the
/// operands in shared memory (read through their strides, half types converted to float32 on load, zeros past the
/// sizes) and computes each block pair's scores cooperatively into shared memory; every output element is a scalar
/// register of one thread (no per-thread array, so no local memory), summed in a fixed order and rounded once on
/// store, so results do not depend on scheduling and no atomics are needed. Forward: one group per (head, block of
/// queries), online softmax over key blocks (each score row's max and sum kept in registers by its 16 threads, the
/// rescale factor passed to the output owners in shared memory). Backward: D = rowsum(dO∘o) (AttentionKernels.Delta),
/// then dk and dv per (head, key block) looping over query blocks, and dq per (head, query block) looping over key
/// blocks, each recomputing P = exp(s − lse). Heads wider than <see cref="IFlashTile.Width"/> run AttentionKernels.
/// </summary>
static class FlashAttentionKernels<TTile> where TTile : struct, IFlashTile
{
    // Rows owned per group (each thread owns one column of Owned rows, Threads / Width apart).
    const int Owned = 4;

    /// <summary>Query rows (forward, dq) or key rows (dk/dv) one group owns.</summary>
    public static int Rows => Owned * default(TTile).Threads / default(TTile).Width;

    // Row stride of the padded tiles: a warp reading one column of 32 rows then hits 32 banks.
    static int Pitch => default(TTile).Width + 1;

    // The scaled, masked score of query i against key j from the staged rows; −∞ when hidden or out of range.
    static float Score(ArrayView<float> sq, int qRow, ArrayView<float> sk, int kRow, ArrayView<float> mask, in AttentionArgs a, int n, int i, int j)
    {
        if (i >= a.L || j >= a.S || a.Causal != 0 && j > i) return float.NegativeInfinity;
        float d = 0;
        for (int x = 0; x < a.E; x++) d += sq[qRow + x] * sk[kRow + x];
        d *= a.Scale;
        if (a.HasMask != 0) d += mask[(a.SharedMask != 0 ? 0 : (long)n * a.L * a.S) + (long)i * a.S + j];
        return d;
    }

    // rows × Width of one operand from row r0 (rows past end and columns past width are 0) into dst (row stride pitch).
    static void Stage(ArrayView<byte> src, AttentionView view, in AttentionArgs a, int n, int r0, int rows, int end, int width, ArrayView<float> dst, int pitch)
    {
        int w = default(TTile).Width, threads = default(TTile).Threads;
        for (int p = Group.IdxX; p < rows * w; p += threads)
        {
            int r = p / w, x = p - r * w;
            dst[r * pitch + x] = r0 + r < end && x < width ? LoadFloat(src, a.Type, view.At(n, a.Heads, r0 + r) + x) : 0;
        }
    }

    // The sum of the 16 lanes of a score row (lanes aligned to 16 in the warp).
    static float RowSum(float v, int lanes)
    {
        for (int d = lanes / 2; d > 0; d >>= 1) v += Warp.ShuffleXor(v, d);
        return v;
    }

    static float RowMax(float v, int lanes)
    {
        for (int d = lanes / 2; d > 0; d >>= 1) v = Math.Max(v, Warp.ShuffleXor(v, d));
        return v;
    }

    /// <summary>
    /// One group per (head n, block of <see cref="Rows"/> queries): o = softmax(s)·v and lse, with s over key blocks
    /// of KeyBlock keys. Grid: Batch · ⌈L / Rows⌉ groups of Threads.
    /// </summary>
    public static void Forward(ArrayView<byte> q, ArrayView<byte> k, ArrayView<byte> v, ArrayView<byte> mask, ArrayView<byte> lse, ArrayView<byte> o, AttentionArgs a)
    {
        TTile tile = default;
        int threads = tile.Threads, w = tile.Width, bc = tile.KeyBlock, br = Rows, pitch = Pitch;
        var sq = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width * (tile.Width + 1));
        var sk = SharedMemory.Allocate<float>(tile.KeyBlock * (tile.Width + 1));
        var sv = SharedMemory.Allocate<float>(tile.KeyBlock * tile.Width);
        var sp = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width * tile.KeyBlock);
        var sAlpha = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width);
        var m = mask.Cast<float>();
        var ls = lse.Cast<float>();

        int blocks = (a.L + br - 1) / br, n = Grid.IdxX / blocks, i0 = (Grid.IdxX - n * blocks) * br, t = Group.IdxX;
        Stage(q, a.Q, a, n, i0, br, a.L, a.E, sq, pitch);

        // Score phase: thread t computes row sr's scores at keys g, g + lanes, ... of the block and keeps the row's
        // running max and sum (the same in all its lanes).
        int lanes = threads / br, sr = t / lanes, g = t - sr * lanes, i = i0 + sr;
        float mx = float.NegativeInfinity, sum = 0;
        // Output phase: thread t owns o[rs + u·step, c] for u < 4.
        int c = t % w, rs = t / w, step = threads / w;
        float o0 = 0, o1 = 0, o2 = 0, o3 = 0;

        int kEnd = a.Causal != 0 ? Math.Min(a.S, i0 + br) : a.S;
        for (int j0 = 0; j0 < kEnd; j0 += bc)
        {
            Group.Barrier(); // q is staged; the previous block's k, v and p are read
            Stage(k, a.K, a, n, j0, bc, a.S, a.E, sk, pitch);
            Stage(v, a.V, a, n, j0, bc, a.S, a.Ev, sv, w);
            Group.Barrier();
            float bmax = float.NegativeInfinity;
            for (int jj = g; jj < bc; jj += lanes)
            {
                float s = Score(sq, sr * pitch, sk, jj * pitch, m, a, n, i, j0 + jj);
                sp[sr * bc + jj] = s;
                bmax = Math.Max(bmax, s);
            }
            float newMax = Math.Max(mx, RowMax(bmax, lanes)), alpha = 1, bsum = 0;
            bool any = newMax != float.NegativeInfinity; // else every key so far is hidden: p = 0, nothing to rescale
            if (any) alpha = MathF.Exp(mx - newMax);
            for (int jj = g; jj < bc; jj += lanes)
            {
                float p = any ? MathF.Exp(sp[sr * bc + jj] - newMax) : 0;
                sp[sr * bc + jj] = p;
                bsum += p;
            }
            sum = sum * alpha + RowSum(bsum, lanes);
            mx = newMax;
            if (g == 0) sAlpha[sr] = alpha;
            Group.Barrier();
            if (c < a.Ev)
            {
                int keys = Math.Min(bc, kEnd - j0);
                o0 = Accumulate(o0, sAlpha[rs], sp, rs * bc, sv, c, keys);
                o1 = Accumulate(o1, sAlpha[rs + step], sp, (rs + step) * bc, sv, c, keys);
                o2 = Accumulate(o2, sAlpha[rs + 2 * step], sp, (rs + 2 * step) * bc, sv, c, keys);
                o3 = Accumulate(o3, sAlpha[rs + 3 * step], sp, (rs + 3 * step) * bc, sv, c, keys);
            }
        }

        // The row's 1 / sum to the output owners (as the CPU: a row whose keys are all masked gives 0·∞ = NaN).
        Group.Barrier();
        if (g == 0)
        {
            sAlpha[sr] = a.S == 0 ? 0 : 1 / sum;
            if (i < a.L) ls[(long)n * a.L + i] = a.S == 0 ? float.NegativeInfinity : mx + MathF.Log(sum);
        }
        Group.Barrier();
        if (c < a.Ev)
        {
            StoreRow(o, a.O, a, n, i0 + rs, c, o0 * sAlpha[rs]);
            StoreRow(o, a.O, a, n, i0 + rs + step, c, o1 * sAlpha[rs + step]);
            StoreRow(o, a.O, a, n, i0 + rs + 2 * step, c, o2 * sAlpha[rs + 2 * step]);
            StoreRow(o, a.O, a, n, i0 + rs + 3 * step, c, o3 * sAlpha[rs + 3 * step]);
        }
    }

    // lse and D of query rows [i0, i0 + rows) into sl and sd (0 past L).
    static void StageRowStats(ArrayView<float> ls, ArrayView<float> dl, in AttentionArgs a, int n, int i0, int rows, ArrayView<float> sl, ArrayView<float> sd)
    {
        for (int p = Group.IdxX; p < rows; p += default(TTile).Threads)
        {
            bool inside = i0 + p < a.L;
            sl[p] = inside ? ls[(long)n * a.L + i0 + p] : 0;
            sd[p] = inside ? dl[(long)n * a.L + i0 + p] : 0;
        }
    }

    // P = exp(s − lse) (0 where hidden, so rows and keys past the sizes add nothing) and dS = P·(dO·v − D) of query
    // row qr (staged at qr·pitch in sq and sg) and key row kr (in sk and sv).
    static float ScoreGrad(ArrayView<float> sq, ArrayView<float> sg, int qr, ArrayView<float> sk, ArrayView<float> sv, int kr, ArrayView<float> sl,
        ArrayView<float> sd, ArrayView<float> mask, in AttentionArgs a, int n, int i, int j, out float p)
    {
        int pitch = Pitch;
        float s = Score(sq, qr * pitch, sk, kr * pitch, mask, a, n, i, j);
        p = s == float.NegativeInfinity ? 0 : MathF.Exp(s - sl[qr]);
        float dp = 0;
        for (int x = 0; x < a.Ev; x++) dp += sg[qr * pitch + x] * sv[kr * pitch + x];
        return p * (dp - sd[qr]);
    }

    /// <summary>
    /// One group per (head n, block of <see cref="Rows"/> queries): dq = scale·Σ_j dS·k over key blocks of KeyBlock
    /// keys. Grid: Batch · ⌈L / Rows⌉ groups of Threads.
    /// </summary>
    public static void GradQuery(ArrayView<byte> q, ArrayView<byte> k, ArrayView<byte> v, ArrayView<byte> mask, ArrayView<byte> lse, ArrayView<byte> dO,
        ArrayView<byte> delta, ArrayView<byte> dq, AttentionArgs a)
    {
        TTile tile = default;
        int threads = tile.Threads, w = tile.Width, bc = tile.KeyBlock, br = Rows, pitch = Pitch;
        var sq = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width * (tile.Width + 1));
        var sg = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width * (tile.Width + 1));
        var sk = SharedMemory.Allocate<float>(tile.KeyBlock * (tile.Width + 1));
        var sv = SharedMemory.Allocate<float>(tile.KeyBlock * (tile.Width + 1));
        var sds = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width * tile.KeyBlock);
        var sl = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width);
        var sd = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width);
        var m = mask.Cast<float>();

        int blocks = (a.L + br - 1) / br, n = Grid.IdxX / blocks, i0 = (Grid.IdxX - n * blocks) * br, t = Group.IdxX;
        Stage(q, a.Q, a, n, i0, br, a.L, a.E, sq, pitch);
        Stage(dO, a.G, a, n, i0, br, a.L, a.Ev, sg, pitch);
        StageRowStats(lse.Cast<float>(), delta.Cast<float>(), a, n, i0, br, sl, sd);
        int c = t % w, rs = t / w, step = threads / w;
        float d0 = 0, d1 = 0, d2 = 0, d3 = 0;

        int kEnd = a.Causal != 0 ? Math.Min(a.S, i0 + br) : a.S;
        for (int j0 = 0; j0 < kEnd; j0 += bc)
        {
            Group.Barrier(); // q, dO and the row stats are staged; the previous block's k and dS are read
            Stage(k, a.K, a, n, j0, bc, a.S, a.E, sk, pitch);
            Stage(v, a.V, a, n, j0, bc, a.S, a.Ev, sv, pitch);
            Group.Barrier();
            for (int p = t; p < br * bc; p += threads)
            {
                int ii = p / bc, jj = p - ii * bc;
                sds[p] = ScoreGrad(sq, sg, ii, sk, sv, jj, sl, sd, m, a, n, i0 + ii, j0 + jj, out _);
            }
            Group.Barrier();
            if (c < a.E)
            {
                int keys = Math.Min(bc, kEnd - j0);
                d0 = Product(d0, sds, rs * bc, 1, sk, pitch, c, keys);
                d1 = Product(d1, sds, (rs + step) * bc, 1, sk, pitch, c, keys);
                d2 = Product(d2, sds, (rs + 2 * step) * bc, 1, sk, pitch, c, keys);
                d3 = Product(d3, sds, (rs + 3 * step) * bc, 1, sk, pitch, c, keys);
            }
        }
        if (c < a.E)
        {
            StoreRow(dq, a.DQ, a, n, i0 + rs, c, d0 * a.Scale);
            StoreRow(dq, a.DQ, a, n, i0 + rs + step, c, d1 * a.Scale);
            StoreRow(dq, a.DQ, a, n, i0 + rs + 2 * step, c, d2 * a.Scale);
            StoreRow(dq, a.DQ, a, n, i0 + rs + 3 * step, c, d3 * a.Scale);
        }
    }

    /// <summary>
    /// One group per (head n, block of <see cref="Rows"/> keys): dk = scale·Σ_i dSᵀ·q and dv = Σ_i Pᵀ·dO over query
    /// blocks of QueryBlock queries (under the causal mask only those with a query at or after the block's first key).
    /// Grid: Batch · ⌈S / Rows⌉ groups of Threads.
    /// </summary>
    public static void GradKeyValue(ArrayView<byte> q, ArrayView<byte> k, ArrayView<byte> v, ArrayView<byte> mask, ArrayView<byte> lse, ArrayView<byte> dO,
        ArrayView<byte> delta, ArrayView<byte> dk, ArrayView<byte> dv, AttentionArgs a)
    {
        TTile tile = default;
        int threads = tile.Threads, w = tile.Width, bq = tile.QueryBlock, bk = Rows, pitch = Pitch;
        var sk = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width * (tile.Width + 1));
        var sv = SharedMemory.Allocate<float>(Owned * tile.Threads / tile.Width * (tile.Width + 1));
        var sq = SharedMemory.Allocate<float>(tile.QueryBlock * (tile.Width + 1));
        var sg = SharedMemory.Allocate<float>(tile.QueryBlock * (tile.Width + 1));
        var sp = SharedMemory.Allocate<float>(tile.QueryBlock * Owned * tile.Threads / tile.Width);
        var sds = SharedMemory.Allocate<float>(tile.QueryBlock * Owned * tile.Threads / tile.Width);
        var sl = SharedMemory.Allocate<float>(tile.QueryBlock);
        var sd = SharedMemory.Allocate<float>(tile.QueryBlock);
        var m = mask.Cast<float>();
        var ls = lse.Cast<float>();
        var dl = delta.Cast<float>();

        int blocks = (a.S + bk - 1) / bk, n = Grid.IdxX / blocks, j0 = (Grid.IdxX - n * blocks) * bk, t = Group.IdxX;
        Stage(k, a.K, a, n, j0, bk, a.S, a.E, sk, pitch);
        Stage(v, a.V, a, n, j0, bk, a.S, a.Ev, sv, pitch);
        int c = t % w, rs = t / w, step = threads / w;
        float k0 = 0, k1 = 0, k2 = 0, k3 = 0, v0 = 0, v1 = 0, v2 = 0, v3 = 0;

        for (int i0 = a.Causal != 0 ? j0 / bq * bq : 0; i0 < a.L; i0 += bq)
        {
            Group.Barrier(); // k and v are staged; the previous block's q, dO, P and dS are read
            Stage(q, a.Q, a, n, i0, bq, a.L, a.E, sq, pitch);
            Stage(dO, a.G, a, n, i0, bq, a.L, a.Ev, sg, pitch);
            StageRowStats(ls, dl, a, n, i0, bq, sl, sd);
            Group.Barrier();
            for (int p = t; p < bq * bk; p += threads)
            {
                int ii = p / bk, jj = p - ii * bk;
                sds[p] = ScoreGrad(sq, sg, ii, sk, sv, jj, sl, sd, m, a, n, i0 + ii, j0 + jj, out float pr);
                sp[p] = pr;
            }
            Group.Barrier();
            int queries = Math.Min(bq, a.L - i0);
            if (c < a.E)
            {
                k0 = Product(k0, sds, rs, bk, sq, pitch, c, queries);
                k1 = Product(k1, sds, rs + step, bk, sq, pitch, c, queries);
                k2 = Product(k2, sds, rs + 2 * step, bk, sq, pitch, c, queries);
                k3 = Product(k3, sds, rs + 3 * step, bk, sq, pitch, c, queries);
            }
            if (c < a.Ev)
            {
                v0 = Product(v0, sp, rs, bk, sg, pitch, c, queries);
                v1 = Product(v1, sp, rs + step, bk, sg, pitch, c, queries);
                v2 = Product(v2, sp, rs + 2 * step, bk, sg, pitch, c, queries);
                v3 = Product(v3, sp, rs + 3 * step, bk, sg, pitch, c, queries);
            }
        }
        if (c < a.E)
        {
            StoreKey(dk, a.DK, a, n, j0 + rs, c, k0 * a.Scale);
            StoreKey(dk, a.DK, a, n, j0 + rs + step, c, k1 * a.Scale);
            StoreKey(dk, a.DK, a, n, j0 + rs + 2 * step, c, k2 * a.Scale);
            StoreKey(dk, a.DK, a, n, j0 + rs + 3 * step, c, k3 * a.Scale);
        }
        if (c < a.Ev)
        {
            StoreKey(dv, a.DV, a, n, j0 + rs, c, v0);
            StoreKey(dv, a.DV, a, n, j0 + rs + step, c, v1);
            StoreKey(dv, a.DV, a, n, j0 + rs + 2 * step, c, v2);
            StoreKey(dv, a.DV, a, n, j0 + rs + 3 * step, c, v3);
        }
    }

    // acc + Σ_r x[at + r·stride]·y[r·pitch + c] over r < count: one owned element's share of a block product.
    static float Product(float acc, ArrayView<float> x, int at, int stride, ArrayView<float> y, int pitch, int c, int count)
    {
        for (int r = 0; r < count; r++) acc += x[at + r * stride] * y[r * pitch + c];
        return acc;
    }

    static void StoreKey(ArrayView<byte> dst, AttentionView view, in AttentionArgs a, int n, int j, int c, float x)
    {
        if (j < a.S) StoreFloat(dst, a.Type, view.At(n, a.Heads, j) + c, x);
    }

    // acc·alpha + Σ_j p[row + j]·v[j, c] over the block's keys.
    static float Accumulate(float acc, float alpha, ArrayView<float> sp, int row, ArrayView<float> sv, int c, int keys)
    {
        int w = default(TTile).Width;
        acc *= alpha;
        for (int j = 0; j < keys; j++) acc += sp[row + j] * sv[j * w + c];
        return acc;
    }

    static void StoreRow(ArrayView<byte> dst, AttentionView view, in AttentionArgs a, int n, int i, int c, float x)
    {
        if (i < a.L) StoreFloat(dst, a.Type, view.At(n, a.Heads, i) + c, x);
    }
}

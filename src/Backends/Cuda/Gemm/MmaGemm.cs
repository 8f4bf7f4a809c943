using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Engine.Backends.Cuda.Gemm;

/// <summary>
/// The float16/bfloat16 GEMM on tensor cores (mma.sync m16n8k16, float32 accumulation, one rounding on store), built
/// for the issue rate of Hopper's mma.sync path:
/// <list type="bullet">
/// <item>Global → shared by 16-byte <c>cp.async.cg</c> into a <see cref="Stages"/>-deep ring of BK = 32 stages, one
/// <c>bar.sync</c> per stage: the copies of stage kt + 2 are issued right after the barrier that frees its buffer, and
/// <c>cp.async.wait_group 1</c> before the next barrier lets one stage stay in flight behind the one being read.</item>
/// <item>Edges by zero-fill: a copy past m, n or k reads only its valid bytes (cp.async's src-size, 0 for a whole chunk
/// outside), so any m, n, k run the same code and the last stage's zeros add nothing. The host guarantees 16-byte
/// aligned chunks (each operand contiguous along one dim, the other stride, the offset and the batch stride multiples
/// of 8 elements); other operands are packed first (see CudaBackend.MatMul.cs).</item>
/// <item>Shared memory unpadded with an XOR swizzle of 16-byte chunks (see <see cref="Swizzle"/>), so that both the
/// copies and the eight rows of each ldmatrix hit eight distinct bank groups; 3 × (128 + 128) × 32 × 2 bytes is
/// exactly the 48 KiB of static shared memory a group may have without the dynamic-size attribute.</item>
/// <item>ldmatrix (.trans for an operand contiguous along m or n, <see cref="IMmaLayout"/>) one k16 step ahead of the
/// mma's, into a second <see cref="WarpFragments"/>.</item>
/// <item>Addresses: the shared base is read once (<see cref="IWarpMma.SharedBase"/>) and every shared address is that
/// 32-bit value plus a 32-bit offset; the global ones are per-thread 64-bit addresses advanced by a constant per stage.</item>
/// <item>Epilogue through shared memory: the warp's rounded tile is written as 4-byte pairs to a padded staging tile
/// (conflict-free), read back 16 bytes at a time and stored with 16-byte global stores when y's rows are aligned
/// (n a multiple of 8), element by element otherwise. The fused Linear (GemmArgs.Bias/Pre/Activation) adds the bias
/// in float32 before the rounding, stores that tile also to pre when asked, and applies the activation to the read-back
/// values; a plain MatMul's epilogue is the rounding alone.</item>
/// <item>Tiles walk groups of 8 tile rows column by column, so that the 8 blocks sharing a B tile run together (L2 reuse).</item>
/// </list>
/// A group of WarpsM×WarpsN warps computes a BM×BN tile (BM = WarpsM·MI·16, BN = WarpsN·NI·8). The GPU's large
/// tiling is 2×2 warps of 64×64 (<see cref="Mma4x8{TInstr}"/>): 128 float32 accumulators and 2 × 32 fragment registers
/// per thread put a thread near 230 of its 255 registers, so 128 threads per group (two groups, eight warps, per
/// multiprocessor by registers, and the 48 KiB of shared memory allows four): 64×64 is the largest warp tile that
/// fits, and the largest warp tile is what sets the ratio of mma's to ldmatrix's (32 mma per 8 ldmatrix.x4) and the
/// bytes each block pulls from L2 per flop. Eight warps of 64×64 (128×256) would halve B's L2 traffic again but need
/// 72 KiB of shared memory for three stages, i.e. dynamic shared memory with cuFuncSetAttribute: the next step.
/// </summary>
static class MmaGemm<TBlock, TWarp, TInstr, TLayout>
    where TBlock : struct, IMmaBlock
    where TWarp : struct, IMmaWarpTile<TInstr>
    where TInstr : struct, IWarpMma
    where TLayout : struct, IMmaLayout
{
    /// <summary>k per stage: two k16 steps.</summary>
    public const int BK = 32;

    /// <summary>Depth of the shared-memory ring (the PTX's <c>cp.async.wait_group 1</c> assumes 3).</summary>
    public const int Stages = 3;

    /// <summary>Threads per group for this tiling.</summary>
    public static int Threads => 32 * default(TBlock).WarpsM * default(TBlock).WarpsN;

    /// <summary>Rows of the block tile.</summary>
    public static int BM => default(TBlock).WarpsM * default(TWarp).MI * 16;

    /// <summary>Columns of the block tile.</summary>
    public static int BN => default(TBlock).WarpsN * default(TWarp).NI * 8;

    /// <summary>Half words of the stage ring or of the epilogue's staging tiles, whichever is larger (they share the memory).</summary>
    static int DataHalves => Math.Max(Stages * (BM + BN) * BK, default(TBlock).WarpsM * default(TBlock).WarpsN * default(TWarp).MI * 16 * (default(TWarp).NI * 8 + 8) + BN);

    /// <summary>Bytes of the one shared allocation (the stages, or the epilogue staging, and the emulation's scratch).</summary>
    public static int SharedBytes => 2 * DataHalves + 4 * default(TBlock).WarpsM * default(TBlock).WarpsN * default(TInstr).ScratchWords;

    /// <summary>
    /// The position of 16-byte chunk <paramref name="chunk"/> of row <paramref name="row"/> in a row of
    /// <paramref name="chunks"/> chunks (4, 8 or 16): XOR with the row's low bits, so that eight consecutive rows at one
    /// chunk (what one ldmatrix matrix reads) land in eight distinct 16-byte bank groups. Rows of 8 or 16 chunks
    /// (128, 256 bytes) repeat the banks every row: XOR with row mod 8. Rows of 4 chunks (64 bytes) pair up in one
    /// 128-byte bank cycle: XOR with (row / 2) mod 4.
    /// </summary>
    static int Swizzle(int row, int chunk, int chunks) => chunks >= 8 ? chunk ^ (row & 7) : chunk ^ ((row >> 1) & 3);

    /// <summary>The byte offset of (row, chunk) in an operand's stage region of rows of <paramref name="chunks"/> chunks.</summary>
    static uint ChunkOffset(int row, int chunk, int chunks) => (uint)((row * chunks + Swizzle(row, chunk, chunks)) << 4);

    public static void Kernel(GemmArgs g, ArrayView<byte> a, ArrayView<byte> b, ArrayView<byte> y, ArrayView<byte> bias, ArrayView<byte> pre)
    {
        var s = Shared();
        Tile<TLayout, HalfOutput>(g, Grid.IdxX, g.BatchStart + Grid.IdxY, s, a, b, y, bias, pre);
    }

    /// <summary>
    /// Two products in one launch (the fused Linear's backward, IBackend.LinearGradients): blocks [0, FirstTiles)
    /// compute <see cref="GroupedGemmArgs.First"/>'s tiles with this class's layout, the rest the second problem's with
    /// <typeparamref name="TLayout1"/>, stored as <typeparamref name="TOut1"/> (the half type, or float32 for a master
    /// weight's gradient). Each problem has batch 1 and no epilogue; one shared allocation serves both bodies.
    /// </summary>
    public static void Grouped<TLayout1, TOut1>(GroupedGemmArgs g, ArrayView<byte> a0, ArrayView<byte> b0, ArrayView<byte> y0,
        ArrayView<byte> a1, ArrayView<byte> b1, ArrayView<byte> y1)
        where TLayout1 : struct, IMmaLayout where TOut1 : struct, IMmaOutput
    {
        var s = Shared();
        int t = Grid.IdxX;
        if (t < g.FirstTiles) Tile<TLayout, HalfOutput>(g.First, t, 0, s, a0, b0, y0, y0, y0);
        else Tile<TLayout1, TOut1>(g.Second, t - g.FirstTiles, 0, s, a1, b1, y1, y1, y1);
    }

    // The block's one shared allocation: the stage ring (or the epilogue's staging and the bias), then the emulation's scratch.
    static ArrayView<ushort> Shared()
    {
        TBlock blk = default;
        TWarp acc = default;
        TInstr ins = default;
        int warps = blk.WarpsM * blk.WarpsN;
        int mi16 = acc.MI * 16, ni8 = acc.NI * 8;
        int bm = blk.WarpsM * mi16, bn = blk.WarpsN * ni8;
        int ringHalves = Stages * (bm + bn) * BK, epiHalves = warps * mi16 * (ni8 + 8);
        int dataHalves = ringHalves > epiHalves + bn ? ringHalves : epiHalves + bn;
        var s = SharedMemory.Allocate<ushort>(dataHalves + 2 * warps * ins.ScratchWords);
        if (CudaAsm.IsSupported) s = s.AsAligned16(); // ldmatrix and cp.async address 16-byte rows
        return s;
    }

    // Tile t of batch entry batch with operand layout TL, stored as TOut.
    static void Tile<TL, TOut>(in GemmArgs g, int t, long batch, ArrayView<ushort> s, ArrayView<byte> a, ArrayView<byte> b, ArrayView<byte> y,
        ArrayView<byte> bias, ArrayView<byte> pre) where TL : struct, IMmaLayout where TOut : struct, IMmaOutput
    {
        TBlock blk = default;
        TWarp acc = default;
        TInstr ins = default;
        TL lay = default;
        int warps = blk.WarpsM * blk.WarpsN, threads = 32 * warps;
        int mi16 = acc.MI * 16, ni8 = acc.NI * 8;
        int bm = blk.WarpsM * mi16, bn = blk.WarpsN * ni8;
        int epiPitch = ni8 + 8;
        // The epilogue's staging tiles, then the block's slice of the Linear's bias (bn halves), share the ring's memory.
        int ringHalves = Stages * (bm + bn) * BK, epiHalves = warps * mi16 * epiPitch;
        int dataHalves = ringHalves > epiHalves + bn ? ringHalves : epiHalves + bn;
        uint sBase = ins.SharedBase();
        var scratch = s.SubView(dataHalves, 2 * warps * ins.ScratchWords).Cast<uint>();

        int tid = Group.IdxX, lane = tid & 31, warp = tid >> 5;
        int warpRow = warp / blk.WarpsN * mi16, warpCol = warp % blk.WarpsN * ni8;
        var warpScratch = scratch.SubView(warp * ins.ScratchWords, ins.ScratchWords);

        // Groups of 8 tile rows, walked column by column.
        int groupTiles = 8 * g.TilesN, first = t / groupTiles * 8;
        int rowsInGroup = g.TilesM - first < 8 ? g.TilesM - first : 8;
        int inGroup = t - first / 8 * groupTiles;
        int tm = first + inGroup % rowsInGroup, tn = inGroup / rowsInGroup;
        int row0 = tm * bm, col0 = tn * bn;
        int mLeft = g.M - row0, nLeft = g.N - col0;
        var av = a.Cast<ushort>();
        var bv = b.Cast<ushort>();
        var yv = y.Cast<ushort>();
        // A constant in the PTX kernels (one half type each), so the epilogue holds one conversion.
        int bf16 = ins.InputIsBf16 >= 0 ? ins.InputIsBf16 : g.DType == (int)DType.BFloat16 ? 1 : 0;

        // ---- the copy plan: each operand's stage is R rows of C 16-byte chunks (A: bm rows along m of BK / 8 chunks
        // along k, or BK rows along k of bm / 8 chunks along m; B likewise); thread tid copies chunk tid % C of rows
        // tid / C + p·threads / C. "Rows left" and "elements left in the row" decide each copy's valid bytes.
        int aTrans = lay.ATrans, bTrans = lay.BTrans;
        int aC = aTrans != 0 ? bm / 8 : BK / 8, bC = bTrans != 0 ? bn / 8 : BK / 8;
        int aP = bm * BK / 8 / threads, bP = bn * BK / 8 / threads;
        int aRowStep = threads / aC, bRowStep = threads / bC;
        int aRow = tid / aC, aChunk = tid - aRow * aC;
        int bRow = tid / bC, bChunk = tid - bRow * bC;
        long ldA = aTrans != 0 ? g.StrideAk : g.StrideAm;
        long ldB = bTrans != 0 ? g.StrideBk : g.StrideBn;
        long aIdx = g.OffsetA + batch * g.BatchStrideA + (aTrans != 0 ? aRow * ldA + row0 : (row0 + aRow) * ldA) + aChunk * 8;
        long bIdx = g.OffsetB + batch * g.BatchStrideB + (bTrans != 0 ? bRow * ldB + col0 : (col0 + bRow) * ldB) + bChunk * 8;
        long aPtr = g.PtrA + 2 * aIdx, bPtr = g.PtrB + 2 * bIdx;
        long aStageE = aTrans != 0 ? BK * ldA : BK, bStageE = bTrans != 0 ? BK * ldB : BK;
        long aRowE = aRowStep * ldA, bRowE = bRowStep * ldB;
        // Rows are m (n) when the operand is contiguous along k, k otherwise; the moving limit (k) shifts per stage.
        int aRowsLeft = (aTrans != 0 ? g.K : mLeft) - aRow, aColsLeft = (aTrans != 0 ? mLeft : g.K) - aChunk * 8;
        int bRowsLeft = (bTrans != 0 ? g.K : nLeft) - bRow, bColsLeft = (bTrans != 0 ? nLeft : g.K) - bChunk * 8;
        uint stageBytes = (uint)((bm + bn) * BK * 2), bRegion = (uint)(bm * BK * 2);

        int kt = 0, kTiles = (g.K + BK - 1) / BK;

        // Prologue: stages 0 and 1 in flight (a group is committed even when empty, so the wait counts stay exact).
        uint writeStage = 0;
        for (int st = 0; st < Stages - 1; st++)
        {
            if (st < kTiles)
            {
                int k0 = st * BK;
                CopyOperand(ins, s, sBase, writeStage, aP, aRowStep, aRow, aChunk, aC, aTrans, aRowsLeft, aColsLeft, k0, av, aIdx, aPtr, aRowE, g.PtrA);
                CopyOperand(ins, s, sBase, writeStage + bRegion, bP, bRowStep, bRow, bChunk, bC, bTrans, bRowsLeft, bColsLeft, k0, bv, bIdx, bPtr, bRowE, g.PtrB);
            }
            ins.CommitGroup();
            aIdx += aStageE; aPtr += 2 * aStageE;
            bIdx += bStageE; bPtr += 2 * bStageE;
            writeStage += stageBytes;
        }
        ins.WaitGroupAllButOne();
        Group.Barrier();

        uint readStage = 0;
        var f0 = LoadFragments(ins, s, sBase, readStage, bRegion, 0, warpRow, warpCol, lane, aC, bC, aTrans, bTrans, warpScratch);
        for (; kt < kTiles; kt++)
        {
            var f1 = LoadFragments(ins, s, sBase, readStage, bRegion, 1, warpRow, warpCol, lane, aC, bC, aTrans, bTrans, warpScratch);
            // The buffer of stage kt + 2 is the one stage kt − 1 used: every warp left it before the last barrier.
            int load = kt + Stages - 1;
            if (load < kTiles)
            {
                int k0 = load * BK;
                CopyOperand(ins, s, sBase, writeStage, aP, aRowStep, aRow, aChunk, aC, aTrans, aRowsLeft, aColsLeft, k0, av, aIdx, aPtr, aRowE, g.PtrA);
                CopyOperand(ins, s, sBase, writeStage + bRegion, bP, bRowStep, bRow, bChunk, bC, bTrans, bRowsLeft, bColsLeft, k0, bv, bIdx, bPtr, bRowE, g.PtrB);
            }
            ins.CommitGroup();
            aIdx += aStageE; aPtr += 2 * aStageE;
            bIdx += bStageE; bPtr += 2 * bStageE;
            writeStage = writeStage + stageBytes == Stages * stageBytes ? 0 : writeStage + stageBytes;
            acc.Mma(f0, lane, bf16, warpScratch);
            // Stage kt + 1 has landed (only kt + 2 may be pending) and everyone is done with stage kt's step-0 reads.
            ins.WaitGroupAllButOne();
            Group.Barrier();
            readStage = readStage + stageBytes == Stages * stageBytes ? 0 : readStage + stageBytes;
            f0 = LoadFragments(ins, s, sBase, readStage, bRegion, 0, warpRow, warpCol, lane, aC, bC, aTrans, bTrans, warpScratch);
            acc.Mma(f1, lane, bf16, warpScratch);
        }

        // ---- a float32 output (a master weight's gradient): each thread stores its accumulators as they are, no
        // rounding and no staging (a float32 tile would not fit the ring's memory) ----
        ins.WaitGroupAll();
        if (default(TOut).Float32 != 0)
        {
            acc.StoreFloat32(y.Cast<float>(), (batch * g.M + row0 + warpRow) * g.N + col0 + warpCol, g.N, mLeft - warpRow, nLeft - warpCol, lane);
            return;
        }

        // ---- epilogue: stage the rounded tile in shared memory (the ring is free once every copy landed and every
        // warp passed its last mma), then 16-byte rows out ----
        Group.Barrier();
        uint tile = (uint)(warp * mi16 * epiPitch * 2);
        if (g.Bias != 0)
        {
            // The block's bn bias values into shared memory behind the staging tiles: 16-byte cp.async chunks,
            // zero-filled past n, like the operands' copies.
            if (tid < bn / 8)
            {
                long bIdx0 = col0 + tid * 8;
                int left = g.N - (int)bIdx0, bytes = left >= 8 ? 16 : left > 0 ? 2 * left : 0;
                ins.CopyAsync16(s, sBase, (uint)(2 * epiHalves + 16 * tid), bias.Cast<ushort>(), bytes > 0 ? bIdx0 : 0,
                    bytes > 0 ? g.PtrBias + 2 * bIdx0 : g.PtrBias, bytes);
            }
            ins.CommitGroup();
            ins.WaitGroupAll();
            Group.Barrier();
        }
        var eb = new MmaBias { Shared = s, Base = epiHalves, Col = warpCol + 2 * (lane & 3), Left = nLeft, On = g.Bias, Bf16 = bf16 };
        acc.StageOutput(s, sBase, tile, epiPitch * 2, lane, bf16, eb);
        Group.Barrier();
        int perRow = acc.NI, rowsPerPass = 32 / acc.NI;
        int cr = lane / perRow, cc = lane - cr * perRow;
        int gRow = row0 + warpRow + cr, gCol = col0 + warpCol + cc * 8;
        long yIdx = (batch * g.M + gRow) * g.N + gCol;
        long yPtr = g.PtrY + 2 * yIdx, yStep = (long)rowsPerPass * g.N;
        uint sOut = tile + (uint)((cr * epiPitch + cc * 8) * 2), sStep = (uint)(rowsPerPass * epiPitch * 2);
        var pv = pre.Cast<ushort>();
        long preDelta = g.PtrPre - g.PtrY;
        for (int r = 0; r < mi16; r += rowsPerPass)
        {
            if (gRow + r < g.M && gCol < g.N)
            {
                var v = ins.SharedLoad128(s, sBase, sOut);
                // The Linear epilogue: the staged tile is the pre-activation (bias added before the one rounding); it
                // is stored as is, and the activation reads it back as the backward will (one rounding more than the
                // float32 path for y, the rounding PyTorch's unfused autocast GELU also has).
                if (g.Pre != 0) StoreChunk(ins, pv, yIdx, yPtr + preDelta, v, g.VectorY, g.N - gCol);
                if (g.Activation != 0) v = Activate(v, g.Activation, bf16);
                StoreChunk(ins, yv, yIdx, yPtr, v, g.VectorY, g.N - gCol);
            }
            yIdx += yStep; yPtr += 2 * yStep; sOut += sStep;
        }
    }

    /// <summary>Eight consecutive outputs of a row: one 16-byte store when rows are aligned, else the <paramref name="left"/> (≤ 8) that exist.</summary>
    static void StoreChunk(TInstr ins, ArrayView<ushort> yv, long yIdx, long yPtr, U4 v, int vector, int left)
    {
        if (vector != 0) { ins.GlobalStore128(yv, yIdx, yPtr, v); return; }
        yv[yIdx] = (ushort)v.X;
        if (left > 1) yv[yIdx + 1] = (ushort)(v.X >> 16);
        if (left > 2) yv[yIdx + 2] = (ushort)v.Y;
        if (left > 3) yv[yIdx + 3] = (ushort)(v.Y >> 16);
        if (left > 4) yv[yIdx + 4] = (ushort)v.Z;
        if (left > 5) yv[yIdx + 5] = (ushort)(v.Z >> 16);
        if (left > 6) yv[yIdx + 6] = (ushort)v.W;
        if (left > 7) yv[yIdx + 7] = (ushort)(v.W >> 16);
    }

    /// <summary>The activation on eight packed half-type values, in float32, each rounded once back.</summary>
    static U4 Activate(U4 v, int activation, int bf16)
    {
        v.X = ActivatePair(v.X, activation, bf16);
        v.Y = ActivatePair(v.Y, activation, bf16);
        v.Z = ActivatePair(v.Z, activation, bf16);
        v.W = ActivatePair(v.W, activation, bf16);
        return v;
    }

    static uint ActivatePair(uint pair, int activation, int bf16) =>
        WarpMma.Pack(GemmActivation.Apply(Widen((ushort)pair, bf16), activation), GemmActivation.Apply(Widen((ushort)(pair >> 16), bf16), activation), bf16);

    static float Widen(ushort h, int bf16) => bf16 != 0 ? DeviceElements.Bf16ToFloat(h) : DeviceElements.HalfToFloat(h);

    /// <summary>
    /// One operand's copies of one stage: <paramref name="count"/> (a constant, at most 8) chunks of this thread, rows
    /// <paramref name="row"/> + p·<paramref name="rowStep"/>, written out rather than looped because ILGPU does not
    /// unroll and a loop costs ~25 instructions per copy in SASS. The valid bytes of a chunk: none past the last row,
    /// else the elements left in its row (k for an operand contiguous along k, whose limit moves with
    /// <paramref name="k0"/>; m or n otherwise, whose rows are k and move instead), at most 8. A chunk with nothing to
    /// read copies from the operand's first element (an address that exists) with src-size 0.
    /// </summary>
    static void CopyOperand(TInstr ins, ArrayView<ushort> s, uint sBase, uint region, int count, int rowStep, int row, int chunk, int chunks,
        int trans, int rowsLeft, int colsLeft, int k0, ArrayView<ushort> gv, long gIdx, long gPtr, long rowE, long basePtr)
    {
        int rows = trans != 0 ? rowsLeft - k0 : rowsLeft, cols = trans != 0 ? colsLeft : colsLeft - k0;
        int bytes = cols >= 8 ? 16 : cols > 0 ? 2 * cols : 0;
        Copy(ins, s, sBase, region, 0, rowStep, row, chunk, chunks, rows, bytes, gv, gIdx, gPtr, rowE, basePtr);
        if (count > 1) Copy(ins, s, sBase, region, 1, rowStep, row, chunk, chunks, rows, bytes, gv, gIdx, gPtr, rowE, basePtr);
        if (count > 2)
        {
            Copy(ins, s, sBase, region, 2, rowStep, row, chunk, chunks, rows, bytes, gv, gIdx, gPtr, rowE, basePtr);
            Copy(ins, s, sBase, region, 3, rowStep, row, chunk, chunks, rows, bytes, gv, gIdx, gPtr, rowE, basePtr);
        }
        if (count > 4)
        {
            Copy(ins, s, sBase, region, 4, rowStep, row, chunk, chunks, rows, bytes, gv, gIdx, gPtr, rowE, basePtr);
            Copy(ins, s, sBase, region, 5, rowStep, row, chunk, chunks, rows, bytes, gv, gIdx, gPtr, rowE, basePtr);
            Copy(ins, s, sBase, region, 6, rowStep, row, chunk, chunks, rows, bytes, gv, gIdx, gPtr, rowE, basePtr);
            Copy(ins, s, sBase, region, 7, rowStep, row, chunk, chunks, rows, bytes, gv, gIdx, gPtr, rowE, basePtr);
        }
    }

    static void Copy(TInstr ins, ArrayView<ushort> s, uint sBase, uint region, int p, int rowStep, int row, int chunk, int chunks,
        int rows, int bytes, ArrayView<ushort> gv, long gIdx, long gPtr, long rowE, long basePtr)
    {
        int r = p * rowStep;
        bool ok = r < rows && bytes > 0;
        // A row step that is a multiple of 8 leaves the swizzle's row bits alone: a constant offset from row 0's chunk.
        uint at = rowStep % 8 == 0 ? ChunkOffset(row, chunk, chunks) + (uint)(r * chunks * 16) : ChunkOffset(row + r, chunk, chunks);
        ins.CopyAsync16(s, sBase, region + at, gv, ok ? gIdx + p * rowE : 0, ok ? gPtr + 2 * p * rowE : basePtr, ok ? bytes : 0);
    }

    /// <summary>
    /// The fragments of k16 step <paramref name="ks"/> of the stage at <paramref name="stage"/>. Lane addresses, from the
    /// PTX ISA's ldmatrix rule (lane 8j + r gives row r of matrix j):
    /// A along k, stored [m][k]: matrices (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15) = a0..a3:
    /// row m = lane % 16, chunk lane / 16. A along m, stored [k][m], .trans: matrix j covers m 8·(j % 2), k 8·(j / 2):
    /// row k = lane % 8 + 8·(lane / 16), chunk (lane / 8) % 2. B along k, stored [n][k]: matrices (n 0-7, k 0-7),
    /// (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) = b0, b1 of two n8 blocks: row n = lane % 8 + 8·(lane / 16),
    /// chunk (lane / 8) % 2. B along n, stored [k][n], .trans: matrix j covers k 8·(j % 2), n 8·(j / 2).
    /// </summary>
    static WarpFragments LoadFragments(TInstr ins, ArrayView<ushort> s, uint sBase, uint stage, uint bRegion, int ks,
        int warpRow, int warpCol, int lane, int aC, int bC, int aTrans, int bTrans, ArrayView<uint> scratch)
    {
        TWarp acc = default;
        WarpFragments f = default;
        f.A0 = ins.LoadMatrixX4(s, sBase, stage + AOffset(0, ks, warpRow, lane, aC, aTrans), aTrans, lane, scratch);
        if (acc.MI > 1) f.A1 = ins.LoadMatrixX4(s, sBase, stage + AOffset(1, ks, warpRow, lane, aC, aTrans), aTrans, lane, scratch);
        if (acc.MI > 2)
        {
            f.A2 = ins.LoadMatrixX4(s, sBase, stage + AOffset(2, ks, warpRow, lane, aC, aTrans), aTrans, lane, scratch);
            f.A3 = ins.LoadMatrixX4(s, sBase, stage + AOffset(3, ks, warpRow, lane, aC, aTrans), aTrans, lane, scratch);
        }
        uint bs = stage + bRegion;
        f.B0 = ins.LoadMatrixX4(s, sBase, bs + BOffset(0, ks, warpCol, lane, bC, bTrans), bTrans, lane, scratch);
        if (acc.NI > 2) f.B1 = ins.LoadMatrixX4(s, sBase, bs + BOffset(1, ks, warpCol, lane, bC, bTrans), bTrans, lane, scratch);
        if (acc.NI > 4)
        {
            f.B2 = ins.LoadMatrixX4(s, sBase, bs + BOffset(2, ks, warpCol, lane, bC, bTrans), bTrans, lane, scratch);
            f.B3 = ins.LoadMatrixX4(s, sBase, bs + BOffset(3, ks, warpCol, lane, bC, bTrans), bTrans, lane, scratch);
        }
        return f;
    }

    static uint AOffset(int i, int ks, int warpRow, int lane, int chunks, int trans) =>
        trans != 0
            ? ChunkOffset(ks * 16 + (lane & 7) + ((lane >> 4) << 3), (warpRow + i * 16) / 8 + ((lane >> 3) & 1), chunks)
            : ChunkOffset(warpRow + i * 16 + (lane & 15), ks * 2 + (lane >> 4), chunks);

    static uint BOffset(int j, int ks, int warpCol, int lane, int chunks, int trans) =>
        trans != 0
            ? ChunkOffset(ks * 16 + (lane & 7) + (((lane >> 3) & 1) << 3), (warpCol + j * 16) / 8 + (lane >> 4), chunks)
            : ChunkOffset(warpCol + j * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1), chunks);
}

#pragma warning disable CS1591 // the block shapes are named by their numbers: warps along m × warps along n
/// <summary>2×2 warps (128 threads): with <see cref="Mma4x8{TInstr}"/>, 128×128 tiles (the GPU's tiling for large products); with <see cref="Mma2x4{TInstr}"/>, 64×64.</summary>
public struct Warps2x2 : IMmaBlock { public readonly int WarpsM => 2; public readonly int WarpsN => 2; }

/// <summary>2×1 warps (64 threads, the emulator's group size).</summary>
public struct Warps2x1 : IMmaBlock { public readonly int WarpsM => 2; public readonly int WarpsN => 1; }

/// <summary>1×2 warps (64 threads).</summary>
public struct Warps1x2 : IMmaBlock { public readonly int WarpsM => 1; public readonly int WarpsN => 2; }
#pragma warning restore CS1591

using Engine.Backends.Cpu.Gemm;

namespace Engine.Backends.Cpu.Jit;

/// <summary>
/// The bf16 GEMM micro-kernel, generated at run time as x86-64 machine code (vdpbf16ps has no .NET intrinsic):
/// C[0..6, 0..64] = (accumulate ? C + acc : acc), acc = sum over k-pairs q of A-pair(i, q) . B-pair(q, j) in float32.
/// </summary>
/// <remarks>
/// <para>Packed operands (see <see cref="Bf16Gemm"/>): a 32-bit lane holds a bf16 pair {x[k], x[k+1]} with x[k] in the
/// low half, which is how vdpbf16ps reads its sources. The A micro-panel stores per k-pair 6 lanes (one per row,
/// 24 bytes), the B micro-panel per k-pair 64 lanes (one per column, 256 bytes).</para>
/// <para>Tile 6 x 64, registers: zmm0-23 are the accumulators (row r, columns 16c..16c+15 in zmm(4r + c)),
/// zmm24-27 hold the four B vectors of the current k-pair, and each row's A pair comes in as a 32-bit broadcast:
/// either folded into vdpbf16ps as an m32bcst operand (24 broadcast loads + 4 vector loads per 24 vdpbf16ps) or,
/// in the <see cref="Variant.RegisterBroadcast"/> form, loaded once per row by vpbroadcastd into zmm28/zmm29
/// (6 + 4 loads per 24 vdpbf16ps, for cores whose load ports would otherwise be the limit). Either way 24
/// independent accumulator chains hide the instruction's ~5-cycle latency at two issues per cycle.</para>
/// <para>Calling convention System V AMD64 (what <c>delegate* unmanaged</c> means on Linux): rdi = A panel,
/// rsi = B panel, rdx = C, rcx = C row stride in bytes, r8 = number of k-pairs (at least 1); rax is the loop
/// counter. All of these and all zmm registers are caller-saved, so the kernel needs no push/pop and no stack.</para>
/// </remarks>
internal sealed unsafe class Bf16Microkernel : IDisposable
{
    /// <summary>Rows of the micro-tile.</summary>
    public const int MR = 6;
    /// <summary>Columns of the micro-tile (four zmm of 16 float32).</summary>
    public const int NR = 64;
    /// <summary>k-pairs per iteration of the main loop; the rest runs one pair at a time.</summary>
    public const int Unroll = 4;

    /// <summary>How the A broadcast is fed to vdpbf16ps.</summary>
    public enum Variant
    {
        /// <summary>vdpbf16ps acc, b, [a]{1to16}: the broadcast folded into the instruction (oneDNN's usual form).</summary>
        EmbeddedBroadcast,
        /// <summary>vpbroadcastd t, [a] once per row, then register-only vdpbf16ps.</summary>
        RegisterBroadcast,
    }

    private readonly ExecutableMemory _memory;

    /// <summary>(a, b, c, ldcBytes, kPairs): overwrites the C tile.</summary>
    public readonly delegate* unmanaged[SuppressGCTransition]<uint*, uint*, float*, long, long, void> Store;
    /// <summary>(a, b, c, ldcBytes, kPairs): adds the product to the C tile.</summary>
    public readonly delegate* unmanaged[SuppressGCTransition]<uint*, uint*, float*, long, long, void> Accumulate;

    /// <summary>The variant this instance was generated with.</summary>
    public Variant Kind { get; }

    private Bf16Microkernel(ExecutableMemory memory, int accumulateOffset, Variant kind)
    {
        // SuppressGCTransition: a tile takes about a microsecond and touches no managed state, so skipping the
        // cooperative-to-preemptive GC mode switch (tens of ns per call) is safe and worth a few percent.
        _memory = memory;
        Store = (delegate* unmanaged[SuppressGCTransition]<uint*, uint*, float*, long, long, void>)memory.Pointer;
        Accumulate = (delegate* unmanaged[SuppressGCTransition]<uint*, uint*, float*, long, long, void>)(memory.Pointer + accumulateOffset);
        Kind = kind;
    }

    /// <summary>
    /// Generates both kernels (store, accumulate) into one executable mapping; null with a reason when the OS gives
    /// no executable memory. Does not check the CPU: callers check <see cref="CpuFeatures.HasAvx512Bf16"/>.
    /// </summary>
    public static Bf16Microkernel? TryCreate(Variant kind, out string? error)
    {
        var store = Generate(accumulate: false, kind);
        var add = Generate(accumulate: true, kind);
        // Start the second kernel on a fresh 64-byte line so each entry point is fetch-aligned.
        int offset = (store.Length + 63) & ~63;
        var code = new byte[offset + add.Length];
        store.CopyTo(code, 0);
        code.AsSpan(store.Length, offset - store.Length).Fill(0xCC); // int3 between the two
        add.CopyTo(code, offset);
        var memory = ExecutableMemory.TryCreate(code, out error);
        return memory is null ? null : new Bf16Microkernel(memory, offset, kind);
    }

    /// <summary>The machine code of one kernel (exposed for the encoding tests).</summary>
    public static byte[] Generate(bool accumulate, Variant kind)
    {
        const Gpr a = Gpr.Rdi, b = Gpr.Rsi, c = Gpr.Rdx, ldc = Gpr.Rcx, pairs = Gpr.R8, count = Gpr.Rax;
        var e = new X64Emitter();
        var main = e.NewLabel();
        var tail = e.NewLabel();
        var tailLoop = e.NewLabel();
        var write = e.NewLabel();

        for (int r = 0; r < 24; r++) e.VPXorD(r, r, r);

        e.Mov(count, pairs);
        e.Shr(count, 2); // Unroll = 4
        e.Jz(tail);
        e.Bind(main);
        for (int u = 0; u < Unroll; u++) Pair(e, kind, u);
        e.Add(a, Unroll * MR * 4);
        e.Add(b, Unroll * NR * 4);
        e.Dec(count);
        e.Jnz(main);

        e.Bind(tail);
        e.And(pairs, Unroll - 1);
        e.Jz(write);
        e.Bind(tailLoop);
        Pair(e, kind, 0);
        e.Add(a, MR * 4);
        e.Add(b, NR * 4);
        e.Dec(pairs);
        e.Jnz(tailLoop);

        e.Bind(write);
        for (int r = 0; r < MR; r++)
        {
            for (int j = 0; j < 4; j++)
            {
                int acc = 4 * r + j;
                if (accumulate) e.VAddPs(acc, acc, new Mem(c, 64 * j));
                e.VMovUps(new Mem(c, 64 * j), acc);
            }
            if (r < MR - 1) e.Add(c, ldc);
        }
        e.VZeroUpper();
        e.Ret();
        return e.ToArray();
    }

    /// <summary>One k-pair: four B loads, then 6 rows x 4 vdpbf16ps; <paramref name="u"/> selects the unrolled copy.</summary>
    private static void Pair(X64Emitter e, Variant kind, int u)
    {
        const Gpr a = Gpr.Rdi, b = Gpr.Rsi;
        for (int j = 0; j < 4; j++) e.VMovUps(24 + j, new Mem(b, u * NR * 4 + 64 * j));
        for (int r = 0; r < MR; r++)
        {
            var pair = new Mem(a, u * MR * 4 + 4 * r);
            if (kind == Variant.RegisterBroadcast)
            {
                // Alternating two temporaries lets row r+1's broadcast issue while row r's vdpbf16ps still read r's.
                int t = 28 + (r & 1);
                e.VPBroadcastD(t, pair);
                for (int j = 0; j < 4; j++) e.VDpBf16Ps(4 * r + j, 24 + j, t);
            }
            else
            {
                for (int j = 0; j < 4; j++) e.VDpBf16Ps(4 * r + j, 24 + j, pair, broadcast: true);
            }
        }
    }

    /// <summary>Unmaps the code.</summary>
    public void Dispose() => _memory.Dispose();
}

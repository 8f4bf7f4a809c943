using System.Buffers.Binary;

namespace Engine.Backends.Cpu.Jit;

/// <summary>The 16 x86-64 general-purpose registers, numbered as the encodings number them.</summary>
internal enum Gpr
{
    Rax, Rcx, Rdx, Rbx, Rsp, Rbp, Rsi, Rdi, R8, R9, R10, R11, R12, R13, R14, R15,
}

/// <summary>A memory operand <c>[base + disp]</c> (no index register: the generated kernels walk pointers).</summary>
internal readonly record struct Mem(Gpr Base, int Disp = 0);

/// <summary>A jump target inside one <see cref="X64Emitter"/>; bound once, referenced any number of times.</summary>
internal readonly record struct Label(int Id);

/// <summary>
/// A minimal x86-64 machine-code assembler, in the spirit of Xbyak (which oneDNN uses to generate its GEMM kernels),
/// limited to what <see cref="Bf16Microkernel"/> needs: a few EVEX-encoded AVX-512 instructions on zmm registers,
/// a handful of 64-bit integer instructions, and forward/backward jumps through labels.
/// </summary>
/// <remarks>
/// Encodings follow the Intel SDM, volume 2, section 2.7 (EVEX) and 2.2.1 (REX); every one is checked byte for byte
/// against GNU as in the tests. EVEX memory displacements use the compressed disp8*N form whenever the displacement is
/// a multiple of N (N = 64 for a full 512-bit operand, 4 for a 32-bit broadcast): that keeps an unrolled kernel's
/// instructions at 7 bytes instead of 10, which matters for the uop cache.
/// </remarks>
internal sealed class X64Emitter
{
    private readonly List<byte> _code = new(1024);
    private readonly List<int> _labels = [];
    private readonly List<(int At, int Label)> _fixups = [];

    /// <summary>Bytes emitted so far.</summary>
    public int Length => _code.Count;

    /// <summary>The finished code, with every jump resolved.</summary>
    public byte[] ToArray()
    {
        var code = _code.ToArray();
        foreach (var (at, label) in _fixups)
        {
            int target = _labels[label];
            if (target < 0) throw new InvalidOperationException($"X64Emitter: label {label} was never bound.");
            // rel32 counts from the end of the 4-byte field.
            BinaryPrimitives.WriteInt32LittleEndian(code.AsSpan(at), target - (at + 4));
        }
        return code;
    }

    // ------------------------------------------------------------------ labels and jumps

    /// <summary>A new, unbound label.</summary>
    public Label NewLabel()
    {
        _labels.Add(-1);
        return new Label(_labels.Count - 1);
    }

    /// <summary>Binds <paramref name="label"/> to the current position.</summary>
    public void Bind(Label label)
    {
        if (_labels[label.Id] >= 0) throw new InvalidOperationException($"X64Emitter: label {label.Id} bound twice.");
        _labels[label.Id] = _code.Count;
    }

    /// <summary><c>jnz rel32</c> (0F 85 cd). Always the 32-bit form: one size for forward and backward jumps.</summary>
    public void Jnz(Label target) => Jcc(0x85, target);

    /// <summary><c>jz rel32</c> (0F 84 cd).</summary>
    public void Jz(Label target) => Jcc(0x84, target);

    /// <summary><c>jmp rel32</c> (E9 cd).</summary>
    public void Jmp(Label target)
    {
        Byte(0xE9);
        Rel32(target);
    }

    private void Jcc(byte cc, Label target)
    {
        Byte(0x0F);
        Byte(cc);
        Rel32(target);
    }

    private void Rel32(Label target)
    {
        _fixups.Add((_code.Count, target.Id));
        Int32(0);
    }

    // ------------------------------------------------------------------ integer instructions

    /// <summary><c>add r64, imm</c>: REX.W 83 /0 ib when the immediate fits a signed byte, else REX.W 81 /0 id.</summary>
    public void Add(Gpr dst, int imm) => AluImm(0, dst, imm);

    /// <summary><c>sub r64, imm</c> (83 /5 or 81 /5).</summary>
    public void Sub(Gpr dst, int imm) => AluImm(5, dst, imm);

    /// <summary><c>and r64, imm</c> (83 /4 or 81 /4; the immediate is sign-extended to 64 bits).</summary>
    public void And(Gpr dst, int imm) => AluImm(4, dst, imm);

    /// <summary><c>add r64, r64</c>: REX.W 01 /r (the r/m operand is the destination).</summary>
    public void Add(Gpr dst, Gpr src) => RegReg(0x01, src, dst);

    /// <summary><c>mov r64, r64</c>: REX.W 89 /r.</summary>
    public void Mov(Gpr dst, Gpr src) => RegReg(0x89, src, dst);

    /// <summary><c>test r64, r64</c>: REX.W 85 /r.</summary>
    public void Test(Gpr a, Gpr b) => RegReg(0x85, b, a);

    /// <summary><c>dec r64</c>: REX.W FF /1 (the one-byte 48+r forms are REX prefixes in 64-bit mode).</summary>
    public void Dec(Gpr dst)
    {
        Rex(true, 0, (int)dst);
        Byte(0xFF);
        ModRmReg(1, (int)dst);
    }

    /// <summary><c>shr r64, imm8</c>: REX.W C1 /5 ib.</summary>
    public void Shr(Gpr dst, byte imm)
    {
        Rex(true, 0, (int)dst);
        Byte(0xC1);
        ModRmReg(5, (int)dst);
        Byte(imm);
    }

    /// <summary><c>push r64</c>: 50+rd, REX.B for r8-r15 (64-bit operand size is the default, no REX.W).</summary>
    public void Push(Gpr reg)
    {
        if ((int)reg >= 8) Byte(0x41);
        Byte((byte)(0x50 + ((int)reg & 7)));
    }

    /// <summary><c>pop r64</c>: 58+rd.</summary>
    public void Pop(Gpr reg)
    {
        if ((int)reg >= 8) Byte(0x41);
        Byte((byte)(0x58 + ((int)reg & 7)));
    }

    /// <summary><c>ret</c> (C3).</summary>
    public void Ret() => Byte(0xC3);

    /// <summary><c>prefetcht0 m8</c>: 0F 18 /1.</summary>
    public void PrefetchT0(Mem m)
    {
        if ((int)m.Base >= 8) Byte(0x41);
        Byte(0x0F);
        Byte(0x18);
        ModRmMem(1, m, 1);
    }

    /// <summary>
    /// <c>vzeroupper</c> (VEX C5 F8 77): clears the upper halves of ymm/zmm0-15 so that later SSE code in the caller
    /// pays no state-transition penalty.
    /// </summary>
    public void VZeroUpper()
    {
        Byte(0xC5);
        Byte(0xF8);
        Byte(0x77);
    }

    private void AluImm(int ext, Gpr dst, int imm)
    {
        Rex(true, 0, (int)dst);
        bool small = imm is >= sbyte.MinValue and <= sbyte.MaxValue;
        Byte(small ? (byte)0x83 : (byte)0x81);
        ModRmReg(ext, (int)dst);
        if (small) Byte((byte)(sbyte)imm);
        else Int32(imm);
    }

    private void RegReg(byte opcode, Gpr reg, Gpr rm)
    {
        Rex(true, (int)reg, (int)rm);
        Byte(opcode);
        ModRmReg((int)reg, (int)rm);
    }

    private void Rex(bool w, int reg, int rm)
    {
        // 0100WRXB: R extends ModRM.reg, B extends ModRM.rm (no index registers here, so X is always 0).
        Byte((byte)(0x40 | (w ? 8 : 0) | ((reg >> 3) & 1) << 2 | ((rm >> 3) & 1)));
    }

    // ------------------------------------------------------------------ AVX-512 (EVEX, 512-bit)

    /// <summary>
    /// <c>vdpbf16ps zmm1, zmm2, zmm3</c>: EVEX.512.F3.0F38.W0 52 /r (AVX512_BF16). Per 32-bit lane,
    /// zmm1 += zmm2.hi*zmm3.hi + zmm2.lo*zmm3.lo on bf16 halves, in float32 with DAZ/FTZ and round-to-nearest-even.
    /// </summary>
    public void VDpBf16Ps(int dst, int src1, int src2) => EvexReg(0x52, Map0F38, PpF3, false, dst, src1, src2);

    /// <summary>
    /// <c>vdpbf16ps zmm1, zmm2, m512</c> or, with <paramref name="broadcast"/>, <c>m32bcst</c> ({1to16}: one bf16 pair
    /// repeated in all 16 lanes, EVEX.b = 1, disp8 scaled by 4 instead of 64).
    /// </summary>
    public void VDpBf16Ps(int dst, int src1, Mem src2, bool broadcast) =>
        EvexMem(0x52, Map0F38, PpF3, false, dst, src1, src2, broadcast, broadcast ? 4 : 64);

    /// <summary>
    /// <c>vfmadd231ps zmm1, zmm2, zmm3</c>: EVEX.512.66.0F38.W0 B8 /r (zmm1 += zmm2 * zmm3). Not used by the GEMM kernel;
    /// it is the float32 yardstick the throughput probe measures vdpbf16ps against.
    /// </summary>
    public void VFmadd231Ps(int dst, int src1, int src2) => EvexReg(0xB8, Map0F38, Pp66, false, dst, src1, src2);

    /// <summary><c>vmovups zmm, m512</c>: EVEX.512.0F.W0 10 /r.</summary>
    public void VMovUps(int dst, Mem src) => EvexMem(0x10, Map0F, PpNone, false, dst, 0, src, false, 64);

    /// <summary><c>vmovups m512, zmm</c>: EVEX.512.0F.W0 11 /r.</summary>
    public void VMovUps(Mem dst, int src) => EvexMem(0x11, Map0F, PpNone, false, src, 0, dst, false, 64);

    /// <summary><c>vmovaps zmm, m512</c>: EVEX.512.0F.W0 28 /r (faults unless 64-byte aligned).</summary>
    public void VMovAps(int dst, Mem src) => EvexMem(0x28, Map0F, PpNone, false, dst, 0, src, false, 64);

    /// <summary><c>vmovaps m512, zmm</c>: EVEX.512.0F.W0 29 /r.</summary>
    public void VMovAps(Mem dst, int src) => EvexMem(0x29, Map0F, PpNone, false, src, 0, dst, false, 64);

    /// <summary><c>vaddps zmm1, zmm2, m512</c>: EVEX.512.0F.W0 58 /r.</summary>
    public void VAddPs(int dst, int src1, Mem src2) => EvexMem(0x58, Map0F, PpNone, false, dst, src1, src2, false, 64);

    /// <summary><c>vaddps zmm1, zmm2, zmm3</c>.</summary>
    public void VAddPs(int dst, int src1, int src2) => EvexReg(0x58, Map0F, PpNone, false, dst, src1, src2);

    /// <summary><c>vxorps zmm1, zmm2, zmm3</c>: EVEX.512.0F.W0 57 /r. Needs AVX512DQ (see <see cref="VPXorD"/>).</summary>
    public void VXorPs(int dst, int src1, int src2) => EvexReg(0x57, Map0F, PpNone, false, dst, src1, src2);

    /// <summary>
    /// <c>vpxord zmm1, zmm2, zmm3</c>: EVEX.512.66.0F.W0 EF /r. The AVX512F way to zero a zmm (a recognized zeroing
    /// idiom when both sources are the destination); vxorps on zmm would add an AVX512DQ requirement.
    /// </summary>
    public void VPXorD(int dst, int src1, int src2) => EvexReg(0xEF, Map0F, Pp66, false, dst, src1, src2);

    /// <summary><c>vpbroadcastd zmm, m32</c>: EVEX.512.66.0F38.W0 58 /r (tuple T1S: disp8 scaled by 4). A pure load uop.</summary>
    public void VPBroadcastD(int dst, Mem src) => EvexMem(0x58, Map0F38, Pp66, false, dst, 0, src, false, 4);

    private const int Map0F = 1, Map0F38 = 2;
    private const int PpNone = 0, Pp66 = 1, PpF3 = 2;

    private void EvexReg(byte opcode, int map, int pp, bool w, int reg, int vvvv, int rm)
    {
        CheckZmm(reg); CheckZmm(vvvv); CheckZmm(rm);
        // Register-direct r/m: EVEX.B extends it to 16 registers and EVEX.X to 32.
        EvexPrefix(map, pp, w, reg, vvvv, rmBit3: (rm >> 3) & 1, xBit: (rm >> 4) & 1, broadcast: false);
        Byte(opcode);
        ModRmReg(reg & 7, rm & 7);
    }

    private void EvexMem(byte opcode, int map, int pp, bool w, int reg, int vvvv, Mem m, bool broadcast, int n)
    {
        CheckZmm(reg); CheckZmm(vvvv);
        EvexPrefix(map, pp, w, reg, vvvv, rmBit3: ((int)m.Base >> 3) & 1, xBit: 0, broadcast);
        Byte(opcode);
        ModRmMem(reg & 7, m, n);
    }

    /// <summary>
    /// The four-byte EVEX prefix: 62, then P0 = R X B R' 0 0 m m, P1 = W v v v v 1 p p, P2 = z L' L b V' a a a, where
    /// R, X, B, R', vvvv and V' are stored inverted. L'L = 10 selects 512 bits; no masking (aaa = 0), merge (z = 0).
    /// An instruction without a vvvv operand passes 0, which encodes as the required 1111 / V' = 1.
    /// </summary>
    private void EvexPrefix(int map, int pp, bool w, int reg, int vvvv, int rmBit3, int xBit, bool broadcast)
    {
        Byte(0x62);
        Byte((byte)(((~reg >> 3) & 1) << 7 | ((~xBit) & 1) << 6 | ((~rmBit3) & 1) << 5 | ((~reg >> 4) & 1) << 4 | map));
        Byte((byte)((w ? 0x80 : 0) | (~vvvv & 15) << 3 | 0x04 | pp));
        Byte((byte)(0x40 | (broadcast ? 0x10 : 0) | ((~vvvv >> 4) & 1) << 3));
    }

    private static void CheckZmm(int r)
    {
        if ((uint)r > 31) throw new ArgumentOutOfRangeException(nameof(r), r, "X64Emitter: zmm registers are 0..31.");
    }

    private void ModRmReg(int reg, int rm) => Byte((byte)(0xC0 | (reg & 7) << 3 | (rm & 7)));

    /// <summary>
    /// ModRM (+ SIB) + displacement for <c>[base + disp]</c>. rsp/r12 as a base need a SIB byte (rm = 100 means
    /// "SIB follows"); rbp/r13 with mod = 00 would mean RIP-relative / no base, so they always take a displacement.
    /// <paramref name="n"/> is the EVEX disp8 scale (1 for legacy encodings).
    /// </summary>
    private void ModRmMem(int reg, Mem m, int n)
    {
        int b = (int)m.Base & 7;
        int mod = m.Disp == 0 && b != 5 ? 0 : m.Disp % n == 0 && m.Disp / n is >= sbyte.MinValue and <= sbyte.MaxValue ? 1 : 2;
        Byte((byte)(mod << 6 | (reg & 7) << 3 | b));
        if (b == 4) Byte(0x24); // scale 1, index 100 = none, base 100 = rsp/r12
        if (mod == 1) Byte((byte)(sbyte)(m.Disp / n));
        else if (mod == 2) Int32(m.Disp);
    }

    private void Byte(byte x) => _code.Add(x);

    private void Int32(int x)
    {
        _code.Add((byte)x);
        _code.Add((byte)(x >> 8));
        _code.Add((byte)(x >> 16));
        _code.Add((byte)(x >> 24));
    }
}

using System.Diagnostics;
using Engine.Autograd;
using Engine.Backends;
using Engine.Backends.Cuda;
using Engine.Backends.Cuda.Gemm;
using Engine.Tests.Support;
using ILGPU;
using ILGPU.Runtime;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// The CUDA GEMM (src/Backends/Cuda/CudaBackend.MatMul.cs, Gemm/*.cs) through the Tensor API: every product is
/// checked against a plain float64 triple loop (tolerance atol + rtol·Σ|a||b|, the dtype's Ref.Tol) and against the
/// CPU backend's result from the same values. On the emulated device (ILGPU's CPU accelerator) by default: odd and
/// degenerate sizes, 1-D operands, broadcast batches, transposed and strided operands, every 64-thread tiling, the
/// emulated mma/ldmatrix fragment semantics against the PTX ISA's layout tables, and the backward. The tilings of
/// 128–256 threads cannot run on the emulator (64 threads per group): their PTX is compiled here and checked, and the
/// Gpu category runs them on a real device at a few hundred MB, printing GFLOP/s.
/// </summary>
[TestFixture]
[NonParallelizable] // sets CudaBackend.GemmPlanOverride
public class CudaGemmParityTests
{
    static readonly DType[] Floats = [DType.Float64, DType.Float32, DType.Float16, DType.BFloat16];

    Device _cuda;
    CudaBackend _backend = null!;

    [OneTimeSetUp]
    public void EnableEmulator()
    {
        CudaBackend.EnableEmulation();
        _cuda = CudaBackend.EmulatedDevice;
        _backend = (CudaBackend)BackendRegistry.Get(_cuda);
    }

    [TearDown]
    public void ResetPlan() => _backend.GemmPlanOverride = null;

    // ---------------- operands and the float64 reference ----------------

    public enum Kind { Contiguous, Transposed, Strided }

    /// <summary>A tensor on <paramref name="dev"/> holding row-major <paramref name="values"/> in the given physical layout.</summary>
    static Tensor Make(double[] values, int[] shape, DType dt, Kind kind, Device dev)
    {
        if (kind == Kind.Transposed && shape.Length >= 2)
        {
            // Stored with the last two dims swapped, then viewed back: the GEMM sees a transposed operand.
            int r = shape[^2], c = shape[^1], mats = r * c == 0 ? 0 : values.Length / (r * c);
            var buf = new double[values.Length];
            for (int m = 0; m < mats; m++)
                for (int i = 0; i < r; i++)
                    for (int j = 0; j < c; j++)
                        buf[((long)m * c + j) * r + i] = values[((long)m * r + i) * c + j];
            int[] sw = [.. shape[..^2], c, r];
            using var t = Tensor.FromArray(buf, sw, dev);
            using var cast = t.To(dt);
            return cast.Transpose(-1, -2);
        }
        if (kind == Kind.Strided && shape.Length >= 1)
        {
            // Every other element of a buffer twice as wide: no dim has unit stride.
            var buf = new double[values.Length * 2L];
            for (long f = 0; f < values.Length; f++) buf[2 * f] = values[f];
            int[] wide = [.. shape[..^1], shape[^1] * 2];
            using var t = Tensor.FromArray(buf, wide, dev);
            using var cast = t.To(dt);
            return cast.Slice(-1, 0, wide[^1], 2);
        }
        using var plain = Tensor.FromArray(values, shape, dev);
        return plain.To(dt);
    }

    /// <summary>
    /// torch.matmul written plainly: the product, Σ|a||b| per output (the scale of the rounding error), and the shape.
    /// </summary>
    static (double[] Y, double[] Abs, int[] Shape) Reference(double[] a, int[] sa, double[] b, int[] sb)
    {
        int[] a2 = sa.Length == 1 ? [1, sa[0]] : sa;
        int[] b2 = sb.Length == 1 ? [sb[0], 1] : sb;
        int m = a2[^2], k = a2[^1], n = b2[^1];
        var ba = a2[..^2]; var bb = b2[..^2];
        var batch = Ref.BroadcastShape(ba, bb);
        int nb = Ref.Numel(batch);
        var y = new double[nb * m * n];
        var abs = new double[y.Length];
        for (int bi = 0; bi < nb; bi++)
        {
            var (offA, offB) = BatchOffsets(bi, batch, ba, bb);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double s = 0, s1 = 0;
                    for (int p = 0; p < k; p++)
                    {
                        double prod = a[offA * m * k + i * k + p] * b[offB * k * n + p * n + j];
                        s += prod; s1 += Math.Abs(prod);
                    }
                    y[(bi * m + i) * n + j] = s;
                    abs[(bi * m + i) * n + j] = s1;
                }
        }
        var shape = new List<int>(batch);
        if (sa.Length > 1) shape.Add(m);
        if (sb.Length > 1) shape.Add(n);
        return (y, abs, shape.ToArray());
    }

    // The flat batch index of each operand at broadcast batch position bi.
    static (int A, int B) BatchOffsets(int bi, int[] batch, int[] ba, int[] bb)
    {
        var idx = Ref.Unravel(bi, batch);
        int offA = 0, offB = 0;
        for (int d = 0; d < ba.Length; d++) offA = offA * ba[d] + (ba[d] == 1 ? 0 : idx[d + batch.Length - ba.Length]);
        for (int d = 0; d < bb.Length; d++) offB = offB * bb[d] + (bb[d] == 1 ? 0 : idx[d + batch.Length - bb.Length]);
        return (offA, offB);
    }

    /// <summary>|got − want| ≤ atol + rtol·scale elementwise, printing the first mismatches.</summary>
    static void AssertClose(double[] got, double[] want, double[] scale, DType dt, string what, double factor = 1)
    {
        Assert.That(got, Has.Length.EqualTo(want.Length), $"{what}: length");
        var (rtol, atol) = Ref.Tol(dt);
        var bad = new List<string>();
        int count = 0;
        double worst = 0;
        for (int i = 0; i < got.Length; i++)
        {
            double d = Math.Abs(got[i] - want[i]);
            if (!double.IsNaN(d)) worst = Math.Max(worst, d);
            if (double.IsNaN(d) || d > factor * (atol + rtol * scale[i]))
            {
                count++;
                if (bad.Count < 5) bad.Add($"[{i}] got {got[i]:R}, want {want[i]:R}");
            }
        }
        Assert.That(count, Is.Zero, $"{what}: {count} mismatches (max |diff| {worst:G3}): {string.Join("; ", bad)}");
    }

    /// <summary>Runs a·b on the CUDA device and on the CPU from the same values and layouts; checks both against the reference.</summary>
    void CheckProduct(DType dt, int[] sa, int[] sb, Kind ka = Kind.Contiguous, Kind kb = Kind.Contiguous, int seed = 1)
    {
        var rng = new Random(seed);
        var a = Ref.Random(rng, Ref.Numel(sa), dt);
        var b = Ref.Random(rng, Ref.Numel(sb), dt);
        var (want, abs, shape) = Reference(a, sa, b, sb);
        string what = $"{dt.Name()} {Shape.Format(sa)}({ka})·{Shape.Format(sb)}({kb})";

        using var ca = Make(a, sa, dt, ka, _cuda);
        using var cb = Make(b, sb, dt, kb, _cuda);
        using var cy = ca.MatMul(cb);
        Assert.That(cy.Layout.Shape, Is.EqualTo(shape), what + ": shape");
        Assert.That(cy.DType, Is.EqualTo(dt), what + ": dtype");
        var got = cy.ToArray<double>();
        AssertClose(got, want, abs, dt, what + " vs float64");

        using var pa = Make(a, sa, dt, ka, Device.Cpu);
        using var pb = Make(b, sb, dt, kb, Device.Cpu);
        using var py = pa.MatMul(pb);
        AssertClose(got, py.ToArray<double>(), abs, dt, what + " vs CPU", factor: 2);
    }

    // ---------------- forward through the Tensor API ----------------

    static IEnumerable<TestCaseData> Shapes()
    {
        int[][][] shapes =
        [
            [[1, 1], [1, 1]],                 // 1×1×1
            [[33, 65], [65, 17]],             // odd m, n, k past the tiles
            [[3, 0], [0, 2]],                 // k = 0: zeros
            [[0, 4], [4, 3]],                 // m = 0: empty
            [[5], [5]],                       // dot product, 0-d result
            [[4], [4, 3]],                    // 1-D left operand
            [[3, 4], [4]],                    // 1-D right operand
            [[4], [2, 4, 3]],                 // 1-D against a batch
            [[2, 1, 3, 4], [5, 4, 2]],        // broadcast batch dims (stride-0 batches)
            [[3, 4], [2, 4, 5]],              // a broadcast across b's batch
            [[2, 3, 5, 4], [4, 6]],           // the Linear case: batch dims folded into rows
            [[3, 40, 9], [3, 9, 37]],         // batched, odd
        ];
        foreach (var dt in Floats)
            foreach (var s in shapes)
                yield return new TestCaseData(dt, s[0], s[1]).SetName($"Forward_{dt}_{Shape.Format(s[0])}x{Shape.Format(s[1])}");
    }

    [TestCaseSource(nameof(Shapes))]
    public void Forward_MatchesReferenceAndCpu(DType dt, int[] sa, int[] sb) => CheckProduct(dt, sa, sb);

    static IEnumerable<TestCaseData> LayoutCases()
    {
        Kind[] kinds = [Kind.Contiguous, Kind.Transposed, Kind.Strided];
        foreach (var dt in Floats)
            foreach (var ka in kinds)
                foreach (var kb in kinds)
                    yield return new TestCaseData(dt, ka, kb).SetName($"Layouts_{dt}_{ka}x{kb}");
    }

    /// <summary>NN, NT, TN, TT and general strided operands, batched, read in place.</summary>
    [TestCaseSource(nameof(LayoutCases))]
    public void Layouts_MatchReferenceAndCpu(DType dt, Kind ka, Kind kb) => CheckProduct(dt, [2, 19, 23], [2, 23, 13], ka, kb, seed: 3);

    [Test]
    public void Integers_AreExact([Values(DType.Int32, DType.Int64)] DType dt)
    {
        var rng = new Random(5);
        var a = new double[7 * 5]; var b = new double[5 * 3];
        for (int i = 0; i < a.Length; i++) a[i] = rng.Next(-50, 50);
        for (int i = 0; i < b.Length; i++) b[i] = rng.Next(-50, 50);
        var (want, _, _) = Reference(a, [7, 5], b, [5, 3]);
        using var ca = Make(a, [7, 5], dt, Kind.Contiguous, _cuda);
        using var cb = Make(b, [5, 3], dt, Kind.Transposed, _cuda);
        using var y = ca.MatMul(cb);
        Assert.That(y.DType, Is.EqualTo(dt));
        Assert.That(y.ToArray<double>(), Is.EqualTo(want));
    }

    [Test]
    public void MismatchedDTypes_ArePromotedAboveTheContract_AndAssertedBelowItInDebug()
    {
        using var a = Tensor.Zeros([2, 3], DType.Float32, _cuda);
        using var b = Tensor.Zeros([3, 4], DType.Float64, _cuda);
        using var y = Tensor.Zeros([2, 4], DType.Float32, _cuda);
        // The front end promotes (float32 · float64 is float64), so the backend only ever sees one dtype.
        using (var p = a.MatMul(b)) Assert.That(p.DType, Is.EqualTo(DType.Float64));
#if DEBUG
        // Below the contract the precondition is a Debug-only assert (ContractChecks), compiled out of Release.
        var l = (Layout x) => new Layout([1, .. x.Shape], [0, .. x.Strides], x.Offset);
        var e = Assert.Throws<DTypeException>(() => _backend.MatMul(a.Storage, l(a.Layout), b.Storage, l(b.Layout), y.Storage, 1, 2, 4, 3))!;
        Assert.That(e.Message, Does.Contain("MatMul"));
#endif
        var s = Assert.Throws<ShapeException>(() => a.MatMul(a).Dispose())!;
        Assert.That(s.Message, Does.Contain("MatMul"));
    }

    // ---------------- every tiling, at the emulator's group size ----------------

    static IEnumerable<TestCaseData> EmulatedPlans()
    {
        foreach (var p in GemmPlans.All)
            if (p.Threads <= 64)
                foreach (var dt in Floats)
                    if (p.Serves(dt))
                        yield return new TestCaseData(p.Name, dt).SetName($"Tiling_{p.Name}_{dt}");
    }

    /// <summary>
    /// Each 64-thread tiling forced on a product with a partial row tile, a full and a partial column tile, and k of
    /// one stage and a bit (the emulator's tilings have BK ≤ 64), with a stride-0 batch and a transposed b; and on 1×1×1.
    /// </summary>
    [TestCaseSource(nameof(EmulatedPlans))]
    public void EveryTiling_MatchesReference(string plan, DType dt)
    {
        var p = GemmPlans.Named(plan);
        _backend.GemmPlanOverride = plan;
        CheckProduct(dt, [2, p.BM - 5, 67], [1, 67, p.BN + 3], Kind.Contiguous, Kind.Transposed, seed: 7);
        CheckProduct(dt, [1, 1], [1, 1]);
    }

    /// <summary>
    /// The SIMT kernel's 16-byte staging (VectorA/VectorB) on the tilings that stage four elements per thread (the
    /// 32×32×8 ones, the GPU's 128×128 path at 64 threads), in every layout, against the float64 reference, together with
    /// the views that must fall back to scalar loads: k, m or n not a multiple of 4 along the contiguous dim, an offset
    /// of 2 elements (a 16-byte load there would read the wrong elements), a row stride not a multiple of 4, no unit
    /// stride at all. Each operand is a view [rows, cols] at offset off into a buffer with rows of pitch elements.
    /// </summary>
    [TestCase("f32-32x32x8-4x4", DType.Float32)]
    [TestCase("f64-32x32x8-4x4", DType.Float64)]
    public void VectorStaging_AndItsFallbacks_MatchReference(string plan, DType dt)
    {
        _backend.GemmPlanOverride = plan;
        // (m, k, n, a transposed, b transposed, a's extra pitch, a's offset, b's extra pitch, b's offset)
        (int M, int K, int N, bool TA, bool TB, int PadA, int OffA, int PadB, int OffB)[] cases =
        [
            (36, 44, 40, false, false, 0, 0, 0, 0),   // NN, both runs: a along k, b along n
            (36, 44, 40, true, true, 0, 0, 0, 0),     // TT: a along m, b along k
            (36, 44, 40, false, true, 0, 0, 0, 0),    // NT: both along k
            (36, 44, 40, true, false, 4, 4, 8, 4),    // TN, padded rows and offsets of 4: runs
            (37, 43, 41, false, false, 0, 0, 0, 0),   // odd k (a falls back), odd n (b falls back)
            (37, 44, 41, true, true, 0, 0, 0, 0),     // odd m and n along the contiguous dims
            (36, 44, 40, false, false, 4, 2, 4, 2),   // offsets of 2: misaligned, both fall back
            (36, 44, 40, false, false, 1, 0, 3, 0),   // row pitches 45 and 43: not multiples of 4
        ];
        int seed = 11;
        foreach (var c in cases)
        {
            var rng = new Random(seed++);
            var a = Ref.Random(rng, c.M * c.K, dt);
            var b = Ref.Random(rng, c.K * c.N, dt);
            var (want, abs, _) = Reference(a, [c.M, c.K], b, [c.K, c.N]);
            string what = $"{dt.Name()} {c}";
            using var ca = View(a, c.M, c.K, c.TA, c.PadA, c.OffA, dt, _cuda);
            using var cb = View(b, c.K, c.N, c.TB, c.PadB, c.OffB, dt, _cuda);
            using var cy = ca.MatMul(cb);
            AssertClose(cy.ToArray<double>(), want, abs, dt, what + " vs float64");
        }
        CheckProduct(dt, [36, 44], [44, 40], Kind.Strided, Kind.Strided, seed: 5);
    }

    /// <summary>
    /// Row-major values [rows, cols] as a view on <paramref name="dev"/>: stored transposed when asked, each stored row
    /// <paramref name="pad"/> elements longer, starting <paramref name="offset"/> elements into the buffer.
    /// </summary>
    static Tensor View(double[] values, int rows, int cols, bool transposed, int pad, int offset, DType dt, Device dev)
    {
        int sr = transposed ? cols : rows, sc = transposed ? rows : cols, pitch = sc + pad;
        var buf = new double[offset + sr * pitch];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                buf[offset + (transposed ? j * pitch + i : i * pitch + j)] = values[i * cols + j];
        using var t = Tensor.FromArray(buf, [buf.Length], dev);
        using var cast = t.To(dt);
        using var flat = cast.Narrow(0, offset, sr * pitch);
        using var rowsView = flat.Reshape([sr, pitch]);
        var stored = rowsView.Narrow(1, 0, sc);
        if (!transposed) return stored;
        using (stored) return stored.Transpose(0, 1);
    }

    /// <summary>The host's choice of 16-byte staging per operand (CudaBackend.VectorRun), by layout and alignment.</summary>
    [Test]
    public void VectorRun_TakesOnlyContiguousAlignedOperands()
    {
        //                                 along rows, strideRows, strideK, rows, depth, offset, batchStride, address, emulated
        Assert.That(CudaBackend.VectorRun(false, 44, 1, 36, 44, 0, 0, 256, false), Is.True, "contiguous along k");
        Assert.That(CudaBackend.VectorRun(true, 1, 36, 36, 44, 0, 0, 256, false), Is.True, "contiguous along m");
        Assert.That(CudaBackend.VectorRun(false, 43, 1, 36, 43, 0, 0, 256, false), Is.False, "k = 43");
        Assert.That(CudaBackend.VectorRun(true, 1, 37, 37, 44, 0, 0, 256, false), Is.False, "m = 37");
        Assert.That(CudaBackend.VectorRun(false, 48, 1, 36, 44, 2, 0, 256, false), Is.False, "offset 2");
        Assert.That(CudaBackend.VectorRun(false, 48, 1, 36, 44, 4, 0, 256, false), Is.True, "offset 4");
        Assert.That(CudaBackend.VectorRun(false, 45, 1, 36, 44, 0, 0, 256, false), Is.False, "row stride 45");
        Assert.That(CudaBackend.VectorRun(false, 44, 1, 36, 44, 0, 1586, 256, false), Is.False, "batch stride 1586");
        Assert.That(CudaBackend.VectorRun(false, 44, 1, 36, 44, 0, 0, 264, false), Is.False, "an 8-byte aligned buffer on a GPU");
        Assert.That(CudaBackend.VectorRun(false, 44, 1, 36, 44, 0, 0, 264, true), Is.True, "the emulator ignores the address");
        Assert.That(CudaBackend.VectorRun(false, 2, 2, 36, 44, 0, 0, 256, false), Is.False, "no unit stride");
        Assert.That(CudaBackend.VectorRun(false, 7, 1, 1, 44, 0, 0, 256, false), Is.True, "one row: its stride does not matter");
    }

    static IEnumerable<TestCaseData> EmulatedMmaLayouts()
    {
        foreach (var p in GemmPlans.All)
            if (p.Threads <= 64 && p.Family == GemmFamily.Half)
                foreach (var (ka, kb) in new[] { (Kind.Contiguous, Kind.Transposed), (Kind.Contiguous, Kind.Contiguous), (Kind.Transposed, Kind.Transposed), (Kind.Transposed, Kind.Contiguous) })
                    yield return new TestCaseData(p.Name, ka, kb).SetName($"MmaLayout_{p.Name}_{ka}x{kb}");
    }

    /// <summary>
    /// Each tensor-core layout (NT, NN, TT, TN: which ldmatrix form and which copy walk) on the 16-byte path, no
    /// packing: a batch of two with a broadcast b, partial row and column tiles (odd where the operand's layout allows:
    /// rows of a contiguous-along-k a may be any number, a contiguous-along-m a needs m a multiple of 8), and k = 72
    /// (three stages, the last a quarter full: the pipeline's prologue, steady state and zero-filled tail). bfloat16
    /// and float16 alternate by layout.
    /// </summary>
    [TestCaseSource(nameof(EmulatedMmaLayouts))]
    public void MmaLayouts_OnTheCpAsyncPath_MatchReference(string plan, Kind ka, Kind kb)
    {
        var p = GemmPlans.Named(plan);
        _backend.GemmPlanOverride = plan;
        int m = ka == Kind.Transposed ? p.BM + 8 : p.BM + 3, n = kb == Kind.Contiguous ? p.BN + 8 : p.BN - 5;
        var dt = (ka == kb) ? DType.BFloat16 : DType.Float16;
        CheckProduct(dt, [2, m, 72], [1, 72, n], ka, kb, seed: 11);
    }

    [Test]
    public void AutomaticChoice_FollowsDTypeAndDevice()
    {
        Assert.That(GemmPlans.Choose(DType.Float32, 1, 4096, 4096, 1024, 132), Is.SameAs(GemmPlans.F32Large));
        Assert.That(GemmPlans.Choose(DType.Float32, 1, 64, 64, 1024, 132), Is.SameAs(GemmPlans.F32Small));
        Assert.That(GemmPlans.Choose(DType.BFloat16, 8, 1024, 1024, 1024, 132), Is.SameAs(GemmPlans.HalfLarge));
        Assert.That(GemmPlans.Choose(DType.Float16, 1, 100, 100, 1024, 132), Is.SameAs(GemmPlans.HalfSmall));
        Assert.That(GemmPlans.Choose(DType.Float64, 1, 4096, 4096, 1024, 132), Is.SameAs(GemmPlans.F64));
        Assert.That(GemmPlans.Choose(DType.Float32, 1, 4096, 4096, 64, 1), Is.SameAs(GemmPlans.F32Emulated));
        Assert.That(GemmPlans.Choose(DType.BFloat16, 1, 4096, 4096, 64, 1), Is.SameAs(GemmPlans.HalfEmulated));
        foreach (var p in GemmPlans.All)
        {
            Assert.That(p.Threads % 32, Is.Zero, p.Name);
            Assert.That(p.Threads, Is.LessThanOrEqualTo(256), p.Name);
        }
    }

    // ---------------- the warp-level instructions against the PTX ISA's fragment tables ----------------

    public static void MmaKernel(ArrayView<uint> frags, ArrayView<float> c, ArrayView<float> d, int bf16)
    {
        var scratch = SharedMemory.Allocate<uint>(WarpMma.ScratchWords);
        int lane = Group.IdxX;
        var a = new U4 { X = frags[lane * 6], Y = frags[lane * 6 + 1], Z = frags[lane * 6 + 2], W = frags[lane * 6 + 3] };
        var acc = new F4 { X = c[lane * 4], Y = c[lane * 4 + 1], Z = c[lane * 4 + 2], W = c[lane * 4 + 3] };
        var r = default(EmulatedWarpMma).Mma(a, frags[lane * 6 + 4], frags[lane * 6 + 5], acc, lane, bf16, scratch);
        d[lane * 4] = r.X; d[lane * 4 + 1] = r.Y; d[lane * 4 + 2] = r.Z; d[lane * 4 + 3] = r.W;
    }

    public static void LoadMatrixKernel(ArrayView<ushort> s, ArrayView<int> rowAddress, ArrayView<uint> regs, int trans)
    {
        var scratch = SharedMemory.Allocate<uint>(WarpMma.ScratchWords);
        int lane = Group.IdxX;
        var r = default(EmulatedWarpMma).LoadMatrixX4(s, 0, (uint)rowAddress[lane] * 2, trans, lane, scratch);
        regs[lane * 4] = r.X; regs[lane * 4 + 1] = r.Y; regs[lane * 4 + 2] = r.Z; regs[lane * 4 + 3] = r.W;
    }

    static ushort Bits(double v, DType dt) =>
        dt == DType.BFloat16 ? ((BFloat16)v).Bits : BitConverter.HalfToUInt16Bits((System.Half)v);

    static uint Pack(double lo, double hi, DType dt) => Bits(lo, dt) | (uint)Bits(hi, dt) << 16;

    /// <summary>
    /// The emulated mma.m16n8k16 on fragments packed here from the PTX ISA's tables ("Matrix Fragments for
    /// mma.m16n8k16 with floating point type", groupID g = lane / 4, threadID_in_group t = lane % 4), against
    /// D = A·B + C in float64.
    /// </summary>
    [Test]
    public void Mma_Emulation_MatchesFloat64_OnPtxIsaFragments([Values(DType.BFloat16, DType.Float16)] DType dt)
    {
        var rng = new Random(11);
        var A = new double[16, 16]; var B = new double[16, 8]; var C = new double[16, 8];
        for (int i = 0; i < 16; i++) for (int p = 0; p < 16; p++) A[i, p] = Ref.RoundTo(rng.NextDouble() * 4 - 2, dt);
        for (int p = 0; p < 16; p++) for (int j = 0; j < 8; j++) B[p, j] = Ref.RoundTo(rng.NextDouble() * 4 - 2, dt);
        for (int i = 0; i < 16; i++) for (int j = 0; j < 8; j++) C[i, j] = (float)(rng.NextDouble() * 2 - 1);

        var frags = new uint[32 * 6];
        var c = new float[32 * 4];
        for (int lane = 0; lane < 32; lane++)
        {
            int g = lane / 4, t = lane % 4;
            // A, row-major: a0 (row g, cols 2t, 2t+1), a1 (row g+8), a2 (row g, cols 2t+8, 2t+9), a3 (row g+8).
            frags[lane * 6] = Pack(A[g, 2 * t], A[g, 2 * t + 1], dt);
            frags[lane * 6 + 1] = Pack(A[g + 8, 2 * t], A[g + 8, 2 * t + 1], dt);
            frags[lane * 6 + 2] = Pack(A[g, 2 * t + 8], A[g, 2 * t + 9], dt);
            frags[lane * 6 + 3] = Pack(A[g + 8, 2 * t + 8], A[g + 8, 2 * t + 9], dt);
            // B, column-major: b0 (rows 2t, 2t+1 of column g), b1 (rows 2t+8, 2t+9).
            frags[lane * 6 + 4] = Pack(B[2 * t, g], B[2 * t + 1, g], dt);
            frags[lane * 6 + 5] = Pack(B[2 * t + 8, g], B[2 * t + 9, g], dt);
            // C: c0, c1 at row g, cols 2t, 2t+1; c2, c3 at row g+8.
            c[lane * 4] = (float)C[g, 2 * t]; c[lane * 4 + 1] = (float)C[g, 2 * t + 1];
            c[lane * 4 + 2] = (float)C[g + 8, 2 * t]; c[lane * 4 + 3] = (float)C[g + 8, 2 * t + 1];
        }

        var acc = _backend.Accelerator;
        var kernel = acc.LoadStreamKernel<ArrayView<uint>, ArrayView<float>, ArrayView<float>, int>(MmaKernel);
        using var fb = acc.Allocate1D(frags);
        using var cb = acc.Allocate1D(c);
        using var db = acc.Allocate1D<float>(32 * 4);
        kernel(new KernelConfig(1, 32), fb.View, cb.View, db.View, dt == DType.BFloat16 ? 1 : 0);
        var d = db.GetAsArray1D();

        for (int lane = 0; lane < 32; lane++)
        {
            int g = lane / 4, t = lane % 4;
            (int r, int col)[] at = [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)];
            for (int q = 0; q < 4; q++)
            {
                var (i, j) = at[q];
                double want = C[i, j], scale = Math.Abs(C[i, j]);
                for (int p = 0; p < 16; p++) { want += A[i, p] * B[p, j]; scale += Math.Abs(A[i, p] * B[p, j]); }
                Assert.That(d[lane * 4 + q], Is.EqualTo(want).Within(1e-6 * scale + 1e-7), $"lane {lane} d{q} = D[{i},{j}]");
            }
        }
    }

    /// <summary>
    /// The emulated ldmatrix.x4 against the PTX ISA's rule: lane 8j + r supplies the address of row r of matrix j;
    /// register j of lane l holds row l / 4, elements 2(l % 4) and 2(l % 4) + 1 of matrix j. With .trans each matrix is
    /// transposed: register j of lane l holds column l / 4 of rows 2(l % 4) and 2(l % 4) + 1. Rows lie scattered.
    /// </summary>
    [Test]
    public void LoadMatrix_Emulation_FollowsPtxIsa([Values(0, 1)] int trans)
    {
        var rng = new Random(13 + trans);
        var s = new ushort[4096];
        for (int i = 0; i < s.Length; i++) s[i] = (ushort)rng.Next(65536);
        var rows = Enumerable.Range(0, 4096 / 8).OrderBy(_ => rng.Next()).Take(32).Select(r => r * 8).ToArray();
        var acc = _backend.Accelerator;
        var kernel = acc.LoadStreamKernel<ArrayView<ushort>, ArrayView<int>, ArrayView<uint>, int>(LoadMatrixKernel);
        using var sb = acc.Allocate1D(s);
        using var ab = acc.Allocate1D(rows);
        using var rb = acc.Allocate1D<uint>(32 * 4);
        kernel(new KernelConfig(1, 32), sb.View, ab.View, rb.View, trans);
        var regs = rb.GetAsArray1D();
        for (int lane = 0; lane < 32; lane++)
            for (int j = 0; j < 4; j++)
            {
                uint want;
                if (trans == 0)
                {
                    int row = rows[8 * j + lane / 4] + 2 * (lane % 4);
                    want = s[row] | (uint)s[row + 1] << 16;
                }
                else
                {
                    int r0 = rows[8 * j + 2 * (lane % 4)], r1 = rows[8 * j + 2 * (lane % 4) + 1], col = lane / 4;
                    want = s[r0 + col] | (uint)s[r1 + col] << 16;
                }
                Assert.That(regs[lane * 4 + j], Is.EqualTo(want), $"lane {lane} register {j}");
            }
    }

    // ---------------- what a GPU would run: the PTX, compiled here ----------------

    static IEnumerable<TestCaseData> GpuPlans() =>
        new[] { GemmPlans.F32Large, GemmPlans.F64, GemmPlans.HalfLarge }
            .Select(p => new TestCaseData(p.Name).SetName($"Ptx_{p.Name}"));

    /// <summary>
    /// The GPU tilings compile to PTX for sm_90 without a device. A tensor-core kernel issues ldmatrix and its one mma
    /// form (no emulation, no branch on the dtype), and its stage allocation is <c>__shared_alloca0</c> with the
    /// expected size and 16-byte alignment (the inline ldmatrix names it). The SIMT kernels keep their register tiles
    /// out of local memory.
    /// </summary>
    [TestCaseSource(nameof(GpuPlans))]
    public void GpuTilings_CompileToExpectedPtx(string plan)
    {
        var p = GemmPlans.Named(plan);
        if (p.Family != GemmFamily.Half)
        {
            string ptx = PtxCompiler.Compile(p.Gpu[0].Method);
            Assert.That(ptx, Does.Contain(".entry"));
            Assert.That(ptx, Does.Not.Contain("ld.local"), "the register tile spilled to local memory");
            Assert.That(ptx, Does.Not.Contain("mma.sync"));
            return;
        }
        for (int i = 0; i < p.Gpu.Count; i++)
        {
            bool bf16 = i < 4;
            var (mma, other) = bf16 ? (WarpMma.MmaBf16Ptx, WarpMma.MmaF16Ptx) : (WarpMma.MmaF16Ptx, WarpMma.MmaBf16Ptx);
            var layout = (IMmaLayout)Activator.CreateInstance(p.Gpu[i].Key.GetGenericArguments()[3])!;
            string ptx = PtxCompiler.Compile(p.Gpu[i].Method), what = $"{plan} {(bf16 ? "bf16" : "f16")} {GemmPlan.LayoutNames[i % 4]}";
            Assert.That(ptx, Does.Contain(mma.Split(' ')[0]), what);
            Assert.That(ptx, Does.Not.Contain(other.Split(' ')[0]), what);
            Assert.That(ptx, Does.Contain("cp.async.cg.shared.global"), what);
            Assert.That(ptx, Does.Contain("cp.async.wait_group 1;"), what);
            Assert.That(ptx.Contains("ldmatrix.sync.aligned.m8n8.x4.shared.b16", StringComparison.Ordinal), Is.EqualTo(layout.ATrans == 0 || layout.BTrans == 0), what + ": ldmatrix");
            Assert.That(ptx.Contains("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", StringComparison.Ordinal), Is.EqualTo(layout.ATrans != 0 || layout.BTrans != 0), what + ": ldmatrix.trans");
            Assert.That(ptx, Does.Contain($".shared .align 16 .b8 __shared_alloca0[{p.SharedBytes}];"), what);
            Assert.That(ptx, Does.Not.Contain("__shared_alloca1"), what + ": one shared allocation");
            Assert.That(ptx, Does.Not.Contain("__local_depot"), what + ": inline-asm operand slots left in local memory (PtxDepots)");
            Assert.That(ptx, Does.Not.Contain("bar.warp.sync"), what + ": the emulation leaked into the GPU kernel");
        }
        Assert.That(p.SharedBytes, Is.LessThanOrEqualTo(48 * 1024), "static shared memory is capped at 48 KiB per group");
    }

    // ---------------- backward ----------------

    static IEnumerable<TestCaseData> BackwardCases()
    {
        int[][][] shapes =
        [
            [[5, 7], [7, 3]],
            [[2, 3, 7], [7, 4]],          // Linear: db folds the batch into one GEMM with a transposed a
            [[2, 1, 3, 4], [3, 4, 2]],    // broadcast batch: gradients summed back
            [[4], [4, 3]],                // 1-D operand
        ];
        foreach (var dt in Floats)
            foreach (var s in shapes)
                yield return new TestCaseData(dt, s[0], s[1]).SetName($"Backward_{dt}_{Shape.Format(s[0])}x{Shape.Format(s[1])}");
    }

    /// <summary>Gradients of a and b for a fixed upstream gradient: CUDA vs the plain float64 reference and vs the CPU.</summary>
    [TestCaseSource(nameof(BackwardCases))]
    public void Backward_MatchesReferenceAndCpu(DType dt, int[] sa, int[] sb)
    {
        var rng = new Random(17);
        var a = Ref.Random(rng, Ref.Numel(sa), dt);
        var b = Ref.Random(rng, Ref.Numel(sb), dt);
        var (_, _, shape) = Reference(a, sa, b, sb);
        var g = Ref.Random(rng, Ref.Numel(shape), dt);
        var (wantA, absA, wantB, absB) = ReferenceGrads(a, sa, b, sb, g);

        (double[] A, double[] B) Run(Device dev)
        {
            using var ta = Make(a, sa, dt, Kind.Contiguous, dev);
            using var tb = Make(b, sb, dt, Kind.Contiguous, dev);
            ta.RequiresGrad = true; tb.RequiresGrad = true;
            using var y = ta.MatMul(tb);
            using var gy = Make(g, shape, dt, Kind.Contiguous, dev);
            y.Backward(gy);
            Assert.That(ta.Grad!.Layout.Shape, Is.EqualTo(sa));
            Assert.That(tb.Grad!.Layout.Shape, Is.EqualTo(sb));
            var r = (ta.Grad!.ToArray<double>(), tb.Grad!.ToArray<double>());
            ta.Grad.Dispose(); tb.Grad.Dispose();
            return r;
        }

        string what = $"{dt.Name()} {Shape.Format(sa)}·{Shape.Format(sb)}";
        var (ga, gb) = Run(_cuda);
        // The gradients are GEMMs plus a sum over broadcast batches: allow the sum's extra roundings in half types.
        double f = dt is DType.Float16 or DType.BFloat16 ? 2 : 1;
        AssertClose(ga, wantA, absA, dt, what + ": da vs float64", f);
        AssertClose(gb, wantB, absB, dt, what + ": db vs float64", f);
        var (pa, pb) = Run(Device.Cpu);
        AssertClose(ga, pa, absA, dt, what + ": da vs CPU", 2 * f);
        AssertClose(gb, pb, absB, dt, what + ": db vs CPU", 2 * f);
    }

    // dA = g·Bᵀ and dB = Aᵀ·g per broadcast batch, summed into each operand's own batch; 1-D operands as rows/columns.
    static (double[] A, double[] AbsA, double[] B, double[] AbsB) ReferenceGrads(double[] a, int[] sa, double[] b, int[] sb, double[] g)
    {
        int[] a2 = sa.Length == 1 ? [1, sa[0]] : sa;
        int[] b2 = sb.Length == 1 ? [sb[0], 1] : sb;
        int m = a2[^2], k = a2[^1], n = b2[^1];
        var ba = a2[..^2]; var bb = b2[..^2];
        var batch = Ref.BroadcastShape(ba, bb);
        int nb = Ref.Numel(batch);
        var da = new double[a.Length]; var absA = new double[a.Length];
        var db = new double[b.Length]; var absB = new double[b.Length];
        for (int bi = 0; bi < nb; bi++)
        {
            var (offA, offB) = BatchOffsets(bi, batch, ba, bb);
            for (int i = 0; i < m; i++)
                for (int p = 0; p < k; p++)
                    for (int j = 0; j < n; j++)
                    {
                        double gv = g[(bi * m + i) * n + j];
                        double av = a[offA * m * k + i * k + p], bv = b[offB * k * n + p * n + j];
                        da[offA * m * k + i * k + p] += gv * bv; absA[offA * m * k + i * k + p] += Math.Abs(gv * bv);
                        db[offB * k * n + p * n + j] += av * gv; absB[offB * k * n + p * n + j] += Math.Abs(av * gv);
                    }
        }
        return (da, absA, db, absB);
    }

    // ---------------- a real GPU: large products, every tiling, GFLOP/s ----------------

    static Device RealDevice()
    {
        if (CudaBackend.RealDeviceCount == 0) Assert.Ignore("no CUDA device");
        return Device.Cuda(0);
    }

    /// <summary>
    /// Products of a few hundred MB on the GPU in NN, NT and TN layouts, checked on 512 sampled outputs against
    /// float64 dot products of the same values, then timed (median of 5 after a warm-up) with GFLOP/s printed.
    /// </summary>
    [Test, Category("Gpu")]
    public void Gpu_LargeProducts_MatchSampledReference_AndReportGflops(
        [Values(DType.Float32, DType.BFloat16, DType.Float16, DType.Float64)] DType dt,
        [Values(Kind.Contiguous, Kind.Transposed)] Kind ka,
        [Values(Kind.Contiguous, Kind.Transposed)] Kind kb)
    {
        var dev = RealDevice();
        if (ka == Kind.Transposed && kb == Kind.Transposed) Assert.Ignore("TT is covered on the emulator");
        int size = dt == DType.Float64 ? 2048 : dt == DType.Float32 ? 4096 : 8192;
        CheckLarge(dev, dt, 1, size, size, size, ka, kb);
    }

    /// <summary>Attention-shaped batched products and odd sizes on the large tiles.</summary>
    [Test, Category("Gpu")]
    public void Gpu_BatchedAndOddProducts_MatchSampledReference([Values(DType.Float32, DType.BFloat16)] DType dt)
    {
        var dev = RealDevice();
        CheckLarge(dev, dt, 96, 1024, 1024, 64, Kind.Contiguous, Kind.Transposed);    // q·kᵀ
        CheckLarge(dev, dt, 96, 1024, 64, 1024, Kind.Contiguous, Kind.Contiguous);    // p·v
        CheckLarge(dev, dt, 1, 4097, 4095, 1001, Kind.Transposed, Kind.Contiguous);
    }

    /// <summary>Every tiling (the 256-thread ones only run here) on an odd product.</summary>
    [Test, Category("Gpu")]
    public void Gpu_EveryTiling_MatchesReference()
    {
        var dev = RealDevice();
        var backend = (CudaBackend)BackendRegistry.Get(dev);
        try
        {
            foreach (var p in GemmPlans.All.Where(p => !p.EmulatorOnly))
                foreach (var dt in Floats)
                    if (p.Serves(dt))
                    {
                        backend.GemmPlanOverride = p.Name;
                        var rng = new Random(19);
                        int[] sa = [3, 2 * p.BM + 7, 203], sb = [1, 203, 3 * p.BN + 5];
                        var a = Ref.Random(rng, Ref.Numel(sa), dt);
                        var b = Ref.Random(rng, Ref.Numel(sb), dt);
                        var (want, abs, _) = Reference(a, sa, b, sb);
                        using var ta = Make(a, sa, dt, Kind.Transposed, dev);
                        using var tb = Make(b, sb, dt, Kind.Contiguous, dev);
                        using var y = ta.MatMul(tb);
                        AssertClose(y.ToArray<double>(), want, abs, dt, $"{p.Name} {dt.Name()}");
                    }
        }
        finally { backend.GemmPlanOverride = null; }
    }

    [System.Runtime.InteropServices.DllImport("libcuda.so.1")]
    static extern int cuFuncGetAttribute(out int value, int attribute, IntPtr function);

    /// <summary>
    /// Each GPU tiling loaded through the driver (ptxas): registers and local memory per thread as the driver reports
    /// them, and the load (JIT) time. Local memory would mean spills, or that ptxas kept the local slots through which
    /// ILGPU passes inline-PTX operands (Ref/Input/Output): both cost the tensor-core loop dearly.
    /// </summary>
    [Test, Category("Gpu")]
    public void Gpu_Tilings_UseNoLocalMemory()
    {
        var dev = RealDevice();
        var acc = ((CudaBackend)BackendRegistry.Get(dev)).Accelerator;
        var bad = new List<string>();
        foreach (var p in new[] { GemmPlans.F32Large, GemmPlans.F32Small, GemmPlans.F64, GemmPlans.HalfLarge, GemmPlans.HalfSmall })
            foreach (var k in p.Gpu)
            {
                acc.Bind();
                var sw = Stopwatch.StartNew();
                using var kernel = (ILGPU.Runtime.Cuda.CudaKernel)acc.LoadKernel(k.Method);
                double ms = sw.Elapsed.TotalMilliseconds;
                Assert.That(cuFuncGetAttribute(out int local, 3, kernel.FunctionPtr), Is.Zero);   // CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES
                Assert.That(cuFuncGetAttribute(out int regs, 4, kernel.FunctionPtr), Is.Zero);    // CU_FUNC_ATTRIBUTE_NUM_REGS
                string name = $"{p.Name} ({string.Join(", ", k.Key.GetGenericArguments().Skip(2).Select(t => t.Name))})";
                TestContext.Out.WriteLine($"{name}: {regs} registers, {local} bytes local, loaded in {ms:F0} ms");
                if (local != 0) bad.Add($"{name}: {local} bytes");
            }
        Assert.That(bad, Is.Empty, "kernels using local memory");
    }

    void CheckLarge(Device dev, DType dt, int batch, int m, int n, int k, Kind ka, Kind kb)
    {
        var rng = new Random(23);
        int[] sa = batch > 1 ? [batch, m, k] : [m, k], sb = batch > 1 ? [batch, k, n] : [k, n];
        var a = new double[(long)batch * m * k];
        var b = new double[(long)batch * k * n];
        Parallel.For(0, 2, w =>
        {
            var r = new Random(23 + w);
            var x = w == 0 ? a : b;
            for (long i = 0; i < x.Length; i++) x[i] = Ref.RoundTo(r.NextDouble() * 2 - 1, dt);
        });
        using var ta = Make(a, sa, dt, ka, dev);
        using var tb = Make(b, sb, dt, kb, dev);
        var backend = (CudaBackend)BackendRegistry.Get(dev);
        backend.Synchronize();
        var first = Stopwatch.StartNew();
        using var y = ta.MatMul(tb);
        backend.Synchronize();
        double firstMs = first.Elapsed.TotalMilliseconds; // includes loading (ptxas) the kernel the first time
        var got = y.ToArray<double>();
        var (rtol, atol) = Ref.Tol(dt);
        for (int s = 0; s < 512; s++)
        {
            int bi = rng.Next(batch), i = rng.Next(m), j = rng.Next(n);
            double want = 0, scale = 0;
            for (int p = 0; p < k; p++)
            {
                double prod = a[((long)bi * m + i) * k + p] * b[((long)bi * k + p) * n + j];
                want += prod; scale += Math.Abs(prod);
            }
            double v = got[((long)bi * m + i) * n + j];
            Assert.That(Math.Abs(v - want), Is.LessThanOrEqualTo(atol + rtol * scale), $"{dt.Name()} [{bi},{i},{j}]");
        }

        var times = new List<double>();
        for (int r = 0; r < 6; r++)
        {
            backend.Synchronize();
            var sw = Stopwatch.StartNew();
            ta.MatMul(tb).Dispose();
            backend.Synchronize();
            if (r > 0) times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        double gflops = 2.0 * batch * m * n * k / times[times.Count / 2] / 1e9;
        TestContext.Out.WriteLine($"gemm {dt.Name()} {batch}x{m}x{n}x{k} {ka}/{kb}: {times[times.Count / 2] * 1e3:F3} ms, " +
            $"{gflops:F0} GFLOP/s (first call {firstMs:F0} ms)");
    }
}

using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Engine.Workloads;

/// <summary>
/// This machine's limits, measured in the same process as the workloads they are compared with (a figure from a data
/// sheet would not know the VM's clock, its share of the cores or its memory channels): the float32 FMA peak for
/// GEMMs and the best streaming bandwidth (STREAM's copy, scale and add) for elementwise ops. Each is the best of several repetitions on all
/// cores, since a limit is what the machine can do, not what it usually does.
/// </summary>
public static class MachinePeaks
{
    /// <summary>Independent FMA chains per thread: more than latency × issue width (4 × 2 on AVX-512 cores), so the
    /// loop is bound by the FMA ports, not by one chain's latency.</summary>
    const int Chains = 12;

    /// <summary>Float32 GFLOP/s of fused multiply-adds (2 flops each) on every core, at the widest vector width the
    /// runtime accelerates. What a GEMM's "throughput" is compared with.</summary>
    public static double Fma32Gflops(int reps = 5)
    {
        int threads = Environment.ProcessorCount;
        const long iterations = 20_000_000;
        int lanes = Vector512.IsHardwareAccelerated ? 16 : Vector256.IsHardwareAccelerated ? 8 : 4;
        double flops = 2.0 * lanes * Chains * iterations * threads;
        double best = double.MaxValue;
        for (int r = 0; r < reps; r++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ => Sink(FmaLoop(lanes, iterations)));
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return flops / best / 1e9;
    }

    /// <summary>The streaming bandwidth of each pattern an elementwise workload can take, in GB/s of bytes read plus
    /// bytes written (as the workloads count theirs), and the best of them.</summary>
    public sealed record Stream(double Copy, double MemCopy, double Scale, double Add)
    {
        /// <summary>What an elementwise "bandwidth" is compared with: the best pattern, so no workload exceeds it.</summary>
        public double Best => Math.Max(Math.Max(Copy, MemCopy), Math.Max(Scale, Add));
    }

    /// <summary>
    /// STREAM's patterns over <paramref name="elements"/> float32 per array (16M: the elementwise workloads' size) split
    /// over every core, each the best of <paramref name="reps"/>: copy y = x with vector loads and ordinary stores (what
    /// the engine's kernels issue), the runtime's memcpy (non-temporal stores on large blocks), scale in place x = s·x
    /// (read and write the same lines, as in-place ops and the AMP unscale), and add y = a + b. One pattern alone is not a
    /// fair limit: an ordinary store also reads its line first (write-allocate), which the byte count does not see, so
    /// an in-place op moves fewer uncounted bytes than a copy, and two reads per write fewer than one.
    /// </summary>
    public static unsafe Stream StreamGBps(int elements = 16 << 20, int reps = 15)
    {
        nuint bytes = (nuint)elements * sizeof(float);
        float* a = (float*)NativeMemory.AlignedAlloc(bytes, 64), b = (float*)NativeMemory.AlignedAlloc(bytes, 64),
            y = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        try
        {
            // Touch every page first: a first write faults pages in, which is the OS's cost, not the memory's.
            new Span<float>(a, elements).Fill(1f);
            new Span<float>(b, elements).Fill(2f);
            new Span<float>(y, elements).Fill(3f);
            int threads = Environment.ProcessorCount;
            int chunk = elements / threads / 64 * 64;
            double Best(Action<int, int> body, double countedBytes)
            {
                double best = double.MaxValue;
                for (int r = 0; r < reps; r++)
                {
                    var sw = Stopwatch.StartNew();
                    Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                        body(t * chunk, t == threads - 1 ? elements - t * chunk : chunk));
                    best = Math.Min(best, sw.Elapsed.TotalSeconds);
                }
                return countedBytes / best / 1e9;
            }
            double copy = Best((s, n) => CopyLoop(a + s, y + s, n), 2.0 * bytes);
            double memcpy = Best((s, n) => Buffer.MemoryCopy(a + s, y + s, (long)n * 4, (long)n * 4), 2.0 * bytes);
            double scale = Best((s, n) => ScaleLoop(a + s, n), 2.0 * bytes);
            double add = Best((s, n) => AddLoop(a + s, b + s, y + s, n), 3.0 * bytes);
            return new Stream(copy, memcpy, scale, add);
        }
        finally
        {
            NativeMemory.AlignedFree(a);
            NativeMemory.AlignedFree(b);
            NativeMemory.AlignedFree(y);
        }
    }

    // Vector<float> loops, as the engine's elementwise kernels (the widest width the runtime accelerates); n is a multiple
    // of 64 but for the last thread's share, whose remainder is scalar.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static unsafe void CopyLoop(float* x, float* y, int n)
    {
        int i = 0, w = System.Numerics.Vector<float>.Count;
        for (; i <= n - w; i += w) System.Numerics.Vector.Store(System.Numerics.Vector.Load(x + i), y + i);
        for (; i < n; i++) y[i] = x[i];
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static unsafe void ScaleLoop(float* x, int n)
    {
        int i = 0, w = System.Numerics.Vector<float>.Count;
        var s = new System.Numerics.Vector<float>(1f);
        for (; i <= n - w; i += w) System.Numerics.Vector.Store(System.Numerics.Vector.Load(x + i) * s, x + i);
        for (; i < n; i++) x[i] *= 1f;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static unsafe void AddLoop(float* a, float* b, float* y, int n)
    {
        int i = 0, w = System.Numerics.Vector<float>.Count;
        for (; i <= n - w; i += w) System.Numerics.Vector.Store(System.Numerics.Vector.Load(a + i) + System.Numerics.Vector.Load(b + i), y + i);
        for (; i < n; i++) y[i] = a[i] + b[i];
    }

    static float FmaLoop(int lanes, long iterations) => lanes switch
    {
        16 => Loop<Lanes512>(iterations),
        8 => Loop<Lanes256>(iterations),
        _ => Loop<Lanes128>(iterations),
    };

    // The multiplier is just under 1 and the addend tiny, so the chains neither overflow nor go denormal.
    // AggressiveOptimization on these loops: a tier-0 start moves a long-running loop to on-stack-replacement code,
    // which measured 116 GFLOP/s here against 188 for a GEMM (fraction_of_peak 1.6); a limit must be the optimized code.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Loop<TV>(long iterations) where TV : struct, IFmaLanes<TV>
    {
        TV a = TV.Create(0.9999999f), b = TV.Create(1e-7f);
        TV c0 = b, c1 = b, c2 = b, c3 = b, c4 = b, c5 = b, c6 = b, c7 = b, c8 = b, c9 = b, c10 = b, c11 = b;
        for (long i = 0; i < iterations; i++)
        {
            c0 = TV.Fma(c0, a, b); c1 = TV.Fma(c1, a, b); c2 = TV.Fma(c2, a, b); c3 = TV.Fma(c3, a, b);
            c4 = TV.Fma(c4, a, b); c5 = TV.Fma(c5, a, b); c6 = TV.Fma(c6, a, b); c7 = TV.Fma(c7, a, b);
            c8 = TV.Fma(c8, a, b); c9 = TV.Fma(c9, a, b); c10 = TV.Fma(c10, a, b); c11 = TV.Fma(c11, a, b);
        }
        return TV.Sum(c0) + TV.Sum(c1) + TV.Sum(c2) + TV.Sum(c3) + TV.Sum(c4) + TV.Sum(c5)
            + TV.Sum(c6) + TV.Sum(c7) + TV.Sum(c8) + TV.Sum(c9) + TV.Sum(c10) + TV.Sum(c11);
    }

    // One vector width each: the JIT inlines these to the bare vfmadd instruction, so the loop above is one loop for
    // every width (a generic over Vector512<float> itself would need the runtime's internal ISimdVector).
    interface IFmaLanes<TSelf> where TSelf : struct
    {
        static abstract TSelf Create(float x);
        static abstract TSelf Fma(TSelf c, TSelf a, TSelf b);
        static abstract float Sum(TSelf v);
    }

    readonly struct Lanes512 : IFmaLanes<Lanes512>
    {
        readonly Vector512<float> _v;
        Lanes512(Vector512<float> v) => _v = v;
        public static Lanes512 Create(float x) => new(Vector512.Create(x));
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Lanes512 Fma(Lanes512 c, Lanes512 a, Lanes512 b) => new(Vector512.FusedMultiplyAdd(c._v, a._v, b._v));
        public static float Sum(Lanes512 v) => Vector512.Sum(v._v);
    }

    readonly struct Lanes256 : IFmaLanes<Lanes256>
    {
        readonly Vector256<float> _v;
        Lanes256(Vector256<float> v) => _v = v;
        public static Lanes256 Create(float x) => new(Vector256.Create(x));
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Lanes256 Fma(Lanes256 c, Lanes256 a, Lanes256 b) => new(Vector256.FusedMultiplyAdd(c._v, a._v, b._v));
        public static float Sum(Lanes256 v) => Vector256.Sum(v._v);
    }

    readonly struct Lanes128 : IFmaLanes<Lanes128>
    {
        readonly Vector128<float> _v;
        Lanes128(Vector128<float> v) => _v = v;
        public static Lanes128 Create(float x) => new(Vector128.Create(x));
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Lanes128 Fma(Lanes128 c, Lanes128 a, Lanes128 b) => new(Vector128.FusedMultiplyAdd(c._v, a._v, b._v));
        public static float Sum(Lanes128 v) => Vector128.Sum(v._v);
    }

    static float s_sink;
    static void Sink(float v) => Volatile.Write(ref s_sink, v);
}

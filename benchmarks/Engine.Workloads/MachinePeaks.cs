using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Engine.Workloads;

/// <summary>
/// This machine's limits, measured in the same process as the workloads they are compared with (a figure from a data
/// sheet would not know the VM's clock, its share of the cores or its memory channels): the float32 FMA peak for
/// GEMMs and the bandwidth of a streaming copy for elementwise ops. Each is the best of several repetitions on all
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

    /// <summary>GB/s of a streaming copy of <paramref name="megabytes"/> MB split over every core, counting the bytes read
    /// and the bytes written (as the elementwise workloads count theirs). What an elementwise "bandwidth" is compared with.</summary>
    public static unsafe double CopyGBps(int megabytes = 256, int reps = 5)
    {
        nuint bytes = (nuint)megabytes << 20;
        byte* src = (byte*)NativeMemory.AlignedAlloc(bytes, 64), dst = (byte*)NativeMemory.AlignedAlloc(bytes, 64);
        try
        {
            // Touch every page first: a first write faults pages in, which is the OS's cost, not the memory's.
            NativeMemory.Fill(src, bytes, 1);
            NativeMemory.Fill(dst, bytes, 2);
            int threads = Environment.ProcessorCount;
            nuint chunk = (bytes / (nuint)threads) & ~(nuint)63;
            double best = double.MaxValue;
            for (int r = 0; r < reps; r++)
            {
                var sw = Stopwatch.StartNew();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                {
                    nuint start = (nuint)t * chunk, n = t == threads - 1 ? bytes - start : chunk;
                    Buffer.MemoryCopy(src + start, dst + start, (long)n, (long)n);
                });
                best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
            return 2.0 * bytes / best / 1e9;
        }
        finally
        {
            NativeMemory.AlignedFree(src);
            NativeMemory.AlignedFree(dst);
        }
    }

    static float FmaLoop(int lanes, long iterations) => lanes switch
    {
        16 => Loop<Vector512<float>>(iterations),
        8 => Loop<Vector256<float>>(iterations),
        _ => Loop<Vector128<float>>(iterations),
    };

    // The multiplier is just under 1 and the addend tiny, so the chains neither overflow nor go denormal.
    [MethodImpl(MethodImplOptions.NoInlining)]
    static float Loop<TVec>(long iterations) where TVec : struct
    {
        if (typeof(TVec) == typeof(Vector512<float>))
        {
            var a = Vector512.Create(0.9999999f); var b = Vector512.Create(1e-7f);
            Vector512<float> c0 = b, c1 = b, c2 = b, c3 = b, c4 = b, c5 = b, c6 = b, c7 = b, c8 = b, c9 = b, c10 = b, c11 = b;
            for (long i = 0; i < iterations; i++)
            {
                c0 = Vector512.FusedMultiplyAdd(c0, a, b); c1 = Vector512.FusedMultiplyAdd(c1, a, b);
                c2 = Vector512.FusedMultiplyAdd(c2, a, b); c3 = Vector512.FusedMultiplyAdd(c3, a, b);
                c4 = Vector512.FusedMultiplyAdd(c4, a, b); c5 = Vector512.FusedMultiplyAdd(c5, a, b);
                c6 = Vector512.FusedMultiplyAdd(c6, a, b); c7 = Vector512.FusedMultiplyAdd(c7, a, b);
                c8 = Vector512.FusedMultiplyAdd(c8, a, b); c9 = Vector512.FusedMultiplyAdd(c9, a, b);
                c10 = Vector512.FusedMultiplyAdd(c10, a, b); c11 = Vector512.FusedMultiplyAdd(c11, a, b);
            }
            return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
        }
        if (typeof(TVec) == typeof(Vector256<float>))
        {
            var a = Vector256.Create(0.9999999f); var b = Vector256.Create(1e-7f);
            Vector256<float> c0 = b, c1 = b, c2 = b, c3 = b, c4 = b, c5 = b, c6 = b, c7 = b, c8 = b, c9 = b, c10 = b, c11 = b;
            for (long i = 0; i < iterations; i++)
            {
                c0 = Vector256.FusedMultiplyAdd(c0, a, b); c1 = Vector256.FusedMultiplyAdd(c1, a, b);
                c2 = Vector256.FusedMultiplyAdd(c2, a, b); c3 = Vector256.FusedMultiplyAdd(c3, a, b);
                c4 = Vector256.FusedMultiplyAdd(c4, a, b); c5 = Vector256.FusedMultiplyAdd(c5, a, b);
                c6 = Vector256.FusedMultiplyAdd(c6, a, b); c7 = Vector256.FusedMultiplyAdd(c7, a, b);
                c8 = Vector256.FusedMultiplyAdd(c8, a, b); c9 = Vector256.FusedMultiplyAdd(c9, a, b);
                c10 = Vector256.FusedMultiplyAdd(c10, a, b); c11 = Vector256.FusedMultiplyAdd(c11, a, b);
            }
            return Vector256.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
        }
        {
            var a = Vector128.Create(0.9999999f); var b = Vector128.Create(1e-7f);
            Vector128<float> c0 = b, c1 = b, c2 = b, c3 = b, c4 = b, c5 = b, c6 = b, c7 = b, c8 = b, c9 = b, c10 = b, c11 = b;
            for (long i = 0; i < iterations; i++)
            {
                c0 = Vector128.FusedMultiplyAdd(c0, a, b); c1 = Vector128.FusedMultiplyAdd(c1, a, b);
                c2 = Vector128.FusedMultiplyAdd(c2, a, b); c3 = Vector128.FusedMultiplyAdd(c3, a, b);
                c4 = Vector128.FusedMultiplyAdd(c4, a, b); c5 = Vector128.FusedMultiplyAdd(c5, a, b);
                c6 = Vector128.FusedMultiplyAdd(c6, a, b); c7 = Vector128.FusedMultiplyAdd(c7, a, b);
                c8 = Vector128.FusedMultiplyAdd(c8, a, b); c9 = Vector128.FusedMultiplyAdd(c9, a, b);
                c10 = Vector128.FusedMultiplyAdd(c10, a, b); c11 = Vector128.FusedMultiplyAdd(c11, a, b);
            }
            return Vector128.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11);
        }
    }

    static float s_sink;
    static void Sink(float v) => Volatile.Write(ref s_sink, v);
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Engine.Backends.Cpu.Gemm;
using Engine.Backends.Cpu;

namespace Engine.Benchmarks;

/// <summary>
/// Stopwatch measurement of square GEMMs: median (and best) time and GFLOP/s per size, for float32 and float64,
/// plus batched, transposed and thin (vector x matrix) cases and a register-only FMA loop as the machine's peak reference (measured in the same run,
/// since a shared host can make the peak drift). Usage:
/// <c>gemm-quick [--sizes 256,512,1024,2048] [--threads 0] [--reps 0] [--no-double]</c>.
/// </summary>
public static unsafe class GemmQuick
{
    public static void Run(string[] args)
    {
        int[] sizes = [256, 512, 1024, 2048];
        int threads = 0, reps = 0;
        bool dbl = true;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--sizes": sizes = args[++i].Split(',').Select(int.Parse).ToArray(); break;
                case "--threads": threads = int.Parse(args[++i]); break;
                case "--reps": reps = int.Parse(args[++i]); break;
                case "--no-double": dbl = false; break;
                default: throw new ArgumentException($"unknown option {args[i]}");
            }
        }
        int workers = threads <= 0 ? Environment.ProcessorCount : threads;
        Console.WriteLine($"{RuntimeInformation.FrameworkDescription}, {Environment.ProcessorCount} CPUs, " +
            $"Vector512 {Vector512.IsHardwareAccelerated}, threads {workers}");
        Console.WriteLine($"register-only FMA peak (float32): 1 thread {Peak(1):F1} GFLOP/s, {workers} threads {Peak(workers):F1} GFLOP/s");
        Console.WriteLine();
        Console.WriteLine("| type | problem | median ms | best ms | GFLOP/s (median) | GFLOP/s (best) |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (int n in sizes) Square<float>(n, threads, reps);
        if (dbl) foreach (int n in sizes) Square<double>(n, threads, reps);
        Batched(64, 128, 128, 64, threads, reps);
        foreach (var layout in new[] { "NT", "TN", "TT" }) Transposed(1024, layout, threads, reps);
        Thin(1, 4096, 4096, transposedB: false, threads, reps);
        Thin(1, 4096, 4096, transposedB: true, threads, reps);
    }

    /// <summary>Square float32 product with A and/or B stored transposed (column-major): "NT", "TN", "TT".</summary>
    private static void Transposed(int n, string layout, int threads, int reps)
    {
        long count = (long)n * n;
        float* a = Alloc<float>(count), b = Alloc<float>(count), c = Alloc<float>(count);
        long[] zero = [0];
        long ars = layout[0] == 'T' ? 1 : n, acs = layout[0] == 'T' ? n : 1;
        long brs = layout[1] == 'T' ? 1 : n, bcs = layout[1] == 'T' ? n : 1;
        Measure("float32", $"{n}x{n}x{n} {layout}", 2.0 * n * n * n, reps,
            () => Sgemm.Gemm(1, n, n, n, a, zero, ars, acs, b, zero, brs, bcs, c, zero, n, false, threads));
        NativeMemory.AlignedFree(a); NativeMemory.AlignedFree(b); NativeMemory.AlignedFree(c);
    }

    /// <summary>A thin float32 product (e.g. a vector times a weight matrix, B row-major or transposed).</summary>
    private static void Thin(int m, int n, int k, bool transposedB, int threads, int reps)
    {
        float* a = Alloc<float>((long)m * k), b = Alloc<float>((long)k * n), c = Alloc<float>((long)m * n);
        long[] zero = [0];
        long brs = transposedB ? 1 : n, bcs = transposedB ? k : 1;
        Measure("float32", $"{m}x{n}x{k} {(transposedB ? "NT" : "NN")}", 2.0 * m * n * k, reps,
            () => Sgemm.Gemm(1, m, n, k, a, zero, k, 1, b, zero, brs, bcs, c, zero, n, false, threads));
        NativeMemory.AlignedFree(a); NativeMemory.AlignedFree(b); NativeMemory.AlignedFree(c);
    }

    private static void Square<T>(int n, int threads, int reps) where T : unmanaged
    {
        long count = (long)n * n;
        T* a = Alloc<T>(count), b = Alloc<T>(count), c = Alloc<T>(count);
        long[] zero = [0];
        double flops = 2.0 * n * n * n;
        Measure(typeof(T) == typeof(float) ? "float32" : "float64", $"{n}x{n}x{n}", flops, reps,
            () => Gemm(1, n, n, n, a, zero, n, b, zero, n, c, zero, n, threads));
        NativeMemory.AlignedFree(a); NativeMemory.AlignedFree(b); NativeMemory.AlignedFree(c);
    }

    private static void Batched(int batch, int m, int n, int k, int threads, int reps)
    {
        float* a = Alloc<float>((long)batch * m * k), b = Alloc<float>((long)batch * k * n), c = Alloc<float>((long)batch * m * n);
        long[] ao = new long[batch], bo = new long[batch], co = new long[batch];
        for (int i = 0; i < batch; i++) { ao[i] = (long)i * m * k; bo[i] = (long)i * k * n; co[i] = (long)i * m * n; }
        Measure("float32", $"batch {batch} x {m}x{n}x{k}", 2.0 * batch * m * n * k, reps,
            () => Gemm(batch, m, n, k, a, ao, k, b, bo, n, c, co, n, threads));
        NativeMemory.AlignedFree(a); NativeMemory.AlignedFree(b); NativeMemory.AlignedFree(c);
    }

    private static void Gemm<T>(int batch, int m, int n, int k, T* a, long[] ao, long lda, T* b, long[] bo, long ldb,
        T* c, long[] co, long ldc, int threads) where T : unmanaged
    {
        if (typeof(T) == typeof(float))
            Sgemm.Gemm(batch, m, n, k, (float*)a, ao, lda, 1, (float*)b, bo, ldb, 1, (float*)c, co, ldc, false, threads);
        else
            Dgemm.Gemm(batch, m, n, k, (double*)a, ao, lda, 1, (double*)b, bo, ldb, 1, (double*)c, co, ldc, false, threads);
    }

    private static void Measure(string type, string problem, double flops, int reps, Action run)
    {
        // Warm up past tiered compilation and thread-pool ramp-up: at least 3 calls and 0.5 s.
        long warm = Stopwatch.GetTimestamp();
        for (int i = 0; i < 3 || Stopwatch.GetElapsedTime(warm).TotalSeconds < 0.5; i++) run();
        if (reps <= 0) reps = (int)Math.Clamp(3e10 / flops, 5, 300);
        var times = new double[reps];
        for (int i = 0; i < reps; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            run();
            times[i] = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }
        Array.Sort(times);
        double median = times[reps / 2], best = times[0];
        Console.WriteLine($"| {type} | {problem} | {median * 1e3:F3} | {best * 1e3:F3} | {flops / median / 1e9:F1} | {flops / best / 1e9:F1} |");
    }

    private static T* Alloc<T>(long count) where T : unmanaged
    {
        var p = (T*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(T)), 64);
        var rng = new Random(42);
        for (long i = 0; i < count; i++)
        {
            double v = rng.NextDouble() - 0.5;
            p[i] = typeof(T) == typeof(float) ? (T)(object)(float)v : (T)(object)v;
        }
        return p;
    }

    /// <summary>GFLOP/s of a register-only FMA loop (12 independent accumulators) on <paramref name="threads"/> threads.</summary>
    private static double Peak(int threads)
    {
        const int iters = 20_000_000;
        double best = 0;
        for (int round = 0; round < 3; round++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ => FmaLoop(iters));
            best = Math.Max(best, 2.0 * 12 * Vector512<float>.Count * iters * threads / sw.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }

    private static float FmaLoop(int iters)
    {
        var x = Vector512.Create(1.0001f);
        var y = Vector512.Create(0.9999f);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default;
        Vector512<float> a6 = default, a7 = default, a8 = default, a9 = default, a10 = default, a11 = default;
        for (int i = 0; i < iters; i++)
        {
            a0 = Vector512.FusedMultiplyAdd(x, y, a0); a1 = Vector512.FusedMultiplyAdd(x, y, a1);
            a2 = Vector512.FusedMultiplyAdd(x, y, a2); a3 = Vector512.FusedMultiplyAdd(x, y, a3);
            a4 = Vector512.FusedMultiplyAdd(x, y, a4); a5 = Vector512.FusedMultiplyAdd(x, y, a5);
            a6 = Vector512.FusedMultiplyAdd(x, y, a6); a7 = Vector512.FusedMultiplyAdd(x, y, a7);
            a8 = Vector512.FusedMultiplyAdd(x, y, a8); a9 = Vector512.FusedMultiplyAdd(x, y, a9);
            a10 = Vector512.FusedMultiplyAdd(x, y, a10); a11 = Vector512.FusedMultiplyAdd(x, y, a11);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }
}

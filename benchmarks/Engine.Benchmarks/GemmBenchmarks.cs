using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Engine.Backends.Cpu.Gemm;
using Engine.Backends.Cpu;

namespace Engine.Benchmarks;

/// <summary>Square float32 GEMM C = A·B (row-major, all cores) through <see cref="Sgemm.Gemm"/>.</summary>
[Config(typeof(GemmConfig))]
public unsafe class GemmBenchmarks
{
    private static readonly long[] Zero = [0];
    private float* _a, _b, _c;

    /// <summary>Matrix size n (n x n times n x n).</summary>
    [Params(256, 512, 1024, 2048)]
    public int N { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        nuint bytes = (nuint)N * (nuint)N * sizeof(float);
        _a = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        _b = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        _c = (float*)NativeMemory.AlignedAlloc(bytes, 64);
        var rng = new Random(42);
        for (long i = 0; i < (long)N * N; i++)
        {
            _a[i] = (float)rng.NextDouble() - 0.5f;
            _b[i] = (float)rng.NextDouble() - 0.5f;
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_c);
    }

    [Benchmark]
    public void Sgemm() => Engine.Backends.Cpu.Gemm.Sgemm.Gemm(1, N, N, N, _a, Zero, N, 1, _b, Zero, N, 1, _c, Zero, N, false, 0);
}

/// <summary>
/// Adds a GFLOP/s column (2n³ / median time) and the median to the summary; allows slow builds of the generated
/// project (a shared, busy build machine can exceed the default two minutes).
/// </summary>
public sealed class GemmConfig : ManualConfig
{
    public GemmConfig()
    {
        AddColumn(StatisticColumn.Median, new GflopsColumn());
        WithBuildTimeout(TimeSpan.FromMinutes(15));
    }
}

/// <summary>GFLOP/s of a square GEMM benchmark with an <c>N</c> parameter, from the median time.</summary>
public sealed class GflopsColumn : IColumn
{
    public string Id => nameof(GflopsColumn);
    public string ColumnName => "GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "2 n^3 / median time, in 1e9 floating-point operations per second";

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        var n = benchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == "N")?.Value;
        if (report?.ResultStatistics is not { } stats || n is not int size) return "-";
        double seconds = stats.Median * 1e-9;
        return (2.0 * size * size * size / seconds / 1e9).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
    }

    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
}

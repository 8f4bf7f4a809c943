using BenchmarkDotNet.Attributes;
using Engine.Workloads;

namespace Engine.Benchmarks;

/// <summary>
/// Every workload of <c>engine bench</c> (defined once in Engine.Workloads) as a BenchmarkDotNet case on the CPU:
/// <c>dotnet run -c Release --project benchmarks/Engine.Benchmarks -- --filter *WorkloadBenchmarks*</c>.
/// </summary>
[MemoryDiagnoser]
public class WorkloadBenchmarks
{
    IWorkloadRun? _run;

    /// <summary>The workload names.</summary>
    public static IEnumerable<string> Names => WorkloadCatalog.All.Select(w => w.Name);

    [ParamsSource(nameof(Names))]
    public string Workload { get; set; } = "";

    [GlobalSetup]
    public void Setup() => _run = WorkloadCatalog.All.Single(w => w.Name == Workload).Create(Device.Cpu);

    [Benchmark]
    public void Run() => _run!.Run();

    [GlobalCleanup]
    public void Cleanup() => _run?.Dispose();
}

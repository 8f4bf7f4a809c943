using BenchmarkDotNet.Running;

namespace Engine.Benchmarks;

/// <summary>Benchmark entry point: BenchmarkDotNet's switcher, plus a quick stopwatch mode (<c>gemm-quick</c>).</summary>
public static class Program
{
    public static void Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "gemm-quick")
        {
            GemmQuick.Run(args[1..]);
            return;
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}

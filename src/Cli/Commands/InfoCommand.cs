using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Engine.Backends;

namespace Engine.Cli.Commands;

/// <summary><c>engine info</c>: devices found, CPU SIMD features, versions.</summary>
static class InfoCommand
{
    public static int Run(string[] argv)
    {
        var a = new Args(argv, new HashSet<string>());
        a.RejectUnknown("info");
        var asm = typeof(Tensor).Assembly.GetName();
        Console.WriteLine($"engine {asm.Version} on .NET {Environment.Version} ({RuntimeInformation.OSDescription.Trim()}, {RuntimeInformation.ProcessArchitecture})");
        Console.WriteLine($"cpu: {Environment.ProcessorCount} logical cores; Vector512 {(Vector512.IsHardwareAccelerated ? "yes" : "no")}, Vector256 {(Vector256.IsHardwareAccelerated ? "yes" : "no")}, " +
            $"AVX-512F {Avx512F.IsSupported}, AVX2 {Avx2.IsSupported}, FMA {Fma.IsSupported}, AVX-512 BF16 {Avx512Bf16Supported()}");
        Console.WriteLine("devices:");
        Console.WriteLine("  cpu      (reference backend)");
        try
        {
            BackendRegistry.Get(Device.Cuda(0));
            Console.WriteLine("  cuda:0");
        }
        catch (DeviceUnavailableException e)
        {
            Console.WriteLine($"  cuda     unavailable: {e.Message}");
        }
        return 0;
    }

    // .NET 10 has no managed query for AVX512_BF16; read /proc/cpuinfo on Linux.
    static string Avx512Bf16Supported()
    {
        try { return File.Exists("/proc/cpuinfo") && File.ReadAllText("/proc/cpuinfo").Contains("avx512_bf16", StringComparison.Ordinal) ? "True (not usable from .NET)" : "False"; }
        catch (IOException) { return "unknown"; }
    }
}

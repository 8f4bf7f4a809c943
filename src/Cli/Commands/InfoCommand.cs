using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Engine.Backends;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary><c>engine info</c>: devices found, CPU SIMD features, versions.</summary>
sealed class InfoCommand : Command<InfoCommand.Settings>
{
    /// <summary><c>engine info</c> takes no options.</summary>
    public sealed class Settings : CommandSettings;

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        var asm = typeof(Tensor).Assembly.GetName();
        Console.WriteLine($"engine {asm.Version} on .NET {Environment.Version} ({RuntimeInformation.OSDescription.Trim()}, {RuntimeInformation.ProcessArchitecture})");
        Console.WriteLine($"cpu: {Environment.ProcessorCount} logical cores; Vector512 {(Vector512.IsHardwareAccelerated ? "yes" : "no")}, Vector256 {(Vector256.IsHardwareAccelerated ? "yes" : "no")}, " +
            $"AVX-512F {Avx512F.IsSupported}, AVX2 {Avx2.IsSupported}, FMA {Fma.IsSupported}, AVX-512 BF16 {Avx512Bf16Supported()}");
        Console.WriteLine("devices:");
        Console.WriteLine("  cpu      (reference backend)");
        try
        {
            var b = (Engine.Backends.Cuda.CudaBackend)BackendRegistry.Get(Device.Cuda(0));
            var acc = b.Accelerator;
            Console.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"  cuda:0   {acc.Name}{(b.IsEmulated ? " (ILGPU's CPU accelerator standing in for a GPU: ENGINE_CUDA_EMULATION=1)" : "")}, {acc.MemorySize / (double)(1L << 30):F1} GiB, {acc.NumMultiprocessors} multiprocessors, warp {acc.WarpSize}"));
        }
        catch (DeviceUnavailableException e)
        {
            // Say why: no driver at all is the usual case on a machine without an NVIDIA GPU.
            bool driver = NativeLibrary.TryLoad(OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1", out var h);
            if (driver) NativeLibrary.Free(h);
            Console.WriteLine($"  cuda     unavailable: {(driver ? "" : "no NVIDIA driver (libcuda not found); ")}{e.Message}");
        }
        // The libraries of engine train --nproc / under mpirun: MPI for CPU ranks, NCCL for CUDA ranks.
        Console.WriteLine("distributed:");
        var (mpiFound, mpi) = Engine.Distributed.Libraries.Mpi();
        Console.WriteLine($"  mpi      {(mpiFound ? mpi : "unavailable: " + mpi)}");
        var (ncclFound, nccl) = Engine.Distributed.Libraries.Nccl();
        Console.WriteLine($"  nccl     {(ncclFound ? nccl : "unavailable: " + nccl)}");
        return ExitCodes.Ok;
    }

    // .NET 10 has no managed query for AVX512_BF16; read /proc/cpuinfo on Linux.
    static string Avx512Bf16Supported()
    {
        try { return File.Exists("/proc/cpuinfo") && File.ReadAllText("/proc/cpuinfo").Contains("avx512_bf16", StringComparison.Ordinal) ? "True (not usable from .NET)" : "False"; }
        catch (IOException) { return "unknown"; }
    }
}

using System.Diagnostics;
using Engine.Backends;
using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>The CUDA backend's plumbing: device discovery, the caching allocator, the device-side conversions, PTX.</summary>
[TestFixture]
public class CudaBackendTests
{
    [Test]
    public void NoDevice_WithoutEmulation_ThrowsUnavailableNamingWhatWasLookedFor()
    {
        int real = CudaBackend.RealDeviceCount;
        var e = Assert.Throws<DeviceUnavailableException>(() => CudaBackend.Create(real, allowEmulation: false))!;
        Assert.That(e.Message, Does.Contain($"ILGPU found {real} CUDA device"));
        Assert.That(e.Message, Does.Contain("ENGINE_CUDA_EMULATION=1"));
    }

    [Test]
    public void TensorOnMissingDevice_ThrowsUnavailable()
    {
        // Past the real devices and the emulated one: unavailable whether or not emulation is on in this process.
        var missing = Device.Cuda(CudaBackend.RealDeviceCount + 1);
        Assert.Throws<DeviceUnavailableException>(() => Tensor.Zeros([3], DType.Float32, missing).Dispose());
    }

    [Test]
    public void SizeClasses_RoundLikePyTorch()
    {
        Assert.That(CudaCachingAllocator.RoundSize(0), Is.EqualTo(512));
        Assert.That(CudaCachingAllocator.RoundSize(1), Is.EqualTo(512));
        Assert.That(CudaCachingAllocator.RoundSize(513), Is.EqualTo(1024));
        Assert.That(CudaCachingAllocator.RoundSize(1 << 20), Is.EqualTo(1 << 20));
        Assert.That(CudaCachingAllocator.RoundSize((1 << 20) + 1), Is.EqualTo((1 << 20) + (1 << 18)));
        Assert.That(CudaCachingAllocator.RoundSize(3 << 20), Is.EqualTo(3 << 20));
        Assert.That(CudaCachingAllocator.RoundSize((7 << 20) + 5), Is.EqualTo(8 << 20));
    }

    // ---- the device-side conversions, run on the host against .NET's and BFloat16's own ----

    [Test]
    public void HalfBits_AllPatterns_WidenExactly()
    {
        for (int h = 0; h < 65536; h++)
        {
            float want = (float)BitConverter.UInt16BitsToHalf((ushort)h);
            float got = DeviceElements.HalfToFloat((ushort)h);
            if (BitConverter.SingleToUInt32Bits(got) != BitConverter.SingleToUInt32Bits(want))
                Assert.Fail($"half {h:X4}: got {BitConverter.SingleToUInt32Bits(got):X8}, .NET {BitConverter.SingleToUInt32Bits(want):X8}");
        }
    }

    [Test]
    public void FloatAndDoubleToHalf_MatchDotNet_OnEdgesAndRandomBits()
    {
        var rng = new Random(7);
        var floats = new List<uint>();
        for (int h = 0; h < 65536; h++)
        {
            uint f = BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf((ushort)h));
            // Each half, and the floats just around it and halfway to the next (the ties).
            floats.AddRange([f, f + 1, f - 1, f + 0x1000, f + 0xFFF, f + 0x1001]);
        }
        for (int i = 0; i < 200_000; i++) floats.Add((uint)rng.NextInt64(0, 1L << 32));
        foreach (var b in floats)
        {
            float x = BitConverter.UInt32BitsToSingle(b);
            ushort want = BitConverter.HalfToUInt16Bits((Half)x);
            ushort got = DeviceElements.FloatToHalf(b);
            if (got != want) Assert.Fail($"float {b:X8}: got half {got:X4}, .NET {want:X4}");
        }
        for (int i = 0; i < 200_000; i++)
        {
            ulong b = i % 2 == 0 ? (ulong)rng.NextInt64() ^ ((ulong)rng.Next(2) << 63)
                : BitConverter.DoubleToUInt64Bits((double)BitConverter.UInt16BitsToHalf((ushort)rng.Next(65536))) + (ulong)rng.Next(-3, 4) * (1UL << 41);
            double x = BitConverter.UInt64BitsToDouble(b);
            ushort want = BitConverter.HalfToUInt16Bits((Half)x);
            ushort got = DeviceElements.DoubleToHalf(x);
            if (got != want) Assert.Fail($"double {b:X16}: got half {got:X4}, .NET {want:X4}");
        }
    }

    [Test]
    public void DoubleToBFloat16_MatchesBFloat16()
    {
        var rng = new Random(8);
        for (int i = 0; i < 200_000; i++)
        {
            ulong b = i % 2 == 0 ? (ulong)rng.NextInt64() ^ ((ulong)rng.Next(2) << 63)
                : BitConverter.DoubleToUInt64Bits((double)BFloat16.FromBits((ushort)rng.Next(65536))) + (ulong)rng.Next(-3, 4) * (1UL << 44);
            double x = BitConverter.UInt64BitsToDouble(b);
            ushort want = ((BFloat16)x).Bits, got = DeviceElements.DoubleToBf16(x);
            if (got != want) Assert.Fail($"double {b:X16}: got bf16 {got:X4}, BFloat16 {want:X4}");
        }
    }

    [Test]
    public void IntegerStores_SaturateAsDotNet()
    {
        foreach (var x in new[] { double.NaN, double.PositiveInfinity, double.NegativeInfinity, 3e9, -3e9, 1e19, -1e19, 2147483647.9, -2147483648.9, -0.5, 7.9 })
        {
            Assert.That(DeviceElements.DoubleToInt(x), Is.EqualTo((int)x), $"int of {x}");
            Assert.That(DeviceElements.DoubleToLong(x), Is.EqualTo((long)x), $"long of {x}");
        }
    }

    // ---- PTX: what the CPU accelerator cannot check ----

    [Test]
    public void EveryKernel_CompilesToPtx()
    {
        var failures = new List<string>();
        var sw = Stopwatch.StartNew();
        int count = 0;
        foreach (var entry in KernelRegistry.All)
        {
            count++;
            try
            {
                var ptx = PtxCompiler.Compile(entry);
                if (!ptx.Contains(".entry")) failures.Add($"{entry.Name}: no entry point");
            }
            catch (Exception e)
            {
                failures.Add($"{entry.Name}: {e.GetType().Name}: {e.Message.Split('\n')[0]} {e.InnerException?.Message}");
            }
        }
        TestContext.Out.WriteLine($"{count} kernels compiled to PTX in {sw.Elapsed.TotalSeconds:F1} s");
        Assert.That(failures, Is.Empty);
    }

    /// <summary>The PTX tests check what runs: the backend's own context (O2), sm_90, the pinned ISA 8.3.</summary>
    [Test]
    public void PtxCompiler_UsesTheRunTimeContext()
    {
        Assert.That(PtxCompiler.OptimizationLevel, Is.EqualTo(ILGPU.OptimizationLevel.O2));
        Assert.That(PtxCompiler.Architecture, Is.EqualTo(ILGPU.Runtime.Cuda.CudaArchitecture.SM_90));
        var ptx = PtxCompiler.Compile(KernelRegistry.Named("Copy"));
        Assert.That(ptx, Does.Contain(".version 8.3"));
        Assert.That(ptx, Does.Contain(".entry"));
    }

    [Test]
    public void DenseFloat32Path_UsesVectorLoadsAndStores()
    {
        var ptx = PtxCompiler.Compile(KernelRegistry.Named("Binary<AddOp, Narrow>"));
        Assert.That(ptx, Does.Contain("ld.global.v4.f32"));
        Assert.That(ptx, Does.Contain("st.global.v4.f32"));
    }
}

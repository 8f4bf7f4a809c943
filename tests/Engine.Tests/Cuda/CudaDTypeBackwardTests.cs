using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// <see cref="DTypeBackwardTests"/>' table on the CUDA backend, on ILGPU's CPU accelerator: each case runs forward and
/// backward on the device and is compared with the float64 run on the CPU backend, so a wrong float derivative in a
/// CUDA kernel fails here even where the CPU backend shares the same op struct. To keep the emulator's kernel
/// compilations (most of the time here) few, each case runs in one dtype, float32, bfloat16 and float16 in turn down the
/// table: every op once on the device, every dtype on every family.
/// </summary>
[TestFixture]
[NonParallelizable] // process-wide emulation switch and counters
public class CudaDTypeBackwardTests
{
    [OneTimeSetUp]
    public void EnableEmulation() => CudaBackend.EnableEmulation();

    static IEnumerable<TestCaseData> CaseData() =>
        DTypeBackwardTests.Cases.Select((c, i) =>
        {
            var dt = DTypeBackwardTests.DTypes[i % DTypeBackwardTests.DTypes.Length];
            return new TestCaseData(c, dt).SetName($"{c.Name} [{dt.Name()}]");
        });

    [TestCaseSource(nameof(CaseData))]
    public void Backward_MatchesFloat64(DTypeCase c, DType dtype) => DTypeBackward.Check(c, dtype, CudaBackend.EmulatedDevice);
}

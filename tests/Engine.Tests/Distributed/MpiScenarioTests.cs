using NUnit.Framework;

namespace Engine.Tests.Distributed;

/// <summary>
/// Two ranks under mpirun against single-process references computed inside the worker (float64): every collective
/// per dtype, DDP against one process with the global batch (gradients, 30 AdamW steps), the bucket order and the
/// overlap of the first bucket's all-reduce with backward, NoSync, ZeRO-1 (sharded AdamW, 30 steps), dropout masks
/// (docs/SCALING.md), the sampler and the scaler's skip agreement. One
/// mpirun job runs all of them (a job's start costs seconds); each test checks its own "OK"/"FAIL" lines, printed by
/// both ranks.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class MpiScenarioTests
{
    static readonly Lazy<Engine.Tests.Support.EngineResult> s_job = new(() =>
        MpiJob.Run("collectives,ddp,train,zero,dropout,scaler,sampler", TimeSpan.FromSeconds(150)).Result);

    // Both ranks print every check: each named one must be there twice as OK. A job that died, or exited nonzero
    // with no FAIL line, fails every test with its output.
    static void ExpectChecks(string[] names)
    {
        MpiJob.RequireMpirun();
        var r = s_job.Value;
        var lines = r.Out.Split('\n').Select(l => l.Trim()).ToArray();
        bool anyFail = lines.Any(l => l.StartsWith("FAIL ", StringComparison.Ordinal));
        Assert.That(r.ExitCode == 0 || anyFail, Is.True, () => $"the job failed outside its checks\n{r}");
        foreach (var n in names)
        {
            var failed = lines.Where(l => l.StartsWith("FAIL " + n + " ", StringComparison.Ordinal) || l == "FAIL " + n).ToArray();
            Assert.That(failed, Is.Empty, () => string.Join('\n', failed));
            Assert.That(lines.Count(l => l == "OK " + n), Is.EqualTo(2), () => $"'OK {n}' from both ranks\n{r}");
        }
    }

    static void ExpectChecks(string _, params string[] names) => ExpectChecks(names);

    static readonly string[] Dtypes = ["Float32", "Float64", "BFloat16", "Float16", "Int64"];

    [Test]
    public void AllReduceSumAverageMaxMatchOneProcessPerDtype() =>
        ExpectChecks("allreduce", Dtypes.SelectMany(d => new[] { "Sum", "Average", "Max" }.Where(op => !(op == "Average" && d == "Int64")).Select(op => $"allreduce {op} {d}"))
            .Concat(Dtypes.Select(d => $"allreduce view {d}")).ToArray());

    [Test]
    public void BroadcastAllGatherReduceScatterMatchOneProcess() =>
        ExpectChecks("", Dtypes.SelectMany(d => new[] { $"broadcast {d}", $"allgather {d}", $"reducescatter {d}" }).Append("broadcast Bool").Append("allgather Bool").ToArray());

    [Test]
    public void AsyncHandlesBarrierAndFoundInf() => ExpectChecks("", "async handles", "barrier", "found-inf agreement");

    [Test]
    public void DdpGradientsMatchOneProcessWithTheGlobalBatch() => ExpectChecks("ddp grads", "ddp grads Float64", "ddp grads Float32");

    [Test]
    public void DdpBucketsInReverseOrderAndFirstAllReduceOverlapsBackward() =>
        ExpectChecks("ddp", "ddp buckets Float64", "ddp buckets Float32", "ddp overlap Float64", "ddp overlap Float32");

    [Test]
    public void DdpNoSyncAccumulatesThenReduces() => ExpectChecks("ddp nosync", "ddp nosync Float64", "ddp nosync Float32");

    [Test]
    public void DdpThirtyStepsFollowOneProcess() =>
        ExpectChecks("ddp 30 steps", "ddp 30 steps losses Float64", "ddp 30 steps weights Float64", "ddp 30 steps losses Float32", "ddp 30 steps weights Float32");

    [Test]
    public void ZeroOneFollowsOneProcessWithHalfTheOptimizerStatePerRank() =>
        ExpectChecks("zero", "zero 30 steps losses Float64", "zero 30 steps weights Float64", "zero state sharded Float64",
            "zero 30 steps losses Float32", "zero 30 steps weights Float32", "zero state sharded Float32");

    [Test]
    public void DropoutMasksAreTheSameOnEveryRankAsDocumented() => ExpectChecks("", "dropout masks as PyTorch DDP with one seed");

    [Test]
    public void ScalerSkipsTheSameStepsOnEveryRank() =>
        ExpectChecks("scaler", "scaler step 1: taken on every rank, scale 1024", "scaler step 2: skipped on every rank, scale 512",
            "scaler step 3: taken on every rank, scale 512", "scaler agreement across ranks");

    [Test]
    public void SamplerShardsTheOneProcessOrder() =>
        ExpectChecks("", "sampler interleaves the one-process order", "sampler order is DataLoader's", "SetEpoch reshuffles");
}

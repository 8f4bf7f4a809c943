using System.Globalization;
using Engine.Tests.CliTests;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Distributed;

/// <summary>
/// <c>engine train --nproc 2</c> end to end with the published binary: two ranks through mpirun train as one process
/// with the same global batch and seed (losses within 1e-5 in float32), rank 0 alone writes the run directory, a
/// resume with one process continues it, Ctrl-C saves and exits 130, and a batch that does not split is a usage error.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class TrainNprocTests : CliFixture
{
    static EngineResult Run(int code, params string[] args)
    {
        MpiJob.RequireMpirun();
        var r = PublishedEngine.Run(args, Timeout, MpiJob.Environment);
        Assert.That(r.ExitCode, Is.EqualTo(code), () => $"engine {string.Join(' ', args)}\n{r}");
        return r;
    }

    /// <summary>A train command line with <c>--nproc 2</c> after the command name.</summary>
    static string[] Nproc2(string[] train) => [train[0], "--nproc", "2", .. train[1..]];

    static double[] Losses(string runDir) => Column(Metrics(runDir), 1).Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();

    [Test]
    public void TwoRanksTrainAsOneProcessWithTheGlobalBatchAndResumeWithOne()
    {
        string one = At("one"), two = At("two");
        Run(0, Train(one, 6, "--seed", "7"));
        var r = Run(0, Nproc2(Train(two, 6, "--seed", "7")));
        Assert.That(r.Out, Does.Contain("2 ranks × 4 sequences"), () => r.ToString());
        // Rank 0 alone wrote: one summary, and the run directory holds what a single process writes.
        Assert.That(r.Out.Split('\n').Count(l => l.StartsWith("final loss", StringComparison.Ordinal)), Is.EqualTo(1), () => r.ToString());
        Assert.That(Directory.EnumerateFileSystemEntries(two).Select(Path.GetFileName).Order(),
            Is.EqualTo(Directory.EnumerateFileSystemEntries(one).Select(Path.GetFileName).Order()));
        double[] a = Losses(one), b = Losses(two);
        Assert.That(b, Has.Length.EqualTo(6));
        for (int i = 0; i < a.Length; i++)
            Assert.That(Math.Abs(b[i] - a[i]), Is.LessThanOrEqualTo(1e-5 * Math.Abs(a[i])), $"step {i + 1}: {b[i]:R} with 2 ranks vs {a[i]:R}");

        // The global batch is the checkpoint's: one process continues the two ranks' run, and they stay together.
        Run(0, "train", "--resume", two, "--steps", "9", "--quiet");
        Run(0, "train", "--resume", one, "--steps", "9", "--quiet");
        Assert.That(LatestStep(two), Is.EqualTo(9));
        double[] c = Losses(one), d = Losses(two);
        Assert.That(d, Has.Length.EqualTo(9));
        Assert.That(Column(Metrics(two), 5).Distinct(), Is.EqualTo(new[] { "8" }), "the batch column is the global batch");
        for (int i = 0; i < c.Length; i++)
            Assert.That(Math.Abs(d[i] - c[i]), Is.LessThanOrEqualTo(1e-5 * Math.Abs(c[i])), $"step {i + 1}");
    }

    [Test]
    public void ABatchThatDoesNotSplitIsAUsageErrorNamingBoth()
    {
        MpiJob.RequireMpirun();
        var r = ExpectOneLineError(2, Nproc2(Train(At("run"), 3, "--batch", "7")), "--batch 7", "--nproc 2");
        Assert.That(Directory.Exists(At("run")), Is.False, () => r.ToString());
    }

    [Test]
    public void SigintSavesOnRankZeroAndExits130()
    {
        MpiJob.RequireMpirun();
        string run = At("run");
        using var p = PublishedEngine.Start(Nproc2(Train(run, 1_000_000)), MpiJob.Environment);
        var metrics = Path.Combine(run, "metrics.csv");
        WaitForFile(p, metrics, TimeSpan.FromSeconds(60));
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (File.ReadAllLines(metrics).Length < 3 && DateTime.UtcNow < until && !p.HasExited) Thread.Sleep(50);
        p.Signal(EngineProcess.SigInt);
        var r = p.WaitForExit(TimeSpan.FromSeconds(60));
        Assert.That(r.ExitCode, Is.EqualTo(130), () => r.ToString());
        long step = LatestStep(run);
        Assert.That(step, Is.GreaterThanOrEqualTo(2));
        Assert.That(r.Err, Does.Contain($"interrupted by SIGTERM at step {step}: checkpoint saved"), () => r.ToString());
        Assert.That(long.Parse(Metrics(run)[^1][0], CultureInfo.InvariantCulture), Is.EqualTo(step), "metrics end at the saved step");
    }

    [Test]
    public void InfoNamesTheMpiLibrary()
    {
        MpiJob.RequireMpirun();
        var r = Expect(0, "info");
        Assert.That(r.Out, Does.Contain("mpi      libmpi.so"), () => r.ToString());
        Assert.That(r.Out, Does.Match(@"nccl     (\S*libnccl\.so\.2|unavailable: .*libnccl\.so\.2)"), () => r.ToString());
    }
}

using System.Globalization;
using NUnit.Framework;

namespace Engine.Tests.CliTests;

/// <summary>Training runs end to end: determinism across processes, resume and its rules, new runs over old ones.</summary>
[NonParallelizable]
public sealed class TrainingRunTests : CliFixture
{
    [Test]
    public void SameOptionsGiveByteIdenticalCheckpointsInSeparateProcessesAndAnyThreadCount()
    {
        Expect(0, Train(At("a"), 20, "--dropout", "0.1", "--threads", "2"));
        Expect(0, Train(At("b"), 20, "--dropout", "0.1", "--threads", "2"));
        Expect(0, Train(At("c"), 20, "--dropout", "0.1", "--threads", "1"));
        AssertSameCheckpoint(Latest(At("a")), Latest(At("b")));
        AssertSameCheckpoint(Latest(At("a")), Latest(At("c")));
        Assert.That(Column(Metrics(At("c")), 1), Is.EqualTo(Column(Metrics(At("a")), 1)), "per-step losses");
    }

    [Test]
    public void ResumingAMiddleCheckpointIntoANewDirectoryReproducesTheRunBitForBit()
    {
        var a = At("a");
        var b = At("b");
        var r = Expect(0, Train(a, 40, "--dropout", "0.1", "--save-every", "10", "--keep", "10"));
        Assert.That(Directory.GetDirectories(a, "step-*").Select(Path.GetFileName), Is.EquivalentTo(new[] { "step-000010", "step-000020", "step-000030", "step-000040" }), r.ToString());
        Expect(0, ["train", "--resume", Path.Combine(a, "step-000020"), "--out", b, .. TinyOptions]);
        AssertSameCheckpoint(Latest(a), Latest(b));
        var ma = Metrics(a);
        var mb = Metrics(b);
        Assert.That(Column(mb, 0), Is.EqualTo(Enumerable.Range(1, 40).Select(i => i.ToString(CultureInfo.InvariantCulture))), "one row per step, the fork's first 20 copied");
        Assert.That(Column(mb, 1), Is.EqualTo(Column(ma, 1)), "loss column");
        Assert.That(Column(mb, 2), Is.EqualTo(Column(ma, 2)), "lr column");
        Assert.That(mb.Take(20).Select(x => string.Join(',', x)), Is.EqualTo(ma.Take(20).Select(x => string.Join(',', x))), "rows up to the checkpoint are A's, copied");
    }

    /// <summary>Every entry under <paramref name="dir"/> with its time and size; optionally without the lock file.</summary>
    static string Snapshot(string dir, bool withLock = true) => string.Join('\n', Directory.EnumerateFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal)
        .Where(p => withLock || Path.GetFileName(p) != ".lock")
        .Select(p => $"{Path.GetRelativePath(dir, p)} {File.GetLastWriteTimeUtc(p):O} {(File.Exists(p) ? new FileInfo(p).Length : -1)}"));

    [Test]
    public void ResumeRules()
    {
        var run = At("run");
        Expect(0, Train(run, 20, "--save-every", "10", "--keep", "10"));

        var before = Snapshot(run);
        var done = Expect(0, "train", "--resume", run, "--quiet");
        Assert.That(done.Out, Does.Contain("finished"));
        Assert.That(Snapshot(run), Is.EqualTo(before), "a finished run resumed without --steps rewrites nothing");

        ExpectOneLineError(2, ["train", "--resume", run, "--steps", "20"], "--steps 20", "step 20");
        ExpectOneLineError(2, ["train", "--resume", run, "--steps", "10"], "--steps 10");
        ExpectOneLineError(2, ["train", "--resume", run, "--steps", "30", "--layers", "3"], "--layers");
        Assert.That(Snapshot(run), Is.EqualTo(before), "a refused resume changes nothing");

        // The same continuation twice, forked from the run's latest checkpoint: once as it was, once with a third of the
        // learning rate and half the batch. The schedule is linear in the peak rate, so every later lr is a third.
        var same = At("same");
        var changed = At("changed");
        Expect(0, "train", "--resume", run, "--steps", "30", "--out", same, "--quiet");
        var r = Expect(0, "train", "--resume", run, "--steps", "30", "--lr", "0.001", "--batch", "4", "--out", changed, "--quiet");
        Assert.That(r.Out, Does.Contain("lr 0.003 → 0.001").And.Contain("batch 8 → 4"));
        var ms = Metrics(same);
        var mc = Metrics(changed);
        Assert.That(mc, Has.Count.EqualTo(30));
        for (int i = 0; i < 30; i++)
        {
            double lrSame = double.Parse(ms[i][2], CultureInfo.InvariantCulture), lrChanged = double.Parse(mc[i][2], CultureInfo.InvariantCulture);
            if (i < 20)
            {
                Assert.That(mc[i][2], Is.EqualTo(ms[i][2]), $"lr at step {i + 1}");
                Assert.That(mc[i][5], Is.EqualTo("8"), $"batch at step {i + 1}");
            }
            else
            {
                Assert.That(lrChanged, Is.EqualTo(lrSame / 3).Within(1e-9 * lrSame), $"lr at step {i + 1}");
                Assert.That(mc[i][5], Is.EqualTo("4"), $"batch at step {i + 1}");
                Assert.That(ms[i][5], Is.EqualTo("8"), $"batch at step {i + 1}");
            }
        }

        // In place, a larger --steps continues the run from its latest checkpoint.
        Expect(0, "train", "--resume", run, "--steps", "30", "--quiet");
        Assert.That(LatestStep(run), Is.EqualTo(30));
        AssertSameCheckpoint(Latest(same), Latest(run));
        Assert.That(Metrics(run).Select(x => string.Join(',', x.Take(3))), Is.EqualTo(ms.Select(x => string.Join(',', x.Take(3)))));
    }

    [Test]
    public void ANewRunIntoAnOldOneNeedsForceAndThenStartsOver()
    {
        var run = At("run");
        Expect(0, Train(run, 20, "--save-every", "10", "--keep", "10"));
        // The refusal is decided under the lock, so .lock itself is written (the PID); nothing else may change.
        var before = Snapshot(run, withLock: false);
        ExpectOneLineError(2, Train(run, 6), "--resume", "--force");
        Assert.That(Snapshot(run, withLock: false), Is.EqualTo(before));
        Expect(0, Train(run, 6, "--force"));
        Assert.That(Directory.GetDirectories(run, "step-*").Select(Path.GetFileName), Is.EqualTo(new[] { "step-000006" }));
        Assert.That(Column(Metrics(run), 0), Is.EqualTo(new[] { "1", "2", "3", "4", "5", "6" }));
        Expect(0, Train(At("fresh"), 6));
        AssertSameCheckpoint(Latest(At("fresh")), Latest(run));
    }
}

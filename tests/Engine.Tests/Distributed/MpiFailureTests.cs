using NUnit.Framework;

namespace Engine.Tests.Distributed;

/// <summary>
/// A rank that hangs or dies never hangs the job: the watchdog on every wait (ENGINE_DIST_TIMEOUT, as the CLI's
/// --dist-timeout) makes the surviving rank fail with a message naming the missing rank and exit code 10.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class MpiFailureTests
{
    const int DistributedExitCode = 10;
    static readonly TimeSpan Timeout = TimeSpan.FromSeconds(3);

    static Dictionary<string, string> ShortTimeout() =>
        new() { ["ENGINE_DIST_TIMEOUT"] = Timeout.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) };

    [Test]
    public void AHungRankMakesTheOtherExitTenNamingItWithinTheTimeout()
    {
        Assert.That(Engine.Distributed.DistributedException.ExitCode, Is.EqualTo(DistributedExitCode));
        var (r, elapsed) = MpiJob.Run("hang", TimeSpan.FromSeconds(60), env: ShortTimeout());
        Assert.That(r.ExitCode, Is.EqualTo(DistributedExitCode), () => r.ToString());
        Assert.That(r.Err, Does.Contain("rank 0 of 2").And.Contain("rank(s) 1 did not join").And.Contain("within 3 s"), () => r.ToString());
        // The job's start (two .NET processes) plus the timeout, far below the rank's five-minute sleep.
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(45)), () => r.ToString());
    }

    [Test]
    public void AKilledRankMakesTheOtherExitNonzeroWithinTheTimeout()
    {
        var (r, elapsed) = MpiJob.Run("kill", TimeSpan.FromSeconds(60), env: ShortTimeout());
        Assert.That(r.ExitCode, Is.Not.EqualTo(0), () => r.ToString());
        Assert.That(r.Out, Does.Not.Contain("OK "), () => r.ToString());
        Assert.That(elapsed, Is.LessThan(TimeSpan.FromSeconds(45)), () => r.ToString());
    }
}

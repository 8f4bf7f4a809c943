using System.Diagnostics;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Distributed;

/// <summary>
/// Runs tests/Engine.Distributed.Worker (built by the solution build, found next to this assembly's configuration)
/// under <c>mpirun -np 2 --oversubscribe</c>. Open MPI comes from <c>scripts/ci-deps.sh</c>; without mpirun a test is
/// ignored with the reason, except under <c>CI=true</c>, where it fails (CI must install it), as PtxasTests does for ptxas.
/// </summary>
static class MpiJob
{
    /// <summary>What Open MPI needs as root and in containers (no cross-memory attach).</summary>
    public static readonly Dictionary<string, string> Environment = new()
    {
        ["OMPI_ALLOW_RUN_AS_ROOT"] = "1",
        ["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1",
        ["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none",
        // Open MPI hands each rank a pseudo-terminal for its stdout; with a TERM, .NET's console writes terminal
        // set-up sequences into it. Results are read from the lines, so no terminal.
        ["TERM"] = "dumb",
        // One kernel thread per rank: two ranks share the cores, and results do not depend on the thread count.
        ["ENGINE_NUM_THREADS"] = "1",
    };

    /// <summary>mpirun from ENGINE_MPIRUN or PATH, or ignores (fails under CI=true) the calling test.</summary>
    public static string RequireMpirun()
    {
        if (System.Environment.GetEnvironmentVariable("ENGINE_MPIRUN") is { Length: > 0 } given && File.Exists(given)) return given;
        foreach (var dir in (System.Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            var p = Path.Combine(dir, "mpirun");
            if (dir.Length > 0 && File.Exists(p)) return p;
        }
        const string why = "mpirun not found (ENGINE_MPIRUN, PATH): run bash scripts/ci-deps.sh (openmpi-bin, libopenmpi-dev)";
        if (System.Environment.GetEnvironmentVariable("CI") == "true") Assert.Fail(why + " (CI=true: CI must install it)");
        TestContext.Progress.WriteLine("Distributed tests ignored: " + why);
        Assert.Ignore(why);
        return "";
    }

    /// <summary>The worker's assembly, built in the same configuration as this one (bin/Release/net10.0).</summary>
    public static string Worker()
    {
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string framework = here.Name, configuration = here.Parent!.Name;
        var dll = Path.Combine(PublishedEngine.RepoRoot(), "tests", "Engine.Distributed.Worker", "bin", configuration, framework, "Engine.Distributed.Worker.dll");
        return File.Exists(dll) ? dll : throw new InvalidOperationException($"{dll} is missing: build Engine.sln (it holds the worker)");
    }

    /// <summary>The dotnet host running this test, to start the worker's assembly with.</summary>
    static string Dotnet() =>
        System.Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";

    /// <summary>Runs the scenarios (comma-separated) on <paramref name="ranks"/> ranks and returns the job's result.</summary>
    public static (EngineResult Result, TimeSpan Elapsed) Run(string scenarios, TimeSpan timeout, int ranks = 2, IDictionary<string, string>? env = null)
    {
        var mpirun = RequireMpirun();
        var vars = new Dictionary<string, string>(Environment);
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) vars[k] = v;
        var args = new List<string> { "-np", ranks.ToString(System.Globalization.CultureInfo.InvariantCulture), "--oversubscribe" };
        // mpirun passes only the variables named with -x to the ranks it starts (on this machine it forwards its own
        // environment too, but -x says what the ranks need).
        foreach (var k in vars.Keys.Where(k => !k.StartsWith("OMPI_", StringComparison.Ordinal))) { args.Add("-x"); args.Add(k); }
        args.AddRange([Dotnet(), Worker(), scenarios]);
        var watch = Stopwatch.StartNew();
        using var p = new EngineProcess(PublishedEngine.StartInfo(mpirun, args, vars), $"mpirun {string.Join(' ', args)}");
        var r = p.WaitForExit(timeout);
        return (r, watch.Elapsed);
    }
}

using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.CliTests;

/// <summary>
/// Base of the out-of-process tests of the published <c>engine</c> binary: a temporary directory per test and a model
/// small enough that a training run takes about a second.
/// </summary>
[NonParallelizable]
public abstract class CliFixture
{
    protected static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);

    /// <summary>This test's own directory, deleted afterwards.</summary>
    protected string Dir { get; private set; } = "";

    [SetUp]
    public void MakeDir()
    {
        Dir = Path.Combine(Path.GetTempPath(), "engine-cli-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Dir);
    }

    [TearDown]
    public void RemoveDir()
    {
        try { Directory.Delete(Dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    protected string At(params string[] parts) => Path.Combine([Dir, .. parts]);

    /// <summary>The options of the tiny model every training test uses.</summary>
    protected static readonly string[] TinyOptions = ["--batch", "8", "--layers", "1", "--heads", "2", "--dmodel", "16", "--eval-samples", "20", "--quiet"];

    protected static string[] Train(string outDir, long steps, params string[] extra) =>
        ["train", "--out", outDir, "--steps", steps.ToString(System.Globalization.CultureInfo.InvariantCulture), .. TinyOptions, .. extra];

    protected static EngineResult Cli(params string[] args) => PublishedEngine.Run(args, Timeout);

    /// <summary>Runs and asserts the exit code, showing both streams when it differs.</summary>
    protected static EngineResult Expect(int code, params string[] args)
    {
        var r = Cli(args);
        Assert.That(r.ExitCode, Is.EqualTo(code), () => $"engine {string.Join(' ', args)}\n{r}");
        return r;
    }

    /// <summary>Asserts a failure: <paramref name="code"/> and exactly one stderr line containing every fragment.</summary>
    protected static EngineResult ExpectOneLineError(int code, string[] args, params string[] fragments)
    {
        var r = Expect(code, args);
        Assert.That(r.ErrLines, Has.Length.EqualTo(1), () => $"exactly one stderr line\n{r}");
        foreach (var f in fragments) Assert.That(r.Err, Does.Contain(f), () => r.ToString());
        return r;
    }

    /// <summary>The step directory <c>latest</c> names.</summary>
    protected static string Latest(string runDir) => Path.Combine(runDir, File.ReadAllText(Path.Combine(runDir, "latest")).Trim());

    protected static long LatestStep(string runDir) => long.Parse(Path.GetFileName(Latest(runDir))["step-".Length..], System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The three files that make a checkpoint what it is (manifest.json differs by its creation time).</summary>
    protected static readonly string[] StateFiles = ["model.safetensors", "optimizer.safetensors", "trainer.json"];

    protected static void AssertSameCheckpoint(string expectedStepDir, string actualStepDir)
    {
        Assert.That(Path.GetFileName(actualStepDir), Is.EqualTo(Path.GetFileName(expectedStepDir)));
        foreach (var f in StateFiles)
            Assert.That(File.ReadAllBytes(Path.Combine(actualStepDir, f)), Is.EqualTo(File.ReadAllBytes(Path.Combine(expectedStepDir, f))),
                $"{f} of {actualStepDir} differs from {expectedStepDir}");
    }

    /// <summary>metrics.csv as rows of columns, without the header.</summary>
    protected static List<string[]> Metrics(string runDir)
    {
        var lines = File.ReadAllLines(Path.Combine(runDir, "metrics.csv"));
        Assert.That(lines[0], Is.EqualTo("step,loss,lr,scale,tokens_per_s,batch,val_loss"));
        return lines.Skip(1).Select(l => l.Split(',')).ToList();
    }

    protected static string[] Column(List<string[]> rows, int c) => rows.Select(r => r[c]).ToArray();

    /// <summary>After a test edits a file of a checkpoint, makes its manifest agree again, so only the content check can catch it.</summary>
    protected static void FixManifest(string stepDir, string file)
    {
        var path = Path.Combine(stepDir, "manifest.json");
        var m = JsonNode.Parse(File.ReadAllText(path))!;
        var bytes = File.ReadAllBytes(Path.Combine(stepDir, file));
        var entry = m["files"]!.AsArray().Single(e => (string?)e!["name"] == file)!;
        entry["size"] = bytes.LongLength;
        entry["sha256"] = Convert.ToHexStringLower(SHA256.HashData(bytes));
        File.WriteAllText(path, m.ToJsonString());
    }

    protected static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.EnumerateFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in Directory.EnumerateDirectories(from)) CopyDirectory(d, Path.Combine(to, Path.GetFileName(d)));
    }

    /// <summary>Waits until <paramref name="path"/> exists, failing with the process's output when it exits first.</summary>
    protected static void WaitForFile(EngineProcess p, string path, TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        while (!File.Exists(path))
        {
            if (p.HasExited) Assert.Fail($"the engine exited before writing {path}\n{p.WaitForExit(Timeout)}");
            if (DateTime.UtcNow > until) Assert.Fail($"no {path} after {timeout.TotalSeconds:F0} s");
            Thread.Sleep(20);
        }
    }
}

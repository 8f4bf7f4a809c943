using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using Engine.Cli.Training;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>Run directories: atomic numbered checkpoints, <c>latest</c>, pruning, manifests, and the writer's lock.</summary>
public class RunDirectoryTests
{
    string _root = "";
    string _run = "";

    [SetUp]
    public void SetUp()
    {
        _root = Path.Combine(Path.GetTempPath(), "engine-rundir-tests-" + Guid.NewGuid().ToString("N"));
        _run = Path.Combine(_root, "run");
        Directory.CreateDirectory(_root);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    // Stands in for the trainer: two files whose bytes depend on the step, one in a subdirectory.
    static Action<string> Writer(long step) => dir =>
    {
        var bytes = new byte[4096 + step];
        new Random((int)step).NextBytes(bytes);
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), bytes);
        File.WriteAllText(Path.Combine(dir, "trainer.json"), $"{{\"step\":{step}}}");
    };

    string SaveOne(long step, int keep = 10)
    {
        using var rd = RunDirectory.OpenForWriting(_run);
        return rd.SaveCheckpoint(step, Writer(step), keep);
    }

    string Step(long step) => Path.Combine(_run, RunDirectory.StepName(step));

    [Test]
    public void SaveResolveVerify_RoundTrip()
    {
        string saved;
        using (var rd = RunDirectory.OpenForWriting(_run))
        {
            saved = rd.SaveCheckpoint(300, Writer(300), keep: 3);
            Assert.That(rd.Steps, Is.EqualTo(new long[] { 300 }));
        }
        Assert.That(saved, Is.EqualTo(Path.Combine(Path.GetFullPath(_run), "step-000300")));
        Assert.That(File.ReadAllText(Path.Combine(_run, "latest")), Is.EqualTo("step-000300\n"));
        Assert.That(Directory.GetDirectories(_run, ".tmp-*"), Is.Empty);

        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(saved, "manifest.json"))))
        {
            var m = doc.RootElement;
            Assert.That(m.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "format", "step", "created", "files" }));
            Assert.That(m.GetProperty("format").GetString(), Is.EqualTo("engine-checkpoint-v1"));
            Assert.That(m.GetProperty("step").GetInt64(), Is.EqualTo(300));
            Assert.That(DateTime.Parse(m.GetProperty("created").GetString()!).ToUniversalTime(), Is.EqualTo(DateTime.UtcNow).Within(TimeSpan.FromMinutes(5)));
            var files = m.GetProperty("files").EnumerateArray().ToArray();
            Assert.That(files.Select(f => f.GetProperty("name").GetString()), Is.EqualTo(new[] { "model.safetensors", "trainer.json" }));
            var model = File.ReadAllBytes(Path.Combine(saved, "model.safetensors"));
            Assert.That(files[0].GetProperty("size").GetInt64(), Is.EqualTo(model.Length));
            Assert.That(files[0].GetProperty("sha256").GetString(), Is.EqualTo(Convert.ToHexStringLower(SHA256.HashData(model))));
        }

        var c = Checkpoints.Resolve(_run);
        Assert.That(c, Is.EqualTo(new ResolvedCheckpoint(Path.GetFullPath(_run), saved, 300, false, null)));
        Assert.DoesNotThrow(() => Checkpoints.Verify(c));
    }

    [Test]
    public void StepDirectoryAndRunDirectory_BothResolve()
    {
        SaveOne(100);
        SaveOne(200);
        var step = Checkpoints.Resolve(Step(100) + Path.DirectorySeparatorChar);
        Assert.That(step.StepDir, Is.EqualTo(Step(100)));
        Assert.That(step.RunDir, Is.EqualTo(_run));
        Assert.That(step.Step, Is.EqualTo(100));
        Assert.That(step.Note, Is.Null);
        Assert.That(Checkpoints.Resolve(_run).StepDir, Is.EqualTo(Step(200)));
    }

    [Test]
    public void SavingTheSameStepAgain_ReplacesIt()
    {
        using var rd = RunDirectory.OpenForWriting(_run);
        rd.SaveCheckpoint(300, Writer(300), keep: 3);
        rd.SaveCheckpoint(300, Writer(301), keep: 3);
        Assert.That(new FileInfo(Path.Combine(Step(300), "model.safetensors")).Length, Is.EqualTo(4096 + 301));
        Assert.That(Directory.GetDirectories(_run).Select(Path.GetFileName), Is.EqualTo(new[] { "step-000300" }));
        Assert.DoesNotThrow(() => Checkpoints.Verify(Checkpoints.Resolve(_run)));
    }

    [Test]
    public void AFailingWriter_LeavesNoStepDirectoryAndKeepsLatest()
    {
        using var rd = RunDirectory.OpenForWriting(_run);
        rd.SaveCheckpoint(100, Writer(100), keep: 3);
        Assert.Throws<IOException>(() => rd.SaveCheckpoint(200, _ => throw new IOException("disk full"), keep: 3));
        Assert.That(rd.Steps, Is.EqualTo(new long[] { 100 }));
        Assert.That(Directory.GetDirectories(_run).Select(Path.GetFileName), Is.EqualTo(new[] { "step-000100" }));
        Assert.That(File.ReadAllText(Path.Combine(_run, "latest")).Trim(), Is.EqualTo("step-000100"));
    }

    [Test]
    public void KeepK_PrunesTheOldest_ButNeverLatestNorProtected()
    {
        using var rd = RunDirectory.OpenForWriting(_run);
        foreach (var s in new long[] { 100, 200, 300, 400 }) rd.SaveCheckpoint(s, Writer(s), keep: 2);
        Assert.That(rd.Steps, Is.EqualTo(new long[] { 300, 400 }));

        // An older step saved last is what latest names, so it survives keep=1 beside the newest.
        rd.SaveCheckpoint(50, Writer(50), keep: 1);
        Assert.That(rd.Steps, Is.EqualTo(new long[] { 50, 400 }));

        rd.SaveCheckpoint(500, Writer(500), keep: 1, protect: [Step(400)]);
        Assert.That(rd.Steps, Is.EqualTo(new long[] { 400, 500 }));
        rd.SaveCheckpoint(600, Writer(600), keep: 1, protect: ["step-000400"]);
        Assert.That(rd.Steps, Is.EqualTo(new long[] { 400, 600 }));
        Assert.That(Directory.GetDirectories(_run, ".tmp-*"), Is.Empty);
    }

    [Test]
    public void LatestMissing_FallsBackToTheNewestComplete_WithANote()
    {
        SaveOne(100);
        SaveOne(200);
        File.WriteAllText(Path.Combine(_run, "latest"), "step-000100\n");
        Assert.That(Checkpoints.Resolve(_run).StepDir, Is.EqualTo(Step(100)), "latest wins over the newest when it is valid");

        File.Delete(Path.Combine(_run, "latest"));
        var c = Checkpoints.Resolve(_run);
        Assert.That(c.StepDir, Is.EqualTo(Step(200)));
        Assert.That(c.Step, Is.EqualTo(200));
        Assert.That(c.Note, Does.Contain("latest is missing").And.Contain("using step-000200"));
    }

    [Test]
    public void LatestNamingADeletedDirectory_FallsBackToTheNewestComplete_WithANote()
    {
        SaveOne(100);
        SaveOne(200);
        Directory.Delete(Step(200), true);
        var c = Checkpoints.Resolve(_run);
        Assert.That(c.StepDir, Is.EqualTo(Step(100)));
        Assert.That(c.Note, Does.Contain("names step-000200, which is missing or incomplete").And.Contain("using step-000100"));
    }

    [Test]
    public void AStepDirectoryWithoutManifest_IsIgnored()
    {
        SaveOne(100);
        Directory.CreateDirectory(Step(900));
        Writer(900)(Step(900));
        using (var rd = RunDirectory.OpenForWriting(_run)) Assert.That(rd.Steps, Is.EqualTo(new long[] { 100 }));
        File.WriteAllText(Path.Combine(_run, "latest"), "step-000900\n");
        var c = Checkpoints.Resolve(_run);
        Assert.That(c.StepDir, Is.EqualTo(Step(100)));
        Assert.That(c.Note, Does.Contain("step-000900"));
    }

    [Test]
    public void NonCanonicalStepNames_AreNotCheckpoints()
    {
        Assert.That(RunDirectory.StepName(300), Is.EqualTo("step-000300"));
        Assert.That(RunDirectory.StepName(12_345_678), Is.EqualTo("step-12345678"));
        Assert.That(RunDirectory.TryParseStepName("step-12345678", out var big), Is.True);
        Assert.That(big, Is.EqualTo(12_345_678));
        foreach (var bad in new[] { "step-00300", "step-0000300", "step-000300x", "step--00300", "step-+00300", "Step-000300" })
            Assert.That(RunDirectory.TryParseStepName(bad, out _), Is.False, bad);
    }

    [Test]
    public void StaleTemporaries_AreRemovedByTheNextOpen()
    {
        SaveOne(300);
        var staleStep = Path.Combine(_run, ".tmp-step-000400-deadbeef");
        Directory.CreateDirectory(staleStep);
        Writer(400)(staleStep);
        string[] staleFiles = ["latest.tmp", "latest.tmp.1234", "model.safetensors.tmp"];
        foreach (var f in staleFiles) File.WriteAllText(Path.Combine(_run, f), "x");

        using (var rd = RunDirectory.OpenForWriting(_run)) Assert.That(rd.Steps, Is.EqualTo(new long[] { 300 }));
        Assert.That(Directory.Exists(staleStep), Is.False);
        foreach (var f in staleFiles) Assert.That(File.Exists(Path.Combine(_run, f)), Is.False, f);
        Assert.That(File.ReadAllText(Path.Combine(_run, "latest")).Trim(), Is.EqualTo("step-000300"));
        Assert.DoesNotThrow(() => Checkpoints.Verify(Checkpoints.Resolve(_run)));
    }

    [Test]
    public void AReplacedStepCutShort_IsPutBackByTheNextOpen()
    {
        SaveOne(300);
        // What a crash leaves between moving the old step-000300 aside and renaming the new one into place.
        var aside = Path.Combine(_run, ".tmp-replaced-step-000300-0badf00d");
        Directory.Move(Step(300), aside);
        using (var rd = RunDirectory.OpenForWriting(_run)) Assert.That(rd.Steps, Is.EqualTo(new long[] { 300 }));
        Assert.That(Directory.Exists(aside), Is.False);
        Assert.That(Checkpoints.Resolve(_run).Note, Is.Null);
    }

    [Test]
    public void Verify_FlippedByte_NamesTheFile()
    {
        var dir = SaveOne(300);
        var model = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(model);
        bytes[bytes.Length / 2] ^= 0x01;
        File.WriteAllBytes(model, bytes);
        var e = Assert.Throws<CheckpointException>(() => Checkpoints.Verify(Checkpoints.Resolve(_run)));
        Assert.That(e!.Message, Is.EqualTo($"Checkpoint: {Path.Combine("step-000300", "model.safetensors")}: SHA-256 mismatch (file corrupt or modified)"));
    }

    [Test]
    public void Verify_TruncatedFile_IsASizeMismatch()
    {
        var dir = SaveOne(300);
        var model = Path.Combine(dir, "model.safetensors");
        using (var fs = new FileStream(model, FileMode.Open)) fs.SetLength(100);
        var e = Assert.Throws<CheckpointException>(() => Checkpoints.Verify(Checkpoints.Resolve(_run)));
        Assert.That(e!.Message, Does.Contain(Path.Combine("step-000300", "model.safetensors") + ": 100 bytes, manifest.json says 4396").And.Contain("truncated"));
    }

    [Test]
    public void Verify_MissingFile_NamesIt()
    {
        var dir = SaveOne(300);
        File.Delete(Path.Combine(dir, "trainer.json"));
        var e = Assert.Throws<CheckpointException>(() => Checkpoints.Verify(Checkpoints.Resolve(_run)));
        Assert.That(e!.Message, Does.Contain(Path.Combine("step-000300", "trainer.json") + ": missing"));
    }

    [TestCase("{ \"format\": \"engine-checkpoint-v1\", \"step\": 300,\n  \"files\": [", "not valid JSON")]
    [TestCase("", "not valid JSON")]
    [TestCase("[1, 2]", "expected a JSON object")]
    [TestCase("{\"format\":\"engine-checkpoint-v9\",\"step\":300,\"created\":\"2026-01-01T00:00:00Z\",\"files\":[]}", "unknown format 'engine-checkpoint-v9'")]
    [TestCase("{\"step\":300,\"created\":\"2026-01-01T00:00:00Z\",\"files\":[]}", "lacks 'format'")]
    [TestCase("{\"format\":\"engine-checkpoint-v1\",\"created\":\"2026-01-01T00:00:00Z\",\"files\":[]}", "lacks 'step'")]
    [TestCase("{\"format\":\"engine-checkpoint-v1\",\"step\":200,\"created\":\"2026-01-01T00:00:00Z\",\"files\":[]}", "records step 200")]
    [TestCase("{\"format\":\"engine-checkpoint-v1\",\"step\":300,\"created\":\"2026-01-01T00:00:00Z\",\"files\":[{\"name\":\"a\",\"size\":1}]}", "files[0]: lacks 'sha256'")]
    [TestCase("{\"format\":\"engine-checkpoint-v1\",\"step\":300,\"created\":\"2026-01-01T00:00:00Z\",\"files\":[{\"name\":\"../x\",\"size\":1,\"sha256\":\"" + Zeros + "\"}]}", "not a relative path")]
    public void Verify_BadManifest_IsOneLineNamingIt(string manifest, string expected)
    {
        var dir = SaveOne(300);
        File.WriteAllText(Path.Combine(dir, "manifest.json"), manifest);
        var e = Assert.Throws<CheckpointException>(() => Checkpoints.Verify(Checkpoints.Resolve(_run)));
        Assert.That(e!.Message, Does.StartWith($"Checkpoint: {Path.Combine("step-000300", "manifest.json")}: ").And.Contain(expected));
        Assert.That(e.Message, Does.Not.Contain('\n'));
    }

    const string Zeros = "0000000000000000000000000000000000000000000000000000000000000000";

    [Test]
    public void LegacyFlatDirectory_ResolvesAsLegacy()
    {
        var dir = Path.Combine(_root, "old");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "model.safetensors"), "m");
        File.WriteAllText(Path.Combine(dir, "optimizer.safetensors"), "o");
        var c = Checkpoints.Resolve(dir);
        Assert.That(c, Is.EqualTo(new ResolvedCheckpoint(dir, dir, null, true, null)));
        Assert.DoesNotThrow(() => Checkpoints.Verify(c));
    }

    [Test]
    public void AnythingElse_IsACheckpointExceptionNamingThePath()
    {
        var empty = Path.Combine(_root, "empty");
        Directory.CreateDirectory(empty);
        File.WriteAllText(Path.Combine(empty, "model.safetensors"), "m");
        var missing = Path.Combine(_root, "missing");
        var file = Path.Combine(_root, "file");
        File.WriteAllText(file, "x");
        foreach (var p in new[] { empty, missing, file })
        {
            var e = Assert.Throws<CheckpointException>(() => Checkpoints.Resolve(p));
            Assert.That(e!.Message, Does.Contain(p).And.Contain("expected a run directory"), p);
        }
        Directory.CreateDirectory(Path.Combine(_run, "step-000100"));
        Assert.That(() => Checkpoints.Resolve(_run), Throws.TypeOf<CheckpointException>().With.Message.Contains("no complete checkpoint"));
    }

    [Test]
    public void ASecondOpenInThisProcess_IsRefusedWithOurPid()
    {
        using (var rd = RunDirectory.OpenForWriting(_run))
        {
            var e = Assert.Throws<RunLockedException>(() => RunDirectory.OpenForWriting(_run));
            Assert.That(e!.Message, Does.Contain(rd.Path).And.Contain($"PID {Environment.ProcessId}"));
        }
        Assert.DoesNotThrow(() => RunDirectory.OpenForWriting(_run).Dispose());
    }

    [Test]
    public void TheLockIsAnOsFlock_SeenByOtherProcesses()
    {
        var flock = LinuxFlock();
        using (RunDirectory.OpenForWriting(_run))
            Assert.That(RunTool(flock, "-n", Path.Combine(_run, ".lock"), "true"), Is.EqualTo(1), "flock -n must be refused while we hold it");
        Assert.That(RunTool(flock, "-n", Path.Combine(_run, ".lock"), "true"), Is.Zero, "and granted after Dispose");
    }

    [Test]
    public void AnotherProcessHoldingTheLock_IsNamedByPid_AndItsSigkillFreesTheLock()
    {
        LinuxFlock();
        Directory.CreateDirectory(_run);
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, UseShellExecute = false };
        // exec keeps the PID and the locked descriptor 9, so the killed process is the one holding the lock.
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("exec 9<>\"$1\" && flock -n 9 && echo $$ >\"$1\" && echo locked && exec sleep 120");
        psi.ArgumentList.Add("holder");
        psi.ArgumentList.Add(Path.Combine(_run, ".lock"));
        using var holder = Process.Start(psi)!;
        try
        {
            Assert.That(holder.StandardOutput.ReadLine(), Is.EqualTo("locked"));
            var e = Assert.Throws<RunLockedException>(() => RunDirectory.OpenForWriting(_run));
            Assert.That(e!.Message, Does.Contain(_run).And.Contain($"PID {holder.Id}"));

            holder.Kill();   // SIGKILL on Unix: no handler runs, only the kernel can release the lock
            Assert.That(holder.WaitForExit(10_000), Is.True);
            Assert.DoesNotThrow(() => RunDirectory.OpenForWriting(_run).Dispose());
        }
        finally
        {
            if (!holder.HasExited) holder.Kill();
        }
    }

    static string LinuxFlock()
    {
        if (!OperatingSystem.IsLinux()) Assert.Ignore("flock(1) lock tests run on Linux");
        var flock = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "flock")).FirstOrDefault(File.Exists);
        if (flock is null) Assert.Ignore("util-linux flock(1) is not installed");
        return flock!;
    }

    static int RunTool(string exe, params string[] args)
    {
        using var p = Process.Start(exe, args);
        p.WaitForExit();
        return p.ExitCode;
    }
}

using System.Text;
using System.Text.RegularExpressions;
using Engine.Serialization;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.CliTests;

/// <summary>Text models, divergence, and the progress display on a terminal and in a pipe.</summary>
[NonParallelizable]
public sealed class TextAndDisplayTests : CliFixture
{
    [Test]
    public void TextModelTrainsSamplesAndEvaluates()
    {
        var text = At("t.txt");
        File.WriteAllText(text, string.Concat(Enumerable.Repeat("hello world, this is engine. ", 40)));
        var run = At("run");
        Expect(0, ["train", "--text", text, "--out", run, "--steps", "5", "--context", "16", .. TinyOptions]);
        var s = Expect(0, "sample", "--checkpoint", run, "--prompt", "hello", "--tokens", "5");
        Assert.That(s.Out.TrimEnd('\n'), Does.StartWith("hello").And.Length.EqualTo(10));
        ExpectOneLineError(2, ["sample", "--checkpoint", run, "--prompt", "hellQ"], "'Q'", "vocabulary");
        Assert.That(Expect(0, "eval", "--checkpoint", run, "--samples", "5").Out, Does.Contain("eval accuracy:"), "eval uses the recorded text file");
        File.Delete(text);
        ExpectOneLineError(2, ["eval", "--checkpoint", run, "--samples", "5"], text, "--text");
    }

    [Test]
    public void TextFileGivenRelativeToTheWorkingDirectoryIsFoundLaterFromElsewhere()
    {
        var work = At("work");
        Directory.CreateDirectory(work);
        File.WriteAllText(Path.Combine(work, "t.txt"), string.Concat(Enumerable.Repeat("the quick brown fox. ", 40)));
        var run = At("run");
        var r = PublishedEngine.Run(["train", "--text", "t.txt", "--out", run, "--steps", "3", "--context", "16", .. TinyOptions], Timeout, workDir: work);
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        var e = PublishedEngine.Run(["eval", "--checkpoint", run, "--samples", "5"], Timeout, workDir: Dir);
        Assert.That(e.ExitCode, Is.EqualTo(0), $"eval from another directory finds the text the run recorded\n{e}");
        var again = PublishedEngine.Run(["train", "--resume", run, "--text", "t.txt", "--steps", "4", .. TinyOptions], Timeout, workDir: work);
        Assert.That(again.ExitCode, Is.EqualTo(0), $"resuming with the same relative --text is no change\n{again}");
    }

    [Test]
    public void BinaryTextFileIsRefused()
    {
        var bin = At("data.bin");
        File.WriteAllBytes(bin, [.. Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("abc ", 50))), 0, 1, 2, 0, 255]);
        ExpectOneLineError(5, ["train", "--text", bin, "--out", At("run"), "--steps", "2", "--context", "16", .. TinyOptions], "data.bin", "NUL");
        Assert.That(Directory.Exists(At("run")), Is.False, "nothing is written for a refused text file");
    }

    [Test]
    public void DivergenceStopsWithExit4AndLeavesOnlyFiniteCheckpoints()
    {
        var run = At("run");
        var r = ExpectOneLineError(4, Train(run, 200, "--lr", "10", "--precision", "fp16", "--max-bad-steps", "5", "--save-every", "1", "--keep", "1000"), "diverged");
        var steps = Directory.Exists(run) ? Directory.GetDirectories(run, "step-*") : [];
        TestContext.Out.WriteLine($"{steps.Length} checkpoints before the divergence: {r.Err}");
        foreach (var step in steps)
        {
            Expect(0, "eval", "--checkpoint", step, "--samples", "5");
            foreach (var f in new[] { "model.safetensors", "optimizer.safetensors" })
            {
                using var c = SafeTensors.Load(Path.Combine(step, f));
                foreach (var (k, t) in c.Tensors)
                    if (t.DType.IsFloatingPoint())
                        Assert.That(t.ToArray<double>().All(double.IsFinite), Is.True, $"{step}/{f}: {k}");
            }
        }
        Assert.That(steps, Is.Not.Empty, "saving every good step, some checkpoint precedes the divergence");
        Assert.That(r.Err, Does.Contain("last good checkpoint, step " + LatestStep(run)));
    }

    static readonly Regex Ansi = new(@"\x1B(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[=>()][0-9A-Za-z]?)", RegexOptions.Compiled);
    static readonly Regex StepOf = new(@"step \d+/\d+", RegexOptions.Compiled);

    [Test]
    public void ProgressOnATerminalUpdatesInPlaceAndFitsItsWidth()
    {
        if (OperatingSystem.IsWindows() || !File.Exists("/usr/bin/script")) Assert.Ignore("needs util-linux script(1) for a pseudo-terminal");
        var run = At("run");
        var engine = "'" + PublishedEngine.Path.Replace("'", "'\\''") + "'";
        var cmd = $"stty cols 60; exec {engine} train --out '{run}' --steps 60 --batch 8 --layers 1 --heads 2 --dmodel 16 --eval-samples 20";
        var psi = PublishedEngine.StartInfo("/usr/bin/script", ["-qec", cmd, "/dev/null"]);
        using var p = System.Diagnostics.Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(Timeout)) { p.Kill(entireProcessTree: true); Assert.Fail("script(1) ran past the timeout"); }
        p.WaitForExit();
        var raw = stdout.Result;
        Assert.That(p.ExitCode, Is.EqualTo(0), raw + stderr.Result);
        Assert.That(raw, Does.Contain("final loss"), raw);
        Assert.That(Regex.IsMatch(raw, @"\x1B\[\d*[AF]"), Is.True, "the display moves the cursor up to redraw");
        Assert.That(raw, Does.Contain("\r"));
        var progress = Ansi.Replace(raw, "").Split('\r', '\n').Where(l => StepOf.IsMatch(l)).ToList();
        Assert.That(progress.Select(l => StepOf.Match(l).Value).Distinct().Count(), Is.GreaterThan(1), "several updates");
        Assert.That(progress, Has.Some.Contains("step 60/60"));
        foreach (var l in progress) Assert.That(l.TrimEnd().Length, Is.LessThanOrEqualTo(60), $"progress line wider than the terminal: '{l}'");
    }

    [Test]
    public void ProgressIntoAPipeIsPlainLines()
    {
        var r = Expect(0, "train", "--out", At("run"), "--steps", "60", "--batch", "8", "--layers", "1", "--heads", "2", "--dmodel", "16", "--eval-samples", "20");
        Assert.That(r.Out, Does.Not.Contain("\x1B"), "no escape sequences when redirected");
        Assert.That(r.Out, Does.Not.Contain("\r"));
        var lines = r.Out.Split('\n');
        Assert.That(lines, Has.Some.Match(@"^step 1/60  loss \d"));
        Assert.That(lines, Has.Some.Match(@"^step 60/60  loss \d"));
    }
}

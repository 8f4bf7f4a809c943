using System.Reflection;
using System.Text.Json;
using System.Text.RegularExpressions;
using Engine.Cli.Commands;
using Engine.Cli.Training;
using Engine.Tests.Support;
using NUnit.Framework;
using Spectre.Console.Cli;

namespace Engine.Tests.CliTests;

/// <summary>The command line itself: usage errors, help, and the commands that do not train.</summary>
[NonParallelizable]
public sealed class CommandLineTests : CliFixture
{
    [TestCase(new[] { "train", "--stepz", "3" }, "stepz")]
    [TestCase(new[] { "train", "--steps", "abc" }, "--steps expects an integer")]
    [TestCase(new[] { "train", "--steps" }, "--steps needs a value")]
    [TestCase(new[] { "train", "--device", "tpu" }, "unknown device 'tpu'")]
    [TestCase(new[] { "train", "--precision", "fp8" }, "--precision", "fp8")]
    [TestCase(new[] { "train", "--text", "/nonexistent/file.txt" }, "/nonexistent/file.txt", "not found")]
    [TestCase(new[] { "train", "--dmodel", "10", "--heads", "3" }, "--dmodel 10", "--heads 3", "divisible")]
    [TestCase(new[] { "train", "--heads", "0" }, "--heads", "at least 1")]
    [TestCase(new[] { "sample", "--prompt", "1 2" }, "--checkpoint")]
    [TestCase(new[] { "eval" }, "--checkpoint")]
    [TestCase(new[] { "bench", "--only", "nope" }, "unknown workload 'nope'")]
    [TestCase(new[] { "frobnicate" }, "Unknown command", "frobnicate")]
    public void UsageErrorsExit2WithOneLineNamingTheProblem(string[] args, params string[] fragments)
    {
        var r = ExpectOneLineError(2, args, fragments);
        Assert.That(r.Err, Does.StartWith("engine: "));
    }

    [Test]
    public void NoArgumentsPrintsHelpAndExits2()
    {
        var r = Expect(2);
        Assert.That(r.Out, Does.Contain("USAGE").And.Contain("COMMANDS"));
        foreach (var c in new[] { "train", "sample", "eval", "bench", "check", "info" }) Assert.That(r.Out, Does.Contain(c));
    }

    static readonly (string Command, Type Settings)[] Commands =
    [
        ("train", typeof(TrainSettings)), ("sample", typeof(SampleSettings)), ("eval", typeof(EvalSettings)),
        ("bench", typeof(BenchSettings)), ("check", typeof(CheckCommand.Settings)), ("info", typeof(InfoCommand.Settings)),
    ];

    // An option with two names (sample's --checkpoint|--model) is listed under each.
    static IEnumerable<(string Name, string Description)> OptionsOf(Type settings) =>
        settings.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Select(p => (p, o: p.GetCustomAttribute<CommandOptionAttribute>()))
            .Where(x => x.o is not null)
            .SelectMany(x => x.o!.LongNames.Select(n => (n, x.p.GetCustomAttribute<System.ComponentModel.DescriptionAttribute>()?.Description ?? "")));

    static string Squash(string s) => Regex.Replace(s, @"\s+", " ").Trim();

    [Test]
    public void HelpOfEveryCommandListsEveryOptionWithItsDescription()
    {
        foreach (var (command, settings) in Commands)
        {
            var r = Expect(0, command, "--help");
            var help = Squash(r.Out);
            foreach (var (name, description) in OptionsOf(settings))
            {
                Assert.That(description, Is.Not.Empty, $"{command} --{name} has no help text");
                Assert.That(help, Does.Contain("--" + name), $"{command} --help");
                Assert.That(help, Does.Contain(Squash(Spectre.Console.Markup.Remove(description)).TrimEnd('.')), $"{command} --help shows the description of --{name}");
            }
        }
    }

    [Test]
    public void TrainHelpStatesEveryDefaultAndItMatchesTheCode()
    {
        // Options without a default: a path that is only used when given, a flag, an optional stop.
        var none = new HashSet<string> { "resume", "text", "data", "init-from", "force", "quiet", "stop-at" };
        var defaults = new TrainOptions().ByName();
        var options = OptionsOf(typeof(TrainSettings)).ToList();
        Assert.That(options, Has.Count.GreaterThan(20));
        foreach (var (name, description) in options)
        {
            if (none.Contains(name)) continue;
            Assert.That(description, Does.Contain("(default"), $"--{name} states its default");
            if (defaults.TryGetValue(name, out var v) && v.Length > 0)
                Assert.That(description.Contains($"(default {v}", StringComparison.Ordinal) || description.Contains($"{v} (default)", StringComparison.Ordinal),
                    Is.True, $"--{name}: the code's default is {v}; the help says: {description}");
        }
        Assert.That(Squash(Expect(0, "train", "--help").Out), Does.Contain("(default 300)"));
    }

    [Test]
    public void InfoSaysWhyCudaIsUnavailableOrNamesTheDevice()
    {
        var r = Expect(0, "info");
        Assert.That(r.Out, Does.Contain("cpu"));
        Assert.That(r.Out, Does.Match(@"cuda\s+unavailable: \S+.*|cuda:0\s+\S+"));
    }

    [Test]
    public void TrainOnCudaWithoutAGpuExits3()
    {
        if (Regex.IsMatch(Expect(0, "info").Out, @"cuda:0\s")) Assert.Ignore("this machine has a CUDA device");
        ExpectOneLineError(3, Train(At("run"), 2, "--device", "cuda"), "device unavailable");
        Assert.That(Directory.Exists(At("run", "latest")), Is.False);
    }

    [Test]
    public void PublishedBinaryShipsTheCudaBackend()
    {
        var r = PublishedEngine.Run(["check", "--emulate", "--size", "8"], TimeSpan.FromSeconds(120));
        Assert.That(r.ExitCode, Is.EqualTo(0), r.ToString());
        Assert.That(r.Out, Does.Contain("parity sweep").And.Contain("matmul").And.Contain("bfloat16").And.Contain("all ops agree"));
        ExpectOneLineError(2, ["check", "--device", "cpu"], "CUDA device");
    }

    [Test]
    public void BenchWritesOneJsonObjectPerMetric()
    {
        var json = At("b.jsonl");
        Expect(0, "bench", "--only", "op_overhead,gemm_f32_256", "--reps", "1", "--json", json);
        var lines = File.ReadAllLines(json);
        Assert.That(lines, Has.Length.EqualTo(5), "the FMA peak; gemm: time, throughput and its fraction of the peak; op_overhead: per_op");
        var seen = new List<string>();
        foreach (var l in lines)
        {
            using var d = JsonDocument.Parse(l);
            var r = d.RootElement;
            Assert.That(r.EnumerateObject().Select(p => p.Name), Is.EquivalentTo(new[] { "workload", "metric", "value", "unit", "device", "dtype", "min", "reps" }), l);
            foreach (var k in new[] { "workload", "metric", "unit", "device", "dtype" })
                Assert.That(r.GetProperty(k).ValueKind, Is.EqualTo(JsonValueKind.String), k);
            foreach (var k in new[] { "value", "min", "reps" })
                Assert.That(r.GetProperty(k).ValueKind, Is.EqualTo(JsonValueKind.Number), k);
            Assert.That(r.GetProperty("value").GetDouble(), Is.GreaterThan(0));
            Assert.That(r.GetProperty("min").GetDouble(), Is.GreaterThan(0));
            // The machine's limit is the best of its own 5 repetitions; the workloads ran --reps 1.
            bool machine = r.GetProperty("workload").GetString()!.StartsWith("machine_", StringComparison.Ordinal);
            Assert.That(r.GetProperty("reps").GetInt32(), Is.EqualTo(machine ? 5 : 1));
            Assert.That(r.GetProperty("device").GetString(), Is.EqualTo("cpu"));
            Assert.That(new[] { "ms", "us", "GB/s", "GFLOP/s", "tokens/s", "fraction" }, Does.Contain(r.GetProperty("unit").GetString()));
            seen.Add(r.GetProperty("workload").GetString()!);
        }
        Assert.That(seen.Distinct(), Is.EquivalentTo(new[] { "machine_fma_peak", "op_overhead", "gemm_f32_256" }));
        // The fraction is the GEMM's throughput over the FMA peak measured in the same run.
        double Value(string workload, string metric) => lines.Select(l => JsonDocument.Parse(l).RootElement)
            .Single(e => e.GetProperty("workload").GetString() == workload && e.GetProperty("metric").GetString() == metric).GetProperty("value").GetDouble();
        double peak = Value("machine_fma_peak", "throughput"), gflops = Value("gemm_f32_256", "throughput");
        Assert.That(Value("gemm_f32_256", "fraction_of_peak"), Is.EqualTo(gflops / peak).Within(1e-9));
    }
    [Test]
    public void BenchCountsTheLaunchesOfOneGptTrainingStep()
    {
        var json = At("launches.jsonl");
        var r = Expect(0, "bench", "--only", "gpt_train_step", "--reps", "1", "--json", json);
        Assert.That(r.Out, Does.Contain("launches_per_step").And.Contain("launches/step").And.Contain("top kernels: "));
        var lines = File.ReadAllLines(json);
        Assert.That(lines, Has.Length.EqualTo(4), "launches_per_step, time, throughput, peak_memory");
        using (var mem = JsonDocument.Parse(lines.Single(l => l.Contains("\"metric\":\"peak_memory\"", StringComparison.Ordinal))))
        {
            // The bench's GPT (d 256, 4 layers, vocab 64) holds ~3.2M float32 parameters: weights, gradients and two AdamW
            // moments are ~51 MB before any activation, so a peak below that would not be counting what the step holds.
            Assert.That(mem.RootElement.GetProperty("unit").GetString(), Is.EqualTo("MB"));
            Assert.That(mem.RootElement.GetProperty("value").GetDouble(), Is.GreaterThan(51).And.LessThan(2000));
        }
        using var d = JsonDocument.Parse(lines.Single(l => l.Contains("\"metric\":\"launches_per_step\"", StringComparison.Ordinal)));
        var row = d.RootElement;
        long launches = row.GetProperty("launches_per_step").GetInt64();
        Assert.That(launches, Is.GreaterThan(0));
        Assert.That(row.GetProperty("value").GetInt64(), Is.EqualTo(launches));
        Assert.That(row.GetProperty("unit").GetString(), Is.EqualTo("launches/step"));
        Assert.That(row.GetProperty("device").GetString(), Is.EqualTo("cpu"));
        var byKernel = row.GetProperty("launches_by_kernel").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt64());
        Assert.That(byKernel.Values.Sum(), Is.EqualTo(launches), "the by-kernel counts add up to the step's launches");
        Assert.That(byKernel.Keys, Does.Contain("LinearGradients").And.Contain("ForeachAdamStep"), string.Join(", ", byKernel));
        TestContext.Out.WriteLine($"gpt_train_step (cpu): {launches} launches/step: {string.Join(", ", byKernel.Select(kv => $"{kv.Key} {kv.Value}"))}");
    }
}

using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Engine.Workloads;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary>The options of <c>engine bench</c>.</summary>
sealed class BenchSettings : CommandSettings
{
    [CommandOption("--device <DEVICE>"), Description("cpu (default), cuda or cuda:N.")]
    public string? Device { get; set; }

    [CommandOption("--only <NAMES>"), Description("Comma-separated workload names (default: all).")]
    public string? Only { get; set; }

    [CommandOption("--reps <N>"), Description("Timed repetitions per workload (default: each workload's own).")]
    public int? Reps { get; set; }

    [CommandOption("--json <FILE>"), Description("Also write one JSON object per line and metric: workload, metric, value (median), unit, device, dtype, min, reps.")]
    public string? Json { get; set; }
}

/// <summary>
/// <c>engine bench</c>: times the shared workloads in process and prints a table of medians; with --json, one JSON
/// object per line and metric: {"workload","metric","value" (median),"unit","device","dtype","min" (the metric of the
/// fastest repetition),"reps"}.
/// </summary>
sealed class BenchCommand : Command<BenchSettings>
{
    public override int Execute(CommandContext context, BenchSettings s, CancellationToken cancellationToken)
    {
        var device = Devices.Parse(s.Device);
        var only = s.Only?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (s.Reps is < 1 or > 100_000) throw new UsageException($"--reps must be in [1, 100000], got {s.Reps}");
        var names = WorkloadCatalog.All.Select(w => w.Name).ToHashSet();
        if (only is not null)
            foreach (var n in only)
                if (!names.Contains(n)) throw new UsageException($"unknown workload '{n}' (known: {string.Join(", ", names)})");
        var selected = WorkloadCatalog.All.Where(w => only is null || only.Contains(w.Name)).ToList();
        string dev = device.Type == DeviceType.Cpu ? "cpu" : "cuda";
        using var jsonOut = s.Json is null ? null : new StreamWriter(s.Json, append: false);
        Console.WriteLine($"engine bench on {device} ({Environment.ProcessorCount} cores, .NET {Environment.Version}); medians of timed repetitions after warm-up");
        Console.WriteLine($"{"workload",-22} {"dtype",-6} {"metric",-11} {"median",12} {"best",12} {"unit",-9} reps");
        foreach (var w in selected)
        {
            using var run = w.Create(device);
            int n = s.Reps ?? w.Reps;
            for (int i = 0; i < w.Warmup; i++) run.Run();
            var times = new double[n];
            for (int i = 0; i < n; i++)
            {
                var sw = Stopwatch.StartNew();
                run.Run();
                times[i] = sw.Elapsed.TotalSeconds;
            }
            Array.Sort(times);
            double median = n % 2 == 1 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
            foreach (var m in run.Metrics)
            {
                double value = m.FromSeconds(median), best = m.FromSeconds(times[0]);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{w.Name,-22} {w.DType,-6} {m.Name,-11} {value,12:G5} {best,12:G5} {m.Unit,-9} {n}"));
                jsonOut?.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["workload"] = w.Name, ["metric"] = m.Name, ["value"] = value, ["unit"] = m.Unit,
                    ["device"] = dev, ["dtype"] = w.DType, ["min"] = best, ["reps"] = n,
                }));
            }
            jsonOut?.Flush();
        }
        return ExitCodes.Ok;
    }
}

using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Engine.Backends;
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

    [CommandOption("--json <FILE>"), Description("Also write one JSON object per line and metric: workload, metric, value (median), unit, device, dtype, min, reps; a launches_per_step line adds launches_per_step and launches_by_kernel. Training steps add a peak_memory row (MB), CPU GEMM and elementwise figures a fraction_of_peak row (of the FMA peak / the best streaming bandwidth of STREAM's copy, scale and add measured in the run, rows machine_fma_peak and machine_copy, with machine_stream_* for each pattern).")]
    public string? Json { get; set; }

    [CommandOption("--emulate"), Description("Run the CUDA kernels on ILGPU's CPU accelerator (no GPU needed): the timings mean nothing, the launch counts are exact.")]
    public bool Emulate { get; set; }

    [CommandOption("--nproc <N>"), Description("Data-parallel ranks through mpirun (N ≥ 2): instead of the workloads, time the DDP training step of a small GPT on the CPU (rows compute_ms, comm_ms, step_ms, exposed_comm_ms, hidden_fraction; default reps 10).")]
    public int? Nproc { get; set; }

    [CommandOption("--launches-only"), Description("Only count the kernel launches of the training-step workloads (one warm-up and one counted step each; no timing).")]
    public bool LaunchesOnly { get; set; }
}

/// <summary>
/// <c>engine bench</c>: times the shared workloads in process and prints a table of medians; with --json, one JSON
/// object per line and metric: {"workload","metric","value" (median),"unit","device","dtype","min" (the metric of the
/// fastest repetition),"reps"}. A training-step workload also gets a <c>launches_per_step</c> row: the kernel launches
/// of one step after warm-up (unit launches/step), whose JSON line adds <c>launches_per_step</c> and
/// <c>launches_by_kernel</c> (every kernel launched, most launched first; the counts sum to launches_per_step).
/// </summary>
sealed class BenchCommand : Command<BenchSettings>
{
    public override int Execute(CommandContext context, BenchSettings s, CancellationToken cancellationToken)
    {
        if (s.Nproc is not null || Engine.Distributed.LaunchEnvironment.FromEnvironment().WorldSize > 1)
        {
            if (Training.NprocLauncher.RunIfAsked(s.Nproc, null) is int job) return job;
            if (Engine.Distributed.LaunchEnvironment.FromEnvironment().WorldSize < 2) throw new UsageException("--nproc: the data-parallel benchmark needs at least 2 ranks");
            if (s.Reps is < 1 or > 100_000) throw new UsageException($"--reps must be in [1, 100000], got {s.Reps}");
            return DdpBench.Run(s.Reps ?? 10, s.Json);
        }
        if (s.Emulate) Engine.Backends.Cuda.CudaBackend.EnableEmulation();
        var device = Devices.Parse(s.Device);
        var only = s.Only?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (s.Reps is < 1 or > 100_000) throw new UsageException($"--reps must be in [1, 100000], got {s.Reps}");
        var names = WorkloadCatalog.All.Select(w => w.Name).ToHashSet();
        if (only is not null)
            foreach (var n in only)
                if (!names.Contains(n)) throw new UsageException($"unknown workload '{n}' (known: {string.Join(", ", names)})");
        var selected = WorkloadCatalog.All.Where(w => (only is null || only.Contains(w.Name)) && (!s.LaunchesOnly || w.CountsLaunches)).ToList();
        if (selected.Count == 0) throw new UsageException($"--launches-only counts training steps, and none is selected (they are: {string.Join(", ", WorkloadCatalog.All.Where(w => w.CountsLaunches).Select(w => w.Name))})");
        string dev = device.Type == DeviceType.Cpu ? "cpu" : "cuda";
        using var jsonOut = s.Json is null ? null : new StreamWriter(s.Json, append: false);
        Console.WriteLine($"engine bench on {device}{(s.Emulate && device.Type == DeviceType.Cuda ? " (emulated on ILGPU's CPU accelerator)" : "")} ({Environment.ProcessorCount} cores, .NET {Environment.Version}); medians of timed repetitions after warm-up");
        var peaks = MeasurePeaks(device, selected, s.LaunchesOnly, jsonOut, dev);
        Console.WriteLine($"{"workload",-22} {"dtype",-13} {"metric",-17} {"median",12} {"best",12} {"unit",-13} {"reps",5} {"of peak",8}");
        foreach (var w in selected)
        {
            // The workload's peak memory is what it holds beyond what was live before it was made (its model, optimizer
            // state, activations and gradients at their largest).
            Storage.ResetPeakLiveBytes(device.Type);
            long liveBefore = Storage.LiveBytes(device.Type);
            using var run = w.Create(device);
            int n = s.Reps ?? w.Reps;
            // Launches are counted after at least one warm-up step: the first allocates gradients and optimizer state.
            int warmup = s.LaunchesOnly ? 1 : w.CountsLaunches ? Math.Max(1, w.Warmup) : w.Warmup;
            // And for at least WarmupSeconds: the runtime JITs a method first without optimization (tier 0) and
            // recompiles it only after ~30 calls that start 100 ms after the last new method, so a workload of a few
            // milliseconds timed after two warm-ups ran partly in tier-0 code (TensorPrimitives' loops included:
            // add_16M_inplace measured 12–18 GB/s that way and 41–52 GB/s past tier-up).
            var warm = Stopwatch.StartNew();
            for (int i = 0; i < warmup || !s.LaunchesOnly && warm.Elapsed.TotalSeconds < WarmupSeconds; i++) run.Run();
            if (w.CountsLaunches)
            {
                if (run is not ITrainingStep step) throw new InvalidOperationException($"workload {w.Name} counts launches but is not a training step");
                var c = WorkloadCatalog.CountLaunches(step);
                var byKernel = c.Counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).ToList();
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{w.Name,-22} {w.DType,-13} {"launches_per_step",-17} {c.Launches,12} {c.Launches,12} {"launches/step",-13} 1"));
                Console.WriteLine($"{"",-22}   top kernels: {string.Join(", ", byKernel.Take(6).Select(kv => $"{kv.Key} {kv.Value}"))}");
                var kernels = new Dictionary<string, long>(StringComparer.Ordinal);
                foreach (var (k, v) in byKernel) kernels[k] = v;
                jsonOut?.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["workload"] = w.Name, ["metric"] = "launches_per_step", ["value"] = c.Launches, ["unit"] = "launches/step",
                    ["device"] = dev, ["dtype"] = w.DType, ["min"] = c.Launches, ["reps"] = 1,
                    ["launches_per_step"] = c.Launches, ["launches_by_kernel"] = kernels,
                }));
            }
            if (s.LaunchesOnly) { jsonOut?.Flush(); continue; }
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
                double? limit = peaks.For(m.Unit);
                string ofPeak = limit is { } l ? string.Create(CultureInfo.InvariantCulture, $"{value / l:P0}") : "";
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{w.Name,-22} {w.DType,-13} {m.Name,-17} {value,12:G5} {best,12:G5} {m.Unit,-13} {n,5} {ofPeak,8}"));
                Row(jsonOut, w.Name, m.Name, value, m.Unit, dev, w.DType, best, n);
                if (limit is { } peak) Row(jsonOut, w.Name, "fraction_of_peak", value / peak, "fraction", dev, w.DType, best / peak, n);
            }
            if (run is ITrainingStep)
            {
                double mb = (Storage.PeakLiveBytes(device.Type) - liveBefore) / 1e6;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{w.Name,-22} {w.DType,-13} {"peak_memory",-17} {mb,12:F1} {mb,12:F1} {"MB",-13} {n,5}"));
                Row(jsonOut, w.Name, "peak_memory", mb, "MB", dev, w.DType, mb, n);
            }
            jsonOut?.Flush();
        }
        return ExitCodes.Ok;
    }

    /// <summary>The least time a workload repeats untimed before it is timed (past the runtime's tier-up).</summary>
    const double WarmupSeconds = 0.5;

    static void Row(StreamWriter? json, string workload, string metric, double value, string unit, string dev, string dtype, double min, int reps) =>
        json?.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["workload"] = workload, ["metric"] = metric, ["value"] = value, ["unit"] = unit,
            ["device"] = dev, ["dtype"] = dtype, ["min"] = min, ["reps"] = reps,
        }));

    /// <summary>The limits a metric's fraction_of_peak divides by, keyed by the metric's unit.</summary>
    sealed record Peaks(double? FmaGflops, double? CopyGBps)
    {
        public double? For(string unit) => unit switch { "GFLOP/s" => FmaGflops, "GB/s" => CopyGBps, _ => null };
    }

    /// <summary>
    /// Measures, in this run and before the workloads, the limits the selected ones are compared with: the float32 FMA
    /// peak when a GEMM is selected and the best streaming bandwidth (copy, memcpy, scale in place, add; bytes read +
    /// written, as the workloads count) when an elementwise op is, each reported as its own row (workloads
    /// machine_fma_peak and machine_copy, which is the best of the machine_stream_* rows). Only on the CPU: a GPU's limits are not measured here.
    /// </summary>
    static Peaks MeasurePeaks(Device device, List<Workload> selected, bool launchesOnly, StreamWriter? json, string dev)
    {
        if (device.Type != DeviceType.Cpu || launchesOnly) return new Peaks(null, null);
        bool gemm = selected.Any(w => w.Name.StartsWith("gemm_", StringComparison.Ordinal));
        bool stream = selected.Any(w => !w.Name.StartsWith("gemm_", StringComparison.Ordinal) && !w.Name.Contains("train", StringComparison.Ordinal) && w.Name != "op_overhead");
        double? fma = gemm ? MachinePeaks.Fma32Gflops() : null;
        var streams = stream ? MachinePeaks.StreamGBps() : null;
        double? copy = streams?.Best;
        if (fma is { } f)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"machine limit: float32 FMA peak {f:F0} GFLOP/s ({Environment.ProcessorCount} cores, best of 5)"));
            Row(json, "machine_fma_peak", "throughput", f, "GFLOP/s", dev, "f32", f, 5);
        }
        if (copy is { } c)
        {
            var p = streams!;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"machine limit: streaming {c:F1} GB/s, the best of copy {p.Copy:F1}, memcpy {p.MemCopy:F1}, scale in place {p.Scale:F1}, add {p.Add:F1} (16M float32 per array, {Environment.ProcessorCount} cores, bytes read + written, best of 15 each)"));
            Row(json, "machine_copy", "bandwidth", c, "GB/s", dev, "f32", c, 15);
            Row(json, "machine_stream_copy", "bandwidth", p.Copy, "GB/s", dev, "f32", p.Copy, 15);
            Row(json, "machine_stream_memcpy", "bandwidth", p.MemCopy, "GB/s", dev, "f32", p.MemCopy, 15);
            Row(json, "machine_stream_scale", "bandwidth", p.Scale, "GB/s", dev, "f32", p.Scale, 15);
            Row(json, "machine_stream_add", "bandwidth", p.Add, "GB/s", dev, "f32", p.Add, 15);
        }
        return new Peaks(fma, copy);
    }
}

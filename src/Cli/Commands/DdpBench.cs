using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Engine.Autograd.Nn;
using Engine.Distributed;

namespace Engine.Cli.Commands;

/// <summary>
/// <c>engine bench --nproc N</c>, run on every rank: the data-parallel training step of a small GPT (4 blocks × d256,
/// 3.2 M parameters, 2 MB buckets so that there are several) on the CPU over MPI. Per repetition:
/// <list type="bullet">
/// <item><c>compute_ms</c>: forward and backward under <c>NoSync</c> (no communication at all);</item>
/// <item><c>comm_ms</c>: the same buckets' all-reduces alone, posted back to back and waited for;</item>
/// <item><c>step_ms</c>: forward and backward with DDP's overlapped reduction (backward returns once every average is in <c>Grad</c>);</item>
/// <item><c>exposed_comm_ms</c>: step_ms − compute_ms, the communication backward did not hide, and
/// <c>hidden_fraction</c> = 1 − exposed/comm.</item>
/// </list>
/// Each figure is the slowest rank's (a step waits for it), the median over repetitions. On a shared CPU machine MPI
/// moves bytes through shared memory and competes with compute for the same cores, so the hidden fraction means
/// little there (docs/SCALING.md models the GPU case).
/// </summary>
static class DdpBench
{
    public const string Workload = "ddp_gpt_train";
    const int Batch = 8, Context = 64, BucketBytes = 2 << 20;

    public static int Run(int reps, string? jsonPath)
    {
        using var group = ProcessGroup.Create(DistributedBackend.Mpi);
        int w = group.WorldSize;
        var config = new GptConfig(VocabSize: 256, ContextLength: Context, Layers: 4, Heads: 4, DModel: 256);
        using var model = new Gpt(config, Device.Cpu, DType.Float32, new Generator(1));
        using var ddp = new DistributedDataParallel(model, group, bucketCapBytes: BucketBytes);
        var gen = new Generator(100 + (ulong)group.Rank);
        using var x = Tensor.RandInt(0, config.VocabSize, [Batch, Context], generator: gen);
        using var y = Tensor.RandInt(0, config.VocabSize, [Batch, Context], generator: gen);
        var buckets = ddp.BucketParameterNames.Count;
        var bucketTensors = ddp.BucketNumels.Select(n => Tensor.Zeros([checked((int)n)], DType.Float32)).ToArray();

        void Backward()
        {
            using var scope = Tensor.NewScope();
            var logits = ddp.Forward(x);
            logits.View(-1, config.VocabSize).CrossEntropy(y.View(-1)).Backward();
        }
        double Time(Action a)
        {
            group.Barrier().Wait();   // start together, so no rank's wait for a late peer counts as communication
            var sw = Stopwatch.StartNew();
            a();
            double ms = sw.Elapsed.TotalMilliseconds;
            using var t = Tensor.FromArray(new[] { ms });
            group.AllReduce(t, ReduceOp.Max).Wait();
            return t.Item();
        }
        void Compute() { using (ddp.NoSync()) Backward(); model.ZeroGrad(); }
        void Step() { Backward(); model.ZeroGrad(); }
        void Comm() => Work.WaitAll(bucketTensors.Select(b => group.AllReduce(b, ReduceOp.Average)).ToList());

        Compute(); Step(); Comm();   // warm-up: gradients, buckets and MPI's connections exist
        var compute = new double[reps];
        var comm = new double[reps];
        var step = new double[reps];
        for (int i = 0; i < reps; i++)
        {
            compute[i] = Time(Compute);
            comm[i] = Time(Comm);
            step[i] = Time(Step);
        }
        foreach (var b in bucketTensors) b.Dispose();
        if (group.Rank != 0) return ExitCodes.Ok;

        double Median(double[] v) { var s = v.Order().ToArray(); return s.Length % 2 == 1 ? s[s.Length / 2] : 0.5 * (s[s.Length / 2 - 1] + s[s.Length / 2]); }
        var exposed = step.Zip(compute, (s, c) => Math.Max(0, s - c)).ToArray();
        var hidden = exposed.Zip(comm, (e, c) => c > 0 ? Math.Clamp(1 - e / c, 0, 1) : 0).ToArray();
        var rows = new (string Metric, double[] Values, string Unit)[]
        {
            ("compute_ms", compute, "ms"), ("comm_ms", comm, "ms"), ("step_ms", step, "ms"),
            ("exposed_comm_ms", exposed, "ms"), ("hidden_fraction", hidden, "fraction"),
        };
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine(string.Create(inv, $"engine bench --nproc {w}: GPT 4×d256 ({model.ParameterCount():N0} parameters, {buckets} buckets of ≤ {BucketBytes >> 20} MB), batch {Batch}×{Context} per rank, cpu over MPI ({Environment.ProcessorCount} cores shared by {w} ranks); slowest rank, medians of {reps}"));
        Console.WriteLine($"{"workload",-22} {"metric",-17} {"median",12} {"best",12} {"unit",-9} {"reps",5}");
        using var json = jsonPath is null ? null : new StreamWriter(jsonPath, append: false);
        foreach (var (metric, values, unit) in rows)
        {
            double median = Median(values), best = metric == "hidden_fraction" ? values.Max() : values.Min();
            Console.WriteLine(string.Create(inv, $"{Workload,-22} {metric,-17} {median,12:G5} {best,12:G5} {unit,-9} {reps,5}"));
            json?.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["workload"] = Workload, ["metric"] = metric, ["value"] = median, ["unit"] = unit, ["device"] = "cpu", ["dtype"] = "f32",
                ["min"] = best, ["reps"] = reps, ["world_size"] = w, ["buckets"] = buckets, ["bucket_cap_mb"] = BucketBytes >> 20,
            }));
        }
        return ExitCodes.Ok;
    }
}

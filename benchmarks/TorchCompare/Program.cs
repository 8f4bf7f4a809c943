// libtorch (TorchSharp-cpu 0.107, libtorch 2.10) running the CPU workloads of `engine bench` with the same shapes,
// seeds aside, so Engine's figures can be quoted as ratios against libtorch measured on the same machine and day.
// Writes the rows `engine bench --json` writes ({"workload","metric","value","unit",...}, plus "impl":"libtorch").
//
//   ./run.sh [--only a,b] [--json FILE]      (run.sh restores, patches the native library's one GLIBCXX need, runs)
//
// The bf16 GPT step runs 1 warm-up and 5 timed steps (libtorch takes seconds a step on CPUs without AVX512_BF16).
// Each workload runs in its own child process (this program with --child NAME), so peak_memory is that process's
// peak resident set growth from after libtorch's start-up to the end of the timed steps. It is an upper bound on
// what the workload keeps live (RSS counts the allocator's cached pages too); Engine's peak_memory row is its own
// peak of live tensor bytes, so Engine ≤ this figure is the comparison the issue asks for.
//
// "Autocast" here: TorchSharp 0.107 has no autocast API, so the bf16 GPT step applies PyTorch 2.10's CPU autocast
// policy by hand: linear and scaled_dot_product_attention take bf16 operands (weights cast once per step, as the
// autocast cache does), layer_norm, the residual adds, softmax and cross-entropy see float32 (the input's type or
// float32, as libtorch's CPU lists give for this model).
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

var argv = args.ToList();
string? Opt(string name) { int i = argv.IndexOf(name); return i >= 0 && i + 1 < argv.Count ? argv[i + 1] : null; }
torch.set_num_threads(Environment.ProcessorCount);

var all = Workloads.Names;
if (Opt("--child") is { } child)
{
    foreach (var row in Workloads.Run(child)) Console.WriteLine(JsonSerializer.Serialize(row));
    return 0;
}

var only = Opt("--only")?.Split(',', StringSplitOptions.RemoveEmptyEntries) ?? all;
var json = Opt("--json");
using var output = json is null ? null : new StreamWriter(json, append: false);
Console.WriteLine($"libtorch {torch.__version__} on cpu ({Environment.ProcessorCount} threads); medians of timed repetitions after warm-up");
Console.WriteLine($"{"workload",-24} {"dtype",-14} {"metric",-12} {"median",12} {"best",12} unit");
foreach (var name in only)
{
    if (!all.Contains(name)) { Console.Error.WriteLine($"unknown workload {name}; known: {string.Join(", ", all)}"); return 2; }
    // This program again (through dotnet when started as `dotnet TorchCompare.dll`), one workload per process.
    var self = Environment.ProcessPath!;
    string[] childArgs = Path.GetFileNameWithoutExtension(self) == "dotnet"
        ? [Environment.GetCommandLineArgs()[0], "--child", name] : ["--child", name];
    var psi = new ProcessStartInfo(self, childArgs) { RedirectStandardOutput = true };
    using var p = Process.Start(psi)!;
    string? line;
    while ((line = p.StandardOutput.ReadLine()) is not null)
    {
        output?.WriteLine(line);
        var r = JsonSerializer.Deserialize<Row>(line)!;
        Console.WriteLine($"{r.workload,-24} {r.dtype,-14} {r.metric,-12} {r.value,12:G5} {r.min,12:G5} {r.unit}");
    }
    p.WaitForExit();
    if (p.ExitCode != 0) { Console.Error.WriteLine($"{name}: child exited {p.ExitCode}"); return 1; }
}
return 0;

/// <summary>One JSON line, as engine bench writes it.</summary>
sealed record Row(string workload, string metric, double value, string unit, string device, string dtype, double min, int reps, string impl = "libtorch");

static class Workloads
{
    const int M16 = 16 << 20;

    public static readonly string[] Names =
    [
        "gemm_f32_1024", "gemm_bf16_1024", "add_16M", "add_16M_inplace", "gelu_16M", "gelu_16M_inplace", "softmax_4096x4096",
        "mlp_train_step", "gpt_train_step", "gpt_train_step_bf16", "op_overhead",
    ];

    public static IEnumerable<Row> Run(string name)
    {
        torch.manual_seed(1);
        long rss0 = PeakRssBytes();
        switch (name)
        {
            case "gemm_f32_1024": return Gemm(name, ScalarType.Float32);
            case "gemm_bf16_1024": return Gemm(name, ScalarType.BFloat16);
            case "add_16M": { var a = randn(M16); var b = randn(M16); return Bandwidth(name, "f32", 2, 15, 3.0 * 4 * M16, () => a.add(b).Dispose()); }
            case "add_16M_inplace": { var a = randn(M16); var b = randn(M16); return Bandwidth(name, "f32", 2, 15, 3.0 * 4 * M16, () => a.add_(b)); }
            case "gelu_16M": { var a = randn(M16); return Bandwidth(name, "f32", 2, 15, 2.0 * 4 * M16, () => F.gelu(a).Dispose()); }
            case "gelu_16M_inplace": { var a = randn(M16); return Bandwidth(name, "f32", 2, 15, 2.0 * 4 * M16, () => a.set_(F.gelu(a))); }
            case "softmax_4096x4096": { var x = randn(4096, 4096); return Bandwidth(name, "f32", 2, 15, 2.0 * 4 * 4096 * 4096, () => x.softmax(-1).Dispose()); }
            case "op_overhead": return Overhead();
            case "mlp_train_step": return Training(name, "f32", 5, 30, rss0, MlpStep());
            case "gpt_train_step": return Training(name, "f32", 2, 10, rss0, GptStep(bf16: false), tokens: 16 * 128);
            case "gpt_train_step_bf16": return Training(name, "bf16-autocast", 1, 5, rss0, GptStep(bf16: true), tokens: 16 * 128);
            default: throw new ArgumentException(name);
        }
    }

    static IEnumerable<Row> Gemm(string name, ScalarType t)
    {
        var a = randn(1024, 1024).to(t); var b = randn(1024, 1024).to(t);
        var times = Time(2, 10, () => a.matmul(b).Dispose());
        string dt = t == ScalarType.BFloat16 ? "bf16" : "f32";
        double flops = 2.0 * 1024 * 1024 * 1024;
        yield return Make(name, "time", times, s => s * 1e3, "ms", dt, median: true);
        yield return Make(name, "throughput", times, s => flops / s / 1e9, "GFLOP/s", dt, median: true);
    }

    static IEnumerable<Row> Bandwidth(string name, string dt, int warm, int reps, double bytes, Action run)
    {
        var times = Time(warm, reps, () => { using var d = NewDisposeScope(); run(); });
        yield return Make(name, "time", times, s => s * 1e3, "ms", dt, median: true);
        yield return Make(name, "bandwidth", times, s => bytes / s / 1e9, "GB/s", dt, median: true);
    }

    static IEnumerable<Row> Overhead()
    {
        const int ops = 100_000;
        var a = ones(1); var b = ones(1);
        var times = Time(1, 7, () => { using var _ = no_grad(); for (int i = 0; i < ops; i++) a.add(b).Dispose(); });
        yield return Make("op_overhead", "per_op", times, s => s / ops * 1e6, "us", "f32", median: true);
    }

    static IEnumerable<Row> Training(string name, string dt, int warm, int reps, long rss0, Action step, int tokens = 0)
    {
        var times = Time(warm, reps, () => { using var d = NewDisposeScope(); step(); });
        yield return Make(name, "time", times, s => s * 1e3, "ms", dt, median: true);
        if (tokens > 0) yield return Make(name, "throughput", times, s => tokens / s, "tokens/s", dt, median: true);
        double mb = (PeakRssBytes() - rss0) / 1e6;
        yield return new Row(name, "peak_memory", Math.Round(mb, 1), "MB", "cpu", dt, Math.Round(mb, 1), reps);
    }

    // mlp_train_step: Mlp [784, 1024, 1024, 10] with ReLU, AdamW(1e-3, 0.9, 0.999, 1e-8, 0.01), batch 256, cross-entropy.
    static Action MlpStep()
    {
        var model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10));
        var opt = optim.AdamW(model.parameters(), 1e-3, 0.9, 0.999, 1e-8, 0.01);
        var x = randn(256, 784); var y = randint(0, 10, [256], dtype: ScalarType.Int64);
        return () =>
        {
            opt.zero_grad();
            var loss = F.cross_entropy(model.forward(x), y);
            loss.backward();
            opt.step();
            _ = loss.item<float>();
        };
    }

    // gpt_train_step: vocab 64, context 128, 4 layers, 4 heads, d 256, batch 16, untied head, no dropout, exact GELU,
    // AdamW(3e-4, 0.9, 0.999, 1e-8, 0.01), grad-norm clip 1.0.
    static Action GptStep(bool bf16)
    {
        var model = new TinyGpt(64, 128, 4, 4, 256, bf16);
        var opt = optim.AdamW(model.parameters(), 3e-4, 0.9, 0.999, 1e-8, 0.01);
        var x = randint(0, 64, [16, 128], dtype: ScalarType.Int64); var y = randint(0, 64, [16 * 128], dtype: ScalarType.Int64);
        return () =>
        {
            opt.zero_grad();
            var logits = model.forward(x).view(-1, 64);
            var loss = F.cross_entropy(bf16 ? logits.to(ScalarType.Float32) : logits, y);
            loss.backward();
            nn.utils.clip_grad_norm_(model.parameters(), 1.0);
            opt.step();
            _ = loss.item<float>();
        };
    }

    static double[] Time(int warm, int reps, Action run)
    {
        for (int i = 0; i < warm; i++) run();
        var t = new double[reps];
        for (int i = 0; i < reps; i++) { var sw = Stopwatch.StartNew(); run(); t[i] = sw.Elapsed.TotalSeconds; }
        Array.Sort(t);
        return t;
    }

    static Row Make(string name, string metric, double[] sortedSeconds, Func<double, double> f, string unit, string dt, bool median)
    {
        double med = sortedSeconds.Length % 2 == 1 ? sortedSeconds[sortedSeconds.Length / 2]
            : (sortedSeconds[sortedSeconds.Length / 2 - 1] + sortedSeconds[sortedSeconds.Length / 2]) / 2;
        double a = f(med), best = f(sortedSeconds[0]), worst = f(sortedSeconds[^1]);
        // "min" is the best figure, as engine bench: the smallest time, the largest rate.
        double bestFigure = unit is "ms" or "us" ? Math.Min(best, worst) : Math.Max(best, worst);
        return new Row(name, metric, Math.Round(a, 4), unit, "cpu", dt, Math.Round(bestFigure, 4), sortedSeconds.Length);
    }

    static long PeakRssBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        return 0;
    }
}

sealed class TinyGpt : nn.Module<Tensor, Tensor>
{
    readonly nn.Module<Tensor, Tensor> _wte, _wpe, _lnf, _head;
    readonly Block[] _blocks;
    readonly bool _bf16;

    public TinyGpt(int vocab, int context, int layers, int heads, int d, bool bf16) : base("gpt")
    {
        _bf16 = bf16;
        _wte = nn.Embedding(vocab, d); _wpe = nn.Embedding(context, d);
        _blocks = Enumerable.Range(0, layers).Select(i => new Block(d, heads, bf16, $"block{i}")).ToArray();
        _lnf = nn.LayerNorm(d);
        _head = nn.Linear(d, vocab, hasBias: false);
        RegisterComponents();
        foreach (var b in _blocks) register_module(b.GetName(), b);
    }

    public override Tensor forward(Tensor idx)
    {
        var pos = arange(idx.shape[1], dtype: ScalarType.Int64);
        var x = _wte.forward(idx) + _wpe.forward(pos);
        foreach (var b in _blocks) x = b.forward(x);
        x = _lnf.forward(x);
        return _bf16 ? Block.Lin(x, (TorchSharp.Modules.Linear)_head, true) : _head.forward(x);
    }
}

sealed class Block : nn.Module<Tensor, Tensor>
{
    readonly TorchSharp.Modules.LayerNorm _ln1, _ln2;
    readonly TorchSharp.Modules.Linear _qkv, _proj, _fc, _fcProj;
    readonly int _heads, _d;
    readonly bool _bf16;

    public Block(int d, int heads, bool bf16, string name) : base(name)
    {
        _d = d; _heads = heads; _bf16 = bf16;
        _ln1 = nn.LayerNorm(d); _ln2 = nn.LayerNorm(d);
        _qkv = nn.Linear(d, 3 * d); _proj = nn.Linear(d, d);
        _fc = nn.Linear(d, 4 * d); _fcProj = nn.Linear(4 * d, d);
        RegisterComponents();
    }

    // F.linear under CPU autocast: bf16 operands, bf16 output.
    public static Tensor Lin(Tensor x, TorchSharp.Modules.Linear l, bool bf16) =>
        bf16 ? F.linear(x.to(ScalarType.BFloat16), l.weight!.to(ScalarType.BFloat16), l.bias?.to(ScalarType.BFloat16)) : l.forward(x);

    public override Tensor forward(Tensor x)
    {
        long b = x.shape[0], t = x.shape[1];
        int hd = _d / _heads;
        var qkv = Lin(_ln1.forward(x), _qkv, _bf16);
        var parts = qkv.split(_d, 2);
        var q = parts[0].view(b, t, _heads, hd).transpose(1, 2);
        var k = parts[1].view(b, t, _heads, hd).transpose(1, 2);
        var v = parts[2].view(b, t, _heads, hd).transpose(1, 2);
        var y = F.scaled_dot_product_attention(q, k, v, is_casual: true);
        y = y.transpose(1, 2).contiguous().view(b, t, _d);
        x = x + Lin(y, _proj, _bf16);
        var h = F.gelu(Lin(_ln2.forward(x), _fc, _bf16));
        return x + Lin(h, _fcProj, _bf16);
    }
}

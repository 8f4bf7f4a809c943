using Engine.Amp;
using Engine.Backends;
using Engine.Graph;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;

namespace Engine.Workloads;

/// <summary>A metric derived from the time of one repetition.</summary>
/// <param name="Name">Metric name (time, bandwidth, flops, tokens).</param>
/// <param name="Unit">ms, us, GB/s, GFLOP/s or tokens/s.</param>
/// <param name="FromSeconds">The metric's value for a repetition that took this many seconds.</param>
public sealed record Metric(string Name, string Unit, Func<double, double> FromSeconds);

/// <summary>One prepared workload on one device: <see cref="Run"/> is one timed repetition.</summary>
public interface IWorkloadRun : IDisposable
{
    /// <summary>One repetition (synchronizes at the end, so wall time is the work's time).</summary>
    void Run();

    /// <summary>What to report.</summary>
    IReadOnlyList<Metric> Metrics { get; }
}

/// <summary>A training-step workload, whose kernel launches per step <c>engine bench</c> counts.</summary>
public interface ITrainingStep : IWorkloadRun
{
    /// <summary>
    /// One step, as <see cref="IWorkloadRun.Run"/> without its closing read of the loss: that read is the harness's
    /// synchronization, not the step's work (on CUDA it stages the element with one more Copy).
    /// </summary>
    void Step();
}

/// <summary>A named workload: a dtype label for reports and a factory per device.</summary>
/// <param name="Name">As in benchmarks/RESULTS.md (gemm_f32_1024, mlp_train_step...).</param>
/// <param name="DType">f32, bf16, f16 or bf16-autocast.</param>
/// <param name="Warmup">Untimed repetitions first.</param>
/// <param name="Reps">Timed repetitions (the median is reported).</param>
/// <param name="Create">Prepares the workload on a device.</param>
/// <param name="CountsLaunches">
/// A training step (<see cref="ITrainingStep"/>): <c>engine bench</c> also counts the kernel launches of one repetition after warm-up
/// (<see cref="WorkloadCatalog.CountLaunches"/>) and reports them as the <c>launches_per_step</c> row.
/// </param>
public sealed record Workload(string Name, string DType, int Warmup, int Reps, Func<Device, IWorkloadRun> Create, bool CountsLaunches = false);

/// <summary>
/// The workloads of <c>engine bench</c> and the BenchmarkDotNet suites, defined once. Sizes and models follow the
/// CLI issue: GEMM squares, 16M-element elementwise ops, a 4096² softmax, an MLP step (784→1024→1024→10, batch 256,
/// AdamW) and a GPT step (vocab 64, context 128, 4 layers, 4 heads, d 256, batch 16, AdamW), in float32 and under
/// bfloat16 and float16 autocast. A GPT step is what <c>engine train</c> does per step: forward, backward, gradient
/// clipping to norm 1, the optimizer step (through the loss scaler under float16) and zero-grad.
/// </summary>
public static partial class WorkloadCatalog
{
    const int M16 = 16 << 20;

    public static IReadOnlyList<Workload> All { get; } =
    [
        Gemm(256, 5, 30), Gemm(512, 3, 20), Gemm(1024, 2, 10), Gemm(2048, 1, 5),
        new("gemm_bf16_1024", "bf16", 2, 10, d => new GemmRun(1024, DType.BFloat16, d)),
        new("add_16M", "f32", 2, 15, d => new ElementwiseRun(d, inPlace: false, gelu: false)),
        new("add_16M_inplace", "f32", 2, 15, d => new ElementwiseRun(d, inPlace: true, gelu: false)),
        new("gelu_16M", "f32", 2, 15, d => new ElementwiseRun(d, inPlace: false, gelu: true)),
        new("gelu_16M_inplace", "f32", 2, 15, d => new ElementwiseRun(d, inPlace: true, gelu: true)),
        new("softmax_4096x4096", "f32", 2, 15, d => new SoftmaxRun(d)),
        new("bf16_convert_16M", "bf16", 2, 15, d => new ConvertRun(d)),
        new("mlp_train_step", "f32", 5, 30, d => new MlpStepRun(d)),
        new("gpt_train_step", "f32", 2, 10, d => new GptStepRun(d, null), CountsLaunches: true),
        new("gpt_train_step_bf16", "bf16-autocast", 2, 10, d => new GptStepRun(d, DType.BFloat16), CountsLaunches: true),
        new("gpt_train_step_fp16", "f16-autocast", 2, 10, d => new GptStepRun(d, DType.Float16), CountsLaunches: true),
        new("unscale_16M", "f32", 2, 15, d => new UnscaleRun(d)),
        new("op_overhead", "f32", 1, 7, d => new OverheadRun(d)),
        .. SdpaWorkloads(),
    ];

    /// <summary>
    /// The GPT training step of the <c>gpt_train_step*</c> workloads with another model size and batch (tests count the
    /// launches of a small one: the count depends on the layer structure, not on the sizes).
    /// </summary>
    public static ITrainingStep GptStep(Device device, DType? autocast, GptConfig config, int batch) => new GptStepRun(device, autocast, config, batch);

    /// <summary>
    /// The kernel launches of one <see cref="ITrainingStep.Step"/>, counted by a <see cref="KernelCounter"/> scope.
    /// Run it after a warm-up step: the first step also allocates the optimizer state and the gradients.
    /// </summary>
    public static KernelCounterScope CountLaunches(ITrainingStep run)
    {
        var c = KernelCounter.Begin();
        try { run.Step(); }
        finally { c.Dispose(); }
        return c;
    }

    static Workload Gemm(int n, int warmup, int reps) => new($"gemm_f32_{n}", "f32", warmup, reps, d => new GemmRun(n, DType.Float32, d));

    sealed class GemmRun : IWorkloadRun
    {
        readonly Tensor _a, _b;
        public GemmRun(int n, DType dtype, Device d)
        {
            _a = Tensor.Randn([n, n], dtype, d, new Generator(1)).DetachFromScopes();
            _b = Tensor.Randn([n, n], dtype, d, new Generator(2)).DetachFromScopes();
            double flops = 2.0 * n * n * n;
            Metrics = [new("time", "ms", s => s * 1e3), new("throughput", "GFLOP/s", s => flops / s / 1e9)];
        }
        public IReadOnlyList<Metric> Metrics { get; }
        public void Run() { using var c = _a.MatMul(_b); Sync(c); }
        public void Dispose() { _a.Dispose(); _b.Dispose(); }
    }

    sealed class ElementwiseRun : IWorkloadRun
    {
        readonly Tensor _a, _b;
        readonly bool _inPlace, _gelu;
        public ElementwiseRun(Device d, bool inPlace, bool gelu)
        {
            _inPlace = inPlace; _gelu = gelu;
            _a = Tensor.Randn([M16], DType.Float32, d, new Generator(1)).DetachFromScopes();
            _b = Tensor.Randn([M16], DType.Float32, d, new Generator(2)).DetachFromScopes();
            // Bytes an op must move: add reads two arrays and writes one (in place too: a += b reads a and b, writes a);
            // gelu reads one and writes one.
            double bytes = (gelu ? 2.0 : 3.0) * 4 * M16;
            Metrics = [new("time", "ms", s => s * 1e3), new("bandwidth", "GB/s", s => bytes / s / 1e9)];
        }
        public IReadOnlyList<Metric> Metrics { get; }
        public void Run()
        {
            if (_gelu && _inPlace) { _a.ApplyInPlace(new Engine.Ops.GeluOp()); Sync(_a); return; }
            if (_inPlace) { _a.AddInPlace(_b); Sync(_a); return; }
            using var y = _gelu ? _a.Gelu() : _a.Add(_b);
            Sync(y);
        }
        public void Dispose() { _a.Dispose(); _b.Dispose(); }
    }

    sealed class SoftmaxRun : IWorkloadRun
    {
        readonly Tensor _x;
        public SoftmaxRun(Device d)
        {
            _x = Tensor.Randn([4096, 4096], DType.Float32, d, new Generator(3)).DetachFromScopes();
            double bytes = 2.0 * 4 * 4096 * 4096;
            Metrics = [new("time", "ms", s => s * 1e3), new("bandwidth", "GB/s", s => bytes / s / 1e9)];
        }
        public IReadOnlyList<Metric> Metrics { get; }
        public void Run() { using var y = _x.Softmax(-1); Sync(y); }
        public void Dispose() => _x.Dispose();
    }

    sealed class ConvertRun : IWorkloadRun
    {
        readonly Tensor _x;
        public ConvertRun(Device d)
        {
            _x = Tensor.Randn([M16], DType.Float32, d, new Generator(4)).DetachFromScopes();
            double bytes = 6.0 * M16;
            Metrics = [new("time", "ms", s => s * 1e3), new("bandwidth", "GB/s", s => bytes / s / 1e9)];
        }
        public IReadOnlyList<Metric> Metrics { get; }
        public void Run() { using var y = _x.To(DType.BFloat16); Sync(y); }
        public void Dispose() => _x.Dispose();
    }

    sealed class MlpStepRun : ITrainingStep
    {
        readonly Mlp _model;
        readonly AdamW _opt;
        readonly Tensor _x, _y;
        public MlpStepRun(Device d)
        {
            var g = new Generator(5);
            _model = new Mlp([784, 1024, 1024, 10], "relu", d, DType.Float32, g);
            _opt = new AdamW(_model.Parameters(), 1e-3, 0.9, 0.999, 1e-8, 0.01);
            _x = Tensor.Randn([256, 784], DType.Float32, d, g).DetachFromScopes();
            _y = Tensor.RandInt(0, 10, [256], DType.Int64, d, g).DetachFromScopes();
            Metrics = [new("time", "ms", s => s * 1e3)];
        }
        public IReadOnlyList<Metric> Metrics { get; }
        public void Run()
        {
            using var scope = Tensor.NewScope();
            Sync(StepCore());
        }
        public void Step()
        {
            using var scope = Tensor.NewScope();
            StepCore();
        }
        Tensor StepCore()
        {
            _opt.ZeroGrad();
            var loss = _model.Forward(_x).CrossEntropy(_y);
            loss.Backward();
            _opt.Step();
            return loss;
        }
        public void Dispose() { _opt.Dispose(); _model.Dispose(); _x.Dispose(); _y.Dispose(); }
    }

    sealed class GptStepRun : ITrainingStep
    {
        readonly Gpt _model;
        readonly AdamW _opt;
        readonly GradScaler? _scaler;
        readonly Tensor _x, _y;
        readonly int _vocab;
        readonly DType? _autocast;
        readonly DeviceType _deviceType;
        public GptStepRun(Device d, DType? autocast) : this(d, autocast, new GptConfig(64, 128, 4, 4, 256), 16) { }
        public GptStepRun(Device d, DType? autocast, GptConfig config, int batch)
        {
            _autocast = autocast;
            _deviceType = d.Type;
            _vocab = config.VocabSize;
            var g = new Generator(6);
            _model = new Gpt(config, d, DType.Float32, g);
            _opt = new AdamW(_model.Parameters(), 3e-4, 0.9, 0.999, 1e-8, 0.01);
            // float16 needs dynamic loss scaling (as engine train --precision fp16); bfloat16 does not.
            _scaler = autocast == DType.Float16 ? new GradScaler() : null;
            _x = Tensor.RandInt(0, _vocab, [batch, config.ContextLength], DType.Int64, d, g).DetachFromScopes();
            _y = Tensor.RandInt(0, _vocab, [batch * config.ContextLength], DType.Int64, d, g).DetachFromScopes();
            int tokens = batch * config.ContextLength;
            Metrics = [new("time", "ms", s => s * 1e3), new("throughput", "tokens/s", s => tokens / s)];
        }
        public IReadOnlyList<Metric> Metrics { get; }
        public void Run()
        {
            using var scope = Tensor.NewScope();
            Sync(StepCore());
        }
        public void Step()
        {
            using var scope = Tensor.NewScope();
            StepCore();
        }
        // The step's tensors belong to the caller's scope.
        Tensor StepCore()
        {
            _opt.ZeroGrad();
            Tensor loss;
            using (_autocast is { } dt ? AutocastMode.Autocast(dt, _deviceType) : null)
                loss = _model.Forward(_x).View(-1, _vocab).CrossEntropy(_y);
            if (_scaler is null)
            {
                loss.Backward();
                ClipGrad.ClipGradNorm(_model.Parameters(), 1.0);
                _opt.Step();
            }
            else
            {
                _scaler.Scale(loss).Backward();
                _scaler.Unscale(_opt);
                ClipGrad.ClipGradNorm(_model.Parameters(), 1.0);
                _scaler.Step(_opt);
                _scaler.Update();
            }
            return loss;
        }
        public void Dispose() { _scaler?.Dispose(); _opt.Dispose(); _model.Dispose(); _x.Dispose(); _y.Dispose(); }
    }

    // The AMP scaler's fused check-and-unscale over 16M float32 gradient values (read and written once). The inverse
    // scale alternates between 2⁻¹⁶ and 2¹⁶ (exact, so the values stay where they are): with 1, as this workload had,
    // the kernel only reads (PyTorch's rule: an inverse scale of exactly 1 leaves the values untouched), half the bytes
    // counted, and its "bandwidth" was 3× the machine's.
    sealed class UnscaleRun : IWorkloadRun
    {
        readonly Tensor _g, _found, _down, _up;
        bool _odd;
        public UnscaleRun(Device d)
        {
            _g = Tensor.Randn([M16], DType.Float32, d, new Generator(7)).DetachFromScopes();
            _found = Tensor.Zeros([], DType.Float32, d).DetachFromScopes();
            _down = Tensor.Full([], 1.0 / 65536, DType.Float32, d).DetachFromScopes();
            _up = Tensor.Full([], 65536.0, DType.Float32, d).DetachFromScopes();
            double bytes = 2.0 * 4 * M16;
            Metrics = [new("time", "ms", s => s * 1e3), new("bandwidth", "GB/s", s => bytes / s / 1e9)];
        }
        public IReadOnlyList<Metric> Metrics { get; }
        public void Run() { Tensor.NonFiniteCheckAndUnscale([_g], _found, (_odd = !_odd) ? _down : _up); Sync(_found); }
        public void Dispose() { _g.Dispose(); _found.Dispose(); _down.Dispose(); _up.Dispose(); }
    }

    sealed class OverheadRun : IWorkloadRun
    {
        const int Ops = 100_000;
        readonly Tensor _a, _b;
        public OverheadRun(Device d)
        {
            _a = Tensor.Ones([1], DType.Float32, d).DetachFromScopes();
            _b = Tensor.Ones([1], DType.Float32, d).DetachFromScopes();
            Metrics = [new("per_op", "us", s => s / Ops * 1e6)];
        }
        public IReadOnlyList<Metric> Metrics { get; }
        public void Run()
        {
            using var _ = GradMode.NoGrad();
            for (int i = 0; i < Ops; i++) { var c = _a.Add(_b); c.Dispose(); }
            Sync(_a);
        }
        public void Dispose() { _a.Dispose(); _b.Dispose(); }
    }

    // Waits for queued device work: reading one element synchronizes on every backend.
    static void Sync(Tensor t)
    {
        if (t.Numel > 0) { using var f = t.Flatten(); using var e = f.Narrow(0, 0, 1); _ = e.Item<float>(); }
    }
}

using System.Diagnostics;
using Engine.Backends;
using Engine.Backends.Cpu;
using Engine.Graph;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// End-to-end acceptance: small models trained from scratch on the CPU must reach a fixed accuracy with fixed seeds.
/// They run in CI, so they are sized to take a few seconds on two cores.
/// </summary>
[NonParallelizable] // sets the process-wide thread count and counts process-wide storages
public class TrainingTests
{
    [SetUp]
    public void NoScopeOpen() => Assert.That(DisposeScope.Current, Is.Null, "a test left a scope open");

    // Wall time and the process's CPU time since a start point: CPU time is what to compare on a loaded machine.
    sealed class Timer
    {
        readonly Stopwatch _wall = Stopwatch.StartNew();
        readonly TimeSpan _cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        public override string ToString() =>
            $"{_wall.Elapsed.TotalSeconds:F1} s wall, {(Process.GetCurrentProcess().TotalProcessorTime - _cpu0).TotalSeconds:F1} s CPU";
    }

    // ---------------------------------------------------------------- two spirals

    // Two interleaved spirals of n points each: class c at angle θ = 3π·r + c·π, radius r ∈ (0, 1], plus Gaussian noise.
    static (double[] X, long[] Y) Spirals(int n, int seed, double noise)
    {
        var rng = new Random(seed);
        double Gauss() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var x = new double[4 * n];
        var y = new long[2 * n];
        for (int c = 0; c < 2; c++)
            for (int i = 0; i < n; i++)
            {
                double r = (i + 1.0) / n, th = 3 * Math.PI * r + c * Math.PI + noise * Gauss();
                int k = c * n + i;
                x[2 * k] = r * Math.Cos(th) + noise * Gauss() * 0.1;
                x[2 * k + 1] = r * Math.Sin(th) + noise * Gauss() * 0.1;
                y[k] = c;
            }
        return (x, y);
    }

    static double Accuracy(Mlp model, Tensor x, long[] y)
    {
        using var _ = GradMode.NoGrad();
        using var logits = model.Forward(x);
        using var pred = logits.ArgMax(1);
        var p = pred.ToArray<long>();
        return p.Zip(y).Count(t => t.First == t.Second) / (double)y.Length;
    }

    [Test]
    public void MlpLearnsTwoSpirals()
    {
        var sw = new Timer();
        var (xTrain, yTrain) = Spirals(500, seed: 1, noise: 0.05);
        var (xTest, yTest) = Spirals(250, seed: 2, noise: 0.05);
        using var tx = Tensor.FromArray(xTrain, [1000, 2]).To(DType.Float32);
        using var ty = Tensor.FromArray(yTrain, [1000]);
        using var vx = Tensor.FromArray(xTest, [500, 2]).To(DType.Float32);

        using var model = new Mlp([2, 64, 64, 2], "relu", generator: new Generator(7));
        using var opt = new Adam(model.Parameters(), lr: 1e-2);
        const int epochs = 60;
        var loader = new DataLoader(tx, ty, batchSize: 100, shuffle: true, seed: 3);
        var sched = new WarmupCosineLr(opt, warmupSteps: 20, totalSteps: epochs * loader.Count, minLr: 1e-3);
        double lastLoss = double.NaN;
        for (int epoch = 0; epoch < epochs; epoch++)
            foreach (var (bx, by) in loader.Epoch(epoch))
            {
                using var scope = Tensor.NewScope();
                using var _x = bx;
                using var _y = by;
                var loss = model.Forward(bx).CrossEntropy(by);
                opt.ZeroGrad();
                loss.Backward();
                opt.Step();
                sched.Step();
                lastLoss = loss.Item();
            }
        double train = Accuracy(model, tx, yTrain), test = Accuracy(model, vx, yTest);
                TestContext.Out.WriteLine($"spirals: {epochs * loader.Count} steps, final loss {lastLoss:F4}, train accuracy {train:P1}, held-out accuracy {test:P1}, {sw}");
        Assert.That(test, Is.GreaterThanOrEqualTo(0.97), "held-out accuracy");
        Assert.That(train, Is.GreaterThanOrEqualTo(0.97), "training accuracy");
    }

    // ---------------------------------------------------------------- sorting with a GPT (minGPT's demo task)

    const int SortLen = 6, SortVocab = 3, SortT = 2 * SortLen - 1;

    // Every sequence of SortLen digits, shuffled with a seed; the first `test` are held out.
    static (long[][] Train, long[][] Test) SortData(int test, int seed)
    {
        int total = (int)Math.Pow(SortVocab, SortLen);
        var all = new long[total][];
        for (int i = 0; i < total; i++)
        {
            all[i] = new long[SortLen];
            for (int j = 0, v = i; j < SortLen; j++, v /= SortVocab) all[i][j] = v % SortVocab;
        }
        var rng = new Random(seed);
        for (int i = total - 1; i > 0; i--) { int j = rng.Next(i + 1); (all[i], all[j]) = (all[j], all[i]); }
        return (all[test..], all[..test]);
    }

    // Input: the digits then the sorted digits, less the last; target: the next token, ignored (-100) where the
    // prediction would be of the unsorted input.
    static (long[] X, long[] Y) SortBatch(long[][] seqs)
    {
        var x = new long[seqs.Length * SortT];
        var y = new long[seqs.Length * SortT];
        for (int b = 0; b < seqs.Length; b++)
        {
            var full = seqs[b].Concat(seqs[b].Order()).ToArray();
            for (int t = 0; t < SortT; t++)
            {
                x[b * SortT + t] = full[t];
                y[b * SortT + t] = t < SortLen - 1 ? -100 : full[t + 1];
            }
        }
        return (x, y);
    }

    static Gpt SortModel(int dModel = 48) =>
        new(new GptConfig(VocabSize: SortVocab, ContextLength: SortT, Layers: 2, Heads: 4, DModel: dModel), generator: new Generator(1));

    static AdamW SortOptimizer(Gpt model, double lr)
    {
        // Weight decay on matrices (embeddings included) and none on biases and norm weights, as nanoGPT.
        var decay = model.Parameters().Where(p => p.Rank >= 2).ToList();
        var noDecay = model.Parameters().Where(p => p.Rank < 2).ToList();
        return new AdamW([new ParamGroup(decay), new ParamGroup(noDecay, new Dictionary<string, double> { ["weight_decay"] = 0 })],
                         lr: lr, beta2: 0.99, weightDecay: 0.1);
    }

    static double SortStep(Gpt model, Optimizer opt, long[][] batch)
    {
        using var scope = Tensor.NewScope();
        var (xs, ys) = SortBatch(batch);
        var x = Tensor.FromArray(xs, [batch.Length, SortT]);
        var y = Tensor.FromArray(ys, [batch.Length * SortT]);
        var logits = model.Forward(x);
        var loss = logits.Reshape(batch.Length * SortT, SortVocab).CrossEntropy(y);
        opt.ZeroGrad();
        loss.Backward();
        ClipGrad.ClipGradNorm(model.Parameters(), 1.0);
        opt.Step();
        return loss.Item();
    }

    static long[][] Sample(long[][] data, int n, Random rng) => Enumerable.Range(0, n).Select(_ => data[rng.Next(data.Length)]).ToArray();

    [Test]
    public void GptLearnsToSort()
    {
        var sw = new Timer();
        var (train, test) = SortData(test: 150, seed: 11);
        using var model = SortModel();
        using var opt = SortOptimizer(model, 5e-3);
        const int steps = 200, batch = 64;
        var sched = new WarmupCosineLr(opt, warmupSteps: 20, totalSteps: steps, minLr: 2e-4);
        var rng = new Random(5);
        double loss = double.NaN;
        for (int step = 0; step < steps; step++)
        {
            loss = SortStep(model, opt, Sample(train, batch, rng));
            sched.Step();
        }
        var trainTime = sw.ToString();

        // Greedy completions of held-out sequences.
        var prompts = test.SelectMany(s => s).ToArray();
        using var prompt = Tensor.FromArray(prompts, [test.Length, SortLen]);
        using var done = model.Generate(prompt, SortLen, temperature: 0);
        var outp = done.ToArray<long>();
        int exact = 0;
        for (int b = 0; b < test.Length; b++)
        {
            var want = test[b].Order().ToArray();
            var got = outp.Skip(b * 2 * SortLen + SortLen).Take(SortLen).ToArray();
            if (got.SequenceEqual(want)) exact++;
        }
        double acc = exact / (double)test.Length;
                TestContext.Out.WriteLine($"sort: {steps} steps of {batch}, final loss {loss:F4}, held-out exact match {acc:P1} ({exact}/{test.Length}), training {trainTime}, total {sw}");
        Assert.That(acc, Is.GreaterThanOrEqualTo(0.95), "held-out exact-match accuracy");
    }

    [Test]
    public void ATrainingRunReturnsEveryStorage()
    {
        static long Settle()
        {
            for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
            return Storage.LiveCount(DeviceType.Cpu);
        }
        long before = Settle();
        var (train, test) = SortData(test: 4, seed: 3);
        using (var model = SortModel(dModel: 16))
        using (var opt = SortOptimizer(model, 1e-3))
        {
            var sched = new WarmupCosineLr(opt, 2, 6);
            var rng = new Random(1);
            for (int step = 0; step < 6; step++) { SortStep(model, opt, Sample(train, 8, rng)); sched.Step(); }
            var saved = opt.StateDict();
            opt.LoadStateDict(saved with { Tensors = new OrderedDictionary<string, Tensor>(saved.Tensors) });
            using var prompt = Tensor.FromArray(test.SelectMany(t => t).ToArray(), [4, SortLen]);
            using var done = model.Generate(prompt, SortLen, temperature: 1.0, seed: 2);
            opt.ZeroGrad();
        }
        Assert.That(Settle(), Is.EqualTo(before), "every storage created by the run is returned once the model and optimizer are disposed");
    }

    [Test]
    public void TrainingLossDoesNotDependOnTheThreadCount()
    {
        // Wide enough that the kernels split their work across threads.
        double Run(int threads)
        {
            using var _threads = CpuBackend.UseOptions(CpuBackend.Options with { Threads = threads });
            var (train, _) = SortData(test: 0, seed: 11);
            using var model = SortModel(dModel: 64);
            using var opt = SortOptimizer(model, 5e-3);
            var rng = new Random(5);
            double loss = double.NaN;
            for (int step = 0; step < 4; step++) loss = SortStep(model, opt, Sample(train, 256, rng));
            using var scope = Tensor.NewScope();
            var (xs, ys) = SortBatch(Sample(train, 256, rng));
            using var _ = GradMode.NoGrad();
            var final = model.Forward(Tensor.FromArray(xs, [256, SortT])).Reshape(256 * SortT, SortVocab).CrossEntropy(Tensor.FromArray(ys, [256 * SortT]));
            return final.Item();
        }
        var sw = new Timer();
        double one = Run(1), two = Run(2);
        TestContext.Out.WriteLine($"loss after 4 steps: {one:R} (1 thread), {two:R} (2 threads), {sw}");
        Assert.That(BitConverter.DoubleToInt64Bits(two), Is.EqualTo(BitConverter.DoubleToInt64Bits(one)), $"{one:R} vs {two:R}");
    }
}

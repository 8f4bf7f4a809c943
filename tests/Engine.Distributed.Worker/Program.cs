using Engine;
using Engine.Amp;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;
using Engine.Distributed;

// One rank of a test job: `mpirun -np 2 Engine.Distributed.Worker <scenario>`. Each scenario prints "OK <name>" lines
// (checked against a single-process reference computed here, in float64) or "FAIL <what>"; the NUnit tests read them.
// A DistributedException exits with its code 10, after printing the message. Several scenarios may be named at once
// ("collectives,ddp,...") so one mpirun start serves them all.
var scenario = args.Length > 0 ? args[0] : "collectives";
ProcessGroup? group = null;
try
{
    group = ProcessGroup.Create(DistributedBackend.Mpi);
    int fails = 0;
    foreach (var name in scenario.Split(','))
    fails += name switch
    {
        "collectives" => Scenarios.Collectives(group),
        "ddp" => Scenarios.Ddp(group),
        "train" => Scenarios.Train(group),
        "zero" => Scenarios.Zero(group),
        "dropout" => Scenarios.DropoutMasks(group),
        "scaler" => Scenarios.Scaler(group),
        "sampler" => Scenarios.Sampler(group),
        "hang" => Scenarios.Hang(group),
        "kill" => Scenarios.Kill(group),
        _ => throw new ArgumentException($"unknown scenario {scenario}"),
    };
    Console.Out.Flush();
    return fails == 0 ? 0 : 1;
}
catch (DistributedException e)
{
    Console.Error.WriteLine($"rank {group?.Rank}: {e.Message}");
    Console.Error.Flush();
    if (group is not null) group.Abort(DistributedException.ExitCode);
    return DistributedException.ExitCode;
}

static class Scenarios
{
    static int s_fails;

    static int Failures() { int f = s_fails; s_fails = 0; return f; }

    static void Check(string name, bool ok, string detail = "")
    {
        Console.WriteLine(ok ? $"OK {name}" : $"FAIL {name} {detail}");
        if (!ok) s_fails++;
    }

    // The same values on every rank for a (rank, index) pair, so any rank can compute every rank's input.
    static double Value(int rank, int i, int salt) => Math.Sin(1.7 * i + 0.37 * rank + salt) * (rank + 1) + (salt % 3);

    static Tensor Input(int rank, int n, DType dtype, int salt) =>
        Tensor.FromArray(Enumerable.Range(0, n).Select(i => Value(rank, i, salt)).ToArray()).To(dtype);

    static double Tol(DType d) => d switch { DType.Float64 => 1e-12, DType.Float32 => 1e-5, DType.Int64 => 0, _ => 1e-2 };

    static bool Close(double[] got, double[] want, double tol, out string detail)
    {
        detail = "";
        if (got.Length != want.Length) { detail = $"length {got.Length} vs {want.Length}"; return false; }
        for (int i = 0; i < got.Length; i++)
            if (Math.Abs(got[i] - want[i]) > tol * (1 + Math.Abs(want[i]))) { detail = $"[{i}] {got[i]} vs {want[i]}"; return false; }
        return true;
    }

    public static int Collectives(ProcessGroup g)
    {
        int w = g.WorldSize, r = g.Rank, n = 7;
        foreach (var dtype in new[] { DType.Float32, DType.Float64, DType.BFloat16, DType.Float16, DType.Int64 })
        {
            // Integer inputs for int64: round the reference values.
            double V(int rank, int i, int salt) => dtype == DType.Int64 ? Math.Round(Value(rank, i, salt) * 10) : Value(rank, i, salt);
            Tensor In(int rank, int count, int salt) => Tensor.FromArray(Enumerable.Range(0, count).Select(i => V(rank, i, salt)).ToArray()).To(dtype);
            // The reference rounds each rank's input to the dtype first, as the ranks' tensors are.
            double[] Rounded(int rank, int count, int salt) { using var t = In(rank, count, salt); return t.ToArray<double>(); }
            foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Average, ReduceOp.Max })
            {
                if (op == ReduceOp.Average && dtype == DType.Int64) continue;
                using var t = In(r, n, 1);
                g.AllReduce(t, op).Wait();
                var inputs = Enumerable.Range(0, w).Select(k => Rounded(k, n, 1)).ToArray();
                var want = Enumerable.Range(0, n).Select(i => op switch
                {
                    ReduceOp.Max => inputs.Max(x => x[i]),
                    ReduceOp.Average => inputs.Sum(x => x[i]) / w,
                    _ => inputs.Sum(x => x[i]),
                }).ToArray();
                using (var rounded = Tensor.FromArray(want).To(dtype)) want = rounded.ToArray<double>();
                Check($"allreduce {op} {dtype}", Close(t.ToArray<double>(), want, Tol(dtype), out var d), d);
            }
            // A non-contiguous view: a column of a [n, 2] matrix, reduced in place through a staging copy.
            using (var m = In(r, 2 * n, 2).View(n, 2))
            using (var col = m.Narrow(1, 1, 1))
            {
                g.AllReduce(col, ReduceOp.Sum).Wait();
                var all = Enumerable.Range(0, w).Select(k => Rounded(k, 2 * n, 2)).ToArray();
                var got = m.ToArray<double>();
                var own = Rounded(r, 2 * n, 2);
                bool ok = true;
                for (int i = 0; i < n; i++)
                {
                    ok &= got[2 * i] == own[2 * i];                                            // column 0 untouched
                    ok &= Math.Abs(got[2 * i + 1] - all.Sum(x => x[2 * i + 1])) <= Tol(dtype) * (1 + Math.Abs(all.Sum(x => x[2 * i + 1]))) * 4;
                }
                Check($"allreduce view {dtype}", ok);
            }
            using (var b = In(r, n, 3))
            {
                g.Broadcast(b, w - 1).Wait();
                Check($"broadcast {dtype}", Close(b.ToArray<double>(), Rounded(w - 1, n, 3), 0, out var d), d);
            }
            using (var input = In(r, n, 4))
            using (var output = Tensor.Zeros([w * n], dtype))
            {
                g.AllGather(output, input).Wait();
                var want = Enumerable.Range(0, w).SelectMany(k => Rounded(k, n, 4)).ToArray();
                Check($"allgather {dtype}", Close(output.ToArray<double>(), want, 0, out var d), d);
            }
            using (var input = In(r, w * n, 5))
            using (var output = Tensor.Zeros([n], dtype))
            {
                g.ReduceScatter(output, input, ReduceOp.Sum).Wait();
                var all = Enumerable.Range(0, w).Select(k => Rounded(k, w * n, 5)).ToArray();
                var want = Enumerable.Range(0, n).Select(i => all.Sum(x => x[r * n + i])).ToArray();
                using (var rounded = Tensor.FromArray(want).To(dtype)) want = rounded.ToArray<double>();
                Check($"reducescatter {dtype}", Close(output.ToArray<double>(), want, Tol(dtype), out var d), d);
            }
        }
        // Bool (a mask buffer) is broadcast and gathered as bytes.
        using (var mask = Tensor.FromArray(Enumerable.Range(0, 9).Select(i => (i + r) % 3 == 0 ? 1.0 : 0.0).ToArray()).To(DType.Bool))
        using (var gathered = Tensor.Zeros([9 * w], DType.Bool))
        {
            g.AllGather(gathered, mask).Wait();
            g.Broadcast(mask, 0).Wait();
            var want0 = Enumerable.Range(0, 9).Select(i => i % 3 == 0).ToArray();
            var wantAll = Enumerable.Range(0, w).SelectMany(k => Enumerable.Range(0, 9).Select(i => (i + k) % 3 == 0)).ToArray();
            Check("broadcast Bool", mask.ToArray<bool>().SequenceEqual(want0));
            Check("allgather Bool", gathered.ToArray<bool>().SequenceEqual(wantAll));
        }
        // Several handles in flight at once, waited in reverse order.
        var ts = Enumerable.Range(0, 4).Select(k => Input(r, 5, DType.Float64, 10 + k)).ToArray();
        var works = ts.Select(t => g.AllReduce(t, ReduceOp.Sum)).ToArray();
        foreach (var wk in works.Reverse()) wk.Wait();
        bool okAsync = true;
        for (int k = 0; k < 4; k++)
        {
            var want = Enumerable.Range(0, 5).Select(i => Enumerable.Range(0, w).Sum(q => Value(q, i, 10 + k))).ToArray();
            okAsync &= Close(ts[k].ToArray<double>(), want, 1e-12, out _);
            ts[k].Dispose();
        }
        Check("async handles", okAsync && works.All(x => x.IsCompleted) && works.Select(x => x.Sequence).Distinct().Count() == 4);
        g.Barrier().Wait();
        Check("barrier", true);
        using (var found = Tensor.Full([1], r == w - 1 ? 1 : 0))
        {
            g.ReduceFoundInf(found);
            Check("found-inf agreement", found.Item() == 1);
        }
        return Failures();
    }

    sealed class Net : Module
    {
        public Net(DType dtype, ulong seed)
        {
            var gen = new Generator(seed);
            A = RegisterModule("a", new Linear(6, 16, dtype: dtype, generator: gen));
            B = RegisterModule("b", new Linear(16, 16, dtype: dtype, generator: gen));
            C = RegisterModule("c", new Linear(16, 3, dtype: dtype, generator: gen));
        }
        public Linear A { get; }
        public Linear B { get; }
        public Linear C { get; }
        public override Tensor Forward(Tensor x)
        {
            using var h1 = A.Forward(x).Tanh();
            using var h2 = B.Forward(h1).Tanh();
            return C.Forward(h2);
        }
    }

    // DDP on two ranks with half of the global batch each against one process with the whole batch.
    public static int Ddp(ProcessGroup g)
    {
        int w = g.WorldSize, r = g.Rank, global = 8 * w, local = 8;
        foreach (var dtype in new[] { DType.Float64, DType.Float32 })
        {
            var x = Tensor.FromArray(Enumerable.Range(0, global * 6).Select(i => Math.Cos(0.31 * i)).ToArray(), new Shape([global, 6])).To(dtype);
            var y = Tensor.FromArray(Enumerable.Range(0, global * 3).Select(i => Math.Sin(0.17 * i)).ToArray(), new Shape([global, 3])).To(dtype);
            using var reference = new Net(dtype, 7);
            // Rank 1 starts from other weights: DDP must broadcast rank 0's.
            using var net = new Net(dtype, 7 + (ulong)r);
            using var ddp = new DistributedDataParallel(net, g, bucketCapBytes: 16 * 16 * dtype.ElementSize());
            using var xl = x.Narrow(0, r * local, local);
            using var yl = y.Narrow(0, r * local, local);
            using (var outRef = reference.Forward(x)) using (var lossRef = outRef.MseLoss(y)) lossRef.Backward();
            using (var o = ddp.Forward(xl)) using (var loss = o.MseLoss(yl)) loss.Backward();
            double tol = dtype == DType.Float64 ? 1e-12 : 1e-6;
            bool ok = true; string detail = "";
            foreach (var ((name, p), (_, q)) in net.NamedParameters().Zip(reference.NamedParameters()))
                if (!Close(p.Grad!.ToArray<double>(), q.Grad!.ToArray<double>(), tol, out var d)) { ok = false; detail += $"{name}: {d}; "; }
            Check($"ddp grads {dtype}", ok, detail);
            var (buckets, ready) = ddp.LastTimeline;
            var names = ddp.BucketParameterNames;
            Check($"ddp buckets {dtype}", names.Count >= 2 && names[0][0] == "c.bias" && names[^1][^1] == "a.weight", string.Join(" | ", names.Select(b => string.Join(",", b))));
            // Overlap: bucket 0 (the last layer) was posted before backward produced its last gradient.
            Check($"ddp overlap {dtype}", buckets.Count == names.Count && buckets[0].Launched < ready[^1], $"{buckets[0].Launched} vs {ready[^1]}");

            // NoSync: two local backwards accumulate, the synchronized third reduces the sum.
            net.ZeroGrad(); reference.ZeroGrad();
            using (ddp.NoSync())
            using (var o = ddp.Forward(xl)) using (var loss = o.MseLoss(yl)) loss.Backward();
            bool local1 = true;
            using (var o = ddp.Forward(xl)) using (var loss = o.MseLoss(yl)) loss.Backward();
            for (int k = 0; k < 2; k++)
                using (var outRef = reference.Forward(x)) using (var lossRef = outRef.MseLoss(y)) lossRef.Backward();
            foreach (var ((_, p), (_, q)) in net.NamedParameters().Zip(reference.NamedParameters()))
                local1 &= Close(p.Grad!.ToArray<double>(), q.Grad!.ToArray<double>(), tol, out _);
            Check($"ddp nosync {dtype}", local1);
            x.Dispose(); y.Dispose();
        }
        return Failures();
    }

    // Thirty AdamW steps at lr 1e-3: the DDP ranks' global loss (the average of the local ones) and weights follow one
    // process with the global batch, float64 within 1e-12 and float32 within 1e-5 (summation order only).
    public static int Train(ProcessGroup g)
    {
        int w = g.WorldSize, r = g.Rank, local = 8, global = local * w, steps = 30;
        foreach (var (dtype, tol) in new[] { (DType.Float64, 1e-12), (DType.Float32, 1e-5) })
        {
            using var reference = new Net(dtype, 11);
            using var net = new Net(dtype, 11 + (ulong)r);
            using var ddp = new DistributedDataParallel(net, g, bucketCapBytes: 1024);
            var optRef = new AdamW(reference.Parameters(), lr: 1e-3);
            var opt = new AdamW(ddp.Parameters(), lr: 1e-3);
            double worst = 0; string detail = "";
            for (int step = 0; step < steps; step++)
            {
                using var scope = Tensor.NewScope();
                // A fresh global batch every step; each rank takes its contiguous share.
                var x = Tensor.FromArray(Enumerable.Range(0, global * 6).Select(i => Math.Cos(0.31 * i + step)).ToArray(), new Shape([global, 6])).To(dtype);
                var y = Tensor.FromArray(Enumerable.Range(0, global * 3).Select(i => Math.Sin(0.17 * i - step)).ToArray(), new Shape([global, 3])).To(dtype);
                var lossRef = reference.Forward(x).MseLoss(y);
                lossRef.Backward(); optRef.Step(); optRef.ZeroGrad();
                var loss = ddp.Forward(x.Narrow(0, r * local, local)).MseLoss(y.Narrow(0, r * local, local));
                loss.Backward(); opt.Step(); opt.ZeroGrad();
                var mean = loss.Detach().Clone();
                g.AllReduce(mean, ReduceOp.Average).Wait();
                double want = lossRef.Item(), got = mean.Item(), err = Math.Abs(got - want) / Math.Max(Math.Abs(want), 1e-30);
                if (err > worst) { worst = err; detail = $"step {step + 1}: {got:R} vs {want:R}"; }
            }
            Check($"ddp 30 steps losses {dtype}", worst <= tol, $"worst relative {worst:E2} at {detail}");
            bool ok = true; string wd = "";
            foreach (var ((name, p), (_, q)) in net.NamedParameters().Zip(reference.NamedParameters()))
                if (!Close(p.ToArray<double>(), q.ToArray<double>(), tol, out var d)) { ok = false; wd += $"{name}: {d}; "; }
            Check($"ddp 30 steps weights {dtype}", ok, wd);
        }
        return Failures();
    }

    // ZeRO-1: the plain module (no DDP), gradients reduce-scattered, AdamW on this rank's slice, slices all-gathered.
    // Thirty steps follow one process with the global batch (float64 within 1e-12, float32 within 1e-5), and the
    // moments held per rank are the slice's: half of one process's on two ranks (435 elements: an odd count, so the
    // last slice is padded).
    public static int Zero(ProcessGroup g)
    {
        int w = g.WorldSize, r = g.Rank, local = 8, global = local * w, steps = 30;
        foreach (var (dtype, tol) in new[] { (DType.Float64, 1e-12), (DType.Float32, 1e-5) })
        {
            using var reference = new Net(dtype, 13);
            using var net = new Net(dtype, 13 + (ulong)r);   // rank 1 starts elsewhere: ZeRO copies rank 0's weights
            var optRef = new AdamW(reference.Parameters(), lr: 1e-3);
            using var zero = new ZeroRedundancyOptimizer(net.Parameters(), g, ps => new AdamW(ps, lr: 1e-3));
            double worst = 0; string detail = "";
            for (int step = 0; step < steps; step++)
            {
                using var scope = Tensor.NewScope();
                var x = Tensor.FromArray(Enumerable.Range(0, global * 6).Select(i => Math.Cos(0.29 * i + step)).ToArray(), new Shape([global, 6])).To(dtype);
                var y = Tensor.FromArray(Enumerable.Range(0, global * 3).Select(i => Math.Sin(0.13 * i - step)).ToArray(), new Shape([global, 3])).To(dtype);
                var lossRef = reference.Forward(x).MseLoss(y);
                lossRef.Backward(); optRef.Step(); optRef.ZeroGrad();
                var loss = net.Forward(x.Narrow(0, r * local, local)).MseLoss(y.Narrow(0, r * local, local));
                loss.Backward(); zero.Step(); zero.ZeroGrad();
                var mean = loss.Detach().Clone();
                g.AllReduce(mean, ReduceOp.Average).Wait();
                double want = lossRef.Item(), got = mean.Item(), err = Math.Abs(got - want) / Math.Max(Math.Abs(want), 1e-30);
                if (err > worst) { worst = err; detail = $"step {step + 1}: {got:R} vs {want:R}"; }
            }
            Check($"zero 30 steps losses {dtype}", worst <= tol, $"worst relative {worst:E2} at {detail}");
            bool ok = true; string wd = "";
            foreach (var ((name, p), (_, q)) in net.NamedParameters().Zip(reference.NamedParameters()))
                if (!Close(p.ToArray<double>(), q.ToArray<double>(), tol, out var d)) { ok = false; wd += $"{name}: {d}; "; }
            Check($"zero 30 steps weights {dtype}", ok, wd);
            static long Moments(Engine.Autograd.Optim.Optimizer o) =>
                o.StateDict().Tensors.Where(kv => kv.Key.EndsWith(".exp_avg") || kv.Key.EndsWith(".exp_avg_sq")).Sum(kv => kv.Value.Numel);
            long all = reference.Parameters().Sum(p => p.Numel), mine = Moments(zero.Optimizer), one = Moments(optRef);
            Check($"zero state sharded {dtype}", one == 2 * all && zero.ShardNumel == (all + w - 1) / w && mine == 2 * zero.ShardNumel && mine * w < one + 2 * w,
                $"{mine} moment elements on rank {r}, {one} in one process, {all} parameters");
            optRef.Dispose();
        }
        return Failures();
    }

    // What docs/SCALING.md says of dropout under DDP: every rank seeds its generator alike, so local sample i gets the
    // same mask on every rank (the one-process masks of global samples 0..b-1), not the one-process mask of its global
    // sample r·b + i.
    public static int DropoutMasks(ProcessGroup g)
    {
        int w = g.WorldSize, r = g.Rank, local = 4, k = 32;
        using var ones = Tensor.Ones([local * w, k], DType.Float64);
        using var globalMask = ones.Dropout(0.5, generator: new Generator(99));
        using var mine = ones.Narrow(0, 0, local).Dropout(0.5, generator: new Generator(99));
        using var all = Tensor.Zeros([w * local * k], DType.Float64);
        using (var flat = mine.Reshape(local * k)) g.AllGather(all, flat).Wait();
        var v = all.ToArray<double>();
        var oneProcess = globalMask.ToArray<double>();
        bool sameAcrossRanks = Enumerable.Range(1, w - 1).All(q => v.AsSpan(q * local * k, local * k).SequenceEqual(v.AsSpan(0, local * k)));
        bool firstRowsAsOneProcess = v.AsSpan(0, local * k).SequenceEqual(oneProcess.AsSpan(0, local * k));
        bool otherRowsDiffer = w == 1 || !oneProcess.AsSpan(local * k, local * k).SequenceEqual(v.AsSpan(local * k, local * k));
        Check("dropout masks as PyTorch DDP with one seed", sameAcrossRanks && firstRowsAsOneProcess && otherRowsDiffer,
            $"same across ranks {sameAcrossRanks}, rank 0 as one process {firstRowsAsOneProcess}, rank 1 differs {otherRowsDiffer}");
        return Failures();
    }

    // Dynamic loss scaling across ranks: at step 2 only the last rank's batch holds an inf, so only its local gradients
    // overflow. DDP's average makes every rank's gradients non-finite, so every rank's scaler skips that step and halves
    // its scale, and the replicas stay equal. Without DDP, ReduceFoundInf makes a per-rank flag agree.
    public static int Scaler(ProcessGroup g)
    {
        int w = g.WorldSize, r = g.Rank, local = 4;
        using var net = new Net(DType.Float32, 5);
        using var ddp = new DistributedDataParallel(net, g);
        var opt = new AdamW(ddp.Parameters(), lr: 1e-2);
        using var scaler = new GradScaler(initScale: 1024);
        bool agree = true; string detail = "";
        for (int step = 1; step <= 3; step++)
        {
            using var scope = Tensor.NewScope();
            var xs = Enumerable.Range(0, local * 6).Select(i => Math.Cos(0.3 * i + r + step)).ToArray();
            if (step == 2 && r == w - 1) xs[5] = double.PositiveInfinity;
            var x = Tensor.FromArray(xs, new Shape([local, 6])).To(DType.Float32);
            var y = Tensor.Zeros([local, 3], DType.Float32);
            var before = net.Parameters().Select(p => p.ToArray<double>()).ToArray();
            var loss = ddp.Forward(x).MseLoss(y);
            scaler.Scale(loss).Backward();
            scaler.Step(opt);
            scaler.Update();
            opt.ZeroGrad();
            bool taken = scaler.LastStepTaken!.Item<bool>();
            bool unchanged = net.Parameters().Zip(before).All(z => z.First.ToArray<double>().SequenceEqual(z.Second));
            // Every rank's (taken, scale, first weight) gathered: they must be identical.
            var mine = Tensor.FromArray(new[] { taken ? 1.0 : 0.0, scaler.GetScale(), net.Parameters().First().ToArray<double>()[0] });
            var all = Tensor.Zeros([3 * w], DType.Float64);
            g.AllGather(all, mine).Wait();
            var v = all.ToArray<double>();
            for (int k = 1; k < w; k++)
                if (v[3 * k] != v[0] || v[3 * k + 1] != v[1] || v[3 * k + 2] != v[2]) { agree = false; detail += $"step {step}: rank {k} ({v[3 * k]}, {v[3 * k + 1]}, {v[3 * k + 2]}) vs rank 0 ({v[0]}, {v[1]}, {v[2]}); "; }
            bool wantTaken = step != 2;
            double wantScale = step < 2 ? 1024 : 512;
            Check($"scaler step {step}: {(wantTaken ? "taken" : "skipped")} on every rank, scale {wantScale}",
                taken == wantTaken && unchanged == !wantTaken && scaler.GetScale() == wantScale, $"taken {taken}, weights unchanged {unchanged}, scale {scaler.GetScale()}");
        }
        Check("scaler agreement across ranks", agree, detail);
        using (var found = Tensor.Full([], r == 0 ? 1.0 : 0.0))
        {
            g.ReduceFoundInf(found);
            Check("ReduceFoundInf: a flag raised on rank 0 only is raised on every rank", found.Item() == 1);
        }
        return Failures();
    }

    public static int Sampler(ProcessGroup g)
    {
        int n = 11, w = g.WorldSize;
        var s = new DistributedSampler(n, g, shuffle: true, seed: 3);
        s.SetEpoch(2);
        var mine = s.Indices();
        using var t = Tensor.FromArray(mine);
        using var all = Tensor.Zeros([mine.Length * w], DType.Int64);
        g.AllGather(all, t).Wait();
        var gathered = all.ToArray<long>();
        var order = DistributedSampler.GlobalOrder(n, true, 3, 2);
        // Interleave the ranks back: position k*W + r of the padded one-process order.
        bool ok = true;
        for (int k = 0; k < mine.Length; k++)
            for (int r = 0; r < w; r++)
                ok &= gathered[r * mine.Length + k] == order[(k * w + r) % n];
        Check("sampler interleaves the one-process order", ok);
        // The one-process order is DataLoader's.
        using var xs = Tensor.FromArray(Enumerable.Range(0, n).Select(i => (double)i).ToArray(), new Shape([n, 1]));
        var loader = new DataLoader(xs, xs, n, shuffle: true, seed: 3);
        var (bx, by) = loader.Epoch(2).First();
        Check("sampler order is DataLoader's", bx.ToArray<double>().Select(v => (long)v).SequenceEqual(order));
        bx.Dispose(); by.Dispose();
        s.SetEpoch(3);
        Check("SetEpoch reshuffles", !s.Indices().SequenceEqual(mine));
        return Failures();
    }

    // Rank 1 never joins: rank 0's watchdog fires (ENGINE_DIST_TIMEOUT) and the job exits 10.
    public static int Hang(ProcessGroup g)
    {
        if (g.Rank == 1) { Thread.Sleep(TimeSpan.FromMinutes(5)); return 1; }
        using var t = Tensor.Ones([4]);
        g.AllReduce(t).Wait();
        return 1;
    }

    // Rank 1 dies: the other rank must not hang.
    public static int Kill(ProcessGroup g)
    {
        if (g.Rank == 1) Environment.FailFast("killed by the kill scenario");
        using var t = Tensor.Ones([4]);
        g.AllReduce(t).Wait();
        return 1;
    }
}

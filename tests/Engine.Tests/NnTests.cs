using Engine.Autograd;
using Engine.Graph;
using Engine.Autograd.Nn;
using Engine.Autograd.Optim;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>Helpers shared by the module, optimizer and training tests.</summary>
internal static class NnTestUtil
{
    /// <summary>The elements as doubles.</summary>
    public static double[] D(Tensor t) => t.ToArray<double>();

    /// <summary>Overwrites a parameter's values (no autograd).</summary>
    public static void Set(Tensor p, double[] values)
    {
        using var src = Tensor.FromArray(values, p.Shape);
        using (GradMode.NoGrad()) p.CopyInPlace(src);
    }

    /// <summary>Replaces a parameter's gradient with the given values (in the parameter's dtype).</summary>
    public static void SetGrad(Tensor p, double[] values)
    {
        p.Grad?.Dispose();
        using var g = Tensor.FromArray(values, p.Shape);
        p.Grad = g.To(p.DType).DetachFromScopes();
    }

    /// <summary>A copy of every parameter's bits (as doubles, exact for float32/float64).</summary>
    public static Dictionary<string, double[]> Snapshot(Module m) => m.NamedParameters().ToDictionary(p => p.Name, p => D(p.Parameter));

    /// <summary>Asserts two snapshots are identical bit for bit.</summary>
    public static void AssertSameBits(Dictionary<string, double[]> a, Dictionary<string, double[]> b, string what)
    {
        Assert.That(b.Keys, Is.EquivalentTo(a.Keys), what);
        foreach (var (k, v) in a)
            Assert.That(BitsOf(b[k]), Is.EqualTo(BitsOf(v)), $"{what}: {k}");
    }

    /// <summary>The IEEE bits of each value, so −0 ≠ +0 and NaNs compare.</summary>
    public static long[] BitsOf(double[] v) => v.Select(BitConverter.DoubleToInt64Bits).ToArray();

    /// <summary>Int64 token ids.</summary>
    public static Tensor Ids(long[] v, params int[] shape) => Tensor.FromArray(v, shape);
}

/// <summary>
/// Runs a module with some of its parameters taken from the function's inputs, so <see cref="GradCheck"/> (which
/// builds its own leaves) can check gradients with respect to module parameters, as <c>torch.func.functional_call</c>.
/// Inputs: [module input, parameter values...]. Forward copies the values into the parameters and, when a gradient is
/// wanted, runs the module with grad on and keeps its graph; Backward is the module's own backward (a vector-Jacobian
/// product through <see cref="Gradients.Grad"/>), so what is checked is the engine's gradient of the module.
/// </summary>
internal sealed class ModuleCall(Module module, Tensor[] parameters, Func<Module, Tensor, Tensor> run) : CustomFunction
{
    public override string Name => "TestModuleCall";

    protected override Tensor Forward(FunctionContext ctx, params Tensor[] inputs)
    {
        for (int i = 0; i < parameters.Length; i++) parameters[i].CopyInPlace(inputs[i + 1]);
        if (!ctx.NeedsInputGrad.Any(b => b)) return run(module, inputs[0]);
        using (GradMode.Set(true))
        {
            var x = inputs[0];
            if (ctx.NeedsInputGrad[0])
            {
                using (GradMode.NoGrad()) x = inputs[0].Detach().Contiguous().Clone();
                x.DetachFromScopes();
                x.RequiresGrad = true;
            }
            var y = run(module, x).DetachFromScopes();
            ctx.State["x"] = x;
            ctx.State["y"] = y;
            return y.Detach();
        }
    }

    protected override Tensor?[] Backward(FunctionContext ctx, Tensor grad)
    {
        var x = (Tensor)ctx.State["x"]!;
        var y = (Tensor)ctx.State["y"]!;
        var wanted = new List<(int Index, Tensor T)>();
        if (ctx.NeedsInputGrad[0]) wanted.Add((0, x));
        for (int i = 0; i < parameters.Length; i++)
            if (ctx.NeedsInputGrad[i + 1]) wanted.Add((i + 1, parameters[i]));
        var gs = Gradients.Grad([y], wanted.Select(w => w.T).ToArray(), [grad]);
        var r = new Tensor?[parameters.Length + 1];
        for (int k = 0; k < wanted.Count; k++) r[wanted[k].Index] = gs[k];
        y.Dispose();
        if (ctx.NeedsInputGrad[0]) x.Dispose();
        return r;
    }
}

public class NnTests
{
    static double[] D(Tensor t) => NnTestUtil.D(t);

    [SetUp]
    public void NoScopeOpen() => Assert.That(DisposeScope.Current, Is.Null, "a test left a scope open");

    static GptConfig Small(bool tied = false) => new(VocabSize: 11, ContextLength: 8, Layers: 2, Heads: 2, DModel: 8, TiedHead: tied);

    // ---------------------------------------------------------------- names, counts, modes

    [Test]
    public void GptParameterNamesArePyTorchPaths()
    {
        using var m = new Gpt(Small(), generator: new Generator(1));
        var names = m.NamedParameters().Select(p => p.Name).ToList();
        var expected = new List<string> { "wte.weight", "wpe.weight" };
        for (int i = 0; i < 2; i++)
            foreach (var s in new[] { "ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                                      "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias" })
                expected.Add($"blocks.{i}.{s}");
        expected.AddRange(["ln_f.weight", "ln_f.bias", "head.weight"]);
        Assert.That(names, Is.EqualTo(expected));

        var shapes = m.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Shape);
        Assert.Multiple(() =>
        {
            Assert.That(shapes["wte.weight"], Is.EqualTo(new[] { 11, 8 }));
            Assert.That(shapes["wpe.weight"], Is.EqualTo(new[] { 8, 8 }));
            // Linear weights are [out, in], as PyTorch's.
            Assert.That(shapes["blocks.0.attn.qkv.weight"], Is.EqualTo(new[] { 24, 8 }));
            Assert.That(shapes["blocks.1.mlp.fc.weight"], Is.EqualTo(new[] { 32, 8 }));
            Assert.That(shapes["blocks.1.mlp.proj.weight"], Is.EqualTo(new[] { 8, 32 }));
            Assert.That(shapes["head.weight"], Is.EqualTo(new[] { 11, 8 }));
        });

        // The causal mask is a non-persistent buffer: it moves with the module but is not saved.
        var buffers = m.NamedBuffers().Select(b => b.Name).ToList();
        Assert.That(buffers, Is.EqualTo(new[] { "positions", "blocks.0.attn.mask", "blocks.1.attn.mask" }));
        var keys = m.StateDict().Keys.ToList();
        Assert.That(keys, Is.EqualTo(expected));
        Assert.That(keys.Any(k => k.Contains("mask")), Is.False);

        var modules = m.NamedModules().Select(x => x.Name).ToList();
        Assert.That(modules, Does.Contain("blocks.1.attn.qkv"));
        Assert.That(modules[0], Is.EqualTo(""));
        Assert.That(m.NamedChildren().Select(c => c.Name), Is.EqualTo(new[] { "wte", "wpe", "drop", "blocks", "ln_f", "head" }));
    }

    [Test]
    public void MlpAndSequentialNamesAreIndexed()
    {
        using var m = new Mlp([3, 5, 4, 2], "tanh", generator: new Generator(1));
        Assert.That(m.NamedParameters().Select(p => p.Name), Is.EqualTo(new[]
            { "net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.4.weight", "net.4.bias" }));
        Assert.That(m.ParameterCount(), Is.EqualTo(3 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2));
        Assert.Throws<EngineException>(() => new Mlp([3], "relu"));
        var e = Assert.Throws<EngineException>(() => new Mlp([3, 4, 2], "swish"));
        Assert.That(e!.Message, Does.Contain("swish"));
    }

    [Test]
    public void ParameterCountOfTheReferenceConfig()
    {
        using var m = new Gpt(new GptConfig(64, 128, 4, 4, 256), generator: new Generator(3));
        Assert.That(m.ParameterCount(), Is.EqualTo(3_225_088));
        Assert.That(m.ParameterCount(trainableOnly: true), Is.EqualTo(3_225_088));
        m.Wpe.Weight.RequiresGrad = false;
        Assert.That(m.ParameterCount(trainableOnly: true), Is.EqualTo(3_225_088 - 128 * 256));
        Assert.That(m.ParameterCount(), Is.EqualTo(3_225_088));
    }

    [Test]
    public void TrainAndEvalRecurse()
    {
        using var m = new Gpt(Small() with { Dropout = 0.5 }, generator: new Generator(1));
        Assert.That(m.NamedModules().All(x => x.Module.Training), Is.True);
        Assert.That(m.Eval(), Is.SameAs(m));
        Assert.That(m.NamedModules().Select(x => x.Module.Training), Has.All.False);
        using var ids = NnTestUtil.Ids([1, 2, 3, 4, 5, 6], 2, 3);
        using (GradMode.NoGrad())
        {
            // In eval mode dropout is off: the output is deterministic.
            using var a = m.Forward(ids);
            using var b = m.Forward(ids);
            Assert.That(D(b), Is.EqualTo(D(a)));
            m.Train();
            Assert.That(m.NamedModules().Select(x => x.Module.Training), Has.All.True);
            using var c = m.Forward(ids);
            Assert.That(D(c), Is.Not.EqualTo(D(a)));
        }
        m.Blocks.Layers[1].Eval();
        Assert.Multiple(() =>
        {
            Assert.That(m.Training, Is.True);
            Assert.That(((TransformerBlock)m.Blocks.Layers[1]).Attn.AttnDropout.Training, Is.False);
            Assert.That(((TransformerBlock)m.Blocks.Layers[0]).Attn.AttnDropout.Training, Is.True);
        });
    }

    [Test]
    public void DropoutModuleIsIdentityInEvalAndScalesInTraining()
    {
        var drop = new Dropout(0.25, new Generator(5));
        using var x = Tensor.Ones([4000]);
        using (var y = drop.Forward(x))
        {
            var v = D(y);
            Assert.That(v.All(e => e == 0 || Math.Abs(e - 1 / 0.75) < 1e-6), Is.True);
            double kept = v.Count(e => e != 0) / 4000.0;
            Assert.That(kept, Is.EqualTo(0.75).Within(0.04));
        }
        drop.Eval();
        using var z = drop.Forward(x);
        Assert.That(D(z), Has.All.EqualTo(1.0));
    }

    [Test]
    public void ZeroGradDropsOrZeroes()
    {
        using var m = new Mlp([3, 4, 2], generator: new Generator(2));
        var rng = new Random(1);
        void Run()
        {
            using var scope = Tensor.NewScope();
            var x = Tensor.FromArray(Ref.Random(rng, 6, DType.Float32), [2, 3]);
            m.Forward(x).Square().Sum().Backward();
        }
        Run();
        Assert.That(m.Parameters().Select(p => p.Grad), Has.All.Not.Null);
        m.ZeroGrad(setToNone: false);
        foreach (var (n, p) in m.NamedParameters())
        {
            Assert.That(p.Grad!.Shape, Is.EqualTo(p.Shape), n);
            Assert.That(D(p.Grad), Has.All.EqualTo(0.0), n);
        }
        Run();
        Assert.That(m.Parameters().Select(p => D(p.Grad!).Any(v => v != 0)), Has.All.True);
        m.ZeroGrad();
        Assert.That(m.Parameters().Select(p => p.Grad), Has.All.Null);
        m.ZeroGrad(); // nothing to clear: no error
    }

    [Test]
    public void FrozenParametersGetNoGradAndDoNotMove()
    {
        using var m = new Mlp([2, 6, 3], generator: new Generator(4));
        var frozen = m.NamedParameters().Where(p => p.Name.StartsWith("net.0.", StringComparison.Ordinal)).Select(p => p.Parameter).ToList();
        foreach (var p in frozen) p.RequiresGrad = false;
        Assert.That(m.ParameterCount(trainableOnly: true), Is.EqualTo(6 * 3 + 3));
        var before = NnTestUtil.Snapshot(m);
        using var opt = new AdamW(m.Parameters(), lr: 0.05, weightDecay: 0.1);
        using var sgd = new Sgd(m.Parameters(), lr: 0.1, momentum: 0.9);
        var rng = new Random(2);
        for (int step = 0; step < 3; step++)
        {
            using var scope = Tensor.NewScope();
            var x = Tensor.FromArray(Ref.Random(rng, 8, DType.Float32), [4, 2]);
            var t = Tensor.FromArray(new long[] { 0, 1, 2, 1 }, [4]);
            m.Forward(x).CrossEntropy(t).Backward();
            foreach (var p in frozen) Assert.That(p.Grad, Is.Null);
            opt.Step();
            sgd.Step();
            opt.ZeroGrad();
        }
        var after = NnTestUtil.Snapshot(m);
        foreach (var (k, v) in before)
        {
            if (k.StartsWith("net.0.", StringComparison.Ordinal))
                Assert.That(NnTestUtil.BitsOf(after[k]), Is.EqualTo(NnTestUtil.BitsOf(v)), k);
            else
                Assert.That(after[k], Is.Not.EqualTo(v), k);
        }
        // A gradient on a frozen parameter (set by hand) is applied, as PyTorch's optimizers look only at .grad.
        NnTestUtil.SetGrad(frozen[0], Enumerable.Repeat(1.0, 12).ToArray());
        opt.Step();
        Assert.That(NnTestUtil.BitsOf(D(frozen[0])), Is.Not.EqualTo(NnTestUtil.BitsOf(before["net.0.weight"])));
        frozen[0].Grad!.Dispose(); frozen[0].Grad = null;
    }

    // ---------------------------------------------------------------- state dicts

    [Test]
    public void StateDictRoundTripReproducesOutputsBitForBit()
    {
        using var a = new Gpt(Small(), generator: new Generator(1));
        using var b = new Gpt(Small(), generator: new Generator(2));
        using var ids = NnTestUtil.Ids([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 2, 5);
        using var _ = GradMode.NoGrad();
        using var ya = a.Forward(ids);
        using (var yb0 = b.Forward(ids)) Assert.That(D(yb0), Is.Not.EqualTo(D(ya)));
        var r = b.LoadStateDict(a.StateDict());
        Assert.That(r.MissingKeys, Is.Empty);
        Assert.That(r.UnexpectedKeys, Is.Empty);
        using var yb = b.Forward(ids);
        Assert.That(NnTestUtil.BitsOf(D(yb)), Is.EqualTo(NnTestUtil.BitsOf(D(ya))));
        NnTestUtil.AssertSameBits(NnTestUtil.Snapshot(a), NnTestUtil.Snapshot(b), "loaded parameters");
        // The values were copied, not shared.
        foreach (var ((_, pa), (_, pb)) in a.NamedParameters().Zip(b.NamedParameters()))
            Assert.That(pb.Storage, Is.Not.SameAs(pa.Storage));
    }

    [Test]
    public void StrictLoadErrorsLeaveTheModelUnchanged()
    {
        using var src = new Gpt(Small(), generator: new Generator(1));
        using var m = new Gpt(Small(), generator: new Generator(2));
        var before = NnTestUtil.Snapshot(m);

        var missing = new Dictionary<string, Tensor>(src.StateDict());
        missing.Remove("blocks.1.ln2.bias");
        var e1 = Assert.Throws<EngineException>(() => m.LoadStateDict(missing));
        Assert.That(e1!.Message, Does.Contain("blocks.1.ln2.bias").And.Contain("LoadStateDict"));
        NnTestUtil.AssertSameBits(before, NnTestUtil.Snapshot(m), "after a missing key");

        using var extra = Tensor.Zeros([3]);
        var unexpected = new Dictionary<string, Tensor>(src.StateDict()) { ["blocks.0.attn.bogus"] = extra };
        var e2 = Assert.Throws<EngineException>(() => m.LoadStateDict(unexpected));
        Assert.That(e2!.Message, Does.Contain("blocks.0.attn.bogus"));
        NnTestUtil.AssertSameBits(before, NnTestUtil.Snapshot(m), "after an unexpected key");

        // A shape mismatch late in the dict: nothing before it may have been copied either.
        using var wrong = Tensor.Zeros([11, 7]);
        var mismatch = new Dictionary<string, Tensor>(src.StateDict()) { ["head.weight"] = wrong };
        var e3 = Assert.Throws<ShapeException>(() => m.LoadStateDict(mismatch));
        Assert.That(e3!.Message, Does.Contain("head.weight").And.Contain("[11, 7]"));
        NnTestUtil.AssertSameBits(before, NnTestUtil.Snapshot(m), "after a shape mismatch");
        Assert.Throws<ShapeException>(() => m.LoadStateDict(mismatch, strict: false));
        NnTestUtil.AssertSameBits(before, NnTestUtil.Snapshot(m), "after a non-strict shape mismatch");

        // Non-strict: the matching keys load and the rest are reported.
        var partial = new Dictionary<string, Tensor>(src.StateDict()) { ["blocks.0.attn.bogus"] = extra };
        partial.Remove("wpe.weight");
        var r = m.LoadStateDict(partial, strict: false);
        Assert.That(r.MissingKeys, Is.EqualTo(new[] { "wpe.weight" }));
        Assert.That(r.UnexpectedKeys, Is.EqualTo(new[] { "blocks.0.attn.bogus" }));
        var now = NnTestUtil.Snapshot(m);
        var want = NnTestUtil.Snapshot(src);
        Assert.That(now["wpe.weight"], Is.EqualTo(before["wpe.weight"]));
        Assert.That(now["wte.weight"], Is.EqualTo(want["wte.weight"]));
        Assert.That(now["head.weight"], Is.EqualTo(want["head.weight"]));
    }

    [Test]
    public void LoadStateDictConvertsDTypes()
    {
        using var src = new Mlp([3, 4, 2], generator: new Generator(1));
        using var m = new Mlp([3, 4, 2], dtype: DType.Float64, generator: new Generator(2));
        m.LoadStateDict(src.StateDict());
        Assert.That(m.Parameters().Select(p => p.DType), Has.All.EqualTo(DType.Float64));
        NnTestUtil.AssertSameBits(NnTestUtil.Snapshot(src), NnTestUtil.Snapshot(m), "float32 values loaded into float64");
    }

    [Test]
    public void ToFloat64ConvertsEveryParameterAndForwardWorks()
    {
        using var m = new Gpt(Small(), generator: new Generator(7));
        using var ids = NnTestUtil.Ids([3, 1, 4, 1, 5, 9, 2, 6], 2, 4);
        double[] y32;
        using (GradMode.NoGrad()) using (var y = m.Forward(ids)) y32 = D(y);
        var ps = m.Parameters().ToList();
        Assert.That(m.To(DType.Float64), Is.SameAs(m));
        Assert.That(m.Parameters().Zip(ps).All(q => ReferenceEquals(q.First, q.Second)), Is.True, "the same parameter objects");
        Assert.That(m.Parameters().Select(p => p.DType), Has.All.EqualTo(DType.Float64));
        Assert.That(m.Parameters().Select(p => p.RequiresGrad), Has.All.True);
        Assert.That(m.NamedBuffers().Select(b => b.Buffer.DType.IsFloatingPoint()), Has.All.False, "the mask is not floating and is left alone");
        using var y64 = m.Forward(ids);
        Assert.That(y64.DType, Is.EqualTo(DType.Float64));
        Ref.AssertClose(D(y64), y32, 1e-4, 1e-5, "float64 logits vs float32 logits");
        using var t = NnTestUtil.Ids([1, 2, 3, 4, 5, 6, 7, 8], 8);
        using var flat = y64.Reshape(8, 11);
        using var loss = flat.CrossEntropy(t);
        loss.Backward();
        Assert.That(m.Parameters().Select(p => p.Grad!.DType), Has.All.EqualTo(DType.Float64));
        m.ZeroGrad();
        Assert.Throws<DTypeException>(() => m.To(DType.Int32));
    }

    // ---------------------------------------------------------------- tied head

    [Test]
    public void TiedHeadIsOneParameterWhoseGradientSumsBothUses()
    {
        var cfg = Small(tied: true) with { DModel = 8 };
        using var tied = new Gpt(cfg, null, DType.Float64, new Generator(5));
        using var untied = new Gpt(cfg with { TiedHead = false }, null, DType.Float64, new Generator(6));
        Assert.That(tied.Head.Weight, Is.SameAs(tied.Wte.Weight));
        Assert.That(tied.NamedParameters().Select(p => p.Name), Does.Not.Contain("head.weight"));
        Assert.That(tied.ParameterCount(), Is.EqualTo(untied.ParameterCount() - 11 * 8));

        // The untied model with the same values in both places: the tied gradient is the sum of its two gradients.
        var state = new Dictionary<string, Tensor>(tied.StateDict());
        state["head.weight"] = tied.Wte.Weight;
        untied.LoadStateDict(state);
        using var ids = NnTestUtil.Ids([1, 2, 3, 4, 5, 6, 7, 8], 2, 4);
        using var tgt = NnTestUtil.Ids([2, 3, 4, 5, 6, 7, 8, 9], 8);
        foreach (var m in new[] { tied, untied })
        {
            using var scope = Tensor.NewScope();
            m.Forward(ids).Reshape(8, 11).CrossEntropy(tgt).Backward();
        }
        var gTied = D(tied.Wte.Weight.Grad!);
        var gEmb = D(untied.Wte.Weight.Grad!);
        var gHead = D(untied.Head.Weight.Grad!);
        var sum = gEmb.Zip(gHead, (a, b) => a + b).ToArray();
        Ref.AssertClose(gTied, sum, 1e-10, 1e-13, "tied gradient = embedding + head gradients");
        Assert.That(gHead.Any(v => Math.Abs(v) > 1e-6) && gEmb.Any(v => Math.Abs(v) > 1e-6), Is.True, "both uses contribute");

        // One parameter: an optimizer updates it once per step.
        using var opt = new Sgd(tied.Parameters(), lr: 1.0);
        var w0 = D(tied.Wte.Weight);
        opt.Step();
        var w1 = D(tied.Wte.Weight);
        for (int i = 0; i < w0.Length; i++) Assert.That(w1[i], Is.EqualTo(w0[i] - gTied[i]).Within(1e-15), $"element {i}");
        tied.ZeroGrad(); untied.ZeroGrad();
    }

    // ---------------------------------------------------------------- fused linear layers

    // The GPT's Linears run as one fused op each (Tensor.Linear, GELU fused into the fc layer): in float64 the forward
    // and every parameter gradient equal those of the unfused composition x·Wᵀ, + b, GELU written out here.
    [TestCase(false)]
    [TestCase(true)]
    public void GptWithFusedLinearsEqualsTheUnfusedComposition(bool geluTanh)
    {
        var cfg = Small(tied: true) with { Activation = geluTanh ? GptActivation.GeluTanh : GptActivation.Gelu };
        using var m = new Gpt(cfg, null, DType.Float64, new Generator(8));
        var rng = new Random(12);
        // Spread the GPT-2 init (std 0.02, zero biases) so every term, biases included, is visible.
        foreach (var (_, p) in m.NamedParameters()) NnTestUtil.Set(p, Ref.Random(rng, (int)p.Numel, DType.Float64, -0.5, 0.5));
        using var ids = NnTestUtil.Ids([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 2, 5);
        using var tgt = NnTestUtil.Ids([2, 3, 4, 5, 6, 7, 8, 9, 10, 0], 10);

        static Tensor Lin(Tensor x, Linear l) => l.Bias is null ? x.MatMul(l.Weight.T) : x.MatMul(l.Weight.T).Add(l.Bias);
        Tensor Unfused(Tensor input)
        {
            int b = input.Size(0), t = input.Size(1), c = cfg.DModel, h = cfg.Heads;
            var x = m.Wte.Forward(input).Add(m.Wpe.Forward(Tensor.Arange(t)));
            foreach (var blk in m.Blocks.Layers.Cast<TransformerBlock>())
            {
                var parts = Lin(blk.Ln1.Forward(x), blk.Attn.Qkv).Split(c, 2);
                var qkv = parts.Select(q => q.View(b, t, h, c / h).Transpose(1, 2)).ToArray();
                var heads = Tensor.ScaledDotProductAttention(qkv[0], qkv[1], qkv[2], isCausal: true);
                x = x.Add(Lin(heads.Transpose(1, 2).Reshape(b, t, c), blk.Attn.Proj));
                x = x.Add(Lin(Lin(blk.Ln2.Forward(x), blk.Mlp.Fc).Gelu(geluTanh), blk.Mlp.Proj));
            }
            return Lin(m.LnF.Forward(x), m.Head);
        }

        var results = new List<(double[] Logits, Dictionary<string, double[]> Grads)>();
        foreach (var fused in new[] { true, false })
        {
            using var scope = Tensor.NewScope();
            var logits = fused ? m.Forward(ids) : Unfused(ids);
            logits.Reshape(10, 11).CrossEntropy(tgt).Backward();
            results.Add((D(logits), m.NamedParameters().ToDictionary(p => p.Name, p => D(p.Parameter.Grad!))));
            m.ZeroGrad();
        }
        Ref.AssertClose(results[0].Logits, results[1].Logits, 1e-12, 1e-12, "logits");
        foreach (var (name, g) in results[1].Grads)
        {
            Assert.That(g.Any(v => v != 0), Is.True, $"{name} has a gradient");
            Ref.AssertClose(results[0].Grads[name], g, 1e-12, 1e-12, name);
        }
    }

    // ---------------------------------------------------------------- initialization

    [Test]
    public void LinearDefaultInitIsUniformWithinOneOverSqrtIn()
    {
        using var l = new Linear(256, 300, generator: new Generator(11));
        Assert.That(l.Weight.Shape, Is.EqualTo(new[] { 300, 256 }));
        Assert.That(l.Bias!.Shape, Is.EqualTo(new[] { 300 }));
        double bound = 1 / Math.Sqrt(256);
        var w = D(l.Weight);
        Assert.That(w.All(v => Math.Abs(v) <= bound), Is.True, "every weight within ±1/√in");
        double mean = w.Average(), var = w.Select(v => (v - mean) * (v - mean)).Average();
        Assert.That(mean, Is.EqualTo(0).Within(0.01 * bound));
        Assert.That(var, Is.EqualTo(bound * bound / 3).Within(0.02 * bound * bound / 3), "variance of U(−b, b) is b²/3");
        // Roughly uniform: each of 10 equal bins holds about a tenth.
        var bins = new int[10];
        foreach (var v in w) bins[Math.Min(9, (int)((v + bound) / (2 * bound) * 10))]++;
        foreach (var c in bins) Assert.That(c / (double)w.Length, Is.EqualTo(0.1).Within(0.01));
        Assert.That(w.Max(), Is.GreaterThan(0.99 * bound));
        Assert.That(w.Min(), Is.LessThan(-0.99 * bound));
        Assert.That(D(l.Bias).All(v => Math.Abs(v) <= bound), Is.True);
        Assert.That(D(l.Bias).Distinct().Count(), Is.GreaterThan(290));

        // The same generator seed gives the same layer; another seed another one.
        using var l2 = new Linear(256, 300, generator: new Generator(11));
        using var l3 = new Linear(256, 300, generator: new Generator(12));
        Assert.That(D(l2.Weight), Is.EqualTo(w));
        Assert.That(D(l3.Weight), Is.Not.EqualTo(w));
        using var nb = new Linear(4, 3, bias: false);
        Assert.That(nb.Bias, Is.Null);
        Assert.That(nb.NamedParameters().Select(p => p.Name), Is.EqualTo(new[] { "weight" }));
    }

    [Test]
    public void GptInitFollowsGpt2()
    {
        using var m = new Gpt(new GptConfig(100, 32, 2, 4, 64), generator: new Generator(9));
        static double Std(double[] v) { double mu = v.Average(); return Math.Sqrt(v.Select(x => (x - mu) * (x - mu)).Average()); }
        double resid = 0.02 / Math.Sqrt(4);
        foreach (var (n, p) in m.NamedParameters())
        {
            var v = D(p);
            if (n.EndsWith(".bias", StringComparison.Ordinal) && !n.Contains("ln")) Assert.That(v, Has.All.EqualTo(0.0), n);
            else if (n.Contains("ln")) Assert.That(v, Has.All.EqualTo(n.EndsWith("weight", StringComparison.Ordinal) ? 1.0 : 0.0), n);
            else
            {
                double want = n.EndsWith("proj.weight", StringComparison.Ordinal) ? resid : 0.02;
                Assert.That(Std(v), Is.EqualTo(want).Within(0.05 * want), n);
                Assert.That(v.Average(), Is.EqualTo(0).Within(0.1 * want), n);
            }
        }
    }

    // ---------------------------------------------------------------- layer forwards against float64 references

    [Test]
    public void LinearForwardMatchesReference([Values(DType.Float64, DType.Float32)] DType dt, [Values] Layouts.Kind kind)
    {
        var rng = new Random(3);
        const int inF = 5, outF = 4;
        using var l = new Linear(inF, outF, dtype: dt, generator: new Generator(1));
        var w = Ref.Random(rng, outF * inF, dt, -1, 1);
        var b = Ref.Random(rng, outF, dt, -1, 1);
        NnTestUtil.Set(l.Weight, w); NnTestUtil.Set(l.Bias!, b);
        var x = Ref.Random(rng, 2 * 3 * inF, dt);
        using var tx = Layouts.Make(x, [2, 3, inF], dt, kind);
        using var y = l.Forward(tx);
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 3, outF }));
        var exp = new double[2 * 3 * outF];
        for (int n = 0; n < 6; n++)
            for (int o = 0; o < outF; o++)
            {
                double s = b[o];
                for (int i = 0; i < inF; i++) s += x[n * inF + i] * w[o * inF + i];
                exp[n * outF + o] = s;
            }
        Ref.AssertClose(D(y), exp, dt, $"linear {dt} {kind}", scale: 4);

        using var nb = new Linear(inF, outF, bias: false, dtype: dt);
        NnTestUtil.Set(nb.Weight, w);
        using var y2 = nb.Forward(tx);
        var exp2 = new double[exp.Length];
        for (int n = 0; n < 6; n++) for (int o = 0; o < outF; o++) exp2[n * outF + o] = exp[n * outF + o] - b[o];
        Ref.AssertClose(D(y2), exp2, dt, $"linear without bias {dt} {kind}", scale: 8);

        using var bad = Tensor.Zeros([2, inF + 1], dt);
        Assert.Throws<ShapeException>(() => l.Forward(bad).Dispose());
    }

    [Test]
    public void EmbeddingLooksUpRows()
    {
        var rng = new Random(4);
        using var e = new Embedding(6, 3, generator: new Generator(2));
        var w = D(e.Weight);
        Assert.That(w.Select(Math.Abs).Max(), Is.LessThan(6.0), "N(0, 1)");
        long[] idx = [5, 0, 2, 2, 1, 4];
        using var ids = NnTestUtil.Ids(idx, 2, 3);
        using var y = e.Forward(ids);
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 3, 3 }));
        var exp = new double[18];
        for (int k = 0; k < 6; k++) for (int j = 0; j < 3; j++) exp[k * 3 + j] = w[idx[k] * 3 + j];
        Assert.That(D(y), Is.EqualTo(exp));

        // Gradient: each looked-up row accumulates its output rows' gradients (row 2 twice).
        using var scope = Tensor.NewScope();
        var gy = Ref.Random(rng, 18, DType.Float32);
        var yy = e.Forward(ids);
        yy.Backward(Tensor.FromArray(gy, [2, 3, 3]).To(DType.Float32));
        var gw = new double[18];
        for (int k = 0; k < 6; k++) for (int j = 0; j < 3; j++) gw[idx[k] * 3 + j] += gy[k * 3 + j];
        Ref.AssertClose(D(e.Weight.Grad!), gw, DType.Float32, "embedding gradient");
        e.ZeroGrad();
    }

    [Test]
    public void LayerNormAndRmsNormModulesMatchReference([Values(DType.Float64, DType.Float32)] DType dt)
    {
        var rng = new Random(5);
        const int rows = 6, dim = 7;
        var x = Ref.Random(rng, rows * dim, dt, -3, 3);
        var g = Ref.Random(rng, dim, dt, 0.5, 1.5);
        var b = Ref.Random(rng, dim, dt, -0.5, 0.5);
        using var tx = Tensor.FromArray(x, [2, 3, dim]).To(dt);
        using var ln = new LayerNorm(dim, 1e-5, dtype: dt);
        Assert.That(D(ln.Weight!), Has.All.EqualTo(1.0));
        Assert.That(D(ln.Bias!), Has.All.EqualTo(0.0));
        NnTestUtil.Set(ln.Weight!, g); NnTestUtil.Set(ln.Bias!, b);
        using var y = ln.Forward(tx);
        var exp = new double[rows * dim];
        for (int r = 0; r < rows; r++)
        {
            double mu = 0, v = 0;
            for (int j = 0; j < dim; j++) mu += x[r * dim + j];
            mu /= dim;
            for (int j = 0; j < dim; j++) v += (x[r * dim + j] - mu) * (x[r * dim + j] - mu);
            v /= dim; // biased variance, as PyTorch's
            for (int j = 0; j < dim; j++) exp[r * dim + j] = (x[r * dim + j] - mu) / Math.Sqrt(v + 1e-5) * g[j] + b[j];
        }
        Ref.AssertClose(D(y), exp, dt, $"layer norm {dt}", scale: 4);

        using var rms = new RmsNorm([dim], 1e-6, dtype: dt);
        NnTestUtil.Set(rms.Weight!, g);
        using var yr = rms.Forward(tx);
        for (int r = 0; r < rows; r++)
        {
            double ms = 0;
            for (int j = 0; j < dim; j++) ms += x[r * dim + j] * x[r * dim + j];
            ms /= dim;
            for (int j = 0; j < dim; j++) exp[r * dim + j] = x[r * dim + j] / Math.Sqrt(ms + 1e-6) * g[j];
        }
        Ref.AssertClose(D(yr), exp, dt, $"rms norm {dt}", scale: 4);
        Assert.That(rms.NamedParameters().Select(p => p.Name), Is.EqualTo(new[] { "weight" }));
        using var plain = new LayerNorm([dim], elementwiseAffine: false);
        Assert.That(plain.ParameterCount(), Is.EqualTo(0));
    }

    [Test]
    public void CausalSelfAttentionMatchesALoopReference()
    {
        var rng = new Random(6);
        const int bsz = 2, t = 4, c = 6, h = 2, d = c / h, ctx = 5;
        using var attn = new CausalSelfAttention(c, h, ctx, dtype: DType.Float64, generator: new Generator(3));
        var wq = Ref.Random(rng, 3 * c * c, DType.Float64, -1, 1);
        var bq = Ref.Random(rng, 3 * c, DType.Float64, -0.5, 0.5);
        var wp = Ref.Random(rng, c * c, DType.Float64, -1, 1);
        var bp = Ref.Random(rng, c, DType.Float64, -0.5, 0.5);
        NnTestUtil.Set(attn.Qkv.Weight, wq); NnTestUtil.Set(attn.Qkv.Bias!, bq);
        NnTestUtil.Set(attn.Proj.Weight, wp); NnTestUtil.Set(attn.Proj.Bias!, bp);
        var x = Ref.Random(rng, bsz * t * c, DType.Float64);
        using var tx = Tensor.FromArray(x, [bsz, t, c]);
        using var y = attn.Forward(tx);

        var exp = new double[bsz * t * c];
        for (int bi = 0; bi < bsz; bi++)
        {
            // qkv[i, o] = x[i]·Wqkv[o] + b[o]; q = columns [0, c), k = [c, 2c), v = [2c, 3c); head hh owns d of each.
            var qkv = new double[t, 3 * c];
            for (int i = 0; i < t; i++)
                for (int o = 0; o < 3 * c; o++)
                {
                    double s = bq[o];
                    for (int j = 0; j < c; j++) s += x[(bi * t + i) * c + j] * wq[o * c + j];
                    qkv[i, o] = s;
                }
            var heads = new double[t, c];
            for (int hh = 0; hh < h; hh++)
                for (int i = 0; i < t; i++)
                {
                    // Query i sees keys 0..i only.
                    var score = new double[i + 1];
                    double max = double.NegativeInfinity;
                    for (int j = 0; j <= i; j++)
                    {
                        double s = 0;
                        for (int e = 0; e < d; e++) s += qkv[i, hh * d + e] * qkv[j, c + hh * d + e];
                        score[j] = s / Math.Sqrt(d);
                        max = Math.Max(max, score[j]);
                    }
                    double z = 0;
                    for (int j = 0; j <= i; j++) z += score[j] = Math.Exp(score[j] - max);
                    for (int e = 0; e < d; e++)
                    {
                        double s = 0;
                        for (int j = 0; j <= i; j++) s += score[j] / z * qkv[j, 2 * c + hh * d + e];
                        heads[i, hh * d + e] = s;
                    }
                }
            for (int i = 0; i < t; i++)
                for (int o = 0; o < c; o++)
                {
                    double s = bp[o];
                    for (int j = 0; j < c; j++) s += heads[i, j] * wp[o * c + j];
                    exp[(bi * t + i) * c + o] = s;
                }
        }
        Ref.AssertClose(D(y), exp, 1e-11, 1e-12, "causal self-attention");

        using var tooLong = Tensor.Zeros([1, ctx + 1, c], DType.Float64);
        var e1 = Assert.Throws<ShapeException>(() => attn.Forward(tooLong).Dispose());
        Assert.That(e1!.Message, Does.Contain("CausalSelfAttention"));
        using var wrongWidth = Tensor.Zeros([1, 2, c + 1], DType.Float64);
        Assert.Throws<ShapeException>(() => attn.Forward(wrongWidth).Dispose());
        Assert.Throws<EngineException>(() => new CausalSelfAttention(7, 2, 4));
    }

    [Test]
    public void TransformerBlockMatchesItsParts()
    {
        // x + attn(ln1(x)), then + mlp(ln2(·)), with the parts run separately; the feed-forward is checked by hand.
        var rng = new Random(7);
        using var blk = new TransformerBlock(8, 2, 6, dtype: DType.Float64, generator: new Generator(4));
        foreach (var (_, p) in blk.NamedParameters()) NnTestUtil.Set(p, Ref.Random(rng, (int)p.Numel, DType.Float64, -0.5, 0.5));
        var x = Ref.Random(rng, 2 * 5 * 8, DType.Float64);
        using var tx = Tensor.FromArray(x, [2, 5, 8]);
        using var scope = Tensor.NewScope();
        var y = blk.Forward(tx);
        var h1 = tx + blk.Attn.Forward(blk.Ln1.Forward(tx));
        var n2 = D(blk.Ln2.Forward(h1));
        var fcW = D(blk.Mlp.Fc.Weight); var fcB = D(blk.Mlp.Fc.Bias!);
        var prW = D(blk.Mlp.Proj.Weight); var prB = D(blk.Mlp.Proj.Bias!);
        var hv = D(h1);
        var exp = new double[hv.Length];
        for (int r = 0; r < 10; r++)
        {
            var hid = new double[32];
            for (int o = 0; o < 32; o++)
            {
                double s = fcB[o];
                for (int j = 0; j < 8; j++) s += n2[r * 8 + j] * fcW[o * 8 + j];
                hid[o] = 0.5 * s * (1 + RefErf.Erf(s / Math.Sqrt(2))); // exact GELU
            }
            for (int o = 0; o < 8; o++)
            {
                double s = prB[o];
                for (int j = 0; j < 32; j++) s += hid[j] * prW[o * 32 + j];
                exp[r * 8 + o] = hv[r * 8 + o] + s;
            }
        }
        Ref.AssertClose(D(y), exp, 1e-9, 1e-10, "transformer block");
    }

    sealed class PassThrough : Module
    {
        public override Tensor Forward(Tensor input) => input;
    }

    [Test]
    public void SequentialKeepsATensorALayerHandsBack()
    {
        using var seq = new Sequential(new Linear(3, 4, generator: new Generator(1)), new PassThrough(), new ReLU());
        using var x = Tensor.Ones([2, 3]);
        using var y = seq.Forward(x);
        Assert.That(y.Shape, Is.EqualTo(new[] { 2, 4 }));
        Assert.That(D(y).All(v => v >= 0), Is.True);
        using var only = new Sequential(new PassThrough());
        using var z = only.Forward(x);
        Assert.That(z, Is.Not.SameAs(x));
        Assert.That(x.IsDisposed, Is.False);
    }

    [Test]
    public void SequentialChainsAndReturnsAFreshTensor()
    {
        var rng = new Random(8);
        using var seq = new Sequential(new Linear(3, 4, generator: new Generator(1)), new ReLU(), new Linear(4, 2, generator: new Generator(2)));
        Assert.That(seq.Layers, Has.Count.EqualTo(3));
        var l0 = (Linear)seq.Layers[0]; var l2 = (Linear)seq.Layers[2];
        var x = Ref.Random(rng, 6, DType.Float32);
        using var tx = Tensor.FromArray(x, [2, 3]).To(DType.Float32);
        using var y = seq.Forward(tx);
        var w0 = D(l0.Weight); var b0 = D(l0.Bias!); var w2 = D(l2.Weight); var b2 = D(l2.Bias!);
        var exp = new double[4];
        for (int n = 0; n < 2; n++)
        {
            var hid = new double[4];
            for (int o = 0; o < 4; o++) { double s = b0[o]; for (int j = 0; j < 3; j++) s += x[n * 3 + j] * w0[o * 3 + j]; hid[o] = Math.Max(s, 0); }
            for (int o = 0; o < 2; o++) { double s = b2[o]; for (int j = 0; j < 4; j++) s += hid[j] * w2[o * 4 + j]; exp[n * 2 + o] = s; }
        }
        Ref.AssertClose(D(y), exp, DType.Float32, "sequential", scale: 4);
        using var empty = new Sequential();
        using var same = empty.Forward(tx);
        Assert.That(same, Is.Not.SameAs(tx));
        Assert.That(D(same), Is.EqualTo(D(tx)));
        using var act = new Sequential(new GELU(), new SiLU(), new Tanh(), new GELU(approximateTanh: true));
        using var ya = act.Forward(tx);
        var ea = x.Select(v =>
        {
            double gl = 0.5 * v * (1 + RefErf.Erf(v / Math.Sqrt(2)));
            double sl = gl / (1 + Math.Exp(-gl));
            double th = Math.Tanh(sl);
            return 0.5 * th * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (th + 0.044715 * th * th * th)));
        }).ToArray();
        Ref.AssertClose(D(ya), ea, DType.Float32, "activations", scale: 4);
    }

    // ---------------------------------------------------------------- gradient checks

    [Test]
    public void LinearGradCheck()
    {
        var rng = new Random(9);
        using var l = new Linear(4, 3, dtype: DType.Float64, generator: new Generator(1));
        using var x = Tensor.FromArray(Ref.Random(rng, 2 * 4, DType.Float64), [2, 4], requiresGrad: true);
        using var w = Tensor.FromArray(Ref.Random(rng, 12, DType.Float64), [3, 4], requiresGrad: true);
        using var b = Tensor.FromArray(Ref.Random(rng, 3, DType.Float64), [3], requiresGrad: true);
        var fn = new ModuleCall(l, [l.Weight, l.Bias!], (m, xin) => m.Forward(xin));
        GradCheck.Check(xs => fn.Apply(xs), [x, w, b]);
        // Also through a batch of rank 3 and with only the weight differentiated.
        using var x3 = Tensor.FromArray(Ref.Random(rng, 2 * 3 * 4, DType.Float64), [2, 3, 4]);
        using var bConst = Tensor.FromArray(D(l.Bias!), [3]);
        var fw = new ModuleCall(l, [l.Weight, l.Bias!], (m, xin) => m.Forward(xin).Square());
        GradCheck.Check(xs => fw.Apply(xs), [x3, w, bConst]);
        Assert.That(l.Weight.Grad, Is.Null, "the check does not touch the module's own gradients");
    }

    [Test]
    public void TransformerBlockGradCheckInFloat64()
    {
        var rng = new Random(10);
        using var blk = new TransformerBlock(4, 2, 4, generator: new Generator(2));
        blk.To(DType.Float64);
        // Non-trivial norms so their gradients matter.
        NnTestUtil.Set(blk.Ln1.Weight!, Ref.Random(rng, 4, DType.Float64, 0.5, 1.5));
        NnTestUtil.Set(blk.Ln2.Bias!, Ref.Random(rng, 4, DType.Float64, -0.5, 0.5));
        using var x = Tensor.FromArray(Ref.Random(rng, 2 * 3 * 4, DType.Float64), [2, 3, 4], requiresGrad: true);
        var ps = new[] { blk.Ln1.Weight!, blk.Attn.Qkv.Weight, blk.Attn.Proj.Bias!, blk.Ln2.Bias!, blk.Mlp.Fc.Weight };
        var inputs = new List<Tensor> { x };
        foreach (var p in ps) inputs.Add(Tensor.FromArray(D(p), p.Shape, requiresGrad: true));
        var fn = new ModuleCall(blk, ps, (m, xin) => m.Forward(xin));
        try
        {
            GradCheck.Check(xs => fn.Apply(xs), [.. inputs], checkNonContiguous: false);
        }
        finally
        {
            foreach (var t in inputs.Skip(1)) t.Dispose();
        }
    }

    [Test]
    public void GptLossGradCheckWithRespectToParameters()
    {
        var cfg = new GptConfig(VocabSize: 5, ContextLength: 4, Layers: 1, Heads: 2, DModel: 4);
        using var m = new Gpt(cfg, dtype: DType.Float64, generator: new Generator(3));
        // GPT-2 init is tiny (std 0.02): spread the weights so every path carries a visible gradient.
        var rng = new Random(11);
        foreach (var (n, p) in m.NamedParameters())
            if (!n.Contains("ln")) NnTestUtil.Set(p, Ref.Random(rng, (int)p.Numel, DType.Float64, -0.6, 0.6));
        using var ids = NnTestUtil.Ids([1, 4, 2, 0, 3, 3], 2, 3);
        using var tgt = NnTestUtil.Ids([4, 2, -100, 3, 3, 1], 6);
        var ps = new[] { m.Wpe.Weight, m.NamedParameters().First(p => p.Name == "blocks.0.attn.qkv.weight").Parameter, m.Head.Weight, m.LnF.Bias! };
        var inputs = ps.Select(p => Tensor.FromArray(D(p), p.Shape, requiresGrad: true)).ToList();
        var fn = new ModuleCall(m, ps, (mod, xin) =>
        {
            using var logits = mod.Forward(xin);
            using var flat = logits.Reshape(6, 5);
            return flat.CrossEntropy(tgt);
        });
        try
        {
            GradCheck.Check(xs => fn.Apply(xs), [ids, .. inputs], checkNonContiguous: false);
        }
        finally
        {
            foreach (var t in inputs) t.Dispose();
        }
        // The module's own backward agrees with what was checked.
        using (var scope = Tensor.NewScope())
        {
            var loss = m.Forward(ids).Reshape(6, 5).CrossEntropy(tgt);
            loss.Backward();
        }
        Assert.That(m.Parameters().Select(p => p.Grad), Has.All.Not.Null);
        Assert.That(D(m.Wte.Weight.Grad!).Skip(0).Take(4).Any(v => v != 0), Is.True, "token 0 appears in the input");
        m.ZeroGrad();
    }

    // ---------------------------------------------------------------- generation

    [Test]
    public void GenerateIsDeterministicGreedyAndCropsToTheContext()
    {
        var cfg = new GptConfig(VocabSize: 7, ContextLength: 6, Layers: 1, Heads: 2, DModel: 8);
        using var m = new Gpt(cfg, generator: new Generator(21));
        // Larger weights than GPT-2 init so the logits are not nearly uniform.
        var rng = new Random(12);
        foreach (var (n, p) in m.NamedParameters())
            if (!n.Contains("ln")) NnTestUtil.Set(p, Ref.Random(rng, (int)p.Numel, DType.Float32, -1, 1));
        using var prompt = NnTestUtil.Ids([1, 2, 3, 4, 0, 6], 2, 3);

        using var g1 = m.Generate(prompt, 9, temperature: 1.0, seed: 7);
        using var g2 = m.Generate(prompt, 9, temperature: 1.0, seed: 7);
        using var g3 = m.Generate(prompt, 9, temperature: 1.0, seed: 8);
        Assert.That(g1.Shape, Is.EqualTo(new[] { 2, 12 }));
        Assert.That(g1.DType, Is.EqualTo(DType.Int64));
        var s1 = g1.ToArray<long>();
        Assert.That(g2.ToArray<long>(), Is.EqualTo(s1), "same seed, same tokens");
        Assert.That(g3.ToArray<long>(), Is.Not.EqualTo(s1), "another seed, other tokens");
        for (int r = 0; r < 2; r++)
            for (int j = 0; j < 3; j++) Assert.That(s1[r * 12 + j], Is.EqualTo(prompt.ToArray<long>()[r * 3 + j]), "the prompt is kept");
        Assert.That(s1.All(v => v >= 0 && v < 7), Is.True);
        Assert.That(m.Training, Is.True, "the mode is restored");

        // Greedy: each new token is the argmax of the logits of the last position (over at most the context).
        using var greedy = m.Generate(prompt, 9, temperature: 0);
        var gs = greedy.ToArray<long>();
        for (int r = 0; r < 2; r++)
            for (int pos = 3; pos < 12; pos++)
            {
                int start = Math.Max(0, pos - cfg.ContextLength);
                var ctx = gs.Skip(r * 12 + start).Take(pos - start).ToArray();
                using var _ = GradMode.NoGrad();
                using var ids = NnTestUtil.Ids(ctx, 1, ctx.Length);
                using var logits = m.Forward(ids);
                var last = D(logits).Skip((ctx.Length - 1) * 7).Take(7).ToArray();
                int best = Array.IndexOf(last, last.Max());
                Assert.That(gs[r * 12 + pos], Is.EqualTo(best), $"row {r} position {pos}");
            }
        using var top1 = m.Generate(prompt, 9, temperature: 1.0, topK: 1, seed: 3);
        Assert.That(top1.ToArray<long>(), Is.EqualTo(gs), "top-k 1 is greedy");
        using var top2 = m.Generate(prompt, 9, temperature: 1.0, topK: 2, seed: 3);
        Assert.That(top2.Shape, Is.EqualTo(new[] { 2, 12 }));

        // A rank-1 prompt gives a rank-1 result; eval mode is kept when the model was in eval.
        m.Eval();
        using var p1 = NnTestUtil.Ids([5, 1], 2);
        using var g4 = m.Generate(p1, 4, temperature: 0);
        Assert.That(g4.Shape, Is.EqualTo(new[] { 6 }));
        Assert.That(g4.ToArray<long>().Take(2), Is.EqualTo(new long[] { 5, 1 }));
        Assert.That(m.Training, Is.False);
    }

    [Test]
    public void GptForwardChecksItsInput()
    {
        using var m = new Gpt(Small(), generator: new Generator(1));
        using var tooLong = NnTestUtil.Ids(new long[9], 1, 9);
        var e = Assert.Throws<ShapeException>(() => m.Forward(tooLong).Dispose());
        Assert.That(e!.Message, Does.Contain("Gpt").And.Contain("context length"));
        using var flat = NnTestUtil.Ids(new long[3], 3);
        Assert.Throws<ShapeException>(() => m.Forward(flat).Dispose());
        using var ok = NnTestUtil.Ids([0, 10, 3], 1, 3);
        using var y = m.Forward(ok);
        Assert.That(y.Shape, Is.EqualTo(new[] { 1, 3, 11 }));
    }

    [Test]
    public void NllMatchesReferenceAndIgnoresIndex()
    {
        var rng = new Random(13);
        var lp = Ref.Random(rng, 4 * 3, DType.Float64, -3, -0.1);
        using var tlp = Tensor.FromArray(lp, [4, 3]);
        using var tgt = NnTestUtil.Ids([2, -100, 0, 1], 4);
        using var mean = Losses.Nll(tlp, tgt);
        using var sum = Losses.Nll(tlp, tgt, Reduction.Sum);
        using var none = Losses.Nll(tlp, tgt, Reduction.None);
        double[] per = [-lp[0 * 3 + 2], 0, -lp[2 * 3 + 0], -lp[3 * 3 + 1]];
        Ref.AssertClose(D(none), per, DType.Float64, "nll none");
        Assert.That(sum.Item(), Is.EqualTo(per.Sum()).Within(1e-12));
        Assert.That(mean.Item(), Is.EqualTo(per.Sum() / 3).Within(1e-12));
        using var bad = NnTestUtil.Ids([0, 1], 2);
        var e = Assert.Throws<ShapeException>(() => Losses.Nll(tlp, bad));
        Assert.That(e!.Message, Does.Contain("Nll"));
        using var mse = Losses.Mse(tlp, tlp);
        Assert.That(mse.Item(), Is.EqualTo(0.0));
    }
}

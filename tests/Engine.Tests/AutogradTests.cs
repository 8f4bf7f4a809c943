using Engine.Autograd;
using Engine.Backends;
using Engine.Graph;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// The backward engine (accumulation, fan-out, retained graphs, in-place checks, hooks, functional gradients, custom
/// functions, leaks) with expected gradients written by hand, and the gradient checks of the unary, binary, view
/// and matmul rules against finite differences.
/// </summary>
[TestFixture]
[NonParallelizable]
public class AutogradTests
{
    static Tensor Leaf(double[] v, params int[] shape) => Tensor.FromArray(v, shape, requiresGrad: true);

    static double[] Rand(Random rng, int n, double lo = -2, double hi = 2) => Ref.Random(rng, n, DType.Float64, lo, hi);

    // Values with |v| in [0.2, 2]: away from the kinks of abs, relu, and the pole of 1/x.
    static double[] RandAway(Random rng, int n)
    {
        var r = new double[n];
        for (int i = 0; i < n; i++) r[i] = (rng.Next(2) == 0 ? -1 : 1) * (0.2 + 1.8 * rng.NextDouble());
        return r;
    }

    static void BackwardOnes(Tensor y)
    {
        using var o = y.OnesLike();
        y.Backward(o);
    }

    static double[] G(Tensor t) => t.Grad!.ToArray<double>();

    [SetUp]
    public void NoScopeOpen() => Assert.That(DisposeScope.Current, Is.Null, "a test left a scope open");

    // ---------------------------------------------------------------- engine semantics

    /// <summary>
    /// The slices of one tensor (q, k, v of a fused projection) accumulate their gradients into one buffer: one fill
    /// and one copy for the first, an in-place add into its region for each other, and the same gradient as the
    /// zeros-and-copy backward of each slice summed (checked elementwise against the upstream gradients here).
    /// </summary>
    [Test]
    public void SlicesOfOneTensor_AccumulateIntoOneGradient()
    {
        var data = Enumerable.Range(0, 2 * 9).Select(i => (float)i).ToArray();
        using var x = Tensor.FromArray(data, [2, 9], requiresGrad: true);
        var dy = new float[2 * 9];
        using (Tensor.NewScope())
        {
            var parts = x.Split(3, 1);
            var loss = parts[0].Mul(1.0).Sum().Add(parts[1].Mul(2.0).Sum()).Add(parts[2].Mul(3.0).Sum());
            using var counts = KernelCounter.Begin();
            loss.Backward();
            Assert.That(counts.Count(nameof(IBackend.Fill)), Is.EqualTo(2), "the root's ones and one zero buffer for the three slices");
        }
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 9; c++) dy[r * 9 + c] = c / 3 + 1;
        Assert.That(x.Grad!.ToArray<float>(), Is.EqualTo(dy));
        x.Grad!.Dispose();
    }

    [Test]
    public void ScalarBackwardGivesHandWrittenGradient()
    {
        // y = Σ x²·w  →  dy/dx = 2·x·w, dy/dw = x²
        double[] xv = [0.5, -1.5, 2.0], wv = [1.0, 3.0, -0.5];
        using var x = Leaf(xv, 3);
        using var w = Leaf(wv, 3);
        using var sq = x * x;
        using var y = sq.MatMul(w); // 0-d
        y.Backward();
        var ex = new double[3]; var ew = new double[3];
        for (int i = 0; i < 3; i++) { ex[i] = 2 * xv[i] * wv[i]; ew[i] = xv[i] * xv[i]; }
        Ref.AssertClose(G(x), ex, DType.Float64, "dx");
        Ref.AssertClose(G(w), ew, DType.Float64, "dw");
        Assert.That(x.Grad!.Shape, Is.EqualTo(new[] { 3 }));
        Assert.That(x.Grad!.DType, Is.EqualTo(DType.Float64));
        x.Grad!.Dispose(); w.Grad!.Dispose();
    }

    [Test]
    public void GradAccumulatesAcrossBackwardCalls()
    {
        double[] xv = [1.0, -2.0];
        using var x = Leaf(xv, 2);
        for (int k = 0; k < 2; k++)
        {
            using var y = x * x;
            BackwardOnes(y);
        }
        Ref.AssertClose(G(x), [4 * xv[0], 4 * xv[1]], DType.Float64, "two backward calls sum");
        x.Grad!.Dispose();
    }

    [Test]
    public void FanOutSumsGradients()
    {
        // y = x·x + 3x + x  →  2x + 4
        double[] xv = [0.25, -1.0, 3.0];
        using var x = Leaf(xv, 3);
        using var a = x * x;
        using var b = x * 3.0;
        using var c = a + b;
        using var y = c + x;
        BackwardOnes(y);
        Ref.AssertClose(G(x), xv.Select(v => 2 * v + 4).ToArray(), DType.Float64, "fan-out");
        x.Grad!.Dispose();
    }

    [Test]
    public void RetainGraphAllowsASecondBackwardAndWithoutItTheErrorIsClear()
    {
        double[] xv = [1.5, -0.5];
        using var x = Leaf(xv, 2);
        using var y = x * x;
        BackwardOnes(y);
        using var z = x * x;
        using (var o = z.OnesLike()) z.Backward(o, retainGraph: true);
        using (var o = z.OnesLike()) z.Backward(o);
        Ref.AssertClose(G(x), [6 * xv[0], 6 * xv[1]], DType.Float64, "three passes");
        Assert.That(z.GradFn!.IsFreed, Is.True);
        using var o2 = z.OnesLike();
        var e = Assert.Catch<EngineException>(() => z.Backward(o2))!;
        Assert.That(e.Message, Does.Contain("backward through the graph a second time"));
        Assert.That(e.Message, Does.Contain("MulBackward"));
        x.Grad!.Dispose();
    }

    [Test]
    public void InPlaceModificationOfASavedTensorIsDetected()
    {
        using var x = Leaf([1.0, 2.0], 2);
        using var a = x * 2.0;
        using var b = a * a;          // saves a
        a.AddInPlace(1.0);            // a's storage changes under b's feet
        var e = Assert.Catch<EngineException>(() => BackwardOnes(b))!;
        Assert.That(e.Message, Does.Contain("modified by an in-place operation"));
    }

    [Test]
    public void InPlaceOnALeafThatRequiresGradThrows()
    {
        using var x = Leaf([1.0, 2.0], 2);
        var e = Assert.Catch<EngineException>(() => x.AddInPlace(1.0))!;
        Assert.That(e.Message, Does.Contain("leaf"));
        using (GradMode.NoGrad()) x.AddInPlace(1.0); // allowed without recording (optimizer updates)
        Assert.That(x.ToArray<double>(), Is.EqualTo(new[] { 2.0, 3.0 }));
    }

    [Test]
    public void InPlaceOpsOnNonLeavesInsideTheGraph()
    {
        double[] xv = [0.5, -1.0, 2.0];
        using var c = Tensor.FromArray(new[] { 2.0, -3.0, 0.5 });
        using var x = Leaf(xv, 3);
        using var y = x * 2.0;
        y.AddInPlace(1.0);                       // y = 2x + 1
        Assert.That(y.GradFn!.Op, Is.EqualTo("Affine"));
        y.MulInPlace(3.0);                       // y = 6x + 3
        y.MulInPlace(c);                         // y = c·(6x + 3)
        y.SubInPlace(x);                         // y = c·(6x + 3) − x
        BackwardOnes(y);
        var exp = new double[3];
        var cv = c.ToArray<double>();
        for (int i = 0; i < 3; i++) exp[i] = 6 * cv[i] - 1;
        Ref.AssertClose(G(x), exp, DType.Float64, "in-place chain");
        x.Grad!.Dispose();

        // A leaf that does not require grad joins the graph through an in-place op.
        using var w = Leaf([1.0, 2.0, 3.0], 3);
        using var acc = Tensor.Zeros([3], DType.Float64);
        acc.AddInPlace(w);
        Assert.That(acc.IsLeaf, Is.False);
        Assert.That(acc.GradFn!.ToString(), Is.EqualTo("AddBackward"));
        using (var t = acc * acc) BackwardOnes(t);
        Ref.AssertClose(G(w), [2.0, 4.0, 6.0], DType.Float64, "acc += w");
        w.Grad!.Dispose();

        GradCheck.Check(v =>
        {
            var t = v[0] * 2.0;
            t.AddInPlace(1.0);
            t.SubInPlace(v[1]);
            t.MulInPlace(-0.5);
            t.MulInPlace(v[1]);
            return t;
        }, [Leaf(Rand(new Random(3), 6), 2, 3), Leaf(Rand(new Random(4), 3), 3)]);
    }

    [Test]
    public void SavedValuesOutliveTheUsersHandles()
    {
        double[] xv = [1.0, -2.0, 0.5];
        using var x = Leaf(xv, 3);
        var h = x * 3.0;
        using var y = h * h;     // saves h
        h.Dispose();
        BackwardOnes(y);
        Ref.AssertClose(G(x), xv.Select(v => 18 * v).ToArray(), DType.Float64, "d(9x²)");
        x.Grad!.Dispose();
    }

    [Test]
    public void NoGradRecordsNothingAndDetachCutsTheGraph()
    {
        using var x = Leaf([1.0, 2.0], 2);
        using (GradMode.NoGrad())
        {
            Assert.That(GradMode.IsEnabled, Is.False);
            using var y = x * 2.0;
            Assert.That(y.RequiresGrad, Is.False);
            Assert.That(y.GradFn, Is.Null);
            Assert.That(y.IsLeaf, Is.True);
        }
        Assert.That(GradMode.IsEnabled, Is.True);
        using var d = x.Detach();
        Assert.That(d.RequiresGrad, Is.False);
        Assert.That(d.IsLeaf, Is.True);
        Assert.That(d.ToArray<double>(), Is.EqualTo(new[] { 1.0, 2.0 }));
        using var z = d * 2.0;
        Assert.That(z.RequiresGrad, Is.False);
        Assert.That(x.IsLeaf, Is.True);
        using var q = x * 2.0;
        Assert.That(q.IsLeaf, Is.False);
        Assert.That(q.RequiresGrad, Is.True);
        using var c = Tensor.Zeros([2]);
        Assert.That(c.IsLeaf, Is.True);
        Assert.That(c.RequiresGrad, Is.False);
    }

    [Test]
    public void GradFnNamesTheOp()
    {
        using var x = Leaf([1.0, 2.0, 3.0, 4.0], 2, 2);
        using var a = x * x;
        using var b = x.Exp();
        using var c = x.Pow(3);
        using var d = x.Pow(x);
        using var e = x.T;
        using var f = x.MatMul(x);
        using var g = x.Reshape(4);
        using var h = x + 1.0;
        Assert.That(a.GradFn!.ToString(), Is.EqualTo("MulBackward"));
        Assert.That(b.GradFn!.ToString(), Is.EqualTo("ExpBackward"));
        Assert.That(c.GradFn!.ToString(), Is.EqualTo("PowScalarBackward"));
        Assert.That(d.GradFn!.ToString(), Is.EqualTo("PowBackward"));
        Assert.That(e.GradFn!.ToString(), Is.EqualTo("TransposeBackward"));
        Assert.That(f.GradFn!.ToString(), Is.EqualTo("MatMulBackward"));
        Assert.That(g.GradFn!.ToString(), Is.EqualTo("ReshapeBackward"));
        Assert.That(h.GradFn!.ToString(), Is.EqualTo("AffineBackward"));
        Assert.That(x.GradFn, Is.Null);
    }

    [Test]
    public void BackwardErrors()
    {
        using var x = Leaf([1.0, 2.0], 2);
        using var y = x * 2.0;
        var e = Assert.Catch<EngineException>(() => y.Backward())!;
        Assert.That(e.Message, Does.Contain("grad can be implicitly created only for scalar outputs"));
        using var c = Tensor.Zeros([1]);
        e = Assert.Catch<EngineException>(() => c.Backward())!;
        Assert.That(e.Message, Does.Contain("does not require grad and does not have a grad_fn"));
        using var wrong = Tensor.Ones([3], DType.Float64);
        Assert.Throws<ShapeException>(() => y.Backward(wrong));
        Assert.That(x.Grad, Is.Null, "failed calls leave Grad alone");
    }

    [Test]
    public void BackwardOnALeafAndWithACastGradient()
    {
        using var x = Leaf([1.0, 2.0], 2);
        using var g = Tensor.FromArray(new float[] { 3f, -1f });
        x.Backward(g);
        Assert.That(x.Grad!.DType, Is.EqualTo(DType.Float64));
        Assert.That(G(x), Is.EqualTo(new[] { 3.0, -1.0 }));
        x.Grad!.Dispose();
    }

    // Test-only definitions: a backward that returns an unrelated shape, one with a wrong count, one that doubles.
    sealed class BadShapeBackward : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad) => [Tensor.Zeros([7], DType.Float64)];
    }

    sealed class BadCountBackward : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad) => [null, null];
    }

    sealed class BroadcastBackward : GradFunction
    {
        // A gradient at a shape the input broadcasts to ([2, 2] for an input [2]) and one it broadcasts from ([1]).
        protected internal override Tensor?[] Backward(Tensor grad) => [Tensor.Ones([3, 2], DType.Float64), Tensor.Full([1], 5.0, DType.Float64)];
    }

    [Test]
    public void BackwardResultsAreValidatedAndReducedToTheInputShape()
    {
        using var x = Leaf([1.0, 2.0], 2);
        foreach (var (fn, name, message) in new (GradFunction, string, string)[]
            { (new BadShapeBackward(), "BadShape", "shape [7]"), (new BadCountBackward(), "BadCount", "2 gradients for 1 inputs") })
        {
            using var y = x.Detach().RecordCustom(fn, x);
            Assert.That(y.GradFn!.Op, Is.EqualTo(name));
            var e = Assert.Catch<EngineException>(() => BackwardOnes(y))!;
            Assert.That(e.Message, Does.Contain(name + "Backward"));
            Assert.That(e.Message, Does.Contain(message));
        }
        using var z = x * 2.0;
        Assert.Throws<EngineException>(() => z.RecordCustom(new BadShapeBackward(), x), "already has a grad_fn");

        // The executor sums a gradient at a broadcast shape down to its input and broadcasts a kept-dims one up.
        using var w = Leaf([1.0, 1.0, 1.0], 3);
        using (var b = x.Detach().RecordCustom(new BroadcastBackward(), x, w)) BackwardOnes(b);
        Assert.That(G(x), Is.EqualTo(new[] { 3.0, 3.0 }));
        Assert.That(G(w), Is.EqualTo(new[] { 5.0, 5.0, 5.0 }));
        x.Grad!.Dispose(); w.Grad!.Dispose();
    }

    [Test]
    public void DeepGraphsDoNotOverflowTheStack()
    {
        using var x = Leaf([1.0], 1);
        using var scope = Tensor.NewScope();
        var y = x;
        for (int i = 0; i < 10000; i++) y = y * 1.0001;
        BackwardOnes(y);
        Assert.That(G(x)[0], Is.EqualTo(Math.Pow(1.0001, 10000)).Within(1e-9).Percent);
        x.Grad!.Dispose();
    }

    [Test]
    public void MixedDTypeGraphsGiveEachLeafItsOwnDType()
    {
        float[] xv = [0.5f, -2f];
        double[] wv = [3.0, 0.25];
        using var x = Tensor.FromArray(xv, [2], requiresGrad: true);
        using var w = Leaf(wv, 2);
        using var y = x * w;                       // float64
        Assert.That(y.DType, Is.EqualTo(DType.Float64));
        BackwardOnes(y);
        Assert.That(x.Grad!.DType, Is.EqualTo(DType.Float32));
        Assert.That(w.Grad!.DType, Is.EqualTo(DType.Float64));
        Ref.AssertClose(G(x), wv, DType.Float32, "dx");
        Ref.AssertClose(G(w), xv.Select(v => (double)v).ToArray(), DType.Float64, "dw");
        x.Grad!.Dispose(); w.Grad!.Dispose();
    }

    [Test]
    public void HalfPrecisionGradientsMatchAReference()
    {
        var rng = new Random(11);
        foreach (var dt in new[] { DType.Float32, DType.Float16, DType.BFloat16 })
        {
            var xv = Ref.Random(rng, 6, dt, -1.5, 1.5);
            var bv = Ref.Random(rng, 3, dt);
            using var x = Layouts.Make(xv, [2, 3], dt, Layouts.Kind.Transposed);
            x.RequiresGrad = true;
            using var b = Layouts.Make(bv, [3], dt, Layouts.Kind.Contiguous);
            b.RequiresGrad = true;
            using var t = x.Tanh();
            using var y = t * b;                      // dy/dx = (1 − tanh²x)·b, dy/db = Σ_rows tanh x
            BackwardOnes(y);
            var ex = new double[6]; var eb = new double[3];
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 3; j++)
                {
                    double th = Math.Tanh(xv[i * 3 + j]);
                    ex[i * 3 + j] = (1 - th * th) * bv[j];
                    eb[j] += Ref.RoundTo(th, dt);
                }
            Assert.That(x.Grad!.DType, Is.EqualTo(dt));
            Assert.That(x.Grad!.Shape, Is.EqualTo(new[] { 2, 3 }));
            Ref.AssertClose(G(x), ex, dt, $"dx {dt}", scale: 4);
            Ref.AssertClose(G(b), eb, dt, $"db {dt}", scale: 4);
            x.Grad!.Dispose(); b.Grad!.Dispose();
        }
    }

    // ---------------------------------------------------------------- hooks and retained gradients

    [Test]
    public void TensorHooksSeeAndReplaceGradients()
    {
        double[] xv = [1.0, -1.0, 2.0];
        using var x = Leaf(xv, 3);
        using var y = x * 2.0;
        double[]? seenAtY = null, seenAtX = null;
        y.RegisterHook(g => { seenAtY = g.ToArray<double>(); return g * 10.0; });
        x.RegisterHook(g => { seenAtX = g.ToArray<double>(); return null; });
        using var z = y * y;                      // dz/dy = 2y
        BackwardOnes(z);
        var yv = xv.Select(v => 2 * v).ToArray();
        Ref.AssertClose(seenAtY!, yv.Select(v => 2 * v).ToArray(), DType.Float64, "hook input at y");
        var ex = yv.Select(v => 2 * v * 10 * 2).ToArray();
        Ref.AssertClose(seenAtX!, ex, DType.Float64, "hook input at x");
        Ref.AssertClose(G(x), ex, DType.Float64, "x.Grad after the y hook");
        x.Grad!.Dispose();

        using var leaf = Leaf([1.0], 1);
        leaf.RegisterHook(g => Tensor.Ones([2], DType.Float64));
        using var w = leaf * 3.0;
        Assert.Throws<ShapeException>(() => BackwardOnes(w), "a hook must keep the shape");
        using var plain = Tensor.Zeros([1]);
        Assert.Catch<EngineException>(() => plain.RegisterHook(g => null));
    }

    [Test]
    public void NodeHooksRunBeforeTheRule()
    {
        using var x = Leaf([1.0, 2.0], 2);
        using var y = x * 3.0;
        y.GradFn!.Hooks = [g => g * 2.0];
        BackwardOnes(y);
        Assert.That(G(x), Is.EqualTo(new[] { 6.0, 6.0 }));
        x.Grad!.Dispose();
    }

    [Test]
    public void RetainGradKeepsANonLeafsGradient()
    {
        double[] xv = [0.5, -2.0];
        using var x = Leaf(xv, 2);
        using var y = x * 3.0;
        using var h = y + 1.0;
        y.RetainGrad();
        Assert.That(y.RetainsGrad, Is.True);
        using var z = h * h;                      // dz/dy = 2(y + 1)
        BackwardOnes(z);
        var ey = xv.Select(v => 2 * (3 * v + 1)).ToArray();
        Ref.AssertClose(G(y), ey, DType.Float64, "y.Grad");
        Assert.That(h.Grad, Is.Null, "not retained");
        Ref.AssertClose(G(x), ey.Select(v => 3 * v).ToArray(), DType.Float64, "x.Grad");
        x.RetainGrad(); // a leaf: no-op
        Assert.That(x.RetainsGrad, Is.False);
        y.Grad!.Dispose(); x.Grad!.Dispose();
    }

    // ---------------------------------------------------------------- functional gradients

    [Test]
    public void GradientsGradReturnsWithoutTouchingGrad()
    {
        double[] xv = [1.0, -3.0, 0.5];
        using var x = Leaf(xv, 3);
        using var unused = Leaf([1.0], 1);
        using var h = x * 3.0;
        using var y = h * h;                      // 9x²
        using var gy = Tensor.FromArray(new[] { 1.0, 2.0, -1.0 });
        var g = Gradients.Grad([y], [x, h, unused], [gy], retainGraph: true, allowUnused: true);
        var gyv = gy.ToArray<double>();
        Ref.AssertClose(g[0]!.ToArray<double>(), xv.Select((v, i) => 18 * v * gyv[i]).ToArray(), DType.Float64, "dx");
        Ref.AssertClose(g[1]!.ToArray<double>(), xv.Select((v, i) => 6 * v * gyv[i]).ToArray(), DType.Float64, "dh");
        Assert.That(g[2], Is.Null);
        Assert.That(x.Grad, Is.Null);
        Assert.That(h.Grad, Is.Null);
        foreach (var t in g) t?.Dispose();

        var e = Assert.Catch<EngineException>(() => Gradients.Grad([y], [unused], [gy], retainGraph: true))!;
        Assert.That(e.Message, Does.Contain("allowUnused"));
        using var c = Tensor.Zeros([1]);
        Assert.Catch<EngineException>(() => Gradients.Grad([y], [c], [gy], retainGraph: true));

        // The graph was retained: a normal Backward still works afterwards.
        y.Backward(gy);
        Ref.AssertClose(G(x), xv.Select((v, i) => 18 * v * gyv[i]).ToArray(), DType.Float64, "Backward after Grad");
        x.Grad!.Dispose();
    }

    [Test]
    public void GradientsGradSumsOverSeveralOutputs()
    {
        using var x = Leaf([2.0], 1);
        using var a = x * x;                     // 2x
        using var b = x * 5.0;                   // 5
        var g = Gradients.Grad([a, b], [x]);
        Assert.That(g[0]!.ToArray<double>(), Is.EqualTo(new[] { 9.0 }));
        g[0]!.Dispose();
    }

    // ---------------------------------------------------------------- custom functions

    sealed class Cube : CustomFunction
    {
        protected override Tensor Forward(FunctionContext ctx, params Tensor[] inputs)
        {
            ctx.SaveForBackward(inputs[0]);
            using var sq = inputs[0] * inputs[0];
            return sq * inputs[0];
        }

        protected override Tensor?[] Backward(FunctionContext ctx, Tensor grad)
        {
            var x = ctx.SavedTensors[0];
            using var sq = x * x;
            using var t = sq * 3.0;
            return [grad * t];
        }
    }

    // a·alpha + b, alpha kept in the context's state; no gradient for b when it does not need one.
    sealed class ScaledAdd(double alpha) : CustomFunction
    {
        public override string Name => "TestScaledAdd";

        public bool[]? Needs { get; private set; }

        protected override Tensor Forward(FunctionContext ctx, params Tensor[] inputs)
        {
            ctx.State["alpha"] = alpha;
            using var s = inputs[0] * alpha;
            return s + inputs[1];
        }

        protected override Tensor?[] Backward(FunctionContext ctx, Tensor grad)
        {
            Needs = ctx.NeedsInputGrad;
            var a = (double)ctx.State["alpha"]!;
            return [grad * a, ctx.NeedsInputGrad[1] ? grad : null];
        }
    }

    sealed class Mul : CustomFunction
    {
        protected override Tensor Forward(FunctionContext ctx, params Tensor[] inputs) => inputs[0].Clone();
        protected override Tensor?[] Backward(FunctionContext ctx, Tensor grad) => [grad];
    }

    [Test]
    public void CustomFunctionsRecordTheirOwnBackward()
    {
        double[] xv = [0.5, -1.0, 2.0];
        using var x = Leaf(xv, 3);
        using var y = new Cube().Apply(x);
        Assert.That(y.GradFn!.ToString(), Is.EqualTo("CubeBackward"));
        Ref.AssertClose(y.ToArray<double>(), xv.Select(v => v * v * v).ToArray(), DType.Float64, "cube");
        BackwardOnes(y);
        Ref.AssertClose(G(x), xv.Select(v => 3 * v * v).ToArray(), DType.Float64, "3x²");
        x.Grad!.Dispose();
        GradCheck.Check(v => new Cube().Apply(v[0]), [Leaf(Rand(new Random(5), 6), 2, 3)]);

        using var b = Tensor.FromArray(new[] { 1.0, 1.0, 1.0 });
        var f = new ScaledAdd(2.5);
        using var z = f.Apply(x, b);
        BackwardOnes(z);
        Assert.That(f.Needs, Is.EqualTo(new[] { true, false }));
        Assert.That(G(x), Is.EqualTo(new[] { 2.5, 2.5, 2.5 }));
        x.Grad!.Dispose();
        GradCheck.Check(v => new ScaledAdd(-1.5).Apply(v[0], v[1]), [Leaf(Rand(new Random(6), 4), 4), Leaf(Rand(new Random(7), 4), 4)]);

        using var c = Tensor.FromArray(new[] { 2.0 });
        using var noGraph = new Cube().Apply(c);
        Assert.That(noGraph.GradFn, Is.Null);
        Assert.That(noGraph.ToArray<double>(), Is.EqualTo(new[] { 8.0 }));

        // An op's identity is its definition's type, not its name: a custom function may share a built-in's name.
        using (var m = new Mul().Apply(x))
        {
            Assert.That(m.GradFn!.ToString(), Is.EqualTo("MulBackward"));
            BackwardOnes(m);
        }
        using (var builtIn = x * x) Assert.That(builtIn.GradFn!.Function, Is.Not.InstanceOf<CustomFunction>());
        Assert.That(G(x), Is.EqualTo(new[] { 1.0, 1.0, 1.0 }));
        x.Grad!.Dispose();
    }

    // ---------------------------------------------------------------- leaks

    [Test]
    public void TrainingLikeLoopReturnsEveryStorage()
    {
        static long Settle()
        {
            for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
            return Storage.LiveCount(DeviceType.Cpu);
        }
        var rng = new Random(8);
        long before = Settle();
        var w = Leaf(Rand(rng, 12), 4, 3);
        var bias = Leaf(Rand(rng, 3), 3);
        var xin = Tensor.FromArray(Rand(rng, 10), [2, 5]);
        for (int step = 0; step < 20; step++)
        {
            using var scope = Tensor.NewScope();
            using var x = xin.Narrow(1, 0, 4);
            var h = x.MatMul(w) + bias;
            var a = h.Relu().Maximum(h * 0.1);
            a.RegisterHook(g => g * 1.0);
            var r = a.T.Reshape(6);
            r.AddInPlace(1.0);
            var c = new Cube().Apply(r);
            using var mask = c.Gt(0.0);
            var y = Tensor.Where(mask, c, r).Pow(2);
            var ones = y.OnesLike();
            if (step % 3 == 0)
            {
                var gs = Gradients.Grad([y], [w, h], [ones], retainGraph: true);
                foreach (var g in gs) g!.Dispose();
            }
            h.RetainGrad();
            y.Backward(ones);
            h.Grad!.Dispose();
        }
        w.Grad!.Dispose(); bias.Grad!.Dispose();
        w.Dispose(); bias.Dispose(); xin.Dispose();
        Assert.That(Settle(), Is.EqualTo(before));
    }

    // ---------------------------------------------------------------- gradient checks: unary

    static readonly (string Op, Func<Tensor, Tensor> F, string Domain)[] UnaryCases =
    [
        ("Neg", x => x.Neg(), "any"),
        ("Neg", x => -x, "any"),
        ("Abs", x => x.Abs(), "away"),
        ("Exp", x => x.Exp(), "any"),
        ("Log", x => x.Log(), "pos"),
        ("Sqrt", x => x.Sqrt(), "pos"),
        ("Rsqrt", x => x.Rsqrt(), "pos"),
        ("Sin", x => x.Sin(), "any"),
        ("Cos", x => x.Cos(), "any"),
        ("Tanh", x => x.Tanh(), "any"),
        ("Sigmoid", x => x.Sigmoid(), "any"),
        ("Relu", x => x.Relu(), "away"),
        ("GeluTanh", x => x.Gelu(approximateTanh: true), "any"),
        ("Gelu", x => x.Gelu(), "any"),
        ("Silu", x => x.Silu(), "any"),
        ("Erf", x => x.Erf(), "any"),
        ("PowScalar", x => x.Pow(3), "any"),
        ("PowScalar", x => x.Pow(2.5), "pos"),
        ("PowScalar", x => x.Pow(-1.5), "pos"),
        ("PowScalar", x => x.Square(), "any"),
        ("Clamp", x => x.Clamp(-0.5, 0.7), "clamp"),
        ("Clamp", x => x.Clamp(min: 0.3), "clamp"),
        ("Clamp", x => x.Clamp(max: -0.3), "clamp"),
        ("Affine", x => x * 3.0, "any"),
        ("Affine", x => x + 2.0, "any"),
        ("Affine", x => 1.5 - x, "any"),
        ("Affine", x => x - 0.25, "any"),
    ];

    static double[] Domain(Random rng, int n, string domain)
    {
        switch (domain)
        {
            case "pos": return Rand(rng, n, 0.3, 2.5);
            case "away": return RandAway(rng, n);
            case "clamp":
                // Keep clear of the bounds ±0.3, −0.5, 0.7 where the derivative jumps.
                var r = Rand(rng, n, -1.5, 1.5);
                for (int i = 0; i < n; i++)
                    foreach (var b in new[] { -0.5, -0.3, 0.3, 0.7 })
                        if (Math.Abs(r[i] - b) < 0.05) r[i] = b + 0.1;
                return r;
            default: return Rand(rng, n);
        }
    }

    [Test]
    public void EveryUnaryOpPassesGradCheck()
    {
        var rng = new Random(21);
        var covered = new HashSet<string>();
        foreach (var (op, f, domain) in UnaryCases)
            foreach (var shape in new[] { new[] { 3, 4 }, new[] { 2, 3, 2 }, new[] { 5 }, Array.Empty<int>(), new[] { 2, 0 } })
            {
                using var x = Leaf(Domain(rng, Ref.Numel(shape), domain), shape);
                using (var y = f(x))
                    Assert.That(y.GradFn!.Op, Is.EqualTo(op), "the recorded op name");
                var r = GradCheck.TryCheck(v => f(v[0]), [x]);
                Assert.That(r.Passed, Is.True, $"{op} {Shape.Format(shape)}: {r.Message}");
                covered.Add(op);
            }
        Assert.That(covered, Has.Count.EqualTo(18));
    }

    [Test]
    public void CastsInsideTheGraphAreDifferentiable()
    {
        using var x = Leaf([0.5, 1.5], 2);
        using var f = x.To(DType.Float32);
        using var e = f.Exp();
        using var d = e.To(DType.Float64);
        Assert.That(f.GradFn!.Op, Is.EqualTo("Cast"));
        BackwardOnes(d);
        Ref.AssertClose(G(x), [Math.Exp(0.5), Math.Exp(1.5)], 1e-6, 1e-6, "exp through float32");
        x.Grad!.Dispose();
    }

    // ---------------------------------------------------------------- gradient checks: binary

    static readonly (string Op, Func<Tensor, Tensor, Tensor> F, string DomainA, string DomainB)[] BinaryCases =
    [
        ("Add", (a, b) => a + b, "any", "any"),
        ("Add", (a, b) => a.Add(b, 2.5), "any", "any"),
        ("Sub", (a, b) => a - b, "any", "any"),
        ("Mul", (a, b) => a * b, "any", "any"),
        ("Div", (a, b) => a / b, "any", "away"),
        ("Pow", (a, b) => a.Pow(b), "pos", "any"),
        ("Maximum", (a, b) => a.Maximum(b), "any", "any"),
        ("Minimum", (a, b) => a.Minimum(b), "any", "any"),
    ];

    static readonly (int[] A, int[] B)[] BroadcastPairs =
    [
        ([3, 1, 4], [2, 4]),
        ([2, 3], []),
        ([], [2, 3]),
        ([4], [4]),
        ([2, 1], [1, 3]),
        ([2, 3, 1], [3, 2]),
    ];

    [Test]
    public void EveryBinaryOpPassesGradCheckWithBroadcasting()
    {
        var rng = new Random(22);
        foreach (var (op, f, da, db) in BinaryCases)
            foreach (var (sa, sb) in BroadcastPairs)
            {
                using var a = Leaf(Domain(rng, Ref.Numel(sa), da), sa);
                using var b = Leaf(Domain(rng, Ref.Numel(sb), db), sb);
                var r = GradCheck.TryCheck(v => f(v[0], v[1]), [a, b]);
                Assert.That(r.Passed, Is.True, $"{op} {Shape.Format(sa)} {Shape.Format(sb)}: {r.Message}");
                // Only one operand differentiated: the other edge is dead.
                using var bc = Tensor.FromArray(b.ToArray<double>(), sb);
                r = GradCheck.TryCheck(v => f(v[0], v[1]), [a, bc]);
                Assert.That(r.Passed, Is.True, $"{op} {Shape.Format(sa)} {Shape.Format(sb)} (b constant): {r.Message}");
            }
    }

    [Test]
    public void OperatorsWithScalarsOnTheLeftPassGradCheck()
    {
        var rng = new Random(23);
        using var x = Leaf(RandAway(rng, 6), 2, 3);
        GradCheck.Check(v => 2.0 / v[0], [x]);
        GradCheck.Check(v => 3.0 - v[0] * v[0], [x]);
        using var p = Leaf(Rand(rng, 6, 0.5, 2), 2, 3);
        using var e = Tensor.Scalar(1.7, DType.Float64);
        GradCheck.Check(v => e.Pow(v[0]), [p]);                       // d(cˣ)/dx through the binary Pow
        using var z = Leaf([0.0, 0.0, 2.0], 3);
        using var ez = Leaf([0.0, 2.0, 0.0], 3);
        using var y = z.Pow(ez);
        BackwardOnes(y);
        Assert.That(G(z), Is.EqualTo(new[] { 0.0, 0.0, 0.0 }), "b = 0 gives 0, 0^(b-1)·b at b=2 gives 0");
        Assert.That(G(ez), Is.EqualTo(new[] { 0.0, 0.0, Math.Log(2) }), "a = 0, b ≥ 0 gives 0, not NaN");
        z.Grad!.Dispose(); ez.Grad!.Dispose();
    }

    [Test]
    public void MaximumAndMinimumSplitTiesHalfAndHalf()
    {
        foreach (var max in new[] { true, false })
        {
            using var a = Leaf([1.0, 2.0, 3.0], 3);
            using var b = Leaf([1.0, 5.0, 0.0], 3);
            using var y = max ? a.Maximum(b) : a.Minimum(b);
            BackwardOnes(y);
            Assert.That(G(a), Is.EqualTo(max ? new[] { 0.5, 0.0, 1.0 } : new[] { 0.5, 1.0, 0.0 }));
            Assert.That(G(b), Is.EqualTo(max ? new[] { 0.5, 1.0, 0.0 } : new[] { 0.5, 0.0, 1.0 }));
            a.Grad!.Dispose(); b.Grad!.Dispose();
        }
    }

    [Test]
    public void WherePassesGradCheck()
    {
        var rng = new Random(24);
        using var cond = Tensor.FromArray(new[] { true, false, true }, [3, 1]);
        using var a = Leaf(Rand(rng, 12), 3, 4);
        using var b = Leaf(Rand(rng, 4), 4);
        GradCheck.Check(v => Tensor.Where(cond, v[0], v[1]), [a, b]);
        using var s = Leaf([0.7], []);
        GradCheck.Check(v => Tensor.Where(cond, v[0], v[1]), [s, b]);
        GradCheck.Check(v => v[0].MaskedFill(cond, 2.0), [a]);

        // Hand check: a gets the gradient where the condition holds, b (broadcast over rows) the rest, summed.
        using var y = Tensor.Where(cond, a, b);
        BackwardOnes(y);
        var ea = new double[12];
        for (int i = 0; i < 3; i++) for (int j = 0; j < 4; j++) ea[i * 4 + j] = i != 1 ? 1 : 0;
        Assert.That(G(a), Is.EqualTo(ea));
        Assert.That(G(b), Is.EqualTo(new[] { 1.0, 1.0, 1.0, 1.0 }));
        a.Grad!.Dispose(); b.Grad!.Dispose();
    }

    // ---------------------------------------------------------------- gradient checks: views

    static readonly (string Name, int[] Shape, Func<Tensor, Tensor> F, bool NonContiguous)[] ViewCases =
    [
        ("Transpose", [2, 3, 4], x => x.Transpose(0, 2), true),
        ("Permute", [2, 3, 4], x => x.Permute(2, 0, 1), true),
        ("T matrix", [3, 4], x => x.T, true),
        ("T rank 3", [2, 3, 4], x => x.T, true),
        ("T vector", [4], x => x.T, true),
        ("Narrow", [2, 5, 3], x => x.Narrow(1, 1, 3), true),
        ("Slice step", [3, 7], x => x.Slice(1, 1, 7, 3), true),
        ("Slice negative", [6, 2], x => x.Slice(0, -4, -1, 2), true),
        ("Slice empty", [4, 3], x => x.Slice(0, 2, 2), true),
        ("Select", [2, 3, 4], x => x.Select(1, -1), true),
        ("Indexer", [3, 4, 5], x => x[1, 1..3, TensorIndex.Slice(.., 2)], true),
        ("Indexer newaxis", [3, 4], x => x[TensorIndex.NewAxis, .., 2], true),
        ("Unsqueeze", [3, 4], x => x.Unsqueeze(1), true),
        ("Squeeze", [3, 1, 4, 1], x => x.Squeeze(), true),
        ("Squeeze dim", [3, 1, 4], x => x.Squeeze(1), true),
        ("View", [2, 3, 4], x => x.View(6, 4), false),
        ("Reshape", [2, 3, 4], x => x.Reshape(4, -1), true),
        ("Flatten", [2, 3, 4], x => x.Flatten(), true),
        ("Flatten 1", [2, 3, 4], x => x.Flatten(1), true),
        ("Expand", [3, 1], x => x.Expand(2, 3, 4), true),
        ("Expand -1", [3, 1], x => x.Expand(-1, 5), true),
        ("ExpandAs", [4], x => { using var t = Tensor.Zeros([2, 4]); return x.ExpandAs(t); }, true),
        ("Contiguous", [3, 4], x => x.T.Contiguous(), true),
        ("Clone", [3, 4], x => x.Clone(), true),
        ("To same dtype", [3, 4], x => x.To(DType.Float64), true),
        ("FillInPlace", [3, 4], x => { var t = x * 2.0; t.FillInPlace(3.0); return t * x; }, true),
        ("CopyInPlace", [3, 4], x => { var t = x * 2.0; using var s = x.Exp(); t.CopyInPlace(s); return t * x; }, true),
        ("CopyInPlace broadcast", [4], x => { var t = Tensor.Zeros([3, 4], DType.Float64); t.CopyInPlace(x); return t; }, true),
    ];

    [Test]
    public void EveryViewOpPassesGradCheck()
    {
        var rng = new Random(25);
        foreach (var (name, shape, f, nc) in ViewCases)
        {
            using var x = Leaf(Rand(rng, Ref.Numel(shape)), shape);
            var r = GradCheck.TryCheck(v => f(v[0]), [x], checkNonContiguous: nc);
            Assert.That(r.Passed, Is.True, $"{name}: {r.Message}");
        }
    }

    [Test]
    public void CastRoundTripPassesGradCheckAndKeepsDTypes()
    {
        var rng = new Random(26);
        using var x = Leaf(Rand(rng, 6), 2, 3);
        // Through float32: the finite differences see float32 rounding, hence the larger step.
        GradCheck.Check(v => { using var f = v[0].To(DType.Float32); using var e = f * 3f; return e.To(DType.Float64); }, [x], eps: 1e-3, atol: 1e-4, rtol: 1e-3);
        using var h = x.To(DType.Float16);
        using var y = h.To(DType.Float64);
        BackwardOnes(y);
        Assert.That(G(x), Is.EqualTo(Enumerable.Repeat(1.0, 6).ToArray()));
        Assert.That(x.Grad!.DType, Is.EqualTo(DType.Float64));
        x.Grad!.Dispose();
    }

    [Test]
    public void SliceAndSelectScatterIntoZeros()
    {
        using var x = Leaf([0, 1, 2, 3, 4, 5, 6.0], 7);
        using var s = x.Slice(0, 1, 7, 2);        // elements 1, 3, 5
        using var g = Tensor.FromArray(new[] { 10.0, 20.0, 30.0 });
        s.Backward(g);
        Assert.That(G(x), Is.EqualTo(new[] { 0, 10, 0, 20, 0, 30, 0.0 }));
        x.Grad!.Dispose();
        using var m = Leaf([1, 2, 3, 4, 5, 6.0], 2, 3);
        using var c = m.Select(1, 2);
        using var gc = Tensor.FromArray(new[] { 7.0, 8.0 });
        c.Backward(gc);
        Assert.That(G(m), Is.EqualTo(new[] { 0, 0, 7, 0, 0, 8.0 }));
        m.Grad!.Dispose();
    }

    // ---------------------------------------------------------------- gradient checks: matmul

    static readonly (int[] A, int[] B, bool TransposeA, bool TransposeB)[] MatMulCases =
    [
        ([4], [4], false, false),
        ([3], [3, 2], false, false),
        ([2, 3], [3], false, false),
        ([2, 3], [3, 4], false, false),
        ([3, 2], [4, 3], true, true),
        ([2, 2, 3], [3, 4], false, false),
        ([2, 3, 2], [3, 4], true, false),
        ([2, 3], [2, 3, 4], false, false),
        ([2, 1, 2, 3], [3, 3, 4], false, false),
        ([3], [2, 3, 4], false, false),
        ([2, 2, 3], [3], false, false),
        ([2, 2, 3], [2, 4, 3], false, true),
        ([2, 0], [0, 3], false, false),
    ];

    [Test]
    public void MatMulPassesGradCheckInEveryForm()
    {
        var rng = new Random(27);
        foreach (var (sa, sb, ta, tb) in MatMulCases)
        {
            using var a = Leaf(Rand(rng, Ref.Numel(sa)), sa);
            using var b = Leaf(Rand(rng, Ref.Numel(sb)), sb);
            var r = GradCheck.TryCheck(v =>
            {
                var x = ta ? v[0].Transpose(-1, -2) : v[0];
                var y = tb ? v[1].Transpose(-1, -2) : v[1];
                return x.MatMul(y);
            }, [a, b]);
            Assert.That(r.Passed, Is.True, $"{Shape.Format(sa)}{(ta ? "ᵀ" : "")} · {Shape.Format(sb)}{(tb ? "ᵀ" : "")}: {r.Message}");
        }
    }

    [Test]
    public void MatMulGradientMatchesAHandWrittenReference()
    {
        // dA = G·Bᵀ, dB = Aᵀ·G for A [2,3], B [3,2], G all ones.
        double[] av = [1, 2, 3, 4, 5, 6], bv = [1, -1, 0, 2, 3, 1];
        using var a = Leaf(av, 2, 3);
        using var b = Leaf(bv, 3, 2);
        using var y = a.MatMul(b);
        BackwardOnes(y);
        var ea = new double[6]; var eb = new double[6];
        for (int i = 0; i < 2; i++) for (int k = 0; k < 3; k++) for (int j = 0; j < 2; j++) { ea[i * 3 + k] += bv[k * 2 + j]; eb[k * 2 + j] += av[i * 3 + k]; }
        Assert.That(G(a), Is.EqualTo(ea));
        Assert.That(G(b), Is.EqualTo(eb));
        a.Grad!.Dispose(); b.Grad!.Dispose();
    }

    // ---------------------------------------------------------------- the checker itself

    sealed class WrongBackward : GradFunction
    {
        protected internal override Tensor?[] Backward(Tensor grad) => [grad.Mul(2.0)];
    }

    [Test]
    public void GradCheckCatchesAWrongRule()
    {
        static Tensor F(Tensor[] v)
        {
            Tensor y;
            using (GradMode.NoGrad()) y = v[0].Mul(1.0);
            return y.RecordCustom(new WrongBackward(), v[0]);
        }
        using var x = Leaf([0.5, -1.0, 2.0], 3);
        var r = GradCheck.TryCheck(F, [x]);
        Assert.That(r.Passed, Is.False);
        Assert.That(r.Message, Does.Contain("input 0"));
        Assert.That(r.MaxAbsError, Is.GreaterThan(0.01));
        var e = Assert.Throws<GradCheckException>(() => GradCheck.Check(F, [x]))!;
        Assert.That(e.Message, Does.Contain("worst at [").And.Contain("analytic").And.Contain("GradCheck"));
        Assert.That(x.Grad, Is.Null, "the inputs' Grad is never touched");

        using var f32 = Tensor.FromArray(new[] { 1f }, [1], requiresGrad: true);
        Assert.Throws<DTypeException>(() => GradCheck.Check(v => v[0] * 2f, [f32]));
        using var c = Tensor.FromArray(new[] { 1.0 });
        Assert.Catch<EngineException>(() => GradCheck.Check(v => v[0] * 2.0, [c]));
    }
}

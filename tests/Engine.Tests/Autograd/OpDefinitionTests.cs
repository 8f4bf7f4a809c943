using System.Reflection;
using Engine.Amp;
using Engine.Autograd;
using Engine.Graph;
using Engine.Ops;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Autograd;

/// <summary>
/// The seam between ops, their autograd definitions and the autocast policy: every op the engine records has a typed
/// definition with its own backward, and each device type's policy table has a decision on record for each
/// (InputType included).
/// </summary>
public class OpDefinitionTests
{
    static readonly Assembly Tensors = typeof(Tensor).Assembly;

    static readonly DeviceType[] Devices = Enum.GetValues<DeviceType>();

    static void AssertListed(Type key, string what)
    {
        foreach (var d in Devices)
            Assert.That(AutocastPolicy.For(d).ContainsKey(key), Is.True, $"{what} has no autocast category in AutocastPolicy's {d} table");
    }

    // The policy's key of a recorded definition: its own type, or the op struct of the generic unary definition.
    static Type PolicyKey(GradFunction f)
    {
        var t = f.GetType();
        return t.IsGenericType && t.GetGenericTypeDefinition() == typeof(Tensor.UnaryBackward<>) ? t.GetGenericArguments()[0] : t;
    }

    static IEnumerable<Type> Definitions() => Tensors.GetTypes().Where(t => typeof(GradFunction).IsAssignableFrom(t) && !t.IsAbstract);

    [Test]
    public void EveryDefinitionOverridesBackwardAndHasAnAutocastCategory()
    {
        var defs = Definitions().ToList();
        Assert.That(defs, Has.Count.GreaterThan(30), "the reflection found the definitions");
        foreach (var t in defs)
        {
            var backward = t.GetMethod("Backward", BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public, [typeof(Tensor)]);
            // Its own, or a shared base's (LayerNorm and RmsNorm share NormalizationBackward's): never the abstract slot.
            Assert.That(backward?.DeclaringType, Is.Not.Null.And.Not.EqualTo(typeof(GradFunction)), $"{t.Name} defines a Backward");
            Assert.That(typeof(GradFunction).IsAssignableFrom(backward!.DeclaringType), Is.True, t.Name);
            if (t.IsGenericTypeDefinition) continue; // UnaryBackward<TOp>: keyed by the op struct, checked below
            AssertListed(t, t.Name);
        }
        var unaryOps = Tensors.GetTypes().Where(t => t.IsValueType && typeof(IDifferentiableUnaryOp).IsAssignableFrom(t) && !t.IsGenericType).ToList();
        Assert.That(unaryOps, Has.Count.GreaterThanOrEqualTo(17));
        foreach (var op in unaryOps)
            AssertListed(op, $"the unary op {op.Name}");
    }

    [Test]
    public void ThePolicyNamesOnlyOps_AndEveryTableTheSameOps()
    {
        var keys = AutocastPolicy.Cuda.Keys.ToHashSet();
        foreach (var d in Devices)
            Assert.That(AutocastPolicy.For(d).Keys, Is.EquivalentTo(keys), $"the {d} table lists the same ops as the CUDA table");
        Assert.That(AutocastPolicy.For(DeviceType.Cpu), Is.SameAs(AutocastPolicy.Cpu));
        Assert.That(AutocastPolicy.For(DeviceType.Cuda), Is.SameAs(AutocastPolicy.Cuda));
        foreach (var key in keys)
        {
            bool definition = typeof(GradFunction).IsAssignableFrom(key);
            bool unary = key.IsValueType && typeof(IDifferentiableUnaryOp).IsAssignableFrom(key);
            bool composite = key.IsNested && key.DeclaringType == typeof(Tensor) && key.Name.EndsWith("Op", StringComparison.Ordinal);
            Assert.That(definition || unary || composite, Is.True, $"{key.FullName} is not an op definition, a unary op struct or a composite op's marker");
        }
    }

    // Runs a wide set of ops on inputs that require grad and walks the recorded graph: each node's definition is one
    // the policy knows, and its backward runs.
    [Test]
    public void EveryRecordedNodeIsAKnownDefinition()
    {
        using var scope = Tensor.NewScope();
        var rng = new Random(3);
        Tensor P(params int[] shape)
        {
            var v = new double[Ref.Numel(shape)];
            for (int i = 0; i < v.Length; i++) v[i] = rng.NextDouble() + 0.5;
            return Tensor.FromArray(v, shape, requiresGrad: true);
        }
        var x = P(2, 3);
        var w = P(3, 4);
        var idx = Tensor.FromArray(new long[] { 0, 2, 1 }, [3]);
        var target = Tensor.FromArray(new long[] { 1, 3 }, [2]);
        var ln = P(4);
        var outputs = new List<Tensor>
        {
            x.Exp(), x.Log(), x.Sqrt(), x.Rsqrt(), x.Sin(), x.Cos(), x.Tanh(), x.Sigmoid(), x.Relu(), x.Gelu(), x.Gelu(true),
            x.Silu(), x.Erf(), x.Abs(), x.Neg(), x.Pow(3), x.Clamp(0.6, 1.2), x + 1.0, x * 2.0,
            x + x, x - x, x * x, x / x, x.Pow(x), x.Maximum(x * 0.5), x.Minimum(x * 0.5), Tensor.Where(x.Gt(1.0), x, x * 3.0),
            x.Sum(), x.Mean(1), x.Amax(), x.Amin([0, 1]), x.Max(), x.Max(1).Values, x.Var(1), x.LogSumExp(1), x.Norm(3),
            x.Softmax(1), x.LogSoftmax(1), x.MatMul(w), x.MatMul(w).LayerNorm([4], ln, ln), x.MatMul(w).RmsNorm([4], ln),
            x.MatMul(w).CrossEntropy(target), x.MatMul(w).LogSoftmax(1).NllLoss(target), x.MseLoss(x * 0.5),
            x.Gather(1, Tensor.FromArray(new long[] { 0, 1 }, [2, 1])), x.IndexSelect(1, idx), Tensor.Embedding(idx, w),
            x.ScatterAdd(1, Tensor.FromArray(new long[] { 2, 0 }, [2, 1]), P(2, 1)), x.IndexAdd(1, idx, P(2, 3)),
            Tensor.Cat([x, x], 0), Tensor.Stack([x, x], 1), x.T, x.Permute(1, 0), x.Slice(1, 0, 2), x.Select(0, 1), x.Reshape(6),
            x.Unsqueeze(0).Expand(4, 2, 3), x.To(DType.Float32), x.Clone(), x.Contiguous(),
            Tensor.ScaledDotProductAttention(x, x, x.MatMul(w), isCausal: true),
            Tensor.Linear(x, w.T, ln, Activation.Gelu), Tensor.Linear(x, w.T),
        };
        var seen = new HashSet<Type>();
        var stack = new Stack<GradNode>(outputs.Select(o => o.GradFn!));
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            var key = PolicyKey(n.Function);
            if (seen.Add(key)) AssertListed(key, $"{n} ({n.Function.GetType().Name})");
            foreach (var e in n.Edges) if (e.Node is { } c) stack.Push(c);
        }
        Assert.That(seen, Has.Count.GreaterThan(40));
        // Every backward runs (the gradients of every recorded op reach the leaves).
        var loss = outputs.Select(o => o.DType == DType.Float32 ? o.To(DType.Float64).Sum() : o.Sum()).Aggregate((a, b) => a + b);
        loss.Backward();
        Assert.That(x.Grad, Is.Not.Null);
        Assert.That(x.Grad!.ToArray<double>().All(double.IsFinite), Is.True);
        x.Grad.Dispose(); w.Grad?.Dispose(); ln.Grad?.Dispose();
    }
}

using System.Reflection;
using Engine.Graph;

namespace Engine.Autograd;

/// <summary>
/// Marks a static method <c>Tensor?[] M(GradNode node, Tensor grad)</c> as the backward rule of the forward op(s)
/// named. The method returns one gradient per input of the node (in the forward call's order, each with that input's
/// shape and dtype), or null for an input that gets none. Rules live in Rules/, one file per op family, named as the
/// forward family (Unary.cs, Binary.cs, Reduce.cs, MatMul.cs, Index.cs, Norm.cs, Loss.cs, Views.cs).
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
public sealed class BackwardRuleAttribute(string op) : Attribute
{
    /// <summary>The forward op's name, as recorded in <see cref="GradNode.Op"/>.</summary>
    public string Op { get; } = op;
}

/// <summary>A backward rule: input gradients from the node and the gradient of its output.</summary>
public delegate Tensor?[] BackwardRule(GradNode node, Tensor grad);

/// <summary>The table of backward rules, found once by reflection over this assembly (and any registered later).</summary>
public static class BackwardRules
{
    static readonly Dictionary<string, BackwardRule> s_rules = Discover(typeof(BackwardRules).Assembly);
    static readonly Lock s_lock = new();

    static Dictionary<string, BackwardRule> Discover(Assembly asm)
    {
        var d = new Dictionary<string, BackwardRule>();
        foreach (var type in asm.GetTypes())
            foreach (var m in type.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic))
                foreach (var attr in m.GetCustomAttributes<BackwardRuleAttribute>())
                {
                    if (d.ContainsKey(attr.Op)) throw new InvalidOperationException($"two backward rules for {attr.Op}");
                    d[attr.Op] = m.CreateDelegate<BackwardRule>();
                }
        return d;
    }

    /// <summary>Adds or replaces the rule of an op (used by custom functions).</summary>
    public static void Register(string op, BackwardRule rule)
    {
        lock (s_lock) s_rules[op] = rule;
    }

    /// <summary>The rule of an op; throws naming the op when there is none.</summary>
    public static BackwardRule Get(string op)
    {
        lock (s_lock)
            return s_rules.TryGetValue(op, out var r) ? r
                : throw new EngineException(op + "Backward", $"the op {op} has no backward rule (it is not differentiable)");
    }

    /// <summary>True when an op has a rule.</summary>
    public static bool Has(string op) { lock (s_lock) return s_rules.ContainsKey(op); }

    /// <summary>All ops with a rule.</summary>
    public static IReadOnlyCollection<string> Ops { get { lock (s_lock) return [.. s_rules.Keys]; } }
}

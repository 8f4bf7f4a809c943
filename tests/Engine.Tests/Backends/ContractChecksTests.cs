using System.Reflection;
using Engine.Backends;
using NUnit.Framework;

namespace Engine.Tests.Backends;

/// <summary>
/// The backend contract's preconditions (ContractChecks) are Debug-only asserts: calls to them vanish from Release
/// builds, so these tests invoke them by reflection to check that each one refuses what it should, naming the op.
/// </summary>
public class ContractChecksTests
{
    static void Refuses<TException>(string method, params object?[] args) where TException : Exception
    {
        var m = typeof(ContractChecks).GetMethod(method)!;
        var e = Assert.Throws<TargetInvocationException>(() => m.Invoke(null, args))!;
        Assert.That(e.InnerException, Is.InstanceOf<TException>(), method);
        Assert.That(e.InnerException!.Message, Does.StartWith("Op:"), method);
    }

    static void Accepts(string method, params object?[] args) =>
        Assert.That(() => typeof(ContractChecks).GetMethod(method)!.Invoke(null, args), Throws.Nothing, method);

    [Test]
    public void EachPreconditionRefusesWhatTheFrontEndNeverPasses()
    {
        using var f = Tensor.Zeros([2, 3]);
        using var d = Tensor.Zeros([2, 3], DType.Float64);
        using var i = Tensor.Zeros([2, 3], DType.Int64);
        Refuses<DTypeException>("Int64", "Op", "the index", f.Storage);
        Accepts("Int64", "Op", "the index", i.Storage);
        Refuses<DTypeException>("SameDType", "Op", f.Storage, d.Storage, null);
        Refuses<DTypeException>("SameDType", "Op", f.Storage, f.Storage, d.Storage);
        Accepts("SameDType", "Op", f.Storage, f.Storage, f.Storage);
        Refuses<DTypeException>("Floating", "Op", DType.Int64);
        Accepts("Floating", "Op", DType.BFloat16);
        Refuses<DTypeException>("Accumulator", "Op", "dloss", i.Storage);
        Accepts("Accumulator", "Op", "dloss", d.Storage);
        Refuses<ShapeException>("Reduction", "Op", f.Layout, 3, null);
        Refuses<DTypeException>("Reduction", "Op", f.Layout, 1, f.Storage);
        Accepts("Reduction", "Op", f.Layout, 2, i.Storage);
        var l3 = new Layout([1, 2, 3], [0, 3, 1], 0);
        Refuses<ShapeException>("Gemm", "Op", f.Layout, l3, 1, 2, 3, 3);
        Refuses<ShapeException>("Gemm", "Op", l3, l3, 1, -2, 3, 3);
        Accepts("Gemm", "Op", l3, l3, 1, 2, 3, 3);
    }
}

using Engine.Graph;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Every error is of the engine's exception family, names the op and the offending shapes or dtypes, and is thrown
/// before anything is written: inputs keep their values and version.
/// </summary>
[TestFixture]
public class ErrorTests
{
    public sealed record ErrorCase(string Name, Func<Tensor[], object?> Act, Type Exception, string[] Mentions)
    {
        public override string ToString() => Name;
    }

    // Inputs: [0] float32 [2,3], [1] float32 [4], [2] int32 [2,3], [3] bool [2,3], [4] float64 0-d, [5] float32 [3,1] expanded to [3,4], [6] float16 [2,3] leaf requiring grad
    static Tensor[] Inputs()
    {
        var a = Tensor.FromArray(new[] { 1f, 2, 3, 4, 5, 6 }, [2, 3]);
        var b = Tensor.FromArray(new[] { 1f, 2, 3, 4 });
        var i = Tensor.FromArray(new[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        var m = Tensor.FromArray(new[] { true, false, true, false, true, false }, [2, 3]);
        var s = Tensor.Scalar(2.5, DType.Float64);
        using var col = Tensor.FromArray(new[] { 1f, 2, 3 }, [3, 1]);
        var e = col.Expand(3, 4);
        var g = Tensor.FromArray(new[] { (Half)1, (Half)2, (Half)3, (Half)4, (Half)5, (Half)6 }, [2, 3], requiresGrad: true);
        return [a, b, i, m, s, e, g];
    }

    static ErrorCase C(string name, Func<Tensor[], object?> act, Type ex, params string[] mentions) => new(name, act, ex, mentions);

    static readonly Type Shape = typeof(ShapeException), DTypeEx = typeof(DTypeException), Engine_ = typeof(EngineException);

    public static readonly ErrorCase[] Cases =
    [
        C("Add shapes", t => t[0] + t[1], Shape, "Add", "[2, 3]", "[4]"),
        C("Mul shapes", t => t[0].Mul(t[1]), Shape, "Mul", "[2, 3]", "[4]"),
        C("Sub shapes", t => t[1] - t[0], Shape, "Sub", "[4]", "[2, 3]"),
        C("Div shapes", t => t[0] / t[1], Shape, "Div", "[2, 3]", "[4]"),
        C("Pow shapes", t => t[0].Pow(t[1]), Shape, "Pow"),
        C("Maximum shapes", t => t[0].Maximum(t[1]), Shape, "Maximum", "[2, 3]", "[4]"),
        C("Lt shapes", t => t[0].Lt(t[1]), Shape, "Lt", "[2, 3]", "[4]"),
        C("Eq shapes", t => t[0].Eq(t[1]), Shape, "Eq"),
        C("Where condition dtype", t => Tensor.Where(t[2], t[0], t[0]), DTypeEx, "Where", "int32"),
        C("Where shapes", t => Tensor.Where(t[3], t[0], t[1]), Shape, "Where", "[4]"),
        C("MaskedFill mask dtype", t => t[0].MaskedFill(t[2], 0), DTypeEx, "MaskedFill", "int32"),
        C("MaskedFill mask shape", t => t[1].MaskedFill(t[3], 0), Shape, "MaskedFill", "[2, 3]", "[4]"),
        C("Clamp without bounds", t => t[0].Clamp(), Engine_, "Clamp"),
        C("View numel", t => t[0].View(4, 2), Shape, "View", "[4, 2]", "6"),
        C("View two -1", t => t[0].View(-1, -1), Shape, "View", "[-1, -1]"),
        C("View negative", t => t[0].View(-2, 3), Shape, "View", "-2"),
        C("View strides", t => t[5].View(12), Shape, "View", "[12]"),
        C("Reshape numel", t => t[0].Reshape(5), Shape, "Reshape", "[5]", "6"),
        C("Expand", t => t[1].Expand(2, 3), Shape, "Expand", "[2, 3]", "[4]"),
        C("Permute rank", t => t[0].Permute(0), Shape, "Permute", "[2, 3]"),
        C("Permute repeated", t => t[0].Permute(1, 1), Shape, "Permute"),
        C("Transpose dim", t => t[0].Transpose(0, 2), Shape, "Transpose", "2"),
        C("Select index", t => t[0].Select(1, 3), Shape, "Select", "3", "[2, 3]"),
        C("Select dim", t => t[0].Select(-3, 0), Shape, "Select", "-3"),
        C("Select 0-d", t => t[4].Select(0, 0), Shape, "Select"),
        C("Narrow", t => t[0].Narrow(1, 2, 2), Shape, "Narrow", "[2, 3]"),
        C("Narrow negative length", t => t[0].Narrow(1, 0, -1), Shape, "Narrow"),
        C("Slice step", t => t[0].Slice(1, 0, 3, 0), Shape, "Slice", "0"),
        C("Squeeze dim", t => t[0].Squeeze(2), Shape, "Squeeze", "2"),
        C("Unsqueeze dim", t => t[0].Unsqueeze(3), Shape, "Unsqueeze", "3"),
        C("Flatten dims", t => t[0].Flatten(1, 0), Shape, "Flatten"),
        C("Index too many", t => t[0][0, 0, 0], Shape, "Index"),
        C("Index out of range", t => t[0][2], Shape, "Select", "2"),
        C("Item", t => t[0].Item(), Shape, "Item", "6"),
        C("Size", t => t[0].Size(2), Shape, "Size", "2"),
        C("RequiresGrad int", t => t[2].RequiresGrad = true, DTypeEx, "RequiresGrad", "int32"),
        C("AddInPlace dtype", t => t[2].AddInPlace(t[0]), DTypeEx, "AddInPlace", "float32", "int32"),
        C("AddInPlace 0-d float", t => t[2].AddInPlace(t[4]), DTypeEx, "AddInPlace", "float64", "int32"),
        C("MulInPlace scalar", t => t[2].MulInPlace(0.5), DTypeEx, "MulInPlace", "int32"),
        C("AddInPlace bool", t => t[3].AddInPlace(1), DTypeEx, "AddInPlace", "bool"),
        C("DivInPlace int", t => t[2].DivInPlace(t[2]), DTypeEx, "DivInPlace", "int32"),
        C("AddInPlace broadcast self", t => t[1].AddInPlace(t[0]), Shape, "AddInPlace", "[4]", "[2, 3]"),
        C("SubInPlace shapes", t => t[0].SubInPlace(t[1]), Shape, "SubInPlace", "[2, 3]", "[4]"),
        C("AddInPlace overlap", t => t[5].AddInPlace(1), Shape, "AddInPlace"),
        C("FillInPlace overlap", t => t[5].FillInPlace(1), Shape, "FillInPlace"),
        C("CopyInPlace shape", t => t[1].CopyInPlace(t[0]), Shape, "CopyInPlace", "[2, 3]", "[4]"),
        C("MaskedFillInPlace shape", t => t[1].MaskedFillInPlace(t[3], 1), Shape, "MaskedFill"),
        C("Leaf in-place", t => t[6].MulInPlace(2), Engine_, "MulInPlace", "leaf"),
        C("Leaf fill", t => t[6].ZeroInPlace(), Engine_, "FillInPlace", "leaf"),
        C("Leaf copy", t => t[6].CopyInPlace(t[0]), Engine_, "CopyInPlace", "leaf"),
        C("Leaf add", t => t[6].AddInPlace(t[0]), Engine_, "AddInPlace", "leaf"),
        C("Hook on no-grad tensor", t => { t[0].RegisterHook(g => g); return null; }, Engine_, "RegisterHook"),
        C("RequiresGrad false on non-leaf", t => { var y = t[6] * 2; try { y.RequiresGrad = false; } finally { y.Dispose(); } return null; }, Engine_, "RequiresGrad"),
    ];

    [TestCaseSource(nameof(Cases))]
    public void ErrorNamesTheOpAndLeavesInputsUntouched(ErrorCase c)
    {
        var inputs = Inputs();
        try
        {
            var values = inputs.Select(t => t.ToArray<double>()).ToArray();
            var versions = inputs.Select(t => t.Version).ToArray();
            var shapes = inputs.Select(t => t.Shape).ToArray();
            var ex = Assert.Throws(Is.InstanceOf(c.Exception), () =>
            {
                var r = c.Act(inputs);
                (r as IDisposable)?.Dispose();
            });
            Assert.That(ex, Is.InstanceOf<EngineException>());
            if (c.Exception != Engine_) Assert.That(ex!.GetType(), Is.EqualTo(c.Exception), ex.Message);
            foreach (var m in c.Mentions) Assert.That(ex!.Message, Does.Contain(m), "the message names " + m);
            Assert.That(((EngineException)ex!).Op, Is.Not.Empty);
            Assert.That(ex.Message, Does.StartWith(((EngineException)ex).Op + ":"));
            for (int k = 0; k < inputs.Length; k++)
            {
                Assert.That(inputs[k].ToArray<double>(), Is.EqualTo(values[k]), $"input {k} values");
                Assert.That(inputs[k].Version, Is.EqualTo(versions[k]), $"input {k} version");
                Assert.That(inputs[k].Shape, Is.EqualTo(shapes[k]), $"input {k} shape");
            }
            Assert.That(inputs[6].IsLeaf, Is.True);
        }
        finally
        {
            foreach (var t in inputs) t.Dispose();
        }
    }

    [Test]
    public void ShapeHelpersNameTheirOp()
    {
        Assert.That(() => Engine.Shape.Broadcast([2, 3], [4, 3], "MyOp"), Throws.TypeOf<ShapeException>().With.Message.StartsWith("MyOp:").And.Message.Contains("[2, 3]").And.Message.Contains("[4, 3]"));
        Assert.That(() => Engine.Shape.NormalizeDim(3, 2, "MyOp"), Throws.TypeOf<ShapeException>().With.Message.StartsWith("MyOp:").And.Message.Contains("3"));
        Assert.That(() => Engine.Shape.Infer([4, -1], 6, "MyOp"), Throws.TypeOf<ShapeException>().With.Message.StartsWith("MyOp:").And.Message.Contains("6"));
    }

    [Test]
    public void ExceptionHierarchy()
    {
        Assert.That(new ShapeException("X", "m"), Is.InstanceOf<EngineException>());
        Assert.That(new DTypeException("X", "m"), Is.InstanceOf<EngineException>());
        Assert.That(new DeviceMismatchException("X", "m"), Is.InstanceOf<EngineException>());
        Assert.That(new DisposedTensorException("X"), Is.InstanceOf<EngineException>());
        var e = new ShapeException("Op", "bad");
        Assert.That(e.Op, Is.EqualTo("Op"));
        Assert.That(e.Message, Is.EqualTo("Op: bad"));
    }

    [Test]
    public void GradModeIsRestoredAfterAnError()
    {
        using var w = Tensor.FromArray(new[] { 1.0 }, requiresGrad: true);
        try
        {
            using (GradMode.NoGrad()) throw new InvalidOperationException();
        }
        catch (InvalidOperationException) { }
        Assert.That(GradMode.IsEnabled, Is.True);
    }
}

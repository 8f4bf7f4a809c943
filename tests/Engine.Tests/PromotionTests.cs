using NUnit.Framework;

namespace Engine.Tests;

/// <summary>Type promotion against PyTorch's documented rules (torch.promote_types and torch.result_type).</summary>
[TestFixture]
public class PromotionTests
{
    const DType F64 = DType.Float64, F32 = DType.Float32, F16 = DType.Float16, BF16 = DType.BFloat16, I32 = DType.Int32, I64 = DType.Int64, B = DType.Bool;
    static readonly DType[] Order = [F64, F32, F16, BF16, I32, I64, B];

    // torch.promote_types, row = first operand, column = second, in the order of Order.
    static readonly DType[,] PromoteTable =
    {
        //          F64  F32  F16  BF16 I32  I64  B
        /* F64 */ { F64, F64, F64, F64, F64, F64, F64 },
        /* F32 */ { F64, F32, F32, F32, F32, F32, F32 },
        /* F16 */ { F64, F32, F16, F32, F16, F16, F16 },
        /* BF16*/ { F64, F32, F32, BF16, BF16, BF16, BF16 },
        /* I32 */ { F64, F32, F16, BF16, I32, I64, I32 },
        /* I64 */ { F64, F32, F16, BF16, I64, I64, I64 },
        /* B   */ { F64, F32, F16, BF16, I32, I64, B },
    };

    [Test]
    public void PromoteMatchesPyTorchTable()
    {
        for (int i = 0; i < Order.Length; i++)
            for (int j = 0; j < Order.Length; j++)
                Assert.That(DTypes.Promote(Order[i], Order[j]), Is.EqualTo(PromoteTable[i, j]), $"promote({Order[i]}, {Order[j]})");
    }

    static int Category(DType t) => t == B ? 0 : t is I32 or I64 ? 1 : 2;

    [Test]
    public void ResultTypeWithZeroDimOperands()
    {
        for (int i = 0; i < Order.Length; i++)
            for (int j = 0; j < Order.Length; j++)
            {
                DType a = Order[i], b = Order[j];
                // Both or neither 0-d: plain promotion.
                Assert.That(DTypes.ResultType(a, false, b, false), Is.EqualTo(PromoteTable[i, j]));
                Assert.That(DTypes.ResultType(a, true, b, true), Is.EqualTo(PromoteTable[i, j]));
                // One 0-d: the dimensioned operand decides, unless the 0-d one is of a higher category.
                var want = Category(b) > Category(a) ? b : a;
                Assert.That(DTypes.ResultType(a, false, b, true), Is.EqualTo(want), $"{a} tensor with 0-d {b}");
                Assert.That(DTypes.ResultType(b, true, a, false), Is.EqualTo(want), $"0-d {b} with {a} tensor");
            }
    }

    [Test]
    public void DocumentedExamplesThroughOps()
    {
        Tensor T(DType dt, params int[] shape) => Tensor.Ones(shape, dt);
        void Check(Tensor y, DType want, string what) { using (y) Assert.That(y.DType, Is.EqualTo(want), what); }
        using var f16 = T(F16, 2); using var bf16 = T(BF16, 2); using var f32 = T(F32, 2); using var f64 = T(F64, 2);
        using var i32 = T(I32, 2); using var i64 = T(I64, 2); using var b = T(B, 2);
        using var f64s = T(F64); using var f32s = T(F32); using var i64s = T(I64); using var f16s = T(F16); using var bs = T(B);
        Check(f16 + bf16, F32, "float16 + bfloat16 → float32");
        Check(i32 + i64, I64, "int32 + int64 → int64");
        Check(i32 + f16, F16, "int + float → float");
        Check(i64 * bf16, BF16, "int64 * bfloat16 → bfloat16");
        Check(b + i32, I32, "bool + int → int");
        Check(b * f32, F32, "bool * float → float");
        Check(f32 + f64s, F32, "float32 tensor + 0-d float64 → float32");
        Check(f16 + f32s, F16, "float16 tensor + 0-d float32 → float16");
        Check(bf16 - f64s, BF16, "bfloat16 tensor − 0-d float64 → bfloat16");
        Check(i32 + f64s, F64, "int tensor + 0-d float64 → float64");
        Check(i32 + f16s, F16, "int tensor + 0-d float16 → float16");
        Check(i32 + i64s, I32, "int32 tensor + 0-d int64 → int32");
        Check(b + i64s, I64, "bool tensor + 0-d int64 → int64");
        Check(f32s + f64s, F64, "0-d float32 + 0-d float64 → float64");
        Check(f16s + bf16, BF16, "0-d float16 + bfloat16 tensor → bfloat16");
        Check(i32 + bs, I32, "int tensor + 0-d bool → int");
        Check(i32 / i32, F32, "int / int → float32 (true division)");
        Check(i64 / i32, F32, "int64 / int32 → float32");
        Check(i32 / f64s, F64, "int / 0-d float64 → float64");
        Check(b / b, F32, "bool / bool → float32");
        Check(f16 / f16, F16, "float16 / float16 → float16");
        Check(i32 + 2.5, F32, "int tensor + 2.5 → float32");
        Check(i64 * 0.5, F32, "int64 tensor * 0.5 → float32");
        Check(i32 + 2, I32, "int tensor + 2 → int");
        Check(i64 - 3, I64, "int64 tensor − 3 → int64");
        Check(2.5 - i32, F32, "2.5 − int tensor → float32");
        Check(i32 / 2, F32, "int tensor / 2 → float32");
        Check(2 / i64, F32, "2 / int tensor → float32");
        Check(f16 + 1e10, F16, "float16 tensor + a big double stays float16");
        Check(bf16 * 3, BF16, "bfloat16 tensor * 3 → bfloat16");
        Check(b + 2, I64, "bool tensor + 2 → int64");
        Check(b + 0.5, F32, "bool tensor + 0.5 → float32");
        Check(i32.Lt(f64), B, "comparisons give bool");
        Check(i32 < 2.5, B, "scalar comparisons give bool");
        Check(i32.Maximum(f16), F16, "maximum promotes");
        Check(i32.Pow(f32s), F32, "int tensor ** 0-d float32 → float32");
        Check(i32.Pow(2), I32, "int tensor ** 2 → int");
        Check(i32.Pow(0.5), F32, "int tensor ** 0.5 → float32");
        Check(Tensor.Where(b, i32, f16), F16, "where promotes its branches");
        Check(Tensor.Where(b, f16, f64s), F16, "where: 0-d float64 does not upcast a float16 tensor");
    }

    [Test]
    public void ScalarValuesAreComputedInThePromotedType()
    {
        using var i = Tensor.FromArray(new[] { 1, 2, 3 });
        using var y = i + 0.5;
        Assert.That(y.ToArray<float>(), Is.EqualTo(new[] { 1.5f, 2.5f, 3.5f }));
        using var d = i / 2;
        Assert.That(d.ToArray<float>(), Is.EqualTo(new[] { 0.5f, 1, 1.5f }));
        using var s = Tensor.Scalar(0.1, DType.Float64);
        using var z = i * s;
        Assert.That(z.DType, Is.EqualTo(DType.Float64));
        Assert.That(z.ToArray<double>(), Is.EqualTo(new[] { 0.1, 0.2, 0.30000000000000004 }));
        using var big = Tensor.FromArray(new[] { 3e38f });
        using var over = big * 10;
        Assert.That(over.ToArray<float>()[0], Is.EqualTo(float.PositiveInfinity), "float32 math stays float32");
    }

    [Test]
    public void WithScalar()
    {
        Assert.That(DTypes.WithScalar(I32, true), Is.EqualTo(I32));
        Assert.That(DTypes.WithScalar(I32, false), Is.EqualTo(F32));
        Assert.That(DTypes.WithScalar(I64, false), Is.EqualTo(F32));
        Assert.That(DTypes.WithScalar(B, true), Is.EqualTo(I64));
        Assert.That(DTypes.WithScalar(B, false), Is.EqualTo(F32));
        Assert.That(DTypes.WithScalar(F16, false), Is.EqualTo(F16));
        Assert.That(DTypes.WithScalar(BF16, true), Is.EqualTo(BF16));
        Assert.That(DTypes.WithScalar(F64, false), Is.EqualTo(F64));
    }
}

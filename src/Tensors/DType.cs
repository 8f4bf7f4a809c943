namespace Engine;

/// <summary>Element type of a tensor.</summary>
public enum DType
{
    /// <summary>IEEE binary64.</summary>
    Float64,
    /// <summary>IEEE binary32.</summary>
    Float32,
    /// <summary>IEEE binary16 (<see cref="Half"/>).</summary>
    Float16,
    /// <summary>bfloat16 (<see cref="Engine.BFloat16"/>): float32's exponent range with 8 significant bits.</summary>
    BFloat16,
    /// <summary>32-bit signed integer.</summary>
    Int32,
    /// <summary>64-bit signed integer (indices, class labels).</summary>
    Int64,
    /// <summary>Boolean, one byte per element.</summary>
    Bool,
}

/// <summary>Facts about each <see cref="DType"/> and PyTorch's type-promotion rules.</summary>
public static class DTypes
{
    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this DType t) => t switch
    {
        DType.Float64 or DType.Int64 => 8,
        DType.Float32 or DType.Int32 => 4,
        DType.Float16 or DType.BFloat16 => 2,
        DType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>True for the four floating-point types.</summary>
    public static bool IsFloatingPoint(this DType t) => t <= DType.BFloat16;

    /// <summary>True for the 16-bit floating types, which compute in float32 and round once on store.</summary>
    public static bool IsHalf(this DType t) => t is DType.Float16 or DType.BFloat16;

    /// <summary>PyTorch's name for the type (<c>float32</c>, <c>bfloat16</c>, ...).</summary>
    public static string Name(this DType t) => t switch
    {
        DType.Float64 => "float64",
        DType.Float32 => "float32",
        DType.Float16 => "float16",
        DType.BFloat16 => "bfloat16",
        DType.Int32 => "int32",
        DType.Int64 => "int64",
        DType.Bool => "bool",
        _ => t.ToString(),
    };

    // 0 = bool, 1 = integer, 2 = floating: promotion never goes down a category.
    static int Category(DType t) => t == DType.Bool ? 0 : t.IsFloatingPoint() ? 2 : 1;

    /// <summary>
    /// The result type of combining two tensors, as <c>torch.promote_types</c>: bool &lt; int32 &lt; int64 &lt; the
    /// float types; float16 with bfloat16 gives float32 (neither holds the other).
    /// </summary>
    public static DType Promote(DType a, DType b)
    {
        if (a == b) return a;
        int ca = Category(a), cb = Category(b);
        if (ca != cb) return ca > cb ? a : b;
        if (ca == 1) return DType.Int64;
        if (a == DType.Float64 || b == DType.Float64) return DType.Float64;
        if (a == DType.Float32 || b == DType.Float32) return DType.Float32;
        return DType.Float32; // float16 with bfloat16
    }

    /// <summary>
    /// The result type of an op between two tensors where a 0-d tensor counts as a scalar, as
    /// <c>torch.result_type</c>: a dimensioned operand decides the type unless the scalar is of a higher category.
    /// </summary>
    public static DType ResultType(DType a, bool aIsScalar, DType b, bool bIsScalar)
    {
        if (aIsScalar == bIsScalar) return Promote(a, b);
        var (dim, sc) = aIsScalar ? (b, a) : (a, b);
        return Category(sc) > Category(dim) ? sc : dim;
    }

    /// <summary>The type of a C# <see cref="double"/> scalar combined with a tensor of type <paramref name="t"/>.</summary>
    public static DType WithScalar(DType t, bool scalarIsIntegral) =>
        t.IsFloatingPoint() || scalarIsIntegral && t != DType.Bool ? t : scalarIsIntegral ? DType.Int64 : DType.Float32;

    /// <summary>Parses PyTorch-style names: float32/f32/float, float16/f16/half, bfloat16/bf16, float64/double, int32, int64/long, bool.</summary>
    public static DType Parse(string s) => s.Trim().ToLowerInvariant() switch
    {
        "float64" or "f64" or "double" => DType.Float64,
        "float32" or "f32" or "float" or "fp32" => DType.Float32,
        "float16" or "f16" or "half" or "fp16" => DType.Float16,
        "bfloat16" or "bf16" => DType.BFloat16,
        "int32" or "i32" or "int" => DType.Int32,
        "int64" or "i64" or "long" => DType.Int64,
        "bool" => DType.Bool,
        _ => throw new FormatException($"unknown dtype '{s}' (expected float64, float32, float16, bfloat16, int32, int64 or bool)"),
    };
}

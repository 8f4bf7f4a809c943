namespace Engine.Serialization;

/// <summary>
/// The element types a safetensors file can hold, named after the format's <c>dtype</c> codes. They are declared in
/// the reference implementation's order (increasing alignment), which its writer lays data out by, largest first.
/// The engine computes in fewer types: see <see cref="SafeTensorDTypes.LoadsAs"/> for what each becomes on load.
/// </summary>
public enum SafeTensorDType
{
    /// <summary><c>BOOL</c>: one byte, 0 or 1.</summary>
    Bool,
    /// <summary><c>U8</c>: unsigned 8-bit integer.</summary>
    U8,
    /// <summary><c>I8</c>: signed 8-bit integer.</summary>
    I8,
    /// <summary><c>F8_E5M2</c>: 8-bit float, 5 exponent and 2 mantissa bits, with infinities (float16's top byte).</summary>
    F8E5M2,
    /// <summary><c>F8_E4M3</c>: 8-bit float, 4 exponent and 3 mantissa bits, no infinities, S.1111.111 is NaN, max 448 (PyTorch's <c>float8_e4m3fn</c>).</summary>
    F8E4M3,
    /// <summary><c>I16</c>: signed 16-bit integer.</summary>
    I16,
    /// <summary><c>U16</c>: unsigned 16-bit integer.</summary>
    U16,
    /// <summary><c>F16</c>: IEEE binary16.</summary>
    F16,
    /// <summary><c>BF16</c>: bfloat16.</summary>
    BF16,
    /// <summary><c>I32</c>: signed 32-bit integer.</summary>
    I32,
    /// <summary><c>U32</c>: unsigned 32-bit integer.</summary>
    U32,
    /// <summary><c>F32</c>: IEEE binary32.</summary>
    F32,
    /// <summary><c>F64</c>: IEEE binary64.</summary>
    F64,
    /// <summary><c>I64</c>: signed 64-bit integer.</summary>
    I64,
    /// <summary><c>U64</c>: unsigned 64-bit integer.</summary>
    U64,
}

/// <summary>Facts about each <see cref="SafeTensorDType"/>: its code in the header, its size, the engine dtype it maps to.</summary>
public static class SafeTensorDTypes
{
    static readonly SafeTensorDType[] s_all = Enum.GetValues<SafeTensorDType>();

    // Codes the reference knows that the engine cannot hold exactly (sub-byte floats, the FNUZ and E8M0 variants,
    // complex): named in the error so that a user knows the file is valid but not loadable here.
    static readonly HashSet<string> s_unsupported = ["F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"];

    /// <summary>The <c>dtype</c> code written in the header (<c>F32</c>, <c>F8_E4M3</c>, <c>BOOL</c>, ...).</summary>
    public static string Code(this SafeTensorDType t) => t switch
    {
        SafeTensorDType.Bool => "BOOL",
        SafeTensorDType.F8E5M2 => "F8_E5M2",
        SafeTensorDType.F8E4M3 => "F8_E4M3",
        _ => t.ToString(),
    };

    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this SafeTensorDType t) => t switch
    {
        SafeTensorDType.Bool or SafeTensorDType.U8 or SafeTensorDType.I8 or SafeTensorDType.F8E5M2 or SafeTensorDType.F8E4M3 => 1,
        SafeTensorDType.I16 or SafeTensorDType.U16 or SafeTensorDType.F16 or SafeTensorDType.BF16 => 2,
        SafeTensorDType.I32 or SafeTensorDType.U32 or SafeTensorDType.F32 => 4,
        _ => 8,
    };

    /// <summary>
    /// The engine dtype a stored type loads as: itself where the engine has it; I8, U8, I16 and U16 widen to int32,
    /// U32 and U64 to int64 (a U64 value above <see cref="long.MaxValue"/> is an error), and both 8-bit floats to
    /// float16, which holds every one of their values exactly.
    /// </summary>
    public static DType LoadsAs(this SafeTensorDType t) => t switch
    {
        SafeTensorDType.F64 => DType.Float64,
        SafeTensorDType.F32 => DType.Float32,
        SafeTensorDType.F16 or SafeTensorDType.F8E4M3 or SafeTensorDType.F8E5M2 => DType.Float16,
        SafeTensorDType.BF16 => DType.BFloat16,
        SafeTensorDType.I64 or SafeTensorDType.U64 or SafeTensorDType.U32 => DType.Int64,
        SafeTensorDType.Bool => DType.Bool,
        _ => DType.Int32,
    };

    /// <summary>The stored type of an engine dtype when no other is asked for: the same type.</summary>
    public static SafeTensorDType Of(DType t) => t switch
    {
        DType.Float64 => SafeTensorDType.F64,
        DType.Float32 => SafeTensorDType.F32,
        DType.Float16 => SafeTensorDType.F16,
        DType.BFloat16 => SafeTensorDType.BF16,
        DType.Int64 => SafeTensorDType.I64,
        DType.Int32 => SafeTensorDType.I32,
        DType.Bool => SafeTensorDType.Bool,
        _ => throw new DTypeException("SafeTensors", $"no safetensors code for {t}"),
    };

    /// <summary>Parses a header code; false for anything that is not one of the 15 codes (case-sensitive, as the reference).</summary>
    public static bool TryParse(string code, out SafeTensorDType type)
    {
        foreach (var t in s_all)
            if (t.Code() == code) { type = t; return true; }
        type = default;
        return false;
    }

    /// <summary>True for a code the format defines but the engine cannot load.</summary>
    internal static bool IsKnownUnsupported(string code) => s_unsupported.Contains(code);
}

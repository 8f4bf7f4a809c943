using System.Runtime.CompilerServices;

namespace Engine.Backends.Cpu;

/// <summary>
/// How a kernel reads and writes one element type: half types widen to float32, float64 and the integer types to
/// float64 (<see cref="Wide"/>), so every op has exactly two arithmetic paths and rounds once on store.
/// </summary>
public interface IElement<T> where T : unmanaged
{
    /// <summary>True when the compute type is float64.</summary>
    static abstract bool Wide { get; }
    /// <summary>Widen to float32.</summary>
    static abstract float ToFloat(T v);
    /// <summary>Round from float32.</summary>
    static abstract T FromFloat(float v);
    /// <summary>Widen to float64.</summary>
    static abstract double ToDouble(T v);
    /// <summary>Round from float64.</summary>
    static abstract T FromDouble(double v);
}

#pragma warning disable CS1591 // one-line element adapters
public struct F64 : IElement<double>
{
    public static bool Wide => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(double v) => (float)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double FromFloat(float v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double ToDouble(double v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double FromDouble(double v) => v;
}

public struct F32 : IElement<float>
{
    public static bool Wide => false;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(float v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float FromFloat(float v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double ToDouble(float v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float FromDouble(double v) => (float)v;
}

public struct F16 : IElement<Half>
{
    public static bool Wide => false;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(Half v) => (float)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Half FromFloat(float v) => (Half)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double ToDouble(Half v) => (double)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Half FromDouble(double v) => (Half)v;
}

public struct BF16 : IElement<BFloat16>
{
    public static bool Wide => false;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(BFloat16 v) => (float)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static BFloat16 FromFloat(float v) => (BFloat16)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double ToDouble(BFloat16 v) => (double)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static BFloat16 FromDouble(double v) => (BFloat16)v;
}

// Integer stores truncate toward zero as C casts do; NaN and out-of-range values saturate (.NET's conversion rules),
// where PyTorch leaves them undefined.
public struct I32 : IElement<int>
{
    public static bool Wide => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(int v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int FromFloat(float v) => (int)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double ToDouble(int v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int FromDouble(double v) => (int)v;
}

public struct I64 : IElement<long>
{
    public static bool Wide => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(long v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static long FromFloat(float v) => (long)v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double ToDouble(long v) => v;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static long FromDouble(double v) => (long)v;
}

public struct B8 : IElement<bool>
{
    public static bool Wide => true;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(bool v) => v ? 1f : 0f;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool FromFloat(float v) => v != 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double ToDouble(bool v) => v ? 1.0 : 0.0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool FromDouble(double v) => v != 0;
}
#pragma warning restore CS1591

/// <summary>A generic action instantiated for one element type; the one dtype switch of each op family.</summary>
public interface IDTypeVisitor
{
    /// <summary>Runs the action for element type <typeparamref name="T"/>.</summary>
    void Visit<T, TE>() where T : unmanaged where TE : struct, IElement<T>;
}

/// <summary>Maps a <see cref="DType"/> to its element type and adapter.</summary>
public static class DTypeDispatch
{
    /// <summary>Calls <paramref name="visitor"/> with the element type of <paramref name="dtype"/>.</summary>
    public static void Visit<TV>(DType dtype, ref TV visitor) where TV : struct, IDTypeVisitor
    {
        switch (dtype)
        {
            case DType.Float64: visitor.Visit<double, F64>(); break;
            case DType.Float32: visitor.Visit<float, F32>(); break;
            case DType.Float16: visitor.Visit<Half, F16>(); break;
            case DType.BFloat16: visitor.Visit<BFloat16, BF16>(); break;
            case DType.Int32: visitor.Visit<int, I32>(); break;
            case DType.Int64: visitor.Visit<long, I64>(); break;
            case DType.Bool: visitor.Visit<bool, B8>(); break;
            default: throw new DTypeException("Dispatch", $"unsupported dtype {dtype}");
        }
    }
}

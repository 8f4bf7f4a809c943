using System.Runtime.Intrinsics;

namespace Engine.Ops;

// The lane types that VectorMath's kernels are written over: Vector512, Vector256, Vector128 and a scalar, behind one
// interface of static abstract members, so that each kernel is one generic method and every width executes the same
// IEEE operations in the same order. Only operations that are exactly specified by IEEE 754 are offered (+ − × ÷ and
// fused multiply-add with one rounding, comparisons, bit operations, float↔double conversion with round-to-nearest):
// no MultiplyAddEstimate, no reciprocal estimates, no hardware min/max on NaN (NaN lanes are overwritten by the
// kernels). The JIT never contracts a separate × and + into an FMA, so the scalar lanes match the vector lanes bit for
// bit. Masks are lanes with all bits set (true) or clear, as the hardware comparisons produce them.

/// <summary>float32 lanes, with their bits also usable as int32 lanes.</summary>
internal unsafe interface IFloatLanes<TSelf> where TSelf : unmanaged, IFloatLanes<TSelf>
{
    static abstract int Count { get; }
    static abstract TSelf Load(float* p);
    static abstract void Store(TSelf v, float* p);
    static abstract TSelf Splat(float v);
    static abstract TSelf SplatInt(int bits);
    static abstract TSelf operator +(TSelf a, TSelf b);
    static abstract TSelf operator -(TSelf a, TSelf b);
    static abstract TSelf operator *(TSelf a, TSelf b);
    static abstract TSelf operator /(TSelf a, TSelf b);
    static abstract TSelf operator &(TSelf a, TSelf b);
    static abstract TSelf operator |(TSelf a, TSelf b);
    /// <summary>a·b + c rounded once.</summary>
    static abstract TSelf Fma(TSelf a, TSelf b, TSelf c);
    /// <summary>The smaller of two non-NaN lanes (unspecified for NaN).</summary>
    static abstract TSelf Min(TSelf a, TSelf b);
    /// <summary>The larger of two non-NaN lanes (unspecified for NaN).</summary>
    static abstract TSelf Max(TSelf a, TSelf b);
    static abstract TSelf IsNaN(TSelf a);
    static abstract TSelf LessThan(TSelf a, TSelf b);
    static abstract TSelf Equal(TSelf a, TSelf b);
    static abstract TSelf Select(TSelf mask, TSelf whenTrue, TSelf whenFalse);
    static abstract TSelf AddInt(TSelf a, TSelf b);
    static abstract TSelf SubInt(TSelf a, TSelf b);
    static abstract TSelf ShiftLeftInt(TSelf a, int n);
    static abstract TSelf ShiftRightArithmeticInt(TSelf a, int n);
    static abstract TSelf ShiftRightLogicalInt(TSelf a, int n);
    /// <summary>Whether any lane, read as an int32, is below <paramref name="bound"/>.</summary>
    static abstract bool AnyIntLessThan(TSelf a, int bound);
    /// <summary>
    /// a·b through float64: the product of two float32 values is exact there (48 significant bits), so the one
    /// rounding to float32 gives the same bits as a float32 multiply. It exists because a float32 multiply whose result
    /// is subnormal or underflows costs a microcode assist of ~150 cycles on Intel cores; the narrowing does not.
    /// </summary>
    static abstract TSelf MultiplyInDouble(TSelf a, TSelf b);
    /// <summary>(a + b)/(c + d) computed in float64 and rounded once to float32.</summary>
    static abstract TSelf RatioOfSumsInDouble(TSelf a, TSelf b, TSelf c, TSelf d);
}

/// <summary>float64 lanes, with their bits also usable as int64 lanes.</summary>
internal unsafe interface IDoubleLanes<TSelf> where TSelf : unmanaged, IDoubleLanes<TSelf>
{
    static abstract int Count { get; }
    static abstract TSelf Load(double* p);
    static abstract void Store(TSelf v, double* p);
    static abstract TSelf Splat(double v);
    static abstract TSelf SplatLong(long bits);
    static abstract TSelf operator +(TSelf a, TSelf b);
    static abstract TSelf operator -(TSelf a, TSelf b);
    static abstract TSelf operator *(TSelf a, TSelf b);
    static abstract TSelf operator /(TSelf a, TSelf b);
    static abstract TSelf operator &(TSelf a, TSelf b);
    static abstract TSelf operator |(TSelf a, TSelf b);
    /// <summary>a·b + c rounded once.</summary>
    static abstract TSelf Fma(TSelf a, TSelf b, TSelf c);
    static abstract TSelf Min(TSelf a, TSelf b);
    static abstract TSelf Max(TSelf a, TSelf b);
    static abstract TSelf IsNaN(TSelf a);
    static abstract TSelf LessThan(TSelf a, TSelf b);
    static abstract TSelf Equal(TSelf a, TSelf b);
    static abstract TSelf Select(TSelf mask, TSelf whenTrue, TSelf whenFalse);
    static abstract TSelf AddLong(TSelf a, TSelf b);
    static abstract TSelf SubLong(TSelf a, TSelf b);
    static abstract TSelf ShiftLeftLong(TSelf a, int n);
    static abstract TSelf ShiftRightLogicalLong(TSelf a, int n);
}

internal readonly unsafe struct F512(Vector512<float> v) : IFloatLanes<F512>
{
    readonly Vector512<float> _v = v;
    public static int Count => Vector512<float>.Count;
    public static F512 Load(float* p) => new(Vector512.Load(p));
    public static void Store(F512 v, float* p) => v._v.Store(p);
    public static F512 Splat(float v) => new(Vector512.Create(v));
    public static F512 SplatInt(int bits) => new(Vector512.Create(bits).AsSingle());
    public static F512 operator +(F512 a, F512 b) => new(a._v + b._v);
    public static F512 operator -(F512 a, F512 b) => new(a._v - b._v);
    public static F512 operator *(F512 a, F512 b) => new(a._v * b._v);
    public static F512 operator /(F512 a, F512 b) => new(a._v / b._v);
    public static F512 operator &(F512 a, F512 b) => new(a._v & b._v);
    public static F512 operator |(F512 a, F512 b) => new(a._v | b._v);
    public static F512 Fma(F512 a, F512 b, F512 c) => new(Vector512.FusedMultiplyAdd(a._v, b._v, c._v));
    public static F512 Min(F512 a, F512 b) => new(Vector512.MinNative(a._v, b._v));
    public static F512 Max(F512 a, F512 b) => new(Vector512.MaxNative(a._v, b._v));
    public static F512 IsNaN(F512 a) => new(Vector512.IsNaN(a._v));
    public static F512 LessThan(F512 a, F512 b) => new(Vector512.LessThan(a._v, b._v));
    public static F512 Equal(F512 a, F512 b) => new(Vector512.Equals(a._v, b._v));
    public static F512 Select(F512 m, F512 t, F512 f) => new(Vector512.ConditionalSelect(m._v, t._v, f._v));
    public static F512 AddInt(F512 a, F512 b) => new((a._v.AsInt32() + b._v.AsInt32()).AsSingle());
    public static F512 SubInt(F512 a, F512 b) => new((a._v.AsInt32() - b._v.AsInt32()).AsSingle());
    public static F512 ShiftLeftInt(F512 a, int n) => new(Vector512.ShiftLeft(a._v.AsInt32(), n).AsSingle());
    public static F512 ShiftRightArithmeticInt(F512 a, int n) => new(Vector512.ShiftRightArithmetic(a._v.AsInt32(), n).AsSingle());
    public static F512 ShiftRightLogicalInt(F512 a, int n) => new(Vector512.ShiftRightLogical(a._v.AsUInt32(), n).AsSingle());
    public static bool AnyIntLessThan(F512 a, int bound) => Vector512.LessThanAny(a._v.AsInt32(), Vector512.Create(bound));
    public static F512 MultiplyInDouble(F512 a, F512 b)
    {
        var (alo, ahi) = Vector512.Widen(a._v);
        var (blo, bhi) = Vector512.Widen(b._v);
        return new(Vector512.Narrow(alo * blo, ahi * bhi));
    }
    public static F512 RatioOfSumsInDouble(F512 a, F512 b, F512 c, F512 d)
    {
        var (alo, ahi) = Vector512.Widen(a._v);
        var (blo, bhi) = Vector512.Widen(b._v);
        var (clo, chi) = Vector512.Widen(c._v);
        var (dlo, dhi) = Vector512.Widen(d._v);
        return new(Vector512.Narrow((alo + blo) / (clo + dlo), (ahi + bhi) / (chi + dhi)));
    }
}

internal readonly unsafe struct F256(Vector256<float> v) : IFloatLanes<F256>
{
    readonly Vector256<float> _v = v;
    public static int Count => Vector256<float>.Count;
    public static F256 Load(float* p) => new(Vector256.Load(p));
    public static void Store(F256 v, float* p) => v._v.Store(p);
    public static F256 Splat(float v) => new(Vector256.Create(v));
    public static F256 SplatInt(int bits) => new(Vector256.Create(bits).AsSingle());
    public static F256 operator +(F256 a, F256 b) => new(a._v + b._v);
    public static F256 operator -(F256 a, F256 b) => new(a._v - b._v);
    public static F256 operator *(F256 a, F256 b) => new(a._v * b._v);
    public static F256 operator /(F256 a, F256 b) => new(a._v / b._v);
    public static F256 operator &(F256 a, F256 b) => new(a._v & b._v);
    public static F256 operator |(F256 a, F256 b) => new(a._v | b._v);
    public static F256 Fma(F256 a, F256 b, F256 c) => new(Vector256.FusedMultiplyAdd(a._v, b._v, c._v));
    public static F256 Min(F256 a, F256 b) => new(Vector256.MinNative(a._v, b._v));
    public static F256 Max(F256 a, F256 b) => new(Vector256.MaxNative(a._v, b._v));
    public static F256 IsNaN(F256 a) => new(Vector256.IsNaN(a._v));
    public static F256 LessThan(F256 a, F256 b) => new(Vector256.LessThan(a._v, b._v));
    public static F256 Equal(F256 a, F256 b) => new(Vector256.Equals(a._v, b._v));
    public static F256 Select(F256 m, F256 t, F256 f) => new(Vector256.ConditionalSelect(m._v, t._v, f._v));
    public static F256 AddInt(F256 a, F256 b) => new((a._v.AsInt32() + b._v.AsInt32()).AsSingle());
    public static F256 SubInt(F256 a, F256 b) => new((a._v.AsInt32() - b._v.AsInt32()).AsSingle());
    public static F256 ShiftLeftInt(F256 a, int n) => new(Vector256.ShiftLeft(a._v.AsInt32(), n).AsSingle());
    public static F256 ShiftRightArithmeticInt(F256 a, int n) => new(Vector256.ShiftRightArithmetic(a._v.AsInt32(), n).AsSingle());
    public static F256 ShiftRightLogicalInt(F256 a, int n) => new(Vector256.ShiftRightLogical(a._v.AsUInt32(), n).AsSingle());
    public static bool AnyIntLessThan(F256 a, int bound) => Vector256.LessThanAny(a._v.AsInt32(), Vector256.Create(bound));
    public static F256 MultiplyInDouble(F256 a, F256 b)
    {
        var (alo, ahi) = Vector256.Widen(a._v);
        var (blo, bhi) = Vector256.Widen(b._v);
        return new(Vector256.Narrow(alo * blo, ahi * bhi));
    }
    public static F256 RatioOfSumsInDouble(F256 a, F256 b, F256 c, F256 d)
    {
        var (alo, ahi) = Vector256.Widen(a._v);
        var (blo, bhi) = Vector256.Widen(b._v);
        var (clo, chi) = Vector256.Widen(c._v);
        var (dlo, dhi) = Vector256.Widen(d._v);
        return new(Vector256.Narrow((alo + blo) / (clo + dlo), (ahi + bhi) / (chi + dhi)));
    }
}

internal readonly unsafe struct F128(Vector128<float> v) : IFloatLanes<F128>
{
    readonly Vector128<float> _v = v;
    public static int Count => Vector128<float>.Count;
    public static F128 Load(float* p) => new(Vector128.Load(p));
    public static void Store(F128 v, float* p) => v._v.Store(p);
    public static F128 Splat(float v) => new(Vector128.Create(v));
    public static F128 SplatInt(int bits) => new(Vector128.Create(bits).AsSingle());
    public static F128 operator +(F128 a, F128 b) => new(a._v + b._v);
    public static F128 operator -(F128 a, F128 b) => new(a._v - b._v);
    public static F128 operator *(F128 a, F128 b) => new(a._v * b._v);
    public static F128 operator /(F128 a, F128 b) => new(a._v / b._v);
    public static F128 operator &(F128 a, F128 b) => new(a._v & b._v);
    public static F128 operator |(F128 a, F128 b) => new(a._v | b._v);
    public static F128 Fma(F128 a, F128 b, F128 c) => new(Vector128.FusedMultiplyAdd(a._v, b._v, c._v));
    public static F128 Min(F128 a, F128 b) => new(Vector128.MinNative(a._v, b._v));
    public static F128 Max(F128 a, F128 b) => new(Vector128.MaxNative(a._v, b._v));
    public static F128 IsNaN(F128 a) => new(Vector128.IsNaN(a._v));
    public static F128 LessThan(F128 a, F128 b) => new(Vector128.LessThan(a._v, b._v));
    public static F128 Equal(F128 a, F128 b) => new(Vector128.Equals(a._v, b._v));
    public static F128 Select(F128 m, F128 t, F128 f) => new(Vector128.ConditionalSelect(m._v, t._v, f._v));
    public static F128 AddInt(F128 a, F128 b) => new((a._v.AsInt32() + b._v.AsInt32()).AsSingle());
    public static F128 SubInt(F128 a, F128 b) => new((a._v.AsInt32() - b._v.AsInt32()).AsSingle());
    public static F128 ShiftLeftInt(F128 a, int n) => new(Vector128.ShiftLeft(a._v.AsInt32(), n).AsSingle());
    public static F128 ShiftRightArithmeticInt(F128 a, int n) => new(Vector128.ShiftRightArithmetic(a._v.AsInt32(), n).AsSingle());
    public static F128 ShiftRightLogicalInt(F128 a, int n) => new(Vector128.ShiftRightLogical(a._v.AsUInt32(), n).AsSingle());
    public static bool AnyIntLessThan(F128 a, int bound) => Vector128.LessThanAny(a._v.AsInt32(), Vector128.Create(bound));
    public static F128 MultiplyInDouble(F128 a, F128 b)
    {
        var (alo, ahi) = Vector128.Widen(a._v);
        var (blo, bhi) = Vector128.Widen(b._v);
        return new(Vector128.Narrow(alo * blo, ahi * bhi));
    }
    public static F128 RatioOfSumsInDouble(F128 a, F128 b, F128 c, F128 d)
    {
        var (alo, ahi) = Vector128.Widen(a._v);
        var (blo, bhi) = Vector128.Widen(b._v);
        var (clo, chi) = Vector128.Widen(c._v);
        var (dlo, dhi) = Vector128.Widen(d._v);
        return new(Vector128.Narrow((alo + blo) / (clo + dlo), (ahi + bhi) / (chi + dhi)));
    }
}

/// <summary>One float32 lane; MathF.FusedMultiplyAdd is guaranteed fused (in software where the hardware lacks FMA).</summary>
internal readonly unsafe struct F1(float v) : IFloatLanes<F1>
{
    readonly float _v = v;
    static int I(F1 a) => BitConverter.SingleToInt32Bits(a._v);
    static F1 F(int bits) => new(BitConverter.Int32BitsToSingle(bits));
    static F1 Mask(bool b) => F(b ? -1 : 0);
    public static int Count => 1;
    public static F1 Load(float* p) => new(*p);
    public static void Store(F1 v, float* p) => *p = v._v;
    public static F1 Splat(float v) => new(v);
    public static F1 SplatInt(int bits) => F(bits);
    public static F1 operator +(F1 a, F1 b) => new(a._v + b._v);
    public static F1 operator -(F1 a, F1 b) => new(a._v - b._v);
    public static F1 operator *(F1 a, F1 b) => new(a._v * b._v);
    public static F1 operator /(F1 a, F1 b) => new(a._v / b._v);
    public static F1 operator &(F1 a, F1 b) => F(I(a) & I(b));
    public static F1 operator |(F1 a, F1 b) => F(I(a) | I(b));
    public static F1 Fma(F1 a, F1 b, F1 c) => new(MathF.FusedMultiplyAdd(a._v, b._v, c._v));
    public static F1 Min(F1 a, F1 b) => a._v < b._v ? a : b;
    public static F1 Max(F1 a, F1 b) => a._v > b._v ? a : b;
    public static F1 IsNaN(F1 a) => Mask(float.IsNaN(a._v));
    public static F1 LessThan(F1 a, F1 b) => Mask(a._v < b._v);
    public static F1 Equal(F1 a, F1 b) => Mask(a._v == b._v);
    public static F1 Select(F1 m, F1 t, F1 f) => F((I(m) & I(t)) | (~I(m) & I(f)));
    public static F1 AddInt(F1 a, F1 b) => F(I(a) + I(b));
    public static F1 SubInt(F1 a, F1 b) => F(I(a) - I(b));
    public static F1 ShiftLeftInt(F1 a, int n) => F(I(a) << n);
    public static F1 ShiftRightArithmeticInt(F1 a, int n) => F(I(a) >> n);
    public static F1 ShiftRightLogicalInt(F1 a, int n) => F((int)((uint)I(a) >> n));
    public static bool AnyIntLessThan(F1 a, int bound) => I(a) < bound;
    public static F1 MultiplyInDouble(F1 a, F1 b) => new((float)((double)a._v * b._v));
    public static F1 RatioOfSumsInDouble(F1 a, F1 b, F1 c, F1 d) => new((float)(((double)a._v + b._v) / ((double)c._v + d._v)));
}

internal readonly unsafe struct D512(Vector512<double> v) : IDoubleLanes<D512>
{
    readonly Vector512<double> _v = v;
    public static int Count => Vector512<double>.Count;
    public static D512 Load(double* p) => new(Vector512.Load(p));
    public static void Store(D512 v, double* p) => v._v.Store(p);
    public static D512 Splat(double v) => new(Vector512.Create(v));
    public static D512 SplatLong(long bits) => new(Vector512.Create(bits).AsDouble());
    public static D512 operator +(D512 a, D512 b) => new(a._v + b._v);
    public static D512 operator -(D512 a, D512 b) => new(a._v - b._v);
    public static D512 operator *(D512 a, D512 b) => new(a._v * b._v);
    public static D512 operator /(D512 a, D512 b) => new(a._v / b._v);
    public static D512 operator &(D512 a, D512 b) => new(a._v & b._v);
    public static D512 operator |(D512 a, D512 b) => new(a._v | b._v);
    public static D512 Fma(D512 a, D512 b, D512 c) => new(Vector512.FusedMultiplyAdd(a._v, b._v, c._v));
    public static D512 Min(D512 a, D512 b) => new(Vector512.MinNative(a._v, b._v));
    public static D512 Max(D512 a, D512 b) => new(Vector512.MaxNative(a._v, b._v));
    public static D512 IsNaN(D512 a) => new(Vector512.IsNaN(a._v));
    public static D512 LessThan(D512 a, D512 b) => new(Vector512.LessThan(a._v, b._v));
    public static D512 Equal(D512 a, D512 b) => new(Vector512.Equals(a._v, b._v));
    public static D512 Select(D512 m, D512 t, D512 f) => new(Vector512.ConditionalSelect(m._v, t._v, f._v));
    public static D512 AddLong(D512 a, D512 b) => new((a._v.AsInt64() + b._v.AsInt64()).AsDouble());
    public static D512 SubLong(D512 a, D512 b) => new((a._v.AsInt64() - b._v.AsInt64()).AsDouble());
    public static D512 ShiftLeftLong(D512 a, int n) => new(Vector512.ShiftLeft(a._v.AsInt64(), n).AsDouble());
    public static D512 ShiftRightLogicalLong(D512 a, int n) => new(Vector512.ShiftRightLogical(a._v.AsUInt64(), n).AsDouble());
}

internal readonly unsafe struct D256(Vector256<double> v) : IDoubleLanes<D256>
{
    readonly Vector256<double> _v = v;
    public static int Count => Vector256<double>.Count;
    public static D256 Load(double* p) => new(Vector256.Load(p));
    public static void Store(D256 v, double* p) => v._v.Store(p);
    public static D256 Splat(double v) => new(Vector256.Create(v));
    public static D256 SplatLong(long bits) => new(Vector256.Create(bits).AsDouble());
    public static D256 operator +(D256 a, D256 b) => new(a._v + b._v);
    public static D256 operator -(D256 a, D256 b) => new(a._v - b._v);
    public static D256 operator *(D256 a, D256 b) => new(a._v * b._v);
    public static D256 operator /(D256 a, D256 b) => new(a._v / b._v);
    public static D256 operator &(D256 a, D256 b) => new(a._v & b._v);
    public static D256 operator |(D256 a, D256 b) => new(a._v | b._v);
    public static D256 Fma(D256 a, D256 b, D256 c) => new(Vector256.FusedMultiplyAdd(a._v, b._v, c._v));
    public static D256 Min(D256 a, D256 b) => new(Vector256.MinNative(a._v, b._v));
    public static D256 Max(D256 a, D256 b) => new(Vector256.MaxNative(a._v, b._v));
    public static D256 IsNaN(D256 a) => new(Vector256.IsNaN(a._v));
    public static D256 LessThan(D256 a, D256 b) => new(Vector256.LessThan(a._v, b._v));
    public static D256 Equal(D256 a, D256 b) => new(Vector256.Equals(a._v, b._v));
    public static D256 Select(D256 m, D256 t, D256 f) => new(Vector256.ConditionalSelect(m._v, t._v, f._v));
    public static D256 AddLong(D256 a, D256 b) => new((a._v.AsInt64() + b._v.AsInt64()).AsDouble());
    public static D256 SubLong(D256 a, D256 b) => new((a._v.AsInt64() - b._v.AsInt64()).AsDouble());
    public static D256 ShiftLeftLong(D256 a, int n) => new(Vector256.ShiftLeft(a._v.AsInt64(), n).AsDouble());
    public static D256 ShiftRightLogicalLong(D256 a, int n) => new(Vector256.ShiftRightLogical(a._v.AsUInt64(), n).AsDouble());
}

internal readonly unsafe struct D128(Vector128<double> v) : IDoubleLanes<D128>
{
    readonly Vector128<double> _v = v;
    public static int Count => Vector128<double>.Count;
    public static D128 Load(double* p) => new(Vector128.Load(p));
    public static void Store(D128 v, double* p) => v._v.Store(p);
    public static D128 Splat(double v) => new(Vector128.Create(v));
    public static D128 SplatLong(long bits) => new(Vector128.Create(bits).AsDouble());
    public static D128 operator +(D128 a, D128 b) => new(a._v + b._v);
    public static D128 operator -(D128 a, D128 b) => new(a._v - b._v);
    public static D128 operator *(D128 a, D128 b) => new(a._v * b._v);
    public static D128 operator /(D128 a, D128 b) => new(a._v / b._v);
    public static D128 operator &(D128 a, D128 b) => new(a._v & b._v);
    public static D128 operator |(D128 a, D128 b) => new(a._v | b._v);
    public static D128 Fma(D128 a, D128 b, D128 c) => new(Vector128.FusedMultiplyAdd(a._v, b._v, c._v));
    public static D128 Min(D128 a, D128 b) => new(Vector128.MinNative(a._v, b._v));
    public static D128 Max(D128 a, D128 b) => new(Vector128.MaxNative(a._v, b._v));
    public static D128 IsNaN(D128 a) => new(Vector128.IsNaN(a._v));
    public static D128 LessThan(D128 a, D128 b) => new(Vector128.LessThan(a._v, b._v));
    public static D128 Equal(D128 a, D128 b) => new(Vector128.Equals(a._v, b._v));
    public static D128 Select(D128 m, D128 t, D128 f) => new(Vector128.ConditionalSelect(m._v, t._v, f._v));
    public static D128 AddLong(D128 a, D128 b) => new((a._v.AsInt64() + b._v.AsInt64()).AsDouble());
    public static D128 SubLong(D128 a, D128 b) => new((a._v.AsInt64() - b._v.AsInt64()).AsDouble());
    public static D128 ShiftLeftLong(D128 a, int n) => new(Vector128.ShiftLeft(a._v.AsInt64(), n).AsDouble());
    public static D128 ShiftRightLogicalLong(D128 a, int n) => new(Vector128.ShiftRightLogical(a._v.AsUInt64(), n).AsDouble());
}

/// <summary>One float64 lane; Math.FusedMultiplyAdd is guaranteed fused.</summary>
internal readonly unsafe struct D1(double v) : IDoubleLanes<D1>
{
    readonly double _v = v;
    static long L(D1 a) => BitConverter.DoubleToInt64Bits(a._v);
    static D1 D(long bits) => new(BitConverter.Int64BitsToDouble(bits));
    static D1 Mask(bool b) => D(b ? -1L : 0L);
    public static int Count => 1;
    public static D1 Load(double* p) => new(*p);
    public static void Store(D1 v, double* p) => *p = v._v;
    public static D1 Splat(double v) => new(v);
    public static D1 SplatLong(long bits) => D(bits);
    public static D1 operator +(D1 a, D1 b) => new(a._v + b._v);
    public static D1 operator -(D1 a, D1 b) => new(a._v - b._v);
    public static D1 operator *(D1 a, D1 b) => new(a._v * b._v);
    public static D1 operator /(D1 a, D1 b) => new(a._v / b._v);
    public static D1 operator &(D1 a, D1 b) => D(L(a) & L(b));
    public static D1 operator |(D1 a, D1 b) => D(L(a) | L(b));
    public static D1 Fma(D1 a, D1 b, D1 c) => new(Math.FusedMultiplyAdd(a._v, b._v, c._v));
    public static D1 Min(D1 a, D1 b) => a._v < b._v ? a : b;
    public static D1 Max(D1 a, D1 b) => a._v > b._v ? a : b;
    public static D1 IsNaN(D1 a) => Mask(double.IsNaN(a._v));
    public static D1 LessThan(D1 a, D1 b) => Mask(a._v < b._v);
    public static D1 Equal(D1 a, D1 b) => Mask(a._v == b._v);
    public static D1 Select(D1 m, D1 t, D1 f) => D((L(m) & L(t)) | (~L(m) & L(f)));
    public static D1 AddLong(D1 a, D1 b) => D(L(a) + L(b));
    public static D1 SubLong(D1 a, D1 b) => D(L(a) - L(b));
    public static D1 ShiftLeftLong(D1 a, int n) => D(L(a) << n);
    public static D1 ShiftRightLogicalLong(D1 a, int n) => D((long)((ulong)L(a) >> n));
}

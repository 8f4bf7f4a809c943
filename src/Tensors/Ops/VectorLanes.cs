using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using static Engine.Ops.LaneInlining;

namespace Engine.Ops;

// Every member is forced inline: a kernel inlines a few hundred of them, beyond the JIT's ordinary inlining budget,
// and one left as a call passes its vectors through memory (5-10x slower).
//
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
    /// <summary>
    /// A float64 kernel applied to the lanes widened to float64 (exact) and rounded once back to float32: the way the
    /// Gaussian and logistic kernels get a correctly rounded float32 result without double-float tricks.
    /// </summary>
    static abstract TSelf InDouble<TK>(TSelf x) where TK : struct, VectorMath.IDoubleKernel;
    /// <summary>
    /// A float64 combine of nine float32 lane sets, each widened exactly, rounded once to float32: how the activation
    /// kernels join the pieces they compute in float32 (a value and its derivative's inputs, e^w as hi + lo and 2ⁿ,
    /// a polynomial's tail) without a float32 rounding between them. Inputs the combine ignores cost nothing.
    /// </summary>
    static abstract TSelf CombineInDouble<TK>(TSelf x, TSelf dy, TSelf p0, TSelf p1, TSelf p2, TSelf p3, TSelf p4, TSelf p5, TSelf p6)
        where TK : struct, VectorMath.IDoubleCombine;
    /// <summary>A float64 kernel of the widened lanes, returned as the float32 pair hi + lo (hi its rounding, lo the
    /// rounding of the rest): an argument that must be known beyond float32 precision, such as tanh-GELU's 2z.</summary>
    static abstract void SplitInDouble<TK>(TSelf x, out TSelf hi, out TSelf lo) where TK : struct, VectorMath.IDoubleKernel;
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
    public static int Count { [MethodImpl(Inline)] get => Vector512<float>.Count; }
    [MethodImpl(Inline)] public static F512 Load(float* p) => new(Vector512.Load(p));
    [MethodImpl(Inline)] public static void Store(F512 v, float* p) => v._v.Store(p);
    [MethodImpl(Inline)] public static F512 Splat(float v) => new(Vector512.Create(v));
    [MethodImpl(Inline)] public static F512 SplatInt(int bits) => new(Vector512.Create(bits).AsSingle());
    [MethodImpl(Inline)] public static F512 operator +(F512 a, F512 b) => new(a._v + b._v);
    [MethodImpl(Inline)] public static F512 operator -(F512 a, F512 b) => new(a._v - b._v);
    [MethodImpl(Inline)] public static F512 operator *(F512 a, F512 b) => new(a._v * b._v);
    [MethodImpl(Inline)] public static F512 operator /(F512 a, F512 b) => new(a._v / b._v);
    [MethodImpl(Inline)] public static F512 operator &(F512 a, F512 b) => new(a._v & b._v);
    [MethodImpl(Inline)] public static F512 operator |(F512 a, F512 b) => new(a._v | b._v);
    [MethodImpl(Inline)] public static F512 Fma(F512 a, F512 b, F512 c) => new(Vector512.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(Inline)] public static F512 Min(F512 a, F512 b) => new(Vector512.MinNative(a._v, b._v));
    [MethodImpl(Inline)] public static F512 Max(F512 a, F512 b) => new(Vector512.MaxNative(a._v, b._v));
    [MethodImpl(Inline)] public static F512 IsNaN(F512 a) => new(Vector512.IsNaN(a._v));
    [MethodImpl(Inline)] public static F512 LessThan(F512 a, F512 b) => new(Vector512.LessThan(a._v, b._v));
    [MethodImpl(Inline)] public static F512 Equal(F512 a, F512 b) => new(Vector512.Equals(a._v, b._v));
    [MethodImpl(Inline)] public static F512 Select(F512 m, F512 t, F512 f) => new(Vector512.ConditionalSelect(m._v, t._v, f._v));
    [MethodImpl(Inline)] public static F512 AddInt(F512 a, F512 b) => new((a._v.AsInt32() + b._v.AsInt32()).AsSingle());
    [MethodImpl(Inline)] public static F512 SubInt(F512 a, F512 b) => new((a._v.AsInt32() - b._v.AsInt32()).AsSingle());
    [MethodImpl(Inline)] public static F512 ShiftLeftInt(F512 a, int n) => new(Vector512.ShiftLeft(a._v.AsInt32(), n).AsSingle());
    [MethodImpl(Inline)] public static F512 ShiftRightArithmeticInt(F512 a, int n) => new(Vector512.ShiftRightArithmetic(a._v.AsInt32(), n).AsSingle());
    [MethodImpl(Inline)] public static F512 ShiftRightLogicalInt(F512 a, int n) => new(Vector512.ShiftRightLogical(a._v.AsUInt32(), n).AsSingle());
    [MethodImpl(Inline)] public static bool AnyIntLessThan(F512 a, int bound) => Vector512.LessThanAny(a._v.AsInt32(), Vector512.Create(bound));
    [MethodImpl(Inline)] public static F512 MultiplyInDouble(F512 a, F512 b)
    {
        var (alo, ahi) = Vector512.Widen(a._v);
        var (blo, bhi) = Vector512.Widen(b._v);
        return new(Vector512.Narrow(alo * blo, ahi * bhi));
    }
    [MethodImpl(Inline)] public static F512 InDouble<TK>(F512 x) where TK : struct, VectorMath.IDoubleKernel
    {
        var (lo, hi) = Vector512.Widen(x._v);
        return new(Vector512.Narrow(TK.Apply(new D512(lo)).V, TK.Apply(new D512(hi)).V));
    }
    [MethodImpl(Inline)] public static F512 CombineInDouble<TK>(F512 x, F512 dy, F512 p0, F512 p1, F512 p2, F512 p3, F512 p4, F512 p5, F512 p6)
        where TK : struct, VectorMath.IDoubleCombine
    {
        var (x0, x1) = Vector512.Widen(x._v); var (y0, y1) = Vector512.Widen(dy._v);
        var (a0, a1) = Vector512.Widen(p0._v); var (b0, b1) = Vector512.Widen(p1._v); var (c0, c1) = Vector512.Widen(p2._v);
        var (d0, d1) = Vector512.Widen(p3._v); var (e0, e1) = Vector512.Widen(p4._v); var (f0, f1) = Vector512.Widen(p5._v);
        var (g0, g1) = Vector512.Widen(p6._v);
        var lo = TK.Apply(new D512(x0), new D512(y0), new D512(a0), new D512(b0), new D512(c0), new D512(d0), new D512(e0), new D512(f0), new D512(g0));
        var hi = TK.Apply(new D512(x1), new D512(y1), new D512(a1), new D512(b1), new D512(c1), new D512(d1), new D512(e1), new D512(f1), new D512(g1));
        return new(Vector512.Narrow(lo.V, hi.V));
    }
    [MethodImpl(Inline)] public static void SplitInDouble<TK>(F512 x, out F512 hi, out F512 lo) where TK : struct, VectorMath.IDoubleKernel
    {
        var (x0, x1) = Vector512.Widen(x._v);
        var v0 = TK.Apply(new D512(x0)).V; var v1 = TK.Apply(new D512(x1)).V;
        var h = Vector512.Narrow(v0, v1);
        var (h0, h1) = Vector512.Widen(h);
        hi = new(h);
        lo = new(Vector512.Narrow(v0 - h0, v1 - h1));
    }
    [MethodImpl(Inline)] public static F512 RatioOfSumsInDouble(F512 a, F512 b, F512 c, F512 d)
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
    public static int Count { [MethodImpl(Inline)] get => Vector256<float>.Count; }
    [MethodImpl(Inline)] public static F256 Load(float* p) => new(Vector256.Load(p));
    [MethodImpl(Inline)] public static void Store(F256 v, float* p) => v._v.Store(p);
    [MethodImpl(Inline)] public static F256 Splat(float v) => new(Vector256.Create(v));
    [MethodImpl(Inline)] public static F256 SplatInt(int bits) => new(Vector256.Create(bits).AsSingle());
    [MethodImpl(Inline)] public static F256 operator +(F256 a, F256 b) => new(a._v + b._v);
    [MethodImpl(Inline)] public static F256 operator -(F256 a, F256 b) => new(a._v - b._v);
    [MethodImpl(Inline)] public static F256 operator *(F256 a, F256 b) => new(a._v * b._v);
    [MethodImpl(Inline)] public static F256 operator /(F256 a, F256 b) => new(a._v / b._v);
    [MethodImpl(Inline)] public static F256 operator &(F256 a, F256 b) => new(a._v & b._v);
    [MethodImpl(Inline)] public static F256 operator |(F256 a, F256 b) => new(a._v | b._v);
    [MethodImpl(Inline)] public static F256 Fma(F256 a, F256 b, F256 c) => new(Vector256.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(Inline)] public static F256 Min(F256 a, F256 b) => new(Vector256.MinNative(a._v, b._v));
    [MethodImpl(Inline)] public static F256 Max(F256 a, F256 b) => new(Vector256.MaxNative(a._v, b._v));
    [MethodImpl(Inline)] public static F256 IsNaN(F256 a) => new(Vector256.IsNaN(a._v));
    [MethodImpl(Inline)] public static F256 LessThan(F256 a, F256 b) => new(Vector256.LessThan(a._v, b._v));
    [MethodImpl(Inline)] public static F256 Equal(F256 a, F256 b) => new(Vector256.Equals(a._v, b._v));
    [MethodImpl(Inline)] public static F256 Select(F256 m, F256 t, F256 f) => new(Vector256.ConditionalSelect(m._v, t._v, f._v));
    [MethodImpl(Inline)] public static F256 AddInt(F256 a, F256 b) => new((a._v.AsInt32() + b._v.AsInt32()).AsSingle());
    [MethodImpl(Inline)] public static F256 SubInt(F256 a, F256 b) => new((a._v.AsInt32() - b._v.AsInt32()).AsSingle());
    [MethodImpl(Inline)] public static F256 ShiftLeftInt(F256 a, int n) => new(Vector256.ShiftLeft(a._v.AsInt32(), n).AsSingle());
    [MethodImpl(Inline)] public static F256 ShiftRightArithmeticInt(F256 a, int n) => new(Vector256.ShiftRightArithmetic(a._v.AsInt32(), n).AsSingle());
    [MethodImpl(Inline)] public static F256 ShiftRightLogicalInt(F256 a, int n) => new(Vector256.ShiftRightLogical(a._v.AsUInt32(), n).AsSingle());
    [MethodImpl(Inline)] public static bool AnyIntLessThan(F256 a, int bound) => Vector256.LessThanAny(a._v.AsInt32(), Vector256.Create(bound));
    [MethodImpl(Inline)] public static F256 MultiplyInDouble(F256 a, F256 b)
    {
        var (alo, ahi) = Vector256.Widen(a._v);
        var (blo, bhi) = Vector256.Widen(b._v);
        return new(Vector256.Narrow(alo * blo, ahi * bhi));
    }
    [MethodImpl(Inline)] public static F256 InDouble<TK>(F256 x) where TK : struct, VectorMath.IDoubleKernel
    {
        var (lo, hi) = Vector256.Widen(x._v);
        return new(Vector256.Narrow(TK.Apply(new D256(lo)).V, TK.Apply(new D256(hi)).V));
    }
    [MethodImpl(Inline)] public static F256 CombineInDouble<TK>(F256 x, F256 dy, F256 p0, F256 p1, F256 p2, F256 p3, F256 p4, F256 p5, F256 p6)
        where TK : struct, VectorMath.IDoubleCombine
    {
        var (x0, x1) = Vector256.Widen(x._v); var (y0, y1) = Vector256.Widen(dy._v);
        var (a0, a1) = Vector256.Widen(p0._v); var (b0, b1) = Vector256.Widen(p1._v); var (c0, c1) = Vector256.Widen(p2._v);
        var (d0, d1) = Vector256.Widen(p3._v); var (e0, e1) = Vector256.Widen(p4._v); var (f0, f1) = Vector256.Widen(p5._v);
        var (g0, g1) = Vector256.Widen(p6._v);
        var lo = TK.Apply(new D256(x0), new D256(y0), new D256(a0), new D256(b0), new D256(c0), new D256(d0), new D256(e0), new D256(f0), new D256(g0));
        var hi = TK.Apply(new D256(x1), new D256(y1), new D256(a1), new D256(b1), new D256(c1), new D256(d1), new D256(e1), new D256(f1), new D256(g1));
        return new(Vector256.Narrow(lo.V, hi.V));
    }
    [MethodImpl(Inline)] public static void SplitInDouble<TK>(F256 x, out F256 hi, out F256 lo) where TK : struct, VectorMath.IDoubleKernel
    {
        var (x0, x1) = Vector256.Widen(x._v);
        var v0 = TK.Apply(new D256(x0)).V; var v1 = TK.Apply(new D256(x1)).V;
        var h = Vector256.Narrow(v0, v1);
        var (h0, h1) = Vector256.Widen(h);
        hi = new(h);
        lo = new(Vector256.Narrow(v0 - h0, v1 - h1));
    }
    [MethodImpl(Inline)] public static F256 RatioOfSumsInDouble(F256 a, F256 b, F256 c, F256 d)
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
    public static int Count { [MethodImpl(Inline)] get => Vector128<float>.Count; }
    [MethodImpl(Inline)] public static F128 Load(float* p) => new(Vector128.Load(p));
    [MethodImpl(Inline)] public static void Store(F128 v, float* p) => v._v.Store(p);
    [MethodImpl(Inline)] public static F128 Splat(float v) => new(Vector128.Create(v));
    [MethodImpl(Inline)] public static F128 SplatInt(int bits) => new(Vector128.Create(bits).AsSingle());
    [MethodImpl(Inline)] public static F128 operator +(F128 a, F128 b) => new(a._v + b._v);
    [MethodImpl(Inline)] public static F128 operator -(F128 a, F128 b) => new(a._v - b._v);
    [MethodImpl(Inline)] public static F128 operator *(F128 a, F128 b) => new(a._v * b._v);
    [MethodImpl(Inline)] public static F128 operator /(F128 a, F128 b) => new(a._v / b._v);
    [MethodImpl(Inline)] public static F128 operator &(F128 a, F128 b) => new(a._v & b._v);
    [MethodImpl(Inline)] public static F128 operator |(F128 a, F128 b) => new(a._v | b._v);
    [MethodImpl(Inline)] public static F128 Fma(F128 a, F128 b, F128 c) => new(Vector128.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(Inline)] public static F128 Min(F128 a, F128 b) => new(Vector128.MinNative(a._v, b._v));
    [MethodImpl(Inline)] public static F128 Max(F128 a, F128 b) => new(Vector128.MaxNative(a._v, b._v));
    [MethodImpl(Inline)] public static F128 IsNaN(F128 a) => new(Vector128.IsNaN(a._v));
    [MethodImpl(Inline)] public static F128 LessThan(F128 a, F128 b) => new(Vector128.LessThan(a._v, b._v));
    [MethodImpl(Inline)] public static F128 Equal(F128 a, F128 b) => new(Vector128.Equals(a._v, b._v));
    [MethodImpl(Inline)] public static F128 Select(F128 m, F128 t, F128 f) => new(Vector128.ConditionalSelect(m._v, t._v, f._v));
    [MethodImpl(Inline)] public static F128 AddInt(F128 a, F128 b) => new((a._v.AsInt32() + b._v.AsInt32()).AsSingle());
    [MethodImpl(Inline)] public static F128 SubInt(F128 a, F128 b) => new((a._v.AsInt32() - b._v.AsInt32()).AsSingle());
    [MethodImpl(Inline)] public static F128 ShiftLeftInt(F128 a, int n) => new(Vector128.ShiftLeft(a._v.AsInt32(), n).AsSingle());
    [MethodImpl(Inline)] public static F128 ShiftRightArithmeticInt(F128 a, int n) => new(Vector128.ShiftRightArithmetic(a._v.AsInt32(), n).AsSingle());
    [MethodImpl(Inline)] public static F128 ShiftRightLogicalInt(F128 a, int n) => new(Vector128.ShiftRightLogical(a._v.AsUInt32(), n).AsSingle());
    [MethodImpl(Inline)] public static bool AnyIntLessThan(F128 a, int bound) => Vector128.LessThanAny(a._v.AsInt32(), Vector128.Create(bound));
    [MethodImpl(Inline)] public static F128 MultiplyInDouble(F128 a, F128 b)
    {
        var (alo, ahi) = Vector128.Widen(a._v);
        var (blo, bhi) = Vector128.Widen(b._v);
        return new(Vector128.Narrow(alo * blo, ahi * bhi));
    }
    [MethodImpl(Inline)] public static F128 InDouble<TK>(F128 x) where TK : struct, VectorMath.IDoubleKernel
    {
        var (lo, hi) = Vector128.Widen(x._v);
        return new(Vector128.Narrow(TK.Apply(new D128(lo)).V, TK.Apply(new D128(hi)).V));
    }
    [MethodImpl(Inline)] public static F128 CombineInDouble<TK>(F128 x, F128 dy, F128 p0, F128 p1, F128 p2, F128 p3, F128 p4, F128 p5, F128 p6)
        where TK : struct, VectorMath.IDoubleCombine
    {
        var (x0, x1) = Vector128.Widen(x._v); var (y0, y1) = Vector128.Widen(dy._v);
        var (a0, a1) = Vector128.Widen(p0._v); var (b0, b1) = Vector128.Widen(p1._v); var (c0, c1) = Vector128.Widen(p2._v);
        var (d0, d1) = Vector128.Widen(p3._v); var (e0, e1) = Vector128.Widen(p4._v); var (f0, f1) = Vector128.Widen(p5._v);
        var (g0, g1) = Vector128.Widen(p6._v);
        var lo = TK.Apply(new D128(x0), new D128(y0), new D128(a0), new D128(b0), new D128(c0), new D128(d0), new D128(e0), new D128(f0), new D128(g0));
        var hi = TK.Apply(new D128(x1), new D128(y1), new D128(a1), new D128(b1), new D128(c1), new D128(d1), new D128(e1), new D128(f1), new D128(g1));
        return new(Vector128.Narrow(lo.V, hi.V));
    }
    [MethodImpl(Inline)] public static void SplitInDouble<TK>(F128 x, out F128 hi, out F128 lo) where TK : struct, VectorMath.IDoubleKernel
    {
        var (x0, x1) = Vector128.Widen(x._v);
        var v0 = TK.Apply(new D128(x0)).V; var v1 = TK.Apply(new D128(x1)).V;
        var h = Vector128.Narrow(v0, v1);
        var (h0, h1) = Vector128.Widen(h);
        hi = new(h);
        lo = new(Vector128.Narrow(v0 - h0, v1 - h1));
    }
    [MethodImpl(Inline)] public static F128 RatioOfSumsInDouble(F128 a, F128 b, F128 c, F128 d)
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
    public static int Count { [MethodImpl(Inline)] get => 1; }
    [MethodImpl(Inline)] public static F1 Load(float* p) => new(*p);
    [MethodImpl(Inline)] public static void Store(F1 v, float* p) => *p = v._v;
    [MethodImpl(Inline)] public static F1 Splat(float v) => new(v);
    [MethodImpl(Inline)] public static F1 SplatInt(int bits) => F(bits);
    [MethodImpl(Inline)] public static F1 operator +(F1 a, F1 b) => new(a._v + b._v);
    [MethodImpl(Inline)] public static F1 operator -(F1 a, F1 b) => new(a._v - b._v);
    [MethodImpl(Inline)] public static F1 operator *(F1 a, F1 b) => new(a._v * b._v);
    [MethodImpl(Inline)] public static F1 operator /(F1 a, F1 b) => new(a._v / b._v);
    [MethodImpl(Inline)] public static F1 operator &(F1 a, F1 b) => F(I(a) & I(b));
    [MethodImpl(Inline)] public static F1 operator |(F1 a, F1 b) => F(I(a) | I(b));
    [MethodImpl(Inline)] public static F1 Fma(F1 a, F1 b, F1 c) => new(MathF.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(Inline)] public static F1 Min(F1 a, F1 b) => a._v < b._v ? a : b;
    [MethodImpl(Inline)] public static F1 Max(F1 a, F1 b) => a._v > b._v ? a : b;
    [MethodImpl(Inline)] public static F1 IsNaN(F1 a) => Mask(float.IsNaN(a._v));
    [MethodImpl(Inline)] public static F1 LessThan(F1 a, F1 b) => Mask(a._v < b._v);
    [MethodImpl(Inline)] public static F1 Equal(F1 a, F1 b) => Mask(a._v == b._v);
    [MethodImpl(Inline)] public static F1 Select(F1 m, F1 t, F1 f) => F((I(m) & I(t)) | (~I(m) & I(f)));
    [MethodImpl(Inline)] public static F1 AddInt(F1 a, F1 b) => F(I(a) + I(b));
    [MethodImpl(Inline)] public static F1 SubInt(F1 a, F1 b) => F(I(a) - I(b));
    [MethodImpl(Inline)] public static F1 ShiftLeftInt(F1 a, int n) => F(I(a) << n);
    [MethodImpl(Inline)] public static F1 ShiftRightArithmeticInt(F1 a, int n) => F(I(a) >> n);
    [MethodImpl(Inline)] public static F1 ShiftRightLogicalInt(F1 a, int n) => F((int)((uint)I(a) >> n));
    [MethodImpl(Inline)] public static bool AnyIntLessThan(F1 a, int bound) => I(a) < bound;
    [MethodImpl(Inline)] public static F1 MultiplyInDouble(F1 a, F1 b) => new((float)((double)a._v * b._v));
    [MethodImpl(Inline)] public static F1 InDouble<TK>(F1 x) where TK : struct, VectorMath.IDoubleKernel => new((float)TK.Apply(new D1(x._v)).V);
    [MethodImpl(Inline)] public static F1 CombineInDouble<TK>(F1 x, F1 dy, F1 p0, F1 p1, F1 p2, F1 p3, F1 p4, F1 p5, F1 p6)
        where TK : struct, VectorMath.IDoubleCombine =>
        new((float)TK.Apply(new D1(x._v), new D1(dy._v), new D1(p0._v), new D1(p1._v), new D1(p2._v), new D1(p3._v), new D1(p4._v), new D1(p5._v), new D1(p6._v)).V);
    [MethodImpl(Inline)] public static void SplitInDouble<TK>(F1 x, out F1 hi, out F1 lo) where TK : struct, VectorMath.IDoubleKernel
    {
        double v = TK.Apply(new D1(x._v)).V;
        float h = (float)v;
        hi = new(h);
        lo = new((float)(v - h));
    }
    [MethodImpl(Inline)] public static F1 RatioOfSumsInDouble(F1 a, F1 b, F1 c, F1 d) => new((float)(((double)a._v + b._v) / ((double)c._v + d._v)));
}

internal readonly unsafe struct D512(Vector512<double> v) : IDoubleLanes<D512>
{
    readonly Vector512<double> _v = v;
    internal Vector512<double> V { [MethodImpl(Inline)] get => _v; }
    public static int Count { [MethodImpl(Inline)] get => Vector512<double>.Count; }
    [MethodImpl(Inline)] public static D512 Load(double* p) => new(Vector512.Load(p));
    [MethodImpl(Inline)] public static void Store(D512 v, double* p) => v._v.Store(p);
    [MethodImpl(Inline)] public static D512 Splat(double v) => new(Vector512.Create(v));
    [MethodImpl(Inline)] public static D512 SplatLong(long bits) => new(Vector512.Create(bits).AsDouble());
    [MethodImpl(Inline)] public static D512 operator +(D512 a, D512 b) => new(a._v + b._v);
    [MethodImpl(Inline)] public static D512 operator -(D512 a, D512 b) => new(a._v - b._v);
    [MethodImpl(Inline)] public static D512 operator *(D512 a, D512 b) => new(a._v * b._v);
    [MethodImpl(Inline)] public static D512 operator /(D512 a, D512 b) => new(a._v / b._v);
    [MethodImpl(Inline)] public static D512 operator &(D512 a, D512 b) => new(a._v & b._v);
    [MethodImpl(Inline)] public static D512 operator |(D512 a, D512 b) => new(a._v | b._v);
    [MethodImpl(Inline)] public static D512 Fma(D512 a, D512 b, D512 c) => new(Vector512.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(Inline)] public static D512 Min(D512 a, D512 b) => new(Vector512.MinNative(a._v, b._v));
    [MethodImpl(Inline)] public static D512 Max(D512 a, D512 b) => new(Vector512.MaxNative(a._v, b._v));
    [MethodImpl(Inline)] public static D512 IsNaN(D512 a) => new(Vector512.IsNaN(a._v));
    [MethodImpl(Inline)] public static D512 LessThan(D512 a, D512 b) => new(Vector512.LessThan(a._v, b._v));
    [MethodImpl(Inline)] public static D512 Equal(D512 a, D512 b) => new(Vector512.Equals(a._v, b._v));
    [MethodImpl(Inline)] public static D512 Select(D512 m, D512 t, D512 f) => new(Vector512.ConditionalSelect(m._v, t._v, f._v));
    [MethodImpl(Inline)] public static D512 AddLong(D512 a, D512 b) => new((a._v.AsInt64() + b._v.AsInt64()).AsDouble());
    [MethodImpl(Inline)] public static D512 SubLong(D512 a, D512 b) => new((a._v.AsInt64() - b._v.AsInt64()).AsDouble());
    [MethodImpl(Inline)] public static D512 ShiftLeftLong(D512 a, int n) => new(Vector512.ShiftLeft(a._v.AsInt64(), n).AsDouble());
    [MethodImpl(Inline)] public static D512 ShiftRightLogicalLong(D512 a, int n) => new(Vector512.ShiftRightLogical(a._v.AsUInt64(), n).AsDouble());
}

internal readonly unsafe struct D256(Vector256<double> v) : IDoubleLanes<D256>
{
    readonly Vector256<double> _v = v;
    internal Vector256<double> V { [MethodImpl(Inline)] get => _v; }
    public static int Count { [MethodImpl(Inline)] get => Vector256<double>.Count; }
    [MethodImpl(Inline)] public static D256 Load(double* p) => new(Vector256.Load(p));
    [MethodImpl(Inline)] public static void Store(D256 v, double* p) => v._v.Store(p);
    [MethodImpl(Inline)] public static D256 Splat(double v) => new(Vector256.Create(v));
    [MethodImpl(Inline)] public static D256 SplatLong(long bits) => new(Vector256.Create(bits).AsDouble());
    [MethodImpl(Inline)] public static D256 operator +(D256 a, D256 b) => new(a._v + b._v);
    [MethodImpl(Inline)] public static D256 operator -(D256 a, D256 b) => new(a._v - b._v);
    [MethodImpl(Inline)] public static D256 operator *(D256 a, D256 b) => new(a._v * b._v);
    [MethodImpl(Inline)] public static D256 operator /(D256 a, D256 b) => new(a._v / b._v);
    [MethodImpl(Inline)] public static D256 operator &(D256 a, D256 b) => new(a._v & b._v);
    [MethodImpl(Inline)] public static D256 operator |(D256 a, D256 b) => new(a._v | b._v);
    [MethodImpl(Inline)] public static D256 Fma(D256 a, D256 b, D256 c) => new(Vector256.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(Inline)] public static D256 Min(D256 a, D256 b) => new(Vector256.MinNative(a._v, b._v));
    [MethodImpl(Inline)] public static D256 Max(D256 a, D256 b) => new(Vector256.MaxNative(a._v, b._v));
    [MethodImpl(Inline)] public static D256 IsNaN(D256 a) => new(Vector256.IsNaN(a._v));
    [MethodImpl(Inline)] public static D256 LessThan(D256 a, D256 b) => new(Vector256.LessThan(a._v, b._v));
    [MethodImpl(Inline)] public static D256 Equal(D256 a, D256 b) => new(Vector256.Equals(a._v, b._v));
    [MethodImpl(Inline)] public static D256 Select(D256 m, D256 t, D256 f) => new(Vector256.ConditionalSelect(m._v, t._v, f._v));
    [MethodImpl(Inline)] public static D256 AddLong(D256 a, D256 b) => new((a._v.AsInt64() + b._v.AsInt64()).AsDouble());
    [MethodImpl(Inline)] public static D256 SubLong(D256 a, D256 b) => new((a._v.AsInt64() - b._v.AsInt64()).AsDouble());
    [MethodImpl(Inline)] public static D256 ShiftLeftLong(D256 a, int n) => new(Vector256.ShiftLeft(a._v.AsInt64(), n).AsDouble());
    [MethodImpl(Inline)] public static D256 ShiftRightLogicalLong(D256 a, int n) => new(Vector256.ShiftRightLogical(a._v.AsUInt64(), n).AsDouble());
}

internal readonly unsafe struct D128(Vector128<double> v) : IDoubleLanes<D128>
{
    readonly Vector128<double> _v = v;
    internal Vector128<double> V { [MethodImpl(Inline)] get => _v; }
    public static int Count { [MethodImpl(Inline)] get => Vector128<double>.Count; }
    [MethodImpl(Inline)] public static D128 Load(double* p) => new(Vector128.Load(p));
    [MethodImpl(Inline)] public static void Store(D128 v, double* p) => v._v.Store(p);
    [MethodImpl(Inline)] public static D128 Splat(double v) => new(Vector128.Create(v));
    [MethodImpl(Inline)] public static D128 SplatLong(long bits) => new(Vector128.Create(bits).AsDouble());
    [MethodImpl(Inline)] public static D128 operator +(D128 a, D128 b) => new(a._v + b._v);
    [MethodImpl(Inline)] public static D128 operator -(D128 a, D128 b) => new(a._v - b._v);
    [MethodImpl(Inline)] public static D128 operator *(D128 a, D128 b) => new(a._v * b._v);
    [MethodImpl(Inline)] public static D128 operator /(D128 a, D128 b) => new(a._v / b._v);
    [MethodImpl(Inline)] public static D128 operator &(D128 a, D128 b) => new(a._v & b._v);
    [MethodImpl(Inline)] public static D128 operator |(D128 a, D128 b) => new(a._v | b._v);
    [MethodImpl(Inline)] public static D128 Fma(D128 a, D128 b, D128 c) => new(Vector128.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(Inline)] public static D128 Min(D128 a, D128 b) => new(Vector128.MinNative(a._v, b._v));
    [MethodImpl(Inline)] public static D128 Max(D128 a, D128 b) => new(Vector128.MaxNative(a._v, b._v));
    [MethodImpl(Inline)] public static D128 IsNaN(D128 a) => new(Vector128.IsNaN(a._v));
    [MethodImpl(Inline)] public static D128 LessThan(D128 a, D128 b) => new(Vector128.LessThan(a._v, b._v));
    [MethodImpl(Inline)] public static D128 Equal(D128 a, D128 b) => new(Vector128.Equals(a._v, b._v));
    [MethodImpl(Inline)] public static D128 Select(D128 m, D128 t, D128 f) => new(Vector128.ConditionalSelect(m._v, t._v, f._v));
    [MethodImpl(Inline)] public static D128 AddLong(D128 a, D128 b) => new((a._v.AsInt64() + b._v.AsInt64()).AsDouble());
    [MethodImpl(Inline)] public static D128 SubLong(D128 a, D128 b) => new((a._v.AsInt64() - b._v.AsInt64()).AsDouble());
    [MethodImpl(Inline)] public static D128 ShiftLeftLong(D128 a, int n) => new(Vector128.ShiftLeft(a._v.AsInt64(), n).AsDouble());
    [MethodImpl(Inline)] public static D128 ShiftRightLogicalLong(D128 a, int n) => new(Vector128.ShiftRightLogical(a._v.AsUInt64(), n).AsDouble());
}

/// <summary>One float64 lane; Math.FusedMultiplyAdd is guaranteed fused.</summary>
internal readonly unsafe struct D1(double v) : IDoubleLanes<D1>
{
    readonly double _v = v;
    internal double V { [MethodImpl(Inline)] get => _v; }
    static long L(D1 a) => BitConverter.DoubleToInt64Bits(a._v);
    static D1 D(long bits) => new(BitConverter.Int64BitsToDouble(bits));
    static D1 Mask(bool b) => D(b ? -1L : 0L);
    public static int Count { [MethodImpl(Inline)] get => 1; }
    [MethodImpl(Inline)] public static D1 Load(double* p) => new(*p);
    [MethodImpl(Inline)] public static void Store(D1 v, double* p) => *p = v._v;
    [MethodImpl(Inline)] public static D1 Splat(double v) => new(v);
    [MethodImpl(Inline)] public static D1 SplatLong(long bits) => D(bits);
    [MethodImpl(Inline)] public static D1 operator +(D1 a, D1 b) => new(a._v + b._v);
    [MethodImpl(Inline)] public static D1 operator -(D1 a, D1 b) => new(a._v - b._v);
    [MethodImpl(Inline)] public static D1 operator *(D1 a, D1 b) => new(a._v * b._v);
    [MethodImpl(Inline)] public static D1 operator /(D1 a, D1 b) => new(a._v / b._v);
    [MethodImpl(Inline)] public static D1 operator &(D1 a, D1 b) => D(L(a) & L(b));
    [MethodImpl(Inline)] public static D1 operator |(D1 a, D1 b) => D(L(a) | L(b));
    [MethodImpl(Inline)] public static D1 Fma(D1 a, D1 b, D1 c) => new(Math.FusedMultiplyAdd(a._v, b._v, c._v));
    [MethodImpl(Inline)] public static D1 Min(D1 a, D1 b) => a._v < b._v ? a : b;
    [MethodImpl(Inline)] public static D1 Max(D1 a, D1 b) => a._v > b._v ? a : b;
    [MethodImpl(Inline)] public static D1 IsNaN(D1 a) => Mask(double.IsNaN(a._v));
    [MethodImpl(Inline)] public static D1 LessThan(D1 a, D1 b) => Mask(a._v < b._v);
    [MethodImpl(Inline)] public static D1 Equal(D1 a, D1 b) => Mask(a._v == b._v);
    [MethodImpl(Inline)] public static D1 Select(D1 m, D1 t, D1 f) => D((L(m) & L(t)) | (~L(m) & L(f)));
    [MethodImpl(Inline)] public static D1 AddLong(D1 a, D1 b) => D(L(a) + L(b));
    [MethodImpl(Inline)] public static D1 SubLong(D1 a, D1 b) => D(L(a) - L(b));
    [MethodImpl(Inline)] public static D1 ShiftLeftLong(D1 a, int n) => D(L(a) << n);
    [MethodImpl(Inline)] public static D1 ShiftRightLogicalLong(D1 a, int n) => D((long)((ulong)L(a) >> n));
}

// Two vectors as one lane type, each operation applied to both halves side by side: the kernels are inlined once, and
// the two independent dependency chains interleave instruction by instruction, which the out-of-order core overlaps
// (a kernel is one ~100-cycle chain). Unrolling the driver loop instead inlines the kernel several times and runs into
// the JIT's inlining limits. Per lane, the operations are exactly those of TL.

internal readonly unsafe struct X2F<TL>(TL a, TL b) : IFloatLanes<X2F<TL>> where TL : unmanaged, IFloatLanes<TL>
{
    readonly TL _a = a, _b = b;
    public static int Count { [MethodImpl(Inline)] get => 2 * TL.Count; }
    [MethodImpl(Inline)] public static X2F<TL> Load(float* p) => new(TL.Load(p), TL.Load(p + TL.Count));
    [MethodImpl(Inline)] public static void Store(X2F<TL> v, float* p) { TL.Store(v._a, p); TL.Store(v._b, p + TL.Count); }
    [MethodImpl(Inline)] public static X2F<TL> Splat(float v) => new(TL.Splat(v), TL.Splat(v));
    [MethodImpl(Inline)] public static X2F<TL> SplatInt(int bits) => new(TL.SplatInt(bits), TL.SplatInt(bits));
    [MethodImpl(Inline)] public static X2F<TL> operator +(X2F<TL> a, X2F<TL> b) => new(a._a + b._a, a._b + b._b);
    [MethodImpl(Inline)] public static X2F<TL> operator -(X2F<TL> a, X2F<TL> b) => new(a._a - b._a, a._b - b._b);
    [MethodImpl(Inline)] public static X2F<TL> operator *(X2F<TL> a, X2F<TL> b) => new(a._a * b._a, a._b * b._b);
    [MethodImpl(Inline)] public static X2F<TL> operator /(X2F<TL> a, X2F<TL> b) => new(a._a / b._a, a._b / b._b);
    [MethodImpl(Inline)] public static X2F<TL> operator &(X2F<TL> a, X2F<TL> b) => new(a._a & b._a, a._b & b._b);
    [MethodImpl(Inline)] public static X2F<TL> operator |(X2F<TL> a, X2F<TL> b) => new(a._a | b._a, a._b | b._b);
    [MethodImpl(Inline)] public static X2F<TL> Fma(X2F<TL> a, X2F<TL> b, X2F<TL> c) => new(TL.Fma(a._a, b._a, c._a), TL.Fma(a._b, b._b, c._b));
    [MethodImpl(Inline)] public static X2F<TL> Min(X2F<TL> a, X2F<TL> b) => new(TL.Min(a._a, b._a), TL.Min(a._b, b._b));
    [MethodImpl(Inline)] public static X2F<TL> Max(X2F<TL> a, X2F<TL> b) => new(TL.Max(a._a, b._a), TL.Max(a._b, b._b));
    [MethodImpl(Inline)] public static X2F<TL> IsNaN(X2F<TL> a) => new(TL.IsNaN(a._a), TL.IsNaN(a._b));
    [MethodImpl(Inline)] public static X2F<TL> LessThan(X2F<TL> a, X2F<TL> b) => new(TL.LessThan(a._a, b._a), TL.LessThan(a._b, b._b));
    [MethodImpl(Inline)] public static X2F<TL> Equal(X2F<TL> a, X2F<TL> b) => new(TL.Equal(a._a, b._a), TL.Equal(a._b, b._b));
    [MethodImpl(Inline)] public static X2F<TL> Select(X2F<TL> m, X2F<TL> t, X2F<TL> f) => new(TL.Select(m._a, t._a, f._a), TL.Select(m._b, t._b, f._b));
    [MethodImpl(Inline)] public static X2F<TL> AddInt(X2F<TL> a, X2F<TL> b) => new(TL.AddInt(a._a, b._a), TL.AddInt(a._b, b._b));
    [MethodImpl(Inline)] public static X2F<TL> SubInt(X2F<TL> a, X2F<TL> b) => new(TL.SubInt(a._a, b._a), TL.SubInt(a._b, b._b));
    [MethodImpl(Inline)] public static X2F<TL> ShiftLeftInt(X2F<TL> a, int n) => new(TL.ShiftLeftInt(a._a, n), TL.ShiftLeftInt(a._b, n));
    [MethodImpl(Inline)] public static X2F<TL> ShiftRightArithmeticInt(X2F<TL> a, int n) => new(TL.ShiftRightArithmeticInt(a._a, n), TL.ShiftRightArithmeticInt(a._b, n));
    [MethodImpl(Inline)] public static X2F<TL> ShiftRightLogicalInt(X2F<TL> a, int n) => new(TL.ShiftRightLogicalInt(a._a, n), TL.ShiftRightLogicalInt(a._b, n));
    [MethodImpl(Inline)] public static bool AnyIntLessThan(X2F<TL> a, int bound) => TL.AnyIntLessThan(a._a, bound) | TL.AnyIntLessThan(a._b, bound);
    [MethodImpl(Inline)] public static X2F<TL> MultiplyInDouble(X2F<TL> a, X2F<TL> b) => new(TL.MultiplyInDouble(a._a, b._a), TL.MultiplyInDouble(a._b, b._b));
    [MethodImpl(Inline)] public static X2F<TL> InDouble<TK>(X2F<TL> x) where TK : struct, VectorMath.IDoubleKernel => new(TL.InDouble<TK>(x._a), TL.InDouble<TK>(x._b));
    [MethodImpl(Inline)] public static X2F<TL> CombineInDouble<TK>(X2F<TL> x, X2F<TL> dy, X2F<TL> p0, X2F<TL> p1, X2F<TL> p2, X2F<TL> p3, X2F<TL> p4, X2F<TL> p5, X2F<TL> p6)
        where TK : struct, VectorMath.IDoubleCombine =>
        new(TL.CombineInDouble<TK>(x._a, dy._a, p0._a, p1._a, p2._a, p3._a, p4._a, p5._a, p6._a),
            TL.CombineInDouble<TK>(x._b, dy._b, p0._b, p1._b, p2._b, p3._b, p4._b, p5._b, p6._b));
    [MethodImpl(Inline)] public static void SplitInDouble<TK>(X2F<TL> x, out X2F<TL> hi, out X2F<TL> lo) where TK : struct, VectorMath.IDoubleKernel
    {
        TL.SplitInDouble<TK>(x._a, out var ha, out var la);
        TL.SplitInDouble<TK>(x._b, out var hb, out var lb);
        hi = new(ha, hb);
        lo = new(la, lb);
    }
    [MethodImpl(Inline)] public static X2F<TL> RatioOfSumsInDouble(X2F<TL> a, X2F<TL> b, X2F<TL> c, X2F<TL> d) =>
        new(TL.RatioOfSumsInDouble(a._a, b._a, c._a, d._a), TL.RatioOfSumsInDouble(a._b, b._b, c._b, d._b));
}

internal readonly unsafe struct X2D<TL>(TL a, TL b) : IDoubleLanes<X2D<TL>> where TL : unmanaged, IDoubleLanes<TL>
{
    readonly TL _a = a, _b = b;
    public static int Count { [MethodImpl(Inline)] get => 2 * TL.Count; }
    [MethodImpl(Inline)] public static X2D<TL> Load(double* p) => new(TL.Load(p), TL.Load(p + TL.Count));
    [MethodImpl(Inline)] public static void Store(X2D<TL> v, double* p) { TL.Store(v._a, p); TL.Store(v._b, p + TL.Count); }
    [MethodImpl(Inline)] public static X2D<TL> Splat(double v) => new(TL.Splat(v), TL.Splat(v));
    [MethodImpl(Inline)] public static X2D<TL> SplatLong(long bits) => new(TL.SplatLong(bits), TL.SplatLong(bits));
    [MethodImpl(Inline)] public static X2D<TL> operator +(X2D<TL> a, X2D<TL> b) => new(a._a + b._a, a._b + b._b);
    [MethodImpl(Inline)] public static X2D<TL> operator -(X2D<TL> a, X2D<TL> b) => new(a._a - b._a, a._b - b._b);
    [MethodImpl(Inline)] public static X2D<TL> operator *(X2D<TL> a, X2D<TL> b) => new(a._a * b._a, a._b * b._b);
    [MethodImpl(Inline)] public static X2D<TL> operator /(X2D<TL> a, X2D<TL> b) => new(a._a / b._a, a._b / b._b);
    [MethodImpl(Inline)] public static X2D<TL> operator &(X2D<TL> a, X2D<TL> b) => new(a._a & b._a, a._b & b._b);
    [MethodImpl(Inline)] public static X2D<TL> operator |(X2D<TL> a, X2D<TL> b) => new(a._a | b._a, a._b | b._b);
    [MethodImpl(Inline)] public static X2D<TL> Fma(X2D<TL> a, X2D<TL> b, X2D<TL> c) => new(TL.Fma(a._a, b._a, c._a), TL.Fma(a._b, b._b, c._b));
    [MethodImpl(Inline)] public static X2D<TL> Min(X2D<TL> a, X2D<TL> b) => new(TL.Min(a._a, b._a), TL.Min(a._b, b._b));
    [MethodImpl(Inline)] public static X2D<TL> Max(X2D<TL> a, X2D<TL> b) => new(TL.Max(a._a, b._a), TL.Max(a._b, b._b));
    [MethodImpl(Inline)] public static X2D<TL> IsNaN(X2D<TL> a) => new(TL.IsNaN(a._a), TL.IsNaN(a._b));
    [MethodImpl(Inline)] public static X2D<TL> LessThan(X2D<TL> a, X2D<TL> b) => new(TL.LessThan(a._a, b._a), TL.LessThan(a._b, b._b));
    [MethodImpl(Inline)] public static X2D<TL> Equal(X2D<TL> a, X2D<TL> b) => new(TL.Equal(a._a, b._a), TL.Equal(a._b, b._b));
    [MethodImpl(Inline)] public static X2D<TL> Select(X2D<TL> m, X2D<TL> t, X2D<TL> f) => new(TL.Select(m._a, t._a, f._a), TL.Select(m._b, t._b, f._b));
    [MethodImpl(Inline)] public static X2D<TL> AddLong(X2D<TL> a, X2D<TL> b) => new(TL.AddLong(a._a, b._a), TL.AddLong(a._b, b._b));
    [MethodImpl(Inline)] public static X2D<TL> SubLong(X2D<TL> a, X2D<TL> b) => new(TL.SubLong(a._a, b._a), TL.SubLong(a._b, b._b));
    [MethodImpl(Inline)] public static X2D<TL> ShiftLeftLong(X2D<TL> a, int n) => new(TL.ShiftLeftLong(a._a, n), TL.ShiftLeftLong(a._b, n));
    [MethodImpl(Inline)] public static X2D<TL> ShiftRightLogicalLong(X2D<TL> a, int n) => new(TL.ShiftRightLogicalLong(a._a, n), TL.ShiftRightLogicalLong(a._b, n));
}

internal static class LaneInlining
{
    public const MethodImplOptions Inline = MethodImplOptions.AggressiveInlining;
}

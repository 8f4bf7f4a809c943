using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

[assembly: InternalsVisibleTo("Engine.Tests")]

namespace Engine.Ops;

/// <summary>
/// The engine's own vectorized transcendental functions over spans, whose result bits depend only on the input value:
/// not on the JIT tier (tier-0, ReadyToRun or tier-1 code), the vector width the machine offers (Vector512, Vector256,
/// Vector128 or none), nor an element's position in the span. Each function is one algorithm — range reduction and a
/// polynomial, written with fused multiply-adds — implemented once, generically over the lane type
/// (<c>VectorLanes.cs</c>), so every width executes the same IEEE operations in the same order; the remainder of a
/// span runs through the same vector code on a zero-padded copy. <c>TensorPrimitives</c> gives no such guarantee: its
/// float64 <c>Exp</c> was seen to round differently in tier-0 and tier-1 code of one process (see
/// <c>TierDeterminismTests</c>), and several of its functions change bits when the process runs without AVX2/FMA.
/// </summary>
/// <remarks>
/// Accuracy, measured against float64 <c>Math</c> functions (float32) or glibc (float64) over stratified samples of
/// the whole range, is within 2 ulp (1 ulp is the largest error seen); see <c>VectorMathTests</c>. The source <c>x</c> and destination <c>y</c> of every
/// function may be the same span (in place) but must not otherwise overlap; <c>y</c> must be at least as long as <c>x</c>.
/// </remarks>
public static unsafe partial class VectorMath
{
    /// <summary>
    /// The widest vector the kernels may use (512, 256, 128, or 0 for the scalar lanes): a test switch that shows every
    /// width gives the same bits. Results never depend on it.
    /// </summary>
    internal static int MaxVectorBits = 512;

    /// <summary>eˣ elementwise in float32: exp(−∞) = 0, exp(+∞) = +∞, overflow to +∞ above 88.72, gradual underflow
    /// through the subnormals to 0 below −103.97, NaN stays NaN.</summary>
    public static void Exp(ReadOnlySpan<float> x, Span<float> y) => MapFloat<ExpFloat>(x, y, "VectorMath.Exp");

    /// <summary>eˣ elementwise in float64, with the same special values as the float32 overload (overflow above
    /// 709.78, underflow below −745.13).</summary>
    public static void Exp(ReadOnlySpan<double> x, Span<double> y) => MapDouble<ExpDouble>(x, y, "VectorMath.Exp");

    /// <summary>Natural logarithm elementwise in float32: log(±0) = −∞, log(x &lt; 0) = NaN, log(+∞) = +∞,
    /// subnormal inputs accurate (scaled into the normal range first).</summary>
    public static void Log(ReadOnlySpan<float> x, Span<float> y) => MapFloat<LogFloat>(x, y, "VectorMath.Log");

    /// <summary>Natural logarithm elementwise in float64, with the same special values as the float32 overload.</summary>
    public static void Log(ReadOnlySpan<double> x, Span<double> y) => MapDouble<LogDouble>(x, y, "VectorMath.Log");

    /// <summary>tanh x elementwise in float32: odd, so tanh(−0) = −0; ±1 for large |x|; relative accuracy near 0
    /// (an odd polynomial there, not 1 − 2/(e²ˣ + 1)).</summary>
    public static void Tanh(ReadOnlySpan<float> x, Span<float> y) => MapFloat<TanhFloat>(x, y, "VectorMath.Tanh");

    // The gradients below work a chunk at a time (stack buffers of this many elements).
    const int GradientChunk = 1024;

    /// <summary>
    /// dx = dy·tanh′(x), tanh′(x) = 1 − tanh²(x) = 4t/(1 + t)² with t = e^(−2|x|), in float64 and rounded once to float32
    /// before the product with dy: within 1 ulp of the correctly rounded derivative over the whole range. (The textbook
    /// 1 − tanh² on the float32 forward, PyTorch's formula, cancels: it is 0 from |x| ≈ 9 on, where tanh′(10) = 8.2e-9.)
    /// <paramref name="dx"/> may alias either input.
    /// </summary>
    public static void TanhBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) =>
        LogisticBellBackward(x, dy, dx, -2.0, 4.0, "VectorMath.TanhBackward");

    /// <summary>
    /// dx = dy·σ′(x), σ′(x) = σ(x)(1 − σ(x)) = t/(1 + t)² with t = e^(−|x|), in float64 and rounded once to float32 before
    /// the product with dy: within 1 ulp of the correctly rounded derivative (σ(1 − σ) on the float32 forward is 0
    /// from x ≈ 17 on). <paramref name="dx"/> may alias either input.
    /// </summary>
    public static void SigmoidBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx) =>
        LogisticBellBackward(x, dy, dx, -1.0, 1.0, "VectorMath.SigmoidBackward");

    // dx = dy·(float)(c·t/(1 + t)²), t = e^(k|x|): the bell both derivatives are (an even function, no cancellation on
    // either side). float64 keeps every step's error near 1e-16 relative, so the one rounding to float32 decides the
    // result; t underflows to 0 only where the derivative is below float32's smallest subnormal anyway. NaN stays NaN.
    static void LogisticBellBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx, double k, double c, string op)
    {
        CheckGradientSpans(x, dy, dx, op);
        Span<double> a = stackalloc double[GradientChunk], t = stackalloc double[GradientChunk];
        for (int i = 0; i < x.Length; i += GradientChunk)
        {
            int n = Math.Min(GradientChunk, x.Length - i);
            var ai = a[..n]; var ti = t[..n];
            for (int j = 0; j < n; j++) ai[j] = k * Math.Abs((double)x[i + j]);
            Exp(ai, ti);
            for (int j = 0; j < n; j++)
            {
                double u = ti[j], w = 1 + u;
                dx[i + j] = dy[i + j] * (float)(c * u / (w * w));
            }
        }
    }

    /// <summary>dx = dy·eˣ with eˣ from <see cref="Exp(ReadOnlySpan{float}, Span{float})"/>; <paramref name="dx"/> may alias either input.</summary>
    public static void ExpBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        CheckGradientSpans(x, dy, dx, "VectorMath.ExpBackward");
        Span<float> e = stackalloc float[GradientChunk];
        for (int i = 0; i < x.Length; i += GradientChunk)
        {
            int n = Math.Min(GradientChunk, x.Length - i);
            var ei = e[..n];
            Exp(x.Slice(i, n), ei);
            TensorPrimitives.Multiply(dy.Slice(i, n), ei, dx.Slice(i, n));
        }
    }

    static void CheckGradientSpans(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx, string op)
    {
        if (x.Length != dy.Length || x.Length != dx.Length) throw new ArgumentException($"{op}: spans of different lengths");
    }

    /// <summary>
    /// The ReLU gradient dx = dy·(x &gt; 0 ? 1 : 0), bit for bit as <see cref="UnaryGradOp{TOp}"/>'s scalar form (a NaN
    /// or infinite dy still gives NaN where x ≤ 0, as a product with 0). <paramref name="dx"/> may alias either input.
    /// </summary>
    public static void ReluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        CheckGradientSpans(x, dy, dx, "VectorMath.ReluBackward");
        int i = 0;
        if (System.Numerics.Vector.IsHardwareAccelerated)
        {
            int w = System.Numerics.Vector<float>.Count;
            var one = System.Numerics.Vector<float>.One;
            for (; i <= x.Length - w; i += w)
            {
                var gate = System.Numerics.Vector.ConditionalSelect(System.Numerics.Vector.GreaterThan(new System.Numerics.Vector<float>(x[i..]), System.Numerics.Vector<float>.Zero), one, System.Numerics.Vector<float>.Zero);
                (new System.Numerics.Vector<float>(dy[i..]) * gate).CopyTo(dx[i..]);
            }
        }
        for (; i < x.Length; i++) dx[i] = dy[i] * (x[i] > 0 ? 1f : 0f);
    }

    /// <summary>The logistic function 1/(1 + e⁻ˣ) elementwise in float32, from e^−|x| so nothing overflows: relative
    /// accuracy in the lower tail, down to the subnormal results below x ≈ −87.3; 1 for large x.</summary>
    public static void Sigmoid(ReadOnlySpan<float> x, Span<float> y) => MapFloat<SigmoidFloat>(x, y, "VectorMath.Sigmoid");

    // ---------------- the kernels ----------------

    internal interface IFloatKernel
    {
        static abstract TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL>;
    }

    internal interface IDoubleKernel
    {
        static abstract TL Apply<TL>(TL x) where TL : unmanaged, IDoubleLanes<TL>;
    }

    /// <summary>A float32 kernel of two inputs (an activation's backward: x and the incoming gradient dy).</summary>
    internal interface IFloatKernel2
    {
        static abstract TL Apply<TL>(TL x, TL dy) where TL : unmanaged, IFloatLanes<TL>;
    }

    /// <summary>The float64 combine of <see cref="IFloatLanes{TSelf}.CombineInDouble"/>.</summary>
    internal interface IDoubleCombine
    {
        static abstract TL Apply<TL>(TL x, TL dy, TL p0, TL p1, TL p2, TL p3, TL p4, TL p5, TL p6) where TL : unmanaged, IDoubleLanes<TL>;
    }

    // float32 eˣ in float32 arithmetic. x = n·ln2 + r with n = round(x/ln2), |r| ≤ ln2/2 (+ a rounding sliver);
    // eˣ = 2ⁿ·(1 + r + r²·q(r)), q the degree-4 part of the degree-6 minimax fit of eʳ − 1 on [−0.3467, 0.3467]
    // (error 3.1e-9, 0.05 ulp). r is kept as an exact high part rhi and a small low part rlo, and 1 + rhi as an exact
    // pair, so the only rounding of a quantity of size 1 is the last fused multiply-add: about 0.65 ulp from the true
    // value in all. No tables; the only branch picks between two multiplies that give the same bits.
    readonly struct ExpFloat : IFloatKernel
    {
        internal const float Log2E = 1.44269502f, Shift = 12582912f; // 1.5·2²³: adding it rounds to an integer, kept in the low bits
        internal const float Ln2Hi = 0.693147182f, Ln2Lo = -1.90465421e-09f; // float(ln2) and float(ln2 − float(ln2))
        internal const float C2 = 0.5f, C3 = 0.166665182f, C4 = 0.0416662060f, C5 = 0.00836890843f, C6 = 0.00139505242f;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL>
        {
            // Beyond [−105, 89] the result is 0 or +∞ either way; the clamp keeps n within [−152, 129].
            var xc = TL.Min(TL.Max(x, TL.Splat(-105f)), TL.Splat(89f));
            var z = TL.Fma(xc, TL.Splat(Log2E), TL.Splat(Shift));
            var n = z - TL.Splat(Shift);
            // Exact: n·Ln2Hi is exact inside the FMA, and x − n·Ln2Hi is a multiple of 2⁻²⁵ below 1/2 in magnitude.
            var rhi = TL.Fma(n, TL.Splat(-Ln2Hi), xc);
            var rlo = n * TL.Splat(-Ln2Lo);
            var r = rhi + rlo; // only the polynomial's argument, where its rounding is damped by r²
            var q = TL.Fma(TL.Splat(C6), r, TL.Splat(C5));
            q = TL.Fma(q, r, TL.Splat(C4));
            q = TL.Fma(q, r, TL.Splat(C3));
            q = TL.Fma(q, r, TL.Splat(C2));
            var a = TL.Fma(r * r, q, rlo);
            // 1 + rhi = hi + lo exactly (Fast2Sum, as |rhi| < 1).
            var one = TL.Splat(1f);
            var hi = one + rhi;
            var lo = (one - hi) + rhi;
            // z and Shift share a binade, so their bit patterns differ by exactly n. 2ⁿ as two normal factors 2ⁿ¹·2ⁿ²:
            // (hi + lo + a)·2ⁿ¹ is rounded once, in the normal range (hi·2ⁿ¹ is exact); the product with 2ⁿ² is exact
            // unless it overflows or is subnormal, and then it rounds once more, to the correctly rounded ∞, subnormal or 0.
            var ni = TL.SubInt(z, TL.Splat(Shift));
            var n1 = TL.ShiftRightArithmeticInt(ni, 1);
            var n2 = TL.SubInt(ni, n1);
            var s1 = TL.ShiftLeftInt(TL.AddInt(n1, TL.SplatInt(127)), 23);
            var s2 = TL.ShiftLeftInt(TL.AddInt(n2, TL.SplatInt(127)), 23);
            var t = TL.Fma(hi, s1, (lo + a) * s1);
            // Underflowing lanes (n < −126) take the assist-free multiply, which gives the same bits.
            var y = TL.AnyIntLessThan(ni, -126) ? TL.MultiplyInDouble(t, s2) : t * s2;
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }

    // float64 eˣ: the float32 range reduction and scaling with a degree-12 minimax fit p(r) of eʳ − 1 (error 5.4e-20,
    // far below an ulp), in the plainer form 2ⁿ·(1 + p): the roundings of r and p contribute at most 2⁻⁵⁵ each, the
    // final fused step half an ulp, so about 1 ulp in all.
    readonly struct ExpDouble : IDoubleKernel
    {
        const double Log2E = 1.4426950408889634, Shift = 6755399441055744.0; // 1.5·2⁵²
        const double Ln2Hi = 0.6931471805599453, Ln2Lo = 2.3190468138462996e-17;
        const double C2 = 0.5, C3 = 0.16666666666666685, C4 = 0.04166666666666673, C5 = 0.008333333333316702,
            C6 = 0.0013888888888858484, C7 = 0.00019841269897149225, C8 = 2.4801587373659905e-05,
            C9 = 2.7557234145299404e-06, C10 = 2.7557233427416743e-07, C11 = 2.511227215985542e-08,
            C12 = 2.092692303361767e-09;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IDoubleLanes<TL>
        {
            var xc = TL.Min(TL.Max(x, TL.Splat(-746.0)), TL.Splat(710.0)); // n within [−1077, 1025]
            var z = TL.Fma(xc, TL.Splat(Log2E), TL.Splat(Shift));
            var n = z - TL.Splat(Shift);
            var r = TL.Fma(n, TL.Splat(-Ln2Hi), xc); // exact, as in float32
            r = TL.Fma(n, TL.Splat(-Ln2Lo), r);
            var q = TL.Fma(TL.Splat(C12), r, TL.Splat(C11));
            q = TL.Fma(q, r, TL.Splat(C10));
            q = TL.Fma(q, r, TL.Splat(C9));
            q = TL.Fma(q, r, TL.Splat(C8));
            q = TL.Fma(q, r, TL.Splat(C7));
            q = TL.Fma(q, r, TL.Splat(C6));
            q = TL.Fma(q, r, TL.Splat(C5));
            q = TL.Fma(q, r, TL.Splat(C4));
            q = TL.Fma(q, r, TL.Splat(C3));
            q = TL.Fma(q, r, TL.Splat(C2));
            var p = TL.Fma(q, r * r, r);
            var ni = TL.SubLong(z, TL.Splat(Shift));
            // n >> 1 without a 64-bit arithmetic shift (which AVX2 lacks): bias n to be non-negative first.
            var n1 = TL.SubLong(TL.ShiftRightLogicalLong(TL.AddLong(ni, TL.SplatLong(2048)), 1), TL.SplatLong(1024));
            var n2 = TL.SubLong(ni, n1);
            var s1 = TL.ShiftLeftLong(TL.AddLong(n1, TL.SplatLong(1023)), 52);
            var s2 = TL.ShiftLeftLong(TL.AddLong(n2, TL.SplatLong(1023)), 52);
            var y = TL.Fma(p, s1, s1) * s2;
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }

    // float32 log in float32 arithmetic, FreeBSD's e_logf.c scheme (error < 1 ulp there): as the float64 kernel below,
    // with R(s²) of degree 4 in s² (error 2⁻³⁴·²⁴) and a k·ln2 split whose high part has 16 significant bits.
    // Subnormals, k and m come from the bits as in LogDouble.
    readonly struct LogFloat : IFloatKernel
    {
        const float Ln2Hi = 6.9313812256e-01f, Ln2Lo = 9.0580006145e-06f;
        const float Lg1 = 0.666666627f, Lg2 = 0.400009722f, Lg3 = 0.284987867f, Lg4 = 0.242790788f; // 0xaaaaaa.0p-24 …
        const float TwoP25 = 33554432f, MinNormal = 1.17549435e-38f;
        const float RecipA = 0.985061526f, RecipB = 0.239015996f; // 1/d ≈ A − B·d, the relative minimax line
        const int SqrtHalfBits = 0x3F3504F3, OneBits = 0x3F800000, TwoP23Bits = 0x4B000000;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL>
        {
            var sub = TL.LessThan(x, TL.Splat(MinNormal));
            var xs = TL.Select(sub, x * TL.Splat(TwoP25), x);
            var kb = TL.ShiftRightLogicalInt(TL.AddInt(TL.SubInt(xs, TL.SplatInt(SqrtHalfBits)), TL.SplatInt(OneBits)), 23);
            var m = TL.SubInt(xs, TL.ShiftLeftInt(TL.SubInt(kb, TL.SplatInt(127)), 23));
            var k = (kb | TL.SplatInt(TwoP23Bits)) - TL.Splat(8388608f + 127) - TL.Select(sub, TL.Splat(25f), TL.Splat(0f));
            var f = m - TL.Splat(1f);
            var hfsq = TL.Splat(0.5f) * f * f;
            // s = f/(2 + f) without the divider (a 10-cycle-per-vector unit on x86): a linear seed for 1/(2 + f) on
            // [1 + √½, 1 + √2] (1.5% off) and two Newton steps leave s 5e-8 relative off, which moves the result by
            // ~f³/4 times that (s only enters the small terms): 0.03 ulp.
            var negD = TL.Splat(-2f) - f;
            var u = TL.Fma(negD, TL.Splat(RecipB), TL.Splat(RecipA));
            u = TL.Fma(u, TL.Fma(negD, u, TL.Splat(1f)), u);
            u = TL.Fma(u, TL.Fma(negD, u, TL.Splat(1f)), u);
            var s = f * u;
            var z = s * s;
            var w = z * z;
            var rr = z * TL.Fma(w, TL.Splat(Lg3), TL.Splat(Lg1)) + w * TL.Fma(w, TL.Splat(Lg4), TL.Splat(Lg2));
            var y = k * TL.Splat(Ln2Hi) - ((hfsq - TL.Fma(s, hfsq + rr, k * TL.Splat(Ln2Lo))) - f);
            y = TL.Select(TL.Equal(x, TL.Splat(float.PositiveInfinity)), x, y);
            y = TL.Select(TL.Equal(x, TL.Splat(0f)), TL.Splat(float.NegativeInfinity), y);
            y = TL.Select(TL.LessThan(x, TL.Splat(0f)), TL.Splat(float.NaN), y);
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }

    // σ(x) from e = e^−|x| ≤ 1 (float32 arithmetic), which never overflows: 1/(1 + e) for x ≥ 0, e/(1 + e) for x < 0,
    // so the lower tail keeps its relative accuracy down to the subnormals. The sum and quotient are taken in float64:
    // in float32 their two roundings add up to 1 ulp more where σ falls just below a power of 2 (2 ulp in all, seen at
    // x ≈ −1.1); this way e's error (≤ 0.75 ulp of σ) and one final rounding remain.
    readonly struct SigmoidFloat : IFloatKernel
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL>
        {
            var one = TL.Splat(1f);
            var negative = TL.LessThan(x, TL.Splat(0f));
            var e = ExpFloat.Apply(TL.Select(negative, x, TL.Splat(0f) - x));
            var s = TL.RatioOfSumsInDouble(TL.Select(negative, e, one), TL.Splat(0f), one, e);
            return TL.Select(TL.IsNaN(x), x, s);
        }
    }

    // tanh in float32 arithmetic, for a = |x|: below 9/16 the odd polynomial a + a³·P(a²) (P of degree 4, a
    // least-squares fit on Chebyshev nodes, 0.10 ulp relative), so small arguments lose nothing to cancellation;
    // above, (1 − e)/(1 + e) with e = e^−2a ≤ 0.325 (ExpFloat), the sums and quotient in float64 so that only e's error
    // (≤ 0.4 ulp of the result) and one rounding remain. The sign goes back with a bit OR, so tanh(−0) = −0.
    readonly struct TanhFloat : IFloatKernel
    {
        const float P0 = -0.333333164f, P1 = 0.133324876f, P2 = -0.0538405478f, P3 = 0.0210184548f, P4 = -0.00619339151f;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IFloatLanes<TL>
        {
            var sign = x & TL.SplatInt(int.MinValue);
            var a = x & TL.SplatInt(int.MaxValue);
            var a2 = a * a;
            var p = TL.Fma(TL.Splat(P4), a2, TL.Splat(P3));
            p = TL.Fma(p, a2, TL.Splat(P2));
            p = TL.Fma(p, a2, TL.Splat(P1));
            p = TL.Fma(p, a2, TL.Splat(P0));
            var small = TL.Fma(a * a2, p, a);
            var e = ExpFloat.Apply(a * TL.Splat(-2f));
            var one = TL.Splat(1f);
            var big = TL.RatioOfSumsInDouble(one, TL.Splat(0f) - e, one, e);
            var t = TL.Select(TL.LessThan(a, TL.Splat(0.5625f)), small, big) | sign;
            return TL.Select(TL.IsNaN(x), x, t);
        }
    }

    // float64 log, fdlibm's scheme (e_log.c, error < 1 ulp): x = 2ᵏ·m with m in [√½, √2), f = m − 1 (exact),
    // s = f/(2 + f), log(1 + f) = 2·atanh(s) = f − s·f + s·R(s²), written as f − (hfsq − s·(hfsq + R)) with hfsq = f²/2,
    // which keeps the large terms exact-ish and the small ones last. ln2 is split so that k·Ln2Hi is exact (k ≤ 11 bits).
    readonly struct LogDouble : IDoubleKernel
    {
        const double Ln2Hi = 6.93147180369123816490e-01, Ln2Lo = 1.90821492927058770002e-10;
        const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01, Lg3 = 2.857142874366239149e-01,
            Lg4 = 2.222219843214978396e-01, Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
            Lg7 = 1.479819860511658591e-01;
        const double TwoP52 = 4503599627370496.0, MinNormal = 2.2250738585072014e-308;
        const long SqrtHalfBits = 0x3FE6A09E667F3BCD, OneBits = 0x3FF0000000000000, TwoP52Bits = 0x4330000000000000;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static TL Apply<TL>(TL x) where TL : unmanaged, IDoubleLanes<TL>
        {
            // Subnormals: scale by 2⁵² into the normal range and take 52 off k.
            var sub = TL.LessThan(x, TL.Splat(MinNormal));
            var xs = TL.Select(sub, x * TL.Splat(TwoP52), x);
            // Subtracting the bits of √½ moves the binade boundary there: the exponent field of the difference is k
            // (biased by 1023 after adding the bits of 1, which keeps it non-negative for a logical shift).
            var kb = TL.ShiftRightLogicalLong(TL.AddLong(TL.SubLong(xs, TL.SplatLong(SqrtHalfBits)), TL.SplatLong(OneBits)), 52);
            var m = TL.SubLong(xs, TL.ShiftLeftLong(TL.SubLong(kb, TL.SplatLong(1023)), 52));
            // k as a double without an int64 conversion: 2⁵² + kb has kb as its low mantissa bits.
            var k = (kb | TL.SplatLong(TwoP52Bits)) - TL.Splat(TwoP52 + 1023) - TL.Select(sub, TL.Splat(52.0), TL.Splat(0.0));
            var f = m - TL.Splat(1.0);
            var hfsq = TL.Splat(0.5) * f * f;
            var s = f / (TL.Splat(2.0) + f);
            var z = s * s;
            var w = z * z;
            var t1 = w * TL.Fma(w, TL.Fma(w, TL.Splat(Lg6), TL.Splat(Lg4)), TL.Splat(Lg2));
            var t2 = z * TL.Fma(w, TL.Fma(w, TL.Fma(w, TL.Splat(Lg7), TL.Splat(Lg5)), TL.Splat(Lg3)), TL.Splat(Lg1));
            var rr = t2 + t1;
            var y = k * TL.Splat(Ln2Hi) - ((hfsq - TL.Fma(s, hfsq + rr, k * TL.Splat(Ln2Lo))) - f);
            y = TL.Select(TL.Equal(x, TL.Splat(double.PositiveInfinity)), x, y);
            y = TL.Select(TL.Equal(x, TL.Splat(0.0)), TL.Splat(double.NegativeInfinity), y);
            y = TL.Select(TL.LessThan(x, TL.Splat(0.0)), TL.Splat(double.NaN), y);
            return TL.Select(TL.IsNaN(x), x, y);
        }
    }

    // ---------------- drivers: width dispatch, full vectors, the padded remainder ----------------

    static void Check(int n, int yLength, bool overlapsElsewhere, string op)
    {
        if (yLength < n) throw new ShapeException(op, $"destination length {yLength} is shorter than the source length {n}");
        if (overlapsElsewhere) throw new EngineException(op, "source and destination overlap without being the same span");
    }

    static void MapFloat<TK>(ReadOnlySpan<float> x, Span<float> y, string op) where TK : struct, IFloatKernel => MapFloat<TK>(x, y, op, pairs: true);

    // pairs: false for the large kernels (the activations), which inlined twice exceed the JIT's budget.
    static void MapFloat<TK>(ReadOnlySpan<float> x, Span<float> y, string op, bool pairs) where TK : struct, IFloatKernel
    {
        Check(x.Length, y.Length, x.Overlaps(y, out int off) && off != 0, op);
        if (x.IsEmpty) return;
        int bits = MaxVectorBits;
        fixed (float* px = x, py = y)
        {
            if (bits >= 512 && Vector512.IsHardwareAccelerated) { if (pairs) RunFloat<TK, F512>(px, py, x.Length); else RunFloatSingles<TK, F512>(px, py, x.Length); }
            else if (bits >= 256 && Vector256.IsHardwareAccelerated) { if (pairs) RunFloat<TK, F256>(px, py, x.Length); else RunFloatSingles<TK, F256>(px, py, x.Length); }
            else if (bits >= 128 && Vector128.IsHardwareAccelerated) { if (pairs) RunFloat<TK, F128>(px, py, x.Length); else RunFloatSingles<TK, F128>(px, py, x.Length); }
            else RunFloatSingles<TK, F1>(px, py, x.Length);
        }
    }

    static void MapFloat2<TK>(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> y, string op) where TK : struct, IFloatKernel2
    {
        if (dy.Length != x.Length) throw new ShapeException(op, $"gradient length {dy.Length} differs from the input length {x.Length}");
        Check(x.Length, y.Length, (x.Overlaps(y, out int ox) && ox != 0) || (dy.Overlaps(y, out int od) && od != 0), op);
        if (x.IsEmpty) return;
        int bits = MaxVectorBits;
        fixed (float* px = x, pd = dy, py = y)
        {
            if (bits >= 512 && Vector512.IsHardwareAccelerated) RunFloat2<TK, F512>(px, pd, py, x.Length);
            else if (bits >= 256 && Vector256.IsHardwareAccelerated) RunFloat2<TK, F256>(px, pd, py, x.Length);
            else if (bits >= 128 && Vector128.IsHardwareAccelerated) RunFloat2<TK, F128>(px, pd, py, x.Length);
            else RunFloat2<TK, F1>(px, pd, py, x.Length);
        }
    }

    static void MapDouble<TK>(ReadOnlySpan<double> x, Span<double> y, string op) where TK : struct, IDoubleKernel
    {
        Check(x.Length, y.Length, x.Overlaps(y, out int off) && off != 0, op);
        if (x.IsEmpty) return;
        int bits = MaxVectorBits;
        fixed (double* px = x, py = y)
        {
            if (bits >= 512 && Vector512.IsHardwareAccelerated) RunDouble<TK, D512>(px, py, x.Length);
            else if (bits >= 256 && Vector256.IsHardwareAccelerated) RunDouble<TK, D256>(px, py, x.Length);
            else if (bits >= 128 && Vector128.IsHardwareAccelerated) RunDouble<TK, D128>(px, py, x.Length);
            else RunDouble<TK, D1>(px, py, x.Length);
        }
    }

    // Pairs of vectors first (X2F/X2D, for instruction-level parallelism), then single vectors, then the remainder.
    // Each stage is its own non-inlined method because a kernel inlined twice into one method (or into the dispatching
    // MapFloat, once per width) exceeds the JIT's inlining budget, and whatever it then leaves as calls passes vectors
    // through memory, 5-30x slower. Each vector is loaded before its lanes are
    // stored, so x == y is safe. The remainder (fewer than Count elements) goes through the same vector code on a
    // zero-padded copy rather than an overlapping last vector, which in place would re-read outputs already written.
    const int MaxLanes = 16;

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void RunFloat<TK, TL>(float* x, float* y, int n) where TK : struct, IFloatKernel where TL : unmanaged, IFloatLanes<TL>
    {
        int i = 0;
        for (; i <= n - X2F<TL>.Count; i += X2F<TL>.Count) X2F<TL>.Store(TK.Apply(X2F<TL>.Load(x + i)), y + i);
        if (i < n) RunFloatSingles<TK, TL>(x + i, y + i, n - i);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void RunFloatSingles<TK, TL>(float* x, float* y, int n) where TK : struct, IFloatKernel where TL : unmanaged, IFloatLanes<TL>
    {
        int i = 0;
        for (; i <= n - TL.Count; i += TL.Count) TL.Store(TK.Apply(TL.Load(x + i)), y + i);
        if (i < n) RunFloatTail<TK, TL>(x + i, y + i, n - i);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void RunFloatTail<TK, TL>(float* x, float* y, int n) where TK : struct, IFloatKernel where TL : unmanaged, IFloatLanes<TL>
    {
        float* buf = stackalloc float[MaxLanes];
        for (int j = 0; j < MaxLanes; j++) buf[j] = j < n ? x[j] : 0f;
        TL.Store(TK.Apply(TL.Load(buf)), buf);
        for (int j = 0; j < n; j++) y[j] = buf[j];
    }

    // The two-input kernels are larger (a backward carries the forward's work and more), so they run one vector at a
    // time: a pair would inline the kernel twice, past the JIT's budget.
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void RunFloat2<TK, TL>(float* x, float* dy, float* y, int n) where TK : struct, IFloatKernel2 where TL : unmanaged, IFloatLanes<TL>
    {
        int i = 0;
        for (; i <= n - TL.Count; i += TL.Count) TL.Store(TK.Apply(TL.Load(x + i), TL.Load(dy + i)), y + i);
        if (i < n) RunFloat2Tail<TK, TL>(x + i, dy + i, y + i, n - i);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void RunFloat2Tail<TK, TL>(float* x, float* dy, float* y, int n) where TK : struct, IFloatKernel2 where TL : unmanaged, IFloatLanes<TL>
    {
        float* bx = stackalloc float[MaxLanes];
        float* bd = stackalloc float[MaxLanes];
        for (int j = 0; j < MaxLanes; j++) { bx[j] = j < n ? x[j] : 0f; bd[j] = j < n ? dy[j] : 0f; }
        TL.Store(TK.Apply(TL.Load(bx), TL.Load(bd)), bx);
        for (int j = 0; j < n; j++) y[j] = bx[j];
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void RunDouble<TK, TL>(double* x, double* y, int n) where TK : struct, IDoubleKernel where TL : unmanaged, IDoubleLanes<TL>
    {
        int i = 0;
        for (; i <= n - X2D<TL>.Count; i += X2D<TL>.Count) X2D<TL>.Store(TK.Apply(X2D<TL>.Load(x + i)), y + i);
        if (i < n) RunDoubleSingles<TK, TL>(x + i, y + i, n - i);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void RunDoubleSingles<TK, TL>(double* x, double* y, int n) where TK : struct, IDoubleKernel where TL : unmanaged, IDoubleLanes<TL>
    {
        int i = 0;
        for (; i <= n - TL.Count; i += TL.Count) TL.Store(TK.Apply(TL.Load(x + i)), y + i);
        if (i < n) RunDoubleTail<TK, TL>(x + i, y + i, n - i);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void RunDoubleTail<TK, TL>(double* x, double* y, int n) where TK : struct, IDoubleKernel where TL : unmanaged, IDoubleLanes<TL>
    {
        double* buf = stackalloc double[MaxLanes];
        for (int j = 0; j < MaxLanes; j++) buf[j] = j < n ? x[j] : 0.0;
        TL.Store(TK.Apply(TL.Load(buf)), buf);
        for (int j = 0; j < n; j++) y[j] = buf[j];
    }
}

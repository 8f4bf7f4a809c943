using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>The scalars of one reduction launch.</summary>
public struct ReduceParams
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int Op, XType, YType, HasIndices, ThreadPerOutput, NormKind;
    public long Outputs, N;
    public double Argument;
#pragma warning restore CS1591
}

/// <summary>The arithmetic of one accumulation type, as static members a generic kernel calls.</summary>
public interface IReduceMath<T> where T : unmanaged
{
#pragma warning disable CS1591
    static abstract T Zero { get; }
    static abstract T One { get; }
    static abstract T Load(ArrayView<byte> v, int t, long i);
    static abstract void Store(ArrayView<byte> v, int t, long i, T x);
    static abstract void StoreMean(ArrayView<byte> v, int t, long i, T sum, long n);
    static abstract T Add(T a, T b);
    static abstract T Sub(T a, T b);
    static abstract T Mul(T a, T b);
    static abstract T Div(T a, T b);
    static abstract T FromLong(long n);
    static abstract T FromDouble(double x);
    static abstract bool Greater(T a, T b);
    static abstract bool Less(T a, T b);
    static abstract bool IsNaN(T a);
    static abstract bool IsInfinity(T a);
    static abstract T Abs(T a);
    static abstract T Exp(T a);
    static abstract T Log(T a);
    static abstract T Sqrt(T a);
    static abstract T Pow(T a, T b);
#pragma warning restore CS1591
}

#pragma warning disable CS1591 // one-line arithmetic adapters
/// <summary>float32 accumulation (Float32, Float16, BFloat16).</summary>
public readonly struct FloatMath : IReduceMath<float>
{
    public static float Zero => 0f;
    public static float One => 1f;
    public static float Load(ArrayView<byte> v, int t, long i) => LoadFloat(v, t, i);
    public static void Store(ArrayView<byte> v, int t, long i, float x) => StoreFloat(v, t, i, x);
    public static void StoreMean(ArrayView<byte> v, int t, long i, float sum, long n) => StoreFloat(v, t, i, sum / n);
    public static float Add(float a, float b) => a + b;
    public static float Sub(float a, float b) => a - b;
    public static float Mul(float a, float b) => a * b;
    public static float Div(float a, float b) => a / b;
    public static float FromLong(long n) => n;
    public static float FromDouble(double x) => (float)x;
    public static bool Greater(float a, float b) => a > b;
    public static bool Less(float a, float b) => a < b;
    public static bool IsNaN(float a) => float.IsNaN(a);
    public static bool IsInfinity(float a) => (Interop.FloatAsInt(a) & 0x7FFF_FFFFu) == 0x7F80_0000u;
    public static float Abs(float a) => MathF.Abs(a);
    public static float Exp(float a) => MathF.Exp(a);
    public static float Log(float a) => MathF.Log(a);
    public static float Sqrt(float a) => MathF.Sqrt(a);
    public static float Pow(float a, float b) => MathF.Pow(a, b);
}

/// <summary>float64 accumulation (Float64, and the integer types' statistics).</summary>
public readonly struct DoubleMath : IReduceMath<double>
{
    public static double Zero => 0.0;
    public static double One => 1.0;
    public static double Load(ArrayView<byte> v, int t, long i) => LoadDouble(v, t, i);
    public static void Store(ArrayView<byte> v, int t, long i, double x) => StoreDouble(v, t, i, x);
    public static void StoreMean(ArrayView<byte> v, int t, long i, double sum, long n) => StoreDouble(v, t, i, sum / n);
    public static double Add(double a, double b) => a + b;
    public static double Sub(double a, double b) => a - b;
    public static double Mul(double a, double b) => a * b;
    public static double Div(double a, double b) => a / b;
    public static double FromLong(long n) => n;
    public static double FromDouble(double x) => x;
    public static bool Greater(double a, double b) => a > b;
    public static bool Less(double a, double b) => a < b;
    public static bool IsNaN(double a) => double.IsNaN(a);
    public static bool IsInfinity(double a) => (Interop.FloatAsInt(a) & 0x7FFF_FFFF_FFFF_FFFFUL) == 0x7FF0_0000_0000_0000UL;
    public static double Abs(double a) => Math.Abs(a);
    public static double Exp(double a) => Math.Exp(a);
    public static double Log(double a) => Math.Log(a);
    public static double Sqrt(double a) => Math.Sqrt(a);
    public static double Pow(double a, double b) => Math.Pow(a, b);
}

/// <summary>Exact Int64 accumulation (sums wrap, as PyTorch's) for integer and Bool sums and extrema.</summary>
public readonly struct LongMath : IReduceMath<long>
{
    public static long Zero => 0;
    public static long One => 1;
    public static long Load(ArrayView<byte> v, int t, long i) => LoadLong(v, t, i);
    public static void Store(ArrayView<byte> v, int t, long i, long x) => StoreLong(v, t, i, x);
    public static void StoreMean(ArrayView<byte> v, int t, long i, long sum, long n) => StoreDouble(v, t, i, (double)sum / n);
    public static long Add(long a, long b) => a + b;
    public static long Sub(long a, long b) => a - b;
    public static long Mul(long a, long b) => a * b;
    public static long Div(long a, long b) => b == 0 ? 0 : a / b;
    public static long FromLong(long n) => n;
    public static long FromDouble(double x) => (long)x;
    public static bool Greater(long a, long b) => a > b;
    public static bool Less(long a, long b) => a < b;
    public static bool IsNaN(long a) => false;
    public static bool IsInfinity(long a) => false;
    public static long Abs(long a) => a < 0 ? -a : a;
    public static long Exp(long a) => a;
    public static long Log(long a) => a;
    public static long Sqrt(long a) => a;
    public static long Pow(long a, long b) => a;
}
#pragma warning restore CS1591

/// <summary>
/// The reductions: each output reduces its block (the trailing dims of x, walked through an inner
/// <see cref="Geometry"/>) with the CPU backend's semantics: NaN wins max/min and the first extremum's index is kept,
/// Var subtracts the compensation (Σd)²/n, LogSumExp shifts by a finite maximum. Accumulation is float32 for the
/// float32 and half types, float64 for Float64 and the integer statistics, exact Int64 for integer sums and extrema.
/// A thread adds its elements in block order and a group combines its threads in a fixed tree (warp shuffles, then
/// shared memory across warps), so results do not change from run to run.
/// </summary>
static class ReduceKernels
{
    public const int Sum = 0, Mean = 1, Max = 2, Min = 3, Var = 4, LogSumExp = 5, Norm = 6, AbsMax = 7, AbsMin = 8;

    /// <summary>The most warps a group has (groups of up to 1024 threads; one slot per warp in shared memory).</summary>
    const int MaxWarps = 32;

    static bool IsExtremum(int op) => op == Max || op == Min || op == AbsMax || op == AbsMin;

    /// <summary>The running state of a thread or a group: a sum and a second sum, or a value and its index (−1: none yet).</summary>
    struct State<T> where T : unmanaged
    {
        public T A, B;
        public long I;
    }

    static State<T> Identity<T, TM>(int op) where T : unmanaged where TM : struct, IReduceMath<T> =>
        new() { A = TM.Zero, B = TM.Zero, I = IsExtremum(op) ? -1 : 0 };

    /// <summary>True when candidate (v, i) replaces the current extremum (a, ia): NaN first, then the order, then the earlier index.</summary>
    static bool Replaces<T, TM>(bool greater, T v, long i, T a, long ia) where T : unmanaged where TM : struct, IReduceMath<T>
    {
        if (i < 0) return false;
        if (ia < 0) return true;
        bool vNaN = TM.IsNaN(v), aNaN = TM.IsNaN(a);
        if (vNaN || aNaN) return vNaN && (!aNaN || i < ia);
        if (greater ? TM.Greater(v, a) : TM.Less(v, a)) return true;
        if (greater ? TM.Greater(a, v) : TM.Less(a, v)) return false;
        return i < ia;
    }

    static State<T> Combine<T, TM>(int op, State<T> s, State<T> o) where T : unmanaged where TM : struct, IReduceMath<T>
    {
        if (IsExtremum(op)) return Replaces<T, TM>(op == Max || op == AbsMax, o.A, o.I, s.A, s.I) ? o : s;
        s.A = TM.Add(s.A, o.A);
        s.B = TM.Add(s.B, o.B);
        return s;
    }

    /// <summary>Adds block elements first, first + step, ... (below n) to a state. <paramref name="stat"/> is Var's mean or LogSumExp's shift.</summary>
    static State<T> Accumulate<T, TM>(int op, State<T> s, Geometry inner, ArrayView<byte> x, int xt, long xo, long first, long step, long n, T stat, T p, int normKind)
        where T : unmanaged where TM : struct, IReduceMath<T>
    {
        for (long j = first; j < n; j += step)
        {
            inner.Offsets(j, out long jo, out _, out _, out _);
            T v = TM.Load(x, xt, xo + jo);
            if (op == Sum || op == Mean) s.A = TM.Add(s.A, v);
            else if (op == Var)
            {
                T d = TM.Sub(v, stat);
                s.A = TM.Add(s.A, TM.Mul(d, d));
                s.B = TM.Add(s.B, d);
            }
            else if (op == LogSumExp) s.A = TM.Add(s.A, TM.Exp(TM.Sub(v, stat)));
            else if (op == Norm)
            {
                T a = TM.Abs(v);
                s.A = TM.Add(s.A, normKind == 0 ? (TM.Greater(a, TM.Zero) || TM.IsNaN(a) ? TM.One : TM.Zero) // p = 0 counts non-zeros
                    : normKind == 1 ? a : normKind == 2 ? TM.Mul(v, v) : TM.Pow(a, p));
            }
            else
            {
                T w = op == AbsMax || op == AbsMin ? TM.Abs(v) : v;
                if (Replaces<T, TM>(op == Max || op == AbsMax, w, j, s.A, s.I)) { s.A = w; s.I = j; }
            }
        }
        return s;
    }

    /// <summary>Combines a warp's states by shuffles in a fixed tree; lane 0 ends with the warp's result.</summary>
    static State<T> WarpCombine<T, TM>(int op, State<T> s) where T : unmanaged where TM : struct, IReduceMath<T>
    {
        // Lane l takes lane l + offset; lanes whose partner is out of range get their own value back and combine
        // garbage, but lane 0 only ever reads lanes that still hold valid partial results.
        for (int offset = Warp.WarpSize / 2; offset > 0; offset >>= 1)
        {
            s = Combine<T, TM>(op, s, Warp.ShuffleDown(s, offset));
        }
        return s;
    }

    /// <summary>
    /// Combines the group's states: shuffles within each warp, the warps' results through shared memory, then the
    /// first warp once more. A fixed tree, so the result is the same on every run; every thread gets it.
    /// </summary>
    static State<T> GroupCombine<T, TM>(int op, State<T> s, ArrayView<T> sa, ArrayView<T> sb, ArrayView<long> si)
        where T : unmanaged where TM : struct, IReduceMath<T>
    {
        int lane = Warp.LaneIdx, warp = Warp.WarpIdx, warps = Group.DimX / Warp.WarpSize;
        s = WarpCombine<T, TM>(op, s);
        if (lane == 0) { sa[warp] = s.A; sb[warp] = s.B; si[warp] = s.I; }
        Group.Barrier();
        if (warp == 0)
        {
            var w = lane < warps ? new State<T> { A = sa[lane], B = sb[lane], I = si[lane] } : Identity<T, TM>(op);
            w = WarpCombine<T, TM>(op, w);
            if (lane == 0) { sa[0] = w.A; sb[0] = w.B; si[0] = w.I; }
        }
        Group.Barrier();
        var result = new State<T> { A = sa[0], B = sb[0], I = si[0] };
        Group.Barrier(); // the shared arrays are reused by the next combine
        return result;
    }

    /// <summary>The first pass's statistic: Var's mean, or LogSumExp's shift (the maximum, 0 when infinite or absent).</summary>
    static T Statistic<T, TM>(int op, State<T> s, long n) where T : unmanaged where TM : struct, IReduceMath<T>
    {
        if (op == Var) return TM.Div(s.A, TM.FromLong(n));
        if (s.I < 0 || TM.IsInfinity(s.A)) return TM.Zero;
        return s.A;
    }

    static void Finish<T, TM>(int op, State<T> s, T stat, ArrayView<byte> y, ArrayView<byte> idx, long o, ReduceParams p, T pNorm)
        where T : unmanaged where TM : struct, IReduceMath<T>
    {
        int yt = p.YType;
        long n = p.N;
        if (op == Sum) TM.Store(y, yt, o, s.A);
        else if (op == Mean) TM.StoreMean(y, yt, o, s.A, n);
        else if (op == Var)
        {
            T nn = TM.FromLong(n);
            T v = TM.Sub(s.A, TM.Div(TM.Mul(s.B, s.B), nn));
            if (TM.Less(v, TM.Zero)) v = TM.Zero; // NaN stays NaN
            T den = TM.Sub(nn, TM.FromDouble(p.Argument));
            if (TM.Less(den, TM.Zero)) den = TM.Zero;
            TM.Store(y, yt, o, TM.Div(v, den));
        }
        else if (op == LogSumExp) TM.Store(y, yt, o, TM.Add(TM.Log(s.A), stat));
        else if (op == Norm)
            TM.Store(y, yt, o, p.NormKind <= 1 ? s.A : p.NormKind == 2 ? TM.Sqrt(s.A) : TM.Pow(s.A, TM.Div(TM.One, pNorm)));
        else
        {
            TM.Store(y, yt, o, s.A);
            if (p.HasIndices != 0 && (op == Max || op == Min)) idx.Cast<long>()[o] = s.I;
        }
    }

    public static void Run<T, TM>(Geometry outer, Geometry inner, ArrayView<byte> x, ArrayView<byte> y, ArrayView<byte> idx, ReduceParams p)
        where T : unmanaged where TM : struct, IReduceMath<T>
    {
        int op = p.Op, xt = p.XType;
        long n = p.N;
        T pNorm = TM.FromDouble(p.Argument);
        bool twoPass = op == Var || op == LogSumExp;
        int firstOp = op == Var ? Sum : Max;
        if (p.ThreadPerOutput != 0)
        {
            long stride = (long)Grid.DimX * Group.DimX;
            for (long o = Grid.GlobalIndex.X; o < p.Outputs; o += stride)
            {
                outer.Offsets(o, out long yo, out long xo, out _, out _);
                T stat = TM.Zero;
                if (twoPass)
                    stat = Statistic<T, TM>(op, Accumulate<T, TM>(firstOp, Identity<T, TM>(firstOp), inner, x, xt, xo, 0, 1, n, TM.Zero, pNorm, p.NormKind), n);
                var s = Accumulate<T, TM>(op, Identity<T, TM>(op), inner, x, xt, xo, 0, 1, n, stat, pNorm, p.NormKind);
                Finish<T, TM>(op, s, stat, y, idx, yo, p, pNorm);
            }
            return;
        }
        var sa = SharedMemory.Allocate<T>(MaxWarps);
        var sb = SharedMemory.Allocate<T>(MaxWarps);
        var si = SharedMemory.Allocate<long>(MaxWarps);
        int tid = Group.IdxX, size = Group.DimX;
        for (long o = Grid.IdxX; o < p.Outputs; o += Grid.DimX)
        {
            outer.Offsets(o, out long yo, out long xo, out _, out _);
            T stat = TM.Zero;
            if (twoPass)
            {
                var first = Accumulate<T, TM>(firstOp, Identity<T, TM>(firstOp), inner, x, xt, xo, tid, size, n, TM.Zero, pNorm, p.NormKind);
                stat = Statistic<T, TM>(op, GroupCombine<T, TM>(firstOp, first, sa, sb, si), n);
            }
            var s = Accumulate<T, TM>(op, Identity<T, TM>(op), inner, x, xt, xo, tid, size, n, stat, pNorm, p.NormKind);
            s = GroupCombine<T, TM>(op, s, sa, sb, si);
            if (tid == 0) Finish<T, TM>(op, s, stat, y, idx, yo, p, pNorm);
        }
    }
}

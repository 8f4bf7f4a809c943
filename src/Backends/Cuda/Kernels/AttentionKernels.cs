using ILGPU;
using ILGPU.Runtime;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>The sizes, flags and operand strides of one attention launch (see Engine.Backends.AttentionShape).</summary>
public struct AttentionArgs
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public int Batch, Heads, L, S, E, Ev, Type, Causal, SharedMask, HasMask;
    public float Scale;
    public AttentionView Q, K, V, O, G, DQ, DK, DV; // G: the output gradient dO
#pragma warning restore CS1591
}

/// <summary>One operand's strides (Engine.Backends.AttentionOperand without its storage), in elements.</summary>
public struct AttentionView
{
#pragma warning disable CS1591 // plain fields of a kernel parameter
    public long Offset, Batch, Head, Row;
#pragma warning restore CS1591

    /// <summary>The index of row <paramref name="i"/> of head <paramref name="n"/> (n folds the two batch levels).</summary>
    public readonly long At(int n, int heads, int i) => Offset + n / heads * Batch + n % heads * Head + (long)i * Row;
}

/// <summary>
/// Scaled-dot-product attention on the device for heads wider than the flash kernels' tiles
/// (FlashAttentionKernels.cs serves E, Ev ≤ 64; Delta below serves both), the straightforward version: grid-stride kernels with one thread per
/// output element, each recomputing the scores it needs from q and k (float32 accumulation, half types converted on
/// load and rounded once on store), so nothing of size [L, S] is stored and no thread keeps an array (no local
/// memory); every operand is read or written through its strides (AttentionView). The forward is two launches: the row logsumexp (an online max and sum over the keys), then each output
/// element as Σ exp(s − lse)·v. The backward is FlashAttention-2's rule in three: D = rowsum(dO∘o), dq per (row,
/// column), and dk and dv per (key, column); every element is summed by one thread in key or query order, so results
/// are reproducible. Float64 goes to the composite (CudaBackend.Attention.cs). The CPU reference is
/// src/Backends/Cpu/Kernels/AttentionKernels.cs.
/// </summary>
static class AttentionKernels
{
    // The scaled, masked score of query i and key j of head b; −∞ when the causal mask hides it.
    static float Score(ArrayView<byte> q, ArrayView<byte> k, ArrayView<float> mask, AttentionArgs a, int b, int i, int j)
    {
        if (a.Causal != 0 && j > i) return float.NegativeInfinity;
        long qo = a.Q.At(b, a.Heads, i), ko = a.K.At(b, a.Heads, j);
        float d = 0;
        for (int x = 0; x < a.E; x++) d += LoadFloat(q, a.Type, qo + x) * LoadFloat(k, a.Type, ko + x);
        d *= a.Scale;
        if (a.HasMask != 0) d += mask[(a.SharedMask != 0 ? 0 : (long)b * a.L * a.S) + (long)i * a.S + j];
        return d;
    }

    // Keys query i sees: all S, or the first i + 1 under the causal mask.
    static int KeyEnd(AttentionArgs a, int i) => a.Causal != 0 ? Math.Min(a.S, i + 1) : a.S;

    /// <summary>lse[r] = max + log Σ exp(s − max) over row r's keys (−∞ without keys).</summary>
    public static void RowStats(ArrayView<byte> q, ArrayView<byte> k, ArrayView<byte> mask, ArrayView<byte> lse, AttentionArgs a)
    {
        var m = mask.Cast<float>();
        var ls = lse.Cast<float>();
        int n = a.Batch * a.L, stride = Grid.DimX * Group.DimX;
        for (int r = Grid.GlobalIndex.X; r < n; r += stride)
        {
            int b = r / a.L, i = r - b * a.L, end = KeyEnd(a, i);
            float max = float.NegativeInfinity, sum = 0;
            for (int j = 0; j < end; j++)
            {
                float s = Score(q, k, m, a, b, i, j);
                if (s > max)
                {
                    sum = sum * MathF.Exp(max - s) + 1;
                    max = s;
                }
                else if (s != float.NegativeInfinity || max != float.NegativeInfinity) sum += MathF.Exp(s - max);
            }
            ls[r] = a.S == 0 ? float.NegativeInfinity : max + MathF.Log(sum);
        }
    }

    /// <summary>o[r, c] = Σ_j exp(s_rj − lse[r])·v[j, c].</summary>
    public static void Output(ArrayView<byte> q, ArrayView<byte> k, ArrayView<byte> v, ArrayView<byte> mask, ArrayView<byte> lse, ArrayView<byte> o, AttentionArgs a)
    {
        var m = mask.Cast<float>();
        var ls = lse.Cast<float>();
        int n = a.Batch * a.L * a.Ev, stride = Grid.DimX * Group.DimX;
        for (int idx = Grid.GlobalIndex.X; idx < n; idx += stride)
        {
            int r = idx / a.Ev, c = idx - r * a.Ev, b = r / a.L, i = r - b * a.L, end = KeyEnd(a, i);
            float l = ls[r], acc = 0;
            for (int j = 0; j < end; j++)
            {
                float p = MathF.Exp(Score(q, k, m, a, b, i, j) - l);
                acc += p * LoadFloat(v, a.Type, a.V.At(b, a.Heads, j) + c);
            }
            StoreFloat(o, a.Type, a.O.At(b, a.Heads, i) + c, acc);
        }
    }

    /// <summary>delta[r] = Σ_c dO[r, c]·o[r, c] (float32).</summary>
    public static void Delta(ArrayView<byte> o, ArrayView<byte> dO, ArrayView<byte> delta, AttentionArgs a)
    {
        var d = delta.Cast<float>();
        int n = a.Batch * a.L, stride = Grid.DimX * Group.DimX;
        for (int r = Grid.GlobalIndex.X; r < n; r += stride)
        {
            int b = r / a.L, i = r - b * a.L;
            long go = a.G.At(b, a.Heads, i), oo = a.O.At(b, a.Heads, i);
            float s = 0;
            for (int c = 0; c < a.Ev; c++) s += LoadFloat(dO, a.Type, go + c) * LoadFloat(o, a.Type, oo + c);
            d[r] = s;
        }
    }

    // dS of query i (row r) and key j: P·(dO_r·v_j − D_r).
    static float ScoreGrad(ArrayView<byte> q, ArrayView<byte> k, ArrayView<byte> v, ArrayView<byte> dO, ArrayView<float> m, float l, float delta, AttentionArgs a, int b, int i, int j, out float p)
    {
        p = MathF.Exp(Score(q, k, m, a, b, i, j) - l);
        long go = a.G.At(b, a.Heads, i), vo = a.V.At(b, a.Heads, j);
        float dp = 0;
        for (int x = 0; x < a.Ev; x++) dp += LoadFloat(dO, a.Type, go + x) * LoadFloat(v, a.Type, vo + x);
        return p * (dp - delta);
    }

    /// <summary>dq[r, c] = scale·Σ_j dS_rj·k[j, c].</summary>
    public static void GradQuery(ArrayView<byte> q, ArrayView<byte> k, ArrayView<byte> v, ArrayView<byte> mask, ArrayView<byte> lse, ArrayView<byte> dO,
        ArrayView<byte> delta, ArrayView<byte> dq, AttentionArgs a)
    {
        var m = mask.Cast<float>();
        var ls = lse.Cast<float>();
        var dl = delta.Cast<float>();
        int n = a.Batch * a.L * a.E, stride = Grid.DimX * Group.DimX;
        for (int idx = Grid.GlobalIndex.X; idx < n; idx += stride)
        {
            int r = idx / a.E, c = idx - r * a.E, b = r / a.L, i = r - b * a.L, end = KeyEnd(a, i);
            float l = ls[r], dr = dl[r], acc = 0;
            for (int j = 0; j < end; j++)
            {
                float ds = ScoreGrad(q, k, v, dO, m, l, dr, a, b, i, j, out _);
                acc += ds * LoadFloat(k, a.Type, a.K.At(b, a.Heads, j) + c);
            }
            StoreFloat(dq, a.Type, a.DQ.At(b, a.Heads, i) + c, acc * a.Scale);
        }
    }

    /// <summary>dk[j, c] = scale·Σ_i dS_ij·q[i, c] for c &lt; E; dv[j, c − E] = Σ_i P_ij·dO[i, c − E] above.</summary>
    public static void GradKeyValue(ArrayView<byte> q, ArrayView<byte> k, ArrayView<byte> v, ArrayView<byte> mask, ArrayView<byte> lse, ArrayView<byte> dO,
        ArrayView<byte> delta, ArrayView<byte> dk, ArrayView<byte> dv, AttentionArgs a)
    {
        var m = mask.Cast<float>();
        var ls = lse.Cast<float>();
        var dl = delta.Cast<float>();
        int w = a.E + a.Ev, n = a.Batch * a.S * w, stride = Grid.DimX * Group.DimX;
        for (int idx = Grid.GlobalIndex.X; idx < n; idx += stride)
        {
            int row = idx / w, c = idx - row * w, b = row / a.S, j = row - b * a.S;
            bool key = c < a.E;
            float acc = 0;
            for (int i = a.Causal != 0 ? j : 0; i < a.L; i++)
            {
                int r = b * a.L + i;
                float ds = ScoreGrad(q, k, v, dO, m, ls[r], dl[r], a, b, i, j, out float p);
                acc += key ? ds * LoadFloat(q, a.Type, a.Q.At(b, a.Heads, i) + c) : p * LoadFloat(dO, a.Type, a.G.At(b, a.Heads, i) + (c - a.E));
            }
            if (key) StoreFloat(dk, a.Type, a.DK.At(b, a.Heads, j) + c, acc * a.Scale);
            else StoreFloat(dv, a.Type, a.DV.At(b, a.Heads, j) + (c - a.E), acc);
        }
    }
}

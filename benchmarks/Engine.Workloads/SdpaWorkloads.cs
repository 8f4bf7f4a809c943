using Engine.Autograd;

namespace Engine.Workloads;

// Causal scaled-dot-product attention alone, forward and backward, over q, k, v [8, 4, T, D] (batch 8, 4 heads):
// sdpa_fwd_bwd_* is the fused Tensor.ScaledDotProductAttention, sdpa_unfused_fwd_bwd_* the
// explicit composition CausalSelfAttention uses with FusedAttention false (matmul, scale, masked fill, softmax,
// matmul), so one engine bench run compares the two in the same process. One repetition is the forward and
// the backward from a fixed upstream gradient (the leaves' gradients are freed after each).
public static partial class WorkloadCatalog
{
    // The rows, fused and unfused per size: float32 T 64/D 32, T 128/D 64, T 256/D 64, and bfloat16 T 128/D 64.
    static Workload[] SdpaWorkloads() =>
        [.. Sdpa(64, 32, DType.Float32), .. Sdpa(128, 64, DType.Float32), .. Sdpa(256, 64, DType.Float32), .. Sdpa(128, 64, DType.BFloat16)];

    static Workload[] Sdpa(int t, int d, DType dtype)
    {
        string suffix = $"t{t}_d{d}" + (dtype == DType.BFloat16 ? "_bf16" : "");
        string label = dtype == DType.BFloat16 ? "bf16" : "f32";
        return
        [
            new($"sdpa_fwd_bwd_{suffix}", label, 2, 10, dev => new SdpaRun(dev, t, d, dtype, fused: true)),
            new($"sdpa_unfused_fwd_bwd_{suffix}", label, 2, 10, dev => new SdpaRun(dev, t, d, dtype, fused: false)),
        ];
    }

    sealed class SdpaRun : IWorkloadRun
    {
        readonly Tensor _q, _k, _v, _g, _future;
        readonly bool _fused;
        readonly double _scale;

        public SdpaRun(Device dev, int t, int d, DType dtype, bool fused)
        {
            _fused = fused;
            _scale = 1 / Math.Sqrt(d);
            var gen = new Generator(8);
            int[] shape = [8, 4, t, d];
            _q = Leaf(Tensor.Randn(shape, DType.Float32, dev, gen), dtype);
            _k = Leaf(Tensor.Randn(shape, DType.Float32, dev, gen), dtype);
            _v = Leaf(Tensor.Randn(shape, DType.Float32, dev, gen), dtype);
            using (var g = Tensor.Randn(shape, DType.Float32, dev, gen)) _g = g.To(dtype).DetachFromScopes();
            using var ones = Tensor.Ones([t, t], DType.Float32, dev);
            using var lower = ones.Tril();
            _future = lower.Eq(0).DetachFromScopes();
            // Causal: about half of the score matrix counts, in each of the forward's 2 and the backward's 4 products.
            double flops = 6.0 * 8 * 4 * t * t * d;
            Metrics = [new("time", "ms", s => s * 1e3), new("throughput", "GFLOP/s", s => flops / s / 1e9)];
        }

        static Tensor Leaf(Tensor x, DType dtype)
        {
            using (x)
            {
                var l = x.To(dtype).DetachFromScopes();
                l.RequiresGrad = true;
                return l;
            }
        }

        public IReadOnlyList<Metric> Metrics { get; }

        public void Run()
        {
            using (var scope = Tensor.NewScope())
            {
                Tensor o;
                if (_fused) o = Tensor.ScaledDotProductAttention(_q, _k, _v, isCausal: true);
                else
                {
                    var att = _q.MatMul(_k.Transpose(-2, -1)).Mul(_scale).MaskedFill(_future, double.NegativeInfinity).Softmax(-1);
                    o = att.MatMul(_v);
                }
                o.Backward(_g);
            }
            Sync(_q.Grad!);
            foreach (var x in new[] { _q, _k, _v }) { x.Grad?.Dispose(); x.Grad = null; }
        }

        public void Dispose() { _q.Dispose(); _k.Dispose(); _v.Dispose(); _g.Dispose(); _future.Dispose(); }
    }
}

using Engine.Graph;

namespace Engine.Autograd.Nn;

/// <summary>Parameter initializers (as <c>torch.nn.init</c>), in place, drawing from a <see cref="Generator"/>.</summary>
public static class Init
{
    /// <summary>U(−bound, bound) with bound = gain·√(3 / fan_in), gain = √(2 / (1 + a²)): PyTorch's Linear weight default with a = √5, i.e. bound = 1/√fan_in.</summary>
    public static Tensor KaimingUniform(Tensor t, double a = 2.23606797749979, Generator? generator = null)
    {
        int fanIn = t.Rank < 2 ? t.Size(0) : (int)(t.Numel / t.Size(0));
        double gain = Math.Sqrt(2.0 / (1 + a * a));
        double bound = gain * Math.Sqrt(3.0 / Math.Max(fanIn, 1));
        return Uniform(t, -bound, bound, generator);
    }

    /// <summary>U(low, high) in place.</summary>
    public static Tensor Uniform(Tensor t, double low, double high, Generator? generator = null)
    {
        using (GradMode.NoGrad()) t.UniformInPlace(low, high, generator);
        return t;
    }

    /// <summary>N(mean, std²) in place.</summary>
    public static Tensor Normal(Tensor t, double mean, double std, Generator? generator = null)
    {
        using (GradMode.NoGrad()) t.NormalInPlace(mean, std, generator);
        return t;
    }

    /// <summary>Zeros in place.</summary>
    public static Tensor Zeros(Tensor t)
    {
        using (GradMode.NoGrad()) t.ZeroInPlace();
        return t;
    }
}

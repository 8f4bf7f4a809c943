namespace Engine;

/// <summary>The kind of device a tensor lives on.</summary>
public enum DeviceType
{
    /// <summary>Host memory, computed by the CPU backend.</summary>
    Cpu,
    /// <summary>An NVIDIA GPU (or ILGPU's CPU accelerator standing in for one in tests).</summary>
    Cuda,
}

/// <summary>A device: a type and an index, written as PyTorch does (<c>cpu</c>, <c>cuda</c>, <c>cuda:1</c>).</summary>
public readonly record struct Device(DeviceType Type, int Index = 0)
{
    /// <summary>The host.</summary>
    public static Device Cpu => new(DeviceType.Cpu, 0);

    /// <summary>CUDA device <paramref name="index"/>.</summary>
    public static Device Cuda(int index = 0) => new(DeviceType.Cuda, index);

    /// <summary>Parses <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public static Device Parse(string s)
    {
        var t = s.Trim().ToLowerInvariant();
        if (t == "cpu") return Cpu;
        if (t == "cuda") return Cuda(0);
        if (t.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(t.AsSpan(5), out int i) && i >= 0) return Cuda(i);
        throw new FormatException($"unknown device '{s}' (expected cpu, cuda or cuda:N)");
    }

    /// <inheritdoc/>
    public override string ToString() => Type == DeviceType.Cpu ? "cpu" : $"cuda:{Index}";
}

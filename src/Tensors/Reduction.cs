namespace Engine;

/// <summary>How a loss reduces its per-element values, as PyTorch's <c>reduction=</c>.</summary>
public enum Reduction
{
    /// <summary>Per-element values.</summary>
    None,
    /// <summary>The mean (over non-ignored elements for cross entropy).</summary>
    Mean,
    /// <summary>The sum.</summary>
    Sum,
}

namespace Engine.Autograd.Nn;

/// <summary>
/// Mini-batches of rows from an input tensor and a target tensor (first dim), shuffled with a seed per epoch so a
/// run is reproducible. Each batch's tensors are new (the caller disposes them).
/// </summary>
public sealed class DataLoader(Tensor inputs, Tensor targets, int batchSize, bool shuffle = true, ulong seed = 0, bool dropLast = false)
{
    /// <summary>Rows per batch.</summary>
    public int BatchSize { get; } = batchSize > 0 ? batchSize : throw new EngineException("DataLoader", $"batch size must be positive, got {batchSize}");

    /// <summary>Batches per epoch.</summary>
    public int Count => dropLast ? inputs.Size(0) / BatchSize : (inputs.Size(0) + BatchSize - 1) / BatchSize;

    /// <summary>The batches of epoch <paramref name="epoch"/> (the shuffle depends on the seed and the epoch).</summary>
    public IEnumerable<(Tensor Inputs, Tensor Targets)> Epoch(int epoch = 0)
    {
        int n = inputs.Size(0);
        if (targets.Size(0) != n) throw new ShapeException("DataLoader", $"inputs have {n} rows, targets {targets.Size(0)}");
        var order = Enumerable.Range(0, n).Select(i => (long)i).ToArray();
        if (shuffle)
        {
            var rng = new Random(unchecked((int)(seed * 1_000_003UL + (ulong)epoch)));
            for (int i = n - 1; i > 0; i--) { int j = rng.Next(i + 1); (order[i], order[j]) = (order[j], order[i]); }
        }
        for (int s = 0; s < n; s += BatchSize)
        {
            int len = Math.Min(BatchSize, n - s);
            if (dropLast && len < BatchSize) yield break;
            using var idx = Tensor.FromArray(order[s..(s + len)], null, inputs.Device);
            yield return (inputs.IndexSelect(0, idx), targets.IndexSelect(0, idx));
        }
    }
}

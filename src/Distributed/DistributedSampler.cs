namespace Engine.Distributed;

/// <summary>
/// This rank's share of a data set's rows for one epoch (as <c>torch.utils.data.DistributedSampler</c>): the epoch's
/// order is the one <see cref="Autograd.Nn.DataLoader"/> uses in one process (the same seed and epoch give the same
/// shuffle), padded by repeating its start until it divides by the world size (or cut, with
/// <c>dropLast</c>), and rank r takes positions r, r + W, r + 2W, ... So with a per-rank batch b the W ranks' k-th
/// batches together are rows k·W·b to (k+1)·W·b - 1 of the one-process order: the one-process run with batch W·b.
/// Call <see cref="SetEpoch"/> before each epoch, or every epoch has the same order.
/// </summary>
public sealed class DistributedSampler
{
    readonly int _size;
    readonly bool _shuffle;
    readonly ulong _seed;
    int _epoch;

    /// <summary>A sampler of <paramref name="datasetSize"/> rows for <paramref name="rank"/> of <paramref name="worldSize"/>.</summary>
    public DistributedSampler(int datasetSize, int worldSize, int rank, bool shuffle = true, ulong seed = 0, bool dropLast = false)
    {
        if (datasetSize < 0) throw new EngineException("DistributedSampler", $"the data set size must not be negative, got {datasetSize}");
        if (worldSize < 1) throw new EngineException("DistributedSampler", $"the world size must be positive, got {worldSize}");
        if (rank < 0 || rank >= worldSize) throw new EngineException("DistributedSampler", $"invalid rank {rank}, rank should be in the interval [0, {worldSize - 1}]");
        _size = datasetSize; _shuffle = shuffle; _seed = seed;
        WorldSize = worldSize; Rank = rank; DropLast = dropLast;
        NumSamples = dropLast && datasetSize % worldSize != 0 ? datasetSize / worldSize : (datasetSize + worldSize - 1) / worldSize;
        TotalSize = NumSamples * worldSize;
    }

    /// <summary>A sampler for this process's place in <paramref name="group"/>.</summary>
    public DistributedSampler(int datasetSize, ProcessGroup group, bool shuffle = true, ulong seed = 0, bool dropLast = false)
        : this(datasetSize, group.WorldSize, group.Rank, shuffle, seed, dropLast) { }

    /// <summary>The number of ranks the rows are shared among.</summary>
    public int WorldSize { get; }
    /// <summary>This rank.</summary>
    public int Rank { get; }
    /// <summary>True: the tail that does not divide by the world size is dropped; false: the start is repeated.</summary>
    public bool DropLast { get; }
    /// <summary>Rows per rank per epoch.</summary>
    public int NumSamples { get; }
    /// <summary>Rows over all ranks per epoch (padding included).</summary>
    public int TotalSize { get; }
    /// <summary>The current epoch.</summary>
    public int Epoch => _epoch;

    /// <summary>Sets the epoch: the shuffle depends on the seed and the epoch.</summary>
    public void SetEpoch(int epoch) => _epoch = epoch;

    /// <summary>The epoch's row order in one process: what <see cref="Autograd.Nn.DataLoader"/> iterates.</summary>
    public static long[] GlobalOrder(int size, bool shuffle, ulong seed, int epoch)
    {
        var order = new long[size];
        for (int i = 0; i < size; i++) order[i] = i;
        if (!shuffle) return order;
        // DataLoader's Fisher-Yates with its seed formula: the one-process run and the sharded run see one order.
        var rng = new Random(unchecked((int)(seed * 1_000_003UL + (ulong)epoch)));
        for (int i = size - 1; i > 0; i--) { int j = rng.Next(i + 1); (order[i], order[j]) = (order[j], order[i]); }
        return order;
    }

    /// <summary>This rank's rows for the current epoch, in order.</summary>
    public long[] Indices()
    {
        var order = GlobalOrder(_size, _shuffle, _seed, _epoch);
        var padded = new long[TotalSize];
        for (int i = 0; i < TotalSize; i++) padded[i] = order.Length == 0 ? 0 : order[i % order.Length];   // pads by repeating, as PyTorch's
        var mine = new long[NumSamples];
        for (int k = 0; k < NumSamples; k++) mine[k] = padded[Rank + k * WorldSize];
        return mine;
    }

    /// <summary>This rank's batches of the current epoch from rows of <paramref name="inputs"/> and <paramref name="targets"/> (new tensors the caller disposes).</summary>
    public IEnumerable<(Tensor Inputs, Tensor Targets)> Batches(Tensor inputs, Tensor targets, int batchSize)
    {
        if (batchSize <= 0) throw new EngineException("DistributedSampler", $"batch size must be positive, got {batchSize}");
        if (inputs.Size(0) != _size || targets.Size(0) != _size)
            throw new ShapeException("DistributedSampler", $"the sampler has {_size} rows, inputs {inputs.Size(0)}, targets {targets.Size(0)}");
        var idx = Indices();
        for (int s = 0; s < idx.Length; s += batchSize)
        {
            using var t = Tensor.FromArray(idx[s..Math.Min(idx.Length, s + batchSize)], null, inputs.Device);
            yield return (inputs.IndexSelect(0, t), targets.IndexSelect(0, t));
        }
    }
}

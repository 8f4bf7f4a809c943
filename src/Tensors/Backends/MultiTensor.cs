namespace Engine.Backends;

/// <summary>
/// The multi-tensor ("foreach") kernels' shared rules: how many tensors one call takes, and how a front end splits a
/// list into such calls. One call is one launch over all its tensors (PyTorch's <c>multi_tensor_apply</c>, which also
/// launches once per chunk of tensors: 36 for Adam's four lists, whose pointers fill the 4 KiB of CUDA kernel
/// parameter space); <see cref="MaxTensors"/> tensors per list fit that space with room for the scalars.
/// </summary>
public static class MultiTensor
{
    /// <summary>The most tensors in one list of one foreach call.</summary>
    public const int MaxTensors = 32;

    /// <summary>
    /// Splits the indices 0..count−1 into calls: runs of consecutive indices with the same key (device, dtypes: what
    /// one launch must share), each cut into chunks of at most <see cref="MaxTensors"/>. Order is kept, so a result
    /// that depends on order (the norms of a total norm) comes out as a per-tensor loop would give it.
    /// </summary>
    public static IEnumerable<(int Start, int Count)> Chunks<TKey>(int count, Func<int, TKey> key)
    {
        int start = 0;
        while (start < count)
        {
            var k = key(start);
            int end = start + 1;
            while (end < count && end - start < MaxTensors && EqualityComparer<TKey>.Default.Equals(key(end), k)) end++;
            yield return (start, end - start);
            start = end;
        }
    }
}

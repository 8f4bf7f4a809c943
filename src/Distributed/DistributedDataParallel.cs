using System.Diagnostics;
using Engine.Autograd.Nn;
using Engine.Graph;

namespace Engine.Distributed;

/// <summary>
/// Data-parallel training of a module (as <c>torch.nn.parallel.DistributedDataParallel</c>): every rank holds the
/// whole model, runs its share of the batch, and after <c>loss.Backward()</c> every rank's gradients are the average
/// over ranks, so one optimizer step on each rank keeps the replicas equal.
/// <list type="bullet">
/// <item>At construction the parameters and buffers of rank 0 are copied to every rank, after a check that all ranks
/// hold the same parameter shapes.</item>
/// <item>Gradients are reduced in buckets of about <c>bucketCapBytes</c> (25 MB) filled in reverse parameter order,
/// roughly the order backward produces them. A post-accumulate-grad hook on each parameter copies its gradient into
/// its bucket; when a bucket is full its all-reduce (average) is posted at once, while backward goes on with the
/// earlier layers. Buckets are posted in index order on every rank, as collectives must be. The last gradient waits
/// for all of them and copies the averages back into <c>Grad</c>.</item>
/// <item><see cref="NoSync"/> skips the reduction (gradient accumulation): the next synchronized backward reduces the
/// accumulated gradients.</item>
/// <item>With <c>findUnusedParameters</c>, parameters the forward's graph does not reach are marked ready after the
/// forward (they contribute zeros); parameters unused on every rank keep their <c>Grad</c> as it was. Without it, a
/// parameter that gets no gradient leaves its bucket unfinished, and the next <see cref="Forward"/> says so.</item>
/// <item><c>broadcastBuffers</c>: rank 0's buffers are copied to every rank before each forward.</item>
/// </list>
/// Differences from PyTorch: one bucket size for all buckets (PyTorch makes the first 1 MB), gradients are copied
/// into the buckets rather than being views of them, and the bucket order is fixed at construction.
/// </summary>
public sealed class DistributedDataParallel : IDisposable
{
    sealed class Bucket
    {
        public required int Index;
        public required Tensor Flat;
        public readonly List<int> Params = [];
        public readonly List<long> Offsets = [];
        public int Pending;
        public Work? Work;
        public long LaunchedTimestamp;
    }

    readonly Tensor[] _params;
    readonly string[] _names;
    readonly int[] _bucketOf;
    readonly int[] _slotOf;
    readonly List<Bucket> _buckets = [];
    readonly List<IDisposable> _hooks = [];
    readonly bool[] _ready;
    readonly bool[] _usedLocally;
    readonly List<long> _hookTimestamps = [];
    int _nextLaunch;
    bool _expecting;     // a synchronized backward is due (set by Forward)
    bool _syncEnabled = true;
    bool _disposed;

    /// <summary>Wraps <paramref name="module"/> (not owned: disposing this leaves it alone) and syncs it from rank 0.</summary>
    public DistributedDataParallel(Module module, ProcessGroup group, long bucketCapBytes = 25L * 1024 * 1024,
        bool findUnusedParameters = false, bool broadcastBuffers = true)
    {
        if (bucketCapBytes <= 0) throw new EngineException("DistributedDataParallel", $"the bucket size must be positive, got {bucketCapBytes} bytes");
        Module = module; Group = group;
        FindUnusedParameters = findUnusedParameters; BroadcastBuffers = broadcastBuffers;
        var named = module.NamedParameters().Where(p => p.Parameter.RequiresGrad).ToArray();
        _params = named.Select(p => p.Parameter).ToArray();
        _names = named.Select(p => p.Name).ToArray();
        foreach (var p in _params)
            if (p.Device != group.Device)
                throw new DeviceMismatchException("DistributedDataParallel", $"parameter {_names[Array.IndexOf(_params, p)]} is on {p.Device}; the {group.Backend} group takes {group.Device}");
        _bucketOf = new int[_params.Length];
        _slotOf = new int[_params.Length];
        _ready = new bool[_params.Length];
        _usedLocally = new bool[_params.Length];

        CheckSameModel();
        SyncFromRankZero(module.Parameters().Concat(module.NamedBuffers().Select(b => b.Buffer)));
        BuildBuckets(bucketCapBytes);
        for (int i = 0; i < _params.Length; i++)
        {
            int index = i;
            _hooks.Add(_params[i].RegisterPostAccumulateGradHook(_ => OnGradReady(index)));
        }
    }

    /// <summary>The wrapped module (as <c>ddp.module</c>).</summary>
    public Module Module { get; }

    /// <summary>The ranks the gradients are averaged over.</summary>
    public ProcessGroup Group { get; }

    /// <summary>Whether parameters the forward does not reach are marked ready after it.</summary>
    public bool FindUnusedParameters { get; }

    /// <summary>Whether rank 0's buffers are copied to every rank before each forward.</summary>
    public bool BroadcastBuffers { get; }

    /// <summary>The parameters' names per bucket, bucket 0 first (the one reduced first: the last parameters).</summary>
    public IReadOnlyList<IReadOnlyList<string>> BucketParameterNames =>
        _buckets.Select(b => (IReadOnlyList<string>)b.Params.Select(i => _names[i]).ToArray()).ToArray();

    /// <summary>The elements of each bucket, bucket 0 first (what one all-reduce of it moves).</summary>
    public IReadOnlyList<long> BucketNumels => _buckets.Select(b => b.Flat.Numel).ToArray();

    /// <summary>
    /// What the last synchronized backward did, per bucket: when its all-reduce was posted and when it was seen
    /// complete (<see cref="Stopwatch.GetTimestamp"/>), plus when each gradient hook ran, in order: how a test sees
    /// that communication started before backward ended.
    /// </summary>
    public (IReadOnlyList<(long Launched, long Completed)> Buckets, IReadOnlyList<long> GradReady) LastTimeline { get; private set; } = ([], []);

    /// <summary>Runs the module on this rank's share of the batch and prepares the gradient reduction of its backward.</summary>
    public Tensor Forward(Tensor input)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_expecting && (_nextLaunch > 0 || _ready.Any(r => r)))
        {
            var missing = Enumerable.Range(0, _params.Length).Where(i => !_ready[i]).Select(i => _names[i]).ToArray();
            throw new EngineException("DistributedDataParallel",
                "expected to have finished reduction in the prior iteration before starting a new one: parameters " +
                $"{string.Join(", ", missing.Take(8))}{(missing.Length > 8 ? ", ..." : "")} received no gradient. " +
                "Pass findUnusedParameters: true when some parameters do not take part in the loss");
        }
        if (BroadcastBuffers && Group.WorldSize > 1) SyncFromRankZero(Module.NamedBuffers().Select(b => b.Buffer));
        var output = Module.Forward(input);
        if (!_syncEnabled || !GradMode.IsEnabled || !output.RequiresGrad || Group.WorldSize == 1 && !FindUnusedParameters)
        {
            _expecting = false;
            return output;
        }
        Prepare(output);
        return output;
    }

    /// <summary>Runs <see cref="Forward"/> (as calling the module).</summary>
    public Tensor Call(Tensor input) => Forward(input);

    /// <summary>The wrapped module's parameters (for the optimizer).</summary>
    public IEnumerable<Tensor> Parameters() => Module.Parameters();

    /// <summary>
    /// Gradient accumulation: forwards (and their backwards) inside the returned scope skip the reduction (as
    /// <c>ddp.no_sync()</c>); the first synchronized backward after it reduces what has accumulated in <c>Grad</c>.
    /// </summary>
    public IDisposable NoSync()
    {
        bool previous = _syncEnabled;
        _syncEnabled = false;
        return new Restore(() => _syncEnabled = previous);
    }

    sealed class Restore(Action action) : IDisposable
    {
        Action? _a = action;
        public void Dispose() => Interlocked.Exchange(ref _a, null)?.Invoke();
    }

    /// <summary>The AMP gradient scaler's found-inf flag made equal across ranks (<see cref="ProcessGroup.ReduceFoundInf"/>).</summary>
    public void ReduceFoundInf(Tensor foundInf) => Group.ReduceFoundInf(foundInf);

    /// <summary>Removes the hooks and frees the buckets; the module is left as it is.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var h in _hooks) h.Dispose();
        foreach (var b in _buckets)
        {
            try { b.Work?.Wait(); } catch (DistributedException) { }
            b.Flat.Dispose();
        }
    }

    // ---- construction ----

    void CheckSameModel()
    {
        if (Group.WorldSize == 1) return;
        long numel = _params.Sum(p => p.Numel);
        long shapes = _params.Aggregate(17L, (h, p) => unchecked(p.Layout.Shape.ToArray().Aggregate(h * 31 + p.Layout.Rank, (a, d) => a * 1_000_003 + d)));
        using var mine = Tensor.FromArray(new long[] { _params.Length, numel, shapes });
        using var local = mine.To(Group.Device);
        using var all = Tensor.Zeros([3 * Group.WorldSize], DType.Int64, Group.Device);
        Group.AllGather(all, local).Wait();
        var v = all.ToArray<long>();
        for (int r = 0; r < Group.WorldSize; r++)
            if (v[3 * r] != _params.Length || v[3 * r + 1] != numel || v[3 * r + 2] != shapes)
                throw new DistributedException("DistributedDataParallel",
                    $"rank {r} has {v[3 * r]} parameters of {v[3 * r + 1]} elements, rank {Group.Rank} has {_params.Length} of {numel} (or their shapes differ): every rank must build the same model")
                { Ranks = [r] };
    }

    void SyncFromRankZero(IEnumerable<Tensor> tensors)
    {
        if (Group.WorldSize == 1) return;
        var works = tensors.Select(t => Group.Broadcast(t, 0)).ToList();
        Work.WaitAll(works);
    }

    void BuildBuckets(long capBytes)
    {
        Bucket? current = null;
        long bytes = 0, elements = 0;
        var members = new List<int>();
        void Close()
        {
            if (members.Count == 0) return;
            var first = _params[members[0]];
            var b = new Bucket { Index = _buckets.Count, Flat = Tensor.Zeros([checked((int)elements)], first.DType, first.Device).DetachFromScopes() };
            long off = 0;
            foreach (var i in members)
            {
                _bucketOf[i] = b.Index;
                _slotOf[i] = b.Params.Count;
                b.Params.Add(i);
                b.Offsets.Add(off);
                off += _params[i].Numel;
            }
            _buckets.Add(b);
            current = b;
            members.Clear(); bytes = 0; elements = 0;
        }
        for (int i = _params.Length - 1; i >= 0; i--)
        {
            var p = _params[i];
            if (members.Count > 0)
            {
                var head = _params[members[0]];
                if (head.DType != p.DType || head.Device != p.Device || bytes + p.Numel * p.DType.ElementSize() > capBytes
                    || elements + p.Numel > int.MaxValue) Close();
            }
            members.Add(i);
            bytes += p.Numel * p.DType.ElementSize();
            elements += p.Numel;
        }
        Close();
        _ = current;
    }

    // ---- one iteration ----

    void Prepare(Tensor output)
    {
        Array.Clear(_ready);
        Array.Fill(_usedLocally, !FindUnusedParameters);
        _hookTimestamps.Clear();
        foreach (var b in _buckets) { b.Pending = b.Params.Count; b.Work = null; b.LaunchedTimestamp = 0; }
        _nextLaunch = 0;
        _expecting = true;
        if (!FindUnusedParameters) return;
        var reached = Reachable(output);
        for (int i = 0; i < _params.Length; i++)
        {
            _usedLocally[i] = reached.Contains(_params[i]);
            if (!_usedLocally[i]) MarkReady(i);
        }
    }

    // The leaves the output's graph leads to: the parameters this forward used.
    static HashSet<Tensor> Reachable(Tensor output)
    {
        var leaves = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        if (output.GradFn is null) { leaves.Add(output); return leaves; }
        var seen = new HashSet<GradNode>();
        var stack = new Stack<GradNode>();
        stack.Push(output.GradFn);
        seen.Add(output.GradFn);
        while (stack.Count > 0)
            foreach (var e in stack.Pop().Edges)
            {
                if (e.Node is { } n) { if (seen.Add(n)) stack.Push(n); }
                else if (e.Tensor is { } t) leaves.Add(t);
            }
        return leaves;
    }

    void OnGradReady(int index)
    {
        if (!_expecting) return;
        _hookTimestamps.Add(Stopwatch.GetTimestamp());
        if (_ready[index])
            throw new EngineException("DistributedDataParallel", $"parameter {_names[index]} was marked ready twice in one backward (a parameter used by two backward passes, or reentrant backward)");
        MarkReady(index);
    }

    void MarkReady(int index)
    {
        _ready[index] = true;
        var b = _buckets[_bucketOf[index]];
        var p = _params[index];
        using (var slot = Slot(b, _slotOf[index]))
        {
            if (p.Grad is { } g && !g.IsDisposed) slot.CopyInPlace(g);
            else slot.ZeroInPlace();
        }
        b.Pending--;
        // MPI moves a posted collective along only inside MPI calls: poll the ones in flight.
        for (int k = 0; k < _nextLaunch; k++) _ = _buckets[k].Work!.IsCompleted;
        while (_nextLaunch < _buckets.Count && _buckets[_nextLaunch].Pending == 0)
        {
            var next = _buckets[_nextLaunch++];
            next.LaunchedTimestamp = Stopwatch.GetTimestamp();
            next.Work = Group.AllReduce(next.Flat, ReduceOp.Average);
        }
        if (_nextLaunch == _buckets.Count) FinishReduction();
    }

    Tensor Slot(Bucket b, int slot)
    {
        var p = _params[b.Params[slot]];
        using var flat = b.Flat.Narrow(0, (int)b.Offsets[slot], (int)p.Numel);
        return flat.View(p.Layout.Shape);
    }

    void FinishReduction()
    {
        _expecting = false;
        foreach (var b in _buckets) b.Work!.Wait();
        long[]? usedAnywhere = null;
        if (FindUnusedParameters)
        {
            using var used = Tensor.FromArray(_usedLocally.Select(u => u ? 1L : 0L).ToArray());
            using var onDevice = used.To(Group.Device);
            Group.AllReduce(onDevice, ReduceOp.Sum).Wait();
            usedAnywhere = onDevice.ToArray<long>();
        }
        using (GradMode.NoGrad())
            foreach (var b in _buckets)
                for (int s = 0; s < b.Params.Count; s++)
                {
                    int i = b.Params[s];
                    if (usedAnywhere is not null && usedAnywhere[i] == 0) continue;   // unused everywhere: Grad untouched
                    var p = _params[i];
                    using var slot = Slot(b, s);
                    if (p.Grad is { } g && !g.IsDisposed) g.CopyInPlace(slot);
                    else p.Grad = slot.Clone().DetachFromScopes();
                }
        LastTimeline = (_buckets.Select(b => (b.LaunchedTimestamp, b.Work!.CompletedTimestamp)).ToArray(), _hookTimestamps.ToArray());
    }
}

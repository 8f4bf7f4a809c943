using Engine.Autocast;
using Engine.Graph;

namespace Engine.Autograd;

/// <summary>
/// One backward pass over the graph below some root tensors: a topological order of the reachable
/// <see cref="GradNode"/>s (Kahn's algorithm, iterative, so deep graphs do not overflow the stack), gradients summed
/// per node (fan-out) and per leaf, hooks, then either accumulation into the leaves' <c>Grad</c>
/// (<see cref="AutogradExtensions.Backward"/>) or capture of the gradients of chosen inputs
/// (<see cref="Gradients.Grad"/>).
/// </summary>
/// <remarks>
/// Ownership: every gradient in flight is a handle this pass owns and disposes once consumed. A backward runs in a
/// dispose scope and the pass takes its own handle on each result, so a backward may return <c>grad</c>, a saved
/// value or any temporary. A hook's replacement stays owned by whoever made it (the pass takes its own handle).
/// The pass runs with grad mode off: no graph is recorded for gradients (no higher-order derivatives).
/// </remarks>
internal sealed class GraphExecutor
{
    readonly bool _retainGraph;
    readonly bool _accumulate;                       // true: leaves accumulate into Grad; false: capture targets only
    readonly Dictionary<GradNode, int> _nodeDeps = [];
    readonly Dictionary<Tensor, int> _leafDeps = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<GradNode, Tensor> _nodeGrads = [];
    readonly Dictionary<Tensor, Tensor> _leafGrads = new(ReferenceEqualityComparer.Instance);
    // The tensor whose current GradFn is a node: its hooks and RetainsGrad apply to the gradient entering the node.
    readonly Dictionary<GradNode, Tensor> _nodeTensor = [];
    readonly Dictionary<GradNode, List<int>> _nodeTargets = [];
    readonly Dictionary<Tensor, List<int>> _leafTargets = new(ReferenceEqualityComparer.Instance);
    readonly Tensor?[] _captured;
    HashSet<GradNode>? _runs;                        // nodes whose rule must run (capture mode); null: all
    // Slice gradients held back until their input's gradient is due (key: the input's node or leaf): when they are
    // the parts of one buffer of the input's shape, that buffer is the gradient (see ResolveSlices).
    readonly Dictionary<object, List<(GradNode Node, Tensor Grad)>> _slices = new(ReferenceEqualityComparer.Instance);

    GraphExecutor(bool retainGraph, Tensor[]? targets)
    {
        _retainGraph = retainGraph;
        _accumulate = targets is null;
        _captured = new Tensor?[targets?.Length ?? 0];
        if (targets is null) return;
        for (int i = 0; i < targets.Length; i++)
        {
            var t = targets[i];
            if (t.GradFn is { } n) GetList(_nodeTargets, n).Add(i);
            else GetList(_leafTargets, t).Add(i);
        }
    }

    static List<int> GetList<TKey>(Dictionary<TKey, List<int>> d, TKey key) where TKey : notnull
    {
        if (!d.TryGetValue(key, out var l)) d[key] = l = [];
        return l;
    }

    /// <summary>Backpropagates from <paramref name="root"/> into the leaves' <c>Grad</c>.</summary>
    internal static void Backward(Tensor root, Tensor? gradient, bool retainGraph)
    {
        using var _ = GradMode.NoGrad();
        var g = RootGradient("Backward", root, 0, gradient);
        new GraphExecutor(retainGraph, null).Run([root], [g]);
    }

    /// <summary>Backpropagates from several roots at once (each with its gradient) into the leaves' <c>Grad</c>.</summary>
    internal static void Backward(Tensor[] roots, Tensor?[]? gradients, bool retainGraph)
    {
        using var _ = GradMode.NoGrad();
        var gs = RootGradients("Backward", roots, gradients);
        new GraphExecutor(retainGraph, null).Run(roots, gs);
    }

    static Tensor[] RootGradients(string op, Tensor[] roots, Tensor?[]? gradients)
    {
        var gs = new Tensor[roots.Length];
        try
        {
            for (int i = 0; i < roots.Length; i++) gs[i] = RootGradient(op, roots[i], i, gradients?[i]);
        }
        catch
        {
            foreach (var g in gs) g?.Dispose();
            throw;
        }
        return gs;
    }

    /// <summary>The gradients of <paramref name="roots"/> with respect to <paramref name="targets"/>, leaving every <c>Grad</c> alone.</summary>
    internal static Tensor?[] Capture(Tensor[] roots, Tensor?[]? gradients, Tensor[] targets, bool retainGraph)
    {
        using var _ = GradMode.NoGrad();
        var gs = RootGradients("Grad", roots, gradients);
        var ex = new GraphExecutor(retainGraph, targets);
        ex.Run(roots, gs);
        return ex._captured;
    }

    // The seed gradient of a root: ones for a one-element root, else the caller's gradient (a new handle, cast to the
    // root's dtype).
    static Tensor RootGradient(string op, Tensor root, int index, Tensor? gradient)
    {
        if (!root.RequiresGrad)
            throw new EngineException(op, $"element {index} of tensors does not require grad and does not have a grad_fn");
        if (gradient is null)
        {
            if (root.Numel != 1)
                throw new EngineException(op, $"grad can be implicitly created only for scalar outputs (output {index} has shape {Shape.Format(root.Layout.Shape)}); pass a gradient");
            return Tensor.Ones(root.Layout.Shape, root.DType, root.Device);
        }
        if (!gradient.Layout.Shape.AsSpan().SequenceEqual(root.Layout.Shape))
            throw new ShapeException(op, $"mismatch in shape: the gradient has shape {Shape.Format(gradient.Layout.Shape)} and output {index} has shape {Shape.Format(root.Layout.Shape)}");
        return gradient.DType == root.DType && gradient.Device == root.Device ? Share(gradient) : gradient.To(root.Device, root.DType);
    }

    /// <summary>
    /// A second handle on a tensor's data, in the current dispose scope like any op's result (<c>Detach</c> would
    /// leave it outside every scope). Must run with grad mode off.
    /// </summary>
    internal static Tensor Share(Tensor t) => t.Expand(t.Layout.Shape);

    void Run(Tensor[] roots, Tensor[] rootGrads)
    {
        using var autocastOff = AutocastDispatch.Suspend(); // gradients keep the forward's dtypes, as PyTorch's
        try
        {
            Discover(roots);
            var ready = new Stack<GradNode>();
            for (int i = 0; i < roots.Length; i++)
            {
                var g = rootGrads[i];
                rootGrads[i] = null!;
                if (roots[i].GradFn is { } n) Accumulate(_nodeGrads, n, g);
                else Accumulate(_leafGrads, roots[i], g);
            }
            var queued = new HashSet<GradNode>();
            foreach (var r in roots)
                if (r.GradFn is { } n && !_nodeDeps.ContainsKey(n) && queued.Add(n)) ready.Push(n);
            while (ready.Count > 0) Process(ready.Pop(), ready);
            // Roots that are leaves nothing else leads to.
            foreach (var leaf in _leafGrads.Keys.ToArray()) FinishLeaf(leaf);
        }
        catch
        {
            foreach (var g in _nodeGrads.Values) g.Dispose();
            foreach (var g in _leafGrads.Values) g.Dispose();
            foreach (var g in _captured) g?.Dispose();
            foreach (var g in rootGrads) g?.Dispose();
            foreach (var parts in _slices.Values) foreach (var (_, g) in parts) g.Dispose();
            _nodeGrads.Clear(); _leafGrads.Clear(); _slices.Clear();
            throw;
        }
    }

    // Counts, for every node and leaf reachable from the roots, how many edges lead into it.
    void Discover(Tensor[] roots)
    {
        var parents = _accumulate ? null : new Dictionary<object, List<GradNode>>(ReferenceEqualityComparer.Instance);
        var seen = new HashSet<GradNode>();
        var stack = new Stack<GradNode>();
        foreach (var r in roots)
            if (r.GradFn is { } n)
            {
                _nodeTensor.TryAdd(n, r);
                if (seen.Add(n)) stack.Push(n);
            }
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            foreach (var e in n.Edges)
            {
                if (e.Tensor is not { } t) continue;
                object child;
                if (e.Node is { } c)
                {
                    _nodeDeps[c] = _nodeDeps.GetValueOrDefault(c) + 1;
                    if (ReferenceEquals(t.GradFn, c)) _nodeTensor.TryAdd(c, t);
                    if (seen.Add(c)) stack.Push(c);
                    child = c;
                }
                else
                {
                    _leafDeps[t] = _leafDeps.GetValueOrDefault(t) + 1;
                    child = t;
                }
                if (parents is not null)
                {
                    if (!parents.TryGetValue(child, out var ps)) parents[child] = ps = [];
                    ps.Add(n);
                }
            }
        }
        if (parents is null) return;
        // Capture mode runs only the rules of nodes that lead to a target (as torch.autograd.grad).
        _runs = [];
        var queue = new Queue<object>();
        foreach (var n in _nodeTargets.Keys) queue.Enqueue(n);
        foreach (var t in _leafTargets.Keys) queue.Enqueue(t);
        while (queue.Count > 0)
            if (parents.TryGetValue(queue.Dequeue(), out var ps))
                foreach (var p in ps)
                    if (_runs.Add(p)) queue.Enqueue(p);
    }

    void Process(GradNode node, Stack<GradNode> ready)
    {
        _nodeGrads.Remove(node, out var g);
        Tensor?[]? results = null;
        bool run = false;
        try
        {
            if (g is not null && _nodeTensor.TryGetValue(node, out var t))
            {
                if (t.GradHooks is { Count: > 0 } th) g = RunHooks(th, g);
                if (_accumulate && t.RetainsGrad) Keep(t, g); // g is still in flight: copied
            }
            if (g is not null && node.Hooks is { Count: > 0 } nh) g = RunHooks(nh, g);
            if (g is not null && _nodeTargets.TryGetValue(node, out var idx)) CaptureInto(idx, g);
            run = g is not null && (_runs is null || _runs.Contains(node));
            if (run)
            {
                if (TryHoldSlice(node, g!)) g = null; // held: its handle moved into _slices
                else if (!TryAccumulateInPlace(node, g!)) results = CallRule(node, g!, PendingOfFirstInput(node));
            }
        }
        finally { g?.Dispose(); }

        var edges = node.Edges;
        for (int i = 0; i < edges.Length; i++)
        {
            var r = results?[i];
            if (results is not null) results[i] = null;
            if (edges[i].Tensor is not { } t) { r?.Dispose(); continue; }
            if (edges[i].Node is { } c)
            {
                if (r is not null) Accumulate(_nodeGrads, c, r);
                if (--_nodeDeps[c] == 0) { ResolveSlices(c); ready.Push(c); }
            }
            else
            {
                if (r is not null) Accumulate(_leafGrads, t, r);
                if (--_leafDeps[t] == 0) { ResolveSlices(t); FinishLeaf(t); }
            }
        }
        if (!_retainGraph && (_accumulate || run)) node.FreeSaved();
    }

    // Runs a node's backward inside a dispose scope (its temporaries die with it) and turns each result into a
    // gradient of exactly its input: summed down or broadcast up to the input's shape, converted to its dtype and
    // device, as a handle of the pass's own (taken out of the scope). Inputs that need none get null. With the
    // pending gradient of input 0 (see Accumulate) the rule may add it in itself; then the pending sum is dropped.
    Tensor?[] CallRule(GradNode node, Tensor g, Tensor? pending)
    {
        var n = node.Edges.Length;
        var owned = new Tensor?[n];
        var scope = Tensor.NewScope();
        try
        {
            var folded = pending is null ? null : node.Function.BackwardAccumulating(g, pending);
            if (folded is not null) DropPendingOfFirstInput(node);
            var raw = folded ?? node.Function.Backward(g)
                ?? throw new EngineException(node.ToString(), $"the backward of {node.Op} returned null");
            if (raw.Length != n)
                throw new EngineException(node.ToString(), $"the backward of {node.Op} returned {raw.Length} gradients for {n} inputs");
            for (int i = 0; i < n; i++)
            {
                if (raw[i] is not { } x || !node.Edges[i].IsLive) continue;
                owned[i] = scope.Detach(ToInput(node, i, x));
            }
            return owned;
        }
        catch
        {
            foreach (var x in owned) x?.Dispose();
            throw;
        }
        finally { scope.Dispose(); }
    }

    // A new handle (in the current scope) on gradient x of input i, at the input's shape, dtype and device; or in the
    // input's preferred gradient dtype (GradFunction.PreferredGradDType: the wider dtype of the cast the input came
    // from, e.g. a float32 weight gradient for its bf16 autocast copy), which then reaches the cast unconverted,
    // unless the next node is a capture target (its gradient must have the tensor's own dtype).
    Tensor ToInput(GradNode node, int i, Tensor x)
    {
        var info = node.Inputs[i];
        var shape = x.Layout.Shape;
        if (!shape.AsSpan().SequenceEqual(info.Shape))
        {
            if (Shape.IsExpandable(info.Shape, shape)) x = x.SumToSize(info.Shape);          // a gradient at a broadcast shape
            else if (Shape.IsExpandable(shape, info.Shape)) x = x.Expand(info.Shape);       // a reduction's kept-dims gradient
            else
                throw new ShapeException(node.ToString(),
                    $"the backward of {node.Op} returned a gradient of shape {Shape.Format(shape)} for input {i} of shape {Shape.Format(info.Shape)}, which neither broadcasts to it nor from it");
        }
        if (x.DType != info.DType && x.Device == info.Device && node.Edges[i].Node is { } next && !_nodeTargets.ContainsKey(next)
            && x.DType == node.PreferredGradDType(i))
            return Share(x);
        if (x.DType != info.DType || x.Device != info.Device) return x.To(info.Device, info.DType);
        return Share(x);
    }

    // A slice's (or select's) gradient added straight into the gradient its input already has from another slice, when
    // the pass owns that one privately and it matches the input exactly (see GradFunction.TryAccumulateInto).
    bool TryAccumulateInPlace(GradNode node, Tensor g)
    {
        if (node.Edges.Length != 1 || !node.Edges[0].IsLive || node.Edges[0].Tensor is not { } t) return false;
        var prev = node.Edges[0].Node is { } c ? _nodeGrads.GetValueOrDefault(c) : _leafGrads.GetValueOrDefault(t);
        var info = node.Inputs[0];
        if (prev is null || !IsPrivate(prev) || prev.DType != g.DType || prev.DType != info.DType || prev.Device != g.Device
            || !prev.Layout.Shape.AsSpan().SequenceEqual(info.Shape))
            return false;
        return node.Function.TryAccumulateInto(prev, g);
    }

    // The gradient input 0 of a node already holds from other edges, when it matches the input exactly: a rule that
    // can add it inside its own kernel (GradFunction.BackwardAccumulating: LayerNorm's dx on a residual stream) saves
    // the fan-out Add below. The gradients of a pre-norm residual stream arrive in that order (the add's share first,
    // the norm's last), so each of them is summed by the norm's backward kernel.
    Tensor? PendingOfFirstInput(GradNode node)
    {
        if (node.Edges.Length == 0 || !node.Edges[0].IsLive || node.Edges[0].Tensor is not { } t) return null;
        var prev = node.Edges[0].Node is { } c ? _nodeGrads.GetValueOrDefault(c) : _leafGrads.GetValueOrDefault(t);
        var info = node.Inputs[0];
        return prev is not null && prev.DType == info.DType && prev.Device == info.Device && prev.Layout.Shape.AsSpan().SequenceEqual(info.Shape)
            ? prev : null;
    }

    void DropPendingOfFirstInput(GradNode node)
    {
        var e = node.Edges[0];
        Tensor? prev;
        bool removed = e.Node is { } c ? _nodeGrads.Remove(c, out prev) : _leafGrads.Remove(e.Tensor!, out prev);
        if (removed) prev!.Dispose();
    }

    // Holds back a slice's gradient that is exactly its part of one storage of the input's size (as the fused attention
    // backward writes dq, dk, dv into one [b, t, 3C] buffer): it is resolved once every edge into the input is done.
    bool TryHoldSlice(GradNode node, Tensor g)
    {
        if (node.Function is not Tensor.SliceBackward slice || node.Edges.Length != 1 || !node.Edges[0].IsLive || node.Edges[0].Tensor is not { } t)
            return false;
        var info = node.Inputs[0];
        if (g.Numel == 0 || g.DType != info.DType || g.Device != info.Device || g.Storage.Count != info.Shape.Numel()) return false;
        var (dim, start, count, step) = slice.Region;
        if (!SameElements(g.Layout, Layout.Contiguous(info.Shape).Slice(dim, start, count, step))) return false;
        object key = node.Edges[0].Node is { } c ? c : t;
        if (!_slices.TryGetValue(key, out var parts)) _slices[key] = parts = [];
        parts.Add((node, g));
        return true;
    }

    // The held slice gradients of one input: when they are its every part (one dim, step 1, disjoint, covering it)
    // in one storage that no other handle references, that storage as the input's shape is the gradient (no zeros,
    // copies or adds); otherwise each goes the ordinary way (TryAccumulateInPlace, else the slice's rule).
    void ResolveSlices(object key)
    {
        if (!_slices.Remove(key, out var parts)) return;
        try
        {
            if (TryWhole(parts) is { } whole)
            {
                foreach (var (_, g) in parts) g.Dispose();
                AccumulateInto(key, whole);
                return;
            }
            foreach (var (node, g) in parts)
            {
                if (TryAccumulateInPlace(node, g)) continue;
                if (CallRule(node, g, null)[0] is { } r) AccumulateInto(key, r);
            }
        }
        finally
        {
            foreach (var (_, g) in parts) g.Dispose(); // a second Dispose does nothing
        }
    }

    static Tensor? TryWhole(List<(GradNode Node, Tensor Grad)> parts)
    {
        var storage = parts[0].Grad.Storage;
        var shape = parts[0].Node.Inputs[0].Shape;
        if (storage.References != parts.Count) return null; // another handle (a hook's, a capture's) sees the buffer
        int dim = ((Tensor.SliceBackward)parts[0].Node.Function).Region.Dim;
        var spans = new List<(int Start, int Count)>();
        foreach (var (node, g) in parts)
        {
            var r = ((Tensor.SliceBackward)node.Function).Region;
            if (g.Storage != storage || r.Dim != dim || (r.Step != 1 && r.Count > 1) || !node.Inputs[0].Shape.AsSpan().SequenceEqual(shape)) return null;
            spans.Add((r.Start, r.Count));
        }
        spans.Sort();
        int next = 0;
        foreach (var (start, count) in spans)
        {
            if (start != next) return null;
            next = start + count;
        }
        if (next != shape[dim]) return null;
        return parts[0].Grad.NewView(Layout.Contiguous(shape));
    }

    // One layout up to the strides of size-1 dims (which address nothing).
    static bool SameElements(Layout a, Layout b)
    {
        if (!a.Shape.AsSpan().SequenceEqual(b.Shape) || a.Offset != b.Offset) return false;
        for (int i = 0; i < a.Rank; i++) if (a.Shape[i] > 1 && a.Strides[i] != b.Strides[i]) return false;
        return true;
    }

    void AccumulateInto(object key, Tensor g)
    {
        if (key is GradNode c) Accumulate(_nodeGrads, c, g);
        else Accumulate(_leafGrads, (Tensor)key, g);
    }

    // Fan-out: gradients reaching one node or leaf along several edges are summed.
    static void Accumulate<TKey>(Dictionary<TKey, Tensor> d, TKey key, Tensor g) where TKey : notnull
    {
        if (!d.Remove(key, out var prev)) { d[key] = g; return; }
        Tensor sum;
        try { sum = prev.Add(g); }
        finally { prev.Dispose(); g.Dispose(); }
        d[key] = sum;
    }

    void FinishLeaf(Tensor leaf)
    {
        if (!_leafGrads.Remove(leaf, out var g)) return;
        try
        {
            if (leaf.GradHooks is { Count: > 0 } hooks) g = RunHooks(hooks, g);
            if (_leafTargets.TryGetValue(leaf, out var idx)) CaptureInto(idx, g);
            if (_accumulate) Keep(leaf, g, mayTakeOver: true);
        }
        finally { g.Dispose(); }
        if (_accumulate && leaf.PostAccumulateGradHooks is { Count: > 0 } post)
            foreach (var h in post.ToArray()) h(leaf);
    }

    // A leaf's (or retaining non-leaf's) Grad: a private contiguous tensor at first, then accumulated in place. It
    // belongs to no dispose scope: the tensor's owner (or the optimizer's ZeroGrad) disposes it. The first gradient
    // of a leaf is taken over instead of copied when it already is private (as PyTorch's AccumulateGrad steals a
    // gradient whose use count says nothing else holds it): a whole contiguous storage that only the pass's own
    // handle references, so no other tensor, saved value or hook result can see it or be changed by later in-place
    // accumulation. The pass disposes its handle right after, leaving Grad the sole owner.
    static void Keep(Tensor t, Tensor g, bool mayTakeOver = false)
    {
        var cur = t.Grad;
        if (cur is not null && !cur.IsDisposed) { cur.AddInPlace(g); return; }
        t.Grad = mayTakeOver && IsPrivate(g) ? g.Detach().DetachFromScopes() : g.Clone().DetachFromScopes();
    }

    static bool IsPrivate(Tensor g) =>
        g.Storage.References == 1 && g.IsContiguous && g.Layout.Offset == 0 && g.Storage.Count == g.Numel;

    void CaptureInto(List<int> indices, Tensor g)
    {
        foreach (var i in indices) _captured[i] ??= Share(g);
    }

    // Runs gradient hooks; a hook may return a replacement of the same shape (taken as a new handle).
    static Tensor RunHooks(List<Func<Tensor, Tensor?>> hooks, Tensor g)
    {
        foreach (var h in hooks.ToArray())
        {
            var r = h(g);
            if (r is null || ReferenceEquals(r, g)) continue;
            if (!r.Layout.Shape.AsSpan().SequenceEqual(g.Layout.Shape))
            {
                var shapes = $"a gradient hook returned a tensor of shape {Shape.Format(r.Layout.Shape)} for a gradient of shape {Shape.Format(g.Layout.Shape)}";
                g.Dispose();
                throw new ShapeException("Backward", shapes);
            }
            var next = r.DType == g.DType && r.Device == g.Device ? Share(r) : r.To(g.Device, g.DType);
            g.Dispose();
            g = next;
        }
        return g;
    }
}

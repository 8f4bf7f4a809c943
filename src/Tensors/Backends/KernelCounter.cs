using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;

namespace Engine.Backends;

/// <summary>
/// Counts backend kernel launches, by kernel name (the <see cref="IBackend"/> method: <c>"Unary"</c>,
/// <c>"MatMul"</c>, <c>"AdamStep"</c>, <c>"NonFiniteCheckAndUnscale"</c>, ...). Every backend calls
/// <see cref="Record"/> once per kernel it runs; a fused kernel counts once even when its implementation issues several
/// device launches, and a capability served by its composite default (<see cref="CompositeKernels"/>) counts the
/// primitive kernels it is built from instead. Host copies, allocation and <see cref="IBackend.Synchronize"/> are not
/// kernels and are not counted.
/// <para>
/// The process-wide totals (<see cref="Launches"/>, <see cref="Count"/>) are thread-safe and only grow. To count one
/// region of code, open a scope: <c>using var c = KernelCounter.Begin(); ...; Assert.That(c.Launches, Is.Zero)</c>.
/// A scope sees the launches made by the code that opened it and the tasks it starts (it flows with the
/// <see cref="ExecutionContext"/>, like the no-grad and autocast scopes), not another test's launches on another thread.
/// Scopes nest; a launch counts in every open scope of its flow.
/// </para>
/// <para>
/// The launches are also published as the <c>engine.kernel.launches</c> counter (tag <c>kernel</c>) of the
/// <c>Engine.Backends</c> <see cref="Meter"/>, so <c>dotnet-counters monitor --counters Engine.Backends</c> shows them.
/// PyTorch has no direct equivalent; its profiler's per-kernel call counts are the closest.
/// </para>
/// </summary>
public static class KernelCounter
{
    static readonly ConcurrentDictionary<string, StrongBox<long>> s_counts = new(StringComparer.Ordinal);
    static readonly AsyncLocal<KernelCounterScope?> s_scope = new();
    static readonly Meter s_meter = new("Engine.Backends");
    static readonly Counter<long> s_meterLaunches = s_meter.CreateCounter<long>("engine.kernel.launches", "{launch}", "Backend kernel launches, by kernel name");
    static long s_total;

    /// <summary>Counts one launch of <paramref name="kernel"/> (called by backends, once per kernel they run).</summary>
    public static void Record(string kernel)
    {
        Interlocked.Increment(ref s_total);
        Interlocked.Increment(ref Box(kernel).Value);
        for (var s = s_scope.Value; s is not null; s = s.Parent) s.Add(kernel);
        if (s_meterLaunches.Enabled) s_meterLaunches.Add(1, new KeyValuePair<string, object?>("kernel", kernel));
    }

    // Kernel names are nameof literals, one string instance per name, so a lookup by reference finds the counter
    // without hashing the characters (this is on every op's path; see the op_overhead workload). Bounded, so callers
    // that build names at run time only fall back to the ordinal lookup.
    static readonly ConcurrentDictionary<string, StrongBox<long>> s_byReference = new(ReferenceEqualityComparer.Instance);
    const int MaxReferenceEntries = 1024;

    static StrongBox<long> Box(string kernel)
    {
        if (s_byReference.TryGetValue(kernel, out var box)) return box;
        box = s_counts.GetOrAdd(kernel, static _ => new StrongBox<long>());
        if (s_byReference.Count < MaxReferenceEntries) s_byReference.TryAdd(kernel, box);
        return box;
    }

    /// <summary>Kernel launches in this process so far, all kernels together.</summary>
    public static long Launches => Interlocked.Read(ref s_total);

    /// <summary>Launches of one kernel (an <see cref="IBackend"/> method name) in this process so far.</summary>
    public static long Count(string kernel) => s_counts.TryGetValue(kernel, out var box) ? Interlocked.Read(ref box.Value) : 0;

    /// <summary>A copy of the process-wide counts by kernel name (kernels never launched are absent).</summary>
    public static IReadOnlyDictionary<string, long> Snapshot() =>
        s_counts.ToDictionary(kv => kv.Key, kv => Interlocked.Read(ref kv.Value.Value), StringComparer.Ordinal);

    /// <summary>
    /// Starts counting the launches of this code (and the tasks it starts) until the returned scope is disposed.
    /// </summary>
    public static KernelCounterScope Begin()
    {
        var scope = new KernelCounterScope(s_scope.Value);
        s_scope.Value = scope;
        return scope;
    }

    internal static void End(KernelCounterScope scope)
    {
        // Scopes are disposed innermost first; one disposed out of order is unlinked when it is the current one, and
        // otherwise stops counting (Add checks) while its inner scopes still run.
        if (ReferenceEquals(s_scope.Value, scope)) s_scope.Value = scope.Parent;
    }
}

/// <summary>
/// The launches counted since <see cref="KernelCounter.Begin"/>. Disposing it stops the counting; the counts stay
/// readable.
/// </summary>
public sealed class KernelCounterScope : IDisposable
{
    readonly ConcurrentDictionary<string, StrongBox<long>> _counts = new(StringComparer.Ordinal);
    long _total;
    volatile bool _ended;

    internal KernelCounterScope(KernelCounterScope? parent) => Parent = parent;

    internal KernelCounterScope? Parent { get; }

    internal void Add(string kernel)
    {
        if (_ended) return;
        Interlocked.Increment(ref _total);
        Interlocked.Increment(ref _counts.GetOrAdd(kernel, static _ => new StrongBox<long>()).Value);
    }

    /// <summary>Kernel launches in the scope, all kernels together.</summary>
    public long Launches => Interlocked.Read(ref _total);

    /// <summary>Launches of one kernel (an <see cref="IBackend"/> method name, e.g. <c>"AdamStep"</c>) in the scope.</summary>
    public long Count(string kernel) => _counts.TryGetValue(kernel, out var box) ? Interlocked.Read(ref box.Value) : 0;

    /// <summary>The scope's counts by kernel name (kernels not launched are absent).</summary>
    public IReadOnlyDictionary<string, long> Counts =>
        _counts.ToDictionary(kv => kv.Key, kv => Interlocked.Read(ref kv.Value.Value), StringComparer.Ordinal);

    /// <summary>Stops counting.</summary>
    public void Dispose()
    {
        _ended = true;
        KernelCounter.End(this);
    }

    /// <summary>The counts, most launched first, e.g. <c>"12 launches: Binary 7, Unary 5"</c>.</summary>
    public override string ToString() =>
        $"{Launches} launch{(Launches == 1 ? "" : "es")}" + string.Concat(Counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal)
            .Select((kv, i) => (i == 0 ? ": " : ", ") + kv.Key + " " + kv.Value));
}

using Engine.Backends;

namespace Engine.Backends.Cpu;

/// <summary>
/// Tells the GC how much host memory live CPU storages hold (<see cref="Storage.LiveBytes"/>), so that a program that
/// drops tensors without disposing them still gets collections, whose finalizers free the buffers. What a forgotten
/// tensor keeps alive is its live storage, so that is what is reported, not the pool's cache.
/// <para>
/// The report follows the live bytes within a factor of two: it is adjusted only when they pass twice the reported
/// amount or fall below half of it, and nothing is reported below <see cref="Floor"/>. Reporting every storage as it
/// comes and goes would be exact but costly: the GC counts every added byte toward its next induced full collection
/// (a budget of a few MiB when additions and removals balance), so a loop that disposes everything would still pay
/// about two full collections per step of two 16 MiB tensors. With the band such a loop reports nothing, while memory
/// that keeps growing is reported at every doubling.
/// </para>
/// </summary>
public static class CpuMemoryPressure
{
    /// <summary>Live bytes below which nothing is reported (64 MiB): small programs never induce a collection.</summary>
    public const long Floor = 64L << 20;

    static long s_reported;
    static readonly Lock s_lock = new();

    /// <summary>
    /// Live bytes from which a report that grows also induces a full collection (512 MiB). <see cref="GC.AddMemoryPressure"/>
    /// alone is a hint whose threshold grows with the process's history of additions and removals: after a long run of
    /// balanced pressure (a test suite, a long training job) it let 5 GiB of forgotten tensors pile up. One collection
    /// per doubling past this size bounds what forgotten tensors can hold to about twice the real live set, at a cost
    /// logarithmic in the peak.
    /// </summary>
    public const long CollectAbove = 512L << 20;

    /// <summary>Bytes currently reported to the GC with <see cref="GC.AddMemoryPressure"/>.</summary>
    public static long Reported => Interlocked.Read(ref s_reported);

    static bool Outside(long live, long reported) =>
        reported == 0 ? live >= Floor : live > 2 * reported || live < reported / 2;

    /// <summary>Brings the report in line with the live bytes when they left the band. Any thread, finalizers included.</summary>
    internal static void Update()
    {
        // The common case, a storage that leaves the live bytes inside the band, costs two reads.
        if (!Outside(Storage.LiveBytes(DeviceType.Cpu), Interlocked.Read(ref s_reported))) return;
        bool collect;
        lock (s_lock)
        {
            long live = Storage.LiveBytes(DeviceType.Cpu), reported = s_reported;
            if (!Outside(live, reported)) return;
            long target = live >= Floor ? live : 0;
            // Adding may run a full collection right here; the finalizers it queues take this lock after it returns.
            if (target > reported) GC.AddMemoryPressure(target - reported);
            else if (target < reported) GC.RemoveMemoryPressure(reported - target);
            Interlocked.Exchange(ref s_reported, target);
            collect = target > reported && live >= CollectAbove;
        }
        // Outside the lock: the finalizers this queues take it when they free their storages.
        if (collect) GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true);
    }
}

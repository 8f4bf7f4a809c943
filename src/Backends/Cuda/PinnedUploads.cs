using ILGPU;
using ILGPU.Runtime;

namespace Engine.Backends.Cuda;

/// <summary>
/// Host→device copies through page-locked ("pinned") staging buffers, so that uploading a batch does not wait for the
/// device. From pageable memory a copy is synchronous (the driver stages it itself and returns once the data has left
/// the caller's memory), and it also waits for every kernel queued before it: a training step that uploads its batch
/// would drain the queue once per step. Here the caller's bytes are copied into a pinned buffer (a host memcpy, so the
/// caller may reuse its memory at once, as with a synchronous copy) and the device copy is queued behind the kernels
/// already on the stream (as <c>tensor.pin_memory().to("cuda", non_blocking=True)</c> does in PyTorch).
/// <para>
/// A staging buffer may be reused only once its queued copy has run. The backend has one stream, and every time the
/// host waits for that stream (reading a tensor, <c>Synchronize</c>) all copies queued before have completed, so each
/// buffer remembers the <see cref="_epoch"/> it was queued in and is free once the epoch has moved on. A training loop
/// reads its loss once per step, so a few buffers per batch size suffice and no upload ever waits. When every buffer is
/// still in flight the upload takes the synchronous path, which frees them all.
/// </para>
/// Buffers have the exact size of the copies they serve (ILGPU copies a page-locked array whole), are kept per size up
/// to <see cref="MaxBuffers"/> in all, and only copies up to <see cref="MaxBytes"/> are staged: larger ones (loading a
/// checkpoint) gain nothing from overlap and would hold that much pinned memory.
/// </summary>
sealed class PinnedUploads : IDisposable
{
    /// <summary>Largest copy staged through pinned memory (16 MiB); larger ones are synchronous.</summary>
    public const int MaxBytes = 16 << 20;

    /// <summary>Most staging buffers held at once.</summary>
    public const int MaxBuffers = 16;

    sealed class Buffer(PageLockedArray1D<byte> array)
    {
        public readonly PageLockedArray1D<byte> Array = array;
        public long QueuedInEpoch = -1; // never used: free
    }

    readonly Accelerator _accelerator;
    readonly List<Buffer> _buffers = [];
    readonly Lock _lock = new();
    long _epoch;

    public PinnedUploads(Accelerator accelerator) => _accelerator = accelerator;

    /// <summary>Copies staged and queued without waiting (a counter for tests and diagnostics).</summary>
    public long Staged { get; private set; }

    /// <summary>Pinned bytes held by the staging buffers.</summary>
    public long PinnedBytes { get { lock (_lock) return _buffers.Sum(b => b.Array.Length); } }

    /// <summary>
    /// Says that the host has waited for the stream: every copy queued so far has completed and its buffer is free.
    /// </summary>
    public void StreamSynchronized()
    {
        lock (_lock) _epoch++;
    }

    /// <summary>
    /// Queues the copy of <paramref name="bytes"/> into <paramref name="target"/> (of the same length) through a pinned
    /// buffer without waiting for the device; false when the copy is too large or every buffer is still in flight, and
    /// then the caller copies synchronously.
    /// </summary>
    public bool TryUpload(ReadOnlySpan<byte> bytes, ArrayView<byte> target, AcceleratorStream stream)
    {
        if (bytes.Length > MaxBytes || bytes.Length == 0) return false;
        lock (_lock)
        {
            var buffer = Rent(bytes.Length);
            if (buffer is null) return false;
            bytes.CopyTo(buffer.Array.Span);
            target.CopyFromPageLockedAsync(stream, buffer.Array);
            buffer.QueuedInEpoch = _epoch;
            Staged++;
            return true;
        }
    }

    // A free buffer of this size; else a new one while there is room; else a free one of another size replaced.
    Buffer? Rent(int length)
    {
        Buffer? otherSize = null;
        foreach (var b in _buffers)
        {
            if (b.QueuedInEpoch >= _epoch) continue; // in flight
            if (b.Array.Length == length) return b;
            otherSize ??= b;
        }
        if (_buffers.Count >= MaxBuffers)
        {
            if (otherSize is null) return null;
            _buffers.Remove(otherSize);
            otherSize.Array.Dispose();
        }
        var fresh = new Buffer(_accelerator.AllocatePageLocked1D<byte>(length));
        _buffers.Add(fresh);
        return fresh;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var b in _buffers) b.Array.Dispose();
            _buffers.Clear();
        }
    }
}

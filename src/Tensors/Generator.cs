namespace Engine;

/// <summary>The position of a <see cref="Generator"/>: what a checkpoint saves to resume the same random stream.</summary>
/// <param name="Seed">The Philox key.</param>
/// <param name="Offset">The next unused Philox counter.</param>
public readonly record struct GeneratorState(ulong Seed, ulong Offset);

/// <summary>
/// A Philox4x32-10 random stream: a seed (the key) and an offset (the next unused 128-bit counter; each counter gives
/// four 32-bit words). A draw of n elements reserves ⌈n/4⌉ counters and is a pure function of (seed, offset), so the
/// numbers are the same on every device and thread count, and saving <see cref="GetState"/> is enough to replay a
/// stream. Reservation is thread-safe: concurrent draws get disjoint counters.
/// Differs from PyTorch: <see cref="Default"/> starts from seed 0, not from a random seed, so runs are reproducible
/// unless you reseed; the CPU generator is Philox too (PyTorch's CPU uses mt19937), so the numbers differ from
/// PyTorch's CPU ones.
/// </summary>
public sealed class Generator
{
    readonly Lock _lock = new();
    ulong _seed, _offset;

    /// <summary>A stream at offset 0 of <paramref name="seed"/>.</summary>
    public Generator(ulong seed = 0) { _seed = seed; }

    /// <summary>The process-wide generator used when an op is given none (seed 0 until <see cref="Tensor.ManualSeed"/>).</summary>
    public static Generator Default { get; } = new(0);

    /// <summary>The key of the stream.</summary>
    public ulong Seed { get { lock (_lock) return _seed; } }

    /// <summary>The next unused counter (each counter yields four 32-bit words).</summary>
    public ulong Offset { get { lock (_lock) return _offset; } }

    /// <summary>Restarts the stream at offset 0 of <paramref name="seed"/> (as <c>Generator.manual_seed</c>). Returns this.</summary>
    public Generator ManualSeed(ulong seed)
    {
        lock (_lock) { _seed = seed; _offset = 0; }
        return this;
    }

    /// <summary>The seed and offset, to save with a checkpoint.</summary>
    public GeneratorState GetState() { lock (_lock) return new(_seed, _offset); }

    /// <summary>Restores a state from <see cref="GetState"/>: later draws repeat those that followed it.</summary>
    public void SetState(GeneratorState state)
    {
        lock (_lock) { _seed = state.Seed; _offset = state.Offset; }
    }

    /// <summary>
    /// Reserves the counters for <paramref name="elements"/> random words (⌈n/4⌉) and returns the seed and the first
    /// counter to pass to <see cref="Backends.IBackend.Random"/> (or to a kernel that calls <see cref="Ops.Philox"/>).
    /// </summary>
    public GeneratorState Reserve(long elements)
    {
        if (elements < 0) throw new EngineException("Generator.Reserve", $"cannot reserve a negative count ({elements})");
        ulong counters = ((ulong)elements + 3) / 4;
        // One lock for seed and offset together: a reseed racing a draw gives either the old stream or the new one.
        lock (_lock)
        {
            var s = new GeneratorState(_seed, _offset);
            _offset += counters;
            return s;
        }
    }
}

public sealed partial class Tensor
{
    /// <summary>Reseeds <see cref="Generator.Default"/> and restarts it at offset 0 (as <c>torch.manual_seed</c>).</summary>
    public static void ManualSeed(ulong seed) => Generator.Default.ManualSeed(seed);
}

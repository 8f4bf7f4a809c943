namespace Engine.Cli.Training;

/// <summary>
/// The training data stream's randomness: sample i of a run with seed s draws from its own generator seeded by a
/// SplitMix64 hash of (s, i). The value is the same in every process and on every machine (unlike
/// <see cref="HashCode"/>, which .NET randomizes per process), and does not depend on how samples are grouped into
/// batches, so a resumed run with another batch size continues the same stream.
/// </summary>
static class DataStream
{
    public static Random Rng(ulong seed, long sample) => new(Seed(seed, sample));

    /// <summary>A 31-bit seed for <see cref="Random(int)"/>, whose seeded algorithm .NET keeps fixed across versions.</summary>
    public static int Seed(ulong seed, long sample) => (int)(Mix(Mix(seed) ^ (ulong)sample) >> 33);

    // SplitMix64's finalizer (Steele, Lea, Flood 2014): a bijection whose output bits each depend on every input bit.
    static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}

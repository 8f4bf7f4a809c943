using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Engine;

// Vectorized span conversions, bit-identical to the scalar operators for every input.
public readonly partial struct BFloat16
{
    /// <summary>
    /// Converts floats to bfloat16 element by element, exactly as <c>(BFloat16)source[i]</c> (round to nearest, ties to even;
    /// NaN quieted with sign kept), using Vector512 or Vector256 when hardware-accelerated.
    /// </summary>
    /// <param name="source">The values to convert.</param>
    /// <param name="destination">Receives the converted values; must be at least as long as <paramref name="source"/>.</param>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is shorter than <paramref name="source"/>.</exception>
    public static void ConvertFromSingle(ReadOnlySpan<float> source, Span<BFloat16> destination)
    {
        if (destination.Length < source.Length)
        {
            throw new ArgumentException("Destination is shorter than source.", nameof(destination));
        }

        ReadOnlySpan<uint> src = MemoryMarshal.Cast<float, uint>(source);
        Span<ushort> dst = MemoryMarshal.Cast<BFloat16, ushort>(destination);
        if (Vector512.IsHardwareAccelerated)
        {
            FromSingle512(src, dst);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            FromSingle256(src, dst);
        }
        else
        {
            FromSingleScalar(src, dst, 0);
        }
    }

    /// <summary>
    /// Converts bfloat16 values to floats element by element (exact: the bits shifted into the upper half),
    /// using Vector512 or Vector256 when hardware-accelerated.
    /// </summary>
    /// <param name="source">The values to convert.</param>
    /// <param name="destination">Receives the converted values; must be at least as long as <paramref name="source"/>.</param>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is shorter than <paramref name="source"/>.</exception>
    public static void ConvertToSingle(ReadOnlySpan<BFloat16> source, Span<float> destination)
    {
        if (destination.Length < source.Length)
        {
            throw new ArgumentException("Destination is shorter than source.", nameof(destination));
        }

        ReadOnlySpan<ushort> src = MemoryMarshal.Cast<BFloat16, ushort>(source);
        Span<uint> dst = MemoryMarshal.Cast<float, uint>(destination);
        if (Vector512.IsHardwareAccelerated)
        {
            ToSingle512(src, dst);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            ToSingle256(src, dst);
        }
        else
        {
            ToSingleScalar(src, dst, 0);
        }
    }

    // The per-width kernels are private but callable regardless of hardware support (unaccelerated vectors are
    // emulated, still exact), so the tests exercise every path through reflection.

    private static void FromSingleScalar(ReadOnlySpan<uint> src, Span<ushort> dst, int start)
    {
        for (int i = start; i < src.Length; i++)
        {
            dst[i] = RoundSingleBits(src[i]);
        }
    }

    private static void FromSingle512(ReadOnlySpan<uint> src, Span<ushort> dst)
    {
        int i = 0;
        int step = 2 * Vector512<uint>.Count;
        if (src.Length >= step)
        {
            ref uint s = ref MemoryMarshal.GetReference(src);
            ref ushort d = ref MemoryMarshal.GetReference(dst);
            for (; i <= src.Length - step; i += step)
            {
                Vector512<uint> lo = Round512(Vector512.LoadUnsafe(ref s, (nuint)i));
                Vector512<uint> hi = Round512(Vector512.LoadUnsafe(ref s, (nuint)(i + Vector512<uint>.Count)));
                Vector512.Narrow(lo, hi).StoreUnsafe(ref d, (nuint)i);
            }
        }

        FromSingleScalar(src, dst, i);
    }

    private static void FromSingle256(ReadOnlySpan<uint> src, Span<ushort> dst)
    {
        int i = 0;
        int step = 2 * Vector256<uint>.Count;
        if (src.Length >= step)
        {
            ref uint s = ref MemoryMarshal.GetReference(src);
            ref ushort d = ref MemoryMarshal.GetReference(dst);
            for (; i <= src.Length - step; i += step)
            {
                Vector256<uint> lo = Round256(Vector256.LoadUnsafe(ref s, (nuint)i));
                Vector256<uint> hi = Round256(Vector256.LoadUnsafe(ref s, (nuint)(i + Vector256<uint>.Count)));
                Vector256.Narrow(lo, hi).StoreUnsafe(ref d, (nuint)i);
            }
        }

        FromSingleScalar(src, dst, i);
    }

    // Same rule as RoundSingleBits, lane-wise; the result's upper 16 bits are zero so Narrow (truncating) is exact.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> Round512(Vector512<uint> bits)
    {
        Vector512<uint> rounded = bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One);
        Vector512<uint> quiet = bits | Vector512.Create(0x0040_0000u);
        Vector512<uint> isNaN = Vector512.GreaterThan(bits & Vector512.Create(0x7FFF_FFFFu), Vector512.Create(0x7F80_0000u));
        return Vector512.ConditionalSelect(isNaN, quiet, rounded) >> 16;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Round256(Vector256<uint> bits)
    {
        Vector256<uint> rounded = bits + Vector256.Create(0x7FFFu) + ((bits >> 16) & Vector256<uint>.One);
        Vector256<uint> quiet = bits | Vector256.Create(0x0040_0000u);
        Vector256<uint> isNaN = Vector256.GreaterThan(bits & Vector256.Create(0x7FFF_FFFFu), Vector256.Create(0x7F80_0000u));
        return Vector256.ConditionalSelect(isNaN, quiet, rounded) >> 16;
    }

    private static void ToSingleScalar(ReadOnlySpan<ushort> src, Span<uint> dst, int start)
    {
        for (int i = start; i < src.Length; i++)
        {
            dst[i] = (uint)src[i] << 16;
        }
    }

    private static void ToSingle512(ReadOnlySpan<ushort> src, Span<uint> dst)
    {
        int i = 0;
        int step = Vector512<ushort>.Count;
        if (src.Length >= step)
        {
            ref ushort s = ref MemoryMarshal.GetReference(src);
            ref uint d = ref MemoryMarshal.GetReference(dst);
            for (; i <= src.Length - step; i += step)
            {
                (Vector512<uint> lo, Vector512<uint> hi) = Vector512.Widen(Vector512.LoadUnsafe(ref s, (nuint)i));
                (lo << 16).StoreUnsafe(ref d, (nuint)i);
                (hi << 16).StoreUnsafe(ref d, (nuint)(i + Vector512<uint>.Count));
            }
        }

        ToSingleScalar(src, dst, i);
    }

    private static void ToSingle256(ReadOnlySpan<ushort> src, Span<uint> dst)
    {
        int i = 0;
        int step = Vector256<ushort>.Count;
        if (src.Length >= step)
        {
            ref ushort s = ref MemoryMarshal.GetReference(src);
            ref uint d = ref MemoryMarshal.GetReference(dst);
            for (; i <= src.Length - step; i += step)
            {
                (Vector256<uint> lo, Vector256<uint> hi) = Vector256.Widen(Vector256.LoadUnsafe(ref s, (nuint)i));
                (lo << 16).StoreUnsafe(ref d, (nuint)i);
                (hi << 16).StoreUnsafe(ref d, (nuint)(i + Vector256<uint>.Count));
            }
        }

        ToSingleScalar(src, dst, i);
    }
}

namespace Engine;

/// <summary>
/// The extents of a tensor's dims, as <c>torch.Size</c>: an immutable list of ints. It owns its array; constructing
/// one copies, <see cref="ToArray"/> copies, and <see cref="AsSpan"/> is read-only, so nothing outside can change a
/// shape after it is made. <c>default(Shape)</c> is the 0-d shape <c>[]</c>. The static members are the shape
/// arithmetic shared by every op: element counts, dim normalization, broadcasting, formatting.
/// </summary>
[System.Runtime.CompilerServices.CollectionBuilder(typeof(Shape), nameof(Create))]
public readonly struct Shape : IReadOnlyList<int>, IEquatable<Shape>
{
    readonly int[]? _dims;

    /// <summary>A shape with the given dims (copied).</summary>
    public Shape(params ReadOnlySpan<int> dims) { _dims = dims.Length == 0 ? [] : dims.ToArray(); }

    Shape(int[] dims, bool _) { _dims = dims; }

    /// <summary>A shape with the given dims (copied); what a collection expression <c>Shape s = [2, 3]</c> calls.</summary>
    public static Shape Create(ReadOnlySpan<int> dims) => new(dims);

    /// <summary>Wraps an array the caller has just built and never writes again: no copy.</summary>
    internal static Shape Own(int[] dims) => new(dims, false);

    // The array itself, for the interface enumerators.
    int[] Raw => _dims ?? [];

    /// <summary>The 0-d shape <c>[]</c>.</summary>
    public static Shape Scalar => default;

    /// <summary>Extent of dim <paramref name="index"/> (0 ≤ index &lt; <see cref="Rank"/>; no negative indices).</summary>
    public int this[int index] => (uint)index < (uint)Count ? _dims![index]
        : throw new ArgumentOutOfRangeException(nameof(index), index, $"dim index out of range for shape {ToString()}");

    /// <summary>Number of dims (as <see cref="Rank"/>).</summary>
    public int Count => _dims?.Length ?? 0;

    /// <summary>Number of dims.</summary>
    public int Rank => Count;

    /// <summary>Number of elements (1 for the 0-d shape), as <c>torch.Size.numel()</c>.</summary>
    public long Numel() => Numel(AsSpan());

    /// <summary>The dims <c>[start, start + length)</c> as a new shape; also what <c>shape[1..]</c> calls.</summary>
    public Shape Slice(int start, int length) => new(AsSpan().Slice(start, length));

    /// <summary>A copy of the dims, the caller's to change.</summary>
    public int[] ToArray() => Count == 0 ? [] : (int[])_dims!.Clone();

    /// <summary>The dims, read-only.</summary>
    public ReadOnlySpan<int> AsSpan() => _dims;

    /// <summary>True when the dims equal <paramref name="other"/> elementwise.</summary>
    public bool SequenceEqual(ReadOnlySpan<int> other) => AsSpan().SequenceEqual(other);

    /// <summary>An enumerator over the dims that does not allocate.</summary>
    public ReadOnlySpan<int>.Enumerator GetEnumerator() => AsSpan().GetEnumerator();

    IEnumerator<int> IEnumerable<int>.GetEnumerator() => ((IEnumerable<int>)Raw).GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => Raw.GetEnumerator();

    /// <inheritdoc/>
    public bool Equals(Shape other) => AsSpan().SequenceEqual(other.AsSpan());

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Shape s && Equals(s);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var d in AsSpan()) h.Add(d);
        return h.ToHashCode();
    }

    /// <summary>Formats as PyTorch prints a size's dims: <c>[2, 3]</c>.</summary>
    public override string ToString() => Format(AsSpan());

    /// <summary>Equal dims.</summary>
    public static bool operator ==(Shape a, Shape b) => a.Equals(b);

    /// <summary>Different dims.</summary>
    public static bool operator !=(Shape a, Shape b) => !a.Equals(b);

    /// <summary>A shape of the array's dims (copied: later writes to the array do not reach the shape).</summary>
    public static implicit operator Shape(int[] dims) => new(dims);

    /// <summary>The dims, read-only.</summary>
    public static implicit operator ReadOnlySpan<int>(Shape shape) => shape.AsSpan();

    /// <summary>
    /// The most elements one tensor, a view included, may have: 2^62. Far above any address space (x86-64 user space
    /// is 2^47 bytes, 2^56 with five-level paging), and low enough that the kernels' index arithmetic (an offset plus
    /// an index times a stride, each bounded by this) cannot overflow a 64-bit integer.
    /// </summary>
    public const long MaxElements = 1L << 62;

    /// <summary>
    /// The most bytes one storage may take: 2^62. The allocators round requests up (to a power of two on the CPU, by
    /// at most 25% on CUDA), which stays within a 64-bit size from here.
    /// </summary>
    public const long MaxBytes = 1L << 62;

    /// <summary>
    /// Number of elements of a shape (1 for the 0-d shape). Checked: a product past <see cref="long.MaxValue"/>
    /// throws a <see cref="ShapeException"/> (a shape with a zero dim has 0 elements, however large the others).
    /// </summary>
    public static long Numel(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            // The signed 128-bit product overflowed when its high half is not the sign of its low half.
            long high = Math.BigMul(n, d, out long low);
            if (high != low >> 63) return NumelOverflow(shape);
            n = low;
        }
        return n;
    }

    static long NumelOverflow(ReadOnlySpan<int> shape) => shape.Contains(0) ? 0
        : throw new ShapeException("Numel", $"shape {Format(shape)} has {TrueProduct(shape)} elements, more than a 64-bit count can hold");

    /// <summary>
    /// Validates a shape for a tensor: no negative dim, and at most <see cref="MaxElements"/> elements counting
    /// zero dims as 1 (so the contiguous strides of an empty tensor fit too). Returns the element count; throws a
    /// <see cref="ShapeException"/> naming <paramref name="op"/> and the shape.
    /// </summary>
    public static long CheckedNumel(ReadOnlySpan<int> shape, string op)
    {
        long n = 1;
        bool empty = false;
        foreach (var d in shape)
        {
            if (d < 0) throw new ShapeException(op, $"negative dimension {d} in shape {Format(shape)}");
            if (d == 0) { empty = true; continue; }
            // The full 128-bit product: a multiply, where a limit / d test would cost a 64-bit division per dim.
            ulong high = Math.BigMul((ulong)n, (ulong)d, out ulong low);
            if (high != 0 || low > MaxElements)
                throw new ShapeException(op, $"shape {Format(shape)} has {TrueProduct(shape)} elements{(shape.Contains(0) ? " (counting its zero dims as 1)" : "")}, more than the limit of {MaxElements} (2^62) for one tensor");
            n = (long)low;
        }
        return empty ? 0 : n;
    }

    /// <summary>
    /// The byte size of a contiguous tensor of <paramref name="shape"/> and <paramref name="dtype"/>: the one check
    /// every allocation goes through. Throws a <see cref="ShapeException"/> naming <paramref name="op"/>, the shape
    /// and the dtype when the shape is invalid or the size passes <see cref="MaxBytes"/>.
    /// </summary>
    public static long CheckedByteLength(ReadOnlySpan<int> shape, DType dtype, string op) => CheckedByteLength(CheckedNumel(shape, op), shape, dtype, op);

    /// <summary>The bytes of <paramref name="numel"/> elements (the count of <paramref name="shape"/>), checked against <see cref="MaxBytes"/>.</summary>
    internal static long CheckedByteLength(long numel, ReadOnlySpan<int> shape, DType dtype, string op)
    {
        int shift = System.Numerics.BitOperations.Log2((uint)dtype.ElementSize()); // element sizes are powers of two
        if (numel > MaxBytes >> shift)
            throw new ShapeException(op, $"shape {Format(shape)} of {dtype.Name()} needs {TrueProduct(shape) * dtype.ElementSize()} bytes, more than the limit of {MaxBytes} bytes (2^62) for one tensor");
        return numel << shift;
    }

    // The exact product for error messages, whatever its size.
    static System.Numerics.BigInteger TrueProduct(ReadOnlySpan<int> shape)
    {
        System.Numerics.BigInteger p = 1;
        foreach (var d in shape) p *= d;
        return p;
    }

    /// <summary>Formats a shape as PyTorch prints it: <c>[2, 3]</c>.</summary>
    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    /// <summary>Maps a possibly negative dim into [0, rank), or throws naming <paramref name="op"/>.</summary>
    public static int NormalizeDim(int dim, int rank, string op)
    {
        int r = Math.Max(rank, 1); // a 0-d tensor accepts dim 0 and -1, as in PyTorch
        if (dim < -r || dim >= r)
            throw new ShapeException(op, $"dim {dim} is out of range for a tensor of rank {rank} (expected in [{-r}, {r - 1}])");
        return dim < 0 ? dim + r : dim;
    }

    /// <summary>
    /// True when a tensor of shape <paramref name="from"/> broadcasts to <paramref name="to"/> (as PyTorch's
    /// <c>is_expandable_to</c>): no more dims, and each trailing dim equal or 1.
    /// </summary>
    public static bool IsExpandable(ReadOnlySpan<int> from, ReadOnlySpan<int> to)
    {
        int lead = to.Length - from.Length;
        if (lead < 0) return false;
        for (int i = 0; i < from.Length; i++)
            if (from[i] != to[lead + i] && from[i] != 1) return false;
        return true;
    }

    /// <summary>The broadcast shape of two shapes (NumPy rules), or throws naming <paramref name="op"/>.</summary>
    public static int[] Broadcast(ReadOnlySpan<int> a, ReadOnlySpan<int> b, string op)
    {
        int n = Math.Max(a.Length, b.Length);
        var r = new int[n];
        for (int i = 0; i < n; i++)
        {
            int da = i < n - a.Length ? 1 : a[i - (n - a.Length)];
            int db = i < n - b.Length ? 1 : b[i - (n - b.Length)];
            if (da != db && da != 1 && db != 1)
                throw new ShapeException(op, $"shapes {Format(a)} and {Format(b)} cannot be broadcast together (dim {i}: {da} vs {db})");
            r[i] = da == 1 ? db : da;
        }
        return r;
    }

    /// <summary>
    /// Contiguous (row-major) strides for a shape. Checked: strides past a 64-bit integer throw a
    /// <see cref="ShapeException"/> (a shape that passed <see cref="CheckedNumel"/> never does).
    /// </summary>
    public static long[] ContiguousStrides(ReadOnlySpan<int> shape)
    {
        var s = new long[shape.Length];
        long acc = 1;
        try
        {
            for (int i = shape.Length - 1; i >= 0; i--) { s[i] = acc; acc = checked(acc * Math.Max(shape[i], 1)); }
        }
        catch (OverflowException)
        {
            throw new ShapeException("ContiguousStrides", $"the strides of shape {Format(shape)} do not fit a 64-bit integer");
        }
        return s;
    }

    /// <summary>Resolves one <c>-1</c> in a requested shape against an element count, validating the total.</summary>
    public static int[] Infer(ReadOnlySpan<int> requested, long numel, string op)
    {
        var r = requested.ToArray();
        int infer = -1;
        long known = 1;
        bool zero = false;
        for (int i = 0; i < r.Length; i++)
        {
            if (r[i] == -1)
            {
                if (infer >= 0) throw new ShapeException(op, $"only one dimension can be inferred in {Format(requested)}");
                infer = i;
            }
            else if (r[i] < 0) throw new ShapeException(op, $"invalid shape dimension {r[i]} in {Format(requested)}");
            else if (r[i] == 0) zero = true;
            // Past numel the product can only be a mismatch: saturate instead of wrapping into a false match.
            else known = known > numel / r[i] ? long.MaxValue : known * r[i];
        }
        if (zero) known = 0;
        if (infer >= 0)
        {
            if (known == 0 || numel % known != 0)
                throw new ShapeException(op, $"shape {Format(requested)} is invalid for input of size {numel}");
            long inferred = numel / known;
            if (inferred > int.MaxValue)
                throw new ShapeException(op, $"shape {Format(requested)} would infer a dim of {inferred} for input of size {numel}, more than a dim can hold ({int.MaxValue})");
            r[infer] = (int)inferred;
        }
        else if (known != numel)
            throw new ShapeException(op, $"shape {Format(requested)} is invalid for input of size {numel}");
        CheckedNumel(r, op); // the zero dims of an empty result still need strides that fit
        return r;
    }
}

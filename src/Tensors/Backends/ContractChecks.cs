using System.Diagnostics;

namespace Engine.Backends;

/// <summary>
/// The preconditions of the backend contract that the front end (the <c>Tensor</c> methods in src/Tensors) establishes
/// before every call: index and target storages are Int64, operands share a dtype, row ops get floating point, a
/// reduction's trailing dims exist. They are validated once, above the contract, with messages naming the user's op
/// and shapes; a backend trusts its caller, as PyTorch's kernels trust the dispatcher. Backends assert them through
/// these methods in Debug builds (compiled out of Release), so a backend under development or a caller that bypasses
/// the front end fails loudly there, and the checks are written once rather than once per backend.
/// </summary>
public static class ContractChecks
{
    /// <summary>Asserts an Int64 storage (indices, class targets).</summary>
    [Conditional("DEBUG")]
    public static void Int64(string op, string what, Storage s)
    {
        if (s.DType != DType.Int64) throw new DTypeException(op, $"{what} must be int64, got {s.DType.Name()} (a contract violation: the front end converts it)");
    }

    /// <summary>Asserts that the storages share one dtype.</summary>
    [Conditional("DEBUG")]
    public static void SameDType(string op, Storage a, Storage b, Storage? c = null)
    {
        if (a.DType != b.DType || c is not null && c.DType != a.DType)
            throw new DTypeException(op, $"operands must share a dtype, got {a.DType.Name()}, {b.DType.Name()}{(c is null ? "" : ", " + c.DType.Name())} (a contract violation)");
    }

    /// <summary>Asserts a floating point dtype.</summary>
    [Conditional("DEBUG")]
    public static void Floating(string op, DType dtype)
    {
        if (!dtype.IsFloatingPoint()) throw new DTypeException(op, $"expected a floating point tensor, got {dtype.Name()} (a contract violation)");
    }

    /// <summary>Asserts a float32 or float64 accumulator storage (a per-row loss gradient).</summary>
    [Conditional("DEBUG")]
    public static void Accumulator(string op, string what, Storage s)
    {
        if (s.DType is not (DType.Float32 or DType.Float64))
            throw new DTypeException(op, $"{what} must be float32 or float64, got {s.DType.Name()} (a contract violation)");
    }

    /// <summary>Asserts that a reduction's trailing dims exist and its indices, if any, are Int64.</summary>
    [Conditional("DEBUG")]
    public static void Reduction(string op, Layout x, int reducedDims, Storage? indices)
    {
        if (reducedDims < 0 || reducedDims > x.Rank)
            throw new ShapeException(op, $"cannot reduce the last {reducedDims} dims of a layout of rank {x.Rank} (a contract violation)");
        // Not a call to Int64: a [Conditional] call inside this class would vanish from a Release build of it.
        if (indices is not null && indices.DType != DType.Int64)
            throw new DTypeException(op, $"indices must be int64, got {indices.DType.Name()} (a contract violation: the front end allocates them)");
    }

    /// <summary>Asserts the batched GEMM's [batch, m, k]·[batch, k, n] layouts and non-negative sizes.</summary>
    [Conditional("DEBUG")]
    public static void Gemm(string op, Layout a, Layout b, int batch, int m, int n, int k)
    {
        if (a.Rank != 3 || b.Rank != 3)
            throw new ShapeException(op, $"expected [batch, m, k] and [batch, k, n] layouts, got {a} and {b} (a contract violation)");
        if (batch < 0 || m < 0 || n < 0 || k < 0)
            throw new ShapeException(op, $"negative size: batch {batch}, m {m}, n {n}, k {k} (a contract violation)");
    }

    /// <summary>Asserts a foreach call's lists: 1 to <see cref="MultiTensor.MaxTensors"/> entries, the same length in every list.</summary>
    [Conditional("DEBUG")]
    public static void Foreach(string op, int count, params int[] otherCounts)
    {
        if (count < 1 || count > MultiTensor.MaxTensors)
            throw new EngineException(op, $"a foreach call takes 1 to {MultiTensor.MaxTensors} tensors, got {count} (a contract violation: the front end splits lists)");
        foreach (var c in otherCounts)
            if (c != count) throw new EngineException(op, $"the lists have {count} and {c} entries (a contract violation)");
    }

    /// <summary>Asserts one pair of a foreach copy: two floating storages of one element count.</summary>
    public static void ForeachCopyEntry(string op, Storage x, Storage y)
    {
        if (!x.DType.IsFloatingPoint() || !y.DType.IsFloatingPoint())
            throw new DTypeException(op, $"entries must be floating point, got {x.DType.Name()} → {y.DType.Name()} (a contract violation)");
        if (x.Count != y.Count)
            throw new ShapeException(op, $"an entry of {x.Count} elements is copied into one of {y.Count} (a contract violation)");
    }

    /// <summary>Asserts a fused Linear call's operands: x laid out [m, k], weight [n, k], non-negative sizes.</summary>
    [Conditional("DEBUG")]
    public static void Linear(string op, Layout x, Layout weight, int m, int n, int k)
    {
        if (x.Rank != 2 || weight.Rank != 2 || x.Shape[0] != m || x.Shape[1] != k || weight.Shape[0] != n || weight.Shape[1] != k)
            throw new ShapeException(op, $"expected x [{m}, {k}] and weight [{n}, {k}] layouts, got {x} and {weight} (a contract violation)");
    }

    /// <summary>
    /// IBackend.LinearGradients' operands: x and w as <see cref="Linear"/>, dz, x, w and dx of one floating dtype, dw of
    /// that dtype or Float32 for 16-bit operands, every storage large enough.
    /// </summary>
    [Conditional("DEBUG")]
    public static void LinearGradients(string op, Storage dz, Storage x, Layout xLayout, Storage w, Layout wLayout, Storage? dx, Storage? dw, int m, int n, int k)
    {
        Linear(op, xLayout, wLayout, m, n, k);
        var dt = dz.DType;
        if (!dt.IsFloatingPoint() || x.DType != dt || w.DType != dt || dx is not null && dx.DType != dt)
            throw new DTypeException(op, $"dz {dt.Name()}, x {x.DType.Name()}, w {w.DType.Name()}{(dx is null ? "" : $" and dx {dx.DType.Name()}")} must share one floating dtype (a contract violation)");
        if (dw is not null && dw.DType != dt && !(dw.DType == DType.Float32 && dt is DType.BFloat16 or DType.Float16))
            throw new DTypeException(op, $"dw {dw.DType.Name()} must be {dt.Name()}{(dt is DType.BFloat16 or DType.Float16 ? " or float32" : "")} (a contract violation)");
        if (dz.Count < (long)m * n || dx is not null && dx.Count < (long)m * k || dw is not null && dw.Count < (long)n * k)
            throw new ShapeException(op, $"dz, dx or dw is smaller than [{m}, {n}], [{m}, {k}], [{n}, {k}] (a contract violation)");
    }
}

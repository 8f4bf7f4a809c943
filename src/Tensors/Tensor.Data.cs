using Engine.Backends;

namespace Engine;

public sealed partial class Tensor
{
    /// <summary>
    /// The elements in row-major order, converted to <typeparamref name="T"/> if the dtype differs. Synchronizes.
    /// A tensor of more than <see cref="Array.MaxLength"/> elements throws a <see cref="ShapeException"/>: no .NET
    /// array holds it (read it in slices). <c>ToArray&lt;ushort&gt;()</c> on a float16 or bfloat16 tensor reads the raw
    /// 16-bit patterns, bit for bit (NaN payloads and subnormals included); <see cref="FromBits"/> is its inverse.
    /// </summary>
    public T[] ToArray<T>() where T : unmanaged
    {
        var want = typeof(T) == typeof(ushort) ? RawBitsDType("ToArray", DType) : DTypeOf<T>();
        if (Numel > Array.MaxLength)
            throw new ShapeException("ToArray", $"{Describe()} has {Numel} elements, more than a .NET array can hold ({Array.MaxLength}); read it in slices (Narrow, Select)");
        using var src = want == DType && IsContiguous && Layout.Offset == 0 && Device.Type == DeviceType.Cpu ? Alias() : CastCopy(want, Device.Cpu, "ToArray");
        var r = new T[src.Numel];
        src.Backend.CopyToHost<T>(src.Storage, r);
        return r;
    }

    /// <summary>The single element of a one-element tensor, as <typeparamref name="T"/>. Synchronizes.</summary>
    public T Item<T>() where T : unmanaged
    {
        if (Numel != 1) throw new ShapeException("Item", $"a tensor with {Numel} elements cannot be converted to a scalar ({Describe()})");
        return ToArray<T>()[0];
    }

    /// <summary>The single element as a double.</summary>
    public double Item() => Item<double>();

    /// <summary>
    /// A contiguous copy with the given dtype on the given device, not recorded by autograd. The transfer between
    /// devices goes through host memory, byte for byte.
    /// </summary>
    internal Tensor CastCopy(DType dtype, Device device, string op = "To")
    {
        if (device == Device)
        {
            var y = Empty(op, Layout.Shape, dtype, device);
            Backend.Copy(Storage, Layout, y.Storage, y.Layout);
            return y;
        }
        // The transfer stages the bytes in one host array, which caps it at Array.MaxLength bytes.
        long staged = Numel * dtype.ElementSize();
        if (staged > Array.MaxLength)
            throw new ShapeException(op, $"moving {Describe()} as {dtype.Name()} from {Device} to {device} needs {staged} bytes in one transfer, more than the largest host staging buffer ({Array.MaxLength} bytes); move it in slices");
        using var same = CastCopy(dtype, Device, op); // contiguous, offset 0, storage of exactly Numel elements
        var bytes = new byte[same.Storage.ByteLength];
        same.Backend.CopyToHost<byte>(same.Storage, bytes);
        var r = Empty(op, Layout.Shape, dtype, device);
        r.Backend.CopyFromHost<byte>(bytes, r.Storage);
        return r;
    }

    /// <summary>This tensor as <paramref name="dtype"/>: a new handle on the same data when the dtype already matches, a converted copy otherwise. Differentiable.</summary>
    public Tensor To(DType dtype)
    {
        if (dtype == DType) return NewView(Layout).RecordIdentity(this);
        return CastCopy(dtype, Device).RecordCast(this);
    }

    /// <summary>This tensor on <paramref name="device"/> (a new handle when already there). Differentiable.</summary>
    public Tensor To(Device device)
    {
        if (device == Device) return NewView(Layout).RecordIdentity(this);
        return CastCopy(DType, device).RecordCast(this);
    }

    /// <summary>This tensor on <paramref name="device"/> as <paramref name="dtype"/>.</summary>
    public Tensor To(Device device, DType dtype)
    {
        if (device == Device) return To(dtype);
        if (dtype == DType) return To(device);
        return CastCopy(dtype, device).RecordCast(this);
    }

    /// <summary>A dense row-major tensor with the same values: a new handle when already contiguous, a copy otherwise.</summary>
    public Tensor Contiguous()
    {
        if (IsContiguous) return NewView(Layout).RecordIdentity(this);
        return CastCopy(DType, Device, "Contiguous").RecordIdentity(this);
    }

    /// <summary>A copy with its own storage (as <c>torch.clone</c>). Differentiable.</summary>
    public Tensor Clone() => CastCopy(DType, Device, "Clone").RecordIdentity(this);

    /// <summary>A new handle on the same data that does not require grad and has no history.</summary>
    public Tensor Detach() => NewView(Layout);
}

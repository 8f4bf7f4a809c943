using ILGPU;
using static Engine.Backends.Cuda.DeviceElements;

namespace Engine.Backends.Cuda.Kernels;

/// <summary>
/// Up to <see cref="MultiTensor.MaxTensors"/> storages as one kernel parameter, for the multi-tensor ("foreach")
/// kernels: ILGPU cannot pass an array of views, but it passes a structure of views, which lands in CUDA's parameter
/// space as PyTorch's <c>TensorListMetadata</c> does (32 views of 16 bytes, the element types and the count: 536
/// bytes; Adam's four lists and its steps stay under the 4 KiB limit). Entry j's element count is its view's length
/// over its element size, so no lengths travel. Fields are read through a switch, which compiles to a jump table on
/// the register file rather than a local-memory array.
/// </summary>
public struct TensorList
{
#pragma warning disable IDE0044 // assigned through Set
    ArrayView<byte> _0;
    ArrayView<byte> _1;
    ArrayView<byte> _2;
    ArrayView<byte> _3;
    ArrayView<byte> _4;
    ArrayView<byte> _5;
    ArrayView<byte> _6;
    ArrayView<byte> _7;
    ArrayView<byte> _8;
    ArrayView<byte> _9;
    ArrayView<byte> _10;
    ArrayView<byte> _11;
    ArrayView<byte> _12;
    ArrayView<byte> _13;
    ArrayView<byte> _14;
    ArrayView<byte> _15;
    ArrayView<byte> _16;
    ArrayView<byte> _17;
    ArrayView<byte> _18;
    ArrayView<byte> _19;
    ArrayView<byte> _20;
    ArrayView<byte> _21;
    ArrayView<byte> _22;
    ArrayView<byte> _23;
    ArrayView<byte> _24;
    ArrayView<byte> _25;
    ArrayView<byte> _26;
    ArrayView<byte> _27;
    ArrayView<byte> _28;
    ArrayView<byte> _29;
    ArrayView<byte> _30;
    ArrayView<byte> _31;
#pragma warning restore IDE0044
    ulong _types0, _types1; // 4 bits per entry: its DType

    /// <summary>The number of entries.</summary>
    public int Count;

    /// <summary>Entry <paramref name="j"/>'s bytes.</summary>
    public readonly ArrayView<byte> this[int j] => j switch
    {
            0 => _0,
            1 => _1,
            2 => _2,
            3 => _3,
            4 => _4,
            5 => _5,
            6 => _6,
            7 => _7,
            8 => _8,
            9 => _9,
            10 => _10,
            11 => _11,
            12 => _12,
            13 => _13,
            14 => _14,
            15 => _15,
            16 => _16,
            17 => _17,
            18 => _18,
            19 => _19,
            20 => _20,
            21 => _21,
            22 => _22,
            23 => _23,
            24 => _24,
            25 => _25,
            26 => _26,
            27 => _27,
            28 => _28,
            29 => _29,
            30 => _30,
        _ => _31,
    };

    /// <summary>Entry <paramref name="j"/>'s element type (a <see cref="DType"/> code).</summary>
    public readonly int Type(int j) => (int)((j < 16 ? _types0 >> (4 * j) : _types1 >> (4 * (j - 16))) & 15);

    /// <summary>Entry <paramref name="j"/>'s element count.</summary>
    public readonly long Length(int j)
    {
        int t = Type(j);
        return this[j].Length >> (t == F64 ? 3 : t == F32 ? 2 : 1); // a shift: a 64-bit '/' is a software routine on PTX
    }

    /// <summary>The list of the storages' device views (host side).</summary>
    public static TensorList Of(IReadOnlyList<Storage> storages)
    {
        if (storages.Count > MultiTensor.MaxTensors)
            throw new EngineException("TensorList", $"{storages.Count} tensors in one launch; at most {MultiTensor.MaxTensors}");
        var l = new TensorList { Count = storages.Count };
        for (int j = 0; j < storages.Count; j++)
        {
            var s = storages[j];
            if (!s.DType.IsFloatingPoint())
                throw new DTypeException("TensorList", $"entry {j} must be floating point, got {s.DType.Name()}");
            l.Set(j, CudaBackend.V(s));
            ulong code = (ulong)(int)s.DType;
            if (j < 16) l._types0 |= code << (4 * j);
            else l._types1 |= code << (4 * (j - 16));
        }
        // Unused slots repeat entry 0, so that no null view is marshalled; kernels never read past Count.
        for (int j = storages.Count; j < MultiTensor.MaxTensors && storages.Count > 0; j++) l.Set(j, CudaBackend.V(storages[0]));
        return l;
    }

    void Set(int j, ArrayView<byte> v)
    {
        switch (j)
        {
            case 0: _0 = v; break;
            case 1: _1 = v; break;
            case 2: _2 = v; break;
            case 3: _3 = v; break;
            case 4: _4 = v; break;
            case 5: _5 = v; break;
            case 6: _6 = v; break;
            case 7: _7 = v; break;
            case 8: _8 = v; break;
            case 9: _9 = v; break;
            case 10: _10 = v; break;
            case 11: _11 = v; break;
            case 12: _12 = v; break;
            case 13: _13 = v; break;
            case 14: _14 = v; break;
            case 15: _15 = v; break;
            case 16: _16 = v; break;
            case 17: _17 = v; break;
            case 18: _18 = v; break;
            case 19: _19 = v; break;
            case 20: _20 = v; break;
            case 21: _21 = v; break;
            case 22: _22 = v; break;
            case 23: _23 = v; break;
            case 24: _24 = v; break;
            case 25: _25 = v; break;
            case 26: _26 = v; break;
            case 27: _27 = v; break;
            case 28: _28 = v; break;
            case 29: _29 = v; break;
            case 30: _30 = v; break;
            case 31: _31 = v; break;
        }
    }
}

using System.Buffers.Binary;
using Engine.Backends;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace Engine.Serialization;

/// <summary>
/// Loads a safetensors file with positioned reads of at most <see cref="ChunkBytes"/>, each copied (or widened) into
/// its tensor's storage at its offset. Not memory-mapped: the pages of a mapping count in the process's resident
/// memory until unmapped, so mapping a 3 GiB file would double the peak; chunked reads keep it at the tensors'
/// bytes plus two chunk buffers, and leave the page cache to the kernel.
/// </summary>
internal static class SafeTensorsReader
{
    /// <summary>Largest piece copied at once (at most this much host memory on top of the tensors).</summary>
    internal const int ChunkBytes = 8 << 20;

    public static SafeTensors.Contents Load(string path, Device? device)
    {
        if (!File.Exists(path)) throw SafeTensors.Error(path, "file not found");
        var dev = device ?? Device.Cpu;
        SafeFileHandle handle;
        try { handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw SafeTensors.Error(path, $"cannot open the file ({e.Message})", e); }
        using var _ = handle;
        try
        {
            return Load(path, handle, dev);
        }
        catch (IOException e) { throw SafeTensors.Error(path, $"read failed ({e.Message})", e); }
    }

    static SafeTensors.Contents Load(string path, SafeFileHandle handle, Device device)
    {
        long length = RandomAccess.GetLength(handle);
        if (length < 8) throw SafeTensors.Error(path, $"truncated file ({length} bytes, the header length alone needs 8)");
        Span<byte> prefix = stackalloc byte[8];
        ReadExactly(path, handle, prefix, 0);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (n > SafeTensorsHeader.MaxLength)
            throw SafeTensors.Error(path, $"header length {n} exceeds the limit of {SafeTensorsHeader.MaxLength} bytes (corrupt, or not a safetensors file)");
        if (n > (ulong)(length - 8))
            throw SafeTensors.Error(path, $"header length {n} exceeds the {length - 8} bytes after the length prefix (truncated, or not a safetensors file)");
        long dataStart = 8 + (long)n;
        var header = ReadHeader(path, handle, (int)n, (ulong)(length - dataStart));
        CheckEngineLimits(path, header);

        var tensors = new Tensor?[header.Entries.Count];
        var notes = new List<string>();
        var buffers = new Buffers();
        try
        {
            // In offset order, so the file is read front to back once.
            foreach (var e in header.Entries.OrderBy(e => e.Begin))
            {
                var shape = Array.ConvertAll(e.Dims, d => (int)d);
                var t = tensors[e.Index] = Tensor.Empty(shape, e.Type.LoadsAs(), device);
                ReadTensor(path, handle, dataStart + (long)e.Begin, e, t, buffers);
                if (e.Type != SafeTensorDTypes.Of(t.DType))
                    notes.Add($"tensor '{e.Name}' stored as {e.Type.Code()}, loaded as {e.Type.LoadsAs().Name()}");
            }
            var dict = new OrderedDictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var e in header.Entries) dict.Add(e.Name, tensors[e.Index]!);
            var aliases = AddAliases(dict, header.Metadata);
            if (notes.Count > 0)
                EngineLog.For("Engine.Serialization.SafeTensors").Log(LogLevel.Information, new EventId(1, "ConvertedOnLoad"),
                    $"SafeTensors: {path}: {string.Join("; ", notes)}", null, static (s, _) => s);
            return new SafeTensors.Contents(dict, header.Metadata) { Notes = notes, Aliases = aliases };
        }
        catch
        {
            foreach (var t in tensors) t?.Dispose();
            throw;
        }
    }

    static SafeTensorsHeader ReadHeader(string path, SafeFileHandle handle, int length, ulong dataLength)
    {
        var json = GC.AllocateUninitializedArray<byte>(length);
        ReadExactly(path, handle, json, 8);
        return SafeTensorsHeader.Parse(path, json, dataLength);
    }

    // The engine's shapes are int dims; counts past that are valid files the engine cannot hold.
    static void CheckEngineLimits(string path, SafeTensorsHeader header)
    {
        foreach (var e in header.Entries)
            foreach (var d in e.Dims)
                if (d > int.MaxValue)
                    throw SafeTensors.Error(path, $"tensor '{e.Name}' has shape {e.ShapeText}: dim {d} exceeds the engine's limit of {int.MaxValue}");
    }

    // The convention of safetensors.torch.save_model: a tensor saved once under one name lists each other name it
    // had in __metadata__ as removed_name -> kept_name. Each alias becomes a view of the kept tensor's storage.
    static Dictionary<string, string> AddAliases(OrderedDictionary<string, Tensor> tensors, Dictionary<string, string> metadata)
    {
        var aliases = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (alias, kept) in metadata)
            if (!tensors.ContainsKey(alias) && tensors.TryGetValue(kept, out var t))
                aliases[alias] = kept;
        foreach (var (alias, kept) in aliases)
            tensors.Add(alias, tensors[kept].NewView(tensors[kept].Layout));
        return aliases;
    }

    sealed class Buffers
    {
        byte[]? _in, _out;
        public byte[] In => _in ??= GC.AllocateUninitializedArray<byte>(ChunkBytes);
        public byte[] Out => _out ??= GC.AllocateUninitializedArray<byte>(ChunkBytes);
    }

    static void ReadTensor(string path, SafeFileHandle handle, long fileOffset, SafeTensorsEntry e, Tensor t, Buffers buffers)
    {
        long total = (long)(e.End - e.Begin);
        if (total == 0) return;
        var backend = BackendRegistry.Get(t.Device);
        var storage = t.Storage;
        int inSize = e.Type.ElementSize(), outSize = t.DType.ElementSize();
        bool widens = SafeTensorConversions.Widens(e.Type);
        // Whole elements per chunk, sized by the wider side so that both sides fit a buffer.
        long chunk = ChunkBytes / outSize * inSize;
        for (long done = 0; done < total;)
        {
            int len = (int)Math.Min(chunk, total - done);
            var input = buffers.In.AsSpan(0, len);
            ReadExactly(path, handle, input, fileOffset + done);
            int bad = SafeTensorConversions.FirstInvalid(e.Type, input);
            if (bad >= 0)
                throw SafeTensors.Error(path, $"tensor '{e.Name}' ({e.Type.Code()}) element {done / inSize + bad} is {SafeTensorConversions.FormatStored(e.Type, input, bad)}, which {t.DType.Name()} cannot hold" +
                    (e.Type == SafeTensorDType.Bool ? " (BOOL bytes must be 0 or 1)" : ""));
            if (widens)
            {
                var output = buffers.Out.AsSpan(0, len / inSize * outSize);
                SafeTensorConversions.Widen(e.Type, input, output);
                backend.CopyFromHost<byte>(output, storage, done / inSize * outSize);
            }
            else backend.CopyFromHost<byte>(input, storage, done);
            done += len;
        }
    }

    static void ReadExactly(string path, SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        while (buffer.Length > 0)
        {
            int got = RandomAccess.Read(handle, buffer, offset);
            if (got <= 0) throw SafeTensors.Error(path, $"the file ended at byte {offset} while reading (was it truncated while loading?)");
            buffer = buffer[got..];
            offset += got;
        }
    }
}

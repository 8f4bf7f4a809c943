using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using Engine.Backends;

namespace Engine.Serialization;

/// <summary>
/// Writes a safetensors file the way the reference writer lays it out: the header padded with spaces to a multiple
/// of 8, the data sorted by stored type (widest first) then name, so every tensor starts at a multiple of its element
/// size. Data streams tensor by tensor, in chunks, through a buffered file: nothing holds the whole file.
/// </summary>
internal static class SafeTensorsWriter
{
    sealed class Planned(string name, Tensor tensor, SafeTensorDType type)
    {
        public string Name { get; } = name;
        public Tensor Tensor { get; } = tensor;
        public SafeTensorDType Type { get; } = type;
        public long Bytes { get; } = checked(tensor.Numel * type.ElementSize());
        public long Begin { get; set; }
    }

    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata, IReadOnlyDictionary<string, SafeTensorDType>? storeAs)
    {
        var (planned, meta) = Plan(path, tensors, metadata, storeAs);
        long offset = 0;
        // Names compare as UTF-16 ordinals where the reference compares UTF-8 bytes: the same order unless names hold
        // characters past U+D7FF, and any order is valid; alignment is what matters.
        foreach (var p in planned.OrderByDescending(p => p.Type).ThenBy(p => p.Name, StringComparer.Ordinal))
        {
            p.Begin = offset;
            offset += p.Bytes;
        }
        var header = Header(planned, meta);
        if ((ulong)header.Length > SafeTensorsHeader.MaxLength)
            throw SafeTensors.Error(path, $"the header would be {header.Length} bytes, over the limit of {SafeTensorsHeader.MaxLength} that readers accept");

        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        // Unique per call: two saves in one process (or two processes) never share a temporary file.
        var tmp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(dir);
            using (var f = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
                f.Write(len);
                f.Write(header);
                var a = GC.AllocateUninitializedArray<byte>(SafeTensorsReader.ChunkBytes);
                byte[]? b = null;
                foreach (var p in planned.OrderBy(p => p.Begin).ThenBy(p => p.Bytes))
                    WriteData(path, f, p, a, ref b);
                f.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw SafeTensors.Error(path, $"cannot write the file ({e.Message})", e);
        }
        finally
        {
            try { if (File.Exists(tmp)) File.Delete(tmp); }
            catch (IOException) { } // the original error matters more than a leftover temporary file
        }
    }

    // Checks the entries and keeps one per shared tensor: entries of one storage with one layout (and one stored
    // type) are the same data, saved once under the first name in input order, as safetensors.torch.save_model
    // (which keeps the alphabetically first) records it: metadata[removed] = kept. Entries that share a storage
    // through different layouts (a slice, a transpose) are saved as copies each; PyTorch refuses those.
    static (List<Planned>, List<KeyValuePair<string, string>>) Plan(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata, IReadOnlyDictionary<string, SafeTensorDType>? storeAs)
    {
        var planned = new List<Planned>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        var byStorage = new Dictionary<Storage, List<Planned>>(ReferenceEqualityComparer.Instance);
        var removed = new List<KeyValuePair<string, string>>();
        foreach (var (name, t) in tensors)
        {
            if (name is null) throw SafeTensors.Error(path, "a tensor has a null name");
            if (name == "__metadata__") throw SafeTensors.Error(path, "'__metadata__' is reserved for the metadata and cannot name a tensor");
            if (!names.Add(name)) throw SafeTensors.Error(path, $"tensor '{name}' is given twice");
            if (t is null) throw SafeTensors.Error(path, $"tensor '{name}' is null");
            if (t.IsDisposed) throw SafeTensors.Error(path, $"tensor '{name}' has been disposed");
            var type = storeAs is not null && storeAs.TryGetValue(name, out var s) ? s : SafeTensorDTypes.Of(t.DType);
            if (!byStorage.TryGetValue(t.Storage, out var sharing)) byStorage[t.Storage] = sharing = [];
            if (sharing.Find(p => p.Type == type && SameLayout(p.Tensor.Layout, t.Layout)) is { } kept)
            {
                removed.Add(new(name, kept.Name));
                continue;
            }
            var entry = new Planned(name, t, type);
            sharing.Add(entry);
            planned.Add(entry);
        }
        if (storeAs is not null)
            foreach (var name in storeAs.Keys)
                if (!names.Contains(name)) throw SafeTensors.Error(path, $"storeAs names tensor '{name}', which is not among the tensors saved");

        var meta = new List<KeyValuePair<string, string>>();
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>())
        {
            if (v is null) throw SafeTensors.Error(path, $"metadata '{k}' is null (safetensors metadata values are strings)");
            meta.Add(new(k, v));
        }
        foreach (var (gone, kept) in removed)
        {
            int i = meta.FindIndex(m => m.Key == gone);
            if (i < 0) meta.Add(new(gone, kept));
            else if (meta[i].Value != kept)
                throw SafeTensors.Error(path, $"metadata '{gone}' = '{meta[i].Value}' clashes with the record that tensor '{gone}' is saved as '{kept}'");
        }
        return (planned, meta);
    }

    static bool SameLayout(Layout a, Layout b) =>
        a.Offset == b.Offset && a.Shape == b.Shape && a.Strides.SequenceEqual(b.Strides);

    // __metadata__ first, then the tensors in input order: the data is in the aligned order, the header need not be,
    // and keeping the caller's order means a load returns the tensors in the order they were saved.
    static byte[] Header(List<Planned> planned, List<KeyValuePair<string, string>> meta)
    {
        using var header = new MemoryStream();
        // Names are not HTML: write them as they are rather than \u-escaping '+' or non-ASCII letters.
        using (var w = new Utf8JsonWriter(header, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            if (meta.Count > 0)
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in meta) w.WriteString(k, v);
                w.WriteEndObject();
            }
            foreach (var p in planned)
            {
                w.WriteStartObject(p.Name);
                w.WriteString("dtype", p.Type.Code());
                w.WriteStartArray("shape");
                foreach (var d in p.Tensor.Layout.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(p.Begin);
                w.WriteNumberValue(p.Begin + p.Bytes);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        while (header.Length % 8 != 0) header.WriteByte((byte)' ');
        return header.ToArray();
    }

    static void WriteData(string path, FileStream f, Planned p, byte[] input, ref byte[]? output)
    {
        if (p.Bytes == 0) return;
        var t = p.Tensor;
        // A strided view is first made contiguous on its own device; a contiguous one is read where it is.
        var copy = t.IsContiguous ? null : t.CastCopy(t.DType, t.Device);
        try
        {
            var src = copy ?? t;
            var backend = BackendRegistry.Get(src.Device);
            int inSize = src.DType.ElementSize(), outSize = p.Type.ElementSize();
            bool convert = p.Type != SafeTensorDTypes.Of(src.DType);
            long start = src.Layout.Offset * inSize, total = src.Numel * inSize;
            long chunk = SafeTensorsReader.ChunkBytes / Math.Max(inSize, outSize) * inSize;
            for (long done = 0; done < total;)
            {
                var span = input.AsSpan(0, (int)Math.Min(chunk, total - done));
                backend.CopyToHost<byte>(src.Storage, start + done, span);
                long first = done / inSize;
                if (!convert)
                {
                    if (SafeTensorConversions.FirstInvalid(p.Type, span) is var bad and >= 0)
                        throw SafeTensors.Error(path, $"tensor '{p.Name}' (bool) element {first + bad} is {SafeTensorConversions.FormatStored(p.Type, span, bad)}, not 0 or 1");
                    f.Write(span);
                }
                else
                {
                    output ??= GC.AllocateUninitializedArray<byte>(SafeTensorsReader.ChunkBytes);
                    var o = output.AsSpan(0, span.Length / inSize * outSize);
                    if (SafeTensorConversions.Narrow(src.DType, span, p.Type, o) is var bad and >= 0)
                        throw SafeTensors.Error(path, $"tensor '{p.Name}' ({src.DType.Name()}) cannot be stored as {p.Type.Code()} exactly: element {first + bad} is {SafeTensorConversions.FormatEngine(src.DType, span, bad)}");
                    f.Write(o);
                }
                done += span.Length;
            }
        }
        finally { copy?.Dispose(); }
    }
}

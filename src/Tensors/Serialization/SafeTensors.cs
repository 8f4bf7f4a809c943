using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace Engine.Serialization;

/// <summary>
/// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header mapping each name to
/// its dtype, shape and data_offsets (plus an optional string-to-string <c>__metadata__</c>), then the raw
/// little-endian data. Files written here load in PyTorch with <c>safetensors.torch.load_file</c>. Writes are atomic:
/// a temporary file is written, flushed to disk and renamed over the target.
/// </summary>
public static class SafeTensors
{
    const long MaxHeader = 100L << 20;

    static string Code(DType t) => t switch
    {
        DType.Float64 => "F64",
        DType.Float32 => "F32",
        DType.Float16 => "F16",
        DType.BFloat16 => "BF16",
        DType.Int64 => "I64",
        DType.Int32 => "I32",
        DType.Bool => "BOOL",
        _ => throw new DTypeException("SafeTensors", $"no safetensors code for {t}"),
    };

    static DType FromCode(string s, string file, string name) => s switch
    {
        "F64" => DType.Float64,
        "F32" => DType.Float32,
        "F16" => DType.Float16,
        "BF16" => DType.BFloat16,
        "I64" => DType.Int64,
        "I32" => DType.Int32,
        "BOOL" => DType.Bool,
        _ => throw new EngineException("SafeTensors", $"{file}: tensor '{name}' has unsupported dtype '{s}'"),
    };

    /// <summary>Writes tensors (any device, any layout) and metadata to <paramref name="path"/> atomically.</summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var items = tensors.ToList();
        var blobs = new List<byte[]>(items.Count);
        using var header = new MemoryStream();
        using (var w = new Utf8JsonWriter(header))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, t) in items)
            {
                if (name == "__metadata__") throw new EngineException("SafeTensors", "'__metadata__' is reserved");
                var bytes = HostBytes(t);
                blobs.Add(bytes);
                w.WriteStartObject(name);
                w.WriteString("dtype", Code(t.DType));
                w.WriteStartArray("shape");
                foreach (var d in t.Layout.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes.Length);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes.Length;
            }
            w.WriteEndObject();
        }
        // Pad the header with spaces to a multiple of 8 so the data is aligned, as the reference writer does.
        int pad = (int)((8 - header.Length % 8) % 8);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, "." + Path.GetFileName(path) + "." + Environment.ProcessId + ".tmp");
        try
        {
            using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)(header.Length + pad));
                f.Write(len);
                header.Position = 0;
                header.CopyTo(f);
                for (int i = 0; i < pad; i++) f.WriteByte((byte)' ');
                foreach (var b in blobs) f.Write(b);
                f.Flush(flushToDisk: true);
            }
            File.Move(tmp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    static byte[] HostBytes(Tensor t)
    {
        using var c = t.CastCopy(t.DType, Device.Cpu);
        var bytes = new byte[c.Storage.ByteLength];
        c.Backend.CopyToHost<byte>(c.Storage, bytes);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("big-endian hosts are not supported");
        return bytes;
    }

    /// <summary>What a file holds: its tensors (new, owned by the caller) and its metadata.</summary>
    public sealed record Contents(OrderedDictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) : IDisposable
    {
        /// <summary>Disposes every tensor.</summary>
        public void Dispose() { foreach (var t in Tensors.Values) t.Dispose(); }
    }

    /// <summary>Reads a file onto <paramref name="device"/>; a truncated or corrupt file throws an error saying what is wrong.</summary>
    public static Contents Load(string path, Device? device = null)
    {
        if (!File.Exists(path)) throw new EngineException("SafeTensors", $"{path}: file not found");
        var data = File.ReadAllBytes(path);
        string file = Path.GetFileName(path);
        if (data.Length < 8) throw new EngineException("SafeTensors", $"{file}: truncated file ({data.Length} bytes, the header length alone needs 8)");
        ulong hlen = BinaryPrimitives.ReadUInt64LittleEndian(data);
        if (hlen > (ulong)MaxHeader || 8 + (long)hlen > data.Length)
            throw new EngineException("SafeTensors", $"{file}: header length {hlen} exceeds the file size {data.Length} (truncated or not a safetensors file)");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(data.AsMemory(8, (int)hlen)); }
        catch (JsonException e) { throw new EngineException("SafeTensors", $"{file}: the header is not valid JSON ({e.Message})", e); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new EngineException("SafeTensors", $"{file}: the header is not a JSON object");
        long dataStart = 8 + (long)hlen, dataLen = data.Length - dataStart;
        var tensors = new OrderedDictionary<string, Tensor>();
        var meta = new Dictionary<string, string>();
        try
        {
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    foreach (var m in prop.Value.EnumerateObject()) meta[m.Name] = m.Value.GetString() ?? "";
                    continue;
                }
                var e = prop.Value;
                if (!e.TryGetProperty("dtype", out var dtEl) || !e.TryGetProperty("shape", out var shEl) || !e.TryGetProperty("data_offsets", out var offEl))
                    throw new EngineException("SafeTensors", $"{file}: tensor '{prop.Name}' lacks dtype, shape or data_offsets");
                var dt = FromCode(dtEl.GetString() ?? "", file, prop.Name);
                var shape = shEl.EnumerateArray().Select(x => x.GetInt32()).ToArray();
                var offs = offEl.EnumerateArray().Select(x => x.GetInt64()).ToArray();
                if (offs.Length != 2 || offs[0] < 0 || offs[1] < offs[0] || offs[1] > dataLen)
                    throw new EngineException("SafeTensors", $"{file}: tensor '{prop.Name}' has data_offsets [{string.Join(", ", offs)}] outside the {dataLen} data bytes (truncated file?)");
                long expected = Shape.Numel(shape) * dt.ElementSize();
                if (offs[1] - offs[0] != expected)
                    throw new EngineException("SafeTensors", $"{file}: tensor '{prop.Name}' {Shape.Format(shape)} {dt.Name()} needs {expected} bytes, its data_offsets span {offs[1] - offs[0]}");
                var t = Tensor.Empty(shape, dt, Device.Cpu);
                t.Backend.CopyFromHost<byte>(data.AsSpan((int)(dataStart + offs[0]), (int)expected), t.Storage);
                if (device is { } d && d != Device.Cpu)
                {
                    var moved = t.CastCopy(dt, d);
                    t.Dispose();
                    t = moved;
                }
                tensors[prop.Name] = t;
            }
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or KeyNotFoundException)
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw new EngineException("SafeTensors", $"{file}: malformed header ({e.Message})", e);
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
        return new Contents(tensors, meta);
    }
}

using System.Text.Json;
using System.Text.Unicode;

namespace Engine.Serialization;

/// <summary>One tensor of a header, as written there (dims unbounded: the engine's own limits are checked later).</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="Type">Its stored element type.</param>
/// <param name="Dims">Its shape.</param>
/// <param name="Begin">Start of its bytes, relative to the end of the header.</param>
/// <param name="End">End of its bytes (exclusive).</param>
/// <param name="Index">Its position in the header.</param>
internal sealed record SafeTensorsEntry(string Name, SafeTensorDType Type, ulong[] Dims, ulong Begin, ulong End, int Index)
{
    /// <summary>The shape as PyTorch prints it.</summary>
    public string ShapeText => "[" + string.Join(", ", Dims) + "]";
}

/// <summary>
/// A parsed and validated safetensors header, checked as the reference (Hugging Face's <c>safetensors</c> crate,
/// <c>Metadata::validate</c>) checks it, and a little more strictly: the JSON starts with '{'; <c>__metadata__</c>
/// maps strings to strings; every entry has exactly dtype, shape and data_offsets (the reference ignores unknown
/// fields); no name appears twice (serde would keep the last); element and byte counts use checked 64-bit
/// arithmetic; and the entries, sorted by offsets, tile the data exactly from 0 to the end of the file.
/// </summary>
internal sealed class SafeTensorsHeader
{
    /// <summary>The reference's MAX_HEADER_SIZE: a longer header is refused unread.</summary>
    public const ulong MaxLength = 100_000_000;

    /// <summary>The tensors in header order.</summary>
    public required List<SafeTensorsEntry> Entries { get; init; }

    /// <summary>The <c>__metadata__</c> map (empty when absent).</summary>
    public required Dictionary<string, string> Metadata { get; init; }

    /// <summary>Parses and validates <paramref name="json"/>, followed in the file by <paramref name="dataLength"/> bytes.</summary>
    public static SafeTensorsHeader Parse(string file, ReadOnlyMemory<byte> json, ulong dataLength)
    {
        if (!Utf8.IsValid(json.Span)) throw SafeTensors.Error(file, "the header is not valid UTF-8");
        if (json.Length == 0 || json.Span[0] != (byte)'{')
            throw SafeTensors.Error(file, $"the header is not a JSON object (it must start with '{{', it starts with {(json.Length == 0 ? "nothing" : $"'{(char)json.Span[0]}'")})");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw SafeTensors.Error(file, $"the header is not valid JSON ({e.Message})", e); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw SafeTensors.Error(file, $"the header is not a JSON object (it is a JSON {Kind(doc.RootElement)})");

        var entries = new List<SafeTensorsEntry>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        bool hasMetadata = false;
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                if (hasMetadata) throw SafeTensors.Error(file, "the header has '__metadata__' twice");
                hasMetadata = true;
                ParseMetadata(file, prop.Value, metadata);
                continue;
            }
            if (!seen.Add(prop.Name)) throw SafeTensors.Error(file, $"tensor '{prop.Name}' appears twice in the header");
            entries.Add(ParseEntry(file, prop.Name, prop.Value, entries.Count));
        }
        CheckTiling(file, entries, dataLength);
        return new SafeTensorsHeader { Entries = entries, Metadata = metadata };
    }

    static void ParseMetadata(string file, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw SafeTensors.Error(file, $"'__metadata__' is a JSON {Kind(value)}, expected an object of strings");
        foreach (var m in value.EnumerateObject())
        {
            if (m.Value.ValueKind != JsonValueKind.String)
                throw SafeTensors.Error(file, $"'__metadata__' value of '{m.Name}' is a JSON {Kind(m.Value)} ({Clip(m.Value.GetRawText())}), expected a string");
            if (!metadata.TryAdd(m.Name, m.Value.GetString()!))
                throw SafeTensors.Error(file, $"'__metadata__' has the key '{m.Name}' twice");
        }
    }

    static SafeTensorsEntry ParseEntry(string file, string name, JsonElement value, int index)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw SafeTensors.Error(file, $"tensor '{name}' is a JSON {Kind(value)}, expected an object with dtype, shape and data_offsets");
        JsonElement? dtype = null, shape = null, offsets = null;
        foreach (var f in value.EnumerateObject())
        {
            ref JsonElement? slot = ref dtype;
            if (f.Name == "shape") slot = ref shape;
            else if (f.Name == "data_offsets") slot = ref offsets;
            else if (f.Name != "dtype")
                throw SafeTensors.Error(file, $"tensor '{name}' has an unexpected field '{f.Name}' (expected exactly dtype, shape and data_offsets)");
            if (slot is not null) throw SafeTensors.Error(file, $"tensor '{name}' has the field '{f.Name}' twice");
            slot = f.Value;
        }
        string? missing = dtype is null ? "dtype" : shape is null ? "shape" : offsets is null ? "data_offsets" : null;
        if (missing is not null) throw SafeTensors.Error(file, $"tensor '{name}' lacks '{missing}' (expected exactly dtype, shape and data_offsets)");

        if (dtype!.Value.ValueKind != JsonValueKind.String)
            throw SafeTensors.Error(file, $"tensor '{name}' has a dtype that is a JSON {Kind(dtype.Value)}, expected a string");
        string code = dtype.Value.GetString()!;
        if (!SafeTensorDTypes.TryParse(code, out var type))
            throw SafeTensors.Error(file, SafeTensorDTypes.IsKnownUnsupported(code)
                ? $"tensor '{name}' has dtype '{code}', which the engine cannot load"
                : $"tensor '{name}' has an unknown dtype '{Clip(code)}' (expected one of F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL)");

        var dims = Integers(file, name, "shape", shape!.Value, -1);
        var offs = Integers(file, name, "data_offsets", offsets!.Value, 2);
        var entry = new SafeTensorsEntry(name, type, dims, offs[0], offs[1], index);

        ulong count = 1;
        foreach (var d in dims)
            if (Math.BigMul(count, d, out count) != 0)
                throw SafeTensors.Error(file, $"tensor '{name}' has shape {entry.ShapeText}, whose element count overflows 64 bits");
        if (Math.BigMul(count, (ulong)type.ElementSize(), out ulong bytes) != 0)
            throw SafeTensors.Error(file, $"tensor '{name}' has shape {entry.ShapeText} of {type.Code()}, whose byte size overflows 64 bits");
        if (entry.End < entry.Begin)
            throw SafeTensors.Error(file, $"tensor '{name}' has data_offsets [{entry.Begin}, {entry.End}] that end before they begin");
        if (entry.End - entry.Begin != bytes)
            throw SafeTensors.Error(file, $"tensor '{name}' {type.Code()} {entry.ShapeText} needs {bytes} bytes, its data_offsets [{entry.Begin}, {entry.End}] span {entry.End - entry.Begin}");
        return entry;
    }

    // An array of non-negative integers (of a fixed length unless length < 0), as the reference's usize fields.
    static ulong[] Integers(string file, string name, string field, JsonElement value, int length)
    {
        if (value.ValueKind != JsonValueKind.Array)
            throw SafeTensors.Error(file, $"tensor '{name}' has a {field} that is a JSON {Kind(value)}, expected an array of integers");
        int n = value.GetArrayLength();
        if (length >= 0 && n != length)
            throw SafeTensors.Error(file, $"tensor '{name}' has {field} {Clip(value.GetRawText())} of {n} values, expected {length}");
        var r = new ulong[n];
        int i = 0;
        foreach (var x in value.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.Number || !x.TryGetUInt64(out r[i++]))
            {
                string what = x.ValueKind == JsonValueKind.Number && x.TryGetDouble(out double v) && v < 0 ? "a negative value" : "a value that is not a non-negative integer";
                throw SafeTensors.Error(file, $"tensor '{name}' has {what} {Clip(x.GetRawText())} in {field} {Clip(value.GetRawText())}");
            }
        }
        return r;
    }

    // Sorted by (begin, end), as the reference, each tensor must start where the previous one ended: no gap, no
    // overlap (duplicated offsets are an overlap), and the last must end at the last byte of the file. Empty tensors
    // sit anywhere on the way (begin == end), so several may share an offset.
    static void CheckTiling(string file, List<SafeTensorsEntry> entries, ulong dataLength)
    {
        var sorted = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ThenBy(e => e.Index).ToList();
        ulong end = 0;
        SafeTensorsEntry? previous = null;
        foreach (var e in sorted)
        {
            if (e.Begin > end)
                throw SafeTensors.Error(file, $"tensor '{e.Name}' has data_offsets [{e.Begin}, {e.End}] that leave a gap of {e.Begin - end} bytes after " +
                    (previous is null ? "the start of the data" : $"tensor '{previous.Name}' [{previous.Begin}, {previous.End}]"));
            if (e.Begin < end)
                throw SafeTensors.Error(file, $"tensor '{e.Name}' has data_offsets [{e.Begin}, {e.End}] that overlap tensor '{previous!.Name}' [{previous.Begin}, {previous.End}]");
            end = e.End;
            previous = e;
        }
        if (end > dataLength)
            throw SafeTensors.Error(file, $"the data_offsets end at {end} but the file has {dataLength} data bytes after the header (truncated file?)");
        if (end < dataLength)
            throw SafeTensors.Error(file, $"the data_offsets end at {end} but the file has {dataLength} data bytes after the header ({dataLength - end} trailing bytes)");
    }

    static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        _ => "null",
    };

    // Keeps an error to one readable line whatever a corrupt header holds.
    static string Clip(string s)
    {
        s = s.ReplaceLineEndings(" ");
        return s.Length <= 80 ? s : s[..77] + "...";
    }
}

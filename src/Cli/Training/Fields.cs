using System.Globalization;
using System.Text.Json;

namespace Engine.Cli.Training;

/// <summary>
/// Typed, checked reads of a checkpoint's string fields (safetensors metadata, or a JSON object flattened to
/// <c>a.b</c> keys): a missing or malformed value is a <see cref="CheckpointException"/> naming the file and the key,
/// never a bare parse or lookup error.
/// </summary>
sealed class Fields(IReadOnlyDictionary<string, string> values, string file)
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public string File => file;

    public bool Has(string key) => values.ContainsKey(key);

    public string Str(string key) => values.TryGetValue(key, out var v) ? v : throw Bad(key, "is missing");

    public string? StrOrNull(string key) => values.TryGetValue(key, out var v) ? v : null;

    public int Int(string key, int min = int.MinValue) =>
        int.TryParse(Str(key), NumberStyles.Integer, Inv, out var v) && v >= min ? v : throw Bad(key, $"is '{Str(key)}', expected an integer ≥ {min}");

    public long Long(string key, long min = long.MinValue) =>
        long.TryParse(Str(key), NumberStyles.Integer, Inv, out var v) && v >= min ? v : throw Bad(key, $"is '{Str(key)}', expected an integer ≥ {min}");

    public ulong ULong(string key) =>
        ulong.TryParse(Str(key), NumberStyles.Integer, Inv, out var v) ? v : throw Bad(key, $"is '{Str(key)}', expected a non-negative integer");

    public double Double(string key) =>
        double.TryParse(Str(key), NumberStyles.Float, Inv, out var v) && double.IsFinite(v) ? v : throw Bad(key, $"is '{Str(key)}', expected a finite number");

    public bool Bool(string key) => Str(key) switch
    {
        "1" or "true" => true,
        "0" or "false" => false,
        var s => throw Bad(key, $"is '{s}', expected true or false"),
    };

    /// <summary>The entries whose key starts with <paramref name="prefix"/>, the prefix removed, as numbers.</summary>
    public Dictionary<string, double> Numbers(string prefix) =>
        values.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(k => k[prefix.Length..], Double);

    public CheckpointException Bad(string key, string what) => new("Checkpoint", $"{file}: '{key}' {what}");

    /// <summary>Reads a JSON file whose top level is an object, flattening nested objects to dotted keys.</summary>
    public static Fields ReadJson(string path)
    {
        var name = path;
        if (!System.IO.File.Exists(path)) throw new CheckpointException("Checkpoint", $"{name}: file not found");
        var flat = new Dictionary<string, string>();
        try
        {
            using var doc = JsonDocument.Parse(System.IO.File.ReadAllBytes(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new CheckpointException("Checkpoint", $"{name}: not a JSON object");
            Flatten(doc.RootElement, "", flat);
        }
        catch (JsonException e) { throw new CheckpointException("Checkpoint", $"{name}: not valid JSON ({e.Message})", e); }
        return new Fields(flat, name);
    }

    static void Flatten(JsonElement e, string prefix, Dictionary<string, string> into)
    {
        foreach (var p in e.EnumerateObject())
        {
            var key = prefix + p.Name;
            switch (p.Value.ValueKind)
            {
                case JsonValueKind.Object: Flatten(p.Value, key + ".", into); break;
                case JsonValueKind.String: into[key] = p.Value.GetString()!; break;
                case JsonValueKind.True: into[key] = "true"; break;
                case JsonValueKind.False: into[key] = "false"; break;
                case JsonValueKind.Null: break;
                default: into[key] = p.Value.GetRawText(); break;
            }
        }
    }
}

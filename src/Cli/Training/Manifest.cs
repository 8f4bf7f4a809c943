using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using IOPath = System.IO.Path;

namespace Engine.Cli.Training;

/// <summary>One file of a checkpoint: its path relative to the step directory ('/'-separated), size and SHA-256.</summary>
sealed record ManifestEntry(string Name, long Size, string Sha256);

/// <summary>
/// <c>manifest.json</c> of a step directory, written last: its presence marks the checkpoint complete, and its sizes
/// and hashes let <see cref="Checkpoints.Verify"/> tell a corrupt or truncated file from a good one.
/// <code>
/// { "format": "engine-checkpoint-v1", "step": 300, "created": "2026-12-01T12:00:00Z",
///   "files": [ { "name": "model.safetensors", "size": 1234, "sha256": "9f86…" }, … ] }
/// </code>
/// </summary>
sealed record Manifest(long Step, DateTime Created, IReadOnlyList<ManifestEntry> Files)
{
    public const string FileName = "manifest.json";
    public const string Format = "engine-checkpoint-v1";
    const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'";
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    // Keys in a fixed order (format first, so a reader of another version can stop there) and files sorted by name,
    // so two saves of the same bytes differ only in "created".
    public void Write(string path)
    {
        using var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        using (var w = new Utf8JsonWriter(fs, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("format", Format);
            w.WriteNumber("step", Step);
            w.WriteString("created", Created.ToUniversalTime().ToString(TimeFormat, Inv));
            w.WriteStartArray("files");
            foreach (var f in Files.OrderBy(f => f.Name, StringComparer.Ordinal))
            {
                w.WriteStartObject();
                w.WriteString("name", f.Name);
                w.WriteNumber("size", f.Size);
                w.WriteString("sha256", f.Sha256);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        fs.Write("\n"u8);
        fs.Flush(flushToDisk: true);
    }

    /// <summary>
    /// Reads a manifest strictly: anything but this format with every field well-formed is a
    /// <see cref="CheckpointException"/> whose one-line message starts with <paramref name="shown"/>.
    /// </summary>
    public static Manifest Read(string path, string shown)
    {
        JsonDocument doc;
        try
        {
            using var s = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            doc = JsonDocument.Parse(s);
        }
        catch (JsonException e) { throw Bad(shown, $"not valid JSON ({e.Message})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Bad(shown, $"expected a JSON object, found {root.ValueKind}");
            var format = String(root, "format", shown);
            if (format != Format) throw Bad(shown, $"unknown format '{format}' (expected '{Format}')");
            long step = Count(root, "step", shown);
            var createdText = String(root, "created", shown);
            if (!DateTime.TryParse(createdText, Inv, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var created))
                throw Bad(shown, $"'created' is not an ISO-8601 time: '{createdText}'");
            if (!root.TryGetProperty("files", out var files) || files.ValueKind != JsonValueKind.Array)
                throw Bad(shown, "lacks 'files' (an array)");
            var entries = new List<ManifestEntry>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            int i = 0;
            foreach (var f in files.EnumerateArray())
            {
                var where = $"{shown}: files[{i++}]";
                if (f.ValueKind != JsonValueKind.Object) throw Bad(where, "expected an object");
                var name = String(f, "name", where);
                if (!IsSafeName(name)) throw Bad(where, $"'{name}' is not a relative path inside the step directory");
                if (!seen.Add(name)) throw Bad(where, $"'{name}' is listed twice");
                long size = Count(f, "size", where);
                var sha = String(f, "sha256", where);
                if (sha.Length != 64 || !sha.All(char.IsAsciiHexDigit)) throw Bad(where, $"'sha256' is not 64 hex digits: '{sha}'");
                entries.Add(new ManifestEntry(name, size, sha.ToLowerInvariant()));
            }
            return new Manifest(step, created, entries);
        }
    }

    /// <summary>The step a manifest records, or null when it cannot be read; for display, never for trust.</summary>
    public static long? TryReadStep(string path)
    {
        try { return Read(path, path).Step; }
        catch (Exception e) when (e is CheckpointException or IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Size and SHA-256 of <paramref name="path"/>, streamed so a multi-gigabyte file costs one buffer.</summary>
    public static ManifestEntry Describe(string path, string name, bool flushToDisk)
    {
        // Opened for writing only when flushing: fsync through a read-only handle is not portable (Windows refuses).
        using var h = File.OpenHandle(path, FileMode.Open, flushToDisk ? FileAccess.ReadWrite : FileAccess.Read, FileShare.Read);
        var sha = Sha256(h, out long size);
        if (flushToDisk) RandomAccess.FlushToDisk(h);
        return new ManifestEntry(name, size, sha);
    }

    static string Sha256(SafeFileHandle h, out long size)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buf = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            long offset = 0;
            int n;
            while ((n = RandomAccess.Read(h, buf, offset)) > 0) { hash.AppendData(buf, 0, n); offset += n; }
            size = offset;
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    // '/'-separated, relative, no '.' or '..' segments: a manifest must not send Verify outside its directory.
    static bool IsSafeName(string name) =>
        name.Length > 0 && name != FileName && !name.Contains('\\') && !IOPath.IsPathRooted(name)
        && name.Split('/').All(s => s.Length > 0 && s != "." && s != "..");

    static string String(JsonElement o, string key, string where) =>
        o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Bad(where, $"lacks '{key}' (a string)");

    static long Count(JsonElement o, string key, string where) =>
        o.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var n) && n >= 0
            ? n : throw Bad(where, $"lacks '{key}' (a non-negative integer)");

    static CheckpointException Bad(string where, string what) =>
        new("Checkpoint", $"{where}: {what}".ReplaceLineEndings(" "));
}

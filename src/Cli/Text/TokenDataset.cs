using System.Globalization;
using System.IO.MemoryMappedFiles;
using System.Text.Json;
using Engine.Cli.Training;

namespace Engine.Cli.Text;

/// <summary>
/// A prepared token data set, as nanoGPT lays one out: <c>train.bin</c> and <c>val.bin</c>, the token ids as
/// little-endian <c>uint16</c> (or <c>uint32</c> when the vocabulary has more than 65,536 ids) with no header, and
/// <c>meta.json</c> naming the dtype, the tokenizer and the token counts. <c>engine prepare</c> writes one; <c>engine
/// train --data DIR</c> reads it memory-mapped.
/// <code>
/// { "format": "engine-tokens-v1", "dtype": "uint16", "vocab_size": 50257,
///   "tokenizer": { "format": "engine-tokenizer-v1", "name": "gpt2", "vocab_size": 50257 },
///   "train_tokens": 900, "val_tokens": 100, "val_fraction": 0.1, "files": 1, "forced_cuts": 0 }
/// </code>
/// </summary>
sealed record TokenDataset(string Dir, TextTokenizer Tokenizer, int BytesPerToken, long TrainTokens, long ValTokens)
{
    public const string TrainFile = "train.bin";
    public const string ValFile = "val.bin";
    public const string MetaFile = "meta.json";
    public const string Format = "engine-tokens-v1";

    /// <summary>2 for vocabularies up to 65,536 ids, else 4.</summary>
    public static int BytesFor(int vocabSize) => vocabSize <= 1 << 16 ? 2 : 4;

    public static string DTypeName(int bytesPerToken) => bytesPerToken == 2 ? "uint16" : "uint32";

    /// <summary>Writes meta.json (through a temporary file, so a present meta.json means the bins are complete).</summary>
    public static void WriteMeta(string dir, TextTokenizer tokenizer, long train, long val, double valFraction, int files, int forcedCuts)
    {
        var path = Path.Combine(dir, MetaFile);
        var tmp = path + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            using (var w = new Utf8JsonWriter(f, new JsonWriterOptions { Indented = true }))
            {
                w.WriteStartObject();
                w.WriteString("format", Format);
                w.WriteString("dtype", DTypeName(BytesFor(tokenizer.VocabSize)));
                w.WriteNumber("vocab_size", tokenizer.VocabSize);
                w.WriteStartObject("tokenizer");
                tokenizer.WriteJson(w);
                w.WriteEndObject();
                w.WriteNumber("train_tokens", train);
                w.WriteNumber("val_tokens", val);
                w.WriteNumber("val_fraction", valFraction);
                w.WriteNumber("files", files);
                w.WriteNumber("forced_cuts", forcedCuts);
                w.WriteEndObject();
            }
            f.Write("\n"u8);
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Reads and checks a data directory: meta.json's fields, and the bins' sizes against its counts.</summary>
    public static TokenDataset Open(string dir)
    {
        var metaPath = Path.Combine(dir, MetaFile);
        if (!Directory.Exists(dir)) throw new UsageException($"--data {dir}: not found (write one with engine prepare --text FILE --out {dir})");
        if (!File.Exists(metaPath)) throw new UsageException($"--data {dir}: no {MetaFile} (not a directory written by engine prepare, or one cut short)");
        var f = Fields.ReadJson(metaPath);
        if (f.Str("format") != Format) throw f.Bad("format", $"is '{f.Str("format")}', expected '{Format}'");
        var tok = TextTokenizer.Read(f, "tokenizer.");
        int bytes = f.Str("dtype") switch
        {
            "uint16" => 2,
            "uint32" => 4,
            var d => throw f.Bad("dtype", $"is '{d}', expected uint16 or uint32"),
        };
        if (bytes < BytesFor(tok.VocabSize)) throw f.Bad("dtype", $"is {DTypeName(bytes)}, too narrow for {tok.VocabSize} token ids");
        var data = new TokenDataset(Path.GetFullPath(dir), tok, bytes, f.Long("train_tokens", 0), f.Long("val_tokens", 0));
        foreach (var (name, count) in new[] { (TrainFile, data.TrainTokens), (ValFile, data.ValTokens) })
        {
            var p = Path.Combine(dir, name);
            long size = File.Exists(p) ? new FileInfo(p).Length : -1;
            if (size != count * bytes)
                throw new InvalidDataException($"{p}: {(size < 0 ? "missing" : size.ToString(CultureInfo.InvariantCulture) + " bytes")}, {MetaFile} says {count} tokens × {bytes} bytes");
        }
        return data;
    }
}

/// <summary>One <c>.bin</c> file of token ids, memory-mapped read-only: windows are read without loading the file.</summary>
sealed class TokenFile : IDisposable
{
    readonly MemoryMappedFile? _map;
    readonly MemoryMappedViewAccessor? _view;
    readonly int _bytes;
    readonly int _vocab;

    public TokenFile(string path, int bytesPerToken, long tokens, int vocabSize)
    {
        _bytes = bytesPerToken;
        _vocab = vocabSize;
        Length = tokens;
        Path = path;
        if (tokens == 0) return; // an empty file cannot be mapped
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, tokens * bytesPerToken, MemoryMappedFileAccess.Read);
    }

    public string Path { get; }

    public long Length { get; }

    /// <summary>Copies tokens [start, start + count) into <paramref name="into"/> at <paramref name="at"/>.</summary>
    public void Read(long start, int count, long[] into, int at)
    {
        if (start < 0 || count < 0 || start + count > Length) throw new ArgumentOutOfRangeException(nameof(start), $"tokens [{start}, {start + count}) of {Path}, which has {Length}");
        for (int i = 0; i < count; i++)
        {
            long pos = (start + i) * _bytes;
            long id = _bytes == 2 ? _view!.ReadUInt16(pos) : _view!.ReadUInt32(pos);
            if (id >= _vocab) throw new InvalidDataException($"{Path}: token {start + i} is {id}, outside the vocabulary of {_vocab}");
            into[at + i] = id;
        }
    }

    public void Dispose()
    {
        _view?.Dispose();
        _map?.Dispose();
    }
}

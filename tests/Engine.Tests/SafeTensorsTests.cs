using System.Text;
using System.Text.Json;
using Engine.Backends;
using Engine.Backends.Cpu;
using Engine.Backends.Cuda;
using Engine.Autograd.Nn;
using Engine.Serialization;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// safetensors: the reference reader's validation (one malformed file per rule, built byte by byte), every stored
/// dtype, exact conversions, alignment, tied tensors, atomic saves and a 3 GiB file loaded without reading it whole.
/// </summary>
[NonParallelizable] // counts process-wide storages and measures the process's peak memory
public class SafeTensorsTests
{
    string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "engine-safetensors-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    static long Live => Storage.LiveCount(DeviceType.Cpu);

    static long Settle()
    {
        for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
        return Live;
    }

    // A file made by hand: the 8-byte length (the header's own unless overridden), the header bytes, the data.
    string Raw(string json, byte[]? data = null, ulong? headerLength = null, string name = "bad.safetensors") =>
        RawBytes(Encoding.UTF8.GetBytes(json), data, headerLength, name);

    string RawBytes(byte[] header, byte[]? data = null, ulong? headerLength = null, string name = "bad.safetensors")
    {
        var path = Path.Combine(_dir, name);
        using var f = File.Create(path);
        f.Write(BitConverter.GetBytes(headerLength ?? (ulong)header.Length));
        f.Write(header);
        f.Write(data ?? []);
        return path;
    }

    static string T(string name, string dtype, string shape, long begin, long end) =>
        $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{begin},{end}]}}";

    static void Fails(string path, params string[] mentions)
    {
        long before = Settle();
        var e = Assert.Throws<CheckpointException>(() => SafeTensors.Load(path).Dispose())!;
        Assert.That(Settle(), Is.EqualTo(before), "a failed load leaves nothing allocated");
        Assert.That(e.Message, Does.StartWith("SafeTensors: "));
        Assert.That(e.Message, Does.Contain(Path.GetFileName(path)));
        Assert.That(e.Message, Does.Not.Contain('\n'));
        foreach (var m in mentions) Assert.That(e.Message, Does.Contain(m));
    }

    public sealed record Malformed(string Name, string Json, int DataBytes, string[] Mentions, ulong? HeaderLength = null)
    {
        public override string ToString() => Name;
    }

    static Malformed M(string name, string json, int data, params string[] mentions) => new(name, json, data, mentions);

    static readonly string Ok = T("ok", "F32", "[2]", 0, 8);

    public static readonly Malformed[] Cases =
    [
        new("header over 100,000,000 bytes", "{}", 0, ["header length 100000001", "limit of 100000000"], 100_000_001),
        new("header at the limit but past the file", "{}", 0, ["header length 100000000", "exceeds the 2 bytes"], 100_000_000),
        new("header length beyond the file", "{" + Ok + "}", 8, ["header length", "truncated"], 1000),
        M("not JSON", "{not json}", 0, "not valid JSON"),
        M("trailing garbage after the object", "{}x", 0, "not valid JSON"),
        M("not an object (array)", "[1, 2]", 0, "not a JSON object", "'['"),
        M("not an object (leading space)", " {}", 0, "must start with '{'"),
        M("entry not an object", "{\"a\":5}", 0, "tensor 'a'", "number"),
        M("missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a'", "lacks 'data_offsets'"),
        M("missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a'", "lacks 'dtype'"),
        M("extra field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"foo\":1}}", 4, "tensor 'a'", "unexpected field 'foo'"),
        M("field twice", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a'", "'dtype' twice"),
        M("dtype not a string", "{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a'", "dtype", "number"),
        M("shape not an array", "{\"a\":{\"dtype\":\"F32\",\"shape\":\"x\",\"data_offsets\":[0,4]}}", 4, "tensor 'a'", "shape", "string"),
        M("data_offsets of one value", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4, "tensor 'a'", "data_offsets", "expected 2"),
        M("unknown dtype", "{" + T("a", "F33", "[1]", 0, 4) + "}", 4, "tensor 'a'", "unknown dtype 'F33'"),
        M("lower-case dtype", "{" + T("a", "f32", "[1]", 0, 4) + "}", 4, "tensor 'a'", "unknown dtype 'f32'"),
        M("dtype the engine cannot load", "{" + T("a", "C64", "[1]", 0, 8) + "}", 8, "tensor 'a'", "'C64'", "cannot load"),
        M("negative dim", "{" + T("a", "F32", "[2, -1]", 0, 4) + "}", 4, "tensor 'a'", "negative value -1"),
        M("fractional dim", "{" + T("a", "F32", "[1.5]", 0, 4) + "}", 4, "tensor 'a'", "1.5"),
        M("negative offset", "{" + T("a", "F32", "[1]", -4, 0) + "}", 4, "tensor 'a'", "negative value -4"),
        M("element count overflows", "{" + T("a", "F32", "[4294967296, 4294967297]", 0, 4) + "}", 4, "tensor 'a'", "overflows"),
        // 2 · (2⁶³ + 2) = 2⁶⁴ + 4: a wrapping product would say 4 elements and accept these 4 bytes.
        M("element count wraps to 4", "{" + T("a", "U8", "[2, 9223372036854775810]", 0, 4) + "}", 4, "tensor 'a'", "element count overflows"),
        // 4 · (2⁶² + 1) = 2⁶⁴ + 4 bytes: the count fits, the byte size wraps.
        M("byte size wraps to 4", "{" + T("a", "F32", "[4611686018427387905]", 0, 4) + "}", 4, "tensor 'a'", "byte size overflows"),
        M("offsets do not match the size", "{" + T("a", "F32", "[2]", 0, 4) + "}", 4, "tensor 'a'", "needs 8 bytes", "[0, 4]"),
        M("offsets end before they begin", "{" + T("a", "F32", "[0]", 8, 4) + "}", 8, "tensor 'a'", "[8, 4]"),
        M("gap between tensors", "{" + Ok + "," + T("b", "F32", "[1]", 12, 16) + "}", 16, "tensor 'b'", "gap of 4 bytes", "'ok'"),
        M("gap at the start", "{" + T("a", "F32", "[1]", 4, 8) + "}", 8, "tensor 'a'", "gap of 4 bytes after the start"),
        M("overlap", "{" + Ok + "," + T("b", "F32", "[2]", 4, 12) + "}", 12, "tensor 'b'", "overlap tensor 'ok'"),
        M("duplicated offsets", "{" + Ok + "," + T("b", "F32", "[2]", 0, 8) + "}", 8, "tensor 'b'", "overlap tensor 'ok'"),
        M("trailing bytes", "{" + Ok + "}", 10, "data_offsets end at 8", "2 trailing bytes"),
        M("truncated data", "{" + Ok + "}", 6, "data_offsets end at 8", "truncated"),
        M("duplicate names", "{" + Ok + "," + T("ok", "F32", "[2]", 8, 16) + "}", 16, "tensor 'ok' appears twice"),
        M("metadata with a number", "{\"__metadata__\":{\"step\":1}," + Ok + "}", 8, "'__metadata__'", "'step'", "expected a string"),
        M("metadata not an object", "{\"__metadata__\":\"x\"," + Ok + "}", 8, "'__metadata__'", "string"),
        M("metadata null", "{\"__metadata__\":null," + Ok + "}", 8, "'__metadata__'", "null"),
        M("metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}," + Ok + "}", 8, "'__metadata__' twice"),
        M("metadata key twice", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}," + Ok + "}", 8, "'k' twice"),
        M("__metadata__ as a tensor", "{" + T("__metadata__", "F32", "[2]", 0, 8) + "}", 8, "'__metadata__'", "'shape'", "expected a string"),
        M("dim over the engine's int limit", "{" + T("a", "F32", "[2147483648, 0]", 0, 0) + "}", 0, "tensor 'a'", "2147483648", "engine's limit"),
    ];

    [TestCaseSource(nameof(Cases))]
    public void MalformedFile_ThrowsCheckpointExceptionNamingFileAndTensor(Malformed c) =>
        Fails(Raw(c.Json, new byte[c.DataBytes], c.HeaderLength), c.Mentions);

    [Test]
    public void TruncatedLengthPrefix_NotUtf8_AndMissingFile()
    {
        var path = Path.Combine(_dir, "short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3, 4, 5]);
        Fails(path, "truncated file (5 bytes");
        Fails(RawBytes([(byte)'{', 0xFF, (byte)'}']), "not valid UTF-8");
        Fails(Path.Combine(_dir, "missing.safetensors"), "file not found");
    }

    [Test]
    public void BoolByteOtherThanZeroOrOne_IsRejected_AfterEarlierTensorsWereLoaded()
    {
        // "ok" loads first (offset order), then "flags" fails: the loaded tensor must be disposed.
        var path = Raw("{" + Ok + "," + T("flags", "BOOL", "[3]", 8, 11) + "}", [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2]);
        Fails(path, "tensor 'flags'", "element 2", "0x02", "0 or 1");
    }

    [Test]
    public void U64AboveLongMax_IsRejectedNamingTheValue()
    {
        var data = new byte[16];
        BitConverter.GetBytes(5UL).CopyTo(data, 0);
        BitConverter.GetBytes(ulong.MaxValue).CopyTo(data, 8);
        Fails(Raw("{" + T("big", "U64", "[2]", 0, 16) + "}", data), "tensor 'big'", "element 1", "18446744073709551615");
    }

    [Test]
    public void ValidEdgeCases_Load()
    {
        // Empty header and file; empty tensors sharing an offset; header order unlike offset order; unpadded header.
        using (var c = SafeTensors.Load(Raw("{}", name: "empty.safetensors"))) Assert.That(c.Tensors, Is.Empty);
        var data = new byte[12];
        BitConverter.GetBytes(3f).CopyTo(data, 0);
        BitConverter.GetBytes(7).CopyTo(data, 8);
        var json = "{" + T("i", "I32", "[1]", 8, 12) + "," + T("e1", "F32", "[0, 3]", 8, 8) + "," + T("f", "F32", "[2]", 0, 8) + "," + T("e2", "F64", "[0]", 8, 8) + "}";
        using var back = SafeTensors.Load(Raw(json, data, name: "edge.safetensors"));
        Assert.That(back.Tensors.Keys, Is.EqualTo(new[] { "i", "e1", "f", "e2" }), "tensors come back in header order");
        Assert.That(back.Tensors["f"].ToArray<float>(), Is.EqualTo(new[] { 3f, 0f }));
        Assert.That(back.Tensors["i"].ToArray<int>(), Is.EqualTo(new[] { 7 }));
        Assert.That(back.Tensors["e1"].Shape, Is.EqualTo(new[] { 0, 3 }));
        Assert.That(back.Notes, Is.Empty);
    }

    // ---- dtypes ----

    (long Begin, long End, string DType) Entry(string path, string name)
    {
        var bytes = File.ReadAllBytes(path);
        int n = (int)BitConverter.ToUInt64(bytes, 0);
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, n));
        var e = doc.RootElement.GetProperty(name);
        var o = e.GetProperty("data_offsets");
        return (8 + n + o[0].GetInt64(), 8 + n + o[1].GetInt64(), e.GetProperty("dtype").GetString()!);
    }

    byte[] StoredBytes(string path, string name)
    {
        var (b, e, _) = Entry(path, name);
        return File.ReadAllBytes(path)[(int)b..(int)e];
    }

    [Test]
    public void EngineDTypes_RoundTripBitExactly()
    {
        var path = Path.Combine(_dir, "native.safetensors");
        var tensors = new Dictionary<string, Tensor>
        {
            ["f64"] = Tensor.FromArray(new[] { 1.5, -0.0, double.NaN, double.Epsilon }),
            ["f32"] = Tensor.FromArray(new[] { 1f, float.NegativeInfinity, -0f }),
            ["f16"] = Tensor.FromArray(new[] { (Half)0.5f, Half.Epsilon, Half.MaxValue }),
            ["bf16"] = Tensor.FromArray(new[] { (BFloat16)3.0f, BFloat16.NaN }),
            ["i64"] = Tensor.FromArray(new[] { long.MaxValue, long.MinValue }),
            ["i32"] = Tensor.FromArray(new[] { int.MinValue, -8 }),
            ["bool"] = Tensor.FromArray(new[] { true, false, true }),
        };
        try
        {
            SafeTensors.Save(path, tensors);
            using var back = SafeTensors.Load(path);
            Assert.That(back.Notes, Is.Empty);
            foreach (var (k, v) in tensors)
            {
                Assert.That(back.Tensors[k].DType, Is.EqualTo(v.DType), k);
                Assert.That(StoredBytes(path, k), Is.EqualTo(HostBytes(v)), k);
                Assert.That(HostBytes(back.Tensors[k]), Is.EqualTo(HostBytes(v)), k);
            }
            Assert.That(Entry(path, "bool").DType, Is.EqualTo("BOOL"));
            Assert.That(Entry(path, "bf16").DType, Is.EqualTo("BF16"));
        }
        finally { foreach (var v in tensors.Values) v.Dispose(); }
    }

    static byte[] HostBytes(Tensor t)
    {
        using var c = t.Contiguous();
        var r = new byte[c.Numel * c.DType.ElementSize()];
        BackendRegistry.Get(c.Device).CopyToHost<byte>(c.Storage, r);
        return r;
    }

    [Test]
    public void StoredOnlyDTypes_RoundTripThroughWiderEngineTypes_WithNotes()
    {
        var path = Path.Combine(_dir, "narrow.safetensors");
        using var u8 = Tensor.FromArray(new[] { 0, 1, 255 });
        using var i8 = Tensor.FromArray(new[] { -128, 0, 127 });
        using var i16 = Tensor.FromArray(new[] { -32768, 32767 });
        using var u16 = Tensor.FromArray(new[] { 0, 65535 });
        using var u32 = Tensor.FromArray(new[] { 0L, 4294967295L });
        using var u64 = Tensor.FromArray(new[] { 0L, long.MaxValue });
        using var e4 = Tensor.FromArray(new[] { 1f, 448f, MathF.ScaleB(1, -9), float.NaN, -1f, 240f, MathF.ScaleB(1, -6), -0f });
        using var e5 = Tensor.FromArray(new[] { (Half)1f, Half.PositiveInfinity, (Half)(-2f), (Half)MathF.ScaleB(1, -16), (Half)57344f, Half.NegativeInfinity });
        var store = new Dictionary<string, SafeTensorDType>
        {
            ["u8"] = SafeTensorDType.U8, ["i8"] = SafeTensorDType.I8, ["i16"] = SafeTensorDType.I16, ["u16"] = SafeTensorDType.U16,
            ["u32"] = SafeTensorDType.U32, ["u64"] = SafeTensorDType.U64, ["e4"] = SafeTensorDType.F8E4M3, ["e5"] = SafeTensorDType.F8E5M2,
        };
        var all = new Dictionary<string, Tensor> { ["u8"] = u8, ["i8"] = i8, ["i16"] = i16, ["u16"] = u16, ["u32"] = u32, ["u64"] = u64, ["e4"] = e4, ["e5"] = e5 };
        SafeTensors.Save(path, all, storeAs: store);

        // The bytes on disk, written out by hand.
        Assert.That(StoredBytes(path, "u8"), Is.EqualTo(new byte[] { 0, 1, 255 }));
        Assert.That(StoredBytes(path, "i8"), Is.EqualTo(new byte[] { 0x80, 0, 0x7F }));
        Assert.That(StoredBytes(path, "i16"), Is.EqualTo(new byte[] { 0x00, 0x80, 0xFF, 0x7F }));
        Assert.That(StoredBytes(path, "u32"), Is.EqualTo(new byte[] { 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF }));
        // E4M3: 1.0 = 0.0111.000, 448 = 0.1111.110 (max), 2⁻⁹ = 0.0000.001 (smallest subnormal), NaN = 0.1111.111,
        // -1 = 1.0111.000, 240 = 0.1110.111, 2⁻⁶ = 0.0001.000 (smallest normal), -0 = 1.0000.000.
        Assert.That(StoredBytes(path, "e4"), Is.EqualTo(new byte[] { 0x38, 0x7E, 0x01, 0x7F, 0xB8, 0x77, 0x08, 0x80 }));
        // E5M2: 1.0 = 0.01111.00, +inf = 0.11111.00, -2 = 1.10000.00, 2⁻¹⁶ = 0.00000.01, 57344 = 0.11110.11 (max), -inf.
        Assert.That(StoredBytes(path, "e5"), Is.EqualTo(new byte[] { 0x3C, 0x7C, 0xC0, 0x01, 0x7B, 0xFC }));
        foreach (var (k, code) in new[] { ("u8", "U8"), ("i8", "I8"), ("i16", "I16"), ("u16", "U16"), ("u32", "U32"), ("u64", "U64"), ("e4", "F8_E4M3"), ("e5", "F8_E5M2") })
            Assert.That(Entry(path, k).DType, Is.EqualTo(code));

        using var back = SafeTensors.Load(path);
        var want = new Dictionary<string, DType>
        {
            ["u8"] = DType.Int32, ["i8"] = DType.Int32, ["i16"] = DType.Int32, ["u16"] = DType.Int32,
            ["u32"] = DType.Int64, ["u64"] = DType.Int64, ["e4"] = DType.Float16, ["e5"] = DType.Float16,
        };
        foreach (var (k, dt) in want)
        {
            Assert.That(back.Tensors[k].DType, Is.EqualTo(dt), k);
            Assert.That(back.Tensors[k].ToArray<double>(), Is.EqualTo(all[k].ToArray<double>()), k);
        }
        Assert.That(back.Notes, Has.Count.EqualTo(8));
        Assert.That(back.Notes, Does.Contain("tensor 'u8' stored as U8, loaded as int32"));
        Assert.That(back.Notes, Does.Contain("tensor 'e4' stored as F8_E4M3, loaded as float16"));
        Assert.That(back.Notes, Does.Contain("tensor 'u64' stored as U64, loaded as int64"));
    }

    [Test]
    public void Float8Codes_LoadToExactFloat16()
    {
        var codes = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        var path = Raw("{" + T("e4", "F8_E4M3", "[256]", 0, 256) + "," + T("e5", "F8_E5M2", "[256]", 256, 512) + "}", [.. codes, .. codes], name: "f8.safetensors");
        using var back = SafeTensors.Load(path);
        var e5 = back.Tensors["e5"].ToArray<Half>();
        var e4 = back.Tensors["e4"].ToArray<Half>();
        for (int b = 0; b < 256; b++)
        {
            // E5M2 is float16's top byte, NaNs included.
            Assert.That(BitConverter.HalfToUInt16Bits(e5[b]), Is.EqualTo((ushort)(b << 8)), $"E5M2 0x{b:X2}");
            int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
            if (e == 15 && m == 7) { Assert.That(Half.IsNaN(e4[b]), $"E4M3 0x{b:X2} is NaN"); continue; }
            double mag = e == 0 ? m / 512.0 : (1 + m / 8.0) * Math.Pow(2, e - 7);
            Assert.That((double)e4[b], Is.EqualTo(s == 1 ? -mag : mag), $"E4M3 0x{b:X2}");
            Assert.That(Half.IsNegative(e4[b]), Is.EqualTo(s == 1), $"E4M3 0x{b:X2} sign");
        }
        // And each loaded value saves back to its own code.
        var again = Path.Combine(_dir, "f8-again.safetensors");
        SafeTensors.Save(again, back.Tensors, storeAs: new Dictionary<string, SafeTensorDType> { ["e4"] = SafeTensorDType.F8E4M3, ["e5"] = SafeTensorDType.F8E5M2 });
        var e4Bytes = StoredBytes(again, "e4");
        var e5Bytes = StoredBytes(again, "e5");
        for (int b = 0; b < 256; b++)
        {
            bool nan4 = (b & 0x7F) == 0x7F, nan5 = (b & 0x7F) > 0x7C;
            if (!nan4) Assert.That(e4Bytes[b], Is.EqualTo(b), $"E4M3 0x{b:X2}");
            else Assert.That(e4Bytes[b] & 0x7F, Is.EqualTo(0x7F));
            if (!nan5) Assert.That(e5Bytes[b], Is.EqualTo(b), $"E5M2 0x{b:X2}");
            else Assert.That(e5Bytes[b] & 0x7F, Is.GreaterThan(0x7C));
        }
    }

    public static readonly object[] Inexact =
    [
        new object[] { new[] { 1, 300 }, SafeTensorDType.U8, "300" },
        new object[] { new[] { -1 }, SafeTensorDType.U16, "-1" },
        new object[] { new[] { 128 }, SafeTensorDType.I8, "128" },
        new object[] { new[] { 2 }, SafeTensorDType.Bool, "2" },
        new object[] { new[] { 16_777_217 }, SafeTensorDType.F32, "16777217" },
        new object[] { new[] { 2f, 1.5f }, SafeTensorDType.I32, "1.5" },
        new object[] { new[] { float.NaN }, SafeTensorDType.I64, "NaN" },
        new object[] { new[] { 0.1f }, SafeTensorDType.F8E4M3, "0.1" },
        new object[] { new[] { float.PositiveInfinity }, SafeTensorDType.F8E4M3, "Infinity" },
        new object[] { new[] { 480f }, SafeTensorDType.F8E4M3, "480" },
        new object[] { new[] { 1e6f }, SafeTensorDType.F16, "1000000" },
        new object[] { new[] { 1.125f }, SafeTensorDType.F8E5M2, "1.125" },
        new object[] { new[] { 1.001f }, SafeTensorDType.BF16, "1.00" },
        new object[] { new[] { -1L }, SafeTensorDType.U64, "-1" },
        new object[] { new[] { (1L << 53) + 1 }, SafeTensorDType.F64, "9007199254740993" },
    ];

    [TestCaseSource(nameof(Inexact))]
    public void SaveConversion_IsExactOrThrowsNamingTensorAndValue(Array values, SafeTensorDType to, string shown)
    {
        var path = Path.Combine(_dir, "inexact.safetensors");
        using var t = values switch
        {
            int[] i => Tensor.FromArray(i),
            float[] f => Tensor.FromArray(f),
            long[] l => Tensor.FromArray(l),
            _ => throw new ArgumentException("values"),
        };
        var e = Assert.Throws<CheckpointException>(() => SafeTensors.Save(path, [new("x", t)], storeAs: new Dictionary<string, SafeTensorDType> { ["x"] = to }))!;
        Assert.That(e.Message, Does.Contain("inexact.safetensors").And.Contain("tensor 'x'").And.Contain(to.Code()).And.Contain(shown));
        Assert.That(Directory.GetFiles(_dir), Is.Empty, "no file and no temporary file is left");
    }

    [Test]
    public void SaveConversion_ExactValuesPass_AndUnknownStoreAsNameThrows()
    {
        var path = Path.Combine(_dir, "exact.safetensors");
        using var f = Tensor.FromArray(new[] { 3f, -7f, 0f });
        using var big = Tensor.FromArray(new[] { 1L << 53, -(1L << 62) });
        SafeTensors.Save(path, [new("f", f), new("big", big)],
            storeAs: new Dictionary<string, SafeTensorDType> { ["f"] = SafeTensorDType.I8, ["big"] = SafeTensorDType.F64 });
        using (var back = SafeTensors.Load(path))
        {
            Assert.That(back.Tensors["f"].DType, Is.EqualTo(DType.Int32));
            Assert.That(back.Tensors["f"].ToArray<int>(), Is.EqualTo(new[] { 3, -7, 0 }));
            Assert.That(back.Tensors["big"].ToArray<double>(), Is.EqualTo(new[] { 9007199254740992.0, -4611686018427387904.0 }));
        }
        var e = Assert.Throws<CheckpointException>(() => SafeTensors.Save(path, [new("f", f)], storeAs: new Dictionary<string, SafeTensorDType> { ["g"] = SafeTensorDType.U8 }))!;
        Assert.That(e.Message, Does.Contain("'g'"));
    }

    [Test]
    public void MultiChunkTensors_RoundTrip_RawAndConverted()
    {
        // Above the 8 MiB chunk: 5M float32 (20 MB) raw, and 5M int32 stored as I16 (converted in chunks both ways).
        const int n = 5_000_000;
        var rng = new Random(3);
        var fv = new float[n];
        var iv = new int[n];
        for (int i = 0; i < n; i++) { fv[i] = (float)rng.NextDouble(); iv[i] = rng.Next(short.MinValue, short.MaxValue + 1); }
        using var f = Tensor.FromArray(fv);
        using var iT = Tensor.FromArray(iv);
        var path = Path.Combine(_dir, "chunks.safetensors");
        long before = Settle();
        SafeTensors.Save(path, [new("f", f), new("i", iT)], storeAs: new Dictionary<string, SafeTensorDType> { ["i"] = SafeTensorDType.I16 });
        using (var back = SafeTensors.Load(path))
        {
            Assert.That(back.Tensors["f"].ToArray<float>(), Is.EqualTo(fv));
            Assert.That(back.Tensors["i"].ToArray<int>(), Is.EqualTo(iv));
        }
        Assert.That(Settle(), Is.EqualTo(before));
        Assert.That(new FileInfo(path).Length - (Entry(path, "f").Begin), Is.EqualTo(4L * n + 2L * n));
    }

    // ---- layout of the file ----

    [Test]
    public void DataIsAlignedForEveryDTypeMix_AndHeaderKeepsInputOrder()
    {
        var path = Path.Combine(_dir, "aligned.safetensors");
        using var i8 = Tensor.FromArray(new[] { 1, 2, 3 });
        using var f16 = Tensor.FromArray(new[] { (Half)1, (Half)2, (Half)3 });
        using var f64 = Tensor.FromArray(new[] { 1.0 });
        using var f32 = Tensor.FromArray(new[] { 1f, 2f, 3f, 4f, 5f });
        using var b = Tensor.FromArray(new[] { true });
        using var e4 = Tensor.FromArray(new[] { 1f });
        var input = new KeyValuePair<string, Tensor>[] { new("z_i8", i8), new("b", b), new("f16", f16), new("a_f64", f64), new("f32", f32), new("e4", e4) };
        SafeTensors.Save(path, input, storeAs: new Dictionary<string, SafeTensorDType> { ["z_i8"] = SafeTensorDType.I8, ["e4"] = SafeTensorDType.F8E4M3 });

        var bytes = File.ReadAllBytes(path);
        long n = (long)BitConverter.ToUInt64(bytes, 0);
        Assert.That((8 + n) % 8, Is.EqualTo(0), "the header is padded so the data starts 8-aligned");
        var sizes = new Dictionary<string, int> { ["z_i8"] = 1, ["b"] = 1, ["f16"] = 2, ["a_f64"] = 8, ["f32"] = 4, ["e4"] = 1 };
        foreach (var (k, size) in sizes)
            Assert.That((Entry(path, k).Begin - 8 - n) % size, Is.EqualTo(0), k);
        // The reference writer's order: widest first, then by its dtype order, then name.
        var byOffset = sizes.Keys.OrderBy(k => Entry(path, k).Begin).ToArray();
        Assert.That(byOffset, Is.EqualTo(new[] { "a_f64", "f32", "f16", "e4", "z_i8", "b" }));
        using var doc = JsonDocument.Parse(bytes.AsMemory(8, (int)n));
        Assert.That(doc.RootElement.EnumerateObject().Select(p => p.Name), Is.EqualTo(input.Select(p => p.Key)));
        using var back = SafeTensors.Load(path);
        Assert.That(back.Tensors.Keys, Is.EqualTo(input.Select(p => p.Key)));
    }

    // ---- shared tensors ----

    [Test]
    public void TiedTensors_SavedOnce_WithMetadataAlias_LoadAsViewsOfOneStorage()
    {
        var path = Path.Combine(_dir, "tied.safetensors");
        using var w = Tensor.FromArray(new[] { 1f, 2f, 3f, 4f }, [2, 2]);
        using var slice = w.Narrow(0, 1, 1);
        long before = Settle();
        SafeTensors.Save(path, [new("emb", w), new("head", w), new("part", slice)], new Dictionary<string, string> { ["step"] = "3" });
        Assert.That(Settle(), Is.EqualTo(before));

        var bytes = File.ReadAllBytes(path);
        using (var doc = JsonDocument.Parse(bytes.AsMemory(8, (int)BitConverter.ToUInt64(bytes, 0))))
        {
            var names = doc.RootElement.EnumerateObject().Select(p => p.Name).ToArray();
            Assert.That(names, Is.EqualTo(new[] { "__metadata__", "emb", "part" }), "the tie is written once; the slice is a copy of its own");
            Assert.That(doc.RootElement.GetProperty("__metadata__").GetProperty("head").GetString(), Is.EqualTo("emb"));
        }
        Assert.That(bytes.Length - 8 - (long)BitConverter.ToUInt64(bytes, 0), Is.EqualTo(16 + 8));

        var back = SafeTensors.Load(path);
        Assert.That(back.Tensors.Keys, Is.EqualTo(new[] { "emb", "part", "head" }));
        Assert.That(back.Aliases, Is.EqualTo(new Dictionary<string, string> { ["head"] = "emb" }));
        Assert.That(back.Metadata["step"], Is.EqualTo("3"));
        Assert.That(back.Tensors["head"].Storage, Is.SameAs(back.Tensors["emb"].Storage));
        Assert.That(back.Tensors["head"].ToArray<float>(), Is.EqualTo(new[] { 1f, 2f, 3f, 4f }));
        Assert.That(back.Tensors["part"].ToArray<float>(), Is.EqualTo(new[] { 3f, 4f }));
        back.Dispose();
        Assert.That(Settle(), Is.EqualTo(before), "disposing the tensor and its alias frees the shared storage once");
    }

    [Test]
    public void TiedGpt_RoundTripsThroughLoadStateDict()
    {
        var cfg = new GptConfig(VocabSize: 11, ContextLength: 4, Layers: 1, Heads: 2, DModel: 8, TiedHead: true);
        using var a = new Gpt(cfg, generator: new Generator(1));
        using var b = new Gpt(cfg, generator: new Generator(2));
        var path = Path.Combine(_dir, "gpt.safetensors");
        SafeTensors.Save(path, a.StateDict());
        Assert.That(Entry(path, "wte.weight").DType, Is.EqualTo("F32"));
        using (var loaded = SafeTensors.Load(path))
        {
            Assert.That(loaded.Metadata["head.weight"], Is.EqualTo("wte.weight"));
            b.LoadStateDict(loaded.Tensors);
        }
        foreach (var (k, t) in a.StateDict())
            Assert.That(b.StateDict()[k].ToArray<float>(), Is.EqualTo(t.ToArray<float>()), k);
        Assert.That(b.StateDict()["head.weight"], Is.SameAs(b.StateDict()["wte.weight"]), "the model stays tied");
    }

    // ---- writes ----

    [Test]
    public void ConcurrentSaves_UseDistinctTemporaryFiles()
    {
        var path = Path.Combine(_dir, "same.safetensors");
        using var t = Tensor.Ones([1000]);
        Parallel.For(0, 8, _ => SafeTensors.Save(path, [new("w", t)]));
        using (var back = SafeTensors.Load(path)) Assert.That(back.Tensors["w"].ToArray<float>(), Is.All.EqualTo(1f));
        Assert.That(Directory.GetFiles(_dir), Is.EqualTo(new[] { path }), "no temporary file is left behind");
    }

    [Test]
    public void SaveErrors_AreCheckpointExceptions()
    {
        var path = Path.Combine(_dir, "e.safetensors");
        using var t = Tensor.Ones([2]);
        var d = Tensor.Ones([2]);
        d.Dispose();
        Assert.That(() => SafeTensors.Save(path, [new("__metadata__", t)]), Throws.TypeOf<CheckpointException>().With.Message.Contains("reserved"));
        Assert.That(() => SafeTensors.Save(path, [new("a", t), new("a", t)]), Throws.TypeOf<CheckpointException>().With.Message.Contains("'a' is given twice"));
        Assert.That(() => SafeTensors.Save(path, [new("gone", d)]), Throws.TypeOf<CheckpointException>().With.Message.Contains("'gone' has been disposed"));
        Assert.That(() => SafeTensors.Save(path, [new("a", t), new("b", t)], new Dictionary<string, string> { ["b"] = "x" }),
            Throws.TypeOf<CheckpointException>().With.Message.Contains("clashes"));
        Assert.That(Directory.GetFiles(_dir), Is.Empty);
    }

    // ---- the backend contract's chunked copies ----

    [Test]
    public void ChunkedHostCopies_CpuAndTheContractDefault()
    {
        CudaBackend.EnableEmulation();
        foreach (var dev in new[] { Device.Cpu, CudaBackend.EmulatedDevice })
        {
            IBackend backend = BackendRegistry.Get(dev);
            using var t = Tensor.Zeros([6], DType.Float32, dev);
            backend.CopyFromHost<float>(new[] { 1f, 2f }, t.Storage, 8);
            var back = new float[3];
            backend.CopyToHost<float>(t.Storage, 4, back);
            Assert.That(back, Is.EqualTo(new[] { 0f, 1f, 2f }), dev.ToString());
            Assert.That(() => backend.CopyFromHost<float>(new[] { 1f, 2f }, t.Storage, 20), Throws.TypeOf<ShapeException>(), dev.ToString());
        }
        // A file loads onto the (emulated) device and saves from it.
        var path = Path.Combine(_dir, "dev.safetensors");
        using var x = Tensor.FromArray(new[] { 1, 2, 300 });
        SafeTensors.Save(path, [new("x", x)], storeAs: new Dictionary<string, SafeTensorDType> { ["x"] = SafeTensorDType.U16 });
        using var onDev = SafeTensors.Load(path, CudaBackend.EmulatedDevice);
        Assert.That(onDev.Tensors["x"].Device, Is.EqualTo(CudaBackend.EmulatedDevice));
        var again = Path.Combine(_dir, "dev2.safetensors");
        SafeTensors.Save(again, onDev.Tensors);
        Assert.That(StoredBytes(again, "x"), Is.EqualTo(new byte[] { 1, 0, 0, 0, 2, 0, 0, 0, 44, 1, 0, 0 }));
    }

    // ---- a file over 2 GiB ----

    static long StatusBytes(string key)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key + ":", StringComparison.Ordinal))
                return long.Parse(line[(key.Length + 1)..].Trim().Split(' ')[0]) * 1024;
        throw new InvalidOperationException(key);
    }

    [Test]
    public void ThreeGiBSparseFile_WithATensorOver2GiB_LoadsInChunks_WithPeakMemoryNearTheTensorsBytes()
    {
        Assume.That(OperatingSystem.IsLinux(), "measures the peak resident set through /proc");
        const long mib = 1L << 20;
        // 2304 MiB (over a span's 2 GiB, so it takes the offset copies), then 512 and 256 MiB: 3 GiB in all. F32 and
        // I32 load without conversion, so the tensors' bytes are the file's data bytes.
        (string Name, string Code, long Bytes)[] ts = [("a", "F32", 2304 * mib), ("b", "I32", 512 * mib), ("c", "F32", 256 * mib)];
        long total = ts.Sum(t => t.Bytes);
        var path = Path.Combine(_dir, "big.safetensors");
        long begin = 0;
        var entries = new List<string>();
        foreach (var (name, code, bytes) in ts) { entries.Add(T(name, code, $"[{bytes / 4}]", begin, begin + bytes)); begin += bytes; }
        var json = Encoding.UTF8.GetBytes("{" + string.Join(",", entries) + "}");
        long dataStart = 8 + json.Length;
        static int[] At(long bytes) => [0, (int)(bytes / 8), (int)(bytes / 4) - 1]; // first, middle and last elements
        static byte[] Value(int k, int j) => k == 1 ? BitConverter.GetBytes(j * 1000 - 7) : BitConverter.GetBytes(j + 1.5f * (k + 1));
        using (var f = new FileStream(path, FileMode.CreateNew))
        {
            f.Write(BitConverter.GetBytes((ulong)json.Length));
            f.Write(json);
            f.SetLength(dataStart + total); // sparse: only the header and the values below take disk space
            long start = dataStart;
            for (int k = 0; k < ts.Length; k++)
            {
                var at = At(ts[k].Bytes);
                for (int j = 0; j < at.Length; j++) { f.Position = start + 4L * at[j]; f.Write(Value(k, j)); }
                start += ts[k].Bytes;
            }
        }

        long before = Settle();
        File.WriteAllText("/proc/self/clear_refs", "5"); // resets VmHWM to the current resident set
        long rss = StatusBytes("VmRSS");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var back = SafeTensors.Load(path);
        long ms = clock.ElapsedMilliseconds, peak = StatusBytes("VmHWM") - rss;
        TestContext.Out.WriteLine($"loaded {total / mib} MiB in {ms} ms; peak resident growth {peak / mib} MiB");
        try
        {
            Assert.That(back.Tensors.Keys, Is.EqualTo(ts.Select(t => t.Name)));
            for (int k = 0; k < ts.Length; k++)
            {
                var t = back.Tensors[ts[k].Name];
                Assert.That(t.Numel, Is.EqualTo(ts[k].Bytes / 4));
                var at = At(ts[k].Bytes);
                for (int j = 0; j < at.Length; j++)
                {
                    using var v = t.Narrow(0, at[j], 1);
                    var got = k == 1 ? BitConverter.GetBytes(v.Item<int>()) : BitConverter.GetBytes(v.Item<float>());
                    Assert.That(got, Is.EqualTo(Value(k, j)), $"{ts[k].Name}[{at[j]}]");
                    using var zero = t.Narrow(0, at[j] == 0 ? 1 : at[j] - 1, 1);
                    Assert.That(zero.Item<double>(), Is.Zero);
                }
            }
            Assert.That(peak, Is.LessThanOrEqualTo((long)(1.1 * total) + 200_000_000), $"peak resident growth {peak / mib} MiB for {total / mib} MiB of tensors");
        }
        finally
        {
            back.Dispose();
            CpuBufferPool.Trim(); // give the 3 GiB back to the system rather than keep it in the pool
        }
        Assert.That(Settle(), Is.EqualTo(before));
    }
}

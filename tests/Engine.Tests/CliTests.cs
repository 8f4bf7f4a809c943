using System.Text.Json;
using Engine.Cli;
using Engine.Serialization;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>The engine command end to end, checkpoints (safetensors) and their failure modes.</summary>
[NonParallelizable]
public class CliTests
{
    string _dir = "";

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "engine-cli-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = Console.Out; var e = Console.Error;
        var so = new StringWriter(); var se = new StringWriter();
        Console.SetOut(so); Console.SetError(se);
        try { return (EngineCli.Run(args), so.ToString(), se.ToString()); }
        finally { Console.SetOut(o); Console.SetError(e); }
    }

    // A model small enough that a few steps take well under a second.
    static string[] Tiny(params string[] extra) =>
        ["train", "--steps", "6", "--batch", "8", "--layers", "1", "--heads", "2", "--dmodel", "16", "--eval-samples", "20", "--quiet", .. extra];

    [TestCase(new string[0], 2, "usage")]
    [TestCase(new[] { "frobnicate" }, 2, "unknown command")]
    [TestCase(new[] { "train", "--stepz", "3" }, 2, "--stepz")]
    [TestCase(new[] { "train", "--steps", "abc" }, 2, "--steps expects an integer")]
    [TestCase(new[] { "train", "--steps" }, 2, "needs a value")]
    [TestCase(new[] { "train", "--device", "tpu" }, 2, "unknown device")]
    [TestCase(new[] { "train", "--precision", "fp8" }, 2, "--precision")]
    [TestCase(new[] { "train", "--text", "/nonexistent/file.txt" }, 2, "not found")]
    [TestCase(new[] { "train", "--dmodel", "10", "--heads", "3" }, 2, "divisible")]
    [TestCase(new[] { "sample" }, 2, "--checkpoint")]
    [TestCase(new[] { "eval", "--checkpoint", "/nonexistent/dir" }, 1, "not found")]
    [TestCase(new[] { "bench", "--only", "nope" }, 2, "unknown workload")]
    public void BadArgumentsGiveOneClearLineAndNonZeroExit(string[] args, int code, string fragment)
    {
        var (c, o, e) = Run(args);
        Assert.That(c, Is.EqualTo(code), o + e);
        Assert.That(e + o, Does.Contain(fragment));
        if (code != 2 || args.Length > 0) Assert.That(e.Trim().Split('\n'), Has.Length.EqualTo(1), e);
    }

    [Test]
    public void TrainWritesMetricsCurveCheckpointAndReportsAccuracy()
    {
        var (c, o, e) = Run(Tiny("--out", _dir));
        Assert.That(c, Is.EqualTo(0), o + e);
        Assert.That(o, Does.Contain("gradient scaler off"));
        Assert.That(o, Does.Match(@"eval accuracy: \d+\.\d%"));
        var csv = File.ReadAllLines(Path.Combine(_dir, "metrics.csv"));
        Assert.That(csv[0], Is.EqualTo("step,loss,lr,scale,tokens_per_s"));
        Assert.That(csv, Has.Length.EqualTo(7));
        Assert.That(File.ReadAllText(Path.Combine(_dir, "loss.svg")), Does.StartWith("<svg").And.Contain("polyline"));
        using var m = SafeTensors.Load(Path.Combine(_dir, "model.safetensors"));
        Assert.That(m.Tensors.Keys, Does.Contain("blocks.0.attn.qkv.weight").And.Contain("head.weight"));
        Assert.That(m.Metadata["task"], Is.EqualTo("sort"));
        var (ec, eo, _) = Run("eval", "--checkpoint", _dir, "--samples", "10");
        Assert.That(ec, Is.EqualTo(0));
        Assert.That(eo, Does.Contain("eval accuracy:"));
        var (sc, so, _) = Run("sample", "--checkpoint", _dir, "--prompt", "2 1 0 2 1 0");
        Assert.That(sc, Is.EqualTo(0));
        Assert.That(so.Trim().Split(' '), Has.Length.EqualTo(12));
    }

    [Test]
    public void ResumeMatchesTheUninterruptedRunBitForBit()
    {
        var full = Path.Combine(_dir, "full");
        var split = Path.Combine(_dir, "split");
        Assert.That(Run(Tiny("--out", full, "--dropout", "0.1")).Code, Is.EqualTo(0));
        Assert.That(Run(Tiny("--out", split, "--dropout", "0.1", "--stop-at", "3")).Code, Is.EqualTo(0));
        var (c, o, e) = Run("train", "--resume", split, "--quiet");
        Assert.That(c, Is.EqualTo(0), o + e);
        using var a = SafeTensors.Load(Path.Combine(full, "model.safetensors"));
        using var b = SafeTensors.Load(Path.Combine(split, "model.safetensors"));
        foreach (var (k, t) in a.Tensors)
            Assert.That(b.Tensors[k].ToArray<float>(), Is.EqualTo(t.ToArray<float>()), k);
        var la = File.ReadAllLines(Path.Combine(full, "metrics.csv")).Select(l => l.Split(',')[1]).ToArray();
        var lb = File.ReadAllLines(Path.Combine(split, "metrics.csv")).Select(l => l.Split(',')[1]).ToArray();
        Assert.That(lb, Is.EqualTo(la), "per-step losses");
    }

    [Test]
    public void TextTaskTrainsAndSamples()
    {
        var text = Path.Combine(_dir, "t.txt");
        File.WriteAllText(text, string.Concat(Enumerable.Repeat("hello world, this is engine. ", 40)));
        var (c, o, e) = Run("train", "--text", text, "--steps", "3", "--batch", "4", "--context", "16", "--layers", "1", "--heads", "2", "--dmodel", "16", "--quiet", "--out", _dir);
        Assert.That(c, Is.EqualTo(0), o + e);
        var (sc, so, se) = Run("sample", "--checkpoint", _dir, "--prompt", "hello", "--tokens", "5");
        Assert.That(sc, Is.EqualTo(0), se);
        Assert.That(so.Trim(), Does.StartWith("hello").And.Length.EqualTo(10));
    }

    [Test]
    public void BenchWritesOneJsonObjectPerMetric()
    {
        var json = Path.Combine(_dir, "b.jsonl");
        var (c, o, e) = Run("bench", "--only", "op_overhead,gemm_f32_256", "--reps", "1", "--json", json);
        Assert.That(c, Is.EqualTo(0), o + e);
        var lines = File.ReadAllLines(json);
        Assert.That(lines, Has.Length.EqualTo(3));
        foreach (var l in lines)
        {
            using var d = JsonDocument.Parse(l);
            var r = d.RootElement;
            foreach (var k in new[] { "workload", "metric", "unit", "device", "dtype" })
                Assert.That(r.GetProperty(k).ValueKind, Is.EqualTo(JsonValueKind.String), k);
            foreach (var k in new[] { "value", "min", "reps" })
                Assert.That(r.GetProperty(k).ValueKind, Is.EqualTo(JsonValueKind.Number), k);
            Assert.That(r.GetProperty("value").GetDouble(), Is.GreaterThan(0));
            Assert.That(r.GetProperty("device").GetString(), Is.EqualTo("cpu"));
            Assert.That(new[] { "ms", "us", "GB/s", "GFLOP/s", "tokens/s" }, Does.Contain(r.GetProperty("unit").GetString()));
        }
    }

    [Test]
    public void CheckComparesTheEmulatedCudaDeviceWithTheCpu()
    {
        var (c, o, e) = Run("check", "--emulate", "--size", "8");
        Assert.That(c, Is.EqualTo(0), o + e);
        Assert.That(o, Does.Contain("parity sweep").And.Contain("matmul").And.Contain("bfloat16").And.Contain("all ops agree"));
        var (c2, _, e2) = Run("check", "--device", "cpu");
        Assert.That(c2, Is.EqualTo(2));
        Assert.That(e2, Does.Contain("CUDA device"));
    }

    [Test]
    public void SafeTensorsRoundTripsEveryDType()
    {
        var path = Path.Combine(_dir, "all.safetensors");
        var tensors = new Dictionary<string, Tensor>
        {
            ["f64"] = Tensor.FromArray(new[] { 1.5, -2.25, double.NaN }, [3]),
            ["f32"] = Tensor.FromArray(new[] { 1f, 2f, 3f, 4f, 5f, 6f }, [2, 3]),
            ["f16"] = Tensor.FromArray(new[] { (Half)0.5f, (Half)(-1f) }, [2]),
            ["bf16"] = Tensor.FromArray(new[] { (BFloat16)3.0f, BFloat16.NaN }, [1, 2]),
            ["i64"] = Tensor.FromArray(new[] { long.MaxValue, -1L }, [2]),
            ["i32"] = Tensor.FromArray(new[] { 7, -8 }, [2]),
            ["bool"] = Tensor.FromArray(new[] { true, false, true }, [3]),
            ["empty"] = Tensor.Zeros([0, 4]),
        };
        using var t = tensors["f32"].T; // a transposed view is written in logical order
        tensors["f32t"] = t;
        SafeTensors.Save(path, tensors, new Dictionary<string, string> { ["step"] = "42" });
        using var back = SafeTensors.Load(path);
        Assert.That(back.Metadata["step"], Is.EqualTo("42"));
        Assert.That(back.Tensors.Keys, Is.EqualTo(tensors.Keys));
        foreach (var (k, v) in tensors)
        {
            Assert.That(back.Tensors[k].DType, Is.EqualTo(v.DType), k);
            Assert.That(back.Tensors[k].Shape, Is.EqualTo(v.Shape), k);
            Assert.That(back.Tensors[k].ToArray<double>(), Is.EqualTo(v.ToArray<double>()), k);
        }
        // The header length is little-endian and the data is aligned to 8 bytes.
        var bytes = File.ReadAllBytes(path);
        Assert.That((8 + (long)BitConverter.ToUInt64(bytes, 0)) % 8, Is.EqualTo(0));
        foreach (var v in tensors.Values) v.Dispose();
    }

    [Test]
    public void CorruptOrTruncatedFilesGiveClearErrors()
    {
        var path = Path.Combine(_dir, "x.safetensors");
        using (var t = Tensor.Ones([4, 4])) SafeTensors.Save(path, [new("w", t)]);
        var good = File.ReadAllBytes(path);

        File.WriteAllBytes(path, good[..5]);
        Assert.That(() => SafeTensors.Load(path), Throws.InstanceOf<EngineException>().With.Message.Contains("truncated"));
        File.WriteAllBytes(path, good[..^10]);
        Assert.That(() => SafeTensors.Load(path), Throws.InstanceOf<EngineException>().With.Message.Contains("data_offsets"));
        var bad = (byte[])good.Clone();
        bad[9] = (byte)'!';
        File.WriteAllBytes(path, bad);
        Assert.That(() => SafeTensors.Load(path), Throws.InstanceOf<EngineException>().With.Message.Contains("JSON"));
        var huge = (byte[])good.Clone();
        BitConverter.GetBytes(1UL << 40).CopyTo(huge, 0);
        File.WriteAllBytes(path, huge);
        Assert.That(() => SafeTensors.Load(path), Throws.InstanceOf<EngineException>().With.Message.Contains("header length"));
        Assert.That(() => SafeTensors.Load(Path.Combine(_dir, "missing.safetensors")), Throws.InstanceOf<EngineException>().With.Message.Contains("not found"));
    }

    [Test]
    public void SavesAreAtomic()
    {
        var path = Path.Combine(_dir, "a.safetensors");
        using var t = Tensor.Ones([8]);
        SafeTensors.Save(path, [new("w", t)]);
        var before = File.ReadAllBytes(path);
        // A tensor that cannot be written (disposed) fails the save before the rename: the old file stays whole.
        var d = Tensor.Ones([2]);
        d.Dispose();
        Assert.That(() => SafeTensors.Save(path, [new("w", t), new("bad", d)]), Throws.Exception);
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
        Assert.That(Directory.GetFiles(_dir), Has.Length.EqualTo(1), "no temporary file is left behind");
    }
}

using System.Text.Json.Nodes;
using Engine.Serialization;
using NUnit.Framework;

namespace Engine.Tests.CliTests;

/// <summary>Damaged checkpoints: each is refused with exit code 5 and one line naming the file (and the key).</summary>
[NonParallelizable]
public sealed class CheckpointDamageTests : CliFixture
{
    string _pristine = "";

    [OneTimeSetUp]
    public void TrainOnce()
    {
        _pristine = Path.Combine(Path.GetTempPath(), "engine-cli-pristine-" + Guid.NewGuid().ToString("N")[..12]);
        Expect(0, Train(_pristine, 10, "--save-every", "5", "--keep", "5"));
    }

    [OneTimeTearDown]
    public void RemovePristine()
    {
        try { Directory.Delete(_pristine, recursive: true); } catch (IOException) { }
    }

    /// <summary>A copy of the pristine run (steps 5 and 10, latest = 10) and its latest step directory.</summary>
    (string Run, string Step) Copy()
    {
        var run = At("run");
        CopyDirectory(_pristine, run);
        return (run, Path.Combine(run, "step-000010"));
    }

    static string[] Resume(string run) => ["train", "--resume", run, "--steps", "20", .. TinyOptions];

    void AssertRefusedByBoth(string run, params string[] fragments)
    {
        ExpectOneLineError(5, ["eval", "--checkpoint", run, "--samples", "5"], fragments);
        ExpectOneLineError(5, Resume(run), fragments);
        Assert.That(LatestStep(run), Is.EqualTo(10), "a refused resume writes nothing");
    }

    [Test]
    public void TruncatedModel()
    {
        var (run, step) = Copy();
        var f = Path.Combine(step, "model.safetensors");
        File.WriteAllBytes(f, File.ReadAllBytes(f)[..^100]);
        AssertRefusedByBoth(run, "step-000010/model.safetensors", "truncated");
    }

    [Test]
    public void OneFlippedByteInTheOptimizer()
    {
        var (run, step) = Copy();
        var f = Path.Combine(step, "optimizer.safetensors");
        var bytes = File.ReadAllBytes(f);
        bytes[^5] ^= 0x10;
        File.WriteAllBytes(f, bytes);
        AssertRefusedByBoth(run, "step-000010/optimizer.safetensors", "SHA-256");
    }

    [Test]
    public void OptimizerMissingATensorWithAMatchingManifest()
    {
        var (run, step) = Copy();
        var f = Path.Combine(step, "optimizer.safetensors");
        RewriteSafeTensors(f, (tensors, _) => Assert.That(tensors.Remove("state.0.exp_avg_sq"), Is.True));
        FixManifest(step, "optimizer.safetensors");
        ExpectOneLineError(5, Resume(run), "optimizer.safetensors", "state.0.exp_avg_sq");
        // eval needs only the model: the optimizer's state is no concern of it.
        Expect(0, "eval", "--checkpoint", run, "--samples", "5");
    }

    [Test]
    public void ModelMissingATensorWithAMatchingManifest()
    {
        var (run, step) = Copy();
        var f = Path.Combine(step, "model.safetensors");
        string removed = "";
        RewriteSafeTensors(f, (tensors, _) => { removed = tensors.Keys.First(k => k.EndsWith(".weight", StringComparison.Ordinal)); tensors.Remove(removed); });
        FixManifest(step, "model.safetensors");
        AssertRefusedByBoth(run, "model.safetensors", removed);
    }

    [Test]
    public void TrainerStepNotANumber()
    {
        var (run, step) = Copy();
        var f = Path.Combine(step, "trainer.json");
        var j = JsonNode.Parse(File.ReadAllText(f))!;
        j["step"] = "xyz";
        File.WriteAllText(f, j.ToJsonString());
        FixManifest(step, "trainer.json");
        AssertRefusedByBoth(run, "trainer.json", "'step'", "xyz");
    }

    [Test]
    public void NonFiniteWeights()
    {
        var (run, step) = Copy();
        var f = Path.Combine(step, "model.safetensors");
        string key = "";
        RewriteSafeTensors(f, (tensors, _) =>
        {
            key = tensors.Keys.Order(StringComparer.Ordinal).First(k => tensors[k].DType == DType.Float32 && tensors[k].Numel > 1);
            var values = tensors[key].ToArray<float>();
            values[1] = float.NaN;
            tensors[key] = Tensor.FromArray(values, tensors[key].Shape);
        });
        FixManifest(step, "model.safetensors");
        AssertRefusedByBoth(run, "model.safetensors", key, "non-finite");
    }

    [Test]
    public void AStepDirectoryWithoutManifestIsNeverChosen()
    {
        var (run, step) = Copy();
        var incomplete = Path.Combine(run, "step-000015");
        CopyDirectory(step, incomplete);
        File.Delete(Path.Combine(incomplete, "manifest.json"));
        File.Delete(Path.Combine(run, "latest"));
        var e = Expect(0, "eval", "--checkpoint", run, "--samples", "5");
        var r = Expect(0, Resume(run));
        Assert.That(r.Out, Does.Contain("resuming from " + step).And.Contain("latest is missing"));
        Assert.That(e.Err + e.Out, Does.Contain("latest is missing"), "eval says which checkpoint it fell back to");
        Assert.That(LatestStep(run), Is.EqualTo(20));
    }

    [Test]
    public void LatestNamingAMissingDirectoryFallsBackWithANote()
    {
        var (run, step) = Copy();
        File.WriteAllText(Path.Combine(run, "latest"), "step-000099\n");
        var e = Expect(0, "eval", "--checkpoint", run, "--samples", "5");
        Assert.That(e.Err + e.Out, Does.Contain("step-000099").And.Contain("step-000010"), "eval says which checkpoint it fell back to");
        var r = Expect(0, Resume(run));
        Assert.That(r.Out, Does.Contain("resuming from " + step).And.Contain("step-000099"));
        Assert.That(LatestStep(run), Is.EqualTo(20));
    }

    /// <summary>Loads a safetensors file, lets <paramref name="edit"/> change its tensors, saves it back with the same metadata.</summary>
    static void RewriteSafeTensors(string path, Action<Dictionary<string, Tensor>, IReadOnlyDictionary<string, string>> edit)
    {
        Dictionary<string, Tensor> tensors;
        Dictionary<string, string> meta;
        using (var c = SafeTensors.Load(path))
        {
            tensors = c.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
            meta = c.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value);
        }
        edit(tensors, meta);
        SafeTensors.Save(path, tensors, meta);
        foreach (var t in tensors.Values) t.Dispose();
    }
}

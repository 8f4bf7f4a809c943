using System.Globalization;
using System.Text.Json;
using Engine.Autograd.Nn;
using Engine.Graph;
using Engine.Serialization;
using NUnit.Framework;

namespace Engine.Tests.CliTests;

/// <summary><c>engine export --format hf</c>: a trained run's checkpoint as a Hugging Face GPT-2 directory.</summary>
[NonParallelizable]
public sealed class ExportTests : CliFixture
{
    /// <summary>The checkpoint's model built here from its file: the config from the metadata, the tensors by name.</summary>
    static Gpt CheckpointModel(string stepDir)
    {
        using var contents = SafeTensors.Load(Path.Combine(stepDir, "model.safetensors"));
        var m = contents.Metadata;
        int I(string k) => int.Parse(m["config." + k], CultureInfo.InvariantCulture);
        var config = new GptConfig(I("vocab"), I("context"), I("layers"), I("heads"), I("dmodel"),
            double.Parse(m["config.dropout"], CultureInfo.InvariantCulture), m["config.tied"] == "1");
        var model = new Gpt(config);
        model.LoadStateDict(contents.Tensors);
        model.Eval();
        return model;
    }

    [Test]
    public void ExportedDirectoryLoadsWithTheCheckpointsLogits()
    {
        var run = At("run");
        Expect(0, Train(run, 5, "--dropout", "0.1"));
        var hf = At("hf");
        var r = Expect(0, "export", "--checkpoint", run, "--format", "hf", "--out", hf);
        Assert.That(r.Out, Does.Contain("exported step 5").And.Contain(hf));
        Assert.That(Directory.GetFiles(hf).Select(Path.GetFileName).Order(StringComparer.Ordinal),
            Is.EqualTo(new[] { "config.json", "generation_config.json", "model.safetensors" }));

        using var expected = CheckpointModel(Latest(run));
        using var loaded = Gpt.FromPretrained(hf);
        Assert.That(loaded.Config, Is.EqualTo(expected.Config), "the engine's exact GELU and epsilon travel in config.json");
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(hf, "config.json"))))
        {
            Assert.That(doc.RootElement.GetProperty("activation_function").GetString(), Is.EqualTo("gelu"));
            Assert.That(doc.RootElement.GetProperty("vocab_size").GetInt32(), Is.EqualTo(expected.Config.VocabSize));
            Assert.That(doc.RootElement.GetProperty("resid_pdrop").GetDouble(), Is.EqualTo(0.1));
        }

        using var _ = GradMode.NoGrad();
        int v = expected.Config.VocabSize, t = expected.Config.ContextLength;
        var ids = Enumerable.Range(0, 2 * t).Select(i => (long)(i * 7 % v)).ToArray();
        using var x = Tensor.FromArray(ids, [2, t]);
        using var a = expected.Forward(x);
        using var b = loaded.Forward(x);
        Assert.That(b.ToArray<float>(), Is.EqualTo(a.ToArray<float>()), "logits of the exported model, bit for bit");
    }

    [Test]
    public void ExportRefusesBadOptionsAndNeverWritesIntoACheckpoint()
    {
        var run = At("run");
        Expect(0, Train(run, 2));
        var model = Path.Combine(Latest(run), "model.safetensors");
        var before = File.ReadAllBytes(model);
        ExpectOneLineError(2, ["export", "--checkpoint", run, "--format", "onnx", "--out", At("x")], "--format", "onnx");
        ExpectOneLineError(2, ["export", "--checkpoint", run], "--out");
        ExpectOneLineError(2, ["export", "--checkpoint", run, "--out", Latest(run)], "manifest.json");
        ExpectOneLineError(2, ["export", "--checkpoint", run, "--out", run], "latest");
        Assert.That(File.ReadAllBytes(model), Is.EqualTo(before));
        ExpectOneLineError(5, ["export", "--checkpoint", At("nowhere"), "--out", At("x")], "not found");
        Assert.That(Directory.Exists(At("x")), Is.False, "a refused export writes nothing");
    }
}

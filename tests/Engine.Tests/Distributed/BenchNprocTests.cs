using System.Text.Json.Nodes;
using Engine.Tests.CliTests;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests.Distributed;

/// <summary><c>engine bench --nproc 2</c> writes the data-parallel rows (their values are timings: only their form is checked).</summary>
[TestFixture, NonParallelizable]
public sealed class BenchNprocTests : CliFixture
{
    [Test]
    public void WritesCommComputeAndExposedRows()
    {
        MpiJob.RequireMpirun();
        var json = At("ddp.jsonl");
        var r = PublishedEngine.Run(["bench", "--nproc", "2", "--reps", "1", "--json", json], Timeout, MpiJob.Environment);
        Assert.That(r.ExitCode, Is.EqualTo(0), () => r.ToString());
        var rows = File.ReadAllLines(json).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.That(rows.Select(x => (string?)x["metric"]), Is.EquivalentTo(new[] { "compute_ms", "comm_ms", "step_ms", "exposed_comm_ms", "hidden_fraction" }));
        foreach (var row in rows)
        {
            Assert.That((string?)row["workload"], Is.EqualTo("ddp_gpt_train"));
            Assert.That((int)row["world_size"]!, Is.EqualTo(2));
            Assert.That((int)row["buckets"]!, Is.GreaterThan(1), "several buckets, so there is something to overlap");
            Assert.That((double)row["value"]!, Is.GreaterThanOrEqualTo(0));
        }
        Assert.That((double)rows.Single(x => (string?)x["metric"] == "comm_ms")["value"]!, Is.GreaterThan(0));
    }
}

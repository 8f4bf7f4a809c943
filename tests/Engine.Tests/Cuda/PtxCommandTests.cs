using Engine.Backends.Cuda;
using Engine.Cli;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

/// <summary>
/// <c>engine ptx</c>: its usage errors and the files it writes. In the Cuda namespace, so that CI runs it in the process
/// that runs PtxasTests: the PTX is compiled once per process (see <see cref="PtxCompiler"/>), about 3 minutes on two cores.
/// </summary>
[NonParallelizable] // redirects the console
public class PtxCommandTests
{
    static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = Console.Out; var e = Console.Error;
        var so = new StringWriter(); var se = new StringWriter();
        Console.SetOut(so); Console.SetError(se);
        try { return (EngineCli.Run(args), so.ToString(), se.ToString()); }
        finally { Console.SetOut(o); Console.SetError(e); }
    }

    [Test]
    public void OtherArch_IsAUsageError()
    {
        var (code, _, err) = Run("ptx", "--arch", "sm_80", "--out", Path.GetTempPath());
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--arch sm_80 is not supported").And.Contain("sm_90"));
    }

    [Test]
    public void MissingOut_IsAUsageError()
    {
        var (code, _, err) = Run("ptx");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--out"));
    }

    [Test]
    public void WritesOnePtxPerKernel_AndAnIndex()
    {
        string dir = Path.Combine(Path.GetTempPath(), "engine-ptx-cmd-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var (code, output, err) = Run("ptx", "--out", dir);
            Assert.That(code, Is.EqualTo(0), err);
            Assert.That(output, Does.Contain($"{KernelRegistry.All.Count} kernels"));
            var lines = File.ReadAllLines(Path.Combine(dir, "index.tsv"));
            Assert.That(lines[0], Is.EqualTo("name\tfamily\tdtype\tfile"));
            Assert.That(lines, Has.Length.EqualTo(KernelRegistry.All.Count + 1));
            foreach (var line in lines.Skip(1))
            {
                var f = line.Split('\t');
                Assert.That(f, Has.Length.EqualTo(4), line);
                var ptx = File.ReadAllText(Path.Combine(dir, f[3]));
                Assert.That(ptx, Does.Contain(".version 8.3").And.Contain(".entry"), f[0]);
            }
            Assert.That(lines, Does.Contain("Gemm<mma-128x128x32-4x8, bf16, NN>\tgemm-mma\tbfloat16\tGemm_mma-128x128x32-4x8_bf16_NN.ptx"));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}

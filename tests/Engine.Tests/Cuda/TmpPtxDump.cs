using Engine.Backends.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Cuda;

[TestFixture]
public class TmpPtxDump
{
    [Test]
    public void Dump()
    {
        Directory.CreateDirectory("/root/ptx");
        foreach (var (name, k) in PtxCompiler.Kernels())
        {
            var ptx = PtxCompiler.Compile(k);
            File.WriteAllText($"/root/ptx/{name.Replace('<', '_').Replace('>', '_')}.ptx", ptx);
            var lines = ptx.Split('\n');
            TestContext.Out.WriteLine($"{name}: {lines.Length} lines, {lines.Count(l => l.Contains("call"))} calls, {lines.Count(l => l.Contains(".local"))} local, {lines.Count(l => l.Contains(".func"))} funcs, global ld {lines.Count(l => l.Contains("ld.global"))} generic ld {lines.Count(l => l.Trim().StartsWith("ld.") && !l.Contains("ld.global") && !l.Contains("ld.param") && !l.Contains("ld.shared") && !l.Contains("ld.local"))}");
        }
    }
}

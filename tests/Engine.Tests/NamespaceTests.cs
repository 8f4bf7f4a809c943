using System.CodeDom.Compiler;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Engine.Tests.Support;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Namespaces follow folders (issue 13). The rule: a file at <c>src/&lt;project folder&gt;/A/B/F.cs</c> declares
/// <c>namespace &lt;RootNamespace&gt;.A.B;</c>, where RootNamespace is the one in that folder's .csproj. The few
/// deliberate exceptions are listed below with their reason; a stale entry fails too.
/// </summary>
public class NamespaceTests
{
    /// <summary>Single files outside their folder's namespace.</summary>
    static readonly Dictionary<string, (string Namespace, string Reason)> s_fileExceptions = new()
    {
        // A part of Tensor (the class lives in Engine) kept beside the graph types it records into.
        ["src/Tensors/Graph/Tensor.Record.cs"] = ("Engine", "partial class Tensor"),
        // Extension methods in Engine, so that loss.Backward() needs no using directive.
        ["src/Autograd/Backward.cs"] = ("Engine", "static class AutogradExtensions"),
    };

    static readonly Regex s_namespaceLine = new(@"^namespace\s+([\w.]+)\s*;", RegexOptions.Multiline);
    static readonly Regex s_blockNamespace = new(@"^\s*namespace\s+[\w.]+\s*(\{|$)", RegexOptions.Multiline);

    sealed record Project(string Folder, string RootNamespace, string AssemblyName);

    sealed record SourceFile(string Path, Project Project, string Namespace, string Text);

    static string Root => PublishedEngine.RepoRoot();

    static string Rel(string path) => System.IO.Path.GetRelativePath(Root, path).Replace('\\', '/');

    static List<Project> Projects()
    {
        var list = new List<Project>();
        foreach (var csproj in Directory.EnumerateFiles(System.IO.Path.Combine(Root, "src"), "*.csproj", SearchOption.AllDirectories))
        {
            var props = XDocument.Load(csproj).Descendants();
            string name = System.IO.Path.GetFileNameWithoutExtension(csproj);
            string? root = props.FirstOrDefault(e => e.Name.LocalName == "RootNamespace")?.Value;
            string? assembly = props.FirstOrDefault(e => e.Name.LocalName == "AssemblyName")?.Value;
            list.Add(new Project(Rel(System.IO.Path.GetDirectoryName(csproj)!), root ?? assembly ?? name, assembly ?? name));
        }
        return list;
    }

    static List<SourceFile> Sources()
    {
        var projects = Projects();
        var files = new List<SourceFile>();
        foreach (var path in Directory.EnumerateFiles(System.IO.Path.Combine(Root, "src"), "*.cs", SearchOption.AllDirectories))
        {
            string rel = Rel(path);
            if (rel.Split('/').Any(p => p is "bin" or "obj")) continue;
            var project = projects.Where(p => rel.StartsWith(p.Folder + "/", StringComparison.Ordinal))
                .MaxBy(p => p.Folder.Length);
            Assert.That(project, Is.Not.Null, $"{rel} belongs to no project under src/");
            string text = File.ReadAllText(path);
            var matches = s_namespaceLine.Matches(text);
            Assert.That(matches, Has.Count.EqualTo(1), $"{rel}: expected exactly one file-scoped 'namespace X;' line");
            Assert.That(s_blockNamespace.IsMatch(text), Is.False, $"{rel}: block-scoped namespaces are not used");
            files.Add(new SourceFile(rel, project!, matches[0].Groups[1].Value, text));
        }
        Assert.That(files, Is.Not.Empty, "no sources found under src/");
        return files;
    }

    /// <summary>The namespace the rule gives a file: the project's root plus the folders below the project folder.</summary>
    static string FolderNamespace(SourceFile f)
    {
        string dir = System.IO.Path.GetDirectoryName(f.Path)!.Replace('\\', '/');
        string below = dir.Length > f.Project.Folder.Length ? dir[(f.Project.Folder.Length + 1)..] : "";
        return below.Length == 0 ? f.Project.RootNamespace : f.Project.RootNamespace + "." + below.Replace('/', '.');
    }

    static string Expected(SourceFile f)
    {
        if (s_fileExceptions.TryGetValue(f.Path, out var file)) return file.Namespace;
        return FolderNamespace(f);
    }

    [Test]
    public void EverySourceFileDeclaresTheNamespaceOfItsFolder()
    {
        var wrong = Sources().Where(f => f.Namespace != Expected(f))
            .Select(f => $"{f.Path}: namespace {f.Namespace}, expected {Expected(f)}").ToList();
        Assert.That(wrong, Is.Empty, "namespaces must follow folders (see docs/ARCHITECTURE.md):\n" + string.Join("\n", wrong));
    }

    [Test]
    public void EveryExceptionIsStillNeededAndHoldsWhatItsReasonSays()
    {
        var sources = Sources();
        foreach (var (path, (ns, reason)) in s_fileExceptions)
        {
            var f = sources.SingleOrDefault(s => s.Path == path);
            Assert.That(f, Is.Not.Null, $"listed exception {path} no longer exists");
            Assert.That(FolderNamespace(f!), Is.Not.EqualTo(ns), $"{path} now follows its folder: drop its exception");
            Assert.That(f!.Text, Does.Contain(reason), $"{path} is listed for '{reason}', which it no longer holds");
        }
    }

    static bool IsGenerated(Type t) =>
        t.Name.StartsWith('<') || t.IsDefined(typeof(CompilerGeneratedAttribute), false) || t.IsDefined(typeof(GeneratedCodeAttribute), false);

    [Test]
    public void ShippedAssembliesHoldExactlyTheNamespacesTheirSourcesDeclare()
    {
        var sources = Sources();
        foreach (var project in sources.Select(s => s.Project).Distinct())
        {
            var assembly = Assembly.Load(new AssemblyName(project.AssemblyName));
            var declared = sources.Where(s => s.Project == project).Select(s => s.Namespace).ToHashSet();
            var types = assembly.GetTypes().Where(t => !t.IsNested && !IsGenerated(t)).ToList();
            var stray = types.Where(t => t.Namespace is null || !declared.Contains(t.Namespace))
                .Select(t => t.FullName).ToList();
            Assert.That(stray, Is.Empty, $"{project.AssemblyName} has types outside the namespaces of its source files");
            var inAssembly = types.Select(t => t.Namespace!).ToHashSet();
            Assert.That(declared.Except(inAssembly), Is.Empty, $"{project.AssemblyName}: a namespace declared in source has no type");
        }
    }

    /// <summary>
    /// A type named like a namespace of the engine (the old static class <c>Amp</c> beside namespace <c>Engine.Amp</c>)
    /// hides the namespace, or is hidden by it, depending on where the caller's code lives.
    /// </summary>
    [Test]
    public void NoTypeIsNamedLikeANamespace()
    {
        var assemblies = Sources().Select(s => s.Project.AssemblyName).Distinct().Select(n => Assembly.Load(new AssemblyName(n))).ToList();
        var types = assemblies.SelectMany(a => a.GetTypes()).Where(t => !t.IsNested && !IsGenerated(t)).ToList();
        var segments = types.Select(t => t.Namespace).OfType<string>().Where(n => n == "Engine" || n.StartsWith("Engine.", StringComparison.Ordinal))
            .SelectMany(n => n.Split('.')).ToHashSet();
        var clashes = types.Where(t => segments.Contains(t.Name)).Select(t => t.FullName).ToList();
        Assert.That(clashes, Is.Empty, "types named like a namespace segment");
    }
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using NUnit.Framework;

namespace Engine.Tests.Support;

/// <summary>What one run of the <c>engine</c> binary did.</summary>
public sealed record EngineResult(int ExitCode, string Out, string Err)
{
    /// <summary>The non-empty lines of stderr.</summary>
    public string[] ErrLines => Err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Both streams, for assertion messages.</summary>
    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{Out}\n--- stderr ---\n{Err}";
}

/// <summary>
/// The published <c>engine</c> executable, run out of process as a user runs it: never the test host's copy of the CLI
/// assembly. <c>ENGINE_CLI</c> names a published executable (.ci/run publishes one before the tests); without it the
/// first use publishes src/Cli into artifacts/engine-test, once per test process.
/// </summary>
public static partial class PublishedEngine
{
    static readonly Lazy<string> Executable = new(Locate, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Variables removed from every child's environment: they would change what the CLI does.</summary>
    static readonly string[] Scrubbed = ["COLUMNS", "LINES", "ENGINE_CUDA_EMULATION"];

    /// <summary>The path of the published executable.</summary>
    public static string Path => Executable.Value;

    /// <summary>The folder holding Engine.sln, found by walking up from the test assembly.</summary>
    public static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(System.IO.Path.Combine(d.FullName, "Engine.sln"))) return d.FullName;
        throw new InvalidOperationException($"no Engine.sln above {AppContext.BaseDirectory}; set ENGINE_CLI to a published engine executable");
    }

    static string Locate()
    {
        var name = OperatingSystem.IsWindows() ? "engine.exe" : "engine";
        if (Environment.GetEnvironmentVariable("ENGINE_CLI") is { Length: > 0 } given)
        {
            if (!File.Exists(given)) throw new InvalidOperationException($"ENGINE_CLI={given}: no such file");
            return System.IO.Path.GetFullPath(given);
        }
        var repo = RepoRoot();
        var outDir = System.IO.Path.Combine(repo, "artifacts", "engine-test");
        var psi = new ProcessStartInfo("dotnet")
        {
            ArgumentList = { "publish", System.IO.Path.Combine(repo, "src", "Cli", "Engine.Cli.csproj"), "-c", "Release", "-o", outDir, "--nologo" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(10))) { p.Kill(entireProcessTree: true); throw new TimeoutException("dotnet publish src/Cli took over 10 minutes"); }
        if (p.ExitCode != 0) throw new InvalidOperationException($"dotnet publish src/Cli failed (exit {p.ExitCode}):\n{stdout.Result}\n{stderr.Result}");
        var exe = System.IO.Path.Combine(outDir, name);
        return File.Exists(exe) ? exe : throw new InvalidOperationException($"dotnet publish wrote no {exe}");
    }

    /// <summary>
    /// Runs the engine to completion. Past <paramref name="timeout"/> the process tree is killed and the test fails
    /// with what it printed so far.
    /// </summary>
    public static EngineResult Run(string[] args, TimeSpan timeout, IDictionary<string, string>? env = null, string? workDir = null)
    {
        using var p = Start(args, env, workDir);
        return p.WaitForExit(timeout);
    }

    /// <summary>Starts the engine and returns at once, for tests that signal or kill it.</summary>
    public static EngineProcess Start(string[] args, IDictionary<string, string>? env = null, string? workDir = null) =>
        new(StartInfo(Path, args, env, workDir), string.Join(' ', args));

    /// <summary>A start description for <paramref name="file"/> with the scrubbed environment (used for wrappers such as script(1)).</summary>
    public static ProcessStartInfo StartInfo(string file, IEnumerable<string> args, IDictionary<string, string>? env = null, string? workDir = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workDir ?? Environment.CurrentDirectory,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var v in Scrubbed) psi.Environment.Remove(v);
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return psi;
    }

    /// <summary>Sends a POSIX signal (SIGINT 2, SIGTERM 15) through libc's kill.</summary>
    public static void Signal(int pid, int signal)
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("POSIX signals are not available on Windows");
        if (kill(pid, signal) != 0) Assert.Fail($"kill({pid}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int kill(int pid, int sig);
}

/// <summary>A running engine process: its output is drained as it comes, so it never blocks on a full pipe.</summary>
public sealed class EngineProcess : IDisposable
{
    public const int SigInt = 2, SigTerm = 15;
    readonly Process _p;
    readonly string _what;
    readonly Task<string> _out, _err;

    internal EngineProcess(ProcessStartInfo psi, string what)
    {
        _what = what;
        _p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {psi.FileName}");
        _p.StandardInput.Close();
        _out = _p.StandardOutput.ReadToEndAsync();
        _err = _p.StandardError.ReadToEndAsync();
    }

    public int Pid => _p.Id;

    public bool HasExited => _p.HasExited;

    /// <summary>SIGINT or SIGTERM.</summary>
    public void Signal(int signal) => PublishedEngine.Signal(_p.Id, signal);

    /// <summary>SIGKILL (on Unix), then waits for the process to be gone.</summary>
    public void Kill()
    {
        try { _p.Kill(entireProcessTree: true); }
        catch (InvalidOperationException) { }
        _p.WaitForExit();
    }

    /// <summary>Waits for the exit; past <paramref name="timeout"/> kills the tree and fails the test.</summary>
    public EngineResult WaitForExit(TimeSpan timeout)
    {
        if (!_p.WaitForExit(timeout))
        {
            Kill();
            Assert.Fail($"engine {_what} ran past {timeout.TotalSeconds:F0} s and was killed\n{Result()}");
        }
        _p.WaitForExit(); // drains the redirected streams
        return Result();
    }

    EngineResult Result()
    {
        Task.WaitAll([_out, _err], TimeSpan.FromSeconds(10));
        return new(_p.HasExited ? _p.ExitCode : -1, _out.IsCompleted ? _out.Result : "", _err.IsCompleted ? _err.Result : "");
    }

    public void Dispose()
    {
        if (!_p.HasExited) Kill();
        _p.Dispose();
    }
}

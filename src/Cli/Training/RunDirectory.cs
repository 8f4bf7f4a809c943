using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using IOPath = System.IO.Path;

namespace Engine.Cli.Training;

/// <summary>
/// A training run's directory: numbered checkpoints <c>step-000300/</c> (six digits or more), each holding the files
/// the run needs to resume and <c>manifest.json</c>; <c>latest</c> (one line: the step directory's name) names the
/// newest complete one. One process writes it at a time (<c>.lock</c>).
/// </summary>
/// <remarks>
/// Crash safety comes from ordering, not from cleanup: a checkpoint is built under a <c>.tmp-</c> name, sealed with its
/// manifest, fsynced, and only then renamed into place; <c>latest</c> changes only after that rename is durable. A
/// crash at any moment leaves the old <c>latest</c> naming a complete checkpoint, or the new one. Leftover temporaries
/// are removed by the next <see cref="OpenForWriting"/>, which holds the lock and so never deletes a live writer's.
/// </remarks>
sealed class RunDirectory : IDisposable
{
    public const string LatestFile = "latest";
    public const string LockFile = ".lock";
    /// <summary>A symbolic link to the step directory with the lowest validation loss (runs that evaluate one).</summary>
    public const string BestLink = "best";
    const string StepPrefix = "step-";
    const string TempPrefix = ".tmp-";
    // A step directory moved aside while a new save of the same step replaces it. If the process dies before the new
    // one is in place, this is the only complete copy of that step, so OpenForWriting puts it back instead of deleting.
    const string ReplacedPrefix = TempPrefix + "replaced-";

    readonly FileLock _lock;
    bool _disposed;

    RunDirectory(string path, FileLock l) { Path = path; _lock = l; }

    public string Path { get; }

    /// <summary>
    /// Opens (creating if needed) a run directory for writing: takes the lock on <c>.lock</c> (see <see cref="FileLock"/>),
    /// then removes stale temporaries: <c>.tmp-*</c> directories, <c>latest.tmp*</c> and <c>*.tmp</c> files.
    /// </summary>
    /// <exception cref="RunLockedException">Another process (or another open in this one) holds the lock.</exception>
    public static RunDirectory OpenForWriting(string dir)
    {
        var full = Full(dir);
        if (File.Exists(full)) throw new CheckpointException("Checkpoint", $"{full}: is a file; expected a run directory");
        Directory.CreateDirectory(full);
        var lockPath = IOPath.Combine(full, LockFile);
        var l = FileLock.TryAcquire(lockPath, out var pid) ?? throw new RunLockedException(
            $"{full} is in use by another engine process (PID {pid?.ToString(CultureInfo.InvariantCulture) ?? "unknown"}, holding {lockPath}); "
            + "wait for it to finish or stop it (a killed run releases the lock by itself)");
        try { RemoveStaleTemporaries(full); }
        catch { l.Dispose(); throw; }
        return new RunDirectory(full, l);
    }

    /// <summary>
    /// Writes a checkpoint atomically: <paramref name="write"/> fills a temporary directory, which gets a manifest, is
    /// fsynced and renamed to <c>step-NNNNNN</c> (replacing one of the same step), then <c>latest</c> is pointed at it.
    /// Afterwards only the newest <paramref name="keep"/> checkpoints stay, besides the one <c>latest</c> names and those
    /// named in <paramref name="protect"/> (step directory names or paths to them). Returns the step directory's path.
    /// </summary>
    public string SaveCheckpoint(long step, Action<string> write, int keep, IReadOnlyCollection<string>? protect = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        ArgumentOutOfRangeException.ThrowIfLessThan(keep, 1);
        ArgumentNullException.ThrowIfNull(write);

        var name = StepName(step);
        var temp = IOPath.Combine(Path, $"{TempPrefix}{name}-{Nonce()}");
        Directory.CreateDirectory(temp);
        try
        {
            write(temp);
            Seal(temp, step);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }

        var final = IOPath.Combine(Path, name);
        string? replaced = null;
        if (Directory.Exists(final))
        {
            replaced = IOPath.Combine(Path, $"{ReplacedPrefix}{name}-{Nonce()}");
            Directory.Move(final, replaced);
        }
        try { Directory.Move(temp, final); }
        catch
        {
            if (replaced is not null && !Directory.Exists(final)) Directory.Move(replaced, final);
            TryDelete(temp);
            throw;
        }
        Posix.FlushDirectory(Path);
        if (replaced is not null) Directory.Delete(replaced, recursive: true);

        WriteLatest(name);
        Prune(keep, name, protect);
        return final;
    }

    /// <summary>The step numbers of the complete checkpoints present, ascending.</summary>
    public IReadOnlyList<long> Steps => CompleteSteps(Path);

    /// <summary>
    /// Points <c>best</c> at the complete step directory of <paramref name="step"/>: a relative symbolic link made
    /// under a temporary name and renamed over the old one, so <c>best</c> is always the old link or the new. Pruning
    /// spares the checkpoint it names.
    /// </summary>
    public void SetBest(long step)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var name = StepName(step);
        if (!IsComplete(IOPath.Combine(Path, name))) throw new InvalidOperationException($"best: {name} is not a complete checkpoint");
        var link = IOPath.Combine(Path, BestLink);
        var temp = link + ".tmp";
        DeleteLink(temp);
        Directory.CreateSymbolicLink(temp, name);
        if (Posix.Available) Posix.Rename(temp, link);
        else
        {
            DeleteLink(link);
            Directory.Move(temp, link);
        }
        Posix.FlushDirectory(Path);
    }

    /// <summary>The step directory name <c>best</c> links to, or null when there is no such link.</summary>
    public static string? BestStepName(string runDir)
    {
        var info = new DirectoryInfo(IOPath.Combine(runDir, BestLink));
        return info.LinkTarget is { } target && TryParseStepName(IOPath.GetFileName(IOPath.TrimEndingDirectorySeparator(target)), out _)
            ? IOPath.GetFileName(IOPath.TrimEndingDirectorySeparator(target)) : null;
    }

    /// <summary>Removes a symbolic link (never what it points to); nothing when absent.</summary>
    public static void DeleteLink(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is not null) info.Delete();
    }

    /// <summary>Releases the lock.</summary>
    public void Dispose()
    {
        _disposed = true;
        _lock.Dispose();
    }

    /// <summary><c>step-</c> and the step in at least six digits: names sort by step until a million steps.</summary>
    public static string StepName(long step) => StepPrefix + step.ToString("D6", CultureInfo.InvariantCulture);

    /// <summary>
    /// Parses a step directory's name. Only the canonical spelling counts (<c>step-0000300</c> is not step 300), so
    /// that no two directories claim the same step.
    /// </summary>
    public static bool TryParseStepName(string name, out long step)
    {
        step = 0;
        if (!name.StartsWith(StepPrefix, StringComparison.Ordinal)) return false;
        var digits = name.AsSpan(StepPrefix.Length);
        if (digits.Length < 6 || !long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out step)) return false;
        return StepName(step) == name;
    }

    /// <summary>Whether <paramref name="stepDir"/> holds a manifest: the last thing a save writes.</summary>
    public static bool IsComplete(string stepDir) => File.Exists(IOPath.Combine(stepDir, Manifest.FileName));

    /// <summary>The steps of the complete checkpoints in <paramref name="runDir"/>, ascending.</summary>
    public static IReadOnlyList<long> CompleteSteps(string runDir)
    {
        var steps = new List<long>();
        foreach (var d in Directory.EnumerateDirectories(runDir))
            if (TryParseStepName(IOPath.GetFileName(d), out var s) && IsComplete(d)) steps.Add(s);
        steps.Sort();
        return steps;
    }

    static void Seal(string temp, long step)
    {
        if (File.Exists(IOPath.Combine(temp, Manifest.FileName)))
            throw new InvalidOperationException($"the checkpoint writer wrote {Manifest.FileName} itself; SaveCheckpoint writes it");
        var files = new List<ManifestEntry>();
        foreach (var f in Directory.EnumerateFiles(temp, "*", SearchOption.AllDirectories))
            files.Add(Manifest.Describe(f, IOPath.GetRelativePath(temp, f).Replace(IOPath.DirectorySeparatorChar, '/'), flushToDisk: true));
        if (files.Count == 0) throw new InvalidOperationException($"the checkpoint writer wrote no files into {temp}");
        foreach (var d in Directory.EnumerateDirectories(temp, "*", SearchOption.AllDirectories)) Posix.FlushDirectory(d);
        new Manifest(step, DateTime.UtcNow, files).Write(IOPath.Combine(temp, Manifest.FileName));
        Posix.FlushDirectory(temp);
    }

    void WriteLatest(string name)
    {
        var temp = IOPath.Combine(Path, LatestFile + ".tmp");
        using (var fs = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            fs.Write(Encoding.UTF8.GetBytes(name + "\n"));
            fs.Flush(flushToDisk: true);
        }
        File.Move(temp, IOPath.Combine(Path, LatestFile), overwrite: true);
        Posix.FlushDirectory(Path);
    }

    void Prune(int keep, string latest, IReadOnlyCollection<string>? protect)
    {
        var spared = new HashSet<string>(StringComparer.Ordinal) { latest };
        if (BestStepName(Path) is { } best) spared.Add(best);
        foreach (var p in protect ?? []) spared.Add(IOPath.GetFileName(IOPath.TrimEndingDirectorySeparator(p)));
        foreach (var step in CompleteSteps(Path).Reverse().Skip(keep))
        {
            var name = StepName(step);
            if (spared.Contains(name)) continue;
            // Renamed out of the step namespace first: a delete cut short must not leave a directory that still has its
            // manifest (and so looks complete) but lacks a file.
            var doomed = IOPath.Combine(Path, $"{TempPrefix}pruned-{name}-{Nonce()}");
            Directory.Move(IOPath.Combine(Path, name), doomed);
            Directory.Delete(doomed, recursive: true);
        }
    }

    static void RemoveStaleTemporaries(string dir)
    {
        foreach (var d in Directory.EnumerateDirectories(dir, TempPrefix + "*"))
        {
            var name = IOPath.GetFileName(d);
            if (name.StartsWith(ReplacedPrefix, StringComparison.Ordinal))
            {
                var rest = name[ReplacedPrefix.Length..];
                int dash = rest.LastIndexOf('-');
                var stepName = dash > 0 ? rest[..dash] : "";
                var target = IOPath.Combine(dir, stepName);
                if (TryParseStepName(stepName, out _) && IsComplete(d) && !Directory.Exists(target))
                {
                    Directory.Move(d, target);
                    continue;
                }
            }
            Directory.Delete(d, recursive: true);
        }
        foreach (var f in Directory.EnumerateFiles(dir))
        {
            var name = IOPath.GetFileName(f);
            if (name.StartsWith(LatestFile + ".tmp", StringComparison.Ordinal) || name.EndsWith(".tmp", StringComparison.Ordinal)) File.Delete(f);
        }
        DeleteLink(IOPath.Combine(dir, BestLink + ".tmp"));
        Posix.FlushDirectory(dir);
    }

    static void TryDelete(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    static string Nonce() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));

    internal static string Full(string path) => IOPath.TrimEndingDirectorySeparator(IOPath.GetFullPath(path));
}

/// <summary>Finds the checkpoint a user named, and checks it against its manifest.</summary>
static class Checkpoints
{
    const string Expected = "expected a run directory (with 'latest' and step-NNNNNN/ checkpoints), a step directory "
        + "(with manifest.json) or a checkpoint directory (with model.safetensors and optimizer.safetensors)";

    /// <summary>
    /// Resolves what a user passed to --checkpoint/--resume: a step directory (itself); a run directory (the step
    /// directory <c>latest</c> names, or, when <c>latest</c> is missing or names a missing or incomplete one, the
    /// newest complete one, said in <see cref="ResolvedCheckpoint.Note"/>); or the old flat layout, model.safetensors
    /// and optimizer.safetensors with no manifest (itself, <c>Legacy</c>).
    /// </summary>
    public static ResolvedCheckpoint Resolve(string path)
    {
        var full = RunDirectory.Full(path);
        if (File.Exists(full)) throw Fail($"{path}: is a file; {Expected}");
        if (!Directory.Exists(full)) throw Fail($"{path}: not found; {Expected}");

        if (RunDirectory.IsComplete(full))
        {
            var name = IOPath.GetFileName(full);
            long? step = RunDirectory.TryParseStepName(name, out var s) ? s : Manifest.TryReadStep(IOPath.Combine(full, Manifest.FileName));
            return new ResolvedCheckpoint(IOPath.GetDirectoryName(full) ?? full, full, step, false, null);
        }

        var latestPath = IOPath.Combine(full, RunDirectory.LatestFile);
        bool hasLatest = File.Exists(latestPath);
        if (hasLatest || Directory.EnumerateDirectories(full).Any(d => RunDirectory.TryParseStepName(IOPath.GetFileName(d), out _)))
        {
            string? note;
            if (hasLatest)
            {
                var named = File.ReadAllText(latestPath).Trim();
                if (RunDirectory.TryParseStepName(named, out var step) && RunDirectory.IsComplete(IOPath.Combine(full, named)))
                    return new ResolvedCheckpoint(full, IOPath.Combine(full, named), step, false, null);
                note = RunDirectory.TryParseStepName(named, out _)
                    ? $"{latestPath} names {named}, which is missing or incomplete (no {Manifest.FileName})"
                    : $"{latestPath} does not name a step directory ('{named}')";
            }
            else note = $"{latestPath} is missing";
            var steps = RunDirectory.CompleteSteps(full);
            if (steps.Count == 0) throw Fail($"{path}: run directory holds no complete checkpoint (no step-NNNNNN/ with {Manifest.FileName}); {note}");
            var newest = RunDirectory.StepName(steps[^1]);
            return new ResolvedCheckpoint(full, IOPath.Combine(full, newest), steps[^1], false, $"{note}; using {newest}, the newest complete checkpoint");
        }

        if (File.Exists(IOPath.Combine(full, Checkpoint.ModelFile)) && File.Exists(IOPath.Combine(full, Checkpoint.OptimizerFile)))
            return new ResolvedCheckpoint(full, full, null, true, null);
        throw Fail($"{path}: holds no checkpoint; {Expected}");
    }

    /// <summary>
    /// Checks a step directory against its manifest: each listed file exists with the listed size and SHA-256.
    /// Any failure is one <see cref="CheckpointException"/> line naming the file ("step-000300/model.safetensors:
    /// SHA-256 mismatch ..."). Legacy directories have no manifest and are not checked.
    /// </summary>
    public static void Verify(ResolvedCheckpoint c)
    {
        if (c.Legacy) return;
        var dirName = IOPath.GetFileName(c.StepDir);
        string Shown(string name) => IOPath.Combine(dirName, name);
        var manifestPath = IOPath.Combine(c.StepDir, Manifest.FileName);
        if (!File.Exists(manifestPath)) throw Fail($"{Shown(Manifest.FileName)}: missing (not a complete checkpoint)");
        var m = Manifest.Read(manifestPath, Shown(Manifest.FileName));
        if (RunDirectory.TryParseStepName(dirName, out var named) && named != m.Step)
            throw Fail($"{Shown(Manifest.FileName)}: records step {m.Step}, but the directory is {dirName}");
        foreach (var e in m.Files)
        {
            var file = IOPath.Combine([c.StepDir, .. e.Name.Split('/')]);
            if (!File.Exists(file)) throw Fail($"{Shown(e.Name)}: missing (listed in {Manifest.FileName})");
            long size = new FileInfo(file).Length;
            if (size != e.Size) throw Fail($"{Shown(e.Name)}: {size} bytes, {Manifest.FileName} says {e.Size} (file truncated or modified)");
            if (Manifest.Describe(file, e.Name, flushToDisk: false).Sha256 != e.Sha256)
                throw Fail($"{Shown(e.Name)}: SHA-256 mismatch (file corrupt or modified)");
        }
    }

    static CheckpointException Fail(string message) => new("Checkpoint", message.ReplaceLineEndings(" "));
}

/// <summary>
/// A checkpoint found by <see cref="Checkpoints.Resolve"/>: the run directory it belongs to (for a legacy one, itself),
/// the directory holding its files, its step (null for legacy), and a note when <c>latest</c> could not be followed.
/// </summary>
sealed record ResolvedCheckpoint(string RunDir, string StepDir, long? Step, bool Legacy, string? Note);

/// <summary>Another process is writing the run directory; the message names it and the holder's PID. Exit code 6.</summary>
sealed class RunLockedException(string message) : Exception(message);

using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Engine.Autograd.Nn;
using Engine.Distributed;

namespace Engine.Cli.Training;

/// <summary>
/// The ranks of a data-parallel <c>engine train</c>. Run by a launcher (<c>mpirun</c>, <c>srun</c>; see
/// <see cref="LaunchEnvironment"/>) every rank builds the same model and reads the same global batch of
/// <c>--batch</c> sequences, keeps its contiguous share of <c>batch / world</c> rows, and
/// <see cref="DistributedDataParallel"/> averages the gradients, so the run trains as one process with the global
/// batch would. Rank 0 alone writes the run directory and prints; the loss it logs is the average over ranks (the
/// global batch's loss). A world of one (no launcher) is the ordinary single-process run, with no MPI at all.
/// </summary>
sealed class DataParallel : IDisposable
{
    readonly ProcessGroup? _group;      // MPI: control (stop flag, loss), and the gradients of CPU runs
    ProcessGroup? _gradients;           // NCCL for CUDA runs, made on first use
    readonly LaunchEnvironment _env;

    DataParallel(ProcessGroup? group, LaunchEnvironment env) { _group = group; _env = env; }

    /// <summary>One process: nothing is shared.</summary>
    public static readonly DataParallel Single = new(null, new LaunchEnvironment(0, 1, 0, "none"));

    public int Rank => _group?.Rank ?? 0;
    public int WorldSize => _group?.WorldSize ?? 1;
    public bool IsDistributed => _group is not null;

    /// <summary>Rank 0: the one that writes checkpoints, metrics and progress.</summary>
    public bool IsWriter => Rank == 0;

    /// <summary>Joins the job this process was launched into, or <see cref="Single"/> when there is none (or it has one rank).</summary>
    public static DataParallel Join(double? timeoutSeconds)
    {
        if (timeoutSeconds is double t && !(t > 0 && double.IsFinite(t))) throw new UsageException($"--dist-timeout must be a positive number of seconds, got {t.ToString(CultureInfo.InvariantCulture)}");
        var env = LaunchEnvironment.FromEnvironment();
        if (env.WorldSize == 1) return Single;
        var timeout = timeoutSeconds is double s ? TimeSpan.FromSeconds(s) : (TimeSpan?)null;
        return new DataParallel(ProcessGroup.Create(DistributedBackend.Mpi, timeout), env);
    }

    /// <summary>This rank's rows of the global batch: the global batch must divide across the ranks.</summary>
    public int LocalBatch(int globalBatch)
    {
        if (globalBatch % WorldSize != 0)
            throw new UsageException($"--batch {globalBatch} (the global batch) does not divide across {WorldSize} ranks: give a multiple of {WorldSize}");
        return globalBatch / WorldSize;
    }

    /// <summary>The device of this rank: CUDA runs put rank r on the machine's GPU of its local rank.</summary>
    public Device RankDevice(Device device) => IsDistributed && device.Type == DeviceType.Cuda ? Device.Cuda(_env.LocalRank) : device;

    /// <summary>This rank's contiguous share of a batch (rows [rank·local, (rank+1)·local)).</summary>
    public (Tensor X, Tensor Y) Shard((Tensor X, Tensor Y) batch)
    {
        var (x, y) = batch;
        if (!IsDistributed) return (x, y);
        int local = LocalBatch((int)x.Layout.Shape[0]);
        return (x.Narrow(0, Rank * local, local), y.Narrow(0, Rank * local, local));
    }

    /// <summary>Wraps the model for gradient averaging (null in a single process): NCCL for CUDA models, MPI for CPU ones.</summary>
    public DistributedDataParallel? Wrap(Module model, Device device)
    {
        if (!IsDistributed) return null;
        var group = device.Type == DeviceType.Cuda ? _gradients ??= ProcessGroup.Create(DistributedBackend.Nccl, _group!.Timeout) : _group!;
        return new DistributedDataParallel(model, group);
    }

    /// <summary>The average of a per-rank value over the ranks (the global batch's loss from the local ones).</summary>
    public double Average(double local)
    {
        if (!IsDistributed) return local;
        using var t = Tensor.FromArray(new[] { local });
        _group!.AllReduce(t, ReduceOp.Average).Wait();
        return t.Item();
    }

    /// <summary>
    /// Whether any rank was asked to stop (SIGINT/SIGTERM reach the ranks at slightly different times): every rank
    /// gets the same answer at the same step, so they stop together and rank 0 saves that step.
    /// </summary>
    public string? StopRequested(string? local)
    {
        if (!IsDistributed) return local;
        using var t = Tensor.FromArray(new[] { local switch { "SIGINT" => 2L, "SIGTERM" => 1L, _ => 0L } });
        _group!.AllReduce(t, ReduceOp.Max).Wait();
        return t.Item<long>() switch { 2 => "SIGINT", 1 => "SIGTERM", _ => null };
    }

    public void Dispose()
    {
        _gradients?.Dispose();
        _group?.Dispose();
    }
}

/// <summary>
/// <c>engine train --nproc N</c> (and <c>engine bench --nproc N</c>): runs <c>mpirun -np N</c> on the same engine binary with the same arguments but
/// <c>--nproc</c>, and exits with its code. mpirun runs in a session of its own (<c>setsid</c>), so a Ctrl-C reaches it
/// once, through this process: mpirun passes it on to the ranks as SIGTERM, they stop at the same step, rank 0 saves,
/// and this command exits 130 as a single process would. Each rank finds its place through
/// <see cref="DataParallel.Join"/>.
/// </summary>
static class NprocLauncher
{
    /// <summary>
    /// Null when this process should do the work itself (no --nproc, --nproc 1, or already a rank), else the exit code
    /// of the mpirun job it ran. <paramref name="globalBatch"/>, when known, must divide across the ranks.
    /// </summary>
    public static int? RunIfAsked(int? nproc, int? globalBatch)
    {
        if (nproc is not int n) return null;
        if (n < 1) throw new UsageException($"--nproc must be at least 1, got {n}");
        var env = LaunchEnvironment.FromEnvironment();
        if (env.IsLaunched)
        {
            if (env.WorldSize != n) throw new UsageException($"--nproc {n}, but {env.Source} started this process as one of {env.WorldSize} ranks: drop --nproc under a launcher");
            return null;
        }
        if (n == 1) return null;
        // Refuse a split that cannot work before starting N processes.
        if (globalBatch is int global && global % n != 0)
            throw new UsageException($"--batch {global} (the global batch) does not divide across --nproc {n} ranks: give a multiple of {n}");
        var mpirun = FindOnPath("ENGINE_MPIRUN", "mpirun") ?? throw new UsageException($"--nproc {n} runs the ranks through Open MPI's mpirun, which is not on PATH (nor ENGINE_MPIRUN): install openmpi-bin, or start engine train under your own launcher (mpirun, srun)");
        var psi = new ProcessStartInfo(FindOnPath(null, "setsid") ?? mpirun) { UseShellExecute = false };
        if (psi.FileName != mpirun) psi.ArgumentList.Add(mpirun);
        foreach (var a in new[] { "-np", n.ToString(CultureInfo.InvariantCulture),
            // The ranks are this machine's: more than its cores is allowed, and no rank is pinned to one core.
            "--oversubscribe", "--bind-to", "none" }) psi.ArgumentList.Add(a);
        // The kernel threads are shared out among the ranks unless the user chose (results do not depend on them).
        if (Environment.GetEnvironmentVariable("ENGINE_NUM_THREADS") is not { Length: > 0 })
            psi.Environment["ENGINE_NUM_THREADS"] = Math.Max(1, Environment.ProcessorCount / n).ToString(CultureInfo.InvariantCulture);
        var self = Environment.ProcessPath ?? throw new UsageException("--nproc: cannot tell which executable is running");
        psi.ArgumentList.Add(self);
        // Under `dotnet engine.dll` the host is the process; the command line's first entry is then the assembly.
        var all = Environment.GetCommandLineArgs();
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(all[0]);
        foreach (var a in WithoutNproc(all.Skip(1))) psi.ArgumentList.Add(a);
        Console.Out.Flush();
        using var job = Process.Start(psi) ?? throw new IOException($"could not start {psi.FileName} for --nproc");
        int interrupts = 0;
        void Forward(PosixSignalContext ctx)
        {
            ctx.Cancel = true;
            Interlocked.Increment(ref interrupts);
            try { Kill(job.Id, ctx.Signal == PosixSignal.SIGINT ? 2 : 15); } catch (InvalidOperationException) { }
        }
        using (PosixSignalRegistration.Create(PosixSignal.SIGINT, Forward))
        using (PosixSignalRegistration.Create(PosixSignal.SIGTERM, Forward))
            job.WaitForExit();
        // mpirun reports a job it stopped on a signal as a failure (1); the ranks have saved and exited 130.
        return interrupts > 0 && job.ExitCode is not (0 or DistributedException.ExitCode) ? ExitCodes.Interrupted : job.ExitCode;
    }

    /// <summary>The arguments without <c>--nproc N</c> / <c>--nproc=N</c>.</summary>
    internal static IEnumerable<string> WithoutNproc(IEnumerable<string> args)
    {
        bool skip = false;
        foreach (var a in args)
        {
            if (skip) { skip = false; continue; }
            if (a == "--nproc") { skip = true; continue; }
            if (a.StartsWith("--nproc=", StringComparison.Ordinal)) continue;
            yield return a;
        }
    }

    static string? FindOnPath(string? variable, string name)
    {
        if (variable is not null && Environment.GetEnvironmentVariable(variable) is { Length: > 0 } given) return File.Exists(given) ? given : null;
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            if (File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        return null;
    }

    static void Kill(int pid, int signal)
    {
        if (kill(pid, signal) != 0) throw new InvalidOperationException($"kill({pid}, {signal}) failed");
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    static extern int kill(int pid, int sig);
}

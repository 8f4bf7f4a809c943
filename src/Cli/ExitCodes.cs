namespace Engine.Cli;

/// <summary>The exit codes of the <c>engine</c> command: one table, the same in the README.</summary>
static class ExitCodes
{
    /// <summary>Done.</summary>
    public const int Ok = 0;
    /// <summary>An unexpected error (a bug, an I/O failure); the message says what.</summary>
    public const int Error = 1;
    /// <summary>A bad command line or configuration: unknown option, bad value, conflicting options.</summary>
    public const int Usage = 2;
    /// <summary>The requested device (or its backend) is not available on this machine.</summary>
    public const int DeviceUnavailable = 3;
    /// <summary>Training diverged: too many consecutive non-finite losses or skipped steps.</summary>
    public const int Diverged = 4;
    /// <summary>An invalid checkpoint or data file (corrupt, truncated, missing a key, non-finite values, binary text).</summary>
    public const int InvalidFile = 5;
    /// <summary>The run directory is locked by another live process.</summary>
    public const int Locked = 6;
    /// <summary>A distributed rank failed: another rank died or hung past --dist-timeout, or MPI/NCCL reported an error.</summary>
    public const int RankFailed = 10;
    /// <summary>Interrupted (SIGINT/SIGTERM) after saving a checkpoint.</summary>
    public const int Interrupted = 130;
}

/// <summary>A bad command line or configuration: printed as one line, exit code 2.</summary>
sealed class UsageException(string message) : Exception(message);

/// <summary>Training stopped because it diverged: exit code 4.</summary>
sealed class TrainingDivergedException(string message) : Exception(message);

namespace Engine.Distributed;

/// <summary>
/// A collective that failed or did not finish in time: a rank died or hung, the communication library reported an
/// error, or the ranks disagree. The message names this rank and the rank(s) at fault as far as they are known.
/// A program should exit with <see cref="ExitCode"/> (10) on it, as the <c>engine</c> command does.
/// </summary>
public class DistributedException(string op, string message, Exception? inner = null) : EngineException(op, message, inner)
{
    /// <summary>The process exit code documented for a distributed failure: 10.</summary>
    public const int ExitCode = 10;

    /// <summary>The ranks this failure is attributed to (empty when unknown).</summary>
    public IReadOnlyList<int> Ranks { get; init; } = [];
}

/// <summary>A wait that ran past the process group's timeout (the watchdog).</summary>
public sealed class DistributedTimeoutException(string op, string message) : DistributedException(op, message);

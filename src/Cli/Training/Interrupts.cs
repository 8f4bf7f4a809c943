using System.Runtime.InteropServices;

namespace Engine.Cli.Training;

/// <summary>
/// SIGINT (Ctrl-C) and SIGTERM during training: the first one asks the loop to save a checkpoint at the end of the
/// current step and exit with 130; a second one exits at once, without saving (the last checkpoint stays intact,
/// since checkpoints are written to a temporary directory and renamed).
/// </summary>
sealed class Interrupts : IDisposable
{
    readonly PosixSignalRegistration[] _registrations;
    int _count;

    public Interrupts()
    {
        _registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, On), PosixSignalRegistration.Create(PosixSignal.SIGTERM, On)];
    }

    /// <summary>The signal that asked to stop, or null.</summary>
    public string? Requested { get; private set; }

    void On(PosixSignalContext ctx)
    {
        var name = ctx.Signal == PosixSignal.SIGINT ? "SIGINT" : "SIGTERM";
        if (Interlocked.Increment(ref _count) > 1)
        {
            Console.Error.WriteLine($"\nengine: {name} again: exiting without saving (the last checkpoint is intact)");
            Environment.Exit(ExitCodes.Interrupted);
        }
        ctx.Cancel = true;
        Requested = name;
        Console.Error.WriteLine($"\nengine: {name}: saving a checkpoint after this step, then exiting (send it again to exit at once)");
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}

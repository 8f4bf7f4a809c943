using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace Engine;

/// <summary>
/// Opt-in diagnostics. <see cref="LeakWarnings"/> starts from the environment variable <c>ENGINE_LEAK_WARN=1</c>
/// (read once, at first use) and can be switched from code at any time.
/// </summary>
public static class EngineDiagnostics
{
    static volatile bool s_leakWarnings = Environment.GetEnvironmentVariable("ENGINE_LEAK_WARN") == "1";

    /// <summary>
    /// When true, every tensor created from then on records the stack trace of its creation (slow: for debugging),
    /// and a tensor that reaches its finalizer without being disposed (nor freed by its scope) is reported as a
    /// warning naming its shape, dtype, device and creation stack: through <see cref="EngineLog"/> (category
    /// <c>Engine.Leaks</c>), or to standard error when no logger factory is set; the user asked for the warnings, so
    /// they are not dropped the way the library's other messages are by default. Tensors created while it was off are
    /// never reported.
    /// </summary>
    public static bool LeakWarnings
    {
        get => s_leakWarnings;
        set => s_leakWarnings = value;
    }

    /// <summary>Leak reports made so far (a test or a tool can watch it grow).</summary>
    public static long LeaksReported => Interlocked.Read(ref s_leaksReported);

    static long s_leaksReported;

    /// <summary>The creation stack to keep for a new tensor, or null when leak warnings are off.</summary>
    internal static StackTrace? CaptureCreation() => s_leakWarnings ? new StackTrace(2, false) : null;

    /// <summary>Reports a tensor its finalizer freed. Runs on the finalizer thread: it must not throw.</summary>
    internal static void ReportLeak(string what, StackTrace creation)
    {
        Interlocked.Increment(ref s_leaksReported);
        try
        {
            var message = $"Engine: a tensor {what} was freed by the finalizer: it was neither disposed nor freed by a dispose scope. Created at:{Environment.NewLine}{creation}";
            if (EngineLog.IsConfigured)
                EngineLog.For("Engine.Leaks").Log(LogLevel.Warning, new EventId(1, "TensorLeaked"), message, null, static (s, _) => s);
            else
                Console.Error.WriteLine(message);
        }
        catch (Exception)
        {
            // A logger that fails must not take the finalizer thread (and the process) down with it.
        }
    }
}

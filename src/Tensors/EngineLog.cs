using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Engine;

/// <summary>
/// The library's logging hook. Silent by default; set <see cref="Factory"/> to route the engine's messages (the AMP
/// scaler's policy decisions, backend selection) into an application's logging.
/// </summary>
public static class EngineLog
{
    static ILoggerFactory s_factory = NullLoggerFactory.Instance;

    /// <summary>The factory loggers are created from.</summary>
    public static ILoggerFactory Factory
    {
        get => s_factory;
        set => s_factory = value ?? NullLoggerFactory.Instance;
    }

    /// <summary>True when an application set <see cref="Factory"/> (the library is otherwise silent).</summary>
    internal static bool IsConfigured => s_factory is not NullLoggerFactory;

    /// <summary>A logger for a category (the engine uses its type names).</summary>
    public static ILogger For(string category) => s_factory.CreateLogger(category);
}

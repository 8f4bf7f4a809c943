using Microsoft.Extensions.Logging;

namespace Engine.Tests.Support;

/// <summary>An <see cref="ILoggerFactory"/> that keeps every entry, for tests of what the engine reports through EngineLog.</summary>
sealed class CaptureLogs : ILoggerFactory, ILoggerProvider
{
    public readonly List<(string Category, LogLevel Level, string Message)> Entries = [];
    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);
    public void AddProvider(ILoggerProvider provider) { }
    public void Dispose() { }

    sealed class Logger(CaptureLogs owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (owner.Entries) owner.Entries.Add((category, logLevel, formatter(state, exception)));
        }
    }
}

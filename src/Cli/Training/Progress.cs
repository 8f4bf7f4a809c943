using System.Diagnostics;
using System.Globalization;
using Spectre.Console;

namespace Engine.Cli.Training;

/// <summary>
/// Training progress. On a terminal, a Spectre.Console progress bar that updates in place and whose line is cut to
/// the terminal's width (<c>COLUMNS</c>, when set, overrides what the terminal reports), so it never wraps or scrolls;
/// with the output redirected, a plain line every few seconds (and for the first and last step). The ETA leaves out
/// the first step of the process, which pays for JIT compilation and would inflate the estimate several times over.
/// </summary>
sealed class Progress
{
    readonly long _total;
    readonly bool _quiet;
    readonly bool _live;
    readonly int _width;
    readonly Stopwatch _clock = Stopwatch.StartNew();
    ProgressTask? _task;
    ProgressContext? _ctx;
    double _lastPrint = -1e9;
    long _firstStep = -1;
    double _firstStepDone;

    public Progress(long total, bool quiet)
    {
        _total = total;
        _quiet = quiet;
        _live = !quiet && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        _width = TerminalWidth();
        if (_live) AnsiConsole.Profile.Width = _width;
    }

    /// <summary>The width lines must fit: <c>COLUMNS</c> when it is a positive integer, else the terminal's.</summary>
    public static int TerminalWidth() =>
        int.TryParse(Environment.GetEnvironmentVariable("COLUMNS"), NumberStyles.None, CultureInfo.InvariantCulture, out int c) && c > 0
            ? c : Math.Max(20, AnsiConsole.Profile.Width);

    int BarWidth => Math.Clamp(_width / 5, 8, 30);

    /// <summary>Runs the training loop inside the display (a live bar on a terminal).</summary>
    public void Run(long start, Action body)
    {
        if (!_live) { body(); return; }
        AnsiConsole.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new ProgressBarColumn { Width = BarWidth }, new PercentageColumn(), new TaskDescriptionColumn { Alignment = Justify.Left })
            .Start(ctx =>
            {
                _ctx = ctx;
                _task = ctx.AddTask("starting", maxValue: _total);
                _task.Value = start;
                body();
                _task.StopTask();
            });
    }

    public void Report(long step, double loss, double tokensPerSecond, string extra)
    {
        double now = _clock.Elapsed.TotalSeconds;
        if (_firstStep < 0) { _firstStep = step; _firstStepDone = now; }
        bool last = step == _total;
        if (_quiet && !last) return;
        if (_live && now - _lastPrint < 0.1 && !last) return;
        if (!_live && now - _lastPrint < 5 && !last && step != _firstStep) return;
        _lastPrint = now;
        string eta = step > _firstStep ? Duration((now - _firstStepDone) / (step - _firstStep) * (_total - step)) : "…";
        var fields = new List<string>
        {
            $"step {step}/{_total}",
            string.Create(CultureInfo.InvariantCulture, $"loss {loss:F4}"),
            $"ETA {eta}",
            string.Create(CultureInfo.InvariantCulture, $"{tokensPerSecond:N0} tok/s"),
            extra,
        };
        if (_live)
        {
            _task!.Description = Markup.Escape(Fit(fields, _width - BarWidth - 8));
            _task.Value = step;
            _ctx!.Refresh();
        }
        else Console.Out.WriteLine(string.Join("  ", fields.Where(f => f.Length > 0)));
    }

    /// <summary>As many of the fields (most important first) as fit in <paramref name="width"/> characters.</summary>
    static string Fit(List<string> fields, int width)
    {
        var line = "";
        foreach (var f in fields)
        {
            if (f.Length == 0) continue;
            var next = line.Length == 0 ? f : line + "  " + f;
            if (next.Length > width) break;
            line = next;
        }
        return line.Length > 0 ? line : fields[0][..Math.Min(fields[0].Length, Math.Max(1, width))];
    }

    static string Duration(double seconds) =>
        seconds >= 3600 ? string.Create(CultureInfo.InvariantCulture, $"{seconds / 3600:F1}h")
        : seconds >= 60 ? $"{(int)seconds / 60}m{(int)seconds % 60:D2}s"
        : string.Create(CultureInfo.InvariantCulture, $"{seconds:F0}s");
}

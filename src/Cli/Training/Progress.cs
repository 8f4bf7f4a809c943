using System.Diagnostics;
using System.Globalization;

namespace Engine.Cli.Training;

/// <summary>A live progress bar on a terminal; plain lines every few seconds when the output is redirected.</summary>
sealed class Progress(TextWriter w, long total, bool quiet)
{
    readonly Stopwatch _clock = Stopwatch.StartNew();
    readonly bool _tty = !Console.IsOutputRedirected && ReferenceEquals(w, Console.Out);
    double _lastPrint = -1e9;
    long _first = -1;

    public void Report(long step, double loss, double tokensPerSecond, string extra)
    {
        if (_first < 0) _first = step - 1;
        double now = _clock.Elapsed.TotalSeconds;
        bool last = step == total;
        if (quiet && !last) return;
        if (!_tty && now - _lastPrint < 5 && !last && step - _first > 1) return;
        if (_tty && now - _lastPrint < 0.1 && !last) return;
        _lastPrint = now;
        double perStep = now / Math.Max(1, step - _first);
        double eta = perStep * (total - step);
        string line = string.Create(CultureInfo.InvariantCulture,
            $"step {step}/{total}  loss {loss:F4}  {tokensPerSecond:N0} tok/s  {extra}  ETA {Format(eta)}");
        if (_tty)
        {
            int width = 24, filled = (int)(width * step / Math.Max(1, total));
            w.Write("\r[" + new string('#', filled) + new string('.', width - filled) + "] " + line + "   ");
        }
        else w.WriteLine(line);
    }

    public void Done()
    {
        if (_tty) w.WriteLine();
    }

    static string Format(double seconds) => seconds >= 3600 ? $"{seconds / 3600:F1}h" : seconds >= 60 ? $"{(int)seconds / 60}m{(int)seconds % 60:D2}s" : $"{seconds:F0}s";
}

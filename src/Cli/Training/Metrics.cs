using System.Globalization;
using System.Text;

namespace Engine.Cli.Training;

/// <summary>
/// <c>metrics.csv</c> of a run directory: one line per step, appended and flushed as training goes, so a killed or
/// interrupted run keeps every line it printed and never leaves half a line. A resumed run first drops the lines after
/// its checkpoint's step (the steps it will redo) and then appends, so the file, and the <c>loss.svg</c> drawn from it,
/// cover the whole run.
/// </summary>
sealed class Metrics : IDisposable
{
    public const string FileName = "metrics.csv";
    public const string PlotName = "loss.svg";
    // val_loss is empty on steps without a validation evaluation (and for runs that have none).
    const string Header = "step,loss,lr,scale,tokens_per_s,batch,val_loss";
    const int Columns = 7;
    readonly string _path;
    readonly StreamWriter _csv;

    /// <summary>Opens the run's metrics for appending after step <paramref name="resumeStep"/> (0 for a new run).</summary>
    public Metrics(string runDir, long resumeStep)
    {
        _path = Path.Combine(runDir, FileName);
        var keep = new List<string>();
        if (resumeStep > 0 && File.Exists(_path))
        {
            foreach (var line in File.ReadLines(_path).Skip(1))
                if (StepOf(line) is long s && s <= resumeStep) keep.Add(Pad(line));
        }
        // Rewrite through a temporary file so a crash here cannot lose the kept lines.
        var tmp = _path + ".tmp";
        File.WriteAllLines(tmp, [Header, .. keep]);
        File.Move(tmp, _path, overwrite: true);
        _csv = new StreamWriter(new FileStream(_path, FileMode.Append, FileAccess.Write, FileShare.Read), new UTF8Encoding(false));
    }

    /// <summary>A line of an older file, without the later columns, given them empty.</summary>
    static string Pad(string line)
    {
        int have = line.Count(c => c == ',') + 1;
        return have < Columns ? line + new string(',', Columns - have) : line;
    }

    static long? StepOf(string line)
    {
        int comma = line.IndexOf(',');
        return comma > 0 && long.TryParse(line.AsSpan(0, comma), NumberStyles.None, CultureInfo.InvariantCulture, out var s) ? s : null;
    }

    public void Add(long step, double loss, double lr, double scale, double tokensPerSecond, int batch, double? valLoss = null)
    {
        // One write call per line, then a flush: the OS gets whole lines only.
        var val = valLoss is double v ? v.ToString("R", CultureInfo.InvariantCulture) : "";
        _csv.Write(string.Create(CultureInfo.InvariantCulture, $"{step},{loss:R},{lr:R},{scale:R},{tokensPerSecond:F1},{batch},{val}\n"));
        _csv.Flush();
    }

    public void Dispose() => _csv.Dispose();

    /// <summary>
    /// Draws the whole run's loss curve from <c>metrics.csv</c> into <c>loss.svg</c> (atomically replaced), with the
    /// validation loss beside it when the run has one.
    /// </summary>
    public static void WritePlot(string runDir)
    {
        var points = new List<(long Step, double Loss)>();
        var val = new List<(long Step, double Loss)>();
        var path = Path.Combine(runDir, FileName);
        if (File.Exists(path))
            foreach (var line in File.ReadLines(path).Skip(1))
            {
                var parts = line.Split(',');
                if (parts.Length >= 2 && StepOf(line) is long s && double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var l) && double.IsFinite(l))
                    points.Add((s, l));
                if (parts.Length >= 7 && StepOf(line) is long vs && double.TryParse(parts[6], NumberStyles.Float, CultureInfo.InvariantCulture, out var vl) && double.IsFinite(vl))
                    val.Add((vs, vl));
            }
        var tmp = Path.Combine(runDir, PlotName + ".tmp");
        File.WriteAllText(tmp, Svg(points, val));
        File.Move(tmp, Path.Combine(runDir, PlotName), overwrite: true);
    }

    /// <summary>A self-contained SVG line chart of loss (and validation loss, when any) against step.</summary>
    static string Svg(List<(long Step, double Loss)> pts, List<(long Step, double Loss)> val)
    {
        const int W = 640, H = 360, L = 60, R = 20, T = 20, B = 40;
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">");
        sb.AppendLine(CultureInfo.InvariantCulture, $"<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
        if (pts.Count > 0)
        {
            double x0 = pts.Min(p => p.Step), x1 = Math.Max(pts.Max(p => p.Step), x0 + 1);
            double y0 = 0, y1 = Math.Max(pts.Concat(val).Max(p => p.Loss), 1e-9) * 1.05;
            string Px(double s) => (L + (s - x0) / (x1 - x0) * (W - L - R)).ToString("F1", CultureInfo.InvariantCulture);
            string Py(double v) => (T + (1 - (v - y0) / (y1 - y0)) * (H - T - B)).ToString("F1", CultureInfo.InvariantCulture);
            sb.AppendLine(CultureInfo.InvariantCulture, $"<line x1=\"{L}\" y1=\"{H - B}\" x2=\"{W - R}\" y2=\"{H - B}\" stroke=\"black\"/>");
            sb.AppendLine(CultureInfo.InvariantCulture, $"<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{H - B}\" stroke=\"black\"/>");
            for (int i = 0; i <= 4; i++)
            {
                double v = y0 + (y1 - y0) * i / 4;
                sb.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{L - 6}\" y=\"{Py(v)}\" text-anchor=\"end\" dominant-baseline=\"middle\">{v:G3}</text>");
                double s = x0 + (x1 - x0) * i / 4;
                sb.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{Px(s)}\" y=\"{H - B + 16}\" text-anchor=\"middle\">{s:F0}</text>");
            }
            sb.Append("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
            int stride = Math.Max(1, pts.Count / 2000);
            for (int i = 0; i < pts.Count; i += stride) sb.Append(Px(pts[i].Step)).Append(',').Append(Py(pts[i].Loss)).Append(' ');
            sb.AppendLine("\"/>");
            if (val.Count > 0)
            {
                sb.Append("<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"2\" points=\"");
                foreach (var p in val) sb.Append(Px(p.Step)).Append(',').Append(Py(p.Loss)).Append(' ');
                sb.AppendLine("\"/>");
                foreach (var p in val) sb.AppendLine(CultureInfo.InvariantCulture, $"<circle cx=\"{Px(p.Step)}\" cy=\"{Py(p.Loss)}\" r=\"2.5\" fill=\"#ff7f0e\"/>");
                sb.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{W - R - 4}\" y=\"{T + 12}\" text-anchor=\"end\" fill=\"#1f77b4\">train loss</text>");
                sb.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{W - R - 4}\" y=\"{T + 28}\" text-anchor=\"end\" fill=\"#ff7f0e\">val loss</text>");
            }
            sb.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{W / 2}\" y=\"{H - 6}\" text-anchor=\"middle\">step</text>");
            sb.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"14\" y=\"{H / 2}\" transform=\"rotate(-90 14 {H / 2})\" text-anchor=\"middle\">loss</text>");
        }
        sb.AppendLine("</svg>");
        return sb.ToString();
    }
}

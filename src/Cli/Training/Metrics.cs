using System.Globalization;
using System.Text;

namespace Engine.Cli.Training;

/// <summary>Per-step metrics: <c>metrics.csv</c> as training goes, and a loss curve <c>loss.svg</c> at the end.</summary>
sealed class Metrics
{
    readonly List<(long Step, double Loss)> _points = [];
    readonly StreamWriter? _csv;

    public Metrics(string? dir, bool append)
    {
        if (dir is null) return;
        var path = Path.Combine(dir, "metrics.csv");
        bool exists = append && File.Exists(path);
        _csv = new StreamWriter(path, exists) { AutoFlush = false };
        if (!exists) _csv.WriteLine("step,loss,lr,scale,tokens_per_s");
    }

    public void Add(long step, double loss, double lr, double scale, double tokensPerSecond)
    {
        _points.Add((step, loss));
        _csv?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{step},{loss:R},{lr:R},{scale:R},{tokensPerSecond:F1}"));
    }

    public void Flush() => _csv?.Flush();

    public void Close() => _csv?.Dispose();

    /// <summary>A self-contained SVG line chart of loss against step.</summary>
    public void WriteSvg(string path)
    {
        const int W = 640, H = 360, L = 60, R = 20, T = 20, B = 40;
        var pts = _points.Where(p => double.IsFinite(p.Loss)).ToList();
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">");
        sb.AppendLine(CultureInfo.InvariantCulture, $"<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
        if (pts.Count > 0)
        {
            double x0 = pts.Min(p => p.Step), x1 = Math.Max(pts.Max(p => p.Step), x0 + 1);
            double y0 = 0, y1 = Math.Max(pts.Max(p => p.Loss), 1e-9) * 1.05;
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
            sb.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"{W / 2}\" y=\"{H - 6}\" text-anchor=\"middle\">step</text>");
            sb.AppendLine(CultureInfo.InvariantCulture, $"<text x=\"14\" y=\"{H / 2}\" transform=\"rotate(-90 14 {H / 2})\" text-anchor=\"middle\">loss</text>");
        }
        sb.AppendLine("</svg>");
        File.WriteAllText(path, sb.ToString());
    }
}

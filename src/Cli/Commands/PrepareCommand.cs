using System.Buffers.Binary;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using Engine.Cli.Text;
using Engine.Cli.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary>The options of <c>engine prepare</c>.</summary>
sealed class PrepareSettings : CommandSettings
{
    [CommandOption("--text <FILE>"), Description("A UTF-8 text file to tokenize; repeat for several (joined by the end-of-text token). Required.")]
    public string[]? Text { get; set; }

    [CommandOption("--tokenizer <NAME>"), Description("gpt2 (default), cl100k, o200k or char (the files' distinct characters, found in a first pass).")]
    public string? Tokenizer { get; set; }

    [CommandOption("--out <DIR>"), Description("Directory for train.bin, val.bin and meta.json. Required.")]
    public string? Out { get; set; }

    [CommandOption("--val-fraction <F>"), Description("The last fraction of the tokens that goes to val.bin, in [0, 0.5] (default 0.1).")]
    public double? ValFraction { get; set; }

    [CommandOption("--force"), Description("Overwrite a data set already in --out.")]
    public bool Force { get; set; }

    [CommandOption("--quiet"), Description("Print no progress, only the summary.")]
    public bool Quiet { get; set; }
}

/// <summary>
/// <c>engine prepare</c>: tokenizes text files into a <see cref="TokenDataset"/> in bounded memory, whatever their
/// size: each file is read in pieces cut where the ids cannot change (<see cref="TextChunks"/>), and each piece's ids
/// are written as they come. All tokens go to train.bin first; the last <c>--val-fraction</c> of them is then moved to
/// val.bin (copied in blocks, train.bin truncated), so the split is exact in tokens. meta.json is written last.
/// </summary>
sealed class PrepareCommand : Command<PrepareSettings>
{
    public override int Execute(CommandContext context, PrepareSettings s, CancellationToken cancellationToken)
    {
        if (s.Text is not { Length: > 0 }) throw new UsageException("prepare needs --text FILE (repeat for several files)");
        if (s.Out is null) throw new UsageException("prepare needs --out DIR");
        double valFraction = s.ValFraction ?? 0.1;
        if (!(valFraction is >= 0 and <= 0.5)) throw new UsageException($"--val-fraction must be in [0, 0.5], got {valFraction}");
        var name = s.Tokenizer ?? "gpt2";
        TextTokenizer.CheckName(name);
        foreach (var t in s.Text)
            if (!File.Exists(t)) throw new UsageException($"--text {t}: file not found");
        var outDir = Path.GetFullPath(s.Out);
        if (File.Exists(outDir)) throw new UsageException($"--out {s.Out}: is a file; expected a directory");
        if (Directory.Exists(outDir) && new[] { TokenDataset.MetaFile, TokenDataset.TrainFile, TokenDataset.ValFile }.Any(f => File.Exists(Path.Combine(outDir, f))) && !s.Force)
            throw new UsageException($"{s.Out} already holds a data set: choose another --out, or overwrite it with --force");
        Directory.CreateDirectory(outDir);
        foreach (var f in new[] { TokenDataset.MetaFile, TokenDataset.TrainFile, TokenDataset.ValFile }) File.Delete(Path.Combine(outDir, f));

        long totalBytes = s.Text.Sum(t => new FileInfo(t).Length);
        var clock = Stopwatch.StartNew();
        var tokenizer = name == "char" ? TextTokenizer.Char(CharVocabulary(s.Text)) : TextTokenizer.Bpe(name);
        int width = TokenDataset.BytesFor(tokenizer.VocabSize);
        var all = Path.Combine(outDir, TokenDataset.TrainFile + ".tmp");
        long tokens = 0;
        int forced = 0;
        var progress = new ByteProgress(totalBytes, s.Quiet);
        using (var output = new FileStream(all, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            var buffer = new byte[1 << 16];
            int used = 0;
            void Put(int id)
            {
                if (used + width > buffer.Length) { output.Write(buffer, 0, used); used = 0; }
                if (width == 2) BinaryPrimitives.WriteUInt16LittleEndian(buffer.AsSpan(used), checked((ushort)id));
                else BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(used), (uint)id);
                used += width;
                tokens++;
            }
            progress.Run(() =>
            {
                long before = 0;
                for (int i = 0; i < s.Text.Length; i++)
                {
                    if (i > 0 && tokenizer.EndOfText is int eot) Put(eot);
                    var chunks = new TextChunks(s.Text[i]);
                    foreach (var piece in chunks.Read())
                    {
                        foreach (var id in tokenizer.Encode(piece)) Put(id);
                        progress.Report(before + chunks.BytesRead, tokens);
                    }
                    forced += chunks.ForcedCuts;
                    before += new FileInfo(s.Text[i]).Length;
                }
                progress.Report(totalBytes, tokens);
            });
            output.Write(buffer, 0, used);
            output.Flush(flushToDisk: true);
        }

        long val = (long)Math.Round(tokens * valFraction);
        if (valFraction > 0 && val == 0 && tokens >= 2) val = 1;
        long train = tokens - val;
        if (train < 2) throw new UsageException($"the text holds {tokens} tokens: too few for a data set (train.bin needs at least 2)");
        var valPath = Path.Combine(outDir, TokenDataset.ValFile);
        using (var src = new FileStream(all, FileMode.Open, FileAccess.ReadWrite, FileShare.None, 1 << 16))
        {
            using (var dst = new FileStream(valPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                src.Position = train * width;
                src.CopyTo(dst, 1 << 20);
                dst.Flush(flushToDisk: true);
            }
            src.SetLength(train * width);
            src.Flush(flushToDisk: true);
        }
        File.Move(all, Path.Combine(outDir, TokenDataset.TrainFile), overwrite: true);
        TokenDataset.WriteMeta(outDir, tokenizer, train, val, valFraction, s.Text.Length, forced);
        Posix.FlushDirectory(outDir);

        var inv = CultureInfo.InvariantCulture;
        Console.Out.WriteLine(string.Create(inv, $"engine prepare: {s.Text.Length} file(s), {totalBytes:N0} bytes → {tokens:N0} {tokenizer.Name} tokens ({(double)totalBytes / Math.Max(1, tokens):F2} bytes/token) in {clock.Elapsed.TotalSeconds:F1} s"));
        Console.Out.WriteLine(string.Create(inv, $"wrote {Path.Combine(outDir, TokenDataset.TrainFile)} ({train:N0} tokens), {valPath} ({val:N0} tokens, the last {valFraction:P0}), {Path.Combine(outDir, TokenDataset.MetaFile)}; {TokenDataset.DTypeName(width)}, vocab {tokenizer.VocabSize}"));
        if (forced > 0)
            Console.Error.WriteLine($"engine: note: {forced} piece(s) had no line or word boundary within {new TextChunks("").MaxChars:N0} characters and were cut there; ids at those cuts may differ from encoding the text whole");
        return ExitCodes.Ok;
    }

    /// <summary>The distinct characters of the files (a streaming first pass), in ordinal order.</summary>
    static string CharVocabulary(string[] files)
    {
        var seen = new bool[char.MaxValue + 1];
        foreach (var f in files)
            foreach (var piece in new TextChunks(f).Read())
                foreach (var c in piece) seen[c] = true;
        var chars = Enumerable.Range(0, seen.Length).Where(i => seen[i]).Select(i => (char)i).ToArray();
        if (chars.Length == 0) throw new UsageException("the text is empty");
        return new string(chars);
    }

    /// <summary>
    /// Progress through the input bytes, in <see cref="Progress"/>'s manner: a live bar on a terminal, a plain line every
    /// few seconds when the output is redirected, nothing with --quiet.
    /// </summary>
    sealed class ByteProgress(long total, bool quiet)
    {
        readonly bool _live = !quiet && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        readonly Stopwatch _clock = Stopwatch.StartNew();
        ProgressTask? _task;
        ProgressContext? _ctx;
        double _lastPrint = -1e9;
        bool _done;

        public void Run(Action body)
        {
            if (!_live) { body(); return; }
            AnsiConsole.Profile.Width = Training.Progress.TerminalWidth();
            AnsiConsole.Progress().AutoClear(false).HideCompleted(false)
                .Columns(new ProgressBarColumn { Width = Math.Clamp(Training.Progress.TerminalWidth() / 5, 8, 30) }, new PercentageColumn(), new TaskDescriptionColumn { Alignment = Justify.Left })
                .Start(ctx =>
                {
                    _ctx = ctx;
                    _task = ctx.AddTask("reading", maxValue: Math.Max(1, total));
                    body();
                    _task.StopTask();
                });
        }

        public void Report(long bytes, long tokens)
        {
            double now = _clock.Elapsed.TotalSeconds;
            bool last = bytes >= total;
            if (quiet || _done) return;
            _done = last;
            if (now - _lastPrint < (_live ? 0.1 : 5) && !last) return;
            _lastPrint = now;
            double rate = bytes / Math.Max(now, 1e-9);
            string eta = rate > 0 ? $"{(total - bytes) / rate:F0}s" : "…";
            var line = string.Create(CultureInfo.InvariantCulture, $"{bytes / 1e6:F1}/{total / 1e6:F1} MB  {tokens:N0} tokens  {rate / 1e6:F1} MB/s  ETA {eta}");
            if (_live)
            {
                _task!.Description = Markup.Escape(line);
                _task.Value = bytes;
                _ctx!.Refresh();
            }
            else Console.Out.WriteLine(line);
        }
    }
}

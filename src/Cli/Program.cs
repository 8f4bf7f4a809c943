using System.Text;
using Engine.Cli.Commands;
using Engine.Cli.Training;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Engine.Cli;

/// <summary>
/// <c>engine &lt;command&gt; [options]</c>, parsed by Spectre.Console.Cli: <c>engine --help</c> lists the commands and
/// <c>engine COMMAND --help</c> every option with its default. Every failure is one line on stderr and an exit code
/// from <see cref="ExitCodes"/>.
/// </summary>
public static class EngineCli
{
    /// <summary>Runs one command; returns the process exit code.</summary>
    public static int Run(string[] args)
    {
        var app = new CommandApp();
        app.Configure(c =>
        {
            c.SetApplicationName("engine");
            c.SetApplicationVersion(typeof(Tensor).Assembly.GetName().Version?.ToString(3) ?? "0");
            c.PropagateExceptions();
            c.Settings.StrictParsing = true;
            c.Settings.Console = AnsiConsole.Console;
            c.AddCommand<TrainCommand>("train")
                .WithDescription("Train a GPT on a built-in task (sorting digits, the default), a text file (--text FILE, --tokenizer) or a prepared token data set (--data DIR), checkpointing to a run directory.")
                .WithExample("train")
                .WithExample("train", "--steps", "2000", "--save-every", "200", "--out", "runs/long")
                .WithExample("train", "--resume", "runs/long", "--steps", "4000")
                .WithExample("train", "--text", "book.txt", "--precision", "bf16")
                .WithExample("train", "--data", "data/book", "--eval-every", "100")
                .WithExample("train", "--init-from", "models/gpt2", "--data", "data/book", "--lr", "3e-5");
            c.AddCommand<PrepareCommand>("prepare")
                .WithDescription("Tokenize text files (gpt2, cl100k, o200k or char) into train.bin/val.bin and meta.json for train --data, in bounded memory.")
                .WithExample("prepare", "--text", "book.txt", "--tokenizer", "gpt2", "--out", "data/book");
            c.AddCommand<SampleCommand>("sample")
                .WithDescription("Generate from a checkpoint (a run directory or one of its step directories) or a Hugging Face GPT-2 directory (--model DIR, the same option).")
                .WithExample("sample", "--checkpoint", "runs/sort", "--prompt", "2 1 0 2 1 0")
                .WithExample("sample", "--model", "models/gpt2", "--prompt", "Hello", "--temperature", "0");
            c.AddCommand<EvalCommand>("eval")
                .WithDescription("Held-out accuracy of a checkpoint on its task.")
                .WithExample("eval", "--checkpoint", "runs/sort");
            c.AddCommand<ExportCommand>("export")
                .WithDescription("Write a checkpoint's model as a Hugging Face GPT-2 directory (config.json, model.safetensors; vocab.json and merges.txt for a gpt2-tokenized model) that transformers loads.")
                .WithExample("export", "--checkpoint", "runs/sort", "--format", "hf", "--out", "out/sort-hf");
            c.AddCommand<BenchCommand>("bench")
                .WithDescription("Time the shared workloads and print a table of medians (--json FILE: one JSON object per line).")
                .WithExample("bench", "--only", "gemm_f32_1024,op_overhead", "--json", "bench.jsonl");
            c.AddCommand<CheckCommand>("check")
                .WithDescription("CUDA-vs-CPU parity sweep (--emulate: on ILGPU's CPU accelerator, no GPU needed).")
                .WithExample("check", "--emulate", "--size", "64");
            c.AddCommand<InfoCommand>("info").WithDescription("Devices, CPU SIMD features and versions.");
            c.AddCommand<PtxCommand>("ptx")
                .WithDescription("Write the PTX of every CUDA kernel (sm_90, no GPU needed) with an index; --sass: assemble each with ptxas and print registers, spills, stack, shared memory and occupancy.")
                .WithExample("ptx", "--arch", "sm_90", "--out", "out/ptx", "--sass");
        });
        if (args.Length == 0)
        {
            app.Run(["--help"]);
            return ExitCodes.Usage;
        }
        try
        {
            return app.Run(args);
        }
        catch (Exception e)
        {
            var (code, message) = e is CommandAppException ? (ExitCodes.Usage, ExplainParseError(e, args)) : Classify(e);
            Console.Out.Flush();
            Console.Error.WriteLine("engine: " + OneLine(message));
            return code;
        }
    }

    /// <summary>The exit code and message of a failure, per the table in <see cref="ExitCodes"/>.</summary>
    static (int Code, string Message) Classify(Exception e) => e switch
    {
        UsageException => (ExitCodes.Usage, e.Message),
        CommandAppException => (ExitCodes.Usage, e.Message + (e.InnerException is { } i && !e.Message.Contains(i.Message, StringComparison.Ordinal) ? ": " + i.Message : "")),
        DeviceUnavailableException => (ExitCodes.DeviceUnavailable, "device unavailable: " + e.Message),
        TrainingDivergedException => (ExitCodes.Diverged, e.Message),
        CheckpointException or InvalidDataException => (ExitCodes.InvalidFile, e.Message),
        RunLockedException => (ExitCodes.Locked, e.Message),
        // A rank that died or hung, or a communication library's error (the message names the ranks).
        Engine.Distributed.DistributedException => (ExitCodes.RankFailed, e.Message),
        // Configuration that the engine itself rejects (a model shape, an optimizer value) is a usage error.
        ArgumentException => (ExitCodes.Usage, e.Message),
        EngineException or IOException or UnauthorizedAccessException => (ExitCodes.Error, e.Message),
        _ => (ExitCodes.Error, $"unexpected error: {e.GetType().Name}: {e.Message}"),
    };

    /// <summary>
    /// Spectre.Console.Cli reports a value it cannot convert by the CLR type name ("Failed to convert 'abc' to
    /// Nullable`1"); say instead which option wanted what.
    /// </summary>
    static string ExplainParseError(Exception e, string[] args)
    {
        var m = System.Text.RegularExpressions.Regex.Match(e.Message, "^Failed to convert '(.*)' to");
        if (!m.Success) return e.Message + (e.InnerException is { } i && !e.Message.Contains(i.Message, StringComparison.Ordinal) ? ": " + i.Message : "");
        var value = m.Groups[1].Value;
        int at = Array.IndexOf(args, value);
        string? option = at > 0 && args[at - 1].StartsWith("--", StringComparison.Ordinal) ? args[at - 1] : null;
        if (at < 0 && args.Length > 0 && args[^1].StartsWith("--", StringComparison.Ordinal)) return $"option {args[^1]} needs a value";
        string inner = e.InnerException?.Message ?? "";
        string kind = inner.Contains("Double", StringComparison.Ordinal) ? "a number"
            : inner.Contains("Int", StringComparison.Ordinal) ? "an integer" : "another kind of value";
        return option is null ? $"'{value}' is not valid here: expected {kind}" : $"option {option} expects {kind}, got '{value}'";
    }

    static string OneLine(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (var ch in s.Trim()) sb.Append(ch is '\n' or '\r' ? ' ' : ch);
        return sb.ToString();
    }

    static int Main(string[] args) => Run(args);
}

using Engine.Cli.Commands;

namespace Engine.Cli;

/// <summary>
/// <c>engine &lt;command&gt; [options]</c>: one clear line and a non-zero exit for bad arguments (2), unavailable devices
/// (3) and other failures such as a missing or corrupt file (1).
/// </summary>
public static class EngineCli
{
    const string Usage = """
usage: engine <command> [options]
  train    train a GPT on a built-in task (sorting) or a text file (--text FILE); see README.md
  sample   generate from a checkpoint: --checkpoint DIR [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K]
  eval     accuracy of a checkpoint on its task: --checkpoint DIR
  bench    throughput workloads: [--device cpu|cuda] [--only NAME,...] [--json FILE] [--reps N]
  check    CUDA-vs-CPU parity sweep: [--device cuda:N] [--emulate] [--size N]
  info     devices, CPU SIMD features, versions
""";

    /// <summary>Runs one command; returns the process exit code.</summary>
    public static int Run(string[] args)
    {
if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
{
    Console.WriteLine(Usage);
    return args.Length == 0 ? 2 : 0;
}
try
{
    var rest = args[1..];
    return args[0] switch
    {
        "train" => TrainCommand.Run(rest),
        "sample" => SampleCommand.Run(rest),
        "eval" => EvalCommand.Run(rest),
        "bench" => BenchCommand.Run(rest),
        "check" => CheckCommand.Run(rest),
        "info" => InfoCommand.Run(rest),
        _ => throw new UsageException($"unknown command '{args[0]}' (expected train, sample, eval, bench, check or info)"),
    };
}
catch (UsageException e)
{
    Console.Error.WriteLine($"engine: {e.Message}");
    return 2;
}
catch (DeviceUnavailableException e)
{
    Console.Error.WriteLine($"engine: device unavailable: {e.Message}");
    return 3;
}
catch (Exception e) when (e is EngineException or IOException or UnauthorizedAccessException or FormatException)
{
    Console.Error.WriteLine($"engine: {e.Message}");
    return 1;
}
    }

    static int Main(string[] args) => Run(args);
}

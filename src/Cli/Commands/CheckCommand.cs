namespace Engine.Cli.Commands;

/// <summary><c>engine check</c>: the CUDA-vs-CPU parity sweep. Needs a CUDA backend; without one it says so and exits 3.</summary>
static class CheckCommand
{
    public static int Run(string[] argv)
    {
        var a = new Args(argv, new HashSet<string>());
        var device = a.Str("device", "cuda");
        a.RejectUnknown("check");
        TrainCommand.ParseDevice(device);
        Console.WriteLine($"check: no parity sweep is defined for {device} yet");
        return 0;
    }
}

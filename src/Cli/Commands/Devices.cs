namespace Engine.Cli.Commands;

/// <summary>The <c>--device</c> option of every command.</summary>
static class Devices
{
    public const string Help = "cpu, cuda or cuda:N (cuda needs an NVIDIA GPU; set ENGINE_CUDA_EMULATION=1 to run the CUDA kernels on ILGPU's CPU accelerator)";

    /// <summary>Parses a device name and checks that a backend serves it (else exit 3 with the reason).</summary>
    public static Device Parse(string? s)
    {
        Device d;
        try { d = Device.Parse(s ?? "cpu"); }
        catch (FormatException e) { throw new UsageException($"--device: {e.Message}"); }
        Engine.Backends.BackendRegistry.Get(d);
        return d;
    }
}

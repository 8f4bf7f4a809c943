using System.ComponentModel;
using System.Globalization;
using Spectre.Console.Cli;

namespace Engine.Cli.Commands;

/// <summary>
/// <c>engine check [--device cuda|cuda:N] [--emulate] [--size N]</c>: the CUDA-vs-CPU parity sweep. Each op runs on
/// the same random inputs on the CPU reference and on the device, for float32, float16 and bfloat16, and the table
/// gives the largest difference relative to the values' scale against the dtype's tolerance. --emulate runs the CUDA
/// kernels on ILGPU's CPU accelerator (no GPU needed). Exits 1 when any row fails.
/// </summary>
sealed class CheckCommand : Command<CheckCommand.Settings>
{
    /// <summary>The options of <c>engine check</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--device <DEVICE>"), Description("The CUDA device to compare with the CPU: cuda (default) or cuda:N.")]
        public string? Device { get; set; }

        [CommandOption("--emulate"), Description("Run the CUDA kernels on ILGPU's CPU accelerator (no GPU needed; slow, so keep --size small).")]
        public bool Emulate { get; set; }

        [CommandOption("--size <N>"), Description("Inputs are [[N, N]] (default 256).")]
        public int? Size { get; set; }
    }

    static readonly (string Name, Func<Tensor, Tensor, Tensor> Op)[] Ops =
    [
        ("add", (a, b) => a + b),
        ("mul", (a, b) => a * b),
        ("exp", (a, _) => a.Exp()),
        ("gelu", (a, _) => a.Gelu()),
        ("sum(-1)", (a, _) => a.Sum(-1)),
        ("max(-1)", (a, _) => a.Max(-1).Values),
        ("softmax(-1)", (a, _) => a.Softmax(-1)),
        ("layer_norm", (a, _) => a.LayerNorm([a.Size(-1)])),
        ("matmul", (a, b) => a.MatMul(b.T)),
        ("transpose+add", (a, b) => a.T + b.T),
        ("cast f32", (a, _) => a.To(DType.Float32)),
    ];

    public override int Execute(CommandContext context, Settings s, CancellationToken cancellationToken)
    {
        bool emulate = s.Emulate;
        int size = s.Size ?? 256;
        if (size is < 1 or > 8192) throw new UsageException($"--size must be in [1, 8192], got {size}");
        if (emulate) Engine.Backends.Cuda.CudaBackend.EnableEmulation();
        var device = Devices.Parse(s.Device ?? "cuda");
        if (device.Type == DeviceType.Cpu) throw new UsageException("check compares a CUDA device with the CPU: give --device cuda[:N]");
        Console.WriteLine($"parity sweep: cpu vs {device}{(emulate ? " (ILGPU CPU accelerator)" : "")}, inputs [{size}, {size}]");
        Console.WriteLine($"{"op",-14} {"dtype",-9} {"max |diff|/scale",18} {"tolerance",10}  result");
        int failures = 0;
        var gen = new Generator(2026);
        foreach (var dtype in new[] { DType.Float32, DType.Float16, DType.BFloat16 })
        {
            double tol = dtype switch { DType.Float32 => 1e-5, DType.Float16 => 2e-3, _ => 2e-2 };
            using var a32 = Tensor.Randn([size, size], DType.Float32, null, gen);
            using var b32 = Tensor.Randn([size, size], DType.Float32, null, gen);
            using var ac = a32.To(dtype);
            using var bc = b32.To(dtype);
            using var ad = ac.To(device);
            using var bd = bc.To(device);
            foreach (var (name, op) in Ops)
            {
                using var scope = Tensor.NewScope();
                var want = op(ac, bc).ToArray<double>();
                var got = op(ad, bd).ToArray<double>();
                double scale = want.Where(double.IsFinite).Select(Math.Abs).DefaultIfEmpty(1).Max();
                double worst = 0;
                bool nanMismatch = false;
                for (int i = 0; i < want.Length; i++)
                {
                    if (double.IsNaN(want[i]) || double.IsNaN(got[i])) { nanMismatch |= double.IsNaN(want[i]) != double.IsNaN(got[i]); continue; }
                    worst = Math.Max(worst, Math.Abs(want[i] - got[i]) / Math.Max(scale, 1e-30));
                }
                // Reductions and products sum many terms: allow the tolerance to grow with the row length.
                double allowed = tol * (name is "matmul" or "sum(-1)" or "layer_norm" or "softmax(-1)" ? Math.Sqrt(size) : 1);
                bool ok = !nanMismatch && worst <= allowed;
                if (!ok) failures++;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name,-14} {dtype.Name(),-9} {worst,18:E2} {allowed,10:E1}  {(ok ? "ok" : nanMismatch ? "FAIL (NaN)" : "FAIL")}"));
            }
        }
        Console.WriteLine(failures == 0 ? "all ops agree" : $"{failures} op(s) disagree");
        return failures == 0 ? 0 : 1;
    }
}

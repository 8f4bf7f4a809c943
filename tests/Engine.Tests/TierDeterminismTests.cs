using System.Runtime.InteropServices;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Bit-reproducibility within one process: the .NET runtime replaces tier-0 (or ReadyToRun) code by re-jitted tier-1
/// code after a method has run about 30 times and a background delay has passed, and any kernel whose bits depend on
/// how it was compiled (vector width, fused or unfused multiply-add) changes its results at that moment. Each case
/// runs the same forward pass 300 times, in rounds of 100 separated by pauses that let the tiering thread work, and
/// requires every result to be bit-identical to the first.
/// </summary>
[TestFixture]
[NonParallelizable]
public class TierDeterminismTests
{
    const int Rounds = 3, PerRound = 100;

    static readonly (string Name, Func<Tensor, Tensor, Tensor> Op)[] Ops =
    [
        ("Softmax", (x, t) => x.Softmax(-1)),
        ("LogSoftmax", (x, t) => x.LogSoftmax(-1)),
        ("CrossEntropy", (x, t) => x.CrossEntropy(t, Reduction.None)),
        ("Exp", (x, t) => x.Exp()),
        ("Log", (x, t) => { using var a = x.Abs(); return a.Log(); }),
        ("Tanh", (x, t) => x.Tanh()),
        ("Sigmoid", (x, t) => x.Sigmoid()),
        ("Sin", (x, t) => x.Sin()),
        ("Cos", (x, t) => x.Cos()),
        ("LogSumExp", (x, t) => x.LogSumExp(-1)),
    ];

    static byte[] Bits(Tensor y) => y.DType == DType.Float64
        ? MemoryMarshal.AsBytes(y.ToArray<double>().AsSpan()).ToArray()
        : MemoryMarshal.AsBytes(y.ToArray<float>().AsSpan()).ToArray();

    // Every op, dtype and row length runs PerRound times per round, and the pause after each round lets the
    // background tiering thread install its re-jitted code before the next; all cases share the pauses.
    [Test]
    public void RepeatedForwardPassesAreBitIdentical()
    {
        var inputs = new List<(string Name, Tensor X, Tensor T, Func<Tensor, Tensor, Tensor> Op)>();
        var first = new Dictionary<string, byte[]>();
        var failures = new List<string>();
        try
        {
            // Rows of several lengths, so that full vectors, remainders and rows shorter than a vector all occur.
            foreach (int cols in new[] { 3, 10, 37, 1000 })
            {
                const int rows = 8;
                var rng = new Random(12345 + cols);
                var xs = new double[rows * cols];
                // Every fifth logit far out: TensorPrimitives.Exp (float64) takes a different path for vectors with
                // a lane beyond its fast range, and that path's tier-0 code rounds differently from its tier-1 code.
                for (int i = 0; i < xs.Length; i++) xs[i] = (rng.NextDouble() * 60 - 30) * (i % 5 == 0 ? 25 : 1);
                var ts = new long[rows];
                for (int r = 0; r < rows; r++) ts[r] = rng.Next(cols);
                foreach (var dt in new[] { DType.Float64, DType.Float32 })
                {
                    var x = dt == DType.Float64 ? Tensor.FromArray(xs, [rows, cols]) : Tensor.FromArray(xs.Select(v => (float)v).ToArray(), [rows, cols]);
                    var t = Tensor.FromArray(ts, [rows]);
                    foreach (var (name, op) in Ops) inputs.Add(($"{name} {dt} cols {cols}", x, t, op));
                }
            }
            for (int round = 0; round < Rounds; round++)
            {
                foreach (var (name, x, t, op) in inputs)
                    for (int i = 0; i < PerRound; i++)
                    {
                        using var y = op(x, t);
                        var bits = Bits(y);
                        if (!first.TryGetValue(name, out var f)) first[name] = bits;
                        else if (!bits.AsSpan().SequenceEqual(f))
                        {
                            failures.Add($"{name}: changed bits at call {round * PerRound + i}");
                            first[name] = bits; // report each later change too, not every call after it
                        }
                    }
                Thread.Sleep(300);
            }
        }
        finally
        {
            foreach (var x in inputs.Select(c => c.X).Distinct()) x.Dispose();
            foreach (var t in inputs.Select(c => c.T).Distinct()) t.Dispose();
        }
        Assert.That(failures, Is.Empty);
    }
}

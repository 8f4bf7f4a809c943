using System.Globalization;

namespace Engine.Cli.Training;

/// <summary>Everything <c>engine train</c> was asked to do; saved in checkpoints so <c>--resume</c> continues the same run.</summary>
sealed record TrainOptions
{
    public string Device { get; init; } = "cpu";
    public string Precision { get; init; } = "fp32";
    public string? Text { get; init; }
    public int Steps { get; init; } = 300;
    public int Batch { get; init; } = 64;
    public double Lr { get; init; } = 3e-3;
    public int Layers { get; init; } = 2;
    public int Heads { get; init; } = 4;
    public int DModel { get; init; } = 64;
    public int Context { get; init; } = 64;
    public double Dropout { get; init; }
    public ulong Seed { get; init; } = 1337;
    public int SortLength { get; init; } = 6;
    public int SortDigits { get; init; } = 3;
    public int EvalSamples { get; init; } = 500;
    public double WeightDecay { get; init; } = 0.01;
    public double ClipNorm { get; init; } = 1.0;

    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public Dictionary<string, string> ToMetadata() => new()
    {
        ["device"] = Device, ["precision"] = Precision, ["steps"] = Steps.ToString(Inv), ["batch"] = Batch.ToString(Inv),
        ["lr"] = Lr.ToString("R", Inv), ["layers"] = Layers.ToString(Inv), ["heads"] = Heads.ToString(Inv),
        ["dmodel"] = DModel.ToString(Inv), ["context"] = Context.ToString(Inv), ["dropout"] = Dropout.ToString("R", Inv),
        ["seed"] = Seed.ToString(Inv), ["sort_length"] = SortLength.ToString(Inv), ["sort_digits"] = SortDigits.ToString(Inv),
        ["weight_decay"] = WeightDecay.ToString("R", Inv), ["clip_norm"] = ClipNorm.ToString("R", Inv),
        ["text"] = Text ?? "",
    };

    public static TrainOptions FromMetadata(IReadOnlyDictionary<string, string> m)
    {
        string G(string k) => m.TryGetValue("train." + k, out var v) ? v : throw new EngineException("Checkpoint", $"optimizer metadata lacks 'train.{k}'");
        return new TrainOptions
        {
            Device = G("device"), Precision = G("precision"), Steps = int.Parse(G("steps"), Inv), Batch = int.Parse(G("batch"), Inv),
            Lr = double.Parse(G("lr"), Inv), Layers = int.Parse(G("layers"), Inv), Heads = int.Parse(G("heads"), Inv),
            DModel = int.Parse(G("dmodel"), Inv), Context = int.Parse(G("context"), Inv), Dropout = double.Parse(G("dropout"), Inv),
            Seed = ulong.Parse(G("seed"), Inv), SortLength = int.Parse(G("sort_length"), Inv), SortDigits = int.Parse(G("sort_digits"), Inv),
            WeightDecay = double.Parse(G("weight_decay"), Inv), ClipNorm = double.Parse(G("clip_norm"), Inv),
            Text = G("text") is { Length: > 0 } t ? t : null,
        };
    }
}

using System.Globalization;
using System.Text.Json;

namespace Engine.Cli.Training;

/// <summary>
/// What a training run is: the model, the task, the optimizer's hyper-parameters and the schedule length. Saved in
/// every checkpoint (trainer.json, <c>options.*</c>) so <c>--resume</c> continues the same run; the fields in
/// <see cref="Resumable"/> may change on resume, the others may not.
/// </summary>
sealed record TrainOptions
{
    public string Device { get; init; } = "cpu";
    public string Precision { get; init; } = "fp32";
    public string? Text { get; init; }
    /// <summary>The tokenizer of a text run (<c>char</c>, <c>gpt2</c>, …); null for the sorting task and old text runs (char).</summary>
    public string? Tokenizer { get; init; }
    /// <summary>The prepared token data directory of a <c>--data</c> run (absolute).</summary>
    public string? Data { get; init; }
    /// <summary>The Hugging Face GPT-2 directory a <c>--init-from</c> run started from (absolute): its model's shape and weights.</summary>
    public string? InitFrom { get; init; }
    public long Steps { get; init; } = 300;
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
    public double WeightDecay { get; init; } = 0.01;
    public double ClipNorm { get; init; } = 1.0;

    /// <summary>Options a resumed run may change: they take effect from the current step.</summary>
    public static readonly IReadOnlySet<string> Resumable = new HashSet<string> { "steps", "lr", "batch", "clip", "device" };

    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Every option by its command-line name, as text (for comparing a resume's flags with the checkpoint).</summary>
    public IReadOnlyDictionary<string, string> ByName() => new Dictionary<string, string>
    {
        ["device"] = Device, ["precision"] = Precision, ["text"] = Text ?? "", ["tokenizer"] = Tokenizer ?? "", ["data"] = Data ?? "", ["init-from"] = InitFrom ?? "", ["steps"] = Steps.ToString(Inv),
        ["batch"] = Batch.ToString(Inv), ["lr"] = Lr.ToString("R", Inv), ["layers"] = Layers.ToString(Inv),
        ["heads"] = Heads.ToString(Inv), ["dmodel"] = DModel.ToString(Inv), ["context"] = Context.ToString(Inv),
        ["dropout"] = Dropout.ToString("R", Inv), ["seed"] = Seed.ToString(Inv), ["sort-length"] = SortLength.ToString(Inv),
        ["sort-digits"] = SortDigits.ToString(Inv), ["weight-decay"] = WeightDecay.ToString("R", Inv), ["clip"] = ClipNorm.ToString("R", Inv),
    };

    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteStartObject("options");
        w.WriteString("device", Device);
        w.WriteString("precision", Precision);
        if (Text is not null) w.WriteString("text", Text);
        if (Tokenizer is not null) w.WriteString("tokenizer", Tokenizer);
        if (Data is not null) w.WriteString("data", Data);
        if (InitFrom is not null) w.WriteString("init_from", InitFrom);
        w.WriteNumber("steps", Steps);
        w.WriteNumber("batch", Batch);
        w.WriteNumber("lr", Lr);
        w.WriteNumber("layers", Layers);
        w.WriteNumber("heads", Heads);
        w.WriteNumber("dmodel", DModel);
        w.WriteNumber("context", Context);
        w.WriteNumber("dropout", Dropout);
        w.WriteNumber("seed", Seed);
        w.WriteNumber("sort_length", SortLength);
        w.WriteNumber("sort_digits", SortDigits);
        w.WriteNumber("weight_decay", WeightDecay);
        w.WriteNumber("clip_norm", ClipNorm);
        w.WriteEndObject();
    }

    /// <summary>Reads <c>{prefix}device</c>, <c>{prefix}steps</c>, ...: trainer.json uses <c>options.</c>, the old flat layout <c>train.</c>.</summary>
    public static TrainOptions Read(Fields f, string prefix) => new()
    {
        Device = f.Str(prefix + "device"),
        Precision = f.Str(prefix + "precision"),
        Text = f.StrOrNull(prefix + "text") is { Length: > 0 } t ? t : null,
        Tokenizer = f.StrOrNull(prefix + "tokenizer") is { Length: > 0 } k ? k : null,
        Data = f.StrOrNull(prefix + "data") is { Length: > 0 } d ? d : null,
        InitFrom = f.StrOrNull(prefix + "init_from") is { Length: > 0 } i ? i : null,
        Steps = f.Long(prefix + "steps", 1),
        Batch = f.Int(prefix + "batch", 1),
        Lr = f.Double(prefix + "lr"),
        Layers = f.Int(prefix + "layers", 1),
        Heads = f.Int(prefix + "heads", 1),
        DModel = f.Int(prefix + "dmodel", 1),
        Context = f.Int(prefix + "context", 1),
        Dropout = f.Double(prefix + "dropout"),
        Seed = f.ULong(prefix + "seed"),
        SortLength = f.Int(prefix + "sort_length", 1),
        SortDigits = f.Int(prefix + "sort_digits", 1),
        WeightDecay = f.Double(prefix + "weight_decay"),
        ClipNorm = f.Double(prefix + "clip_norm"),
    };
}

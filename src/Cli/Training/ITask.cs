namespace Engine.Cli.Training;

/// <summary>A next-token task: batches of (input ids, target ids with −100 where no loss is taken) and an accuracy.</summary>
interface ITask
{
    string Name { get; }
    int VocabSize { get; }
    int ContextLength { get; }

    /// <summary>
    /// Samples <paramref name="position"/> .. position + batchSize − 1 of the run's data stream. Sample i is a function
    /// of (seed, i) alone (<see cref="DataStream.Rng"/>), so a resumed run, in any process and with any batch size,
    /// continues the stream exactly where the checkpoint left it.
    /// </summary>
    (Tensor Inputs, Tensor Targets) Batch(int batchSize, ulong seed, long position);

    /// <summary>Held-out accuracy in [0, 1].</summary>
    double Evaluate(Engine.Autograd.Nn.Gpt model, int samples);

    /// <summary>A few example completions, one line each.</summary>
    IEnumerable<string> Samples(Engine.Autograd.Nn.Gpt model, int count, ulong seed);

    /// <summary>What rebuilds the task from a checkpoint.</summary>
    Dictionary<string, string> Metadata();

    /// <summary>Tokens of a prompt text, and text of tokens (for sample).</summary>
    long[] Encode(string text);
    string Decode(IEnumerable<long> tokens);

    /// <summary>The tokenizer of a text task, written into each checkpoint (tokenizer.json); null for the sorting task.</summary>
    Engine.Cli.Text.TextTokenizer? Tokenizer => null;

    /// <summary>
    /// Mean cross-entropy on held-out data over up to <paramref name="windows"/> fixed windows, evaluated
    /// <paramref name="batch"/> at a time with the model in eval mode; null for tasks that hold no validation tokens.
    /// Draws no randomness, so evaluating never changes the training run.
    /// </summary>
    bool HasValidation => false;

    double? ValidationLoss(Engine.Autograd.Nn.Gpt model, int windows, int batch) => null;
}

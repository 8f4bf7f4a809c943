namespace Engine.Cli.Training;

/// <summary>How a run is carried out, as opposed to what it computes (<see cref="TrainOptions"/>): free to differ on every resume.</summary>
sealed record TrainKnobs(long SaveEvery, int Keep, int MaxBadSteps, long? StopAt, int EvalSamples, bool Quiet);

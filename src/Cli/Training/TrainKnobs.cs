namespace Engine.Cli.Training;

/// <summary>How a run is carried out, as opposed to what it computes (<see cref="TrainOptions"/>): free to differ on every resume.</summary>
/// <remarks><see cref="EvalEvery"/>: steps between validation losses (0: none), for tasks with validation data.</remarks>
sealed record TrainKnobs(long SaveEvery, int Keep, int MaxBadSteps, long? StopAt, int EvalSamples, bool Quiet, long EvalEvery = 0);

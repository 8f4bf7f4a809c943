namespace Engine;

/// <summary>
/// The one exception family of the engine. Every message names the op and the values that broke it
/// ("shape mismatch in MatMul: [2, 3] and [4, 5]"). A failed op leaves its inputs untouched.
/// </summary>
public class EngineException : Exception
{
    /// <summary>The op that failed.</summary>
    public string Op { get; }

    /// <summary>Creates an exception for <paramref name="op"/>.</summary>
    public EngineException(string op, string message, Exception? inner = null) : base($"{op}: {message}", inner) => Op = op;
}

/// <summary>Incompatible or invalid shapes, dims or indices.</summary>
public sealed class ShapeException(string op, string message) : EngineException(op, message);

/// <summary>An unsupported or mismatched dtype.</summary>
public sealed class DTypeException(string op, string message) : EngineException(op, message);

/// <summary>Operands on different devices.</summary>
public sealed class DeviceMismatchException(string op, string message) : EngineException(op, message);

/// <summary>A device (or its backend) that is not available on this machine.</summary>
public sealed class DeviceUnavailableException(string op, string message, Exception? inner = null) : EngineException(op, message, inner);

/// <summary>A tensor used after it was disposed.</summary>
public sealed class DisposedTensorException(string op) : EngineException(op, "the tensor has been disposed");

/// <summary>
/// A checkpoint or data file that cannot be trusted: truncated, corrupt (checksum, malformed header, non-finite values),
/// missing a required file or key, or of an unknown format. The message names the file and, where there is one, the
/// key. The <c>engine</c> command exits with code 5 on it.
/// </summary>
public sealed class CheckpointException(string op, string message, Exception? inner = null) : EngineException(op, message, inner);

/// <summary>
/// An allocation that failed: the message names the op, the shape, the dtype, the device and the bytes asked for.
/// Nothing is left allocated or counted by the failed request.
/// </summary>
public sealed class EngineOutOfMemoryException(string op, string message, Exception? inner = null) : EngineException(op, message, inner);

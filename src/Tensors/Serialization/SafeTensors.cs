namespace Engine.Serialization;

/// <summary>
/// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header mapping each name to
/// its dtype, shape and data_offsets (plus an optional string-to-string <c>__metadata__</c>), then the raw
/// little-endian data. Files written here load in PyTorch with <c>safetensors.torch.load_file</c>, and files are
/// checked on load as strictly as the reference reader checks them (see <see cref="Load"/>). Every error is a
/// <see cref="CheckpointException"/> whose one-line message names the file and, where there is one, the tensor.
/// </summary>
public static class SafeTensors
{
    /// <summary>What a file holds: its tensors (new, owned by the caller) and its metadata.</summary>
    /// <param name="Tensors">
    /// The tensors in header order (for files written here, the order they were saved in), then the aliases of
    /// tensors saved once (see <see cref="Aliases"/>), each a view of its kept tensor's storage.
    /// </param>
    /// <param name="Metadata">The header's <c>__metadata__</c>, as written (alias records included).</param>
    public sealed record Contents(OrderedDictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) : IDisposable
    {
        /// <summary>One line per tensor whose stored type the engine lacks and converted on load, e.g. "tensor 'x' stored as U8, loaded as int32".</summary>
        public IReadOnlyList<string> Notes { get; init; } = [];

        /// <summary>Names restored from the metadata's <c>removed -&gt; kept</c> records of tensors saved once: alias → kept name.</summary>
        public IReadOnlyDictionary<string, string> Aliases { get; init; } = new Dictionary<string, string>();

        /// <summary>Disposes every tensor (an alias holds its own reference to the shared storage).</summary>
        public void Dispose() { foreach (var t in Tensors.Values) t.Dispose(); }
    }

    /// <summary>
    /// Writes tensors (any device, any layout) and metadata to <paramref name="path"/> atomically: a temporary file,
    /// unique to the call, is written in the same directory, flushed to disk and renamed over the target.
    /// <para>
    /// The data is laid out as the reference writer does it, by stored type (widest first) then name, so each tensor
    /// starts at a multiple of its element size; the header keeps the input order. Entries that are one tensor (the
    /// same storage and layout, as a tied embedding and output head) are written once, under the first of their
    /// names, and each other name is recorded in the metadata as <c>other -&gt; first</c>, the convention of
    /// <c>safetensors.torch.save_model</c>; <see cref="Load"/> restores them. Entries sharing a storage through
    /// different layouts (a slice) are written as separate copies, where PyTorch would refuse.
    /// </para>
    /// </summary>
    /// <param name="path">The file to write.</param>
    /// <param name="tensors">Names and tensors; names must be unique and not <c>__metadata__</c>.</param>
    /// <param name="metadata">String pairs for <c>__metadata__</c>.</param>
    /// <param name="storeAs">
    /// The stored type of some tensors, by name (the others keep their own dtype), for the types the engine lacks
    /// (U8, I16, F8_E4M3, ...). The conversion must be exact: the first value that does not fit (300 as U8, 1.5 as
    /// I32, 0.1 as F8_E4M3) is an error naming the tensor.
    /// </param>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null,
        IReadOnlyDictionary<string, SafeTensorDType>? storeAs = null) =>
        SafeTensorsWriter.Save(path, tensors, metadata, storeAs);

    /// <summary>
    /// Reads a file onto <paramref name="device"/> (default CPU). The file is read in chunks of a few MiB into the
    /// tensors' storage, so a file of any size (a tensor over 2 GiB included) loads with a peak of the tensors'
    /// bytes plus those chunks.
    /// <para>
    /// Validated as the reference reader (Hugging Face's <c>safetensors</c> crate) validates it: a header of at most
    /// 100,000,000 bytes that fits the file, UTF-8 JSON starting with '{'; <c>__metadata__</c> an object of strings;
    /// each tensor exactly dtype, shape and data_offsets, no name twice; element and byte counts without overflow;
    /// data_offsets spanning exactly the tensor's bytes, and, sorted, tiling the data from its first byte to the end
    /// of the file without gaps or overlaps. BOOL bytes must be 0 or 1.
    /// </para>
    /// <para>
    /// Stored types the engine lacks load as one that holds every value (<see cref="SafeTensorDTypes.LoadsAs"/>),
    /// each reported in <see cref="Contents.Notes"/> and logged once through <see cref="EngineLog"/>. A metadata
    /// entry <c>name -&gt; other</c> where <c>name</c> is not a tensor and <c>other</c> is adds <c>name</c> as an alias
    /// of <c>other</c> (<see cref="Contents.Aliases"/>). A failed load leaves nothing allocated.
    /// </para>
    /// </summary>
    public static Contents Load(string path, Device? device = null) => SafeTensorsReader.Load(path, device);

    /// <summary>The error of every failure: one line naming the file.</summary>
    internal static CheckpointException Error(string file, string message, Exception? inner = null) =>
        new("SafeTensors", $"{file}: {message}".ReplaceLineEndings(" "), inner);
}

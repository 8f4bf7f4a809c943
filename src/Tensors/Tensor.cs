using Engine.Autocast;
using Engine.Backends;
using Engine.Graph;

namespace Engine;

/// <summary>
/// An n-dimensional array: a storage, a layout over it (shape, strides, offset), a dtype and a device, plus the
/// autograd record of the op that made it. Views share storage. A tensor owns one reference to its storage: dispose
/// it (or the <see cref="DisposeScope"/> it was created in) to give the buffer back to the pool at once; a finalizer
/// is the safety net. Ops never dispose their inputs and always return a new tensor the caller owns.
/// </summary>
public sealed partial class Tensor : IDisposable
{
    Storage? _storage;
    bool _requiresGrad;
    // Where this tensor was made, kept only while EngineDiagnostics.LeakWarnings is on: the finalizer reports it.
    readonly System.Diagnostics.StackTrace? _creation;

    internal Tensor(Storage storage, Layout layout)
    {
        storage.AddRef();
        _storage = storage;
        Layout = layout;
        AutocastDType = AutocastDispatch.RegionDTypeFor(storage.Device);
        _creation = EngineDiagnostics.CaptureCreation();
        DisposeScope.Current?.Add(this);
    }

    /// <summary>Where the elements sit in the storage.</summary>
    public Layout Layout { get; private set; }

    /// <summary>The element type.</summary>
    public DType DType => Storage.DType;

    /// <summary>The device holding the data.</summary>
    public Device Device => Storage.Device;

    /// <summary>The autocast dtype of the region this tensor was produced in (null outside autocast): how the AMP gradient scaler tells a bfloat16 loss from a float16 one.</summary>
    public DType? AutocastDType { get; internal set; }

    /// <summary>The buffer; throws <see cref="DisposedTensorException"/> after <see cref="Dispose"/>.</summary>
    public Storage Storage => _storage ?? throw new DisposedTensorException("Tensor");

    internal IBackend Backend => BackendRegistry.Get(Storage.Device);

    /// <summary>The shape, as <c>torch.Size</c>: immutable, so no copy is made.</summary>
    public Shape Shape => Layout.Shape;

    /// <summary>Number of dims.</summary>
    public int Rank => Layout.Rank;

    /// <summary>Number of elements.</summary>
    public long Numel => Layout.Numel;

    /// <summary>The extent of one dim (negative dims count from the end).</summary>
    public int Size(int dim) => Rank == 0
        ? throw new ShapeException("Size", $"dimension specified as {dim} but the tensor has no dimensions")
        : Layout.Shape[Shape.NormalizeDim(dim, Rank, "Size")];

    /// <summary>True when the elements are dense and row-major.</summary>
    public bool IsContiguous => Layout.IsContiguous;

    /// <summary>True after <see cref="Dispose"/>.</summary>
    public bool IsDisposed => _storage is null;

    /// <summary>The storage's in-place modification counter (shared by all views).</summary>
    public int Version => Storage.Version;

    // ---- autograd state (the rules that use it live in src/Autograd) ----

    /// <summary>
    /// Whether gradients are wanted for this tensor. Settable on leaves of a floating dtype; a tensor produced by an
    /// op on inputs that require grad requires grad itself.
    /// </summary>
    public bool RequiresGrad
    {
        get => _requiresGrad || GradFn is not null;
        set
        {
            if (GradFn is not null)
            {
                if (!value) throw new EngineException("RequiresGrad", "you can only change RequiresGrad of leaf tensors; use Detach() to get a tensor that does not require grad");
                return;
            }
            if (value && !DType.IsFloatingPoint())
                throw new DTypeException("RequiresGrad", $"only tensors of floating point dtype can require gradients, got {DType.Name()}");
            _requiresGrad = value;
        }
    }

    /// <summary>The accumulated gradient of a leaf (or a tensor that called <c>RetainGrad</c>), or null.</summary>
    public Tensor? Grad { get; set; }

    /// <summary>The record of the op that produced this tensor, or null for a leaf.</summary>
    public GradNode? GradFn { get; internal set; }

    /// <summary>True for tensors not produced by a recorded op.</summary>
    public bool IsLeaf => GradFn is null;

    /// <summary>True when a non-leaf keeps its gradient in <see cref="Grad"/> during backward.</summary>
    public bool RetainsGrad { get; set; }

    /// <summary>Hooks run on this tensor's gradient during backward; a hook may return a replacement.</summary>
    public List<Func<Tensor, Tensor?>>? GradHooks { get; private set; }

    /// <summary>Registers a gradient hook (as <c>Tensor.register_hook</c>).</summary>
    public void RegisterHook(Func<Tensor, Tensor?> hook)
    {
        if (!RequiresGrad) throw new EngineException("RegisterHook", "cannot register a hook on a tensor that doesn't require gradient");
        (GradHooks ??= []).Add(hook);
    }

    /// <summary>Hooks run on a leaf after backward has accumulated its gradient into <see cref="Grad"/>; each receives the leaf.</summary>
    public List<Action<Tensor>>? PostAccumulateGradHooks { get; private set; }

    /// <summary>
    /// Registers a hook that runs after backward has accumulated this leaf's gradient into <see cref="Grad"/> (as
    /// <c>Tensor.register_post_accumulate_grad_hook</c>): once per backward pass that reaches the leaf, in the order
    /// the pass finishes leaves, which is what lets data-parallel training start reducing gradients mid-backward.
    /// Not run by <c>Gradients.Grad</c>, which leaves <see cref="Grad"/> alone. Dispose the result to remove the hook.
    /// </summary>
    public IDisposable RegisterPostAccumulateGradHook(Action<Tensor> hook)
    {
        if (!RequiresGrad) throw new EngineException("RegisterPostAccumulateGradHook", "cannot register a hook on a tensor that doesn't require gradient");
        if (!IsLeaf) throw new EngineException("RegisterPostAccumulateGradHook", "post accumulate grad hooks cannot be registered on non-leaf tensors");
        var hooks = PostAccumulateGradHooks ??= [];
        hooks.Add(hook);
        return new HookHandle(() => hooks.Remove(hook));
    }

    sealed class HookHandle(Action remove) : IDisposable
    {
        Action? _remove = remove;
        public void Dispose() => Interlocked.Exchange(ref _remove, null)?.Invoke();
    }

    // ---- ownership ----

    /// <summary>Releases this tensor's reference to its storage. Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _storage, null) is { } s)
        {
            s.Release();
            GC.SuppressFinalize(this);
            // A long-lived scope (a whole epoch) must not accumulate handles it no longer needs to free.
            DisposeScope.Current?.Remove(this);
        }
    }

    /// <summary>Safety net for tensors nobody disposed (reported when <see cref="EngineDiagnostics.LeakWarnings"/> was on at creation).</summary>
    ~Tensor()
    {
        var s = Interlocked.Exchange(ref _storage, null);
        if (s is null) return;
        if (_creation is not null)
            EngineDiagnostics.ReportLeak($"{Shape.Format(Layout.Shape)} {s.DType.Name()} on {s.Device} ({s.ByteLength} bytes of storage)", _creation);
        s.Release();
    }

    /// <summary>Opens a dispose scope: tensors created until it is disposed are disposed with it.</summary>
    public static DisposeScope NewScope() => new();

    /// <summary>Moves this tensor from the current scope to the enclosing one (or to no scope). Returns this.</summary>
    public Tensor MoveToOuterScope()
    {
        var s = DisposeScope.Current;
        while (s is not null && !s.Remove(this)) s = s.Outer;
        s?.Outer?.Add(this);
        return this;
    }

    /// <summary>Removes this tensor from every open scope: the caller disposes it. Returns this.</summary>
    public Tensor DetachFromScopes()
    {
        for (var s = DisposeScope.Current; s is not null; s = s.Outer) s.Remove(this);
        return this;
    }

    /// <summary>A second handle on the same storage and layout that no scope owns (for saved values and parameters).</summary>
    internal Tensor Alias()
    {
        var t = new Tensor(Storage, Layout) { IsView = true };
        DisposeScope.Current?.Remove(t);
        return t;
    }

    /// <summary>
    /// Points this tensor at <paramref name="source"/>'s data (storage and layout), keeping its identity, autograd
    /// flags and gradient: what PyTorch's <c>param.data = ...</c> does, used to move a module's parameters between
    /// devices or dtypes. Not recorded by autograd.
    /// </summary>
    public void SetData(Tensor source)
    {
        if (IsLeaf is false) throw new EngineException("SetData", "only leaf tensors can have their data replaced");
        var s = source.Storage;
        s.AddRef();
        var old = Interlocked.Exchange(ref _storage, s);
        Layout = source.Layout;
        old?.Release();
        if (_requiresGrad && !s.DType.IsFloatingPoint()) _requiresGrad = false;
    }

    // ---- construction helpers used by every op ----

    /// <summary>
    /// A new contiguous tensor with unspecified contents. A shape past <see cref="Shape.MaxBytes"/> bytes throws a
    /// <see cref="ShapeException"/>; memory the device cannot give throws an <see cref="EngineOutOfMemoryException"/>.
    /// </summary>
    public static Tensor Empty(ReadOnlySpan<int> shape, DType dtype = DType.Float32, Device? device = null) => Empty("Empty", shape, dtype, device);

    /// <summary>
    /// <see cref="Empty(ReadOnlySpan{int}, DType, Device?)"/> on behalf of <paramref name="op"/>: every allocation of the engine
    /// comes here, so a size that overflows or memory that runs out is reported under the name of the op the user
    /// called, with the shape, dtype, device and bytes, and nothing stays allocated or counted.
    /// </summary>
    internal static Tensor Empty(string op, ReadOnlySpan<int> shape, DType dtype, Device? device) => EmptyOfShape(op, new Shape(shape), dtype, device);

    /// <summary>As the span overload, for a shape object the caller already has: it is immutable, so no copy is made.</summary>
    internal static Tensor EmptyOfShape(string op, Shape shape, DType dtype, Device? device)
    {
        long count = Shape.CheckedNumel(shape, op);
        long bytes = Shape.CheckedByteLength(count, shape, dtype, op);
        var dev = device ?? Device.Cpu;
        var backend = BackendRegistry.Get(dev);
        Storage storage;
        try
        {
            storage = backend.Allocate(dev, dtype, count);
        }
        catch (Exception e) when (e is EngineOutOfMemoryException or OutOfMemoryException)
        {
            var why = e is EngineException ee && e.Message.StartsWith(ee.Op + ": ", StringComparison.Ordinal) ? e.Message[(ee.Op.Length + 2)..] : e.Message;
            throw new EngineOutOfMemoryException(op,
                $"out of memory for a tensor of shape {Shape.Format(shape)}, dtype {dtype.Name()} on {dev}: {bytes} bytes ({FormatBytes(bytes)}) ({why})", e);
        }
        return new Tensor(storage, Layout.Contiguous(shape));
    }

    static string FormatBytes(long bytes) =>
        bytes >= 1L << 40 ? $"{bytes / (double)(1L << 40):0.##} TiB"
        : bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):0.##} GiB"
        : bytes >= 1L << 20 ? $"{bytes / (double)(1L << 20):0.##} MiB"
        : bytes >= 1L << 10 ? $"{bytes / 1024.0:0.##} KiB"
        : $"{bytes} bytes";

    internal Tensor NewView(Layout layout) => new(Storage, layout) { IsView = true };

    /// <summary>True for a tensor that shares its storage with the tensor it was derived from (a view or alias).</summary>
    internal bool IsView { get; private init; }

    internal static void CheckSameDevice(string op, Tensor a, Tensor b)
    {
        if (a.Device != b.Device)
            throw new DeviceMismatchException(op, $"expected all tensors on one device, got {a.Device} and {b.Device}");
    }

    internal void CheckFloating(string op)
    {
        if (!DType.IsFloatingPoint())
            throw new DTypeException(op, $"expected a floating point tensor, got {DType.Name()} {Shape.Format(Layout.Shape)}");
    }

    internal string Describe() => $"{Shape.Format(Layout.Shape)} {DType.Name()} on {Device}";
}

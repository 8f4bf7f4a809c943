using System.Runtime.CompilerServices;
using Engine.Backends;
using Engine.Backends.Cpu;
using Engine.Autograd.Nn;
using Engine.Tests.Support;
using Microsoft.Extensions.Logging;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>
/// Memory safety: sizes that overflow are a <see cref="ShapeException"/> naming the op and the shape, tensors of more
/// than 2^31 elements work (or fail clearly), a failed allocation is an <see cref="EngineOutOfMemoryException"/> that
/// leaves every counter as it was, forgotten tensors are collected under GC pressure, and ENGINE_LEAK_WARN reports
/// them. Each test settles the finalizer queue at its end, so the live counts other fixtures assert are undisturbed.
/// </summary>
[TestFixture]
[NonParallelizable]
public unsafe class MemorySafetyTests
{
    const int Big = (1 << 30) + 8; // [2, Big] is 2^31 + 16 elements: past int.MaxValue, ~2 GiB as Bool

    static long Live => Storage.LiveCount(DeviceType.Cpu);
    static long LiveBytes => Storage.LiveBytes(DeviceType.Cpu);

    static void Settle()
    {
        for (int i = 0; i < 3; i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
    }

    [SetUp]
    public void Start()
    {
        Assert.That(DisposeScope.Current, Is.Null, "a test left a scope open");
        Settle();
    }

    [TearDown]
    public void End() => Settle();

    // ================================================================ peak of live bytes

    [Test]
    public void PeakLiveBytes_IsTheMostHeldAtOnceSinceTheLastReset()
    {
        Storage.ResetPeakLiveBytes(DeviceType.Cpu);
        long start = LiveBytes;
        Assert.That(Storage.PeakLiveBytes(DeviceType.Cpu), Is.EqualTo(start), "a reset starts from what is live now");
        using (var a = Tensor.Zeros([1 << 18]))     // 1 MiB each: two at once, then one
        using (var b = Tensor.Zeros([1 << 18])) { }
        using (var c = Tensor.Zeros([1 << 18])) { }
        Assert.That(Storage.PeakLiveBytes(DeviceType.Cpu) - start, Is.EqualTo(2L << 20));
        Assert.That(LiveBytes, Is.EqualTo(start));
        Storage.ResetPeakLiveBytes(DeviceType.Cpu);
        Assert.That(Storage.PeakLiveBytes(DeviceType.Cpu), Is.EqualTo(start));
    }

    // ================================================================ checked sizes

    [Test]
    public void Empty_ShapeWhoseBytesOverflow_IsAShapeExceptionNamingOpShapeAndDType()
    {
        long live = Live, bytes = LiveBytes;
        var e = Assert.Throws<ShapeException>(() => Tensor.Empty([int.MaxValue, int.MaxValue]))!;
        Assert.That(e.Op, Is.EqualTo("Empty"));
        // (2^31 - 1)^2 · 4 bytes: the exact count, not a wrapped one.
        Assert.That(e.Message, Does.StartWith("Empty: shape [2147483647, 2147483647] of float32 needs 18446744056529682436 bytes"));
        Assert.That(Live, Is.EqualTo(live));
        Assert.That(LiveBytes, Is.EqualTo(bytes));
    }

    [Test]
    public void Creation_ShapeWithTooManyElements_IsAShapeExceptionNamingTheOp()
    {
        var e = Assert.Throws<ShapeException>(() => Tensor.Zeros([int.MaxValue, int.MaxValue, int.MaxValue], DType.Bool))!;
        Assert.That(e.Message, Does.StartWith("Zeros: shape [2147483647, 2147483647, 2147483647] has 9903520300447984150353281023 elements"));
        var r = Assert.Throws<ShapeException>(() => Tensor.Rand([1 << 30, 1 << 30, 8]))!;
        Assert.That(r.Message, Does.Contain("[1073741824, 1073741824, 8]").And.Contain("limit"));
        var n = Assert.Throws<ShapeException>(() => Tensor.Ones([4, -1]))!;
        Assert.That(n.Message, Is.EqualTo("Ones: negative dimension -1 in shape [4, -1]"));
    }

    [Test]
    public void Shape_Numel_IsChecked()
    {
        Assert.That(Shape.Numel([int.MaxValue, int.MaxValue]), Is.EqualTo(4611686014132420609L));
        var e = Assert.Throws<ShapeException>(() => Shape.Numel([int.MaxValue, int.MaxValue, int.MaxValue]))!;
        Assert.That(e.Message, Does.Contain("[2147483647, 2147483647, 2147483647]"));
        Assert.That(Shape.Numel([int.MaxValue, int.MaxValue, int.MaxValue, 0]), Is.EqualTo(0), "a zero dim empties any shape");
        Assert.That(Shape.CheckedByteLength([1 << 30, 1 << 30], DType.Float32, "T"), Is.EqualTo(Shape.MaxBytes), "the limit itself is allowed");
        Assert.Throws<ShapeException>(() => Shape.CheckedByteLength([1 << 30, 1 << 30], DType.Float64, "T"));
    }

    [Test]
    public void Views_ThatWouldOverflow_AreShapeExceptionsNamingTheOp()
    {
        using var s = Tensor.Scalar(1, DType.Bool);
        var ex = Assert.Throws<ShapeException>(() => s.Expand(int.MaxValue, int.MaxValue, int.MaxValue).Dispose())!;
        Assert.That(ex.Message, Does.StartWith("Expand: shape [2147483647, 2147483647, 2147483647]"));

        using var wide = s.Expand(2, Big); // a view: no storage of its own
        var r = Assert.Throws<ShapeException>(() => wide.Reshape(-1).Dispose())!;
        Assert.That(r.Message, Does.StartWith("Reshape: shape [-1] would infer a dim of 2147483664"));
        var f = Assert.Throws<ShapeException>(() => wide.Flatten().Dispose())!;
        Assert.That(f.Message, Does.StartWith("Flatten: merging dims 0..1 of [2, 1073741832] bool"));
        using var half = s.Expand(Big);
        var c = Assert.Throws<ShapeException>(() => Tensor.Cat([half, half]).Dispose())!;
        Assert.That(c.Message, Does.StartWith("Cat: the concatenated dim 0 would have 2147483664 elements"));
        // 65536^4 = 2^64 wraps to 0 in 64 bits: an empty tensor must not take that shape.
        using var empty = Tensor.Zeros([0]);
        var w = Assert.Throws<ShapeException>(() => empty.Reshape(65536, 65536, 65536, 65536).Dispose())!;
        Assert.That(w.Message, Is.EqualTo("Reshape: shape [65536, 65536, 65536, 65536] is invalid for input of size 0"));
    }

    [Test]
    public void Storage_RejectsCountsPastTheLimitBeforeAllocating()
    {
        long live = Live;
        var e = Assert.Throws<ShapeException>(() => CpuBackend.Instance.Allocate(Device.Cpu, DType.Float32, long.MaxValue))!;
        Assert.That(e.Message, Does.StartWith("Allocate: 9223372036854775807 elements of float32 on cpu"));
        Assert.Throws<ShapeException>(() => CpuBackend.Instance.Allocate(Device.Cpu, DType.Float32, -1));
        Assert.That(Live, Is.EqualTo(live));
    }

    // ================================================================ tensors past 2^31 elements

    [Test]
    public void StridedPlan_NeverMergesPastInt32()
    {
        var p = new StridedPlan(Layout.Contiguous([2, Big]));
        Assert.That((p.Outer, p.Inner), Is.EqualTo((2L, Big)));
        var q = new StridedPlan(Layout.Contiguous([4, 8, 1 << 26])); // 2^31 in all: the inner 2^29 merge, the 4 cannot
        Assert.That((q.Outer, q.Inner), Is.EqualTo((4L, 1 << 29)));
        var d = new StridedPlan(Layout.Contiguous([3, 5, 7]));
        Assert.That((d.Outer, d.Inner, d.IsDense), Is.EqualTo((1L, 105, true)));
    }

    // The number of true bytes of a Bool tensor's storage, counted in spans short enough to exist.
    static long CountTrue(Tensor t)
    {
        var s = (CpuStorage)t.Storage;
        long n = 0;
        for (long at = 0; at < s.ByteLength; at += 1 << 30)
            n += new ReadOnlySpan<byte>(s.Pointer + at, (int)Math.Min(1 << 30, s.ByteLength - at)).Count((byte)1);
        return n;
    }

    [Test]
    [Category("Large")]
    public void BoolTensorPastInt32Elements_FillUnaryCopySumWork_AndToArrayFailsClearly()
    {
        const long n = 2L * Big;
        long live = Live;
        using (var t = Tensor.Full([2, Big], 1, DType.Bool))
        {
            Assert.That(t.Numel, Is.EqualTo(n));
            Assert.That(CountTrue(t), Is.EqualTo(n), "Fill reaches every element");
            var e = Assert.Throws<ShapeException>(() => t.ToArray<bool>())!;
            Assert.That(e.Message, Does.StartWith("ToArray: [2, 1073741832] bool on cpu has 2147483664 elements"));
            using var last = t[1, Big - 1];
            Assert.That(last.Item<bool>(), Is.True);
        }
        // Sources that are broadcast views allocate nothing, so each step holds one 2 GiB result at most.
        using var one = Tensor.Scalar(1, DType.Bool);
        using var ones = one.Expand(2, Big);
        using (var a = ones.Abs())
            Assert.That(CountTrue(a), Is.EqualTo(n), "a unary op writes every element");
        using (var c = ones.Contiguous())
            Assert.That(CountTrue(c), Is.EqualTo(n), "a copy writes every element");
        using (var x = Tensor.Scalar(1, DType.Float64))
        using (var xs = x.Expand(2, Big))
        using (var sum = xs.Sum())
            Assert.That(sum.Item(), Is.EqualTo((double)n), "a sum reads every element");
        Assert.That(Live, Is.EqualTo(live + 1), "only the Bool scalar remains");
    }

    // ================================================================ allocation failure

    [Test]
    public void AllocationFailure_IsEngineOutOfMemory_NamingOpShapeDTypeDeviceAndBytes_AndCountsNothing()
    {
        // 2^60 bytes: past any x86-64 address space, so it fails whatever the overcommit policy.
        long live = Live, bytes = LiveBytes, cached = CpuBufferPool.CachedBytes;
        var e = Assert.Throws<EngineOutOfMemoryException>(() => Tensor.Empty([1 << 28, 1 << 30]))!;
        Assert.That(e.Op, Is.EqualTo("Empty"));
        Assert.That(e.Message, Does.StartWith("Empty: out of memory for a tensor of shape [268435456, 1073741824], dtype float32 on cpu: 1152921504606846976 bytes (1048576 TiB)"));
        Assert.That(e.InnerException, Is.TypeOf<EngineOutOfMemoryException>());
        Assert.That(Live, Is.EqualTo(live), "LiveCount");
        Assert.That(LiveBytes, Is.EqualTo(bytes), "LiveBytes");
        Assert.That(CpuBufferPool.CachedBytes, Is.EqualTo(cached), "the pool");

        // Through an op: the op's name, not the allocator's.
        using var s = Tensor.Scalar(1);
        using var wide = s.Expand(1 << 28, 1 << 30);
        var m = Assert.Throws<EngineOutOfMemoryException>(() => wide.Mul(wide).Dispose())!;
        Assert.That(m.Message, Does.StartWith("Mul: out of memory for a tensor of shape [268435456, 1073741824], dtype float32 on cpu"));
        Assert.That(Live, Is.EqualTo(live + 1));
    }

    // ================================================================ GC pressure

    static long ResidentBytes() => long.Parse(File.ReadAllText("/proc/self/statm").Split(' ')[1]) * Environment.SystemPageSize;

    // In its own frame, so the last tensor is unreachable once it returns.
    [MethodImpl(MethodImplOptions.NoInlining)]
    static (long MaxLive, long MaxRss) ForgetTensors(int steps)
    {
        long startBytes = LiveBytes, rss0 = OperatingSystem.IsLinux() ? ResidentBytes() : 0;
        long maxLive = 0, maxRss = 0;
        for (int i = 0; i < steps; i++)
        {
            // 2 × 16 MiB a step, never disposed: 8 GiB if nothing were collected.
            var x = Tensor.Ones([2048, 2048]) * 2;
            GC.KeepAlive(x);
            maxLive = Math.Max(maxLive, LiveBytes - startBytes);
            if (OperatingSystem.IsLinux() && i % 10 == 0) maxRss = Math.Max(maxRss, ResidentBytes() - rss0);
        }
        return (maxLive, maxRss);
    }

    [Test]
    public void ForgottenTensors_AreCollectedUnderMemoryPressure()
    {
        long live = Live;
        int gcs = GC.CollectionCount(0);
        var (maxLive, maxRss) = ForgetTensors(250);
        TestContext.Out.WriteLine($"max live {maxLive >> 20} MiB, max RSS growth {maxRss >> 20} MiB, {GC.CollectionCount(0) - gcs} collections");
        Assert.That(GC.CollectionCount(0), Is.GreaterThan(gcs), "the pressure caused collections");
        Assert.That(maxLive, Is.LessThan(1500L << 20), "live storage bytes");
        Assert.That(maxRss, Is.LessThan(1500L << 20), "resident memory");
        Settle();
        Assert.That(Live, Is.EqualTo(live), "the finalizers freed everything");
    }

    [Test]
    public void DisposedTensors_InduceNoCollections()
    {
        // Reporting every storage as it comes and goes would cost about two full collections per step here.
        int gen2 = GC.CollectionCount(2);
        for (int i = 0; i < 100; i++)
        {
            using var x = Tensor.Ones([2048, 2048]);
            using var y = x * 2;
        }
        Assert.That(GC.CollectionCount(2) - gen2, Is.LessThanOrEqualTo(1), "at most the one a first crossing of the band may cost");
    }

    // ================================================================ leak warnings


    // Not inlined, so nothing of the tensors stays reachable from the test's frame.
    [MethodImpl(MethodImplOptions.NoInlining)]
    static void LeakOneTensor() => _ = Tensor.Zeros([3, 5]);

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void DisposeOneAndScopeOne()
    {
        Tensor.Zeros([7, 11]).Dispose();
        using var scope = Tensor.NewScope();
        _ = Tensor.Zeros([13]);
    }

    [Test]
    public void LeakWarnings_ReportFinalizedTensorsWithTheirCreationStack_ThroughTheLogger()
    {
        var logs = new CaptureLogs();
        var saved = EngineLog.Factory;
        EngineLog.Factory = logs;
        EngineDiagnostics.LeakWarnings = true;
        try
        {
            long reported = EngineDiagnostics.LeaksReported;
            LeakOneTensor();
            DisposeOneAndScopeOne();
            Settle();
            List<(string Category, LogLevel Level, string Message)> entries;
            lock (logs.Entries) entries = [.. logs.Entries];
            var leak = entries.Where(x => x.Message.Contains("[3, 5]")).ToList();
            Assert.That(leak, Has.Count.EqualTo(1), string.Join("\n", entries.Select(x => x.Message)));
            Assert.That(leak[0].Category, Is.EqualTo("Engine.Leaks"));
            Assert.That(leak[0].Level, Is.EqualTo(LogLevel.Warning));
            Assert.That(leak[0].Message, Does.Contain("a tensor [3, 5] float32 on cpu (60 bytes of storage) was freed by the finalizer"));
            Assert.That(leak[0].Message, Does.Contain(nameof(LeakOneTensor)), "the creation stack");
            Assert.That(entries.Any(x => x.Message.Contains("[7, 11]") || x.Message.Contains("[13]")), Is.False, "disposed and scoped tensors are not leaks");
            Assert.That(EngineDiagnostics.LeaksReported, Is.GreaterThan(reported));
        }
        finally
        {
            EngineDiagnostics.LeakWarnings = false;
            EngineLog.Factory = saved;
        }
    }

    [Test]
    public void LeakWarnings_GoToStandardError_WhenNoLoggerIsSet_AndNothingIsRecordedWhenOff()
    {
        var saved = Console.Error;
        var savedFactory = EngineLog.Factory;
        var err = new StringWriter();
        Console.SetError(TextWriter.Synchronized(err));
        EngineLog.Factory = null!; // back to the silent default
        try
        {
            LeakOneTensor(); // off: no stack recorded, no report
            Settle();
            Assert.That(err.ToString(), Does.Not.Contain("[3, 5]"));
            EngineDiagnostics.LeakWarnings = true;
            LeakOneTensor();
            Settle();
            Assert.That(err.ToString(), Does.Contain("a tensor [3, 5] float32 on cpu").And.Contain(nameof(LeakOneTensor)));
        }
        finally
        {
            EngineDiagnostics.LeakWarnings = false;
            Console.SetError(saved);
            EngineLog.Factory = savedFactory;
        }
    }

    // ================================================================ GptConfig

    static readonly TestCaseData[] BadConfigs =
    [
        new TestCaseData(0, 8, 2, 2, 32, 0.0, "GptConfig.VocabSize must be at least 1, got 0").SetName("VocabSize 0"),
        new TestCaseData(16, 0, 2, 2, 32, 0.0, "GptConfig.ContextLength must be at least 1, got 0").SetName("ContextLength 0"),
        new TestCaseData(16, 8, 0, 2, 32, 0.0, "GptConfig.Layers must be at least 1, got 0").SetName("Layers 0"),
        new TestCaseData(16, 8, 2, 0, 32, 0.0, "GptConfig.Heads must be at least 1, got 0").SetName("Heads 0"),
        new TestCaseData(16, 8, 2, -4, 32, 0.0, "GptConfig.Heads must be at least 1, got -4").SetName("Heads negative"),
        new TestCaseData(16, 8, 2, 3, 32, 0.0, "GptConfig.DModel 32 must be a multiple of Heads 3").SetName("Heads not dividing DModel"),
        new TestCaseData(16, 8, 2, 2, 0, 0.0, "GptConfig.DModel must be at least 1, got 0").SetName("DModel 0"),
        new TestCaseData(16, 8, 2, 2, 32, -0.1, "GptConfig.Dropout must be a probability in [0, 1], got -0.1").SetName("Dropout negative"),
        new TestCaseData(16, 8, 2, 2, 32, double.NaN, "GptConfig.Dropout must be a probability in [0, 1], got NaN").SetName("Dropout NaN"),
        new TestCaseData(16, 8, 2, 2, 32, 1.5, "GptConfig.Dropout must be a probability in [0, 1], got 1.5").SetName("Dropout above 1"),
    ];

    [TestCaseSource(nameof(BadConfigs))]
    public void GptConfig_InvalidField_IsAnArgumentExceptionNamingFieldAndValue(int vocab, int context, int layers, int heads, int dModel, double dropout, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => _ = new GptConfig(vocab, context, layers, heads, dModel, dropout))!;
        Assert.That(e.Message, Does.StartWith(message));
    }

    [Test]
    public void GptConfig_CopyWithABadField_IsRejectedByTheModel()
    {
        var good = new GptConfig(VocabSize: 16, ContextLength: 8, Layers: 1, Heads: 2, DModel: 8);
        Assert.That(good.Validate(), Is.SameAs(good));
        var bad = good with { Heads = 3 };
        var e = Assert.Throws<ArgumentException>(() => new Gpt(bad).Dispose())!;
        Assert.That(e.Message, Does.StartWith("GptConfig.DModel 8 must be a multiple of Heads 3"));
    }
}

using System.Reflection;

namespace Engine.Backends;

/// <summary>
/// Finds the backend for a device. Tensors references no backend: a backend assembly registers itself from a module
/// initializer, and the registry loads it by its conventional name (<c>Engine.Backends.Cpu</c>,
/// <c>Engine.Backends.Cuda</c>: <c>Engine.Backends.</c> and the <see cref="DeviceType"/> name) the first time a device of
/// that type is used, so a new backend needs only its <see cref="DeviceType"/> value and its assembly.
/// </summary>
public static class BackendRegistry
{
    static readonly Func<Device, IBackend>?[] s_factories = new Func<Device, IBackend>?[Enum.GetValues<DeviceType>().Length];
    static readonly Dictionary<Device, IBackend> s_backends = [];
    static readonly Lock s_lock = new();
    // Every op asks for its backend (a tensor's Backend property): backends already made are read without the lock,
    // from a per-type table of the first devices, published only after they are fully built.
    const int FastDevices = 16;
    static readonly IBackend?[][] s_made = CreateTables();

    static IBackend?[][] CreateTables()
    {
        var t = new IBackend?[Enum.GetValues<DeviceType>().Length][];
        for (int i = 0; i < t.Length; i++) t[i] = new IBackend?[FastDevices];
        return t;
    }

    /// <summary>Registers the factory for a device type (called by a backend's module initializer).</summary>
    public static void Register(DeviceType type, Func<Device, IBackend> factory)
    {
        lock (s_lock) s_factories[(int)type] = factory;
    }

    /// <summary>The backend of a device; throws <see cref="DeviceUnavailableException"/> when none can be had.</summary>
    public static IBackend Get(Device device)
    {
        if ((uint)device.Index < FastDevices && (uint)device.Type < (uint)s_made.Length && Volatile.Read(ref s_made[(int)device.Type][device.Index]) is { } made) return made;
        lock (s_lock)
        {
            if (s_backends.TryGetValue(device, out var b)) return b;
            var factory = s_factories[(int)device.Type];
            if (factory is null)
            {
                var name = "Engine.Backends." + device.Type;
                try
                {
                    var asm = Assembly.Load(name);
                    System.Runtime.CompilerServices.RuntimeHelpers.RunModuleConstructor(asm.ManifestModule.ModuleHandle);
                }
                catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException)
                {
                    throw new DeviceUnavailableException("Device", $"no backend for {device}: reference the {name} package", e);
                }
                factory = s_factories[(int)device.Type]
                    ?? throw new DeviceUnavailableException("Device", $"{name} loaded but registered no backend for {device.Type}");
            }
            b = factory(device);
            s_backends[device] = b;
            if ((uint)device.Index < FastDevices) Volatile.Write(ref s_made[(int)device.Type][device.Index], b);
            return b;
        }
    }
}

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

    /// <summary>Registers the factory for a device type (called by a backend's module initializer).</summary>
    public static void Register(DeviceType type, Func<Device, IBackend> factory)
    {
        lock (s_lock) s_factories[(int)type] = factory;
    }

    /// <summary>The backend of a device; throws <see cref="DeviceUnavailableException"/> when none can be had.</summary>
    public static IBackend Get(Device device)
    {
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
            return b;
        }
    }
}

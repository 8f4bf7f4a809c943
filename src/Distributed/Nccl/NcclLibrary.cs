namespace Engine.Distributed.Nccl;

/// <summary>
/// Finds <c>libnccl.so.2</c>: <c>ENGINE_NCCL_LIB</c> (a file) first, then the dynamic loader's path (the CUDA stack's
/// copy, <c>LD_LIBRARY_PATH</c>), then the <c>nvidia/nccl/lib</c> folder of an installed PyTorch (the
/// <c>nvidia-nccl-cu12</c> wheel) under the site-packages of <c>VIRTUAL_ENV</c>, <c>CONDA_PREFIX</c>,
/// <c>PYTHONPATH</c>, the user's <c>~/.local</c> and the system's Python folders.
/// </summary>
public static class NcclLibrary
{
    /// <summary>The file name the loader looks for.</summary>
    public const string FileName = "libnccl.so.2";

    /// <summary>
    /// The places searched, in order: <c>ENGINE_NCCL_LIB</c>, then the bare name for the loader, then each
    /// PyTorch folder. <paramref name="get"/> reads the environment (a test passes a dictionary).
    /// </summary>
    public static IReadOnlyList<string> Candidates(Func<string, string?>? get = null)
    {
        get ??= Environment.GetEnvironmentVariable;
        var list = new List<string>();
        if (get("ENGINE_NCCL_LIB") is { Length: > 0 } explicitPath) { list.Add(explicitPath); return list; }
        list.Add(FileName);
        var roots = new List<string>();
        foreach (var prefix in new[] { get("VIRTUAL_ENV"), get("CONDA_PREFIX") })
            if (prefix is { Length: > 0 }) roots.AddRange(SitePackages(Path.Combine(prefix, "lib")));
        if (get("PYTHONPATH") is { Length: > 0 } pp) roots.AddRange(pp.Split(':', StringSplitOptions.RemoveEmptyEntries));
        if (get("HOME") is { Length: > 0 } home) roots.AddRange(SitePackages(Path.Combine(home, ".local", "lib")));
        foreach (var sys in new[] { "/usr/local/lib", "/usr/lib", "/opt/conda/lib" }) roots.AddRange(SitePackages(sys));
        foreach (var r in roots.Distinct()) list.Add(Path.Combine(r, "nvidia", "nccl", "lib", FileName));
        return list;
    }

    // lib/python3.X/{site,dist}-packages folders below a prefix.
    static IEnumerable<string> SitePackages(string lib)
    {
        if (!Directory.Exists(lib)) yield break;
        foreach (var py in Directory.EnumerateDirectories(lib, "python3*").Order())
            foreach (var leaf in new[] { "site-packages", "dist-packages" })
                if (Directory.Exists(Path.Combine(py, leaf))) yield return Path.Combine(py, leaf);
    }

    /// <summary>Loads the first candidate that loads; a <see cref="DistributedException"/> lists every place tried.</summary>
    public static (IntPtr Handle, string Path) Load(Func<string, string?>? get = null)
    {
        var tried = new List<string>();
        foreach (var c in Candidates(get))
        {
            if (System.Runtime.InteropServices.NativeLibrary.TryLoad(c, out var h)) return (h, c);
            tried.Add(c);
        }
        throw new DistributedException("ProcessGroup",
            $"NCCL ({FileName}) not found; tried {string.Join(", ", tried)}. Install NCCL (the CUDA stack, or pip's nvidia-nccl-cu12) or set ENGINE_NCCL_LIB to the file");
    }
}

using System.Text;
using System.Text.RegularExpressions;

namespace Engine.Backends.Cuda;

/// <summary>
/// Turns ILGPU's inline-PTX operand slots into registers. ILGPU passes every <c>Input</c>/<c>Output</c>/<c>Ref</c>
/// operand of <c>CudaAsm.EmitRef</c> through a 4- or 8-byte local-memory slot (<c>.local __local_depotN</c>: store the
/// value, load it into the register the asm names, store the result back, load it again). ptxas normally promotes
/// those slots to registers (the tensor-core kernels without cp.async had 0-byte stack frames), but it promotes no
/// local memory at all in a function that contains <c>cp.async</c> (seen with CUDA 12.4: the cp.async GEMM kept
/// 904–3920 bytes of stack and a local load or store around every mma; deleting the cp.async lines from the same PTX
/// gave 0 bytes). So the PTX of such kernels is rewritten before ptxas sees it: each slot that is only ever the
/// operand of <c>ld.local</c>/<c>st.local</c> of one type through the one register holding its address becomes a
/// PTX register of that type, and its loads and stores become <c>mov</c>s, which is what the promotion would have
/// done. Anything else (a slot whose address escapes, mixed types, a repeated name) leaves the text unchanged.
/// </summary>
public static partial class PtxDepots
{
    /// <summary>True when the module needs the rewrite (it issues cp.async and has operand slots).</summary>
    public static bool Applies(string ptx) =>
        ptx.Contains("cp.async", StringComparison.Ordinal) && ptx.Contains("__local_depot", StringComparison.Ordinal);

    /// <summary>The module with its scalar operand slots as registers, or unchanged when any slot does not qualify.</summary>
    public static string Promote(string ptx)
    {
        ArgumentNullException.ThrowIfNull(ptx);
        if (!Applies(ptx)) return ptx;
        var lines = ptx.Split('\n');
        var size = new Dictionary<string, int>();          // depot → bytes
        var pointer = new Dictionary<string, string>();    // address register → depot
        foreach (var l in lines)
        {
            if (DepotDecl().Match(l) is { Success: true } d)
            {
                if (!size.TryAdd(d.Groups[2].Value, int.Parse(d.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture))) return ptx;
                if (d.Groups[1].Value is not ("4" or "8")) return ptx;
            }
            else if (DepotAddress().Match(l) is { Success: true } a)
            {
                if (pointer.ContainsKey(a.Groups[1].Value) || pointer.ContainsValue(a.Groups[2].Value)) return ptx;
                pointer[a.Groups[1].Value] = a.Groups[2].Value;
            }
        }
        if (size.Count == 0 || pointer.Count != size.Count || size.Values.Any(s => s is not (4 or 8))) return ptx;

        // Every use of an address register must be a whole-slot load or store of one type.
        var type = new Dictionary<string, string>();
        foreach (var l in lines)
        {
            if (DepotDecl().IsMatch(l) || DepotAddress().IsMatch(l)) continue;
            foreach (Match r in Register().Matches(l))
            {
                if (!pointer.TryGetValue(r.Value, out var depot)) continue;
                var m = LoadLocal().Match(l) is { Success: true } ld && ld.Groups[3].Value == r.Value ? ld
                    : StoreLocal().Match(l) is { Success: true } st && st.Groups[2].Value == r.Value ? st : null;
                if (m is null) return ptx;
                string t = m.Groups[1].Value;
                if (Width(t) != size[depot] || type.TryGetValue(depot, out var seen) && seen != t) return ptx;
                type[depot] = t;
            }
        }

        var sb = new StringBuilder(ptx.Length);
        foreach (var l in lines)
        {
            string line = l;
            if (DepotDecl().Match(l) is { Success: true } d)
                line = type.TryGetValue(d.Groups[2].Value, out var t) ? $"\t.reg .{t} %dp{d.Groups[2].Value};" : "";
            else if (DepotAddress().IsMatch(l)) line = "";
            else if (LoadLocal().Match(l) is { Success: true } ld && pointer.TryGetValue(ld.Groups[3].Value, out var dl))
                line = $"\tmov.{ld.Groups[1].Value}\t{ld.Groups[2].Value}, %dp{dl};";
            else if (StoreLocal().Match(l) is { Success: true } st && pointer.TryGetValue(st.Groups[2].Value, out var ds))
                line = $"\tmov.{st.Groups[1].Value}\t%dp{ds}, {st.Groups[3].Value};";
            sb.Append(line).Append('\n');
        }
        if (sb.Length > 0) sb.Length--; // the split added no final newline
        return sb.ToString();
    }

    static int Width(string type) => type[1..] switch { "32" => 4, "64" => 8, _ => -1 };

    [GeneratedRegex(@"^\s*\.local\s+\.align\s+(\d+)\s+\.b8\s+__local_depot(\d+)\[(\d+)\];\s*$")]
    private static partial Regex DepotDeclRaw();

    // Groups: 1 alignment, 2 depot number, 3 bytes.
    static Regex DepotDecl() => DepotDeclRaw();

    [GeneratedRegex(@"^\s*mov\.[bu]64\s+(%rd\d+),\s*__local_depot(\d+);\s*$")]
    private static partial Regex DepotAddress();

    [GeneratedRegex(@"%rd\d+\b")]
    private static partial Regex Register();

    // ld.local.T dst, [addr];
    [GeneratedRegex(@"^\s*ld\.local\.([bfsu](?:32|64))\s+(%\w+),\s*\[(%rd\d+)\];\s*$")]
    private static partial Regex LoadLocal();

    // st.local.T [addr], src;
    [GeneratedRegex(@"^\s*st\.local\.([bfsu](?:32|64))\s+\[(%rd\d+)\],\s*([^;\s]+);\s*$")]
    private static partial Regex StoreLocal();
}

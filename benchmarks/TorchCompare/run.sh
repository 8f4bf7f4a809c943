#!/usr/bin/env bash
# Builds and runs the libtorch comparison (see Program.cs). Arguments go to the program: --only a,b --json FILE.
#
# libLibTorchSharp.so (TorchSharp-cpu 0.107) asks for GLIBCXX_3.4.32, newer than Debian 12's libstdc++ (3.4.30), for
# one symbol, std::ios_base_library_init, which GCC 13 references from every file that includes <iostream> only to
# pull libstdc++'s stream initialisation in; it is never called. So the built copy's version need is marked weak
# (VER_FLG_WEAK in .gnu.version_r): the loader then accepts the older libstdc++. The NuGet cache is not touched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dotnet build "$here/TorchCompare.csproj" -c Release -o "$here/bin/out" >/dev/null
python3 - "$here/bin/out/runtimes/linux-x64/native/libLibTorchSharp.so" <<'PY'
import struct, sys
path = sys.argv[1]
b = bytearray(open(path, 'rb').read())
e_shoff, = struct.unpack_from('<Q', b, 0x28)
e_shentsize, e_shnum = struct.unpack_from('<HH', b, 0x3A)
shstr = struct.unpack_from('<IIQQQQIIQQ', b, e_shoff + struct.unpack_from('<H', b, 0x3E)[0] * e_shentsize)
sections = [struct.unpack_from('<IIQQQQIIQQ', b, e_shoff + i * e_shentsize) for i in range(e_shnum)]
verneed = next(s for s in sections if s[1] == 0x6ffffffe)          # SHT_GNU_verneed
dynstr = sections[verneed[6]]                                       # sh_link: its string table
def name(off):
    start = dynstr[4] + off
    return bytes(b[start:b.index(0, start)]).decode()
pos, patched = verneed[4], 0
while True:
    _, cnt, _, aux, nxt = struct.unpack_from('<HHIII', b, pos)
    a = pos + aux
    for _ in range(cnt):
        _, flags, _, nm, anext = struct.unpack_from('<IHHII', b, a)
        if name(nm) == 'GLIBCXX_3.4.32':
            struct.pack_into('<H', b, a + 4, flags | 2)             # VER_FLG_WEAK
            patched += 1
        a += anext
    if nxt == 0: break
    pos += nxt
open(path, 'wb').write(b)
PY
exec "$here/bin/out/TorchCompare" "$@"

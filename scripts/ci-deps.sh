#!/usr/bin/env bash
# What CI needs beyond the .NET SDK, installed into a cache outside the clone:
#   ${ENGINE_DEPS_CACHE:-$HOME/.cache/engine-ci-deps}/usr/bin/{ptxas,cuobjdump,nvdisasm}
# NVIDIA's assembler and disassemblers (CUDA 12.4) from Debian's non-free nvidia-cuda-toolkit package in trixie: the
# PtxasTests and `engine ptx --sass` assemble the backend's PTX for sm_90 with them; no GPU is needed.
#
# Installing the package would pull gigabytes of dependencies, so the one .deb is downloaded and unpacked (dpkg -x).
# apt runs on a private configuration in a temporary directory: its own deb822 source (the Debian mirror this machine
# already uses, suite trixie), a pin at priority -10 so nothing could ever be installed from it, and its own package
# lists and cache. /etc/apt and /var/lib/apt are never written, so there is nothing to restore afterwards (no stale
# trixie lists, no second `apt-get update`), root is not needed, and a concurrent apt run on the machine never sees
# the extra suite. The trap removes the temporary directory on any exit.
#
# Idempotent and quiet once done (prints nothing, exit 0); the first run prints where the tools are.
# Environment: ENGINE_DEPS_CACHE (cache dir), ENGINE_DEBIAN_MIRROR (overrides the mirror found in /etc/apt).
set -euo pipefail

# Open MPI (Debian's openmpi-bin and libopenmpi-dev) for the Engine.Distributed tests, which launch two ranks with
# mpirun and load libmpi.so.40. Unlike the toolkit below these are ordinary packages with few dependencies, so they are
# installed system-wide with apt-get, which needs root (or password-less sudo). Without either the script says so
# and goes on: the distributed tests then skip with that reason, and fail under CI=true.
mpi_ready() { command -v mpirun >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libmpi\.so\.40 '; }
if ! mpi_ready; then
  sudo_cmd=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo_cmd=(sudo -n); else sudo_cmd=(none); fi
  fi
  if [ "${sudo_cmd[0]:-}" = none ] || ! command -v apt-get >/dev/null; then
    echo "ci-deps: Open MPI is missing and cannot be installed here (needs apt-get as root or password-less sudo):" \
      "apt-get install openmpi-bin libopenmpi-dev" >&2
  else
    mpi_log=$(mktemp)
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(openmpi-bin libopenmpi-dev)
    # The package lists may be stale or absent (a fresh container): update once and retry.
    if ! "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"$mpi_log" 2>&1; then
      "${sudo_cmd[@]}" apt-get update -q >>"$mpi_log" 2>&1 || true
      "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$mpi_log" 2>&1 \
        || { cat "$mpi_log" >&2; rm -f "$mpi_log"; echo "ci-deps: apt-get install ${pkgs[*]} failed" >&2; exit 1; }
    fi
    rm -f "$mpi_log"
    mpi_ready || { echo "ci-deps: openmpi-bin installed but mpirun or libmpi.so.40 is still missing" >&2; exit 1; }
    echo "ci-deps: Open MPI $(mpirun --version 2>/dev/null | head -n 1 | grep -oE '[0-9]+(\.[0-9]+)+') installed (openmpi-bin, libopenmpi-dev)"
  fi
fi

version="12.4.131~12.4.1-2"
cache="${ENGINE_DEPS_CACHE:-$HOME/.cache/engine-ci-deps}"
stamp="$cache/nvidia-cuda-toolkit.version"
tools=(ptxas cuobjdump nvdisasm)

ready() {
  [ "$(cat "$stamp" 2>/dev/null)" = "$version" ] || return 1
  for t in "${tools[@]}"; do [ -x "$cache/usr/bin/$t" ] || return 1; done
  "$cache/usr/bin/ptxas" --version >/dev/null 2>&1
}
ready && exit 0

mkdir -p "$cache"
# Two clones on one machine may run this at once: one installs, the other waits and finds it done.
exec 9>"$cache/.lock"
flock 9
ready && exit 0

die() { echo "ci-deps: $*" >&2; exit 1; }
command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "needs apt-get and dpkg (a Debian or Ubuntu machine)"

# The configured Debian mirror (deb822 URIs: lines, or one-line `deb URL suite ...` entries), its suite set to trixie.
mirror="${ENGINE_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror=$({
    sed -nE 's/^[[:space:]]*URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
    sed -nE 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
  } | grep -E '/debian/?$' | head -n 1 || true)
fi
[ -n "$mirror" ] || die "no Debian mirror (a URI ending in /debian) in /etc/apt; set ENGINE_DEBIAN_MIRROR"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || die "$keyring is missing (package debian-archive-keyring)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/sources.list.d" "$work/preferences.d" "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
cat >"$work/sources.list.d/engine-trixie.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie
Components: non-free
Signed-By: $keyring
EOF
cat >"$work/preferences.d/engine-trixie" <<EOF
Package: *
Pin: release n=trixie
Pin-Priority: -10
EOF
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
  # apt downloads as the unprivileged _apt user when run as root.
  chmod 755 "$work"
  chown _apt "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
fi
apt_opts=(
  -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/sources.list.d"
  -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$work/preferences.d"
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "Acquire::Languages=none"
)
log="$work/apt.log"
apt-get "${apt_opts[@]}" -q update >"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }
(cd "$work/deb" && apt-get "${apt_opts[@]}" -q download "nvidia-cuda-toolkit=$version") >>"$log" 2>&1 \
  || { cat "$log" >&2; die "apt-get download nvidia-cuda-toolkit=$version failed"; }

# Unpack beside the cache and swap in, so an interrupted run never leaves a half-written usr/.
unpacked=$(mktemp -d "$cache/.unpack.XXXXXX")
trap 'rm -rf "$work" "$unpacked"' EXIT
dpkg -x "$work"/deb/nvidia-cuda-toolkit_*.deb "$unpacked"
"$unpacked/usr/bin/ptxas" --version >/dev/null 2>&1 \
  || { ldd "$unpacked/usr/bin/ptxas" >&2 || true; die "the unpacked ptxas does not run (libraries above)"; }
rm -rf "$cache/usr" "$cache/etc"
mv "$unpacked/usr" "$cache/usr"
[ -d "$unpacked/etc" ] && mv "$unpacked/etc" "$cache/etc"
echo "$version" >"$stamp"

echo "ci-deps: nvidia-cuda-toolkit $version unpacked in $cache"
for t in "${tools[@]}"; do echo "  $cache/usr/bin/$t"; done
"$cache/usr/bin/ptxas" --version | tail -n 2 | sed 's/^/  /'

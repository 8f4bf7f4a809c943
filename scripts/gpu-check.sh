#!/usr/bin/env bash
# The nightly GPU check: the `Gpu` test category, the CUDA-vs-CPU parity sweep (`engine check`) and the CUDA
# benchmarks (`engine bench --device cuda`), with a short report. Runs where a GPU and a .NET runtime are present:
#   - with the SDK:            bash scripts/gpu-check.sh
#   - with published builds:   bash ../shared/gpu/pack.sh tests/Engine.Tests src/Cli   (on a dev machine)
#                              bash .gpu/run.sh bash scripts/gpu-check.sh               (on the GPU machine)
# Writes the report to $OUT/gpu-report.md when OUT is set, else to gpu-report.md; whole run under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
mkdir -p "$out"
report="$out/gpu-report.md"
started=$(date +%s)

if [ -f .gpu/Engine.Tests/Engine.Tests.dll ]; then
  tests=(dotnet .gpu/Engine.Tests/Engine.Tests.dll)
  engine=(dotnet .gpu/Cli/engine.dll)
else
  dotnet build Engine.sln -c Release -v quiet || { echo "build failed"; exit 1; }
  tests=(dotnet tests/Engine.Tests/bin/Release/net10.0/Engine.Tests.dll)
  engine=(dotnet src/Cli/bin/Release/net10.0/engine.dll)
fi

{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi not found"
  "${engine[@]}" info 2>&1
  echo '```'
} > "$report"

run_step() {  # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name" | tee -a "$report"
  local t0=$(date +%s)
  { echo '```'; timeout "$limit" "$@" 2>&1 | tail -n 60; echo "exit ${PIPESTATUS[0]}"; echo '```'; } >> "$report"
  echo "   ($(( $(date +%s) - t0 )) s)" | tee -a "$report"
}

run_step "Gpu tests" 240 "${tests[@]}" --filter "TestCategory=Gpu"
run_step "parity sweep (engine check)" 120 "${engine[@]}" check --device cuda --size 1024
run_step "benchmarks (engine bench --device cuda)" 150 "${engine[@]}" bench --device cuda --json "$out/bench-cuda.jsonl"
echo "total $(( $(date +%s) - started )) s" | tee -a "$report"
cat "$report"

#!/usr/bin/env bash
# The reliability suite: scenarios that try hard to lose data or re-run a stored success, on the
# real plane (tests/cluster/up.sh), each with a fixed seed and checks that can fail. Prints a
# table of figures (and writes it to tests/reliability/last-table.md, not committed).
#
#   tests/reliability/run.sh                 the short mode (./tests/run.sh runs this)
#   tests/reliability/run.sh --trials N      N trials where a scenario repeats (default 10)
#   tests/reliability/run.sh --long          the full mode: 100 trials (the README's table)
#   tests/reliability/run.sh --only NAME     one scenario (see SCENARIOS in suite.py)
#
# Needs the SDK's venv (~/.cache/operon/venv-sdk, made by ./tests/run.sh) and builds the core.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
args=()
trials=10
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) trials=$2; shift 2 ;;
    --long) args+=(--long); trials=100; shift ;;
    --only) args+=(--only "$2"); shift 2 ;;
    --seed) args+=(--seed "$2"); shift 2 ;;
    *) echo "usage: $0 [--trials N] [--long] [--only NAME] [--seed S]" >&2; exit 2 ;;
  esac
done
venv="$CACHE/venv-sdk"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# The venv is shared by checkouts: its editable `kopf` must be this one's (else reinstalled).
if ! "$venv/bin/python" -c "import kopf, sys; sys.exit(not kopf.__file__.startswith('$root/'))" 2>/dev/null; then
  echo "[reliability] installing this checkout's SDK into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "./sdk-python-compat[test]"
fi
plane_env=$(tests/cluster/up.sh) || exit $?
eval "$plane_env"
cargo build -q -p operon -p operon-example-handler -p operon-sync-example --locked
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
kubectl_env="$(dirname "$KUBECONFIG")/env"
# shellcheck disable=SC1090
. "$kubectl_env"
"$BIN/kubectl" apply -f deploy/local/crd.yaml >/dev/null
"$BIN/kubectl" wait --for condition=established --timeout=60s crd/kopfexamples.kopf.dev >/dev/null
table="tests/reliability/last-table.md"
rm -f "$table"
cd tests/reliability
RELIABILITY_COMMIT=$(git describe --always --dirty) "$venv/bin/python" suite.py --core "$target_dir/debug/operon" \
  --trials "$trials" --table "$root/$table" "${args[@]}"

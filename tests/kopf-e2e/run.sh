#!/usr/bin/env bash
# Kopf's own end-to-end suite against our `kopf` (sdk-python-compat) and the Operon core, on a real
# control plane: Kopf 1.45.2's tests/e2e/test_examples.py and its examples' own test_example_*.py,
# unmodified. Kopf's code is never committed here: its source distribution is fetched from PyPI
# (`pip download kopf==1.45.2 --no-binary :all: --no-deps`) into ~/.cache/operon/kopf-src and
# unpacked afresh on every run -- without its `kopf/` package, so that the only importable `kopf`
# is ours. The suite is pointed at our package and cluster only through the environment:
#   - a venv (~/.cache/operon/venv-kopf-e2e) with `pip install -e sdk-python-compat`, the test
#     tools Kopf's pytest configuration and conftests load, and examples/requirements.txt minus kopf;
#   - PATH with that venv and kubectl; KUBECONFIG of the plane; OPERON_BIN of the core just built.
# It runs as Kopf's CI runs it (`pytest --timeout=30 --only-e2e`, from the unpacked tree), with the
# e2e paths named (tests/e2e examples), since Kopf's unit tests import Kopf's internals.
#
#   tests/kopf-e2e/run.sh [--strict] [--keep-plane] [-- PYTEST_ARGS...]
#
# Prints a per-example table (also written to ~/.cache/operon/kopf-e2e/results.md). Exit code:
# non-zero when a test fails that is not a known gap (KNOWN_GAPS below), or with --strict when any
# test fails; when pytest itself fails (an exit code other than 0 or 1: interrupted, internal or
# usage error, nothing collected) or writes no results (junit.xml and results.md are removed before
# every run, so that a previous run's are never read); and when an example that has an e2e test
# did not run (no result, or skipped) -- the examples expected are derived from Kopf's tree: each
# examples/*/ without a test*.py file is run by tests/e2e/test_examples.py, each with one by the
# test functions in it (12-embedded's test_nothing.py has none), so PYTEST_ARGS that narrow the
# selection make the run fail too, naming what did not run. A known gap that passes is reported,
# so that the list can be shortened.
#
# The plane: Kopf's examples run cluster-wide (`--all-namespaces`) in the `default` namespace with
# the cluster-scoped CRD kopfexamples.kopf.dev, and its harness counts "'x' succeeded" over all the
# objects the operator sees -- so they need a cluster of their own, as Kopf's CI has (a fresh k3s).
# By default this script starts the same plane (tests/cluster/up.sh) in its own state directory,
# ~/.cache/operon/cluster-kopf-e2e (KOPF_E2E_CLUSTER_DIR to change it), holds its lock
# (`<dir>.e2e.lock`) so that runs are serialized, and stops it at the end if it started it
# (--keep-plane: leave it up).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
log() { echo "[kopf-e2e $(date +%H:%M:%S)] $*" >&2; }

strict=0 keep_plane=0 pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --strict) strict=1; shift ;;
    --keep-plane) keep_plane=1; shift ;;
    --) shift; pytest_args=("$@"); break ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--strict] [--keep-plane] [-- PYTEST_ARGS...]" >&2; exit 2 ;;
  esac
done

KOPF_VERSION=1.45.2
CACHE=${OPERON_CACHE:-$HOME/.cache/operon}
venv="$CACHE/venv-kopf-e2e"
src_dir="$CACHE/kopf-src"
out_dir="$CACHE/kopf-e2e"
plane_dir=${KOPF_E2E_CLUSTER_DIR:-$CACHE/cluster-kopf-e2e}
tree="$src_dir/kopf-$KOPF_VERSION"

# Examples whose tests fail for a reason outside this package (see README.md, "Kopf compatibility").
# (none at present. 16-indexing runs with indexes served by the core and the SDK; 17-admission
# with its webhooks served by the core, through which the harness's kubectl apply goes.)
declare -A KNOWN_GAPS=()

# --- the venv: our package + what Kopf's e2e suite and examples need (not Kopf) -----------------
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
pip() { "$venv/bin/python" -m pip -q --disable-pip-version-check "$@"; }

# --- Kopf's source distribution, fetched at test time --------------------------------------------
mkdir -p "$src_dir" "$out_dir"
sdist="$src_dir/kopf-$KOPF_VERSION.tar.gz"
if [ ! -f "$sdist" ]; then
  log "fetching kopf==$KOPF_VERSION (sdist) from PyPI"
  pip download --no-binary :all: --no-deps -d "$src_dir" "kopf==$KOPF_VERSION"
fi
rm -rf "$tree"
tar -xzf "$sdist" -C "$src_dir" --exclude="kopf-$KOPF_VERSION/kopf"

log "installing sdk-python-compat and the test tools into $venv"
# pytest>=9: Kopf's [tool.pytest] table; pytest-timeout: its `timeout` and --timeout; looptime:
# `--looptime` in its addopts; pytest-asyncio, pytest-mock, freezegun: its tests/conftest.py.
# kubernetes: Kopf's `full-auth` extra, which its examples and their handlers may use.
pip install -e "$root/sdk-python-compat" 'pytest>=9' pytest-timeout 'looptime>=0.8' \
  pytest-asyncio pytest-mock freezegun kubernetes \
  -r <(grep -vxE '\s*kopf\s*' "$tree/examples/requirements.txt")
ours=$(cd "$tree" && "$venv/bin/python" -c 'import kopf, os; print(os.path.realpath(kopf.__file__))')
case "$ours" in
  "$root/sdk-python-compat/"*) ;;
  *) log "the venv imports kopf from $ours, not from sdk-python-compat"; exit 1 ;;
esac

# --- the core ------------------------------------------------------------------------------------
log "building the core (cargo build -p operon)"
cargo build -q -p operon --locked >&2
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export OPERON_BIN="$target/debug/operon"

# --- the plane (its own, locked for this run) ----------------------------------------------------
mkdir -p "$(dirname "$plane_dir")"
exec 9>"$plane_dir.e2e.lock"
if ! flock -x -n 9; then
  log "waiting for another run on $plane_dir to finish"
  flock -x 9
fi
was_up=0
if [ -f "$plane_dir/kube-apiserver.pid" ] && kill -0 "$(cat "$plane_dir/kube-apiserver.pid")" 2>/dev/null; then
  was_up=1
fi
stop_plane() {
  if [ "$was_up" = 0 ] && [ "$keep_plane" = 0 ]; then
    OPERON_CLUSTER_DIR="$plane_dir" tests/cluster/down.sh || true
  fi
}
trap stop_plane EXIT
log "starting the plane in $plane_dir (tests/cluster/up.sh)"
# 9>&-: the plane's processes must not inherit the lock (with --keep-plane they outlive this run,
# and would hold the lock against every later run).
plane_env=$(OPERON_CLUSTER_DIR="$plane_dir" tests/cluster/up.sh 9>&-) || exit $?; eval "$plane_env"
export KUBECONFIG
# shellcheck disable=SC1091
. "$plane_dir/env"  # BIN: the plane's binaries, kubectl among them
export PATH="$venv/bin:$BIN:$PATH"

# --- Kopf's suite ----------------------------------------------------------------------------------
junit="$out_dir/junit.xml"
results="$out_dir/results.md"
# Fresh results: the previous run's, in this persistent directory, must never be read as this one's.
rm -f "$junit" "$results"
log "running Kopf $KOPF_VERSION's e2e suite in $tree (KUBECONFIG=$KUBECONFIG, OPERON_BIN=$OPERON_BIN)"
set +e
(cd "$tree" && pytest -p no:cacheprovider --timeout=30 --only-e2e -v -rfE \
  --junitxml="$junit" tests/e2e examples "${pytest_args[@]}")
pytest_rc=$?
set -e
[ -f "$junit" ] || { log "pytest produced no results (exit code $pytest_rc)"; exit 1; }
# 0: all passed; 1: some tests failed (judged below, test by test, against KNOWN_GAPS). Anything else
# -- 2 interrupted, 3 internal error, 4 usage error, 5 no tests collected -- fails the run below,
# whatever the junit says (the table is still printed from what it holds).

# --- the table ---------------------------------------------------------------------------------------
known=""
for name in "${!KNOWN_GAPS[@]}"; do known+="$name=${KNOWN_GAPS[$name]}"$'\n'; done
KNOWN="$known" STRICT="$strict" PYTEST_RC="$pytest_rc" "$venv/bin/python" - "$junit" "$tree/examples" "$results" <<'PY'
import ast, os, pathlib, re, sys, xml.etree.ElementTree as ET

junit, examples, results = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
known = dict(line.split('=', 1) for line in os.environ['KNOWN'].splitlines() if line)
pytest_rc = int(os.environ['PYTEST_RC'])
rows = {d.name: [] for d in sorted(examples.iterdir()) if d.is_dir()}


def test_functions(path):
    """ The tests pytest collects from a test module: test* functions, and test* methods of Test* classes. """
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith('test'):
            names.append(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith('Test'):
            names += [f'{node.name}::{f.name}' for f in node.body
                      if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.name.startswith('test')]
    return names


# The e2e tests each example must have run, as Kopf's tests/e2e/conftest.py and pytest select them:
# an example without a test*.py file is a parameter of tests/e2e/test_examples.py; one with such
# files is run by the tests in them (none, for an example whose file only disables the implicit run).
expected = {}
for example in rows:
    own = sorted((examples / example).glob('test*.py'))
    if not own:
        expected[example] = ['tests/e2e/test_examples.py']
    else:
        tests = [f'examples/{example}/{f.name}::{name}' for f in own for name in test_functions(f)]
        if tests:
            expected[example] = tests
if not expected:
    sys.exit(f"no example with an e2e test found in {examples}: Kopf's tree is not what this script expects")
for case in ET.parse(junit).getroot().iter('testcase'):
    classname, name = case.get('classname', ''), case.get('name', '')
    param = re.search(r'\[(.+)\]$', name)
    if param and param.group(1) in rows:
        example, test = param.group(1), 'tests/e2e/test_examples.py'
    else:
        parts = classname.split('.')  # examples.<example>.<module>[.<class>...]
        example = parts[1] if len(parts) > 2 and parts[0] == 'examples' else classname
        test = f"examples/{example}/{parts[2]}.py::" + '::'.join([*parts[3:], name]) if len(parts) > 2 else name
    failed = case.find('failure') is not None or case.find('error') is not None
    skipped = case.find('skipped')
    if skipped is not None:
        result = f"skipped ({skipped.get('message', '')})".replace('|', '/')
    else:
        result = 'FAILED' if failed else 'passed'
    rows.setdefault(example, []).append((test, result))

# Every expected test ran (passed or failed: a skip is not a run); those that did not are rows too.
not_run = {}
for example, tests in expected.items():
    for test in tests:
        got = [result for name, result in rows[example]
               if name == test or name.startswith(test + '[')]
        if not any(result in ('passed', 'FAILED') for result in got):
            not_run.setdefault(example, []).append(f"{test} ({got[0] if got else 'no result'})")
            if not got:
                rows[example].append((test, 'NOT RUN'))

lines = ['| example | Kopf\'s test | result |', '|---|---|---|']
unexpected, gap_passed = [], []
for example, tests in rows.items():
    if not tests:
        lines.append(f'| {example} | (none: the example has no e2e test) | – |')
        continue
    for test, result in tests:
        cell = result
        if result == 'FAILED' and example in known:
            cell = f'FAILED (known gap: {known[example]})'
        elif result == 'FAILED':
            unexpected.append(f'{example}: {test}')
        elif result == 'passed' and example in known:
            gap_passed.append(example)
        lines.append(f'| {example} | `{test}` | {cell} |')
table = '\n'.join(lines) + '\n'
results.write_text(table)
print()
print(table)
for example in gap_passed:
    print(f"note: {example} passes now; remove it from KNOWN_GAPS in tests/kopf-e2e/run.sh")
if unexpected:
    print("unexpected failures:\n  " + "\n  ".join(unexpected))
print(f"{len(expected) - len(not_run)} of the {len(expected)} examples with an e2e test ran "
      f"(expected from {examples}: {', '.join(expected)})")
if not_run:
    print(f"examples with an e2e test that did not run: {', '.join(not_run)}\n  "
          + "\n  ".join(f'{example}: {test}' for example, tests in not_run.items() for test in tests))
any_failed = any(result == 'FAILED' for tests in rows.values() for _, result in tests)
bad_rc = pytest_rc not in (0, 1) or (pytest_rc == 1 and not any_failed)
if bad_rc:
    print(f"pytest failed as a whole: its exit code is {pytest_rc} "
          f"(0: passed, 1: tests failed; else interrupted, an internal or usage error, or nothing collected)")
sys.exit(1 if bad_rc or not_run or unexpected or (os.environ['STRICT'] == '1' and any_failed) else 0)
PY

"""
Runs the reliability scenarios (``tests/reliability/run.sh`` is the way in) and prints the table.

    python suite.py --trials N [--long] [--seed S] [--only NAME] [--table FILE]
"""
import argparse
import importlib
import os
import pathlib
import shutil
import sys
import tempfile
import time

from harness import Context, log, print_table, run_scenarios

# Each scenario is scenarios/<name>.py with run(ctx) -> Row; the table lists them in this order,
# then any others by name. `apiserver` last: its restarts leave the controller manager's watches
# backing off for a while (the garbage collector that `badinput` waits for among them).
ORDER = ['kill9', 'kill9rust', 'outage', 'network', 'conflicts', 'badinput', 'security', 'apiserver']
FOUND = {p.stem for p in (pathlib.Path(__file__).parent / 'scenarios').glob('*.py') if p.stem != '__init__'}
SCENARIOS = [name for name in ORDER if name in FOUND] + sorted(FOUND - set(ORDER))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('--trials', type=int, default=10)
    parser.add_argument('--long', action='store_true')
    parser.add_argument('--seed', type=int, default=20261205)
    parser.add_argument('--only', action='append', default=[], choices=SCENARIOS)
    parser.add_argument('--table', type=pathlib.Path)
    parser.add_argument('--core', required=True)
    args = parser.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='operon-reliability-'))
    kopf = pathlib.Path(sys.executable).parent / 'kopf'
    names = args.only or SCENARIOS
    scenarios = [(name, importlib.import_module(f'scenarios.{name}').run) for name in names]
    make = lambda: Context(workdir=workdir, seed=args.seed, trials=args.trials, long=args.long,  # noqa: E731
                           core=args.core, kopf=kopf)
    started = time.time()
    rows = run_scenarios(scenarios, make=make)
    title = (f"trials {args.trials}, seed {args.seed}{', long' if args.long else ''}; "
             f"{time.strftime('%Y-%m-%d', time.gmtime(started))}, "
             f"commit {os.environ.get('RELIABILITY_COMMIT', 'unknown')}")
    table = print_table(rows, title=title)
    print(table)
    if args.table:
        args.table.write_text(table + '\n')
    failed = [row.scenario for row in rows if row.failures]
    if failed:
        log(f"FAILED: {', '.join(failed)} (logs in {workdir})")
        return 1
    if not os.environ.get("RELIABILITY_KEEP"):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

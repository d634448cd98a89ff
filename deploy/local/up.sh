#!/usr/bin/env bash
# The one-command local environment: control plane, core, example handler, dashboard.
# Today it brings up the real local control plane; the core, the example handler and the dashboard
# join as soon as `operon run` lands (see the issues).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
"$root/deploy/local/prereqs.sh"
eval "$("$root/tests/cluster/up.sh")"
echo
echo "The local control plane is up:  export KUBECONFIG=$KUBECONFIG"
echo "Not yet: the core, the example handler and the dashboard (operon run is not implemented)."
echo "Stop everything with: $root/tests/cluster/down.sh"

#!/usr/bin/env bash
# Entrypoint of the gha-mlops runner image: runs one ephemeral runner from the just-in-time
# config that `gha-mlops runners serve` passes in $GHA_MLOPS_JITCONFIG. With a JIT config the
# runner is registered already, takes exactly one job, and exits; the container then goes.
set -euo pipefail

if [ -z "${GHA_MLOPS_JITCONFIG:-}" ]; then
    echo "gha-mlops runner: GHA_MLOPS_JITCONFIG is not set. This image runs one ephemeral" \
        "runner that 'gha-mlops runners serve' registers and starts with the runner's" \
        "just-in-time config in that variable; it cannot start on its own." >&2
    exit 64  # EX_USAGE
fi
# The config is the runner's credential: keep it out of the environment the job's steps inherit.
cfg=$GHA_MLOPS_JITCONFIG
unset GHA_MLOPS_JITCONFIG

home=/home/runner
cd "$home"
if [ "$(id -u)" = 0 ]; then
    # The runner refuses to run as root; jobs run as `runner`.
    export HOME=$home USER=runner LOGNAME=runner
    exec setpriv --reuid=runner --regid=runner --init-groups -- "$home/run.sh" --jitconfig "$cfg"
fi
exec "$home/run.sh" --jitconfig "$cfg"

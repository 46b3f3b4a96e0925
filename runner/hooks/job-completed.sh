#!/usr/bin/env bash
# ACTIONS_RUNNER_HOOK_JOB_COMPLETED: logs the end of the job and empties the job's temp folder
# (the runner's _work/_temp), in case the work folder outlives the container (a mounted cache).
set -euo pipefail
# shellcheck source=SCRIPTDIR/log.sh
. "$(dirname "${BASH_SOURCE[0]}")/log.sh"
gha_mlops_job_event job-completed
if [ -n "${RUNNER_TEMP:-}" ] && [ -d "$RUNNER_TEMP" ]; then
    # A cleanup failure must not fail the job: say so and go on.
    find "$RUNNER_TEMP" -mindepth 1 -delete \
        || echo "gha-mlops: could not empty $RUNNER_TEMP" >&2
fi

#!/usr/bin/env bash
# ACTIONS_RUNNER_HOOK_JOB_STARTED: logs which runner, job and GPUs the job got.
set -euo pipefail
# shellcheck source=SCRIPTDIR/log.sh
. "$(dirname "${BASH_SOURCE[0]}")/log.sh"
gha_mlops_job_event job-started

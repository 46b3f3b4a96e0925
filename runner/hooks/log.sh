# shellcheck shell=bash
# Sourced by the job hooks: one logfmt line per job event on stderr (the runner puts a hook's
# output in the job's log). The runner gives hooks the job's GITHUB_* variables.
gha_mlops_job_event() {
    printf 'gha-mlops event=%s runner=%s repo=%s job=%s run=%s attempt=%s gpus=%s\n' \
        "$1" "${RUNNER_NAME:-}" "${GITHUB_REPOSITORY:-}" "${GITHUB_JOB:-}" \
        "${GITHUB_RUN_ID:-}" "${GITHUB_RUN_ATTEMPT:-}" "${NVIDIA_VISIBLE_DEVICES:-none}" >&2
}

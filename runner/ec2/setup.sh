#!/usr/bin/env bash
# Builds the gha-mlops EC2 runner AMI: run as root on a fresh Ubuntu 24.04 (or 22.04) x86_64
# instance launched from Canonical's AMI (on a GPU type, e.g. g5.xlarge, to see nvidia-smi work
# at the end), with this repository's runner/ directory copied next to it:
#
#   scp -r runner/ ubuntu@BUILDER:/tmp/runner/
#   ssh ubuntu@BUILDER sudo GHA_MLOPS_VERSION=0.9.0 bash /tmp/runner/ec2/setup.sh
#   aws ec2 create-image --instance-id i-... --name "gha-mlops-runner-$(date +%Y%m%d)"
#
# (or runner/ec2/ami.pkr.hcl with Packer, which does the same). What it installs:
#   - GitHub's runner in /home/runner (user `runner`, uid 1001, as in the runner image),
#     checksum verified, with its .NET dependencies;
#   - the NVIDIA driver (server branch) and the NVIDIA container toolkit, Docker with the
#     nvidia runtime (INSTALL_NVIDIA=0 for a CPU-only AMI);
#   - Python and `pip install 'gha-mlops[aws]'` in /opt/gha-mlops (gha-mlops on PATH);
#   - runner/entrypoint.sh as /usr/local/bin/gha-mlops-runner-entrypoint and the job hooks;
#   - the systemd unit gha-mlops-agent.service, enabled: `gha-mlops runners agent` at boot.
# It leaves no credential, no JIT config and no user data behind: an instance of this AMI
# learns which runner it is from its own tags at boot.
set -euo pipefail

RUNNER_VERSION=${RUNNER_VERSION:-2.324.0}
RUNNER_SHA256=${RUNNER_SHA256:-e8e24a3477da17040b4d6fa6d34c6ecb9a2879e800aa532518ec21e49e21d7b4}
GHA_MLOPS_VERSION=${GHA_MLOPS_VERSION:-}          # empty: the newest release
NVIDIA_DRIVER_BRANCH=${NVIDIA_DRIVER_BRANCH:-550}  # a server branch that has -open modules
INSTALL_NVIDIA=${INSTALL_NVIDIA:-1}
RUNNER_HOME=/home/runner
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(dirname "$here")  # the repository's runner/ directory

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (sudo bash $0)" >&2
    exit 64
fi
for f in entrypoint.sh hooks ec2/gha-mlops-agent.service; do
    if [ ! -e "$src/$f" ]; then
        echo "setup.sh: $src/$f is missing: copy the whole runner/ directory" >&2
        exit 66
    fi
done
case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) echo "setup.sh: unsupported architecture $(uname -m)" >&2; exit 69 ;;
esac
if [ "$arch" = arm64 ] && [ "$RUNNER_SHA256" = e8e24a3477da17040b4d6fa6d34c6ecb9a2879e800aa532518ec21e49e21d7b4 ]; then
    echo "setup.sh: on arm64 set RUNNER_SHA256 to the arm64 tarball's checksum" >&2
    exit 64
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y --no-install-recommends "$@"; }

echo "== base packages"
apt-get update
apt_install ca-certificates curl git jq tar gzip unzip xz-utils zstd gnupg \
    python3 python3-venv python3-pip docker.io

echo "== NVIDIA driver and container toolkit"
if [ "$INSTALL_NVIDIA" = 1 ]; then
    apt_install "linux-headers-$(uname -r)" \
        "nvidia-driver-${NVIDIA_DRIVER_BRANCH}-server-open" \
        "nvidia-utils-${NVIDIA_DRIVER_BRANCH}-server"
    keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
    curl -fsSL --retry 3 https://nvidia.github.io/libnvidia-container/gpgkey \
        | gpg --batch --yes --dearmor -o "$keyring"
    curl -fsSL --retry 3 \
        https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
        | sed "s#deb https://#deb [signed-by=$keyring] https://#g" \
        > /etc/apt/sources.list.d/nvidia-container-toolkit.list
    apt-get update
    apt_install nvidia-container-toolkit
    nvidia-ctk runtime configure --runtime=docker
fi
systemctl enable docker

echo "== GitHub's runner $RUNNER_VERSION"
if ! id runner >/dev/null 2>&1; then
    groupadd --gid 1001 runner
    useradd --uid 1001 --gid 1001 --create-home --home-dir "$RUNNER_HOME" --shell /bin/bash runner
fi
# Jobs use Docker (container actions, services). The docker group is root on this instance;
# the instance serves one job and is terminated, and its role may touch nothing but its own
# parameter and its own interruption tag (docs/runners-aws.md).
usermod -aG docker runner
tarball=$(mktemp)
curl -fsSL --retry 3 -o "$tarball" \
    "https://github.com/actions/runner/releases/download/v${RUNNER_VERSION}/actions-runner-linux-${arch}-${RUNNER_VERSION}.tar.gz"
echo "${RUNNER_SHA256}  ${tarball}" | sha256sum -c -
tar -xzf "$tarball" -C "$RUNNER_HOME"
rm -f "$tarball"
"$RUNNER_HOME/bin/installdependencies.sh"

echo "== gha-mlops and the agent"
python3 -m venv /opt/gha-mlops/venv
/opt/gha-mlops/venv/bin/pip install --no-cache-dir --upgrade pip
/opt/gha-mlops/venv/bin/pip install --no-cache-dir "gha-mlops[aws]${GHA_MLOPS_VERSION:+==$GHA_MLOPS_VERSION}"
ln -sf /opt/gha-mlops/venv/bin/gha-mlops /usr/local/bin/gha-mlops
install -m 0755 "$src/entrypoint.sh" /usr/local/bin/gha-mlops-runner-entrypoint
install -d -m 0755 /opt/gha-mlops/hooks
install -m 0755 "$src"/hooks/*.sh /opt/gha-mlops/hooks/
# The runner's listener reads .env in its directory: the job hooks (the rest of its
# environment comes from the agent's unit).
cat > "$RUNNER_HOME/.env" <<'ENV'
ACTIONS_RUNNER_HOOK_JOB_STARTED=/opt/gha-mlops/hooks/job-started.sh
ACTIONS_RUNNER_HOOK_JOB_COMPLETED=/opt/gha-mlops/hooks/job-completed.sh
ENV
chown -R runner:runner "$RUNNER_HOME"
install -m 0644 "$src/ec2/gha-mlops-agent.service" /etc/systemd/system/gha-mlops-agent.service
systemctl daemon-reload
systemctl enable gha-mlops-agent.service

echo "== checks"
/usr/local/bin/gha-mlops runners agent --help >/dev/null
if [ "$INSTALL_NVIDIA" = 1 ]; then
    # The driver loads after a reboot; on a GPU builder, check it before imaging:
    #   sudo reboot; nvidia-smi; docker run --rm --gpus all ubuntu nvidia-smi
    echo "NVIDIA driver ${NVIDIA_DRIVER_BRANCH} installed (check nvidia-smi after a reboot)"
fi

echo "== cleaning up for imaging"
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/* /var/tmp/*
# Each instance gets its own machine id, host keys and cloud-init run.
truncate -s 0 /etc/machine-id
rm -f /etc/ssh/ssh_host_*
cloud-init clean --logs || true
echo "setup.sh: done; stop the instance and create the image from it"

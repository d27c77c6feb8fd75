#!/usr/bin/env bash
# System packages the test suite needs: PostgreSQL (the store tests run on SQLite and
# PostgreSQL), procps, and the OpenSSH client and server (dev pods are tested with the
# real `ssh`, `scp` and `sftp`; the relay benchmark compares against a local sshd), and
# Chromium with its driver (the web console's end-to-end tests drive /usr/bin/chromium
# through Playwright). Installs them from Debian's packages when missing.
set -euo pipefail
# The example project's dependency, for tests whose hosts cannot reach PyPI: they get it
# from the control plane's wheelhouse (CORRAL_WHEELHOUSE), as an air-gapped fleet would.
wheelhouse="$(dirname "$0")/../.wheelhouse"
if ! ls "$wheelhouse"/tabulate-*.whl >/dev/null 2>&1; then
  "${PYTHON:-.venv/bin/python}" -m pip download --quiet --disable-pip-version-check \
    --only-binary=:all: --no-deps --dest "$wheelhouse" 'tabulate==0.9.0'
fi
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v ps >/dev/null 2>&1 || need+=(procps)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
[[ -x /usr/bin/chromedriver ]] || need+=(chromium-driver)
if ((${#need[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "error: the tests need these Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing ${need[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts a cluster of its own on install; the tests start private ones instead.
service postgresql stop >/dev/null 2>&1 || true

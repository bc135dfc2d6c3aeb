#!/usr/bin/env bash
# Build restore-verify's image (the top-level Dockerfile) with the local Docker engine, where no registry is
# reachable: the base is a Debian bookworm root filesystem with python3 (debootstrapped once, imported as
# local/python:3.11-bookworm) instead of the official python:*-slim image, and pip installs from wheels built here
# beforehand (this machine's pip reaches PyPI or its mirror; a build container may not). Needs a running engine
# (scripts/docker-ci.sh starts one). Idempotent; prints the image's tag.
#
#   IMAGE=restore-verify:0.1.0 PYTHON=.venv/bin/python bash scripts/image-ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "image-ci: $*" >&2; }
PY=${PYTHON:-python3}
version=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
image=${IMAGE:-restore-verify:$version}
base=local/python:3.11-bookworm
docker info >/dev/null 2>&1 || { log "no Docker engine answers (run scripts/docker-ci.sh)"; exit 1; }

if ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  rootfs=${RESTORE_VERIFY_ROOTFS_CACHE:-/var/cache/restore-verify}/bookworm-python
  if [ ! -x "$rootfs/usr/bin/python3" ]; then
    log "debootstrapping a bookworm root filesystem with python3 (about a minute)"
    rm -rf "$rootfs" && mkdir -p "$(dirname "$rootfs")"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" >/dev/null
  fi
  tar -C "$rootfs" -c . | docker import -c 'CMD ["python3"]' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' - "$base" >/dev/null
  log "built $base"
fi

log "building the wheels of the project and its dependencies"
rm -rf build/wheels
"$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir build/wheels . 2> >(grep -v "^WARNING: Location" >&2)
# pip builds /src inside the image (its build backend, isolated): setuptools must be among the wheels too.
"$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --dest build/wheels "setuptools>=68" wheel \
  2> >(grep -v "^WARNING: Location" >&2)
# Barman Cloud's tools (the Dockerfile installs barman without its psycopg2 requirement, psycopg2-binary instead).
"$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps --dest build/wheels \
  "barman>=3.10,<4" 2> >(grep -v "^WARNING: Location" >&2)
"$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --dest build/wheels psycopg2-binary \
  python-dateutil 2> >(grep -v "^WARNING: Location" >&2)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
log "building $image from $base (revision $revision)"
# The build's own output goes to a log (Docker 20.10's legacy builder prints a deprecation notice each time).
buildlog=build/image-build.log
if ! docker build --build-arg BASE="$base" --build-arg PIP_ARGS="--no-index --find-links=/src/build/wheels" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" -t "$image" . >"$buildlog" 2>&1; then
  tail -40 "$buildlog" >&2
  log "docker build failed (whole output in $buildlog)"
  exit 1
fi
echo "$image"

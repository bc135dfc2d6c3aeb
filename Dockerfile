# restore-verify's own image: the suite, its Python dependencies and the embedded PostgreSQL 18 server (the default
# target works in the pod), run as a non-root user. Build from a clone:
#
#   docker build -t restore-verify:0.1.0 .
#
# BASE is any Debian-based image with python3 (>= 3.11) and its venv module; the default is the official slim image.
# Where no registry is reachable, scripts/image-ci.sh builds a local base and passes wheels built beforehand
# (PIP_ARGS="--no-index --find-links=/src/build/wheels").
ARG BASE=python:3.12-slim-bookworm

FROM ${BASE} AS build
ARG PIP_ARGS=""
COPY . /src
# A virtual environment, copied whole into the final stage: no compiler, pip cache or sources left behind. The
# suite's own packages are then imported from /app (a .pth line, as an editable install does), so that pytest's
# plugin entry point, its conftest.py and the report templates are one copy of the code.
# Barman Cloud's tools too (barman-cloud: and cnpg: backups; the recovering server, the same user here, runs
# barman-cloud-wal-restore): barman without its psycopg2 requirement, which would need a compiler and libpq's headers;
# psycopg2-binary stands in for it.
RUN python3 -m venv /opt/restore-verify \
 && /opt/restore-verify/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_ARGS} /src \
 && /opt/restore-verify/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_ARGS} --no-deps \
      "barman>=3.10,<4" \
 && /opt/restore-verify/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_ARGS} psycopg2-binary \
      python-dateutil \
 && site=$(/opt/restore-verify/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && rm -rf "$site/restore" "$site/fixtures" "$site/reports" "$site/checks" \
 && echo /app > "$site/restore-verify.pth"

FROM ${BASE}
ARG BASE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="restore-verify" \
      org.opencontainers.image.description="A pytest suite that proves a PostgreSQL backup restores complete, consistent and usable" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE}"
COPY --from=build /opt/restore-verify /opt/restore-verify
# The suite runs from its project folder (pytest's rootdir: pyproject.toml, conftest.py, checks/). The folder is the
# user's, so that the default reports/runs and examples/out can be written; /reports is for a mounted volume.
COPY --chown=10001:10001 pyproject.toml conftest.py README.md /app/
COPY --chown=10001:10001 checks /app/checks
COPY --chown=10001:10001 fixtures /app/fixtures
COPY --chown=10001:10001 reports /app/reports
COPY --chown=10001:10001 restore /app/restore
COPY --chown=10001:10001 examples /app/examples
# initdb (the embedded server) needs the user to have a name: the CronJob runs as this uid (runAsUser: 10001).
RUN echo "restore-verify:x:10001:10001:restore-verify:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "restore-verify:x:10001:" >> /etc/group \
 && mkdir -p /reports /app/expectations && chown 10001:10001 /reports /app/expectations \
 && rm -rf /app/examples/out /app/reports/runs
ENV PATH=/opt/restore-verify/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
WORKDIR /app
USER 10001:10001
# The CronJob and the fleet's Job give the command (pytest … or python -m restore fleet run …).
CMD ["pytest", "--help"]

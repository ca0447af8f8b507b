#!/usr/bin/env bash
# Start an MLflow tracking server backed by PostgreSQL: the tracking store for many parallel jobs,
# e.g. on a SLURM cluster, where a SQLite file would lock or (on NFS) corrupt.
#
# The database is named by libpq's own environment variables, so the password is never written to
# config.yaml nor shown by `ps`:
#   PGUSER, PGDATABASE   required
#   PGPASSWORD           or an entry in ~/.pgpass
#   PGHOST, PGPORT       default 127.0.0.1 and 5432
# The server is set by mlflow's own variables:
#   MLFLOW_HOST          interface to bind, default 127.0.0.1; jobs on other nodes need the
#                        address they reach this machine at (a private one is accepted as is,
#                        others need MLFLOW_SERVER_ALLOWED_HOSTS)
#   MLFLOW_PORT          default 5000
#   MLFLOW_WORKERS       default 4
#   MLFLOW_ARTIFACTS_DESTINATION  where uploaded artifacts are kept, default ./mlartifacts;
#                        clients upload over HTTP, so jobs need no shared file system for them
#
# Example:  PGUSER=mlflow PGDATABASE=mlflow PGPASSWORD=... scripts/start_tracking_server.sh
set -euo pipefail

: "${PGUSER:?set PGUSER to the PostgreSQL role of the tracking store}"
: "${PGDATABASE:?set PGDATABASE to the PostgreSQL database of the tracking store}"
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
uri="http://${host}:${port}"

echo "MLflow tracking server at ${uri}"
echo "use it: set 'tracking: {uri: ${uri}}' in config.yaml, or export SPARSENETS_TRACKING_URI=${uri}"
exec mlflow server \
    --backend-store-uri "postgresql://${PGUSER}@${PGHOST:-127.0.0.1}:${PGPORT:-5432}/${PGDATABASE}" \
    --host "${host}" --port "${port}" --workers "${MLFLOW_WORKERS:-4}" \
    --serve-artifacts --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-${PWD}/mlartifacts}"

#!/bin/sh
# One database per service, each owned by its own role; no other role may connect to it.
# Runs once, when the data volume is created (docker-entrypoint-initdb.d).
set -eu
for service in auth catalog streaming billing analytics; do
    password_var="$(echo "${service}" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
    password="$(printenv "${password_var}")"
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres \
        -v role="streamify_${service}" -v db="streamify_${service}" -v password="${password}" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role";
REVOKE CONNECT, TEMPORARY ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"role";
SQL
done

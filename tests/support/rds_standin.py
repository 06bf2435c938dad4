"""The RDS stand-in of the tests (DESIGN: "the RDS endpoint played by a PostgreSQL whose master
user is not a superuser"): TLS with a throwaway CA, SCRAM, other roles only over TLS
(rds.force_ssl), a master user with CREATEROLE and CREATEDB in rds_superuser, not a superuser,
owning the database RDS created. Module-scoped fixtures: import them into a test module."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbtier.pgcluster import LocalCluster, chown_to_server_user

from .tlsca import CAFiles, make_ca

DB, MASTER, MASTER_PASSWORD = "mockupaws", "rds_master", "master-pw"


@pytest.fixture(scope="module")
def tls() -> Iterator[CAFiles]:
    base = Path(tempfile.mkdtemp(prefix="dbtier-tls-", dir="/tmp"))
    base.chmod(0o755)
    ca = make_ca(base)
    chown_to_server_user(ca.server_key)  # PostgreSQL and PgBouncer read it as postgres
    try:
        yield ca
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def rds(tls: CAFiles) -> Iterator[LocalCluster]:
    """The RDS stand-in: TLS, SCRAM, a master user that is not a superuser, its database."""
    base = Path(tempfile.mkdtemp(prefix="dbtier-rds-", dir="/tmp"))
    cluster = LocalCluster(
        base=base,
        settings={
            "password_encryption": "'scram-sha-256'",
            "ssl": "on",
            "ssl_cert_file": f"'{tls.server_cert}'",
            "ssl_key_file": f"'{tls.server_key}'",
        },
    )
    cluster.init()
    (cluster.datadir / "pg_hba.conf").write_text(
        f"local all {cluster.superuser} trust\n"
        f"host all {cluster.superuser} 127.0.0.1/32 trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"  # rds.force_ssl = 1
    )
    cluster.start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE rds_superuser NOLOGIN")
        conn.execute(
            f"CREATE ROLE {MASTER} LOGIN CREATEROLE CREATEDB IN ROLE rds_superuser "
            f"PASSWORD '{MASTER_PASSWORD}'"
        )
        conn.execute(f"CREATE DATABASE {DB} OWNER {MASTER}")  # RDS creates db_name so
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def tls_dsn(cluster: LocalCluster, tls: CAFiles, user: str, password: str, db: str = DB) -> str:
    return (
        f"host=127.0.0.1 port={cluster.port} dbname={db} user={user} password={password} "
        f"sslmode=verify-full sslrootcert={tls.ca_cert} connect_timeout=5"
    )


def superuser(cluster: LocalCluster, sql: str, db: str = DB) -> list[tuple]:
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []

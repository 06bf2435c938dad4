"""Verifier of molecule/auth-query: users missing from userlist.txt authenticate via auth_query."""

import testinfra

DB = testinfra.get_host("podman://dbtier-molaq-db1")
BOUNCER = testinfra.get_host("podman://dbtier-molaq-pgbouncer1")


def psql(sql, user, password):
    return BOUNCER.run(
        "PGPASSWORD=%s PGCONNECT_TIMEOUT=5 psql -X -At "
        "'host=127.0.0.1 port=6432 dbname=mockupaws user=%s' -c %s",
        password,
        user,
        sql,
    )


def test_lookup_function_is_security_definer_and_private():
    out = DB.check_output(
        "runuser -u postgres -- psql -X -At -d mockupaws -c "
        "\"SELECT prosecdef, array_to_string(proacl, ',') FROM pg_proc "
        "WHERE proname = 'user_lookup'\""
    )
    secdef, acl = out.split("|")
    assert secdef == "t"
    grantees = {entry.split("=")[0] for entry in acl.split(",")}
    assert grantees == {"postgres", "pgbouncer_auth"}  # no PUBLIC (empty grantee)


def test_user_not_in_userlist_logs_in_through_auth_query():
    userlist = BOUNCER.file("/etc/pgbouncer/userlist.txt").content_string
    assert "reporting_ro" not in userlist
    out = psql("SELECT current_user", "reporting_ro", "insecure-molecule-reporting-password")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == "reporting_ro"


def test_wrong_password_and_superuser_are_refused():
    out = psql("SELECT 1", "reporting_ro", "wrong-password")
    assert out.rc != 0
    out = psql("SELECT 1", "postgres", "anything")
    assert out.rc != 0


def test_listed_users_still_work():
    out = psql("SELECT current_user", "mockupaws_app", "insecure-local-app-password")
    assert out.rc == 0, out.stderr

"""`dbtier status` as text: one aligned block per question, problems last and loud."""

from __future__ import annotations

from typing import Any

from .status import human_age

W = 13  # label column


def _when(iso: str | None) -> str:
    return iso.replace("T", " ") if iso else "-"


def _size(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def render(r: dict[str, Any]) -> str:
    verdict = "OK" if r["healthy"] else f"{len(r['problems'])} PROBLEM(S)"
    out = [
        f"dbtier status on {r['host']} at {_when(r['checked_at'])}: {verdict}",
        f"{'repository':<{W}}{r['repository']}",
    ]
    out += _database(r.get("database") or {})
    out += _backups(r.get("backups"))
    out += _wal(r)
    out += _pitr(r.get("pitr"))
    out.append("schedule" if r["schedule"] else f"{'schedule':<{W}}no schedule configured")
    width = max((len(job) for job in r["schedule"]), default=0) + 2
    out += [f"  {job:<{width}}{when}" for job, when in r["schedule"].items()]
    out += _metrics(r["metrics"])
    if r["problems"]:
        out.append(f"PROBLEMS ({len(r['problems'])}, exit {r['exit_code']})")
        out += [f"  ! {p['message']}" for p in r["problems"]]
    return "\n".join(out)


def _database(d: dict[str, Any]) -> list[str]:
    if not d:
        return []
    if not d["reachable"]:
        return [f"{'database':<{W}}UNREACHABLE: {d['error']}"]
    return [f"{'database':<{W}}{d['target']}: PostgreSQL {d['server_version']}, {d['role']}"]


def _backups(backups: dict[str, Any] | None) -> list[str]:
    if backups is None:
        return []
    out = [
        f"{'backups':<{W}}{'NEWEST GOOD':<29}{'STOPPED AT':<22}{'AGE':<14}{'SIZE':>10}  VERIFIED"
    ]
    for kind, b in backups.items():
        n = b["newest"]
        if n is None:
            out.append(f"  {kind:<{W - 2}}NONE")
        else:
            v = n["verification"]
            verified = (
                v["status"]
                if v["status"] == "never"
                else (f"{v['status']} {v['age']} ago{' (deep)' if v['deep'] else ''}")
            )
            out.append(
                f"  {kind:<{W - 2}}{n['id']:<29}{_when(n['stopped_at']):<22}{n['age']:<14}"
                f"{_size(n['size']):>10}  {verified}"
            )
        out += [f"  {'':<{W - 2}}NOT GOOD {x['id']}: {x['reason']}" for x in b["rejected"]]
        if b["broken"]:
            out.append(f"  {'':<{W - 2}}{b['broken']} broken {kind} backup(s): dbtier backup list")
    return out


def _wal(r: dict[str, Any]) -> list[str]:
    a = r.get("wal_archive")
    if not r["wal_archiving"]:
        return []
    if a is None:
        return [f"{'wal archive':<{W}}unknown: the database cannot be reached"]
    out = [
        f"{'wal archive':<{W}}archive_mode {a['archive_mode']}, archive_timeout "
        f"{a['archive_timeout_seconds']} s, limit {human_age(a['max_age_seconds'])}",
        f"  {'archived':<{W - 2}}{a['archived_count']:<8}last {a['last_archived_wal'] or '-'} at "
        f"{_when(a['last_archived_time'])} ({a['last_archived_age']} ago = live RPO)",
        f"  {'failed':<{W - 2}}{a['failed_count']:<8}last {a['last_failed_wal'] or '-'} at "
        f"{_when(a['last_failed_time'])}{'  FAILING' if a['failing'] else ''}",
    ]
    if a.get("note"):
        out.append(f"  {'':<{W - 2}}{a['note']}")
    return out


def _pitr(p: dict[str, Any] | None) -> list[str]:
    if p is None:
        return []
    if p.get("note"):
        return [f"{'pitr':<{W}}{p['note']}"]
    out = []
    for i, w in enumerate(p["windows"]):
        label = "pitr window" if i == 0 else ""
        out.append(
            f"{label:<{W}}{_when(w['start'])} -> {_when(w['end'])} ({w['end_age']} ago), "
            f"from {w['base_backup']} through {w['end_wal']}"
        )
        if w["gap"]:
            out.append(
                f"{'':<{W}}GAP: {w['gap']['first_missing']} missing "
                f"({w['gap']['missing_segments']} segment(s))"
            )
    return out


def _metrics(m: dict[str, Any]) -> list[str]:
    out = [f"{'metrics':<{W}}{m['dir'] or '-'}" + (f" ({m['note']})" if m.get("note") else "")]
    width = max([W + 2, *(len(j["job"]) + 1 for j in m["jobs"])])
    for j in m["jobs"]:
        since = f" ({j['last_success_age']} ago)" if j["last_success"] else ""
        out.append(
            f"  {j['job']:<{width}}{j['last_status']:<8}last success "
            f"{_when(j['last_success'])}{since}"
        )
    return out

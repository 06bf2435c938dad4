"""fmt, validate and `terraform test` (mock providers) for every module and environment."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import (
    BOOTSTRAP,
    MOTO_OVERRIDES,
    ROOT,
    TF_SRC,
    Terraform,
    copy_tree,
    environment_dirs,
    example_dirs,
    module_dirs,
    needs_provider_aliases,
)

pytestmark = pytest.mark.terraform


def rel(p: Path) -> str:
    return str(p.relative_to(TF_SRC))


VALIDATE_DIRS = [
    *(m for m in module_dirs() if not needs_provider_aliases(m)),
    *example_dirs(),
    *environment_dirs(),
]


def test_fmt(terraform: Terraform) -> None:
    for tree in (TF_SRC, MOTO_OVERRIDES):
        proc = terraform.run(ROOT, "fmt", "-check", "-recursive", "-diff", str(tree), check=False)
        assert proc.returncode == 0, f"terraform fmt would change files:\n{proc.stdout}"


def test_every_module_is_validated() -> None:
    """A module with provider aliases is validated through its examples: it must have one."""
    for module in module_dirs():
        if needs_provider_aliases(module):
            assert list(module.glob("examples/*/main.tf")), f"{rel(module)} needs an example"
        for required in ("variables.tf", "outputs.tf", "versions.tf", "README.md"):
            assert (module / required).is_file(), f"{rel(module)}/{required} missing"
        assert list((module / "tests").glob("*.tftest.hcl")), f"{rel(module)} has no tftest"


@pytest.mark.parametrize("src", VALIDATE_DIRS, ids=rel)
def test_validate(terraform: Terraform, tf_copy: Path, src: Path) -> None:
    workdir = tf_copy / rel(src)
    terraform.init(workdir, "-backend=false")
    proc = terraform.run(workdir, "validate", "-json", check=False)
    result = json.loads(proc.stdout)
    assert result["valid"], json.dumps(result["diagnostics"], indent=2)
    assert result["warning_count"] == 0, json.dumps(result["diagnostics"], indent=2)


@pytest.mark.parametrize("src", module_dirs(), ids=rel)
def test_terraform_test(terraform: Terraform, tf_copy: Path, src: Path) -> None:
    """The module's *.tftest.hcl: validations reject bad input; the plan has what matters."""
    workdir = tf_copy / rel(src)
    terraform.init(workdir, "-backend=false")
    proc = terraform.run(workdir, "test", timeout=600, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
    assert " 0 failed" in proc.stdout or "Success!" in proc.stdout, proc.stdout[-4000:]


def test_no_environment_points_at_a_local_api() -> None:
    """Endpoints, fake credentials and skip flags live only in the moto override files."""
    for tf in TF_SRC.rglob("*.tf"):
        if ".terraform" in tf.parts:
            continue
        text = tf.read_text()
        assert not tf.name.endswith("_override.tf"), f"override file in the real tree: {tf}"
        for needle in ("127.0.0.1", "localhost", "skip_credentials_validation"):
            assert needle not in text, f"{tf.relative_to(ROOT)} mentions {needle}"
        # a provider's `endpoints { ... }` block (VPC endpoints are resources, not this)
        assert not re.search(r"^\s*endpoints\s*[{=]", text, re.M), (
            f"{tf.relative_to(ROOT)} sets provider endpoints"
        )


def test_checkov() -> None:
    """checkov (its own venv under .run/, offline) finds no failed check in terraform/."""
    proc = subprocess.run(
        [
            "bash",
            str(BOOTSTRAP),
            "checkov",
            "--directory",
            str(TF_SRC),
            "--framework",
            "terraform",
            "--skip-download",
            "--quiet",
            "--compact",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode == 4:
        pytest.skip(f"checkov could not be installed: {proc.stderr.strip()}")
    assert proc.stdout.strip(), proc.stderr[-3000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert passed > 50, f"checkov passed only {passed} checks: did it scan terraform/?"


# --------------------------------------------------------------------------- environments --

ENV_TFTEST = Path(__file__).resolve().parent / "tftest" / "environment.tftest.hcl"
ENV_FILES = {
    "versions.tf",
    "providers.tf",
    "main.tf",
    "variables.tf",
    "outputs.tf",
    "terraform.tfvars",
    "backend.hcl.example",
}
# used by the environment itself (providers, tags), not passed to module "tier"
ENV_ONLY_VARS = {"region", "dr_region", "extra_tags"}


def blocks(text: str, kind: str) -> list[str]:
    """Names of the top-level `kind "name" {` blocks of an HCL file (output, variable, module)."""
    return re.findall(rf'^{kind} "([A-Za-z0-9_-]+)"', text, re.M)


def module_block(text: str, name: str) -> str:
    start = text.index(f'module "{name}" {{')
    end = text.index("\n}\n", start)
    return text[start:end]


def test_environments_only_compose_the_tier() -> None:
    """An environment is its backend, providers and values: the tier lives in modules/tier."""
    tier = TF_SRC / "modules" / "tier"
    tier_vars = set(blocks((tier / "variables.tf").read_text(), "variable"))
    tier_outputs = blocks((tier / "outputs.tf").read_text(), "output")
    envs = environment_dirs()
    assert [e.name for e in envs] == ["production", "staging"]
    for env in envs:
        files = {p.name for p in env.iterdir() if p.is_file() and not p.name.startswith(".")}
        assert files <= ENV_FILES, f"{rel(env)} holds more than an environment: {files - ENV_FILES}"
        main = (env / "main.tf").read_text()
        assert blocks(main, "module") == ["tier"], f"{rel(env)}/main.tf calls more than the tier"
        for kind in ("resource", "data"):
            assert not blocks(main, kind), f"{rel(env)}/main.tf declares a {kind}"
        call = module_block(main, "tier")
        assert 'source = "../../modules/tier"' in call
        env_vars = set(blocks((env / "variables.tf").read_text(), "variable"))
        passed = set(re.findall(r"^\s+([a-z_]+)\s+=\s+var\.([a-z_]+)$", call, re.M))
        assert {a for a, v in passed if a == v} == env_vars - ENV_ONLY_VARS, (
            f"{rel(env)}: every variable goes to module.tier under its own name"
        )
        assert env_vars - ENV_ONLY_VARS <= tier_vars
        outputs = (env / "outputs.tf").read_text()
        assert blocks(outputs, "output") == tier_outputs, f"{rel(env)}: outputs != tier outputs"
        for name in tier_outputs:
            assert f"value       = module.tier.{name}\n" in outputs, f"{rel(env)}: {name}"
        # state of the modules formerly called from here moves, it is not destroyed
        for module in ("network", "backup_buckets", "rds", "iam", "pgbouncer_hosts", "ops_host"):
            assert f"from = module.{module}\n  to   = module.tier.module.{module}\n" in main
    # the few real differences are the values: everything else is the same text
    for name in ENV_FILES - {"terraform.tfvars", "backend.hcl.example"}:
        texts = {(e / name).read_text() for e in envs}
        assert len(texts) == 1, f"{name} differs between the environments"


@pytest.mark.parametrize("src", environment_dirs(), ids=rel)
def test_environment_tfvars_pass_the_tier(terraform: Terraform, tf_copy: Path, src: Path) -> None:
    """The real terraform.tfvars, through the whole tier, against mock providers."""
    workdir = tf_copy / rel(src)
    (workdir / "tests").mkdir(exist_ok=True)
    shutil.copy(ENV_TFTEST, workdir / "tests" / ENV_TFTEST.name)
    terraform.init(workdir, "-backend=false")
    proc = terraform.run(workdir, "test", timeout=600, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
    assert "1 passed, 0 failed" in proc.stdout, proc.stdout[-4000:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # staging used to expire backups after 14 days while dbtier keeps them 30
        (
            ["-var", "backup_expiration_days=14"],
            "backup_expiration_days (14) must be at least backup_retention_days (30) + "
            "backup_retention_margin_days (7) = 37: S3 would delete backups dbtier still keeps.",
        ),
        (
            ["-var", "backup_retention_days=40"],
            "backup_expiration_days (37) must be at least backup_retention_days (40) + "
            "backup_retention_margin_days (7) = 47",
        ),
        (
            ["-var", "backup_noncurrent_expiration_days=7"],
            "backup_noncurrent_expiration_days (7) must be null or at least "
            "backup_retention_days (30) + backup_retention_margin_days (7) = 37",
        ),
        (
            ["-var", "backup_retention_margin_days=0"],
            "backup_retention_margin_days must be at least 1",
        ),
    ],
    ids=["expiration-14", "retention-40", "noncurrent-7", "margin-0"],
)
def test_lifecycle_shorter_than_retention_fails_the_plan(
    terraform: Terraform, tmp_path: Path, args: list[str], message: str
) -> None:
    """Staging's values with a lifecycle that would delete kept backups: refused, with why."""
    tree = copy_tree(tmp_path)
    workdir = tree / "environments" / "staging"
    (workdir / "tests").mkdir()
    shutil.copy(ENV_TFTEST, workdir / "tests" / ENV_TFTEST.name)
    terraform.init(workdir, "-backend=false")
    proc = terraform.run(workdir, "test", *args, timeout=600, check=False)
    out = " ".join((proc.stdout + proc.stderr).split())  # terraform wraps long messages
    assert proc.returncode != 0, out[-3000:]
    assert "Invalid value for variable" in out and message in out, out[-3000:]


# ------------------------------------------------------------------------ network and access --

INGRESS_RULE = re.compile(
    r'resource "aws_(?:vpc_security_group_ingress_rule|security_group_rule)" "[^"]+" \{(.*?)\n\}',
    re.S,
)


def test_no_rule_opens_ssh_or_the_world() -> None:
    """Management goes through SSM Session Manager: no ingress on 22, none from 0.0.0.0/0."""
    for tf in TF_SRC.rglob("*.tf"):
        text = tf.read_text()
        assert "ingress {" not in text, f"{tf}: inline ingress blocks hide from this check"
        for body in INGRESS_RULE.findall(text):
            ports = re.findall(r"(?:from_port|to_port)\s*=\s*(\S+)", body)
            assert "22" not in ports, f"{tf.relative_to(ROOT)}: an ingress rule opens SSH"
            assert "0.0.0.0/0" not in body and "::/0" not in body, f"{tf}: ingress from anywhere"


def test_hosts_are_managed_over_ssm() -> None:
    """Both host roles get AmazonSSMManagedInstanceCore; the tier turns it on for both."""
    for module in ("pgbouncer_hosts", "iam"):
        main = (TF_SRC / "modules" / module / "main.tf").read_text()
        assert "policy/AmazonSSMManagedInstanceCore" in main, module
        variables = (TF_SRC / "modules" / module / "variables.tf").read_text()
        assert re.search(r'variable "ssm_session_manager" \{[^}]*default\s+= true', variables)
    tier = (TF_SRC / "modules" / "tier" / "main.tf").read_text()
    for module in ("pgbouncer_hosts", "iam"):
        assert re.search(r"ssm_session_manager\s+= true", module_block(tier, module)), module
    for module in ("pgbouncer_hosts", "ops_host"):
        user_data = (TF_SRC / "modules" / module / "user_data.sh.tftpl").read_text()
        assert "amazon-ssm-agent" in user_data, f"{module}: the SSM agent is not installed"


# -------------------------------------------------------------------------------- docs ---

DOCS = sorted([*(ROOT / "docs").glob("*.md"), *TF_SRC.rglob("README.md"), ROOT / "README.md"])
RESTORE_RDS = re.compile(r"--rds-instance (\S+)(?: --target-time \"[^\"]*\")? --new-instance (\S+)")
ADDRESS = re.compile(r"((?:module\.[a-z_]+\.)+)(aws_[a-z0-9_]+)\.([a-z0-9_]+)")


def test_documented_rds_restore_is_allowed_by_iam() -> None:
    """`dbtier restore rds` examples name a real source and a target the ops role may create."""
    iam_vars = (TF_SRC / "modules" / "iam" / "variables.tf").read_text()
    suffix = re.search(r'variable "restore_suffix" \{.*?default\s+= "([^"]+)"', iam_vars, re.S)
    assert suffix
    sources = set()
    for env in environment_dirs():
        env_vars = (env / "variables.tf").read_text()
        project = re.search(r'variable "project" \{.*?default\s+= "([^"]+)"', env_vars, re.S)
        assert project, f"{rel(env)}: no default project"
        sources.add(f"{project[1]}-{env.name}")
    examples = []
    for doc in DOCS:
        text = " ".join(doc.read_text().split())
        for m in RESTORE_RDS.finditer(text):
            examples.append((doc.name, m[1].strip("`"), m[2].strip("`")))
    assert examples, "no `dbtier restore rds` example found in the docs"
    for doc, source, target in examples:
        if source.isupper():  # placeholder such as NAME
            continue
        assert source in sources, f"{doc}: --rds-instance {source} is no RDS identifier ({sources})"
        assert target.startswith(f"{source}{suffix[1]}"), (
            f"{doc}: --new-instance {target} is outside what the ops role may create "
            f"({source}{suffix[1]}*)"
        )


def module_tree(path: Path) -> dict[str, Path]:
    """`module.a.module.b` -> directory, for every module call reachable from path."""
    found: dict[str, Path] = {}
    for tf in path.glob("*.tf"):
        for name, source in re.findall(
            r'^module "([a-z_]+)" \{\n\s+source\s+= "([^"]+)"', tf.read_text(), re.M
        ):
            child = (path / source).resolve()
            found[f"module.{name}"] = child
            for sub, d in module_tree(child).items():
                found[f"module.{name}.{sub}"] = d
    return found


def test_documented_resource_addresses_exist() -> None:
    """Addresses in the docs (terraform apply -replace=..., state mv) name real resources."""
    tree = module_tree(TF_SRC / "environments" / "production")
    addresses = []
    for doc in DOCS:
        for m in ADDRESS.finditer(doc.read_text()):
            addresses.append((doc.name, m[1].rstrip("."), m[2], m[3]))
    assert addresses, "no resource address found in the docs"
    for doc, module, rtype, name in addresses:
        assert module in tree, f"{doc}: {module} does not exist (modules: {sorted(tree)})"
        text = "".join(t.read_text() for t in tree[module].glob("*.tf"))
        assert f'resource "{rtype}" "{name}"' in text, f"{doc}: {module}.{rtype}.{name} not found"

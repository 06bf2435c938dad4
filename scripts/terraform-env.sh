#!/usr/bin/env bash
# Bootstrap for Terraform in this repo, offline-first.
#
#   eval "$(scripts/terraform-env.sh)"         # exports TF_CLI_CONFIG_FILE (and TF_IN_AUTOMATION)
#   scripts/terraform-env.sh checkov [ARGS...]  # runs checkov from its own venv (.run/checkov-venv)
#
# The CLI config is written to .run/terraform/cli.tfrc (gitignored). It points Terraform at the
# provider filesystem mirror found on this machine (the folder holding `registry.terraform.io/`),
# and forbids direct registry downloads for the hashicorp namespace so an offline run fails fast
# instead of hanging. Override the discovery with DBTIER_TF_MIRROR=/path/to/mirror.
# With no mirror on the machine, the config falls back to the public registry (online machines).
#
# Exit codes: 0 ok; 3 terraform not installed; 4 checkov venv could not be created.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${DBTIER_RUN_DIR:-$ROOT/.run}"
CHECKOV_VERSION="${DBTIER_CHECKOV_VERSION:-3.3.30}"

find_mirror() {
  if [[ -n "${DBTIER_TF_MIRROR:-}" ]]; then
    [[ -d "$DBTIER_TF_MIRROR/registry.terraform.io" ]] && { echo "$DBTIER_TF_MIRROR"; return 0; }
    echo "DBTIER_TF_MIRROR=$DBTIER_TF_MIRROR holds no registry.terraform.io/ folder" >&2
    return 1
  fi
  local d
  d="$(find / -xdev -maxdepth 4 -type d -name registry.terraform.io \
        -not -path '*/.terraform/*' -not -path '/proc/*' 2>/dev/null | head -n 1 || true)"
  [[ -n "$d" ]] && dirname "$d"
  return 0
}

write_cli_config() {
  local mirror cfg
  mirror="$(find_mirror)"
  mkdir -p "$RUN/terraform/plugin-cache"
  cfg="$RUN/terraform/cli.tfrc"
  if [[ -n "$mirror" ]]; then
    cat >"$cfg" <<HCL
# written by scripts/terraform-env.sh; do not edit
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/*"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/*"]
  }
}
HCL
  else
    cat >"$cfg" <<HCL
# written by scripts/terraform-env.sh; no provider mirror found on this machine
plugin_cache_dir = "$RUN/terraform/plugin-cache"
HCL
  fi
  echo "$cfg"
}

cmd="${1:-env}"
case "$cmd" in
  env)
    command -v terraform >/dev/null || { echo "terraform is not installed (not on PATH)" >&2; exit 3; }
    cfg="$(write_cli_config)"
    echo "export TF_CLI_CONFIG_FILE='$cfg'"
    echo "export TF_IN_AUTOMATION=1"
    ;;
  mirror)
    # prints the mirror folder, or nothing when there is none
    find_mirror
    ;;
  checkov)
    shift
    venv="$RUN/checkov-venv"
    if [[ ! -x "$venv/bin/checkov" ]] || ! "$venv/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
      # checkov pins boto3, packaging and networkx below what ansible/molecule need: own venv
      python3 -m venv "$venv" || exit 4
      "$venv/bin/pip" install -q "checkov==$CHECKOV_VERSION" >"$RUN/checkov-install.log" 2>&1 || { echo "checkov install failed, see $RUN/checkov-install.log" >&2; exit 4; }
    fi
    exec "$venv/bin/checkov" "$@"
    ;;
  *)
    echo "usage: $0 [env|mirror|checkov ARGS...]" >&2
    exit 2
    ;;
esac

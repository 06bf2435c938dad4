#!/bin/sh
# ansible-vault password client for the staging and production inventories: prints the vault
# password from the environment variable DBTIER_VAULT_PASSWORD, so it is never stored in the
# repository or on disk. Use it as
#   DBTIER_VAULT_PASSWORD=... ansible-playbook ansible/site.yml -i inventories/staging \
#       --vault-password-file scripts/vault-pass.sh
# or export ANSIBLE_VAULT_PASSWORD_FILE=scripts/vault-pass.sh once per shell.
# In CI, DBTIER_VAULT_PASSWORD comes from the CI secret store.
if [ -z "${DBTIER_VAULT_PASSWORD:-}" ]; then
  echo "vault-pass.sh: DBTIER_VAULT_PASSWORD is not set (ask the team's secret store for it)" >&2
  exit 1
fi
printf '%s\n' "$DBTIER_VAULT_PASSWORD"

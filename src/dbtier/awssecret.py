"""The RDS master credentials from the Secrets Manager secret RDS manages for the instance
(manage_master_user_password: a JSON document {"username": ..., "password": ...}).

Read where the IAM policy allows it (the ops host's instance role may read that one secret), with
boto3 (Debian's python3-boto3 there). Errors are one line and never contain the secret.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import DbtierError, UsageError


def read_credentials(
    secret_id: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    keys: tuple[str, str] = ("username", "password"),
) -> dict[str, str]:
    """{"username": ..., "password": ...} of the secret's current version (`keys`: the names of
    those two fields in the secret's JSON, RDS's by default)."""
    username_key, password_key = keys
    if not secret_id:
        raise UsageError("no secret id (the ARN of the RDS master user secret) given")
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise DbtierError("boto3 is not installed (Debian: python3-boto3)") from None
    if not region and secret_id.startswith("arn:"):
        region = secret_id.split(":")[3] or None  # arn:aws:secretsmanager:REGION:ACCOUNT:secret:...
    try:
        client = boto3.client(
            "secretsmanager", region_name=region or None, endpoint_url=endpoint_url or None
        )
        response: dict[str, Any] = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DbtierError(
            f"cannot read secret {secret_id}: {error.get('Code', 'error')}: "
            f"{error.get('Message', '')}".rstrip(": ")
        ) from None
    except BotoCoreError as exc:
        raise DbtierError(f"cannot read secret {secret_id}: {exc}") from None
    try:
        document = json.loads(response.get("SecretString") or "")
    except ValueError:
        raise DbtierError(f"secret {secret_id} is not a JSON document") from None
    if not isinstance(document, dict):
        raise DbtierError(f"secret {secret_id} is not a JSON object")
    missing = [k for k in (username_key, password_key) if not document.get(k)]
    if missing:
        raise DbtierError(f"secret {secret_id} has no {' or '.join(missing)}")
    return {"username": str(document[username_key]), "password": str(document[password_key])}

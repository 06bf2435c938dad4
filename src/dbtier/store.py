"""Opening the backup repository from the settings: the one way every command does it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import catalog, keys
from .config import Settings
from .repository import Repository, open_repository

REPOSITORY_HINT = "set BACKUP_REPOSITORY or repository= in dbtier.toml"


@dataclass
class Store:
    """A repository and the master key that seals it."""

    repo: Repository
    provider: keys.KeyProvider
    settings: Settings

    def bind(self, system_identifier: str | None) -> dict[str, Any]:
        """Before writing: the repository must be bound to this key (and cluster)."""
        return catalog.bind(self.repo, self.provider, system_identifier)

    def describe(self) -> str:
        return self.repo.describe()


def open_store(settings: Settings, url: str | None = None, *, region: str | None = None) -> Store:
    """The configured repository (or url, e.g. the DR bucket); the key is loaded first, so a
    missing or malformed key fails before any repository is touched."""
    provider = keys.from_settings(settings)
    repo = open_repository(
        url or settings.require("repository", REPOSITORY_HINT),
        storage_class=settings.storage_class,
        endpoint_url=settings.endpoint_url,
        region=region or settings.region,
    )
    return Store(repo=repo, provider=provider, settings=settings)

"""Container records on disk (``containers/<id>/config.v2.json``) and the in-memory index.

The index (ids, names) is derived by scanning at start-up; the JSON files are the only
source of truth and every change is written through before the API call returns.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from engine import errdefs, ids
from engine.containers.model import Container
from storage.jsonfile import atomic_write_json, read_json

CONFIG_FILE = "config.v2.json"


class ContainerStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._by_id: dict[str, Container] = {}
        self._names: dict[str, str] = {}
        for d in sorted(root.iterdir()):
            cfg = d / CONFIG_FILE
            if not cfg.is_file():
                continue
            c = Container.from_record(read_json(cfg))
            self._by_id[c.id] = c
            self._names[c.name] = c.id

    def dir(self, cid: str) -> Path:
        return self.root / cid

    def __iter__(self) -> Iterator[Container]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def names(self) -> set[str]:
        return set(self._names)

    def owner_of(self, name: str) -> str | None:
        """The id of the container holding ``name`` (with its leading "/"), if any."""
        return self._names.get(name)

    def reserve(self, container: Container) -> None:
        """Claim the name and write the record; 409 with dockerd's text if the name is taken."""
        owner = self._names.get(container.name)
        if owner is not None and owner != container.id:
            raise name_conflict(container.name, owner)
        self._names[container.name] = container.id
        self._by_id[container.id] = container
        try:
            self.save(container)
        except BaseException:
            self._names.pop(container.name, None)
            self._by_id.pop(container.id, None)
            raise

    def save(self, container: Container) -> None:
        atomic_write_json(self.dir(container.id) / CONFIG_FILE, container.to_record())

    def rename(self, container: Container, new_name: str) -> None:
        owner = self._names.get(new_name)
        if owner is not None and owner != container.id:
            raise name_conflict(new_name, owner)
        old = container.name
        self._names[new_name] = container.id
        container.name = new_name
        try:
            self.save(container)
        except BaseException:
            container.name = old
            self._names.pop(new_name, None)
            raise
        self._names.pop(old, None)

    def delete(self, container: Container) -> None:
        self._by_id.pop(container.id, None)
        if self._names.get(container.name) == container.id:
            self._names.pop(container.name, None)
        shutil.rmtree(self.dir(container.id), ignore_errors=True)

    def get(self, ref: str) -> Container:
        """Full id, name (with or without "/"), or unique id prefix, as dockerd resolves them."""
        if ref in self._by_id:
            return self._by_id[ref]
        name = ref if ref.startswith("/") else "/" + ref
        if name in self._names:
            return self._by_id[self._names[name]]
        matches = ids.match_prefix(ref, self._by_id)
        if len(matches) == 1:
            return self._by_id[matches[0]]
        if len(matches) > 1:
            raise errdefs.InvalidParameter(f"multiple IDs found with provided prefix: {ref}")
        raise errdefs.no_such_container(ref)


def name_conflict(name: str, owner: str) -> errdefs.Conflict:
    return errdefs.Conflict(
        f'Conflict. The container name "{name}" is already in use by container "{owner}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )

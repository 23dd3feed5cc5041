"""``docker rmi`` and ``docker image prune``: dockerd's ImageDelete / ImagesPrune decisions.

Deleting by *name* untags; the image itself goes only when no reference is left (and then quietly:
a conflict just keeps it). Deleting by *ID* removes the image with its references, unless it is
tagged in several repositories (soft conflict, ``-f`` overrides) or a running container or a child
image needs it (hard conflict). Records are ``{"Untagged": ref}`` / ``{"Deleted": id}`` in
dockerd's order, followed by one ``{"Deleted": chain_id}`` per layer released.

Runs in a worker thread with ``repo.lock`` held; ``usage`` is a snapshot of which containers use
which image, taken on the event loop before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from engine import errdefs
from engine.images.filters import FilterMap, bool_or_default, match_kv, validate
from engine.images.reference import Reference, parse_normalized_named
from engine.images.repo import ImageRepo
from engine.images.timestamps import get_timestamp

Usage = Mapping[str, Sequence[tuple[str, bool]]]
Record = dict[str, str]

_CHILD = 1
_RUNNING = 2
_ACTIVE_REF = 4
_STOPPED = 8
_HARD = _CHILD | _RUNNING
_SOFT = _ACTIVE_REF | _STOPPED

PRUNE_FILTERS = ("dangling", "label", "label!", "until")


@dataclass(frozen=True)
class _Conflict:
    image_id: str
    hard: bool
    used: bool
    message: str

    def error(self) -> errdefs.Conflict:
        how = "cannot be forced" if self.hard else "must be forced"
        return errdefs.Conflict(f"conflict: unable to delete {self.image_id[7:19]} ({how}) - {self.message}")


def is_image_id_prefix(image_id: str, candidate: str) -> bool:
    return image_id.startswith(candidate) or image_id[7:].startswith(candidate)


def is_single_reference(refs: Sequence[Reference]) -> bool:
    """At most one tag, and every reference in that one repository."""
    if len(refs) <= 1:
        return len(refs) == 1
    single: Reference | None = None
    canonical_names: set[str] = set()
    for ref in refs:
        if ref.digest is not None:
            canonical_names.add(ref.name)
        elif single is None:
            single = ref
        else:
            return False
    if single is None:
        single = refs[0]
    return len(canonical_names) == 1 and single.name in canonical_names


class Deleter:
    def __init__(self, repo: ImageRepo, usage: Usage) -> None:
        self._repo = repo
        self._usage = usage

    def _containers(self, image_id: str) -> Sequence[tuple[str, bool]]:
        return self._usage.get(image_id, ())

    def delete(self, image_ref: str, force: bool, prune: bool) -> list[Record]:
        if not image_ref.strip():
            raise errdefs.InvalidParameter("image name cannot be blank")
        repo = self._repo
        records: list[Record] = []
        image = repo.resolve(image_ref)
        image_id = image.id
        refs = list(repo.references(image_id))
        removed_repository_ref = False
        if not is_image_id_prefix(image_id, image_ref):
            users = self._containers(image_id)
            if not force and is_single_reference(refs) and users:
                raise errdefs.Conflict(
                    f'conflict: unable to remove repository reference "{image_ref}" (must force) - '
                    f"container {users[0][0][:12]} is using its referenced image {image_id[7:19]}"
                )
            parsed = repo.remove_reference(parse_normalized_named(image_ref))
            repo.event("untag", image_id, image_id)
            records.append({"Untagged": parsed.familiar()})
            refs = list(repo.references(image_id))
            # A removed tag takes along the digest references of its repository when no tag
            # of that repository remains.
            if parsed.digest is None and not any(r.digest is None and r.name == parsed.name for r in refs):
                remaining: list[Reference] = []
                for ref in refs:
                    if ref.digest is not None and ref.name == parsed.name:
                        repo.remove_reference(ref)
                        records.append({"Untagged": ref.familiar()})
                    else:
                        remaining.append(ref)
                refs = remaining
            if refs:
                return records
            removed_repository_ref = True
        elif is_single_reference(refs):
            mask = _HARD if force else _HARD | (_SOFT & ~_ACTIVE_REF)
            conflict = self._check_conflict(image_id, mask)
            if conflict is not None:
                raise conflict.error()
            for ref in refs:
                removed = repo.remove_reference(ref)
                repo.event("untag", image_id, image_id)
                records.append({"Untagged": removed.familiar()})
        self._delete_helper(image_id, records, force, prune, removed_repository_ref)
        return records

    def _delete_helper(
        self, image_id: str, records: list[Record], force: bool, prune: bool, quiet: bool
    ) -> None:
        repo = self._repo
        conflict = self._check_conflict(image_id, _HARD if force else _HARD | _SOFT)
        if conflict is not None:
            if quiet and (not self._is_dangling(image_id) or conflict.used):
                return
            raise conflict.error()
        image = repo.image(image_id)
        parent = image.meta.parent
        for ref in image.references:
            removed = repo.remove_reference(ref)
            repo.event("untag", image_id, image_id)
            records.append({"Untagged": removed.familiar()})
        layers = repo.remove_image(image)
        repo.event("delete", image_id, image_id)
        records.append({"Deleted": image_id})
        records.extend({"Deleted": chain} for chain in layers)
        if prune and parent and repo.store.exists(parent):
            self._delete_helper(parent, records, False, True, True)

    def _check_conflict(self, image_id: str, mask: int) -> _Conflict | None:
        repo = self._repo
        if mask & _CHILD and repo.store.children(image_id):
            return _Conflict(image_id, True, False, "image has dependent child images")
        users = self._containers(image_id)
        if mask & _RUNNING:
            running = [cid for cid, is_running in users if is_running]
            if running:
                return _Conflict(
                    image_id, True, True, f"image is being used by running container {running[0][:12]}"
                )
        if mask & _ACTIVE_REF and repo.store.references(image_id):
            return _Conflict(image_id, False, False, "image is referenced in multiple repositories")
        if mask & _STOPPED:
            stopped = [cid for cid, is_running in users if not is_running]
            if stopped:
                return _Conflict(
                    image_id, False, True, f"image is being used by stopped container {stopped[0][:12]}"
                )
        return None

    def _is_dangling(self, image_id: str) -> bool:
        store = self._repo.store
        return not store.references(image_id) and not store.children(image_id)

    # --- prune -----------------------------------------------------------------------------------

    def prune(self, filters: FilterMap, publish_prune: Callable[[int], None]) -> dict[str, object]:
        validate(filters, PRUNE_FILTERS)
        repo = self._repo
        dangling_only = bool_or_default(filters, "dangling", True)
        until = None
        if "until" in filters:
            values = list(filters["until"])
            if len(values) > 1:
                raise errdefs.Internal("more than one until filter specified")
            until = get_timestamp(values[0])
        images = repo.images()
        if dangling_only:
            images = [i for i in images if not repo.store.children(i.id)]
        sizes: dict[str, int] = {}
        candidates = []
        for image in images:
            if not image.references and repo.store.children(image.id):
                continue
            created = image.created
            if until is not None and (created is None or created.total_ns() > until.total_ns()):
                continue
            if image.config.get("config") is not None and not _match_labels(filters, image.labels):
                continue
            candidates.append(image)
            for chain in image.chain_ids:
                sizes[chain] = repo.layer_size(chain)
        deleted: list[Record] = []
        for image in candidates:
            if not repo.store.exists(image.id):
                continue
            refs = list(repo.references(image.id))
            if refs:
                if dangling_only and any(r.tag is not None and r.digest is None for r in refs):
                    continue
                for ref in refs:
                    deleted.extend(self._try_delete(str(ref)))
            else:
                deleted.extend(self._try_delete(image.id[7:]))
        reclaimed = sum(sizes.get(r["Deleted"], 0) for r in deleted if "Deleted" in r)
        publish_prune(reclaimed)
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def _try_delete(self, ref: str) -> list[Record]:
        try:
            return self.delete(ref, False, True)
        except errdefs.EngineError:
            return []


def _match_labels(filters: FilterMap, labels: dict[str, str] | None) -> bool:
    if not match_kv(list(filters.get("label", ())), labels):
        return False
    negated = list(filters.get("label!", ()))
    return not (negated and match_kv(negated, labels))

"""ImageRepo: the synchronous image graph (images, references, layers, blobs) behind ImageService.

It knows how dockerd resolves a name or ID (``GetImage``), keeps references as parsed Docker
references, and removes an image together with the layers and blobs nothing else uses. Everything
here blocks (file system work) and runs in worker threads; ``lock`` serialises the multi-step
mutations (load, import, tag, rmi, prune) so that two of them never interleave.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable

from engine import errdefs
from engine.images.model import Image
from engine.images.reference import Reference, parse_any_reference, parse_normalized_named
from storage.content import ContentStore
from storage.images import ImageStore
from storage.layers import LayerStore

Publish = Callable[[str, str, dict[str, str]], None]
"""(action, image id, attributes) → an ``image`` event; must be callable from any thread."""


def _parse_familiar(ref: str) -> Reference | None:
    try:
        return parse_normalized_named(ref)
    except errdefs.InvalidParameter:
        return None


class ImageRepo:
    def __init__(
        self, store: ImageStore, layers: LayerStore, content: ContentStore, publish: Publish
    ) -> None:
        self.store = store
        self.layers = layers
        self.content = content
        self._publish = publish
        self.lock = threading.RLock()
        self._layer_sizes: dict[str, int] = {}
        # Layers and blobs a pull in progress relies on before its image exists: rmi, prune and
        # garbage collection leave them alone.
        self._pins: Counter[str] = Counter()
        self._pins_lock = threading.Lock()

    # --- reading ---------------------------------------------------------------------------------

    def references(self, image_id: str) -> tuple[Reference, ...]:
        parsed = [_parse_familiar(r) for r in self.store.references(image_id)]
        return tuple(sorted((r for r in parsed if r is not None), key=str))

    def image(self, image_id: str) -> Image:
        return Image.from_stored(self.store.get(image_id), self.references(image_id))

    def images(self) -> list[Image]:
        by_id = self.store.all_references()
        out: list[Image] = []
        for image_id in self.store.ids():
            parsed = [_parse_familiar(r) for r in by_id.get(image_id, [])]
            refs = tuple(sorted((r for r in parsed if r is not None), key=str))
            try:
                out.append(Image.from_stored(self.store.get(image_id), refs))
            except errdefs.NotFound:
                continue  # deleted meanwhile
        return out

    def get_reference(self, ref: Reference) -> str | None:
        """reference store Get: a tag (``latest`` by default), or the digest when both are given."""
        if ref.digest is not None:
            ref = Reference(ref.domain, ref.path, None, ref.digest)
        else:
            ref = ref.with_default_tag()
        return self.store.get_reference(ref.familiar_name, ref.familiar())

    def resolve(self, ref_or_id: str) -> Image:
        """dockerd's GetImage: full ID, ``sha256:`` ID, name[:tag], name@digest, then ID prefix."""
        ref = parse_any_reference(ref_or_id)
        if isinstance(ref, str):
            if self.store.exists(ref):
                return self.image(ref)
            raise errdefs.no_such_image(ref)
        image_id = self.get_reference(ref)
        if image_id is not None and self.store.exists(image_id):
            return self.image(image_id)
        found = self.store.search(ref_or_id)
        if found is not None:
            return self.image(found)
        raise errdefs.no_such_image(ref.with_default_tag().familiar())

    def layer_size(self, chain_id: str) -> int:
        size = self._layer_sizes.get(chain_id)
        if size is None:
            try:
                size = self.layers.size(chain_id)
            except errdefs.NotFound:
                return 0
            self._layer_sizes[chain_id] = size
        return size

    def image_size(self, image: Image) -> int:
        return sum(self.layer_size(c) for c in image.chain_ids)

    # --- pins ------------------------------------------------------------------------------------

    def pin(self, keys: Iterable[str]) -> None:
        with self._pins_lock:
            self._pins.update(keys)

    def unpin(self, keys: Iterable[str]) -> None:
        with self._pins_lock:
            self._pins.subtract(keys)
            for key in [k for k, n in self._pins.items() if n <= 0]:
                del self._pins[key]

    def pinned(self) -> set[str]:
        with self._pins_lock:
            return set(self._pins)

    def chains_in_use(self) -> set[str]:
        return self.store.chain_ids_in_use() | self.pinned()

    def blobs_in_use(self) -> set[str]:
        return self.store.layer_blobs_in_use() | self.pinned()

    # --- events ----------------------------------------------------------------------------------

    def event(self, action: str, image_id: str, name: str | None = None) -> None:
        """LogImageEvent: the image's labels (while it still exists) plus ``name``."""
        attributes: dict[str, str] = {}
        if self.store.exists(image_id):
            try:
                labels = self.image(image_id).labels
            except errdefs.EngineError:
                labels = None
            attributes.update({k: str(v) for k, v in (labels or {}).items()})
        if name:
            attributes["name"] = name
        self._publish(action, image_id, attributes)

    # --- mutation --------------------------------------------------------------------------------

    def add_tag(self, ref: Reference, image_id: str) -> str | None:
        """Point tag ``ref`` at ``image_id`` (moving it if needed); returns the previous image ID."""
        if ref.familiar_name == "sha256":
            raise errdefs.InvalidParameter(
                "refusing to create an ambiguous tag using digest algorithm as name"
            )
        ref = ref.with_default_tag()
        return self.store.add_reference(ref.familiar_name, ref.familiar(), image_id)

    def remove_reference(self, ref: Reference) -> Reference:
        """removeImageRef: default the tag, delete (absent is fine), return what was removed."""
        ref = ref.with_default_tag()
        self.store.delete_reference(ref.familiar_name, ref.familiar())
        return ref

    def remove_image(self, image: Image) -> list[str]:
        """Forget ``image`` (its references must be gone) and release what only it used.

        Returns the chain IDs of the layers removed, top layer first (dockerd lists them as
        ``Deleted`` records). A layer a container still builds on stays (the snapshotter refuses);
        ``collect_garbage`` picks it up once that container is gone.
        """
        self.store.delete(image.id)
        in_use = self.chains_in_use()
        removed: list[str] = []
        for chain in reversed(image.chain_ids):
            if chain in in_use:
                break
            try:
                self.layers.remove(chain)
            except errdefs.NotFound:
                continue
            except errdefs.Conflict:
                break
            removed.append(chain)
        blobs_in_use = self.blobs_in_use()
        for layer in image.meta.layers:
            if layer.blob and layer.blob not in blobs_in_use and layer.blob != image.id:
                with contextlib.suppress(errdefs.NotFound):
                    self.content.delete(layer.blob)
        return removed

    def collect_garbage(self) -> list[str]:
        """Remove committed layers no image uses and no container builds on; returns their chain IDs."""
        removed: list[str] = []
        with self.lock:
            in_use = self.chains_in_use()
            progress = True
            while progress:
                progress = False
                for info in list(self.layers.snapshotter.walk()):
                    name = info.name
                    if info.kind != "committed" or not name.startswith("sha256:") or name in in_use:
                        continue
                    try:
                        self.layers.remove(name)
                    except (errdefs.Conflict, errdefs.NotFound):
                        continue
                    removed.append(name)
                    progress = True
        return removed

"""Where the recommender keeps what it learnt, in the state store (transport, beside main).

Two kinds of keys, inside the app's own prefix (`recommender||`):

- **Model snapshots** (`apps.recommender.snapshot`): `model:recommender:<version>` holds a
  manifest (size, sha256, chunk count, where the journal continues), and the snapshot's
  bytes sit in `model:recommender:<version>:chunk:<i>`, base64 in JSON, each at most
  `chunk_bytes` raw (3 MiB by default, 4 MiB as base64: Dapr's state API carries JSON
  through the sidecar's 5 MiB request limit). `model:recommender:current` points at the
  serving version and lists the versions kept; it is written last, so a reader sees the
  old snapshot or the whole new one, never a part.
- **The interaction journal**: `journal:recommender:<n>`, one entry per event delivery,
  with the interactions it applied, written before they are applied and acknowledged.
  A snapshot records the first entry it does not contain (`journal_from`); a restarted
  service loads the snapshot and replays the entries from there, so nothing acknowledged
  is lost between snapshots. Entries a snapshot contains are deleted once it is saved.

Entries are numbered without gaps by one writer: the journal assumes one learning
replica of the recommender (the app id's consumer group hands each event to one replica).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel

from apps.recommender.interactions import Interaction, InteractionKind
from apps.recommender.snapshot import Snapshot, sha256, split
from consort.kit.dapr import Sidecar, SidecarError

log = logging.getLogger("recommender.persistence")

POINTER_KEY = "model:recommender:current"
#: Journal entries read per state call during replay.
REPLAY_BATCH = 100


def manifest_key(version: int) -> str:
    return f"model:recommender:{version}"


def chunk_key(version: int, index: int) -> str:
    return f"model:recommender:{version}:chunk:{index}"


def journal_key(sequence: int) -> str:
    return f"journal:recommender:{sequence}"


class Manifest(BaseModel):
    """What `model:recommender:<version>` holds: how to read the snapshot back."""

    version: int
    bytes: int
    sha256: str
    chunks: int
    journal_from: int
    saved_at: datetime


class Pointer(BaseModel):
    """What `model:recommender:current` holds."""

    version: int
    kept: list[int]


class JournalInteraction(BaseModel):
    id: str
    user: str
    item: str
    kind: InteractionKind
    weight: float | None
    time: datetime

    @classmethod
    def of(cls, interaction: Interaction) -> JournalInteraction:
        return cls(
            id=interaction.event_id,
            user=interaction.user,
            item=interaction.item,
            kind=interaction.kind,
            weight=interaction.weight,
            time=interaction.time,
        )

    def interaction(self) -> Interaction:
        return Interaction(self.id, self.user, self.item, self.kind, self.time, self.weight)


class JournalEntry(BaseModel):
    interactions: list[JournalInteraction]


class SnapshotCorrupt(Exception):
    """A stored snapshot does not match its manifest."""


class ModelStore:
    """Snapshots and the journal of one recommender, through its sidecar.

    Args:
        sidecar: returns the app's sidecar client (it exists only while the app runs).
        store: the state store's name.
        chunk_bytes: most raw bytes per snapshot chunk.
        kept: how many snapshots to keep (the serving one and older ones to fall back to).
    """

    def __init__(
        self, sidecar: Callable[[], Sidecar], store: str, *, chunk_bytes: int, kept: int = 2
    ) -> None:
        self._sidecar = sidecar
        self.store = store
        self.chunk_bytes = chunk_bytes
        self.kept = max(kept, 1)

    # -- snapshots -------------------------------------------------------------------------
    async def load(self) -> tuple[Manifest, Snapshot] | None:
        """The serving snapshot and its manifest, or None when none was ever saved.

        Raises:
            SnapshotCorrupt: a chunk is missing or the bytes do not match the manifest.
            SidecarError: the state store could not be read.
        """
        sidecar = self._sidecar()
        pointer_item = await sidecar.get_state(self.store, POINTER_KEY)
        if pointer_item is None:
            return None
        pointer = Pointer.model_validate(pointer_item.value)
        manifest_item = await sidecar.get_state(self.store, manifest_key(pointer.version))
        if manifest_item is None:
            raise SnapshotCorrupt(f"the manifest of version {pointer.version} is missing")
        manifest = Manifest.model_validate(manifest_item.value)
        parts = []
        # One chunk per call: a bulk read would put several 4 MiB values in one response.
        for index in range(manifest.chunks):
            item = await sidecar.get_state(self.store, chunk_key(manifest.version, index))
            if item is None:
                raise SnapshotCorrupt(f"chunk {index} of version {manifest.version} is missing")
            parts.append(base64.b64decode(item.value["data"]))
        data = b"".join(parts)
        if len(data) != manifest.bytes or sha256(data) != manifest.sha256:
            raise SnapshotCorrupt(f"version {manifest.version} does not match its manifest")
        return manifest, Snapshot.from_bytes(data)

    async def save(self, version: int, data: bytes, journal_from: int) -> Manifest:
        """Store the snapshot bytes of `version`, then point at it, then drop old ones."""
        sidecar = self._sidecar()
        chunks = split(data, self.chunk_bytes)
        for index, chunk in enumerate(chunks):
            await sidecar.save_state(
                self.store,
                chunk_key(version, index),
                {"data": base64.b64encode(chunk).decode("ascii")},
            )
        manifest = Manifest(
            version=version,
            bytes=len(data),
            sha256=sha256(data),
            chunks=len(chunks),
            journal_from=journal_from,
            saved_at=datetime.now(UTC),
        )
        await sidecar.save_state(
            self.store, manifest_key(version), manifest.model_dump(mode="json")
        )
        previous = await sidecar.get_state(self.store, POINTER_KEY)
        kept = [version]
        if previous is not None:
            old = Pointer.model_validate(previous.value)
            kept += [v for v in old.kept if v != version]
        pointer = Pointer(version=version, kept=kept[: self.kept])
        await sidecar.save_state(self.store, POINTER_KEY, pointer.model_dump())
        for dropped in kept[self.kept :]:
            await self._delete_version(dropped)
        return manifest

    async def _delete_version(self, version: int) -> None:
        sidecar = self._sidecar()
        try:
            item = await sidecar.get_state(self.store, manifest_key(version))
            chunks = Manifest.model_validate(item.value).chunks if item else 0
            await sidecar.delete_states(
                self.store,
                [manifest_key(version), *(chunk_key(version, i) for i in range(chunks))],
            )
        except SidecarError as exc:  # a leftover costs space, not correctness
            log.warning("old snapshot %d not deleted: %s", version, exc)

    # -- the journal -----------------------------------------------------------------------
    async def append(self, sequence: int, interactions: list[Interaction]) -> None:
        """Write journal entry `sequence` (raises SidecarError when it may not be there)."""
        entry = JournalEntry(interactions=[JournalInteraction.of(i) for i in interactions])
        await self._sidecar().save_state(
            self.store, journal_key(sequence), entry.model_dump(mode="json")
        )

    async def replay(self, start: int) -> tuple[list[list[Interaction]], int]:
        """The journal's entries from `start` on, in order, and the next free number."""
        sidecar = self._sidecar()
        entries: list[list[Interaction]] = []
        sequence = start
        while True:
            keys = [journal_key(n) for n in range(sequence, sequence + REPLAY_BATCH)]
            found = {
                item.key: item.value for item in await sidecar.get_bulk_state(self.store, keys)
            }
            for key in keys:
                if key not in found:
                    return entries, sequence
                entry = JournalEntry.model_validate(found[key])
                entries.append([i.interaction() for i in entry.interactions])
                sequence += 1

    async def truncate(self, start: int, end: int) -> None:
        """Delete journal entries `start` to `end - 1` (a snapshot contains them)."""
        sidecar = self._sidecar()
        for first in range(start, end, 500):
            keys = [journal_key(n) for n in range(first, min(first + 500, end))]
            await sidecar.delete_states(self.store, keys)

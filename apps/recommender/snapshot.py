"""A whole recommender as bytes, so a restarted service serves at once without retraining.

Plain domain code: no web framework, no Dapr. A snapshot holds the interaction store
(weights and every applied event id, so idempotency survives the restart), the trained
ALS model and rule set, and the version they serve under. It is a zip archive of those
parts' own deterministic encodings (`to_bytes`), stored uncompressed because each part is
compressed already; `split` cuts it into chunks for stores that limit a value's size.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass

from apps.recommender.als import AlsModel
from apps.recommender.interactions import InteractionKind, InteractionStore
from apps.recommender.itemknn import ItemKnn
from apps.recommender.recommend import ModelRegistry, ModelSet, Policy, Recommender
from apps.recommender.rules import AssociationRules

FORMAT = "consort.recommender.snapshot/1"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Snapshot:
    """The parts of a recommender, each in its own encoding.

    Attributes:
        version: the version of the model set.
        interactions: `InteractionStore.to_bytes()`.
        als: `AlsModel.to_bytes()`, or None before ALS was first trained.
        rules: `AssociationRules.to_bytes()`, or None before rules were first mined.
    """

    version: int
    interactions: bytes
    als: bytes | None = None
    rules: bytes | None = None

    @classmethod
    def of(
        cls, store_bytes: bytes, models: ModelSet
    ) -> Snapshot:  # the store is serialised by the caller, on the thread that records
        """The snapshot of a serialised store and a model set (encodes the models: call it
        in a worker thread)."""
        return cls(
            version=models.version,
            interactions=store_bytes,
            als=models.als.to_bytes() if models.als is not None else None,
            rules=models.rules.to_bytes() if models.rules is not None else None,
        )

    def to_bytes(self) -> bytes:
        """The snapshot as one deterministic archive."""
        parts = {"interactions.bin": self.interactions}
        if self.als is not None:
            parts["als.npz"] = self.als
        if self.rules is not None:
            parts["rules.bin"] = self.rules
        meta = {"format": FORMAT, "version": self.version, "parts": sorted(parts)}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, data in [
                ("meta.json", json.dumps(meta, sort_keys=True).encode()),
                *sorted(parts.items()),
            ]:
                member = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                member.external_attr = 0o644 << 16
                archive.writestr(member, data)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Snapshot:
        """A snapshot from `to_bytes()` output."""
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            meta = json.loads(archive.read("meta.json"))
            if meta.get("format") != FORMAT:
                raise ValueError(f"not a recommender snapshot ({meta.get('format')!r})")
            names = set(meta["parts"])
            return cls(
                version=int(meta["version"]),
                interactions=archive.read("interactions.bin"),
                als=archive.read("als.npz") if "als.npz" in names else None,
                rules=archive.read("rules.bin") if "rules.bin" in names else None,
            )

    def restore(
        self,
        *,
        kind_weights: dict[InteractionKind, float] | None = None,
        policy: Policy = "als",
        neighbourhood: int = 100,
    ) -> Recommender:
        """A recommender serving this snapshot's models over its interactions.

        Args:
            kind_weights: the weights of interaction kinds from now on (None: the
                snapshot's).
            policy: the serving policy.
            neighbourhood: neighbours per item of the item-to-item model, rebuilt here.
        """
        store = InteractionStore.from_bytes(self.interactions)
        if kind_weights is not None:
            store.kind_weights = dict(kind_weights)
        models = ModelSet(
            version=self.version,
            als=AlsModel.from_bytes(self.als) if self.als is not None else None,
            rules=AssociationRules.from_bytes(self.rules) if self.rules is not None else None,
        )
        return Recommender(
            store,
            ItemKnn.from_matrix(store.to_matrix(), neighbourhood),
            ModelRegistry(models),
            policy=policy,
        )


def split(data: bytes, chunk_bytes: int) -> list[bytes]:
    """`data` in consecutive chunks of at most `chunk_bytes` (at least one chunk)."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be at least 1")
    return [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

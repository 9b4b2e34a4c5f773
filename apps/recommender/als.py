"""Matrix factorisation for implicit feedback: the `implicit` library's ALS.

Plain domain code: no web framework, no Dapr. `train_als` fits
`implicit.cpu.als.AlternatingLeastSquares` (Hu, Koren and Volinsky, ICDM 2008) on a
snapshot of the interaction store and returns an `AlsModel`: immutable, versioned, and
serving without `implicit` (a user's scores are their factor times the item factors).

Confidence. implicit takes the matrix it is given as the confidence c_ui of every
observed pair (the preference p_ui is 1 there, 0 with confidence 1 elsewhere) and
multiplies it by `alpha`. Two weightings of the store's summed weights r_ui are offered:

- `confidence`: c_ui = alpha * r_ui, the paper's linear confidence (its 1 + alpha r is
  implicit's c with the unobserved baseline of 1 built in);
- `bm25`: c_ui = alpha * BM25(r_ui), implicit's `bm25_weight` over user rows (items that
  many users touch count less, users with long histories are length-normalised); the
  item idf and mean row length are kept in the model so new users fold in the same way.

Users the model has not seen (new since training) are folded in: their factor is the
exact least-squares ALS step against the fixed item factors, so they get personal
recommendations between retrains. The reasons of a recommendation are the paper's
explanation (section 5): score_uj = sum_i c_ui * y_j^T W_u y_i with W_u the inverse of the
user's regularised Gram matrix, and the seen items i with the largest terms are named.

Training limits BLAS to one thread (implicit parallelises over users itself and warns
when OpenBLAS also spawns threads) and uses `threads` worker threads of its own.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse

from apps.recommender.interactions import InteractionMatrix
from apps.recommender.ranking import ScoredItem, top_k

_FORMAT = "consort.recommender.als/1"
#: A fixed timestamp for every member of a snapshot, so equal models give equal bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
#: How many seen items a recommendation names as its reasons, at most.
MAX_REASONS = 3

Weighting = Literal["confidence", "bm25"]
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AlsParameters:
    """Hyperparameters of one training run (recorded in the model).

    The defaults were chosen by a grid (factors 8-128, regularization 0.05-2000, alpha 1-40,
    both weightings) on MSWeb with one random visit held out per user (seed 1; the
    evaluation reports seed 0): users there have about three items each, so ALS needs a
    strong penalty. implicit does not scale the penalty by the data, so a much smaller
    catalogue or user base wants a smaller one.

    Attributes:
        factors: latent dimensions.
        iterations: ALS sweeps (users, then items).
        regularization: L2 penalty lambda.
        alpha: confidence scale (implicit's `alpha`).
        weighting: `confidence` (alpha * r) or `bm25` (alpha * BM25(r)).
        bm25_k1, bm25_b: BM25's saturation and length normalisation.
        random_seed: initialises the factors; equal data and seed give equal models.
        threads: implicit's worker threads (0: one per core).
    """

    factors: int = 64
    iterations: int = 15
    regularization: float = 500.0
    alpha: float = 20.0
    weighting: Weighting = "bm25"
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    random_seed: int = 0
    threads: int = 1


@dataclass(frozen=True)
class Bm25Stats:
    """What BM25 needs to weight one more user like the training ones."""

    idf: Floats
    average_length: float


def bm25_stats(weights: sparse.csr_matrix) -> Bm25Stats:
    """Item idf and mean user-row length of a users x items matrix (implicit's formula)."""
    users = float(weights.shape[0])
    per_item = np.bincount(weights.indices, minlength=weights.shape[1])
    idf = (np.log(users) - np.log1p(per_item)).astype(np.float32)
    row_sums = np.ravel(weights.sum(axis=1))
    return Bm25Stats(idf, float(row_sums.mean()) if row_sums.size else 1.0)


def bm25_rows(
    weights: sparse.csr_matrix, stats: Bm25Stats, k1: float, b: float
) -> sparse.csr_matrix:
    """`implicit.nearest_neighbours.bm25_weight` of the rows of `weights`, with the
    given idf and mean row length (so one user is weighted as in the whole matrix)."""
    out = weights.astype(np.float32, copy=True)
    row_sums = np.ravel(out.sum(axis=1))
    length_norm = (1.0 - b) + b * row_sums / stats.average_length
    rows = np.repeat(np.arange(out.shape[0]), np.diff(out.indptr))
    out.data = (
        out.data * (k1 + 1.0) / (k1 * length_norm[rows] + out.data) * stats.idf[out.indices]
    ).astype(np.float32)
    return out


def confidence_matrix(
    weights: sparse.csr_matrix, parameters: AlsParameters, stats: Bm25Stats | None
) -> sparse.csr_matrix:
    """The matrix handed to implicit's `fit` (before its own `alpha` scaling)."""
    if parameters.weighting == "bm25":
        if stats is None:
            raise ValueError("bm25 weighting needs the training matrix's statistics")
        return bm25_rows(weights, stats, parameters.bm25_k1, parameters.bm25_b)
    return weights.astype(np.float32)


def _frozen(array: npt.NDArray[np.float32]) -> Floats:
    array = np.ascontiguousarray(array, dtype=np.float32)
    array.setflags(write=False)
    return array


class AlsModel:
    """A trained factorisation: immutable, versioned, servable without retraining.

    Attributes:
        version: the version it serves under (set by whoever trains it).
        parameters: the hyperparameters it was trained with.
        users, items: the ids of the factor rows.
        user_factors, item_factors: float32 matrices, read-only.
    """

    def __init__(
        self,
        *,
        version: int,
        parameters: AlsParameters,
        users: tuple[str, ...],
        items: tuple[str, ...],
        user_factors: Floats,
        item_factors: Floats,
        bm25: Bm25Stats | None = None,
    ) -> None:
        if user_factors.shape != (len(users), parameters.factors):
            raise ValueError("user factors do not match the users and factors")
        if item_factors.shape != (len(items), parameters.factors):
            raise ValueError("item factors do not match the items and factors")
        self.version = version
        self.parameters = parameters
        self.users = users
        self.items = items
        self.user_factors = _frozen(user_factors)
        self.item_factors = _frozen(item_factors)
        self.bm25 = bm25
        self._user_index = {user: i for i, user in enumerate(users)}
        self._item_index = {item: i for i, item in enumerate(items)}
        gram = self.item_factors.T.astype(np.float64) @ self.item_factors.astype(np.float64)
        self._yty = gram

    def knows_user(self, user: str) -> bool:
        return user in self._user_index

    def knows_item(self, item: str) -> bool:
        return item in self._item_index

    def _confidences(self, seen: Mapping[str, float]) -> tuple[npt.NDArray[np.intp], Floats]:
        """Column indices of the known seen items and their confidences (alpha included)."""
        pairs = sorted((self._item_index[i], w) for i, w in seen.items() if i in self._item_index)
        columns = np.asarray([j for j, _ in pairs], dtype=np.intp)
        values = np.asarray([w for _, w in pairs], dtype=np.float32)
        if self.parameters.weighting == "bm25" and columns.size:
            row = sparse.csr_matrix(
                (values, columns, [0, columns.size]), shape=(1, len(self.items))
            )
            assert self.bm25 is not None
            weighted = bm25_rows(row, self.bm25, self.parameters.bm25_k1, self.parameters.bm25_b)
            values = weighted.data.astype(np.float32)
        return columns, (values * np.float32(self.parameters.alpha)).astype(np.float32)

    def _explainer(
        self, columns: npt.NDArray[np.intp], confidences: Floats
    ) -> npt.NDArray[np.float64]:
        """W_u Y_seen^T scaled by c: item j's score splits into `y_j @ result` by seen item."""
        y_seen = self.item_factors[columns].astype(np.float64)
        c = confidences.astype(np.float64)
        gram = (
            self._yty
            + (y_seen.T * (c - 1.0)) @ y_seen
            + self.parameters.regularization * np.eye(self.parameters.factors)
        )
        return np.linalg.solve(gram, y_seen.T) * c

    def fold_in(self, seen: Mapping[str, float]) -> Floats | None:
        """The factor of a user with these interactions (None when no item is known)."""
        columns, confidences = self._confidences(seen)
        if columns.size == 0:
            return None
        factor: Floats = self._explainer(columns, confidences).sum(axis=1).astype(np.float32)
        return factor

    def recommend(
        self, user: str, seen: Mapping[str, float], k: int, exclude_seen: bool = True
    ) -> list[ScoredItem]:
        """Up to `k` items for `user`, best first (empty when nothing is known of them).

        Args:
            user: the user id; a user the model was trained on uses their trained factor,
                another one is folded in from `seen`.
            seen: the user's items and weights now (the store's `seen(user)`).
            k: most items returned.
            exclude_seen: leave out the items in `seen`.
        """
        columns, confidences = self._confidences(seen)
        row = self._user_index.get(user)
        explainer = self._explainer(columns, confidences) if columns.size else None
        if row is not None:
            factor = self.user_factors[row].astype(np.float64)
        elif explainer is not None:
            factor = explainer.sum(axis=1)
        else:
            return []
        scores = self.item_factors.astype(np.float64) @ factor
        if exclude_seen:
            seen_columns = [self._item_index[i] for i in seen if i in self._item_index]
            scores[seen_columns] = -np.inf
        chosen = top_k(scores, k)
        result = []
        for j in chosen:
            because: tuple[str, ...] = ()
            if explainer is not None:
                parts = self.item_factors[j].astype(np.float64) @ explainer
                order = [p for p in np.lexsort((columns, -parts)) if parts[p] > 0]
                because = tuple(self.items[columns[p]] for p in order[:MAX_REASONS])
            result.append(ScoredItem(self.items[j], float(scores[j]), because))
        return result

    def to_bytes(self) -> bytes:
        """The model as deterministic `.npz` bytes: factors, ids and metadata, no pickles."""
        meta = {
            "format": _FORMAT,
            "version": self.version,
            "parameters": asdict(self.parameters),
            "bm25_average_length": self.bm25.average_length if self.bm25 else None,
        }
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8),
            "users": np.asarray(self.users, dtype=np.str_),
            "items": np.asarray(self.items, dtype=np.str_),
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
        }
        if self.bm25 is not None:
            arrays["bm25_idf"] = self.bm25.idf
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                member = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
                member.compress_type = zipfile.ZIP_DEFLATED
                member.external_attr = 0o644 << 16
                with archive.open(member, "w") as out:
                    np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> AlsModel:
        """A model from `to_bytes()` output."""
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode("utf-8"))
            if meta.get("format") != _FORMAT:
                raise ValueError(f"not an ALS snapshot ({meta.get('format')!r})")
            bm25 = (
                Bm25Stats(archive["bm25_idf"], float(meta["bm25_average_length"]))
                if meta["bm25_average_length"] is not None
                else None
            )
            return cls(
                version=int(meta["version"]),
                parameters=AlsParameters(**meta["parameters"]),
                users=tuple(str(u) for u in archive["users"]),
                items=tuple(str(i) for i in archive["items"]),
                user_factors=archive["user_factors"],
                item_factors=archive["item_factors"],
                bm25=bm25,
            )


def fit_implicit(
    confidences: sparse.csr_matrix, parameters: AlsParameters
) -> tuple[Floats, Floats]:
    """Fit implicit's CPU ALS on a users x items confidence matrix; (user, item) factors."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit checks the BLAS thread count when the model is built, so build it inside.
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(
            factors=parameters.factors,
            regularization=parameters.regularization,
            alpha=parameters.alpha,
            iterations=parameters.iterations,
            random_state=parameters.random_seed,
            num_threads=parameters.threads,
        )
        model.fit(confidences, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


def train_als(
    matrix: InteractionMatrix, parameters: AlsParameters | None = None, *, version: int
) -> AlsModel:
    """Train a new model on a store snapshot (safe to run in a worker thread).

    Args:
        matrix: the store's `to_matrix()`, taken on the thread that records.
        parameters: hyperparameters (defaults: `AlsParameters()`).
        version: the version the new model serves under.
    """
    parameters = parameters or AlsParameters()
    if matrix.weights.nnz == 0:
        raise ValueError("no interactions to train on")
    stats = bm25_stats(matrix.weights) if parameters.weighting == "bm25" else None
    user_factors, item_factors = fit_implicit(
        confidence_matrix(matrix.weights, parameters, stats), parameters
    )
    return AlsModel(
        version=version,
        parameters=parameters,
        users=matrix.users,
        items=matrix.items,
        user_factors=user_factors,
        item_factors=item_factors,
        bm25=stats,
    )

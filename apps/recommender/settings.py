"""Settings of the recommender service (env prefix `RECOMMENDER_`, shared ones `CONSORT_`)."""

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from apps.recommender.als import AlsParameters
from apps.recommender.interactions import InteractionKind
from apps.recommender.recommend import DEFAULT_POLICY
from apps.recommender.rules import MiningLimits
from consort.kit.settings import ServiceSettings, app_id_field

_ALS = AlsParameters()
_MINING = MiningLimits()


class RecommenderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RECOMMENDER_", extra="ignore")

    app_id: str = app_id_field("recommender")

    k_default: int = Field(default=10, ge=1, description="Items returned when `k` is not given.")
    k_max: int = Field(default=100, ge=1, description="Most items one request may ask for.")

    weight_view: float = Field(default=1.0, gt=0, description="Weight of a view.")
    weight_add_to_cart: float = Field(default=3.0, gt=0, description="Weight of an add-to-cart.")
    weight_purchase: float = Field(default=5.0, gt=0, description="Weight of a purchase.")

    policy: Literal["als", "item-knn", "hybrid"] = Field(
        default=DEFAULT_POLICY,
        description=(
            "Which model ranks a known user's items: als (item-to-item until ALS can serve), "
            "item-knn, or hybrid (reciprocal rank fusion of both)."
        ),
    )
    knn_neighbourhood: int = Field(
        default=100, ge=1, description="Neighbours kept per item by the item-to-item model."
    )

    # The ALS defaults are AlsParameters' (chosen on MSWeb: see apps/recommender/als.py).
    als_factors: int = Field(default=_ALS.factors, ge=1, description="ALS latent dimensions.")
    als_iterations: int = Field(
        default=_ALS.iterations, ge=1, description="ALS sweeps per training."
    )
    als_regularization: float = Field(
        default=_ALS.regularization, ge=0, description="ALS L2 penalty (grows with the data)."
    )
    als_alpha: float = Field(default=_ALS.alpha, gt=0, description="ALS confidence scale.")
    als_weighting: Literal["confidence", "bm25"] = Field(
        default=_ALS.weighting, description="How summed weights become ALS confidences."
    )
    als_random_seed: int = Field(
        default=_ALS.random_seed, description="Seed of the factors' initialisation."
    )
    als_threads: int = Field(
        default=_ALS.threads, ge=0, description="implicit's threads (0: all cores)."
    )
    als_min_users: int = Field(
        default=2, ge=1, description="Fewest users with interactions before ALS trains."
    )
    retrain_interval_s: float = Field(
        default=300.0, gt=0, description="Seconds between ALS (and rules) retrainings."
    )

    snapshot_chunk_bytes: int = Field(
        default=3 * 1024 * 1024,
        ge=1024,
        description=(
            "Most raw bytes per snapshot value in the state store (base64 makes 3 MiB 4 MiB, "
            "under the sidecars' 5 MiB request limit)."
        ),
    )
    snapshots_kept: int = Field(
        default=2, ge=1, description="Model snapshots kept in the state store, newest first."
    )
    events_max_await_ms: int = Field(
        default=5,
        ge=1,
        description="How long daprd waits to fill a bulk delivery of interactions.recorded.",
    )
    event_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="How long an event delivery waits for the start-up snapshot to load.",
    )

    rules_min_support: float = Field(
        default=0.001, ge=0, le=1, description="Least support of an association rule."
    )
    rules_min_confidence: float = Field(
        default=0.5, ge=0, le=1, description="Least confidence of an association rule."
    )
    rules_max_len: int = Field(default=10, ge=1, description="Most items in a rule.")
    # The mining's bounds (see MiningLimits): a run reaching one serves the rules found so
    # far, the shortest first, and the model status reports the retraining as cut short.
    rules_max_itemsets: int = Field(
        default=_MINING.max_itemsets, ge=1, description="Most frequent item sets one mining keeps."
    )
    rules_max_rules: int = Field(
        default=_MINING.max_rules, ge=1, description="Most rules one mining derives."
    )
    rules_time_budget_s: float = Field(
        default=_MINING.time_budget_s, gt=0, description="Seconds one mining may take."
    )
    rules_max_memory_mb: float = Field(
        default=_MINING.max_memory_mb,
        gt=0,
        description="Most growth of the training process's resident memory while mining (MiB).",
    )

    @model_validator(mode="after")
    def _k_default_within_max(self) -> "RecommenderSettings":
        if self.k_default > self.k_max:
            raise ValueError("k_default must not exceed k_max")
        return self

    @property
    def kind_weights(self) -> dict[InteractionKind, float]:
        """The weight of each interaction kind that carries no weight of its own."""
        return {
            InteractionKind.VIEW: self.weight_view,
            InteractionKind.ADD_TO_CART: self.weight_add_to_cart,
            InteractionKind.PURCHASE: self.weight_purchase,
        }

    @property
    def mining_limits(self) -> MiningLimits:
        """The bounds of one rule mining."""
        return MiningLimits(
            max_itemsets=self.rules_max_itemsets,
            max_rules=self.rules_max_rules,
            time_budget_s=self.rules_time_budget_s,
            max_memory_mb=self.rules_max_memory_mb,
        )

    @property
    def als_parameters(self) -> AlsParameters:
        return AlsParameters(
            factors=self.als_factors,
            iterations=self.als_iterations,
            regularization=self.als_regularization,
            alpha=self.als_alpha,
            weighting=self.als_weighting,
            random_seed=self.als_random_seed,
            threads=self.als_threads,
        )

"""Where the project's pinned Dapr runtime and other local tools live."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from consort.kit.settings import cache_dir

REPO = Path(__file__).resolve().parents[2]


def _versions() -> dict[str, str]:
    pins = {}
    for line in (REPO / "runtime" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            pins[key] = value
    return pins


class RuntimeMissing(RuntimeError):
    """A binary the system needs is not installed; the message says how to get it."""


@dataclass(frozen=True)
class Runtime:
    """Paths of the binaries a local Consort system runs."""

    version: str
    daprd: Path
    placement: Path
    scheduler: Path
    sentry: Path
    redis_server: Path
    zipkin_jar: Path | None = None
    java: Path | None = None

    @classmethod
    def locate(cls) -> Runtime:
        version = _versions()["DAPR_RUNTIME_VERSION"]
        bin_dir = cache_dir() / f"dapr-{version}" / ".dapr" / "bin"
        missing = [
            n for n in ("daprd", "placement", "scheduler", "sentry") if not (bin_dir / n).exists()
        ]
        if missing:
            raise RuntimeMissing(
                f"Dapr {version} ({', '.join(missing)}) is not built in {bin_dir}; "
                "run `make setup` (runtime/build.sh) first."
            )
        redis = shutil.which("redis-server")
        if redis is None:
            raise RuntimeMissing("redis-server is not installed; run `make setup`.")
        zipkin_version = _versions()["ZIPKIN_VERSION"]
        jar = cache_dir() / f"zipkin-{zipkin_version}" / f"zipkin-server-{zipkin_version}-exec.jar"
        java = shutil.which("java")
        return cls(
            version=version,
            daprd=bin_dir / "daprd",
            placement=bin_dir / "placement",
            scheduler=bin_dir / "scheduler",
            sentry=bin_dir / "sentry",
            redis_server=Path(redis),
            zipkin_jar=jar if jar.exists() else None,
            java=Path(java) if java else None,
        )

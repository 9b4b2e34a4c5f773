"""Infrastructure profiles: which servers back the `statestore` and `pubsub` components.

A profile is a folder of component YAML under `components/` (`components/redis/`, the
default, and `components/postgres-rabbitmq/`); the files beside them in `components/`
(config, resiliency, access control, sentry, secrets) are shared by every profile. daprd's
`--resources-path` reads one folder without its subfolders, so the sidecars get
`components/` and the selected profile's folder, never two profiles.

One setting selects it: `CONSORT_PROFILE` (`make run PROFILE=...`, `make test PROFILE=...`
export it). The launcher and the test harness start the servers the profile's components
name (their `spec.type`), so a new app or a new component needs no per-profile code.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

#: The environment variable naming the profile.
PROFILE_ENV = "CONSORT_PROFILE"
#: The profile used when none is named.
DEFAULT_PROFILE = "redis"

#: The local server each component type needs (components of other types need none).
SERVER_OF_TYPE = {
    "state.redis": "redis",
    "pubsub.redis": "redis",
    "state.postgresql": "postgres",
    "pubsub.rabbitmq": "rabbitmq",
}


class UnknownProfile(ValueError):
    """The profile named has no folder under components/."""


def selected(profile: str | None = None) -> str:
    """The profile to use: `profile`, else `CONSORT_PROFILE`, else the default."""
    return profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE


def available(components: Path) -> list[str]:
    """The profiles under `components/`: its subfolders holding component YAML."""
    return sorted(
        d.name
        for d in components.iterdir()
        if d.is_dir() and any(d.glob("*.yaml")) and not d.name.startswith(".")
    )


def is_profile_dir(path: Path, resources: list[Path]) -> bool:
    """Whether `path` is a profile folder: a subfolder of another resources path."""
    return any(path.parent == other for other in resources if other != path)


def resolve(resources: list[Path], profile: str | None = None) -> list[Path]:
    """The resources paths with the profile folder among them replaced by the selected
    profile's (the run file names the default one, so `dapr run -f` also works).

    Raises:
        UnknownProfile: there is no such profile folder; the message lists those there are.
    """
    name = selected(profile)
    out: list[Path] = []
    for path in resources:
        if not is_profile_dir(path, resources):
            out.append(path)
            continue
        chosen = path.parent / name
        if not chosen.is_dir():
            raise UnknownProfile(
                f"no profile {name!r} (no folder {chosen}); profiles: "
                f"{', '.join(available(path.parent))}"
            )
        out.append(chosen)
    return out


def component_types(resources: list[Path]) -> dict[str, str]:
    """Each Component's name and `spec.type` in the resources paths (not their subfolders)."""
    types: dict[str, str] = {}
    for folder in resources:
        for file in sorted(folder.glob("*.yaml")):
            for doc in yaml.safe_load_all(file.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Component":
                    types[doc["metadata"]["name"]] = doc["spec"]["type"]
    return types


def servers(resources: list[Path]) -> list[str]:
    """The local servers the components in `resources` need (`redis`, `postgres`,
    `rabbitmq`), in a stable order."""
    needed = {SERVER_OF_TYPE[t] for t in component_types(resources).values() if t in SERVER_OF_TYPE}
    return sorted(needed)

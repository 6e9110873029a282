"""The repository's Dockerfile, read as the tests need it: no container engine runs here (and
no registry serves base images), so the sidecar tests run the image's entrypoint exactly as
the image would (its ENTRYPOINT and CMD, its ENV, its HEALTHCHECK) inside a pod."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: str = ""  # the shell command of HEALTHCHECK CMD
    expose: list[str] = field(default_factory=list)
    copies_from: list[str] = field(default_factory=list)


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The Dockerfile's stages, with the instructions the tests read."""
    logical, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    out: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            words = rest.split()
            out.append(Stage(base=words[0], name=words[2] if len(words) > 2 and words[1].upper() == "AS" else ""))
        elif op == "ENV":
            for word in shlex.split(rest):
                k, _, v = word.partition("=")
                out[-1].env[k] = v
        elif op == "USER":
            out[-1].user = rest.strip()
        elif op in ("ENTRYPOINT", "CMD"):
            setattr(out[-1], op.lower(), json.loads(rest))
        elif op == "HEALTHCHECK":
            words = rest.split()
            i = next(k for k, w in enumerate(words) if w.upper() == "CMD")
            out[-1].healthcheck = " ".join(words[i + 1:])
        elif op == "EXPOSE":
            out[-1].expose += rest.split()
        elif op == "COPY" and rest.startswith("--from="):
            out[-1].copies_from.append(rest.split()[0].split("=", 1)[1])
    return out


def runtime() -> Stage:
    """The image that runs: the last stage."""
    return stages()[-1]

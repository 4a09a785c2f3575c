"""The build configuration: every option of `ncaer build`, as one object."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

import ncaer

GROUP_BY_IDENTITY = "identity"  # --group-by identity: clips of one person are one split unit (build.actors)


@dataclass(frozen=True)
class BuildConfig:
    videos: str
    out: str
    segments: int = 5
    pick: str = "random"
    seed: int = 0
    detector: str = "centerface"
    detector_model: str | None = None
    device: str = "auto"
    det_size: int | None = None  # long side fed to the detector; None: the detector's default
    threshold: float = 0.5
    no_face: str = "keep"
    mask: str = "box"
    face_margin: float = 0.0
    jpeg_quality: int = 95
    decoder: str = "decord"
    group_by: str | None = None
    identity_model: str = "dlib"  # --group-by identity: dlib, or an insightface pack / ArcFace .onnx
    identity_threshold: float | None = None  # None: the model's default
    classes: tuple[str, ...] | None = None
    workers: int = 2
    timeout: float = 30.0  # seconds a clip may spend decoding before the fallback decoder takes over
    limit: int | None = None
    strict: bool = False
    engine: str = "local"  # local: a pool of worker processes on this machine; ray: a Ray cluster
    ray_address: str | None = None  # None: start Ray on this machine; "auto" or HOST:PORT: join that cluster
    detector_actors: int | None = None  # Ray engine; None: one per GPU, or none (whole-clip tasks) without GPUs

    # Options that do not change what a finished build contains.
    RUNTIME_ONLY = ("out", "workers", "timeout", "limit", "strict", "device", "engine", "ray_address",
                    "detector_actors")

    def __post_init__(self):
        if self.segments < 1:
            raise ValueError("--segments must be at least 1")
        if self.seed < 0:
            raise ValueError("--seed must be non-negative")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("--jpeg-quality must be in 1..100")
        if self.face_margin < 0:
            raise ValueError("--face-margin must be non-negative")
        if self.engine not in ("local", "ray"):
            raise ValueError("--engine must be local or ray")
        if self.engine != "ray" and (self.ray_address or self.detector_actors):
            raise ValueError("--ray-address and --detector-actors are options of --engine ray")
        if self.group_by != GROUP_BY_IDENTITY and (self.identity_model != "dlib" or self.identity_threshold):
            raise ValueError("--identity-model and --identity-threshold are options of --group-by identity")
        if self.identity_threshold is not None and self.identity_threshold <= 0:
            raise ValueError("--identity-threshold must be positive")

    @property
    def by_identity(self) -> bool:
        return self.group_by == GROUP_BY_IDENTITY

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes) if self.classes else None
        return d

    def fingerprint(self) -> str:
        """Hash of what decides the dataset's content: the options and the ncaer version (resume refuses a
        mismatch). The execution provider, which also moves boxes (TensorRT runs fp16), is known only once a
        worker has started; the build journal records and checks it."""
        content = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUNTIME_ONLY}
        if not self.by_identity:  # builds without identities keep the fingerprint they had before these options
            del content["identity_model"], content["identity_threshold"]
        content["classes"] = list(self.classes) if self.classes else None
        content["ncaer_version"] = ncaer.__version__
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

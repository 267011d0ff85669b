"""The deployment config: one YAML file, validated once at load into frozen models.

Every problem is reported with its YAML path, line, the bad value and what is allowed, e.g.
``cameras[2].fps (line 31): must be > 0, got -5``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.engines import ENGINE_NAMES, EngineConfig, OnnxRuntimeConfig
from pipeline.errors import ConfigError
from pipeline.motion_gate import MotionGateConfig
from pipeline.outputs import OutputConfig
from pipeline.secrets import expand, redact, remember_config_sources

_ENDPOINT = re.compile(r"^(tcp://[^:/]+:\d+|ipc://.+|inproc://.+)$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    """A model package a camera runs, with per-camera overrides."""

    model: str
    stride: int | None = Field(None, gt=0, description="score a window every N sampled frames")
    calibrate_seconds: float | None = Field(None, gt=0, description="learn this camera's normal first")


class CameraConfig(_Frozen):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    source: str | int = Field(description="rtsp://..., a video file, a folder of JPEG frames, or a USB index")
    fps: float = Field(5.0, gt=0, le=120, description="frames sampled per second (by timestamp)")
    resize: tuple[int, int] | None = Field(None, description="[width, height]; default: the first model's input")
    loop: bool = Field(False, description="restart files at the end (demos, tests)")
    realtime: bool = Field(True, description="read files at their own frame rate, like a live camera")
    playback_speed: float = Field(1.0, gt=0, le=100, description="files with realtime: play this many times faster")
    group: int = Field(0, ge=0, description="capture process this camera is read in")
    worker: int | None = Field(None, ge=0, description="pin to this inference worker (default: balanced)")
    models: list[ModelRef] = Field(min_length=1)
    motion_gate: MotionGateConfig = Field(MotionGateConfig(), description="the top-level motion_gate: with "
                                          "this camera's fields on top")

    @field_validator("resize")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) <= 0:
            raise ValueError(f"must be two positive integers [width, height], got {list(value)}")
        return value


class PackageConfig(_Frozen):
    path: Path


class CaptureConfig(_Frozen):
    queue_clips: int = Field(64, ge=1, description="per-camera frames held before the oldest is dropped")
    batch_max: int = Field(16, ge=1, description="frames per ZeroMQ message at most")
    open_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(5.0, gt=0)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)


class InferenceConfig(_Frozen):
    workers: int = Field(1, ge=1, le=64)
    endpoint: str = Field("tcp://127.0.0.1:5550",
                          description="worker i binds port + i (tcp) or suffix -i (ipc); {index} in the host "
                                      "is replaced by i (one host per worker)")
    bind: str | None = Field(None, description="what worker i binds (port + i as above), when it differs from "
                                                "endpoint, e.g. tcp://*:5550 in a container; default: endpoint")
    max_batch: int = Field(16, ge=1)
    max_wait_ms: float = Field(50.0, ge=0)
    evidence_min_score: float | None = Field(None, description="attach a snapshot to results scoring above "
                                                               "this; default: the lowest rule threshold")

    @field_validator("endpoint", "bind")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _check_endpoint(value)


class SinkConfig(_Frozen):
    endpoint: str = "tcp://127.0.0.1:5560"
    bind: str | None = Field(None, description="what the sink binds when it differs from endpoint (tcp://*:5560)")
    snapshots_dir: Path = Path("var/snapshots")
    status_interval_s: float = Field(5.0, gt=0)

    @field_validator("endpoint", "bind")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _check_endpoint(value)


class RuleConfig(_Frozen):
    """Score -> alert: raise above ``threshold`` held ``min_duration_s``, clear below ``clear_threshold``."""

    name: str
    model: str
    label: str | None = Field(None, description="default: the model's alert label")
    threshold: float
    clear_threshold: float | None = Field(None, description="hysteresis; default: threshold")
    min_duration_s: float = Field(0.0, ge=0)
    cooldown_s: float = Field(30.0, ge=0, description="per camera, after an alert ends")
    cameras: list[str] = Field(default_factory=list, description="empty: every camera running the model")
    pre_s: float | None = Field(None, ge=0, le=60, description="clip before the alert; default evidence.pre_s")
    post_s: float | None = Field(None, ge=0, le=60, description="clip after the alert; default evidence.post_s")

    @model_validator(mode="after")
    def _hysteresis(self) -> RuleConfig:
        if self.clear_threshold is not None and self.clear_threshold > self.threshold:
            raise ValueError(f"clear_threshold ({self.clear_threshold}) must be <= threshold ({self.threshold})")
        return self


class EvidenceConfig(_Frozen):
    """Full-resolution snapshots, event clips and their retention (``pipeline/evidence_ring.py``,
    ``pipeline/clips.py``, ``pipeline/retention.py``)."""

    dir: Path | None = Field(None, description="clips and segment rings; default: <state_dir>/evidence")
    max_width: int = Field(1280, ge=64, description="snapshots and clips wider than this are scaled down")
    frame_ring_s: float = Field(4.0, gt=0, le=60, description="seconds of sent full-res frames kept for snapshots")
    endpoint: str = Field("tcp://127.0.0.1:5570", description="capture group g serves snapshots on port + g; "
                                                            "{index} in the host is replaced by g")
    bind: str | None = Field(None, description="what capture group g binds (port + g), when it differs from "
                                                "endpoint, e.g. tcp://*:5570 in a container; default: endpoint")
    snapshot_timeout_s: float = Field(1.0, gt=0, le=10, description="then the model-size frame is used")
    clips: bool = Field(True, description="record a segment ring per camera and cut a clip for each alert")
    pre_s: float = Field(5.0, ge=0, le=60, description="clip starts this long before the alert")
    post_s: float = Field(5.0, ge=0, le=60, description="clip ends this long after the alert")
    max_clip_s: float = Field(60.0, gt=0, le=600, description="clips are cut to at most this length")
    segment_s: float = Field(1.0, gt=0, le=10, description="length of ring segments (keyframe spacing for encoded)")
    ring_s: float | None = Field(None, gt=0, description="video each camera's segment ring holds; default "
                                                         "max_clip_s + pre_s + post_s + 30")
    max_bytes: int = Field(2_000_000_000, gt=0, description="snapshots + clips on disk; oldest deleted first")
    max_age_days: float = Field(30.0, gt=0, description="snapshots and clips older than this are deleted")

    @field_validator("endpoint", "bind")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _check_endpoint(value)

    @model_validator(mode="after")
    def _ring_holds_a_clip(self) -> EvidenceConfig:
        if self.ring_s is not None and self.ring_s < self.max_clip_s + self.pre_s:
            raise ValueError(f"ring_s ({self.ring_s}) must be >= max_clip_s + pre_s "
                             f"({self.max_clip_s + self.pre_s}): the ring must hold a whole clip")
        return self

    def ring_seconds(self) -> float:
        """How long segments stay in a camera's ring: the longest clip, its margins, and slack."""
        return self.ring_s if self.ring_s is not None else self.max_clip_s + self.pre_s + self.post_s + 30.0


class KeySource(_Frozen):
    """A CurveZMQ key: a file written by ``vidwatch keys generate`` (a bare string is a file) or an
    environment variable holding the 40-character Z85 key."""

    file: Path | None = None
    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="before")
    @classmethod
    def _bare_path(cls, value: Any) -> Any:
        return {"file": value} if isinstance(value, str | Path) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> KeySource:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file: PATH or env: VARIABLE")
        return self

    def describe(self) -> str:
        """Where the key comes from (never the key itself)."""
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"


class TransportSecurityConfig(_Frozen):
    """CurveZMQ between stages: binding stages (inference workers, sink) hold the server key and
    accept only ``authorized_clients``; connecting stages (capture, inference) hold a client key."""

    server_key: KeySource | None = Field(None, description="server secret key (hosts running infer / sink)")
    server_public_key: KeySource | None = Field(None, description="server public key (hosts running capture / infer)")
    client_key: KeySource | None = Field(None, description="client secret key (hosts running capture / infer)")
    authorized_clients: list[KeySource] = Field(default_factory=list, description="client public keys (or a "
                                                                                  "folder of them) accepted")
    insecure: bool = Field(False, description="allow plain tcp to non-loopback addresses (trusted lab only)")

    @property
    def enabled(self) -> bool:
        return any((self.server_key, self.server_public_key, self.client_key, self.authorized_clients))

    @model_validator(mode="after")
    def _complete(self) -> TransportSecurityConfig:
        missing = [name for name in ("server_key", "server_public_key", "client_key", "authorized_clients")
                   if not getattr(self, name)]
        if self.enabled and missing:
            raise ValueError(f"CurveZMQ needs all four keys, missing: {', '.join(missing)} "
                             f"(vidwatch keys generate DIR writes them and prints the snippet)")
        if self.enabled and self.insecure:
            raise ValueError("insecure: true and keys are both set, remove one")
        return self


class TLSConfig(_Frozen):
    cert_file: Path = Field(description="PEM certificate (chain) the HTTP server presents")
    key_file: Path = Field(description="PEM private key of cert_file")


class BasicAuthConfig(_Frozen):
    """HTTP basic auth: the password as a SHA-256 hex digest, or read from a file / variable."""

    username: str = Field(min_length=1)
    password_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$",
                                        description="hex digest: printf %s 'PASSWORD' | sha256sum")
    password_file: Path | None = Field(None, description="a file holding the password (Prometheus' password_file)")
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuthConfig:
        given = [self.password_sha256, self.password_file, self.password_env]
        if sum(v is not None for v in given) != 1:
            raise ValueError("give exactly one of password_sha256, password_file, password_env")
        return self


class MetricsConfig(_Frozen):
    """The one HTTP port of a process (metrics, health, events); loopback unless you open it."""

    host: str = Field("127.0.0.1", description="0.0.0.0 to let a Prometheus on another host scrape")
    port: int = Field(9108, ge=1, le=65535)
    tls: TLSConfig | None = None
    basic_auth: BasicAuthConfig | None = None


class Config(_Frozen):
    version: Literal[1] = 1
    name: str = "vidwatch"
    state_dir: Path = Field(Path("var/state"), description="fitted per-camera calibration; alerts queued "
                                                           "for a failing output (outbox/)")
    models: dict[str, PackageConfig]
    engine: EngineConfig = Field(OnnxRuntimeConfig(), description="one engine by name, with its own options "
                                                                   "(pipeline.engines); 'engine: auto' is short "
                                                                   "for {name: auto}")
    capture: CaptureConfig = CaptureConfig()
    inference: InferenceConfig = InferenceConfig()
    sink: SinkConfig = SinkConfig()
    cameras: list[CameraConfig] = Field(min_length=1)
    rules: list[RuleConfig] = Field(default_factory=list)
    outputs: list[Annotated[OutputConfig, Field(discriminator="type")]] = Field(default_factory=list)
    metrics: MetricsConfig = MetricsConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    motion_gate: MotionGateConfig = Field(MotionGateConfig(), description="defaults of every camera's motion_gate")
    transport: TransportSecurityConfig = TransportSecurityConfig()

    @field_validator("engine", mode="before")
    @classmethod
    def _engine_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "name" not in value:
            return {"name": "onnxruntime", **value}  # the default engine, as before engines had own models
        return value

    @model_validator(mode="before")
    @classmethod
    def _gate_defaults(cls, data: Any) -> Any:
        """A camera's ``motion_gate:`` fields override the top-level ones, field by field."""
        return _merge_gate_defaults(data)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems = [*_unique_camera_ids(self), *_known_models(self), *_rule_targets(self), *_pinned_workers(self),
                    *_secured_endpoints(self)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def camera(self, camera_id: str) -> CameraConfig:
        return next(c for c in self.cameras if c.id == camera_id)

    def workers(self) -> dict[str, int]:
        """The inference worker of every camera (``pipeline.routing``); the same in every process."""
        from pipeline.routing import assign_workers

        pinned = {c.id: c.worker for c in self.cameras if c.worker is not None}
        return assign_workers([c.id for c in self.cameras], self.inference.workers, pinned)

    def evidence_dir(self) -> Path:
        return self.evidence.dir if self.evidence.dir is not None else self.state_dir / "evidence"

    def groups(self) -> dict[int, list[CameraConfig]]:
        groups: dict[int, list[CameraConfig]] = {}
        for camera in self.cameras:
            groups.setdefault(camera.group, []).append(camera)
        return dict(sorted(groups.items()))


def _merge_gate_defaults(data: Any) -> Any:
    if not isinstance(data, dict) or not isinstance(data.get("motion_gate"), dict):
        return data
    cameras = data.get("cameras")
    if not isinstance(cameras, list):
        return data
    defaults = data["motion_gate"]
    try:
        MotionGateConfig.model_validate(defaults)
    except ValidationError:
        return data  # reported once, at motion_gate:, not again under every camera
    merged = [{**c, "motion_gate": {**defaults, **(c.get("motion_gate") or {})}}
              if isinstance(c, dict) and isinstance(c.get("motion_gate", {}), dict | None) else c for c in cameras]
    return {**data, "cameras": merged}


def _check_endpoint(value: str) -> str:
    if not _ENDPOINT.match(value):
        raise ValueError(f"must be a ZeroMQ endpoint like tcp://127.0.0.1:5550 or ipc:///tmp/x, got {value!r}")
    return value


def _unique_camera_ids(cfg: Config) -> list[str]:
    seen: set[str] = set()
    dupes = [c.id for c in cfg.cameras if c.id in seen or seen.add(c.id)]  # type: ignore[func-returns-value]
    return [f"cameras: id {d!r} is used more than once" for d in dupes]


def _known_models(cfg: Config) -> list[str]:
    known = ", ".join(sorted(cfg.models)) or "(none)"
    return [f"cameras[{i}].models[{j}].model: {ref.model!r} is not defined under models: (defined: {known})"
            for i, cam in enumerate(cfg.cameras) for j, ref in enumerate(cam.models) if ref.model not in cfg.models]


def _pinned_workers(cfg: Config) -> list[str]:
    n = cfg.inference.workers
    return [f"cameras[{i}].worker: must be < inference.workers ({n}), got {c.worker}"
            for i, c in enumerate(cfg.cameras) if c.worker is not None and c.worker >= n]


def exposed_endpoints(cfg: Config) -> dict[str, str]:
    """The stage endpoints (by YAML path) that a host other than this one could reach: tcp to a
    non-loopback address. ipc/inproc and loopback tcp stay on one host."""
    endpoints = {"inference.endpoint": cfg.inference.endpoint, "sink.endpoint": cfg.sink.endpoint,
                 "evidence.endpoint": cfg.evidence.endpoint, "inference.bind": cfg.inference.bind,
                 "sink.bind": cfg.sink.bind, "evidence.bind": cfg.evidence.bind}
    return {path: e for path, e in endpoints.items() if e is not None and not is_loopback(e)}


def is_loopback(endpoint: str) -> bool:
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint.removeprefix("tcp://").rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or '*': reachable from elsewhere as far as we can tell
        return False


def _secured_endpoints(cfg: Config) -> list[str]:
    if cfg.transport.enabled or cfg.transport.insecure:
        return []
    # No "; " inside a problem: _problems splits cross-field messages on it.
    return [f"{path}: {endpoint} is reachable from other hosts but the transport has no CurveZMQ keys, "
            f"anyone who reaches the port could inject frames or forge results. Run "
            f"'vidwatch keys generate keys/' and add the transport: section it prints (README 'Security'), "
            f"or bind to 127.0.0.1 / ipc://, or set transport.insecure: true on a trusted lab network"
            for path, endpoint in exposed_endpoints(cfg).items()]


def _rule_targets(cfg: Config) -> list[str]:
    problems = []
    ids = {c.id for c in cfg.cameras}
    for i, rule in enumerate(cfg.rules):
        if rule.model not in cfg.models:
            problems.append(f"rules[{i}].model: {rule.model!r} is not defined under models:")
        for cam in rule.cameras:
            if cam not in ids:
                problems.append(f"rules[{i}].cameras: {cam!r} is not a camera id (cameras: {', '.join(sorted(ids))})")
    return problems


# -- loading ---------------------------------------------------------------------------------
def load_config(path: str | Path) -> Config:
    """Parse and validate ``path``; raise ConfigError listing every problem with path and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}; "
                                      f"save the file as UTF-8"]) from None
    return parse_config(text, str(path), base_dir=path.parent)


MAX_CONFIG_CHARS = 4 << 20  # a thousand cameras take ~200 kB
MAX_FLOW_DEPTH = 64  # [ { nesting; PyYAML's scanner is quadratic in it
MAX_NODES = 200_000  # after aliases are expanded (what validation walks)


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> Config:
    node, data = _load_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(source, ["the top level must be a mapping (cameras:, models:, ...)"])
    # ${ENV} / ${file:...} secrets (pipeline.secrets); outputs resolve their own references when the
    # sink starts (webhook headers and secret), so `vidwatch check` works without those variables.
    outputs = data.pop("outputs", None)
    data, missing = expand(data)
    if outputs is not None:
        data["outputs"] = outputs
    if missing:
        raise ConfigError(source, [_at(list(loc), node, msg) for loc, msg in missing])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # Messages quote bad values: mask credentials; no chained ValidationError (it holds them too).
        problems = [redact(p) for err in exc.errors() for p in _problems(err, node)]
        raise ConfigError(source, problems) from None
    remember_config_sources([c.source for c in config.cameras])
    return _resolve_paths(config, base_dir) if base_dir is not None else config


def _load_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree (for line numbers) and its data, within fixed bounds: size,
    nesting, and the size aliases expand to (a "billion laughs" file is refused, not built)."""
    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigError(source, [f"the file has {len(text)} characters, more than {MAX_CONFIG_CHARS}"])
    if _flow_depth(text) > MAX_FLOW_DEPTH:
        raise ConfigError(source, [f"[ ] / {{ }} nested more than {MAX_FLOW_DEPTH} levels deep"])
    try:
        loader = yaml.SafeLoader(text)  # its reader already refuses control characters
    except yaml.YAMLError as exc:
        raise ConfigError(source, [redact(f"not valid YAML: {exc}")]) from None
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise ConfigError(source, [f"the YAML expands to more than {MAX_NODES} values (aliases "
                                       f"repeating aliases?); write the config out plainly"])
        return node, None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [redact(f"not valid YAML: {exc}")]) from None
    except RecursionError:
        raise ConfigError(source, ["the YAML is nested too deeply"]) from None
    finally:
        loader.dispose()


def _flow_depth(text: str) -> int:
    """Deepest [ { nesting outside quotes and comments (cheap upper bound for the scanner)."""
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:
        return 0
    depth = deepest = 0
    quote = ""
    comment = False
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values in the tree with every alias expanded; an aliased node is counted once per use."""
    size = memo.get(id(node))
    if size is not None:
        return size
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    """Relative model paths are relative to the config file, unless they exist from the cwd."""
    def fix(p: Path) -> Path:
        return p if p.is_absolute() or p.exists() or not (base_dir / p).exists() else base_dir / p

    models = {name: PackageConfig(path=fix(pkg.path)) for name, pkg in config.models.items()}

    def fix_key(key: KeySource | None) -> KeySource | None:
        return key if key is None or key.file is None else KeySource(file=fix(key.file))

    t = config.transport
    transport = t.model_copy(update={
        "server_key": fix_key(t.server_key), "server_public_key": fix_key(t.server_public_key),
        "client_key": fix_key(t.client_key), "authorized_clients": [fix_key(k) for k in t.authorized_clients]})
    m = config.metrics
    tls = m.tls and TLSConfig(cert_file=fix(m.tls.cert_file), key_file=fix(m.tls.key_file))
    auth = m.basic_auth and m.basic_auth.model_copy(
        update={"password_file": m.basic_auth.password_file and fix(m.basic_auth.password_file)})
    metrics = m.model_copy(update={"tls": tls, "basic_auth": auth})
    return config.model_copy(update={"models": models, "transport": transport, "metrics": metrics})


def _problems(err: Any, root: yaml.Node | None) -> list[str]:
    """Cross-field checks report several ``path: message`` problems in one error; split them."""
    if err["loc"] or err["type"] != "value_error":
        return [_describe(err, root)]
    out = []
    for problem in err["msg"].removeprefix("Value error, ").split("; "):
        path, _, msg = problem.partition(": ")
        line = _line_of(root, _parse_path(path))
        out.append(f"{path} (line {line}): {msg}" if line else problem)
    return out


def _at(loc: list[Any], root: yaml.Node | None, msg: str) -> str:
    line = _line_of(root, loc)
    dotted = _dotted(loc) or "(top level)"
    return f"{dotted} (line {line}): {msg}" if line else f"{dotted}: {msg}"


def _parse_path(path: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]


def _describe(err: Any, root: yaml.Node | None) -> str:
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)]
    dotted = _dotted(loc)
    line = _line_of(root, loc)
    where = f"{dotted} (line {line})" if line else dotted or "(top level)"
    msg = _plain(err["msg"].removeprefix("Value error, "))
    if err["type"] == "extra_forbidden" and len(err["loc"]) == 3 and err["loc"][0] == "engine":
        return (f"{where}: engine {err['loc'][1]!r} does not take this option "
                f"({_engine_options(err['loc'][1])}; see deploy/examples/full.yaml)")
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field; check the spelling (see deploy/examples/full.yaml)"
    if err["type"] == "union_tag_invalid":
        return f"{where}: unknown engine {err['ctx']['tag']!r}; valid: {err['ctx']['expected_tags']}"
    if err["type"] == "missing":
        return f"{where}: required field is missing"
    got = err.get("input")
    if isinstance(got, dict | list) or err["type"].startswith("value_error") and "got" in msg:
        return f"{where}: {msg}"
    return f"{where}: {msg}, got {got!r}"


def _engine_options(name: str) -> str:
    from pipeline.engines import config_model

    options = [f for f in config_model(name).model_fields if f != "name"]
    return f"its options: {', '.join(options)}" if options else "it takes no options"


_PHRASES = (("Input should be ", "must be "), ("greater than or equal to", ">="), ("greater than", ">"),
            ("less than or equal to", "<="), ("less than", "<"))


def _plain(msg: str) -> str:
    for long, short in _PHRASES:
        msg = msg.replace(long, short)
    return msg


_UNION_TAGS = {"jsonl", "stdout", "mqtt", "webhook", *ENGINE_NAMES}


def _dotted(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if getattr(k, "value", None) == part]
            if not match:
                break
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line

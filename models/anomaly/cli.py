"""What ``vidwatch fit anomaly`` and ``vidwatch eval anomaly`` call, and the shipped-package builder.

Each command returns a process exit code: 0 on success, 2 when a :class:`VidwatchError` says the
input is unusable (its message is printed to stderr).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from pipeline.errors import VidwatchError

logger = logging.getLogger(__name__)

PED2_TRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "ucsd_ped2" / "train"
SHIPPED_NAME = "ped2-anomaly"
EVAL_OUT = Path("runs/anomaly-eval")
MODELS_OUT = Path("build/models")


def _fail(exc: VidwatchError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def fit(normal: Path, out: Path, seed: int = 0) -> int:
    """Fit an anomaly package on the normal footage under ``normal`` into the folder ``out``."""
    from models.anomaly.fit import fit_package
    from pipeline.modelpkg import load_package

    try:
        fit_package(Path(normal), Path(out), seed)
    except VidwatchError as exc:
        return _fail(exc)
    print(json.dumps({"package": str(out), **load_package(out).manifest.metrics["fit"]}))
    return 0


def evaluate(model: Path | None, data: Path, labels: Path, as_json: bool, out: Path | None = None) -> int:
    """Pooled frame-level AUC of a package on ``data/<clip>/`` frame folders; prints the JSON last."""
    from models.anomaly.evaluate import evaluate_package
    from pipeline.modelpkg import load_package

    if model is None:
        return _fail(VidwatchError("--model is required (a package folder), or pass --cv --normal FOOTAGE"))
    try:
        package = load_package(model)
        metrics = evaluate_package(package, Path(data), Path(labels), Path(out or EVAL_OUT / package.name))
    except VidwatchError as exc:
        return _fail(exc)
    if not as_json:
        print(f"{package.name}: frame AUC {metrics['frame_auc']} on {metrics['n_frames']} frames; "
              f"per clip {metrics['per_clip_auc']}; plots and error gallery in {metrics['plots']}")
    print(json.dumps(metrics))
    return 0


def cross_validate(normal: Path | None, data: Path, labels: Path, as_json: bool, out: Path | None = None,
                   cache: Path | None = None, family: str = "all", flow: str | None = None,
                   first_flow: str | None = None, bank_sizes: str | None = None,
                   appearance_frames: str | None = None, persist: str | None = None) -> int:
    """The nested leave-one-clip-out protocol of ``models.anomaly.cv`` within the design ``family``,
    every variant on the DIS flow ``flow`` (``PRESET[@SCALE][+FAR_PRESET:FAR_ROWS]``) and first-frame
    handling ``first_flow`` (None: the shipped package's, ``AnomalyConfig``), each row memory at every
    size of ``bank_sizes`` (``K[,K...]``; None: 64), windows reading the appearance of
    ``appearance_frames`` (``all`` or ``last``; None: the shipped package's), without or with temporal
    persistence or both ways (``persist``: ``off``, ``on``, ``both``; None: the shipped package's); prints the
    JSON report last."""
    from models.anomaly.cache import DEFAULT_CACHE
    from models.anomaly.cv import cross_validate as run
    from models.anomaly.fit import AnomalyConfig
    from models.build import trunk_path

    if normal is None:
        return _fail(VidwatchError("--cv needs --normal FOOTAGE: the unlabelled normal clips every variant is "
                                   "fitted on (e.g. ../shared/data/ucsd_ped2/train)"))
    out = Path(out or EVAL_OUT / "cv")
    try:
        config = AnomalyConfig()
        flow_settings = {"preset": config.flow_preset, "scale": config.flow_scale,
                         "far_rows": config.flow_far_rows, "far_preset": config.flow_far_preset,
                         "first": first_flow or config.flow_first, **_flow_option(flow)}
        trunk = trunk_path(MODELS_OUT, config.height, config.width)  # the one `make models` builds
        report = run(Path(normal), Path(data), Path(labels), out, trunk, Path(cache or DEFAULT_CACHE),
                     family_name=family, flow=flow_settings, bank_sizes=_bank_sizes_option(bank_sizes),
                     appearance_frames=appearance_frames or str(config.fit.get("appearance_frames", "all")),
                     persist=persist or ("on" if config.fit.get("persist", False) else "off"))
    except VidwatchError as exc:
        return _fail(exc)
    if not as_json:
        print((out / "cv.md").read_text())
        print(f"plots and error gallery in {out}")
    print(json.dumps(report))
    return 0


def probe(normal: Path | None, data: Path, labels: Path, as_json: bool, out: Path | None = None,
          cache: Path | None = None) -> int:
    """Nested CV with the far-field probe joining every fold's selection (``models.anomaly.probe``, README
    rounds 9-10); prints the Markdown report (and the JSON last with ``as_json``)."""
    from models.anomaly.cache import DEFAULT_CACHE
    from models.anomaly.fit import AnomalyConfig
    from models.anomaly.probe import probe_report
    from models.build import trunk_path

    if normal is None:
        return _fail(VidwatchError("--probe needs --normal FOOTAGE: the unlabelled normal clips the probe is made "
                                   "from and every variant is fitted on (e.g. ../shared/data/ucsd_ped2/train)"))
    out = Path(out or EVAL_OUT / "probe")
    try:
        config = AnomalyConfig()
        report = probe_report(Path(normal), Path(data), Path(labels), out,
                              trunk_path(MODELS_OUT, config.height, config.width), Path(cache or DEFAULT_CACHE))
    except VidwatchError as exc:
        return _fail(exc)
    if not as_json:
        print((out / "probe.md").read_text().split("\n\n| variant |")[0])
        print(f"every variant's probe and test figures: {out / 'probe.md'}")
    print(json.dumps({k: v for k, v in report.items() if k != "variants"}))
    return 0


def _bank_sizes_option(text: str | None) -> tuple[int, ...]:
    """``K[,K...]`` -> positive ints, checked (a bad value says what is expected); None: (64,)."""
    if text is None:
        return (64,)
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise VidwatchError(f"--bank-sizes {text!r}: give positive patch counts separated by commas, e.g. 64,256,1024")
    return sizes


def _flow_option(flow: str | None) -> dict[str, object]:
    """``PRESET[@SCALE][+FAR_PRESET:FAR_ROWS]`` -> ``{"preset", "scale", "far_preset", "far_rows"}``,
    checked (a bad value names what is valid)."""
    from pipeline.features.flow import parse_flow

    if flow is None:
        return {}
    try:
        return parse_flow(flow)
    except ValueError as exc:
        raise VidwatchError(f"--flow {flow!r}: {exc}; e.g. --flow fast@0.5 or --flow ultrafast@1+medium:5") from None


def build_shipped(out_dir: Path, trunk_path: Path) -> Path:
    """``out_dir/ped2-anomaly`` fitted on UCSD Ped2 train; reuses ``trunk_path`` if its input size fits."""
    from models.anomaly.fit import fit_package

    if not PED2_TRAIN.is_dir():
        raise VidwatchError(f"{PED2_TRAIN}: the UCSD Ped2 train folder is absent; the shipped anomaly package "
                            f"is fitted on it (see shared/data/README.md)")
    return fit_package(PED2_TRAIN, Path(out_dir) / SHIPPED_NAME, seed=0, trunk=Path(trunk_path), name=SHIPPED_NAME)

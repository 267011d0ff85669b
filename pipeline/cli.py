"""The ``vidwatch`` command. Runtime commands import no torch; training/export/fitting
commands import ``models`` lazily and need ``pip install 'vidwatch[models]'``."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from pipeline.errors import VidwatchError
from pipeline.secrets import install_log_filter, redact

logger = logging.getLogger("vidwatch")

DEFAULT_MODELS_DIR = Path("build/models")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    install_log_filter()  # camera passwords never reach a log line (pipeline.secrets)
    try:
        code: int = args.func(args)
        return code
    except VidwatchError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vidwatch", description="Real-time video analytics for surveillance cameras")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="validate a config (and its model packages) without running")
    c.add_argument("config", type=Path)
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("run", help="run every stage as a separate process on this host")
    r.add_argument("config", type=Path)
    r.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    r.set_defaults(func=cmd_run)

    for name, index_flag, help_text in (("capture", "--group", "run one capture node"),
                                        ("infer", "--worker", "run one inference worker"),
                                        ("sink", None, "run the sink")):
        s = sub.add_parser(name, help=help_text + " alone (stages may live on different hosts)")
        s.add_argument("config", type=Path)
        if index_flag:
            s.add_argument(index_flag, dest="index", type=int, default=0)
            s.add_argument("--index-from-hostname", action="store_true",
                           help=f"take {index_flag} from the hostname's trailing -N (a Kubernetes StatefulSet "
                                f"pod ordinal: vidwatch-{name}-2 -> 2)")
        s.add_argument("--duration", type=float, default=None)
        s.add_argument("--metrics-port", type=int, default=None, help="default: metrics.port of the config")
        s.set_defaults(func=cmd_stage, stage=name)

    ev = sub.add_parser("events", help="serve the events page and API alone (browse evidence after a run)")
    ev.add_argument("config", type=Path)
    ev.add_argument("--port", type=int, default=None, help="default: metrics.port of the config")
    ev.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    ev.set_defaults(func=cmd_events)

    a = sub.add_parser("alerts", help="summarize an alerts JSON-lines file")
    a.add_argument("path", type=Path)
    a.set_defaults(func=cmd_alerts)

    k = sub.add_parser("keys", help="CurveZMQ keys for the transport between stages")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kg = ksub.add_parser("generate", help="write server and client key pairs (secret files mode 0600)")
    kg.add_argument("dir", type=Path)
    kg.add_argument("--client", action="append", default=[], metavar="NAME",
                    help="write only a client pair NAME.key(_secret) (one per host); repeatable")
    kg.add_argument("--force", action="store_true", help="replace existing key files")
    kg.set_defaults(func=cmd_keys_generate)

    m = sub.add_parser("models", help="model packages")
    msub = m.add_subparsers(dest="models_command", required=True)
    b = msub.add_parser("build", help="build the shipped model packages (needs vidwatch[models])")
    b.add_argument("--out", type=Path, default=DEFAULT_MODELS_DIR)
    b.add_argument("--int8", action="store_true", help="INT8 trunks (about 2x faster on CPU; re-check accuracy)")
    b.set_defaults(func=cmd_models_build)
    ls = msub.add_parser("list", help="list the packages in a folder")
    ls.add_argument("--dir", type=Path, default=DEFAULT_MODELS_DIR)
    ls.set_defaults(func=cmd_models_list)

    _models_parsers(sub)
    return p


def _models_parsers(sub: Any) -> None:
    t = sub.add_parser("train", help="fine-tune a model on your clips")
    tsub = t.add_subparsers(dest="task", required=True)
    ta = tsub.add_parser("action", help="action recognition from class folders DATA/<label>/*.mp4")
    ta.add_argument("--data", type=Path, required=True)
    ta.add_argument("--out", type=Path, required=True)
    ta.add_argument("--epochs", type=int, default=None)
    ta.add_argument("--frames", type=int, default=None)
    ta.add_argument("--size", type=int, default=None)
    ta.add_argument("--resume", type=Path, default=None)
    ta.add_argument("--seed", type=int, default=0)
    ta.set_defaults(func=lambda a: _action().train(a.data, a.out, a.epochs, a.frames, a.size, a.resume, a.seed))

    e = sub.add_parser("eval", help="evaluate a model package on labeled data")
    esub = e.add_subparsers(dest="task", required=True)
    ea = esub.add_parser("action")
    ea.add_argument("--model", required=True, help="package folder or shipped name (fight)")
    ea.add_argument("--data", type=Path, required=True)
    ea.add_argument("--json", action="store_true")
    ea.set_defaults(func=lambda a: _action().evaluate(a.model, a.data, a.json))
    en = esub.add_parser("anomaly", help="a package through the live runner, or --cv: nested leave-one-clip-out "
                                         "selection of the model design (fitted on --normal footage)")
    en.add_argument("--model", type=Path, default=None, help="package folder (not with --cv)")
    en.add_argument("--data", type=Path, required=True, help="folder of labelled clips <clip>/")
    en.add_argument("--labels", type=Path, required=True, help="clip,frame,label CSV")
    en.add_argument("--cv", action="store_true", help="cross-validate the design grid instead of one package")
    en.add_argument("--normal", type=Path, default=None, help="unlabelled normal footage to fit on (with --cv)")
    en.add_argument("--out", type=Path, default=None, help="plots, gallery and reports (default runs/anomaly-eval/...)")
    en.add_argument("--cache", type=Path, default=None, help="feature cache (with --cv; default runs/anomaly-cache)")
    en.add_argument("--family", default="all", choices=("all", "perspective"),
                    help="with --cv: the design family selected within (perspective: motion statistics per "
                         "image row, restricted a priori; see models/anomaly/README.md)")
    en.add_argument("--flow", default=None, metavar="PRESET[@SCALE][+FAR_PRESET:ROWS]",
                    help="with --cv: the DIS flow every variant uses (ultrafast|fast|medium, optionally @0.5 for "
                         "half resolution; +medium:5: the top 5 cell rows from a full-resolution medium pass on "
                         "the far-field band); default: the shipped package's (medium@1)")
    en.add_argument("--first-flow", default=None, choices=("zero", "next"),
                    help="with --cv: a run's first frame has zero flow, or borrows the second frame's; default: the "
                         "shipped package's (next)")
    en.add_argument("--bank-sizes", default=None, metavar="K[,K...]",
                    help="with --cv: the patch-memory sizes each row-memory variant is fitted with, an axis the "
                         "inner folds select (e.g. 64,256,1024; README round 6); default: 64, the grid of rounds 1-5")
    en.add_argument("--appearance-frames", default=None, choices=("all", "last"),
                    help="with --cv: each window frame's appearance, or only the window's last frame's (the trunk "
                         "then runs only on window ends; README round 7); default: the shipped package's")
    en.add_argument("--persist", default=None, choices=("off", "on", "both"),
                    help="with --cv: every variant without temporal persistence, with it, or each both ways (an "
                         "axis the inner folds select; README round 8); default: the shipped package's")
    en.add_argument("--probe", action="store_true",
                    help="with --cv: every fold also selects on a synthetic far-field probe (walkers pasted into "
                         "held-out --normal clips, moving 2-3 times walking speed; README rounds 9-10: the quoted "
                         "figure); the whole design grid, with and without persistence")
    en.add_argument("--json", action="store_true")
    en.set_defaults(func=lambda a: _anomaly().evaluate(a.model, a.data, a.labels, a.json, a.out) if not a.cv
                    else _anomaly().probe(a.normal, a.data, a.labels, a.json, a.out, a.cache) if a.probe
                    else _anomaly().cross_validate(a.normal, a.data, a.labels, a.json, a.out, a.cache, a.family,
                                                   a.flow, a.first_flow, a.bank_sizes, a.appearance_frames,
                                                   a.persist))

    x = sub.add_parser("export", help="export a trained checkpoint to a model package")
    x.add_argument("checkpoint", type=Path)
    x.add_argument("--out", type=Path, required=True)
    x.add_argument("--int8", action="store_true")
    x.add_argument("--calibration", type=Path, default=None)
    x.set_defaults(func=lambda a: _action().export(a.checkpoint, a.out, a.int8, a.calibration))

    f = sub.add_parser("fit", help="fit a model on unlabeled normal footage")
    fsub = f.add_subparsers(dest="task", required=True)
    fa = fsub.add_parser("anomaly")
    fa.add_argument("--normal", type=Path, required=True)
    fa.add_argument("--out", type=Path, required=True)
    fa.add_argument("--seed", type=int, default=0)
    fa.set_defaults(func=lambda a: _anomaly().fit(a.normal, a.out, a.seed))


def _action() -> Any:
    return _models_module("models.action.cli")


def _anomaly() -> Any:
    return _models_module("models.anomaly.cli")


def _models_module(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise VidwatchError(f"this command needs the training extras ({exc.name} is missing): "
                            f"pip install 'vidwatch[models]'") from exc


# -- commands -----------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.modelpkg import load_package, rate_warnings

    config = load_config(args.config)
    problems, manifests = [], {}
    for name, pkg in config.models.items():
        try:
            manifests[name] = load_package(pkg.path).manifest
        except VidwatchError as exc:
            problems.append(redact(f"models.{name}: {exc}"))
    for warning in [*rate_warnings(config.cameras, manifests), *_transport_warnings(config)]:
        print(f"warning: {redact(warning)}", file=sys.stderr)
    for warning in _output_env_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        print("build the shipped packages with 'make models' (or 'vidwatch models build')", file=sys.stderr)
        return 2
    print(f"{args.config}: OK ({len(config.cameras)} cameras, {len(config.models)} models, "
          f"{len(config.rules)} rules, {config.inference.workers} inference workers)")
    return _check_engine(config.engine)


def _check_engine(engine: Any) -> int:
    """Say which engine runs here (for auto: which it would choose and why not the faster ones)."""
    from pipeline.engines import choose_auto, missing

    if engine.name == "auto":
        chosen, skipped = choose_auto()
        for name, reason in skipped.items():
            print(f"engine auto: not {name}: {reason}")
        print(f"engine auto: would choose {chosen}")
        return 0
    absent = missing(engine.name, configured=True)
    if absent:
        print(f"error: engine {engine.name!r} cannot run on this machine: {absent}", file=sys.stderr)
        return 2
    print(f"engine: {engine.name} is available")
    return 0


def _output_env_warnings(config: Any) -> list[str]:
    """Webhook headers naming environment variables this shell does not set (the service's may)."""
    from pipeline.outputs.webhook import WebhookOutputConfig, unset_env_refs

    return [f"outputs[{i}] (webhook): ${{{name}}} is not set here; the sink will not start without it"
            for i, out in enumerate(config.outputs) if isinstance(out, WebhookOutputConfig)
            for name in unset_env_refs(out)]


def _transport_warnings(config: Any) -> list[str]:
    """Keys this host cannot load (fine where it runs no stage that needs them), and insecure mode."""
    from pipeline.config import exposed_endpoints
    from pipeline.transport_security import public_keys, secret_key

    t = config.transport
    if t.insecure and exposed_endpoints(config):
        return ["transport.insecure: true: frames and results cross the network unencrypted and "
                "unauthenticated; add keys with 'vidwatch keys generate DIR'"]
    checks = [("server_key", t.server_key, secret_key, "infer, sink"),
              ("server_public_key", t.server_public_key, public_keys, "capture, infer"),
              ("client_key", t.client_key, secret_key, "capture, infer"),
              *((f"authorized_clients[{i}]", k, public_keys, "infer, sink")
                for i, k in enumerate(t.authorized_clients))]
    out = []
    for name, source, load, stages in checks:
        if source is None:
            continue
        try:
            load(source)
        except VidwatchError as exc:
            out.append(f"transport.{name}: {exc} (needed on hosts that run {stages})")
    return out


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from pipeline.transport_security import write_keypairs

    names = tuple(args.client) or ("server", "client")
    for path in write_keypairs(args.dir, names, force=args.force):
        print(f"wrote {path} (mode {path.stat().st_mode & 0o777:o})")
    d = args.dir
    if args.client:
        print(f"\nOn the new client hosts: client_key: {d}/<NAME>.key_secret. On the infer / sink hosts add "
              f"each {d}/<NAME>.key to transport.authorized_clients (or list the folder).")
        return 0
    print(f"""
Add to the config (every host may share it; each host needs only the files its stages use):
transport:
  server_key: {d}/server.key_secret          # hosts running infer / sink only
  server_public_key: {d}/server.key          # hosts running capture / infer
  client_key: {d}/client.key_secret          # hosts running capture / infer
  authorized_clients: [{d}/client.key]       # hosts running infer / sink
A key may come from the environment instead: server_key: {{env: VIDWATCH_SERVER_KEY}} (the Z85 text
between the quotes of secret-key in the file). Never copy *.key_secret to hosts that do not need it.""")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.supervisor import Supervisor

    config = load_config(args.config)
    return Supervisor(config, logging.getLogger().level).run(args.duration)


def cmd_stage(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from pipeline.config import load_config
    from pipeline.health import LocalStage, add_health_routes
    from pipeline.http_security import http_security
    from pipeline.http_server import serve_metrics
    from pipeline.supervisor import build_stage, set_from_signal

    config = load_config(args.config)
    index = getattr(args, "index", 0)
    if getattr(args, "index_from_hostname", False):
        index = index_from_hostname(socket.gethostname())
    registry = CollectorRegistry()
    stop = threading.Event()
    # The server starts first so /readyz answers 503 "starting" while the models load.
    local = LocalStage(f"{args.stage}-{index}")
    port = args.metrics_port or config.metrics.port
    server = serve_metrics(config.metrics.host, port, registry, http_security(config.metrics))
    add_health_routes(server, local.readiness)
    scheme = server.security.scheme
    print(f"metrics: {scheme}://{config.metrics.host}:{port}/metrics", flush=True)
    if args.stage == "sink":
        from pipeline.events_api import register_events

        print(f"events page: {scheme}://{config.metrics.host}:{port}{register_events(server, config)}", flush=True)
    stage = local.stage = build_stage(args.stage, index, config, registry, stop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: set_from_signal(stop))
    if args.duration:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True  # a pending timer must not keep a stopped stage alive
        timer.start()
    stage.run()
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.events_api import register_events
    from pipeline.http_server import HttpServer

    config = load_config(args.config)
    port = args.port or config.metrics.port
    try:
        server = HttpServer(config.metrics.host, port)
    except OSError as exc:
        raise VidwatchError(f"cannot listen on {config.metrics.host}:{port}: {exc}; is vidwatch still running "
                            f"(its page is the same)? Or pass --port") from exc
    page = register_events(server, config)
    server.start()
    print(f"events page: http://{config.metrics.host}:{port}{page}   (Ctrl-C stops)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait(args.duration)
    server.stop()
    return 0


def index_from_hostname(hostname: str) -> int:
    """The ordinal a StatefulSet gives its pods (``name-N``), which picks the group or worker."""
    match = re.search(r"-(\d+)$", hostname.split(".")[0])
    if match is None:
        raise VidwatchError(f"--index-from-hostname: hostname {hostname!r} does not end in -N "
                            f"(a StatefulSet pod name); pass --group/--worker instead")
    return int(match.group(1))


def cmd_alerts(args: argparse.Namespace) -> int:
    import json

    if not args.path.exists():
        print(f"no alerts file at {args.path}")
        return 1
    records = [json.loads(line) for line in args.path.read_text().splitlines() if line.strip()]
    starts = [r for r in records if r["state"] == "start"]
    ends = {r["id"]: r for r in records if r["state"] == "end"}
    print(f"{len(starts)} alert(s) in {args.path}:")
    for r in starts:
        end = ends.get(r["id"])
        span = f"{end['end'] - r['start']:.1f}s" if end else "open"
        print(f"  {r['camera']:10s} {r['rule']:16s} {r['label']:10s} peak={(end or r)['score']:.2f} "
              f"duration={span:>6s} latency={r.get('latency_s')}s snapshot={r['snapshot']} "
              f"clip={(end or {}).get('clip') or (end or {}).get('clip_error') or '-'}")
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    build = _models_module("models.build")
    for path in build.build_all(args.out, int8=args.int8):
        print(f"built {path}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from pipeline.modelpkg import load_package

    for manifest in sorted(args.dir.glob("*/manifest.json")):
        pkg = load_package(manifest.parent, verify=False)
        m = pkg.manifest
        print(f"{m.name:20s} {m.task:8s} v{m.version:8s} T={m.window.frames} {m.input.width}x{m.input.height} "
              f"labels={m.labels} {pkg.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

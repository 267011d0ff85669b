from pipeline.config import RuleConfig
from pipeline.rules import Phase, Rule


def _rule(**kw: object) -> Rule:
    base = {"name": "r", "model": "m", "threshold": 0.8, "clear_threshold": 0.5, "min_duration_s": 1.0,
            "cooldown_s": 5.0}
    return Rule(RuleConfig.model_validate({**base, **kw}))


def feed(rule: Rule, scores: list[tuple[float, float]]) -> list[tuple[str, float, float | None]]:
    out = []
    for t, s in scores:
        tr = rule.update("cam", s, t)
        if tr:
            out.append((tr.kind, tr.start, tr.end))
    return out


def test_min_duration_filters_blips() -> None:
    rule = _rule()
    assert feed(rule, [(0, 0.9), (0.5, 0.9), (0.6, 0.1), (1.0, 0.9), (1.5, 0.2)]) == []
    assert rule.phase("cam") is Phase.IDLE


def test_start_after_min_duration_and_hysteresis_holds_it() -> None:
    rule = _rule()
    events = feed(rule, [(0, 0.9), (0.5, 0.85), (1.0, 0.9), (1.5, 0.6), (2.0, 0.55), (2.5, 0.4)])
    assert events == [("start", 0, None), ("end", 0, 2.5)]  # 0.6 and 0.55 stay above clear 0.5


def test_cooldown_suppresses_then_allows() -> None:
    rule = _rule(min_duration_s=0.0)
    events = feed(rule, [(0, 0.9), (1, 0.1), (2, 0.95), (3, 0.1), (7, 0.9), (8, 0.1)])
    assert [e[0] for e in events] == ["start", "end", "start", "end"]
    assert events[2][1] == 7  # the 0.95 at t=2 fell inside the 5 s cooldown


def test_cameras_are_independent_and_filtered() -> None:
    rule = _rule(min_duration_s=0.0, cameras=["a"])
    assert rule.applies_to("a", "m") and not rule.applies_to("b", "m") and not rule.applies_to("a", "x")
    assert rule.update("a", 0.9, 0) is not None
    assert rule.phase("b") is Phase.IDLE


def test_close_all_ends_active_alerts() -> None:
    rule = _rule(min_duration_s=0.0)
    rule.update("cam", 0.9, 0)
    ended = rule.close_all(10.0)
    assert [(c, t.kind, t.end) for c, t in ended] == [("cam", "end", 10.0)]

"""The benchmark's relative targets and its README table, on hand-made rows."""

from __future__ import annotations

from benchmarks import checks, markdown


def _row(model, variant, size, agree, b1, **extra):
    return {
        "model": model,
        "variant": variant,
        "size_ratio": size,
        "size_bytes": round(size * 1_000_000),
        "top1_agreement": agree,
        "top5_agreement": None,
        "nn_agreement": None,
        "detection_agreement": None,
        "fidelity_cosine": 0.99,
        "fidelity_cosine_min": 0.98,
        "accuracy_drop": None,
        "latency": {"1": {"p50_ms": 1.0, "ratio": b1}, "8": {"p50_ms": 1.0, "ratio": b1}},
        **extra,
    }


ROWS = [
    _row("efficientnet-lite0", "original", 1.0, 1.0, 1.0),
    _row("efficientnet-lite0", "ort-default-static", 0.26, 0.40, 0.8),
    _row("efficientnet-lite0", "nncf-default", 0.27, 0.92, 2.0),
    _row("efficientnet-lite0", "static-int8", 0.27, 0.93, 1.92),
    _row("efficientnet-lite0", "auto", 0.28, 0.93, 1.9),
    _row("efficientnet-lite0", "accuracy-aware", 0.30, 0.95, 0.9),
]


def test_it_compares_ours_with_the_peers_of_the_same_run():
    got = {(t["metric"], t["target"]): t for t in checks.versus_peers(ROWS)}
    assert got[("top1_agreement", "at least nncf-default")]["reached"] is True
    # 1.92 >= 0.95 x 2.0
    assert got[("latency.1.ratio", "within 5% nncf-default")]["reached"] is True
    assert got[("top1_agreement", "better ort-default-static")]["reached"] is True
    # No nudenet or minilm rows: not judged.
    assert got[("detection_agreement", "at least nncf-default")]["reached"] is None


def test_it_flags_a_searching_row_slower_than_the_original():
    got = {t["variant"]: t["reached"] for t in checks.never_slower(ROWS, {})}
    assert got == {"auto": True, "accuracy-aware": False}


def test_it_names_the_rows_that_dominate_auto():
    (front,) = checks.on_pareto_front(ROWS)
    # static-int8 is smaller, as good and faster than auto: auto is not on the front.
    assert front["reached"] is False
    assert front["value"] == "static-int8"
    rows = [r for r in ROWS if r["variant"] != "static-int8"]
    assert checks.on_pareto_front(rows)[0]["reached"] is True


def test_a_row_of_the_same_file_is_the_same_point_not_a_rival():
    same = {"size_bytes": 5, "max_abs_error": 0.1}
    rows = [
        _row("efficientnet-lite0", "static-int8", 0.27, 0.93, 1.64, **same),
        _row("efficientnet-lite0", "auto", 0.27, 0.93, 1.28, **same),
    ]
    assert checks.on_pareto_front(rows)[0]["reached"] is True
    rows[0]["size_bytes"] = 4  # another file, as good and faster: it dominates
    assert checks.on_pareto_front(rows)[0]["reached"] is False


def test_the_readme_table_puts_peers_in_italics_and_shows_top5():
    rows = [*ROWS[:3], _row("efficientnet-lite0", "static-int8", 0.27, 0.93, 1.92)]
    rows[-1]["top5_agreement"] = 0.995
    text = markdown.table({"rows": rows, "meta": {"threads": 2}})
    assert "| efficientnet-lite0 | *nncf-default* | 0.270 | 0.920 |" in text
    assert "| efficientnet-lite0 | static-int8 | 0.270 | 0.930 / 0.995 |" in text
    assert "1.92× (b8)" in text

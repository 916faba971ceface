from __future__ import annotations

from compress_engine.auto import Candidate, candidate_modes, choose

ORIGINAL = Candidate("original", size_bytes=1000, p50_ms=10.0, meets_budget=True)


def test_it_tries_static_first_for_convolution_models_with_data():
    macs = {"Conv": 900, "Gemm": 100}
    assert candidate_modes(macs, has_data=True) == ["static-int8", "dynamic-int8"]
    assert candidate_modes(macs, has_data=False) == ["dynamic-int8"]


def test_it_tries_dynamic_first_for_matmul_models():
    macs = {"MatMul": 900, "Conv": 100}
    assert candidate_modes(macs, has_data=True) == ["dynamic-int8", "static-int8"]


def test_it_picks_the_fastest_variant_within_the_budget():
    fast_but_wrong = Candidate("static-int8", 300, 2.0, meets_budget=False)
    good = Candidate("dynamic-int8", 280, 6.0, meets_budget=True)
    decision = choose(ORIGINAL, [fast_but_wrong, good])
    assert decision.pick is good
    assert "6.000 ms vs 10.000 ms" in decision.reason


def test_it_keeps_the_original_when_nothing_is_faster():
    slower = Candidate("dynamic-int8", 250, 10.2, meets_budget=True)  # smaller, not faster
    decision = choose(ORIGINAL, [slower])
    assert decision.pick is None
    assert "keep the original" in decision.reason and "dynamic-int8 (10.200 ms" in decision.reason


def test_it_treats_gains_below_five_percent_as_noise():
    assert choose(ORIGINAL, [Candidate("v", 1000, 9.6, True)]).pick is None
    assert choose(ORIGINAL, [Candidate("v", 1000, 9.4, True)]).pick is not None


def test_it_can_optimise_for_size_instead():
    smaller = Candidate("int4", 200, 10.3, meets_budget=True)  # as fast, within the noise
    decision = choose(ORIGINAL, [smaller], objective="size")
    assert decision.pick is smaller


def test_a_smaller_variant_slower_beyond_the_noise_is_never_the_answer():
    # The latency gate: optimising for size does not excuse a slowdown beyond the band.
    smaller_slower = Candidate("int4", 200, 12.0, meets_budget=True)
    decision = choose(ORIGINAL, [smaller_slower], objective="size")
    assert decision.pick is None
    assert "1.20× slower" in decision.reason and "keep the original" in decision.reason

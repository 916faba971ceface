from __future__ import annotations

from web.templatetags.report_format import percent, points_change, significant, step_time


def test_it_formats_fractions_as_percentages():
    assert percent(0.97314) == "97.31%"
    assert percent(None) == "–"


def test_it_shows_an_accuracy_drop_as_a_signed_change():
    assert points_change(0.3) == "\u22120.30 pt"
    assert points_change(-0.25) == "+0.25 pt"
    assert points_change(0.0) == "\u00b10.00 pt"


def test_it_keeps_the_digits_of_small_errors_and_tolerances():
    assert significant(9.5367431640625e-07) == "9.54e-07"
    assert significant(0.0003369053602218628) == "0.000337"
    assert significant(None) == "–"


def test_it_shows_seconds_per_training_step_in_a_readable_unit():
    assert step_time(0.0019667) == "1.97 ms"
    assert step_time(1.5) == "1.50 s"

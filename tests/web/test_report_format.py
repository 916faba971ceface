from __future__ import annotations

from web.templatetags.report_format import percent, points_change


def test_it_formats_fractions_as_percentages():
    assert percent(0.97314) == "97.31%"
    assert percent(None) == "–"


def test_it_shows_an_accuracy_drop_as_a_signed_change():
    assert points_change(0.3) == "\u22120.30 pt"
    assert points_change(-0.25) == "+0.25 pt"
    assert points_change(0.0) == "\u00b10.00 pt"

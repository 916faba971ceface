"""What every page carries from templates/base.html."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db


def test_every_page_names_an_icon_that_exists(client):
    page = client.get("/accounts/login/").content.decode()

    href = re.search(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)"', page).group(1)
    path = finders.find(href.removeprefix("/static/"))
    assert path is not None and "<svg" in Path(path).read_text(encoding="utf-8")


def test_htmx_settles_without_delay(client):
    # Swapped-in controls get their handlers in the swap itself (see base.html).
    page = client.get("/accounts/login/").content.decode()
    assert """<meta name="htmx-config" content='{"defaultSettleDelay": 0}'>""" in page
    # Template comments stay out of the page (a {# #} comment must fit on one line).
    assert "{#" not in page and "settle delay" not in page.lower()

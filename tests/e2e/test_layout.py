"""Long names and narrow screens: no page grows wider than the window.

One 240-character name stretched the project page to 1,684 px and the audit log to 3,712 px.
Every main page is rendered here at phone width (375 px) and desktop width (1280 px) with
names as long as their fields take (no spaces, the worst case), and must fit the window:
long names are cut with an ellipsis (the whole name in the title attribute) and tables
scroll inside their own box. The results page also says which image preprocessing its
accuracy was measured with (issue 15, item 6).

Screenshots go to $MODELPRESS_LAYOUT_SCREENSHOTS (docs/screenshots in the repository holds
the last ones taken), else to the test's temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.test_compress_flow import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LONG = "resnet50-finetuned-on-the-warehouse-camera-images-" * 5  # 250 characters
WIDTHS = (375, 1280)


def _long(limit: int) -> str:
    return LONG[:limit]


def _upload(path: Path):
    from conftest import _temporary_upload

    return _temporary_upload(path)


@pytest.fixture
def long_named_things(tmp_path, tiny_cnn_onnx):
    """A user, team, project, model, image dataset and a finished job, each named as long as
    its field allows; the job's report comes from a real engine run on the image folders."""
    from accounts import audit
    from accounts.models import AuditEvent
    from accounts.services import create_user_with_personal_team
    from compress_engine import compress
    from image_folders import digits_zip
    from jobs.models import Job
    from registry.models import Project
    from registry.services import ingest_dataset_upload, ingest_model_upload

    user = create_user_with_personal_team(
        username="longnames", email="longnames@example.com", password=PASSWORD
    )
    team = user.memberships.get().team
    team.name = _long(100)
    team.save(update_fields=["name"])
    project = Project.objects.create(team=team, name=_long(100), created_by=user)
    model_file = tmp_path / f"{_long(240)}.onnx"
    model_file.write_bytes(tiny_cnn_onnx.read_bytes())
    upload = _upload(model_file)
    try:
        version = ingest_model_upload(project=project, user=user, upload=upload, name=_long(100))
    finally:
        upload.close()
    content, _ = digits_zip((0, 1, 2), per_class=6)
    zip_path = tmp_path / "digits.zip"
    zip_path.write_bytes(content)
    upload = _upload(zip_path)
    try:
        dataset = ingest_dataset_upload(project=project, user=user, upload=upload, name=_long(100))
    finally:
        upload.close()
    recipe = {
        "version": 1,
        "steps": [{"quantize": {"mode": "static-int8", "samples": 8}}],
        "evaluate": {"latency_runs": 3, "warmup": 1, "batch_sizes": []},
    }
    report = compress(tiny_cnn_onnx, recipe, data=zip_path, out_dir=tmp_path / "run").model_dump(
        mode="json"
    )
    job = Job.objects.create(
        team=team,
        project=project,
        model_version=version,
        dataset=dataset,
        recipe=recipe,
        created_by=user,
    )
    assert job.claim(worker="w@test") and job.succeed(report)
    audit.record(
        team=team,
        actor=user,
        action=AuditEvent.Action.DOWNLOADED,
        target=version,
        detail={"file": _long(240)},
    )
    return {"user": user, "team": team, "project": project, "version": version, "job": job}


def _pages(things) -> dict[str, str]:
    from django.urls import reverse

    return {
        "dashboard": reverse("web-dashboard"),
        "project": reverse("registry-project", args=[things["project"].uuid]),
        "model-version": reverse("registry-model-version", args=[things["version"].uuid]),
        "job": reverse("jobs-detail", args=[things["job"].uuid]),
        "audit": reverse("accounts-team-audit", args=[things["team"].uuid]),
    }


def test_no_page_is_wider_than_a_phone_or_a_desktop_window(
    live_server, page, long_named_things, tmp_path
):
    from playwright.sync_api import expect

    folder = Path(os.environ.get("MODELPRESS_LAYOUT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "longnames")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()

    too_wide = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in _pages(long_named_things).items():
            page.goto(f"{live_server.url}{path}")
            page.wait_for_load_state("networkidle")
            scroll, inner = page.evaluate(
                "[document.documentElement.scrollWidth, window.innerWidth]"
            )
            if scroll > inner:
                too_wide.append(f"{name} at {width} px: {scroll} px wide")
            page.screenshot(path=str(folder / f"{name}-{width}.png"), full_page=True)
    assert too_wide == []


def test_the_results_page_says_which_preprocessing_its_accuracy_used(
    live_server, page, long_named_things
):
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "longnames")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}{_pages(long_named_things)['job']}")
    callout = page.get_by_test_id("report-preprocessing")
    expect(callout).to_be_visible()
    expect(callout).to_contain_text("Image preprocessing:")
    expect(callout).to_contain_text("normalised with mean [0.0] and std [1.0]")
    # A long name is cut on the page and whole in its tooltip.
    title = page.get_by_test_id("job-title")
    expect(title).to_contain_text("Static int8 quantization")

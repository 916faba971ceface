"""Deleting a dataset through the pages in a real browser with JavaScript off (the confirm
step is a page and a form, not a script): refused with the reason while a running job uses
it, then deleted with its finished job, its file gone from storage and the deletion in the
team's audit log."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from e2e.test_compress_flow import _sign_up_and_log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_owner_deletes_a_dataset_through_the_ui(
    live_server, browser, pattern_npz, tiny_cnn_onnx
):
    from playwright.sync_api import expect

    from accounts.models import AuditEvent, User
    from conftest import _ingest, storage_files
    from factories import JobFactory
    from registry.models import Dataset
    from registry.services import ingest_model_upload

    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        _sign_up_and_log_in(page, live_server, "dora")
        page.fill("input[name=name]", "Cleanup")
        page.click("text=Create project")
        page.set_input_files("#dataset-form input[type=file]", str(pattern_npz))
        page.click("text=Upload dataset")
        expect(page.get_by_test_id("datasets")).to_contain_text("patterns")
        dataset = Dataset.objects.select_related("project").get()
        assert dataset.file.name in storage_files()

        # A running job uses it: the confirm page says why it cannot go yet.
        dora = SimpleNamespace(user=User.objects.get(username="dora"))
        version = _ingest(ingest_model_upload, dataset.project, dora, tiny_cnn_onnx)
        job = JobFactory(model_version=version, dataset=dataset)
        assert job.claim(worker="w@test")
        page.get_by_role("link", name="patterns").click()
        page.get_by_test_id("delete-dataset").click()
        expect(page.get_by_test_id("delete-refusal")).to_contain_text(
            "is in use by 1 queued or running job. It can be deleted once that job ends"
        )
        expect(page.get_by_test_id("confirm-delete-button")).to_have_count(0)

        assert job.fail("stopped for the test")
        page.reload()
        expect(page.get_by_role("heading", name="Delete the dataset “patterns”?")).to_be_visible()
        expect(page.get_by_test_id("delete-consequences")).to_contain_text("1 finished job")
        page.get_by_test_id("confirm-delete-button").click()

        expect(page.locator("main")).to_contain_text(
            "Deleted the dataset “patterns” and 1 finished job;"
        )
        expect(page.get_by_role("heading", name="Cleanup")).to_be_visible()
        expect(page.get_by_test_id("datasets")).to_have_count(0)
        assert not Dataset.objects.exists()
        assert dataset.file.name not in storage_files()
        event = AuditEvent.objects.get(action="deleted")
        assert event.actor == dora.user and event.target_label == "patterns"
    finally:
        context.close()

"""The TorchScript input-name trap in a real browser: the form's old example name is refused
at upload with the model's real input, the field comes back corrected and the chosen file
stays chosen, so pressing upload again is all it takes; the version then waits for its
conversion with its place in the convert queue shown."""

from __future__ import annotations

import re

import pytest

from e2e.test_compress_flow import _sign_up_and_log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def x_model(tmp_path_factory):
    from model_builders import save_x_torchscript

    return save_x_torchscript(tmp_path_factory.mktemp("names") / "xnet.pt")


def test_it_refuses_a_wrong_name_then_uploads_with_the_corrected_field(
    live_server, page, x_model, settings
):
    from playwright.sync_api import expect

    from registry.models import ModelVersion

    # A convert queue no worker reads: the session's worker, if an earlier test started it,
    # would take the conversion at once, and the version would show no place in the queue.
    settings.MODELPRESS_CONVERT_QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-names-unserved"

    _sign_up_and_log_in(page, live_server, "grace")
    page.fill("input[name=name]", "Names")
    page.click("text=Create project")
    shapes = page.locator("#id_input_shapes")
    # The placeholder says which names to use: forward's arguments.
    expect(shapes).to_have_attribute("placeholder", re.compile(r"^x: 1x3x224x224 .*forward"))
    page.set_input_files("#upload-form input[type=file]", str(x_model))
    shapes.fill("input: 1x3x8x8")
    page.click("text=Upload and check")

    error = page.locator("#upload-form .field-error")
    expect(error).to_contain_text("This model's forward takes `x`; you gave `input`.")
    expect(shapes).to_have_value("x: 1x3x8x8")
    # The file survived the swap: no second trip to the file chooser.
    assert page.eval_on_selector("#upload-form input[type=file]", "el => el.files.length") == 1
    assert not ModelVersion.objects.exists()

    page.click("text=Upload and check")

    expect(page.get_by_role("heading", name="xnet")).to_be_visible()
    expect(page.get_by_test_id("version-status")).to_have_attribute("data-status", "converting")
    expect(page.get_by_test_id("queue-position")).to_contain_text("1st in the")
    version = ModelVersion.objects.get()
    assert version.input_spec == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]


def test_choosing_the_file_fills_forwards_names_before_any_upload(live_server, page, x_model):
    """The form's script reads the archive's code members in the browser (File.slice; torch
    writes them deflated) and asks the server for forward's names: the field holds `x: ` and
    a hint names the input before anything is uploaded."""
    from playwright.sync_api import expect

    from registry.models import ModelVersion

    _sign_up_and_log_in(page, live_server, "hedy")
    page.fill("input[name=name]", "Prefill")
    page.click("text=Create project")
    uploads = []
    page.on("request", lambda r: uploads.append(r.url) if r.url.endswith("/upload/") else None)
    page.set_input_files("#upload-form input[type=file]", str(x_model))

    shapes = page.locator("#id_input_shapes")
    expect(shapes).to_have_value("x: ")
    expect(shapes).to_have_attribute("placeholder", "x: 1x3x224x224")
    expect(page.get_by_test_id("forward-hint")).to_have_text("This model's forward takes x.")
    assert uploads == [] and not ModelVersion.objects.exists()

    # Completing the prefilled line is all it takes.
    shapes.fill("x: 1x3x8x8")
    page.click("text=Upload and check")
    expect(page.get_by_role("heading", name="xnet")).to_be_visible()
    assert ModelVersion.objects.get().input_spec == [
        {"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}
    ]


def test_choosing_a_pt2_names_its_inputs_and_leaves_the_optional_field_empty(
    live_server, page, tmp_path
):
    """A .pt2 (members STORED, the program JSON under models/) records its example inputs:
    the hint and placeholder name them, the field stays empty."""
    import torch
    from playwright.sync_api import expect

    class Two(torch.nn.Module):
        def forward(self, image, ids):
            return image + ids.float()

    path = tmp_path / "two.pt2"
    example = (torch.randn(2, 4), torch.ones(2, 4, dtype=torch.long))
    torch.export.save(torch.export.export(Two(), example), path)

    _sign_up_and_log_in(page, live_server, "ada")
    page.fill("input[name=name]", "Program")
    page.click("text=Create project")
    page.set_input_files("#upload-form input[type=file]", str(path))
    hint = page.get_by_test_id("forward-hint")
    expect(hint).to_have_text("This model's forward takes image, ids.")
    shapes = page.locator("#id_input_shapes")
    expect(shapes).to_have_attribute("placeholder", "image: 1x3x224x224\nids: 1x3x224x224")
    expect(shapes).to_have_value("")

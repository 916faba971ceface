from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from accounts.access import can_delete, require_write, rights, teams_for
from accounts.services import personal_team
from registry.access import (
    get_dataset_for_user,
    get_model_version_for_user,
    get_project_for_user,
)
from registry.forms import DatasetUploadForm, InputShapesForm, ModelUploadForm, ProjectForm
from registry.models import ModelVersion
from registry.services import (
    InputShapesRejected,
    RegistryRejected,
    create_project,
    ingest_dataset_upload,
    ingest_model_upload,
    set_input_shapes,
    too_large_message,
)
from registry.shapes import dims_to_ask, unknown_rank_inputs
from web.queue_position import conversion_position


@login_required
@require_POST
def project_create(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST)
    team_uuid = request.POST.get("team")
    team = teams_for(request.user).filter(uuid=team_uuid).first() if team_uuid else None
    team = team or personal_team(request.user)
    require_write(request.user, team)
    if form.is_valid():
        try:
            project = create_project(
                team=team,
                user=request.user,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
            )
        except RegistryRejected as exc:
            messages.error(request, str(exc))
        else:
            return redirect("registry-project", project_uuid=project.uuid)
    else:
        messages.error(request, "A project needs a name (up to 100 characters).")
    return redirect("web-dashboard")


def _project_context(project, user, query=None) -> dict:
    from jobs.dashboard import project_dashboard

    return {
        "project": project,
        **rights(user, project.team),
        "upload_form": ModelUploadForm(),
        "dataset_form": DatasetUploadForm(),
        # The lists show a row of facts each; the JSON columns (graph facts, image stats,
        # preview lists) are not shown and stay in the database.
        "versions": project.model_versions.select_related("uploaded_by").defer(
            "inputs", "outputs", "op_types", "input_spec", "input_shapes"
        ),
        "datasets": project.datasets.select_related("uploaded_by").defer("image_stats", "previews"),
        # The jobs table (GET filter, sort, page) and the trade-off scatter.
        **project_dashboard(project, query or {}),
    }


@login_required
@require_GET
def project_detail(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    project = get_project_for_user(request.user, project_uuid)
    return render(
        request, "registry/project.html", _project_context(project, request.user, request.GET)
    )


def _handle_upload(request, project, form_class, ingest, form_key: str) -> HttpResponse:
    """Full-page form post or htmx post: success redirects to the new object, errors
    re-render the form with the reason (the whole page, or only the form for htmx)."""
    require_write(request.user, project.team)
    form = form_class(request.POST, request.FILES)
    if getattr(request, "upload_too_large", False):
        form.add_error("file", too_large_message())
    elif form.is_valid():
        try:
            url = ingest(
                project=project,
                user=request.user,
                upload=form.cleaned_data["file"],
                name=form.cleaned_data["name"],
                # Fields beyond file and name that the form's service takes (input_shapes).
                **{f: form.cleaned_data[f] for f in form.fields if f not in ("file", "name")},
            )
        except InputShapesRejected as exc:
            _offer_input_shapes(form, exc)
        except RegistryRejected as exc:
            form.add_error("file", str(exc))
        else:
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    if request.htmx:
        # htmx swaps only 2xx responses by default, so the re-rendered form comes back as 200.
        return render(
            request, f"registry/project.html#{form_key}", {"project": project, form_key: form}
        )
    context = {**_project_context(project, request.user), form_key: form}
    return render(request, "registry/project.html", context, status=422)


def _offer_input_shapes(form, exc: InputShapesRejected) -> None:
    """Shapes that do not fit the model's forward: the message goes on the field, which comes
    back holding the shapes under forward's names (or their names as the placeholder). The
    chosen file survives an htmx swap (hx-preserve), so correcting the field and pressing
    upload again is all it takes."""
    if exc.suggestion:
        form.data = form.data.copy()
        form.data["input_shapes"] = exc.suggestion
        message = f"{exc} The field now holds the names forward takes: check and upload again."
    else:
        message = str(exc)
    if exc.placeholder:
        form.fields["input_shapes"].widget.attrs["placeholder"] = exc.placeholder
    form.add_error("input_shapes", message)


@login_required
@require_POST
def model_upload(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    project = get_project_for_user(request.user, project_uuid)

    def ingest(**kwargs) -> str:
        version = ingest_model_upload(**kwargs, request=request)
        return reverse("registry-model-version", kwargs={"version_uuid": version.uuid})

    return _handle_upload(request, project, ModelUploadForm, ingest, "upload_form")


@login_required
@require_POST
def dataset_upload(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    project = get_project_for_user(request.user, project_uuid)

    def ingest(**kwargs) -> str:
        ingest_dataset_upload(**kwargs, request=request)
        # No "#datasets" fragment: to the page already open, a fragment-only change would
        # scroll instead of reloading, and the new dataset would not appear.
        return reverse("registry-project", kwargs={"project_uuid": project.uuid})

    return _handle_upload(request, project, DatasetUploadForm, ingest, "dataset_form")


@login_required
@require_GET
def dataset_detail(request: HttpRequest, dataset_uuid: UUID) -> HttpResponse:
    """The preview: counts, arrays or image facts, class histogram, sample thumbnails."""
    from registry.datasets import preview_context

    dataset = get_dataset_for_user(request.user, dataset_uuid)
    context = {
        **preview_context(dataset),
        "can_delete": can_delete(request.user, dataset.project.team),
    }
    return render(request, "registry/dataset.html", context)


@login_required
@require_GET
def dataset_sample(request: HttpRequest, dataset_uuid: UUID, index: int) -> HttpResponse:
    """One preview thumbnail, by its index in the list recorded at upload."""
    from registry.datasets import PreviewUnavailable, render_preview

    dataset = get_dataset_for_user(request.user, dataset_uuid)
    try:
        png = render_preview(dataset, index)
    except PreviewUnavailable as exc:
        raise Http404("No such sample.") from exc
    response = HttpResponse(png, content_type="image/png")
    # Stored datasets never change; the team's browsers may keep the thumbnail.
    response["Cache-Control"] = "private, max-age=86400"
    return response


@login_required
@require_GET
def model_version_detail(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    from jobs.forms import job_form_context
    from registry.llm_facts import llm_facts

    version = get_model_version_for_user(request.user, version_uuid)
    jobs = version.jobs.select_related("dataset")[:50]
    return render(
        request,
        "registry/model_version.html",
        {
            "version": version,
            "jobs": jobs,
            "datasets": version.project.datasets.all(),
            "queue_position": conversion_position(version),
            "can_delete": can_delete(request.user, version.project.team),
            # A language model's facts replace the inputs table and the image forms.
            "llm": llm_facts(version) if version.is_ready else None,
            # The job form (templates/jobs/inc/job_form.html): builder, presets, teachers.
            **job_form_context(request.user, version),
            **_input_shapes_context(version),
            **_preprocessing_context(version),
        },
    )


def _preprocessing_context(version: ModelVersion) -> dict:
    """The image preprocessing a ready version's jobs start from (registry.preprocessing)."""
    from registry.preprocessing import SCALES, Preprocessing, model_image_layout

    layout = model_image_layout(version) if version.is_ready and not version.is_llm else None
    return {
        "preprocessing": Preprocessing.of(version),
        "preprocessing_layout": layout,
        "preprocessing_scales": SCALES,
    }


@login_required
@require_POST
def model_version_preprocessing(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    """Record how the version's image pixels are prepared; new jobs on it start from this."""
    from registry.preprocessing import PreprocessingRejected, set_preprocessing

    version = get_model_version_for_user(request.user, version_uuid)
    require_write(request.user, version.project.team)
    try:
        chosen = set_preprocessing(
            version,
            mean=request.POST.get("mean", ""),
            std=request.POST.get("std", ""),
            scale=request.POST.get("scale", "1"),
        )
    except PreprocessingRejected as exc:
        messages.error(request, f"The preprocessing was not saved: {exc}")
    else:
        messages.success(request, f"Preprocessing saved ({chosen.describe()}); new jobs use it.")
    return redirect("registry-model-version", version_uuid=version.uuid)


def _input_shapes_context(version: ModelVersion, form: InputShapesForm | None = None) -> dict:
    """The dynamic-dims form of a ready version (registry.shapes.dims_to_ask)."""
    if not version.is_ready or version.is_llm:  # token ids of any length: nothing to choose
        return {"open_dims": [], "shapes_form": None, "unknown_rank": []}
    dims = dims_to_ask(version)
    return {
        "open_dims": dims,
        "shapes_form": form or (InputShapesForm(dims) if dims else None),
        "unknown_rank": unknown_rank_inputs(version),
    }


@login_required
@require_GET
def model_version_status(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    """The conversion status region; 286 once the conversion has ended, so htmx stops
    polling, and a full reload (HX-Refresh) then shows the converted model's facts."""
    version = get_model_version_for_user(request.user, version_uuid)
    html = render(
        request,
        "registry/model_version.html#version-status",
        {"version": version, "queue_position": conversion_position(version)},
    ).content
    if version.is_converting:
        return HttpResponse(html)
    response = HttpResponseStopPolling(html)
    if request.htmx:
        response["HX-Refresh"] = "true"
    return response


@login_required
@require_POST
def model_version_input_shapes(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    """Set the concrete values of a version's dynamic input dims (once; changeable)."""
    version = get_model_version_for_user(request.user, version_uuid)
    require_write(request.user, version.project.team)
    dims = dims_to_ask(version) if version.is_ready and not version.is_llm else []
    form = InputShapesForm(dims, request.POST)
    if not dims:
        messages.error(request, "This model has no dynamic input dims to set.")
        return redirect("registry-model-version", version_uuid=version.uuid)
    if form.is_valid():
        try:
            set_input_shapes(version, form.cleaned_data)
        except RegistryRejected as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Input shapes saved; new jobs use them.")
            return redirect("registry-model-version", version_uuid=version.uuid)
    messages.error(
        request,
        "The input shapes were not saved: "
        + " ".join(str(e) for errors in form.errors.values() for e in errors),
    )
    return redirect("registry-model-version", version_uuid=version.uuid)

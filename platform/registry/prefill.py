"""Input names for the upload form before any upload: the form's script (registry/static/
registry/upload_names.js) reads the chosen archive's small text members in the browser and
posts them here, so a large TorchScript file is not uploaded once only to be refused for
a wrong input name."""

from __future__ import annotations

import json
from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST

from accounts.access import require_write
from registry.access import get_project_for_user

# What the script sends at most: the code members of a TorchScript archive or a .pt2's
# program JSON (the script itself skips members over 2 MB and archives over 200 of them).
MAX_MEMBERS_BYTES = 4 * 1024**2
MAX_MEMBERS = 200


@login_required
@require_POST
def upload_input_names(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    """JSON `{"members": {name: text}}` -> the names forward takes, the input-shapes field's
    placeholder and text to fill in; `{"names": null}` when they cannot be told."""
    project = get_project_for_user(request.user, project_uuid)
    require_write(request.user, project.team)
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > MAX_MEMBERS_BYTES:
        return JsonResponse({"error": "Too large: send at most 4 MB of members."}, status=413)
    try:
        members = json.loads(request.body)["members"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": 'Send JSON: {"members": {name: text}}.'}, status=400)
    if (
        not isinstance(members, dict)
        or len(members) > MAX_MEMBERS
        or not all(isinstance(t, str) for t in members.values())
    ):
        return JsonResponse({"error": "members must map names to text."}, status=400)
    return JsonResponse(_answer(members))


def _answer(members: dict[str, str]) -> dict:
    from compress_engine import signature_from_members, suggested_shapes

    signature = signature_from_members(members)
    if signature is None or not signature.names:
        return {"names": None}
    names = signature.names
    return {
        "names": names,
        "required": signature.required,
        "placeholder": suggested_shapes(signature, []),
        # Shapes the user completes; none for a .pt2, whose example inputs give them.
        "fill": ""
        if signature.shapes_recorded
        else "\n".join(f"{n}: " for n in signature.required),
        "hint": f"This model's forward takes {', '.join(names)}.",
    }

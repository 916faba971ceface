"""Personal API tokens in the web UI: list, create (the token is shown once), revoke."""

from __future__ import annotations

from uuid import UUID

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.services import AccountsRejected
from accounts.tokens import create_token, get_token_for_user, revoke_token, tokens_for


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What uses it, e.g. “laptop CLI” or “CI pipeline”, so you know which to "
        "revoke later.",
    )


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The user's tokens; a POST creates one and shows it on this response only (never in a
    redirect or a flash message, which would keep it in the session or a cookie)."""
    form = TokenForm(request.POST or None)
    new_token = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                new_token = create_token(user=request.user, name=form.cleaned_data["name"])
            except AccountsRejected as exc:
                form.add_error("name", str(exc))
            else:
                form = TokenForm()
        if new_token is None:
            status = 422
    response = render(
        request,
        "accounts/tokens.html",
        {
            "form": form,
            "new_token": new_token,
            "tokens": tokens_for(request.user),
        },
        status=status,
    )
    if new_token is not None:
        # The page holds a secret: no browser or proxy cache may keep it.
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_uuid: UUID) -> HttpResponse:
    token = get_token_for_user(request.user, token_uuid)
    if revoke_token(token):
        messages.success(request, f"Token “{token.name}” revoked; it no longer works.")
    else:
        messages.info(request, f"Token “{token.name}” was already revoked.")
    return redirect("accounts-tokens")

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.core.paginator import Paginator
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import invites, quotas, teams
from accounts.access import (
    ROLE_POWERS,
    ROLE_RANK,
    get_membership_for_user,
    require_role,
    role_at_least,
)
from accounts.forms import (
    AuditFilterForm,
    InviteForm,
    LoginForm,
    ProfileForm,
    RoleForm,
    SignupForm,
    TeamForm,
)
from accounts.models import Invite, Membership, User
from accounts.services import (
    AccountsRejected,
    create_user_with_personal_team,
    update_profile,
)

Role = Membership.Role
AUDIT_PAGE_SIZE = 50


def _safe_next(request: HttpRequest) -> str | None:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return None


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    next_url = _safe_next(request)
    if request.user.is_authenticated:
        return redirect(next_url or "web-dashboard")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = create_user_with_personal_team(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(next_url or "web-dashboard")
    return render(request, "accounts/signup.html", {"form": form, "next": next_url or ""})


@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    form = ProfileForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            update_profile(user=request.user, **form.cleaned_data)
        except AccountsRejected as exc:
            form.add_error("email", str(exc))
        else:
            messages.success(request, "Profile saved.")
            return redirect("accounts-profile")
    return render(request, "accounts/profile.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        # Changing the password rotates the session hash; keep this session logged in.
        update_session_auth_hash(request, user)
        messages.success(request, "Password changed.")
        return redirect("accounts-profile")
    return render(request, "accounts/password_change.html", {"form": form})


class LoginView(auth_views.LoginView):
    """Django's login, rate limited (accounts.ratelimit): a locked-out attempt answers 429
    with Retry-After and the form saying when to try again."""

    template_name = "accounts/login.html"
    authentication_form = LoginForm

    def form_invalid(self, form: LoginForm) -> HttpResponse:  # type: ignore[override]
        response = super().form_invalid(form)
        if form.lockout is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.lockout.retry_after)
        return response


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Django's view, but a bad or used link answers 404 (with the page saying so) rather
    than 200, like every other link that leads nowhere."""

    template_name = "accounts/password_reset_confirm.html"

    def render_to_response(self, context: dict[str, Any], **kwargs: Any) -> HttpResponse:
        if not context.get("validlink"):
            kwargs["status"] = 404
        return super().render_to_response(context, **kwargs)


# Teams


def _memberships_of(user: User) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(user=user)
        .select_related("team")
        .annotate(member_count=Count("team__memberships"))
        .order_by("-team__is_personal", "team__name")
    )


@login_required
@require_GET
def team_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "accounts/teams.html",
        {"memberships": _memberships_of(request.user), "form": TeamForm()},
    )


@login_required
@require_POST
def team_create(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST)
    if form.is_valid():
        team = teams.create_team(user=request.user, name=form.cleaned_data["name"], request=request)
        messages.success(request, f"Team “{team.name}” created. Invite people from its page.")
        return redirect("accounts-team", team_uuid=team.uuid)
    context = {"memberships": _memberships_of(request.user), "form": form}
    return render(request, "accounts/teams.html", context, status=422)


def _team_context(membership: Membership, **forms) -> dict:
    team = membership.team
    is_admin = role_at_least(membership.role, Role.ADMIN)
    is_owner = membership.role == Role.OWNER
    roles = teams.assignable_roles(membership.role, team)
    members = [
        {
            "membership": m,
            # Mirrors the service rules, so the page offers only what would be accepted
            # (the last-owner rule aside, which the service explains when it refuses).
            "can_change_role": is_admin
            and (m.role != Role.OWNER or (is_owner and not team.is_personal)),
            "can_remove": is_admin
            and m.user_id != membership.user_id
            and (m.role != Role.OWNER or is_owner),
        }
        for m in sorted(
            team.memberships.select_related("user"),
            key=lambda m: (-ROLE_RANK[m.role], m.user.username.lower()),
        )
    ]
    return {
        "team": team,
        "membership": membership,
        "is_admin": is_admin,
        "is_owner": is_owner,
        "members": members,
        "assignable_roles": [(r, Role(r).label) for r in roles],
        "invites": team.invites.pending().select_related("invited_by") if is_admin else [],
        "invite_form": forms.get("invite_form") or InviteForm(roles=roles),
        "rename_form": forms.get("rename_form") or TeamForm(initial={"name": team.name}),
        "usage": quotas.usage(team),
        "role_powers": [(Role(r).label, ROLE_POWERS[r]) for r in Role.values],
    }


@login_required
@require_GET
def team_detail(request: HttpRequest, team_uuid: UUID) -> HttpResponse:
    membership = get_membership_for_user(request.user, team_uuid)
    return render(request, "accounts/team.html", _team_context(membership))


def _back_to_team(team_uuid: UUID) -> HttpResponseRedirect:
    return redirect("accounts-team", team_uuid=team_uuid)


@login_required
@require_POST
def team_rename(request: HttpRequest, team_uuid: UUID) -> HttpResponse:
    membership = get_membership_for_user(request.user, team_uuid)
    require_role(request.user, membership.team, Role.OWNER)
    form = TeamForm(request.POST)
    if not form.is_valid():
        context = _team_context(membership, rename_form=form)
        return render(request, "accounts/team.html", context, status=422)
    try:
        teams.rename_team(
            team=membership.team,
            actor=request.user,
            name=form.cleaned_data["name"],
            request=request,
        )
    except AccountsRejected as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Team renamed.")
    return _back_to_team(team_uuid)


@login_required
@require_POST
def team_delete(request: HttpRequest, team_uuid: UUID) -> HttpResponse:
    membership = get_membership_for_user(request.user, team_uuid)
    team = membership.team
    require_role(request.user, team, Role.OWNER)
    # Typing the name guards against a stray click deleting every model and result.
    if request.POST.get("confirm_name", "").strip() != team.name:
        messages.error(request, "Type the team's exact name to confirm the deletion.")
        return _back_to_team(team_uuid)
    try:
        teams.delete_team(team=team, actor=request.user)
    except AccountsRejected as exc:
        messages.error(request, str(exc))
        return _back_to_team(team_uuid)
    messages.success(request, f"Team “{team.name}” and everything in it were deleted.")
    return redirect("accounts-teams")


@login_required
@require_POST
def team_leave(request: HttpRequest, team_uuid: UUID) -> HttpResponse:
    membership = get_membership_for_user(request.user, team_uuid)
    try:
        teams.leave_team(team=membership.team, user=request.user, request=request)
    except AccountsRejected as exc:
        messages.error(request, str(exc))
        return _back_to_team(team_uuid)
    messages.success(request, f"You left “{membership.team.name}”.")
    return redirect("accounts-teams")


def _member_in(team_membership: Membership, member_uuid: UUID) -> Membership:
    return get_object_or_404(
        Membership.objects.select_related("user"), team=team_membership.team, uuid=member_uuid
    )


@login_required
@require_POST
def member_role(request: HttpRequest, team_uuid: UUID, member_uuid: UUID) -> HttpResponse:
    membership = get_membership_for_user(request.user, team_uuid)
    target = _member_in(membership, member_uuid)
    require_role(request.user, membership.team, Role.ADMIN)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles: owner, admin, member or viewer.")
        return _back_to_team(team_uuid)
    try:
        changed = teams.change_role(
            team=membership.team,
            actor=request.user,
            membership=target,
            role=form.cleaned_data["role"],
            request=request,
        )
    except AccountsRejected as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"{changed.user.username} is now {changed.get_role_display().lower()}."
        )
    return _back_to_team(team_uuid)


@login_required
@require_POST
def member_remove(request: HttpRequest, team_uuid: UUID, member_uuid: UUID) -> HttpResponse:
    membership = get_membership_for_user(request.user, team_uuid)
    target = _member_in(membership, member_uuid)
    require_role(request.user, membership.team, Role.ADMIN)
    try:
        teams.remove_member(
            team=membership.team, actor=request.user, membership=target, request=request
        )
    except AccountsRejected as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{target.user.username} was removed from the team.")
    return _back_to_team(team_uuid)


# Invites


@login_required
@require_POST
def invite_create(request: HttpRequest, team_uuid: UUID) -> HttpResponse:
    membership = get_membership_for_user(request.user, team_uuid)
    team = membership.team
    require_role(request.user, team, Role.ADMIN)
    form = InviteForm(request.POST, roles=teams.assignable_roles(membership.role, team))
    if form.is_valid():
        try:
            invite = invites.create_invite(
                team=team,
                actor=request.user,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                request=request,
            )
        except AccountsRejected as exc:
            form.add_error("email", str(exc))
        else:
            messages.success(
                request,
                f"Invitation sent to {invite.email} as {invite.get_role_display().lower()}.",
            )
            return _back_to_team(team_uuid)
    context = _team_context(membership, invite_form=form)
    return render(request, "accounts/team.html", context, status=422)


@login_required
@require_POST
def invite_revoke(request: HttpRequest, team_uuid: UUID, invite_uuid: UUID) -> HttpResponse:
    membership = get_membership_for_user(request.user, team_uuid)
    invite = get_object_or_404(Invite, team=membership.team, uuid=invite_uuid)
    require_role(request.user, membership.team, Role.ADMIN)
    try:
        invites.revoke_invite(
            team=membership.team, invite=invite, actor=request.user, request=request
        )
    except AccountsRejected as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"The invitation for {invite.email} was withdrawn.")
    return _back_to_team(team_uuid)


def _unusable(request: HttpRequest, exc: invites.InviteUnusable) -> HttpResponse:
    return render(request, "accounts/invite_unusable.html", {"reason": str(exc)}, status=exc.status)


def _invite_page(
    request: HttpRequest, invite: Invite, invite_token: str, *, status: int = 200
) -> HttpResponse:
    here = reverse("accounts-invite", args=[invite_token])
    user = request.user
    signed_in = user.is_authenticated
    addressee = signed_in and invites.is_addressee(invite, user)
    already_member = signed_in and invite.team.memberships.filter(user=user).exists()
    context = {
        "invite": invite,
        # The full address only to its owner: a leaked link shows little of it.
        "invite_address": invite.email if addressee else invites.mask_email(invite.email),
        "already_member": already_member,
        "wrong_account": (
            invites.wrong_account_message(invite, user)
            if signed_in and not addressee and not already_member
            else ""
        ),
        "here": here,
        "login_url": f"{reverse('accounts-login')}?{urlencode({'next': here})}",
        "signup_url": f"{reverse('accounts-signup')}?{urlencode({'next': here})}",
        "accept_url": reverse("accounts-invite-accept", args=[invite_token]),
    }
    return render(request, "accounts/invite.html", context, status=status)


@require_GET
def invite_detail(request: HttpRequest, invite_token: str) -> HttpResponse:
    """Open to anyone holding the link; only the account with the invited address can
    accept (accounts.invites)."""
    try:
        invite = invites.find_invite(invite_token)
        if reason := invite.unusable_reason:
            raise invites.InviteUnusable(reason, status=410)
    except invites.InviteUnusable as exc:
        return _unusable(request, exc)
    return _invite_page(request, invite, invite_token)


@require_POST
def invite_accept(request: HttpRequest, invite_token: str) -> HttpResponse:
    page = reverse("accounts-invite", args=[invite_token])
    if not request.user.is_authenticated:
        # Back to the invite page after logging in, not to this POST-only URL.
        return redirect(f"{reverse('accounts-login')}?{urlencode({'next': page})}")
    try:
        membership = invites.accept_invite(
            raw_token=invite_token, user=request.user, request=request
        )
    except invites.InviteUnusable as exc:
        return _unusable(request, exc)
    except invites.InviteForSomeoneElse:
        # The page again, saying whose invite it is and how to switch accounts.
        return _invite_page(request, invites.find_invite(invite_token), invite_token, status=403)
    except AccountsRejected as exc:
        messages.info(request, str(exc))
        return redirect(page)
    messages.success(
        request,
        f"Welcome to “{membership.team.name}”. You joined as "
        f"{membership.get_role_display().lower()}.",
    )
    return redirect("accounts-team", team_uuid=membership.team.uuid)


# Audit log


@login_required
@require_GET
def team_audit(request: HttpRequest, team_uuid: UUID) -> HttpResponse:
    membership = get_membership_for_user(request.user, team_uuid)
    team = membership.team
    require_role(request.user, team, Role.ADMIN)
    events = team.audit_events.select_related("actor")
    actors = sorted(
        set(events.exclude(actor_label="").values_list("actor_label", flat=True)), key=str.lower
    )
    form = AuditFilterForm(request.GET or None, actors=actors)
    filters: dict[str, str] = {}
    if form.is_valid():
        if action := form.cleaned_data["action"]:
            events = events.filter(action=action)
            filters["action"] = action
        if actor := form.cleaned_data["actor"]:
            events = events.filter(actor_label=actor)
            filters["actor"] = actor
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "accounts/audit.html",
        {"team": team, "page": page, "form": form, "filter_query": urlencode(filters)},
    )

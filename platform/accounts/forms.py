from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm

from accounts import ratelimit
from accounts.models import AuditEvent, Membership, User


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=True)

    class Meta:
        model = User
        fields = ("username", "email")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this e-mail already exists.")
        return email


class ProfileForm(forms.Form):
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField(label="E-mail")

    def __init__(self, *args, user: User, **kwargs) -> None:
        kwargs.setdefault(
            "initial",
            {"first_name": user.first_name, "last_name": user.last_name, "email": user.email},
        )
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].lower()
        if User.objects.filter(email__iexact=email).exclude(pk=self.user.pk).exists():
            raise forms.ValidationError("An account with this e-mail already exists.")
        return email


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class InviteForm(forms.Form):
    email = forms.EmailField(label="E-mail")
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)

    def __init__(self, *args, roles: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Only the roles this admin may give; the service checks again.
        self.fields["role"].choices = [(r, Membership.Role(r).label) for r in roles]


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(
        choices=[("", "All actions"), *AuditEvent.Action.choices], required=False
    )
    actor = forms.ChoiceField(required=False)

    def __init__(self, *args, actors: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["actor"].choices = [("", "Everyone"), *((a, a) for a in actors)]


class RateLimitedLoginMixin:
    """Refuses a login while its address, or its username from that address, is locked out or
    slowed down (accounts.ratelimit), without checking the password; counts failed logins and
    clears the username's counts on success. `lockout` says why a form was refused, for the
    view's 429."""

    lockout: ratelimit.Lockout | None = None

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""  # type: ignore[attr-defined]
        self.lockout = ratelimit.lockout(self.request, username)  # type: ignore[attr-defined]
        if self.lockout is not None:
            raise forms.ValidationError(self.lockout.message(), code="too_many_attempts")
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except forms.ValidationError as exc:
            if getattr(exc, "code", None) == "invalid_login":
                ratelimit.record_failure(self.request, username)  # type: ignore[attr-defined]
            raise
        ratelimit.record_success(self.request, username)  # type: ignore[attr-defined]
        return cleaned


class LoginForm(RateLimitedLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(RateLimitedLoginMixin, AdminAuthenticationForm):
    pass

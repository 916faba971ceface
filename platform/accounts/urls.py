from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from accounts import token_views, views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="accounts-login"),
    path("logout/", auth_views.LogoutView.as_view(), name="accounts-logout"),
    path("signup/", views.signup, name="accounts-signup"),
    path("profile/", views.profile, name="accounts-profile"),
    path("password/", views.password_change, name="accounts-password-change"),
    path("tokens/", token_views.token_list, name="accounts-tokens"),
    path(
        "tokens/<uuid:token_uuid>/revoke/",
        token_views.token_revoke,
        name="accounts-token-revoke",
    ),
    path(
        "password/reset/",
        auth_views.PasswordResetView.as_view(
            template_name="accounts/password_reset.html",
            email_template_name="accounts/email/password_reset.txt",
            subject_template_name="accounts/email/password_reset_subject.txt",
            success_url=reverse_lazy("accounts-password-reset-done"),
        ),
        name="accounts-password-reset",
    ),
    path(
        "password/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(template_name="accounts/password_reset_done.html"),
        name="accounts-password-reset-done",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(
            success_url=reverse_lazy("accounts-password-reset-complete")
        ),
        name="accounts-password-reset-confirm",
    ),
    path(
        "password/reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="accounts/password_reset_complete.html"
        ),
        name="accounts-password-reset-complete",
    ),
    path("teams/", views.team_list, name="accounts-teams"),
    path("teams/new/", views.team_create, name="accounts-team-create"),
    path("teams/<uuid:team_uuid>/", views.team_detail, name="accounts-team"),
    path("teams/<uuid:team_uuid>/rename/", views.team_rename, name="accounts-team-rename"),
    path("teams/<uuid:team_uuid>/delete/", views.team_delete, name="accounts-team-delete"),
    path("teams/<uuid:team_uuid>/leave/", views.team_leave, name="accounts-team-leave"),
    path("teams/<uuid:team_uuid>/audit/", views.team_audit, name="accounts-team-audit"),
    path(
        "teams/<uuid:team_uuid>/members/<uuid:member_uuid>/role/",
        views.member_role,
        name="accounts-member-role",
    ),
    path(
        "teams/<uuid:team_uuid>/members/<uuid:member_uuid>/remove/",
        views.member_remove,
        name="accounts-member-remove",
    ),
    path("teams/<uuid:team_uuid>/invites/", views.invite_create, name="accounts-invite-create"),
    path(
        "teams/<uuid:team_uuid>/invites/<uuid:invite_uuid>/revoke/",
        views.invite_revoke,
        name="accounts-invite-revoke",
    ),
    path("invites/<str:invite_token>/", views.invite_detail, name="accounts-invite"),
    path("invites/<str:invite_token>/accept/", views.invite_accept, name="accounts-invite-accept"),
]

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.forms import AdminLoginForm
from accounts.models import ApiToken, AuditEvent, Invite, Membership, Team, User

# The admin's login page counts toward the same login rate limits (accounts.ratelimit).
admin.site.login_form = AdminLoginForm
admin.site.register(User, UserAdmin)
admin.site.register(Membership)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]
    readonly_fields = ["uuid", "created_at"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    """Quotas are set here by site admins; team owners cannot change them."""

    list_display = [
        "name",
        "is_personal",
        "storage_quota_bytes",
        "max_concurrent_jobs",
        "created_at",
    ]
    list_filter = ["is_personal"]
    search_fields = ["name", "uuid"]
    readonly_fields = ["uuid", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "is_personal", "uuid", "created_at"]}),
        (
            "Quotas (empty: the site-wide default setting)",
            {"fields": ["storage_quota_bytes", "max_concurrent_jobs"]},
        ),
    ]
    inlines = [MembershipInline]


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    list_display = [
        "email",
        "team",
        "role",
        "created_at",
        "expires_at",
        "accepted_at",
        "revoked_at",
    ]
    list_filter = ["role"]
    search_fields = ["email", "team__name"]
    readonly_fields = ["uuid", "token_hash", "created_at"]
    raw_id_fields = ["team", "invited_by", "accepted_by"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: an audit log that can be edited is not evidence. (Deletion stays possible
    because deleting a team in admin cascades to its events.)"""

    list_display = ["created_at", "team", "actor_label", "action", "target_type", "target_label"]
    list_filter = ["action"]
    search_fields = ["team__name", "actor_label", "target_label", "target_id"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Site admins can see and revoke tokens (set revoked_at); the secret is never stored."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["uuid", "user", "name", "prefix", "key_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        # A token made here could never be shown to its user; they create their own.
        return False

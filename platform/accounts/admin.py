from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.models import Membership, Team, User

admin.site.register(User, UserAdmin)
admin.site.register(Team)
admin.site.register(Membership)

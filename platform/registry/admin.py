from django.contrib import admin

from registry.models import ModelVersion, Project

admin.site.register(Project)
admin.site.register(ModelVersion)

from django.contrib import admin

from jobs.models import Artifact, Job, WorkerHeartbeat

admin.site.register(Job)
admin.site.register(Artifact)
admin.site.register(WorkerHeartbeat)

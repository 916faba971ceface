"""factory_boy factories for the platform's models."""

from __future__ import annotations

import factory

from accounts.models import Membership, Team, User
from registry.models import Project


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("pw-for-tests-1")


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.OWNER


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Project {n}")


class AuditEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "accounts.AuditEvent"

    team = factory.SubFactory(TeamFactory)
    actor = factory.SubFactory(UserFactory)
    actor_label = factory.LazyAttribute(lambda o: o.actor.username if o.actor else "")
    action = "uploaded_model"


class JobFactory(factory.django.DjangoModelFactory):
    """A job row for a given `model_version` (team and project follow from it); queued
    unless a test moves it on through the model's own transitions."""

    class Meta:
        model = "jobs.Job"

    model_version = None  # required: pass a version ingested by the `model_version` fixture
    team = factory.LazyAttribute(lambda o: o.model_version.project.team)
    project = factory.LazyAttribute(lambda o: o.model_version.project)
    recipe = factory.LazyFunction(
        lambda: {"version": 1, "steps": [{"quantize": {"mode": "dynamic-int8"}}]}
    )

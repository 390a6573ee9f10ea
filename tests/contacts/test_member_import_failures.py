"""Imports that cannot succeed: refused at acceptance when the data is at fault, and otherwise
ended ``done`` / ``success: false`` with a reason, so the organisation can import again."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from helpers import wait_for

URL = "/openapi/v1/member/import/"


def _task_view(tenant, task_id):
    return tenant.client.get(f"{URL}{task_id}/").json()


def _done(tenant, task_id, timeout=40):
    return wait_for(lambda: (view := _task_view(tenant, task_id))["status"] == "done" and view, timeout=timeout)


def _task_count(tenant):
    from openmaac.contacts.import_models import ImportTask
    from openmaac.db.engine import get_database

    with get_database().read() as session:
        return session.scalar(select(func.count()).select_from(ImportTask)
                              .where(ImportTask.organization_id == tenant.id))


def _job(task_id):
    from openmaac.db.engine import get_database
    from openmaac.jobs.models import Job

    with get_database().read() as session:
        return session.scalar(select(Job).where(Job.unique_key == f"member.import:{task_id}"))


def _gave_up(reason):
    return {"success": False, "blank_error": 0, "miss_fields": [], "gender_error": 0, "mobile_error": 0,
            "birthday_error": 0, "useless_fields": [], "duplicate_error": 0, "email_error": 0, "length_error": 0,
            "reason": reason}


# -- refused at acceptance ----------------------------------------------------------------


def test_available_days_that_would_overflow_a_date_are_refused(tenant):
    response = tenant.client.post("/openapi/v1/tag/", json={"name": "forever-ish", "available_days": 1_000_000_000})
    assert response.status_code == 400
    assert response.json() == {"available_days": ["Ensure this value is less than or equal to 1000000."]}
    assert tenant.client.get("/openapi/v1/tag/", params={"name": "forever-ish"}).json()["results"] == []
    # The bound itself works everywhere an expiry is computed: imports and tagging.
    tag = tenant.client.post("/openapi/v1/tag/", json={"name": "longest", "available_days": 1_000_000})
    assert tag.status_code == 201, tag.text
    started = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "C1"}],
                                            "tags": ["longest"]})
    assert started.status_code == 200
    assert _done(tenant, started.json()["id"])["result"]["success"] is True
    member = tenant.client.get("/openapi/v1/member/", params={"customer_id": "C1"}).json()["results"][0]
    assert member["tags"] == ["longest"]


def test_null_characters_in_an_import_are_refused_and_nothing_is_accepted(tenant):
    response = tenant.client.post(URL, json={"import_key": "customer_id", "data": [
        {"customer_id": "A", "display_name": "Al\x00ice"},
        {"customer_id": "B", "tags": ["ok", "b\x00d"]},
        {"customer_id": "C", "odd\x00field": "x"},
        {"customer_id": "D", "display_name": "fine"},
    ]})
    assert response.status_code == 400
    assert response.json() == {"data": {
        "0": {"display_name": ["Null characters are not allowed."]},
        "1": {"tags": {"1": ["Null characters are not allowed."]}},
        "2": {"non_field_errors": ["Null characters are not allowed."]},
    }}
    response = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "A\x00"}],
                                             "tags": ["x\x00"]})
    assert response.json() == {"data": {"0": {"customer_id": ["Null characters are not allowed."]}},
                               "tags": {"0": ["Null characters are not allowed."]}}
    # A global tag no tag name can hold (a row's own tags are counted as length_error by the task).
    response = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "A"}],
                                             "tags": ["t" * 256]})
    assert response.json() == {"tags": ["Ensure this field has no more than 255 characters."]}
    assert _task_count(tenant) == 0
    assert tenant.client.get("/openapi/v1/member/", params={"customer_id": "D"}).json()["results"] == []
    # A backslash followed by "u0000" is text, not a NUL character.
    ok = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "\\u0000"}]})
    assert ok.status_code == 200
    assert _done(tenant, ok.json()["id"])["result"]["created_num"] == 1


# -- a job that raises anyway ---------------------------------------------------------------


def test_an_import_that_keeps_failing_ends_done_with_a_reason_and_unblocks_the_organisation(tenant, monkeypatch):
    from openmaac.contacts import imports

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(imports, "apply_rows", broken)
    started = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "K1"}]})
    assert started.status_code == 200
    task_id = started.json()["id"]
    view = _done(tenant, task_id)
    assert view["result"] == _gave_up(imports.GAVE_UP_REASON)
    assert "secret" not in str(view)
    job = _job(task_id)
    assert (job.status, job.attempts) == ("failed", imports.JOB_MAX_ATTEMPTS)
    assert "secret internal detail" in job.last_error  # for the operator
    monkeypatch.undo()
    again = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "K1"}]})
    assert again.status_code == 200
    assert _done(tenant, again.json()["id"])["result"]["created_num"] == 1


def test_an_error_in_the_data_itself_gives_up_at_the_first_attempt(tenant, monkeypatch):
    from openmaac.contacts import imports

    def overflowing(*args, **kwargs):
        raise OverflowError("date value out of range")

    monkeypatch.setattr(imports, "apply_rows", overflowing)
    started = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "K1"}]})
    view = _done(tenant, started.json()["id"])
    assert view["result"] == _gave_up(imports.GAVE_UP_REASON)
    assert _job(started.json()["id"]).attempts == 1


# -- crashes ----------------------------------------------------------------------------------


def _crashed_import(tenant, *, attempts: Any = 1, lease_left=None):
    """An import whose worker claimed its job and died: the task processing, the job running
    under a lease nobody renews (as long as a claim gives that kind, unless ``lease_left``)."""
    from openmaac.contacts import imports
    from openmaac.db.engine import get_database
    from openmaac.jobs.models import Job
    from openmaac.jobs.registry import lease_of
    from openmaac.jobs.worker import LEASE_SECONDS

    lease = lease_of("member.import") or LEASE_SECONDS
    until = datetime.now(UTC) + (timedelta(seconds=lease) if lease_left is None else lease_left)
    with get_database().write() as session:
        task = imports.create_task(session, tenant.id, "customer_id", [{"customer_id": "CRASH"}], [])
        task.status = "processing"
        session.execute(update(Job).where(Job.unique_key == f"member.import:{task.id}")
                        .values(status="running", locked_by="dead-host:1:00000000", locked_until=until,
                                attempts=attempts))
        return task.id


def test_an_import_interrupted_by_a_crash_is_taken_over_within_its_short_lease(tenant):
    task_id = _crashed_import(tenant)
    # Still an import to finish: the organisation waits for it ...
    assert tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "X"}]}).status_code == 429
    # ... only until the short lease passes and a live worker runs it (the default 60 s lease
    # would outlast this wait).
    view = _done(tenant, task_id, timeout=35)
    assert view["result"]["success"] is True and view["result"]["created_num"] == 1
    assert tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "X"}]}).status_code == 200


def test_a_running_import_keeps_its_short_lease_alive(tenant, monkeypatch):
    from openmaac.contacts import imports

    release = threading.Event()
    validate = imports.validate_rows

    def slow(*args, **kwargs):
        release.wait(60)
        return validate(*args, **kwargs)

    monkeypatch.setattr(imports, "validate_rows", slow)
    try:
        task_id = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "S"}]}).json()["id"]
        first = wait_for(lambda: (job := _job(task_id)) is not None and job.status == "running" and job, timeout=10)
        # a short lease (the worker's default is 60 s), so a crash is noticed soon ...
        assert first.locked_until <= datetime.now(UTC) + timedelta(seconds=15)
        # ... renewed while the import runs, so a slow one is not taken over
        renewed = wait_for(lambda: (job := _job(task_id)).locked_until > first.locked_until and job, timeout=20)
        assert renewed.locked_by == first.locked_by and renewed.attempts == 1
    finally:
        release.set()
    assert _done(tenant, task_id)["result"]["success"] is True


def test_an_import_whose_worker_died_on_every_attempt_is_given_up(tenant):
    from openmaac.contacts import imports
    from openmaac.jobs.models import Job

    task_id = _crashed_import(tenant, attempts=Job.max_attempts, lease_left=timedelta(seconds=-1))
    view = _done(tenant, task_id)
    assert view["result"] == _gave_up(imports.GAVE_UP_REASON)
    assert tenant.client.get("/openapi/v1/member/", params={"customer_id": "CRASH"}).json()["results"] == []


@pytest.mark.parametrize("job_state", ["failed", "missing"])
def test_a_task_left_processing_by_a_dead_job_does_not_block_the_organisation(tenant, job_state):
    """The state the defect left behind: the job ``failed`` (or gone), its task ``processing``."""
    from sqlalchemy import delete

    from openmaac.contacts import imports
    from openmaac.db.engine import get_database
    from openmaac.jobs.models import Job

    task_id = _crashed_import(tenant)
    with get_database().write() as session:
        job = select(Job.id).where(Job.unique_key == f"member.import:{task_id}").scalar_subquery()
        if job_state == "failed":
            session.execute(update(Job).where(Job.id == job).values(status="failed", locked_by=None,
                                                                   locked_until=None, last_error="boom"))
        else:
            session.execute(delete(Job).where(Job.id == job))
    started = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "NEXT"}]})
    assert started.status_code == 200, started.text
    assert _task_view(tenant, task_id)["result"] == _gave_up(imports.LOST_REASON)
    assert _done(tenant, started.json()["id"])["result"]["created_num"] == 1


def test_a_tag_saved_before_the_bound_fails_its_import_at_once_with_a_reason(tenant):
    """A tag whose available_days overflow a date (saved before POST tag/ refused them): the
    import raises on its data, so it gives up at the first attempt instead of retrying."""
    from openmaac.contacts import imports
    from openmaac.db.base import utcnow
    from openmaac.db.engine import get_database
    from openmaac.tags.models import Tag

    with get_database().write() as session:
        session.add(Tag(organization_id=tenant.id, name="overflowing", available_days=1_000_000_000,
                        created_at=utcnow()))
    started = tenant.client.post(URL, json={"import_key": "customer_id", "data": [{"customer_id": "T1"}],
                                            "tags": ["overflowing"]})
    assert started.status_code == 200
    view = _done(tenant, started.json()["id"])
    assert view["result"] == _gave_up(imports.GAVE_UP_REASON)
    assert _job(started.json()["id"]).attempts == 1
    assert tenant.client.get("/openapi/v1/member/", params={"customer_id": "T1"}).json()["results"] == []

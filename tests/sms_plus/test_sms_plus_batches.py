"""SMS+ batches: one fallback timer per multicast that fires for every message of it, a message
LINE delivered before the timer is not texted, SMS claimed / sent / recorded together, a batch
that died between its sends and their record sends nothing twice, and delivery reports written
together (one report's error stays its own)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from helpers import deadlocked_once, wait_for
from openmaac.channels.sms.base import DeliveryReport, DeliveryStatus

os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"

PNP_CONTENT = [{"type": "text", "text": "Order {{order_number}} arrived"}]
SMS_TEXT = "Order {{order_number}} arrived"


def sim(base_url: str, name: str) -> str:
    return f"{base_url}/_simulators/{name}"


def scenario(tenant: Any, **fields: Any) -> int:
    body = {"name": "到貨通知", "pnp_enabled": True, "pnp_messages": PNP_CONTENT, "pnp_approval_status": "approved",
            "fallback_enabled": True, "sms_text": SMS_TEXT, "fallback_period": 1, **fields}
    response = tenant.client.post(tenant.api("pnp/setting/"), json=body)
    assert response.status_code == 201, response.text
    assert tenant.client.post(tenant.api("pnp/points/"), json={"amount": 1000}).status_code == 200
    return int(response.json()["id"])


def multicast(tenant: Any, setting_id: int, phones: list[str]) -> list[int]:
    data = [{"phone_number": phone, "pnp": {"order_number": f"A{i}"}, "sms": {"order_number": f"A{i}"}}
            for i, phone in enumerate(phones)]
    response = tenant.client.post(tenant.api("pnp/message/multicast/"),
                                  json={"pnp_setting_id": setting_id, "data": data})
    assert response.status_code == 200, response.text
    return [int(item["id"]) for item in response.json()]


def rows(tenant: Any, setting_id: int) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    url: str | None = tenant.api("pnp/message/") + f"?pnp_setting_id={setting_id}" \
        "&updated_at_min=2000-01-01T00:00:00&updated_at_max=2999-01-01T00:00:00"
    while url:
        page = tenant.client.get(url).json()
        found.update({int(r["pnp_message_id"]): r for r in page["results"]})
        url = (tenant.api("pnp/message/") + f"?pnp_setting_id={setting_id}&updated_at_min=2000-01-01T00:00:00"
               f"&updated_at_max=2999-01-01T00:00:00&start={page['next']}") if page["next"] else None
    return found


def wait_all(tenant: Any, setting_id: int, ids: list[int], statuses: set[str]) -> dict[int, dict[str, Any]]:
    def check() -> dict[int, dict[str, Any]] | None:
        found = rows(tenant, setting_id)
        return found if all(found.get(i, {}).get("status") in statuses for i in ids) else None

    try:
        return wait_for(check, timeout=60, interval=0.2)
    except AssertionError:
        raise AssertionError(f"not all {statuses}: {rows(tenant, setting_id)}") from None


def texts_to(base_url: str, phones: list[str]) -> Counter[str]:
    sent: Counter[str] = Counter()
    for phone in phones:
        sent[phone] = int(httpx.get(sim(base_url, "twilio") + "/_admin/messages", params={"to": phone}).json()["count"])
    return sent


def fallback_jobs(database: Any, ids: list[int]) -> list[dict[str, Any]]:
    from openmaac.jobs.models import Job

    with database.read() as session:
        payloads = session.scalars(select(Job.payload).where(Job.kind == "sms_plus.fallback")).all()
    return [dict(p) for p in payloads if set(p.get("message_ids", [p.get("message_id")])) & set(ids)]


def test_one_fallback_timer_per_multicast_fires_for_every_message(tenant: Any, base_url: str, database: Any) -> None:
    # LINE knows none of these numbers (PNP fails): each goes to SMS once the timer fires
    setting_id = scenario(tenant, fallback_period=60)  # 3 s here: the timer is still waiting below
    phones = [f"+88691230{i:04d}" for i in range(7)]
    ids = multicast(tenant, setting_id, phones)
    jobs = fallback_jobs(database, ids)
    assert jobs == [{"message_ids": ids}]  # one timer for the batch, none per message
    found = wait_all(tenant, setting_id, ids, {"sms_delivered"})
    assert {found[i]["pnp_status"] for i in ids} <= {"pnp_failed", "pnp_undeliverable"}
    assert texts_to(base_url, phones) == Counter({phone: 1 for phone in phones})


def test_a_message_line_delivered_before_the_timer_is_not_texted(tenant: Any, base_url: str) -> None:
    from openmaac.sms_plus import engine

    line_phone = "+886912310001"
    httpx.post(sim(base_url, "line") + "/_admin/users", json={"phone": line_phone}).raise_for_status()
    setting_id = scenario(tenant, fallback_period=43200)  # the batch's timer is run by hand below
    phones = [line_phone, "+886912310002", "+886912310003"]
    ids = multicast(tenant, setting_id, phones)
    wait_all(tenant, setting_id, ids[:1], {"pnp_delivered"})  # LINE's delivery webhook came first
    wait_all(tenant, setting_id, ids[1:], {"pnp_failed"})
    engine.run_fallback_batch(ids)  # the timer fires
    found = wait_all(tenant, setting_id, ids, {"pnp_delivered", "sms_delivered"})
    assert found[ids[0]]["status"] == "pnp_delivered" and found[ids[0]]["sms_status"] is None
    assert [found[i]["status"] for i in ids[1:]] == ["sms_delivered", "sms_delivered"]
    assert texts_to(base_url, phones) == Counter({line_phone: 0, phones[1]: 1, phones[2]: 1})
    metric = tenant.client.get(tenant.api(f"pnp/setting/{setting_id}/")).json()["metric"]
    assert metric == {"all": 3, "fail": 0, "pnp": 1, "sms": 2}


def test_the_callback_deadline_of_a_batch_ends_each_unreported_sms(tenant: Any, base_url: str) -> None:
    tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "twilio", "callback_timeout_minutes": 20})
    silent = ["+886912320001", "+886912320002"]
    httpx.post(sim(base_url, "twilio") + "/_admin/faults", json={"no_callback_numbers": silent}).raise_for_status()
    try:
        setting_id = scenario(tenant, pnp_enabled=False, pnp_messages=[])
        ids = multicast(tenant, setting_id, [*silent, "+886912320003"])
        found = wait_all(tenant, setting_id, ids, {"sms_callback_timeout", "sms_delivered"})
        assert [found[i]["status"] for i in ids] == ["sms_callback_timeout", "sms_callback_timeout", "sms_delivered"]
    finally:
        httpx.delete(sim(base_url, "twilio") + "/_admin/faults")


def test_a_batch_that_died_between_its_sends_and_their_record_sends_nothing_twice(
        tenant: Any, base_url: str, database: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from openmaac.sms_plus import engine
    from openmaac.sms_plus.models import PnpMessage

    # numbers LINE does not know, and the longest fallback_period: the batch's own timer stays
    # out of the way; it is run by hand below, once PNP has failed
    setting_id = scenario(tenant, fallback_period=43200)
    phones = [f"+88691233{i:04d}" for i in range(4)]
    ids = multicast(tenant, setting_id, phones)
    wait_all(tenant, setting_id, ids, {"pnp_failed"})

    class Killed(BaseException):
        """The process dying: nothing after the sends runs."""

    real_record = engine._record_sms_outcome

    def killed(*_args: Any, **_kwargs: Any) -> None:
        raise Killed

    monkeypatch.setattr(engine, "_record_sms_outcome", killed)
    with pytest.raises(Killed):
        engine.run_fallback_batch(ids)
    monkeypatch.setattr(engine, "_record_sms_outcome", real_record)
    assert texts_to(base_url, phones) == Counter({phone: 1 for phone in phones})  # the provider took them
    with database.read() as session:
        marked = session.scalars(select(PnpMessage.send_started_at).where(PnpMessage.id.in_(ids))).all()
    assert all(at is not None for at in marked)  # left marked under way, their outcome unknown
    # the batch runs again once its lease passed (past the send grace here): each message is
    # handed over to a job of its own, which finds its SMS at the provider instead of sending again
    monkeypatch.setattr(engine, "SEND_GRACE_SECONDS", 0.0)
    engine.run_fallback_batch(ids)
    wait_all(tenant, setting_id, ids, {"sms_delivered"})
    assert texts_to(base_url, phones) == Counter({phone: 1 for phone in phones})


def test_reports_written_together_keep_each_ones_error_its_own(monkeypatch: pytest.MonkeyPatch,
                                                                database: Any) -> None:
    from openmaac.db.group_commit import _Write
    from openmaac.sms_plus import engine

    reports = [DeliveryReport(provider_message_id=f"SM{i}", status=DeliveryStatus.DELIVERED, raw_status="delivered",
                              reference=f"r{i}")
               for i in range(3)]
    applied: list[str] = []

    def apply_report(_session: Any, _org: int, report: DeliveryReport, _ended: list[Any]) -> bool:
        if report.reference == "r1":
            raise RuntimeError("bad report")
        applied.append(str(report.reference))
        return True

    monkeypatch.setattr(engine, "_apply_report", apply_report)
    group = engine.report_writes(database)
    items = [_Write(engine._report_work(1, report)) for report in reports]
    group._commit(items)  # the shared transaction fails on r1: each is written alone
    assert [item.done for item in items] == [True, True, True]
    assert [item.result for item in items] == [True, None, True]
    assert isinstance(items[1].error, RuntimeError) and items[0].error is None and items[2].error is None
    assert applied == ["r0", "r0", "r2"]  # r0's share rolled back, then written alone


def test_reports_arriving_together_are_each_answered_after_the_write_holding_them(
        monkeypatch: pytest.MonkeyPatch, database: Any) -> None:
    from openmaac.db.group_commit import GroupCommit
    from openmaac.sms_plus import engine

    entered = threading.Event()
    release = threading.Event()
    transactions: list[list[str]] = []
    real_run = GroupCommit._run

    def run(self: Any, session: Any, writes: list[Any]) -> list[Any]:
        if not transactions:
            entered.set()
            release.wait(10)  # the first write is under way while the others arrive
        transactions.append([str(write.work.reference) for write in writes])
        return [True for _write in writes]

    def work(reference: str) -> Any:
        def apply(_session: Any) -> bool:
            raise AssertionError("not run: the batch is answered by the patched run")
        apply.reference = reference  # type: ignore[attr-defined]
        return apply

    monkeypatch.setattr(GroupCommit, "_run", run)
    group = GroupCommit(database, on_batch_end=engine._finish_ended, autoflush=False)
    results: dict[str, bool] = {}

    def send(reference: str) -> None:
        results[reference] = group.run(work(reference))

    first = threading.Thread(target=send, args=("a",))
    first.start()
    assert entered.wait(10)
    others = [threading.Thread(target=send, args=(ref,)) for ref in ("b", "c", "d")]
    for thread in others:
        thread.start()
    wait_for(lambda: len(group._pending) == 3 or None, timeout=10, interval=0.01)
    assert not results  # nobody answered before the write holding its report
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    monkeypatch.setattr(GroupCommit, "_run", real_run)
    assert transactions[0] == ["a"] and sorted(transactions[1]) == ["b", "c", "d"]  # one write for the three
    assert results == {"a": True, "b": True, "c": True, "d": True}


def test_two_reports_about_one_message_in_one_write(tenant: Any, base_url: str, database: Any) -> None:
    from openmaac.db.group_commit import _Write
    from openmaac.sms_plus import engine
    from openmaac.sms_plus.models import PnpMessage

    phone = "+886912340001"
    httpx.post(sim(base_url, "twilio") + "/_admin/faults", json={"no_callback_numbers": [phone]}).raise_for_status()
    try:
        setting_id = scenario(tenant, pnp_enabled=False, pnp_messages=[])
        ids = multicast(tenant, setting_id, [phone, "+886912340002"])
        wait_all(tenant, setting_id, ids[:1], {"sms_accepted"})
    finally:
        httpx.delete(sim(base_url, "twilio") + "/_admin/faults")
    with database.read() as session:
        message = session.scalars(select(PnpMessage).where(PnpMessage.id == ids[0])).one()
        provider_id, reference = str(message.sms_provider_message_id), str(message.sms_reference)
    reports = [DeliveryReport(provider_message_id=provider_id, status=status, raw_status=status.value,
                              reference=reference) for status in (DeliveryStatus.SENT, DeliveryStatus.DELIVERED)]
    group = engine.report_writes(database)
    items = [_Write(engine._report_work(tenant.id, report)) for report in reports]
    group._commit(items)
    assert [(item.result, item.error) for item in items] == [(True, None), (True, None)]
    found = wait_all(tenant, setting_id, ids, {"sms_delivered"})
    assert found[ids[0]]["sms_delivered_at"] is not None
    with database.read() as session:
        ended = session.scalars(select(PnpMessage).where(PnpMessage.id == ids[0])).one()
        assert ended.finished and ended.points_held == 0


def test_a_chunks_record_aborted_by_a_deadlock_is_run_again_and_records_every_answer(
        tenant: Any, base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # On PostgreSQL a group commit locking messages for several delivery webhooks can deadlock
    # with a worker recording a chunk of PNP answers; PostgreSQL then aborts one of them. Were
    # the record lost, its chunk would stay "in flight" until a later run took it over as
    # accepted: PNPs LINE refused would read pnp_accepted and wait for a delivery never coming.
    from openmaac.sms_plus import engine

    aborted: list[int] = []
    monkeypatch.setattr(engine, "_record_pnp_chunk", deadlocked_once(engine._record_pnp_chunk, aborted))
    setting_id = scenario(tenant, fallback_period=43200)  # the fallback timer stays out of the way
    phones = [f"+88691236{i:04d}" for i in range(5)]  # numbers LINE does not know: every PNP fails
    ids = multicast(tenant, setting_id, phones)
    found = wait_all(tenant, setting_id, ids, {"pnp_failed", "pnp_accepted"})
    assert aborted == [1]
    assert {found[i]["status"] for i in ids} == {"pnp_failed"}


def test_a_chunks_marking_aborted_by_a_deadlock_is_run_again_and_sends_each_sms_once(
        tenant: Any, base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # On PostgreSQL a group commit of several SMS status callbacks locks their messages in the
    # order they came, and can deadlock with a fallback batch locking its chunk in id order; the
    # batch's transaction before its sends is then run again, not left to fail its job.
    from openmaac.sms_plus import engine

    aborted: list[int] = []
    setting_id = scenario(tenant, fallback_period=43200)  # the batch's own timer stays out of the way
    phones = [f"+88691237{i:04d}" for i in range(3)]  # numbers LINE does not know: every PNP fails
    ids = multicast(tenant, setting_id, phones)
    wait_all(tenant, setting_id, ids, {"pnp_failed"})
    monkeypatch.setattr(engine, "_mark_sms_chunk", deadlocked_once(engine._mark_sms_chunk, aborted))
    engine.run_fallback_batch(ids)
    assert aborted == [1]
    wait_all(tenant, setting_id, ids, {"sms_delivered"})
    assert texts_to(base_url, phones) == Counter({phone: 1 for phone in phones})

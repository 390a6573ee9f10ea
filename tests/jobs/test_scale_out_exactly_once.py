"""Scale-out: ``openmaac serve --no-worker`` and two ``openmaac worker`` processes on one fresh
database send a 20,000-recipient enhanced multicast (40 requests of 500), personalised
multicasts (requests of 150) and an SMS+ campaign (PNP, SMS after the fallback period), and
every recipient gets exactly one message; so they do when a third worker is SIGKILLed while
LINE has accepted its calls but not yet answered them.

All real processes: the API server takes the requests and LINE's delivery webhooks, the two
workers share the jobs (each serves its own ``/metrics``, which says how many send jobs it ran),
and the LINE and Twilio simulators run as processes of their own, whose records are the truth
checked here. On PostgreSQL (``OPENMAAC_TEST_DATABASE_URL``) the workers claim with ``FOR UPDATE
SKIP LOCKED``; on SQLite the three processes share the database file (WAL, one writer at a time).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import bindparam, select, text

from helpers import metric_value, pnp_message_rows, simulator_process, wait_for
from openmaac.simulators import twilio as twilio_sim
from processes import Process, Space, free_port, own_database

ENHANCED_RECIPIENTS = 20_000
ENHANCED_PER_REQUEST = 500
MULTICAST_RECIPIENTS = 1_500
MULTICAST_PER_REQUEST = 150
SMS_PLUS_LINE_USERS = 1_000  # PNP delivered
SMS_PLUS_FALLBACK = 500  # not LINE users: PNP refused, SMS after the fallback period
SMS_PLUS_PER_REQUEST = 150
# one API minute of fallback_period lasts this long here: long enough for the LINE phase (every
# PNP answered and its delivery webhook recorded) to end before the first timer comes due
MINUTE_SECONDS = "15"
SMS_FINAL = {"sms_delivered", "sms_failed", "sms_undeliverable", "sms_blocked", "sms_callback_timeout"}
RUNS = "openmaac_job_runs_total"


@dataclass
class Cluster:
    space: Space
    serve: Process
    workers: list[tuple[Process, str]]  # (process, its /metrics URL)
    line: str  # the LINE simulator's base URL
    twilio: str

    def cli(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "openmaac.cli", *args], env=self.space.env(**ENV), check=True,
                              capture_output=True, text=True, timeout=120).stdout.strip()

    def job_runs(self, kind: str) -> list[float]:
        """Successful runs of ``kind`` by each worker, from its own /metrics."""
        return [metric_value(httpx.get(url, timeout=10).text, RUNS, kind=kind, outcome="success")
                for _process, url in self.workers]


ENV = {"OPENMAAC_OUTBOUND_ALLOW_HOSTS": "127.0.0.1,localhost", "OPENMAAC_SMS_PLUS_MINUTE_SECONDS": MINUTE_SECONDS,
       # the API's own per-organisation limits are not what this test is about
       "OPENMAAC_API_RATE_LIMITS": "multicast=1000/1,enhanced_multicast=1000/1,pnp_multicast=1000/1"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("scale-out") / "data"
    with own_database(data_dir) as space, simulator_process("line") as line, simulator_process("twilio") as twilio:
        serve = Process(space, "serve", "--no-worker", **ENV)
        workers: list[tuple[Process, str]] = []
        try:
            serve.wait_until_serving()  # it has migrated the database
            for _ in range(2):
                port = free_port()
                # the workers build the URLs that lead back to the API (SMS status callbacks,
                # tracked links) from the same public base URL as the server
                workers.append((Process(space, "worker", "--metrics-port", str(port), **ENV,
                                        OPENMAAC_PUBLIC_BASE_URL=serve.base_url),
                                f"http://127.0.0.1:{port}/metrics"))
            for process, url in workers:
                wait_for(lambda process=process, url=url: _serving(process, url), timeout=60, interval=0.1)
            yield Cluster(space, serve, workers, line, twilio)
        finally:
            for process, _url in workers:
                process.kill()
            serve.kill()


def _serving(process: Process, url: str) -> bool:
    if process.process.poll() is not None:
        raise AssertionError(f"worker exited with {process.process.returncode}: {process.output()}")
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Org:
    id: int
    token: str
    channel_id: str
    client: httpx.Client


def _org(cluster: Cluster, name: str) -> Org:
    """A new organisation whose LINE channel is the simulator process's, its webhooks (PNP
    deliveries) coming back to the API server."""
    token = cluster.cli("token", "create", "--org", name)
    with cluster.space.database.write() as session:
        org_id, channel_id, secret, access_token = session.execute(text(
            "SELECT o.id, c.channel_id, c.channel_secret, c.access_token FROM organizations o "
            "JOIN line_channels c ON c.organization_id = o.id WHERE o.name = :name"), {"name": name}).one()
        session.execute(text("UPDATE line_channels SET api_base_url = :url WHERE organization_id = :org"),
                        {"url": cluster.line, "org": org_id})
    httpx.post(f"{cluster.line}/_admin/channels", timeout=30, json={
        "channel_id": channel_id, "channel_secret": secret, "access_token": access_token,
        "webhook_url": f"{cluster.serve.base_url}/line/webhook/{channel_id}"}).raise_for_status()
    client = httpx.Client(base_url=cluster.serve.base_url + "/openapi/v1/",
                          headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return Org(int(org_id), token, str(channel_id), client)


def _friends(cluster: Cluster, org: Org, count: int) -> list[str]:
    """``count`` friends of the organisation at the LINE simulator and its contacts, in bulk."""
    created = httpx.post(f"{cluster.line}/_admin/users/bulk", timeout=120,
                         json={"count": count, "channel_id": org.channel_id})
    assert created.status_code == 201, created.text
    uids: list[str] = created.json()["user_ids"]
    with cluster.space.database.write() as session:
        for start in range(0, count, 5000):
            session.execute(text(
                "INSERT INTO contacts (organization_id, line_uid, status, created_at, updated_at) "
                "VALUES (:org, :uid, 'follow', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                [{"org": org.id, "uid": uid} for uid in uids[start:start + 5000]])
    return uids


def _received(cluster: Cluster, org: Org) -> dict[str, Any]:
    response = httpx.get(f"{cluster.line}/_admin/channels/{org.channel_id}/received", timeout=60)
    response.raise_for_status()
    return dict(response.json())


def test_two_workers_send_enhanced_multicast_and_multicast_to_every_recipient_once(cluster: Cluster) -> None:
    org = _org(cluster, "scale-out-line")
    enhanced = _friends(cluster, org, ENHANCED_RECIPIENTS)
    personal = _friends(cluster, org, MULTICAST_RECIPIENTS)
    template = org.client.post("template/", json={"name": "sale", "messages": [
        {"type": "text", "text": "{{what}} sale today"}]})
    assert template.status_code == 201, template.text
    template_id = template.json()["id"]
    # each LINE call takes a moment, so a worker that claimed some jobs is still busy when the
    # other one next looks for work (neither could run them all at once even so)
    httpx.post(f"{cluster.line}/_admin/faults", json={
        "kind": "latency", "endpoint": "*", "channel_id": org.channel_id, "count": 1_000_000, "seconds": 0.1,
    }).raise_for_status()
    before = cluster.job_runs("direct_message.send")

    ids = []
    for start in range(0, ENHANCED_RECIPIENTS, ENHANCED_PER_REQUEST):
        response = org.client.post("direct_message/enhanced_multicast/", json={
            "template_id": template_id, "line_uids": enhanced[start:start + ENHANCED_PER_REQUEST],
            "data": {"what": "Summer"}})
        assert response.status_code == 200, response.text
        assert response.json()["result"] == "pending"
        ids.append((response.json()["id"], ENHANCED_PER_REQUEST))
    for start in range(0, MULTICAST_RECIPIENTS, MULTICAST_PER_REQUEST):
        chunk = personal[start:start + MULTICAST_PER_REQUEST]
        response = org.client.post("direct_message/multicast/", json={
            "template_id": template_id, "data": [{"line_uid": uid, "what": f"Winter {uid[-4:]}"} for uid in chunk]})
        assert response.status_code == 200, response.text
        ids.append((response.json()["id"], len(chunk)))

    def unsent() -> list[int]:
        return [dm_id for dm_id, _n in ids if org.client.get(f"direct_message/{dm_id}/").json()["status"] != "sent"]

    try:
        wait_for(lambda: not unsent(), timeout=240, interval=1.0)
    except AssertionError:
        raise AssertionError(f"not sent: {unsent()}; LINE received {_received(cluster, org)['total']}") from None
    for dm_id, count in ids:
        result = org.client.get(f"direct_message/{dm_id}/").json()["result"]
        assert result["total_count"] == count and result["fail_count"] == 0, (dm_id, result)
    record = _received(cluster, org)
    assert set(record["users"]) == set(enhanced) | set(personal)  # none missing, nobody else
    twice = {uid: n for uid, n in record["users"].items() if n != 1}
    assert not twice, f"{len(twice)} recipients got more than one message: {list(twice.items())[:5]}"
    assert record["total"] == ENHANCED_RECIPIENTS + MULTICAST_RECIPIENTS

    # both workers sent: the jobs were shared, not run by one while the other idled
    runs = [after - start for after, start in zip(cluster.job_runs("direct_message.send"), before, strict=True)]
    assert all(n >= 1 for n in runs), runs
    assert sum(runs) >= len(ids), runs  # a job that waited for a leased call runs again
    org.client.close()


def test_two_workers_run_an_sms_plus_campaign_each_pnp_and_each_sms_once(cluster: Cluster) -> None:
    org = _org(cluster, "scale-out-sms-plus")
    line_phones = [f"+8869170{index:05d}" for index in range(SMS_PLUS_LINE_USERS)]
    sms_phones = [f"+8869180{index:05d}" for index in range(SMS_PLUS_FALLBACK)]
    created = httpx.post(f"{cluster.line}/_admin/pnp/users", timeout=120,
                         json={"phones": line_phones, "channel_id": org.channel_id})
    assert created.status_code == 201, created.text
    line_user_of = dict(zip(line_phones, created.json()["user_ids"], strict=True))
    cluster.cli("points", "add", str(2 * (SMS_PLUS_LINE_USERS + SMS_PLUS_FALLBACK)), "--org", "scale-out-sms-plus")
    response = org.client.put("pnp/sms_provider/", json={
        "provider": "twilio", "base_url": cluster.twilio, "callback_timeout_minutes": 40,
        "credentials": {"account_sid": twilio_sim.DEFAULT_ACCOUNT_SID, "auth_token": twilio_sim.DEFAULT_AUTH_TOKEN,
                        "from_number": "+15005550006"}})
    assert response.status_code == 200, response.text
    response = org.client.post("pnp/setting/", json={
        "name": "arrival", "pnp_enabled": True, "pnp_approval_status": "approved",
        "pnp_messages": [{"type": "text", "text": "Order {{order}} arrived"}], "fallback_enabled": True,
        "sms_text": "Order {{order}} arrived", "fallback_period": 1})
    assert response.status_code == 201, response.text
    setting_id = response.json()["id"]
    before = {kind: cluster.job_runs(kind) for kind in ("sms_plus.dispatch", "sms_plus.fallback")}

    phones = _interleaved(line_phones, sms_phones)
    for start in range(0, len(phones), SMS_PLUS_PER_REQUEST):
        data = [{"phone_number": phone, "pnp": {"order": phone[-5:]}, "sms": {"order": phone[-5:]}}
                for phone in phones[start:start + SMS_PLUS_PER_REQUEST]]
        response = org.client.post("pnp/message/multicast/", json={"pnp_setting_id": setting_id, "data": data})
        assert response.status_code == 200, response.text

    def all_final() -> list[dict[str, Any]] | None:
        rows = pnp_message_rows(org.client, "pnp/message/", setting_id)
        return rows if len(rows) == len(phones) and all(_final(row) for row in rows) else None

    try:
        rows = wait_for(all_final, timeout=240, interval=2.0)
    except AssertionError:
        statuses = Counter(r["status"] for r in pnp_message_rows(org.client, "pnp/message/", setting_id))
        raise AssertionError(f"not final: {statuses}") from None
    by_phone = {row["phone_number"]: row for row in rows}
    assert set(by_phone) == set(phones)

    sms = Counter(m["to"] for m in httpx.get(f"{cluster.twilio}/_admin/messages", timeout=60).json()["results"])
    assert not set(sms) - set(phones), "an SMS to a number nobody sent to"
    assert {phone: sms[phone] for phone in sms_phones if sms[phone] != 1} == {}  # each fallback number once
    delivered = [phone for phone, row in by_phone.items() if row["status"] == "pnp_delivered"]
    assert not [phone for phone in delivered if sms[phone]], "an SMS after the PNP was delivered"
    assert max(sms.values()) == 1
    for phone in sms_phones:
        # LINE refuses the number (pnp_failed); on a machine so loaded that its PNP call was not
        # answered within the LINE step's grace (engine.LINE_STEP_GRACE_SECONDS), the fallback
        # went on without it and the PNP is undeliverable: either way one SMS, no PNP
        assert by_phone[phone]["pnp_status"] in ("pnp_failed", "pnp_undeliverable")
        assert by_phone[phone]["status"] == "sms_delivered"
    record = _received(cluster, org)  # PNP lands in the LINE user's inbox
    assert set(record["users"]) == set(line_user_of.values())
    assert set(record["users"].values()) == {1}, "a LINE user got the PNP more than once"
    # (a LINE user's delivery webhook recorded after the fallback timer would have meant an SMS
    # too: not expected with this fallback period, but not a double send either)
    assert len(delivered) + sum(sms[p] for p in line_phones) == SMS_PLUS_LINE_USERS

    runs = {kind: [after - start for after, start in zip(cluster.job_runs(kind), before[kind], strict=True)]
            for kind in before}
    assert all(n >= 1 for n in runs["sms_plus.fallback"]), runs
    org.client.close()


def _interleaved(first: list[str], second: list[str]) -> list[str]:
    """LINE users and SMS numbers mixed in every request, as a real campaign's list is."""
    ratio = len(first) // max(len(second), 1)
    mixed: list[str] = []
    rest = iter(second)
    for index, phone in enumerate(first):
        mixed.append(phone)
        if (index + 1) % ratio == 0:
            mixed.extend(p for p in [next(rest, None)] if p)
    mixed.extend(rest)
    return mixed


def _final(row: dict[str, Any]) -> bool:
    return row["status"] == "pnp_delivered" or row["status"] in SMS_FINAL


KILLED_REQUESTS = 24  # enhanced multicasts of 500: more than the two workers' 16 slots hold at once
ACCEPTED_THEN_SECONDS = 5.0  # every LINE call is accepted at once and answered this much later


def test_a_worker_killed_mid_send_is_taken_over_by_the_others_and_nobody_gets_two(cluster: Cluster) -> None:
    """A third worker, SIGKILLed while LINE has accepted calls it made and not yet answered them:
    the two others take its jobs over once their lease passes (15 s for a send job) and finish
    those calls with their stored retry keys (LINE answers 409: already done), so every recipient
    still gets one message."""
    org = _org(cluster, "scale-out-kill")
    uids = _friends(cluster, org, KILLED_REQUESTS * ENHANCED_PER_REQUEST)
    template = org.client.post("template/", json={"name": "sale", "messages": [{"type": "text", "text": "Sale"}]})
    assert template.status_code == 201, template.text
    victim = Process(cluster.space, "worker", **ENV, OPENMAAC_PUBLIC_BASE_URL=cluster.serve.base_url)
    try:
        pid = victim.process.pid
        wait_for(lambda: _beating(cluster, pid, victim), timeout=60, interval=0.1)
        httpx.post(f"{cluster.line}/_admin/faults", json={
            "kind": "timeout_after_accept", "endpoint": "multicast", "channel_id": org.channel_id,
            "count": KILLED_REQUESTS, "seconds": ACCEPTED_THEN_SECONDS}).raise_for_status()
        recipients: dict[int, list[str]] = {}
        for start in range(0, len(uids), ENHANCED_PER_REQUEST):
            chunk = uids[start:start + ENHANCED_PER_REQUEST]
            response = org.client.post("direct_message/enhanced_multicast/", json={
                "template_id": template.json()["id"], "line_uids": chunk, "data": {}})
            assert response.status_code == 200, response.text
            recipients[int(response.json()["id"])] = chunk

        def victim_call_accepted() -> list[int]:
            """The victim's messages whose LINE call LINE has accepted (and not yet answered)."""
            received = _received(cluster, org)["users"]
            return [dm_id for dm_id in _running_jobs_of(cluster, pid)
                    if recipients[dm_id][0] in received
                    and org.client.get(f"direct_message/{dm_id}/").json()["status"] != "sent"]

        cut_off = wait_for(victim_call_accepted, timeout=60, interval=0.05)
        victim.kill()  # SIGKILL
    finally:
        victim.kill()
    httpx.delete(f"{cluster.line}/_admin/faults", params={"channel_id": org.channel_id}).raise_for_status()

    def unsent() -> list[int]:
        return [dm_id for dm_id in recipients
                if org.client.get(f"direct_message/{dm_id}/").json()["status"] != "sent"]

    try:
        wait_for(lambda: not unsent(), timeout=180, interval=1.0)
    except AssertionError:
        raise AssertionError(f"not sent: {unsent()}") from None
    record = _received(cluster, org)
    assert set(record["users"]) == set(uids)
    twice = {uid: n for uid, n in record["users"].items() if n != 1}
    assert not twice, f"{len(twice)} recipients got more than one message: {list(twice.items())[:5]}"
    for dm_id in recipients:
        result = org.client.get(f"direct_message/{dm_id}/").json()["result"]
        assert result["total_count"] == ENHANCED_PER_REQUEST and result["fail_count"] == 0, (dm_id, result)
    # the calls the victim had in flight were finished by another worker with their retry keys
    log = httpx.get(f"{cluster.line}/_admin/requests", timeout=60,
                    params={"channel_id": org.channel_id, "endpoint": "multicast"}).json()
    accepted = [entry for entry in log if entry["status"] == 200]
    assert len(accepted) == KILLED_REQUESTS
    conflicts = {entry["retry_key"] for entry in log if entry["status"] == 409}
    assert conflicts <= {entry["retry_key"] for entry in accepted}
    with cluster.space.database.read() as session:
        cut_off_keys = set(session.scalars(text("SELECT retry_key FROM direct_message_sends "
                                                "WHERE direct_message_id IN :ids").bindparams(
            bindparam("ids", expanding=True)), {"ids": cut_off}))
    assert cut_off_keys and cut_off_keys <= conflicts


def _beating(cluster: Cluster, pid: int, process: Process) -> bool:
    from openmaac.jobs.models import WorkerHeartbeat

    if process.process.poll() is not None:
        raise AssertionError(f"worker exited with {process.process.returncode}: {process.output()}")
    with cluster.space.database.read() as session:
        return bool(session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.pid == pid)).first())


def _running_jobs_of(cluster: Cluster, pid: int) -> list[int]:
    """The direct messages whose send job the worker with this process id holds."""
    from openmaac.jobs.models import Job

    with cluster.space.database.read() as session:
        payloads = session.scalars(select(Job.payload).where(
            Job.kind == "direct_message.send", Job.status == "running", Job.locked_by.like(f"%:{pid}:%")))
        return [int(payload["id"]) for payload in payloads]

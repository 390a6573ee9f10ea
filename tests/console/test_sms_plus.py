"""The console's SMS+ pages in a real browser against the real server: the formal-sending flow
as the help center walks it (upload a CSV or XLSX, preview, map columns, template preview,
send, delivery progress) ending on the simulated phones, deleting a list, list performance on
the trigger date, the balance reminder, roles, tenant walls, escaping, scenario settings."""

from __future__ import annotations

import io
import json
import os
import re
from datetime import UTC, datetime
from typing import Any

import httpx
from playwright.sync_api import expect

from helpers import inbox

# one API "minute" (the SMS fallback period) = 0.05 s here, as in tests/sms_plus
os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"

PNP_CONTENT = [{"type": "text", "text": "Hi {{name}}, order {{order_number}} has shipped."}]
SMS_TEXT = "Order {{order_number}} for {{name}} has shipped."
SLOW = 60_000  # ms: sends through the job queue and the simulators


def create_setting(tenant: Any, **fields: Any) -> dict[str, Any]:
    body = {"name": "Shipping notice", "pnp_enabled": True, "pnp_messages": PNP_CONTENT,
            "pnp_approval_status": "approved", "fallback_enabled": True, "sms_text": SMS_TEXT,
            "fallback_period": 1, **fields}
    response = tenant.client.post(tenant.api("pnp/setting/"), json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def top_up(tenant: Any, amount: int) -> None:
    response = tenant.client.post(tenant.api("pnp/points/"), json={"amount": amount})
    assert response.status_code == 200, response.text


def line_user(base_url: str, phone: str) -> str:
    """A simulated LINE user whose phone number LINE knows (reachable by a notification message)."""
    created = httpx.post(f"{base_url}/_simulators/line/_admin/users", json={"phone": phone}, timeout=10)
    created.raise_for_status()
    return str(created.json()["user_id"])


def texts_to(base_url: str, phone: str) -> list[str]:
    response = httpx.get(f"{base_url}/_simulators/twilio/_admin/messages", params={"to": phone}, timeout=10)
    response.raise_for_status()
    return [item["text"] for item in response.json()["results"]]


def api_upload(tenant: Any, setting_id: int, content: bytes, filename: str = "list.csv") -> dict[str, Any]:
    response = tenant.client.post(tenant.api(f"pnp/setting/{setting_id}/upload/"),
                                  files={"file": (filename, content, "application/octet-stream")})
    assert response.status_code == 201, response.text
    return dict(response.json())


def messages_of(tenant: Any, setting_id: int) -> list[dict[str, Any]]:
    response = tenant.client.get(tenant.api("pnp/message/"), params={
        "pnp_setting_id": setting_id, "updated_at_min": "2000-01-01T00:00:00+08:00",
        "updated_at_max": "2999-01-01T00:00:00+08:00"})
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def csrf_token_of(page: Any) -> str:
    return str(page.evaluate("() => JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']"))


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def upload_in_page(page: Any, name: str, content: bytes, mime: str = "text/csv") -> None:
    page.set_input_files("#upload-file", files=[{"name": name, "mimeType": mime, "buffer": content}])
    page.get_by_role("button", name="Import list").click()
    page.wait_for_url(re.compile(r"/console/sms-plus/\d+/uploads/\d+/$"))


# --- the formal-sending flow ------------------------------------------------------------------------

def test_formal_sending_with_a_csv_reaches_line_and_sms(tenant: Any, base_url: str, signed_in: Any,
                                                         screenshot: Any, assert_accessible: Any) -> None:
    # 100 "minutes" = 5 s: LINE's delivery report comes well before the SMS fallback
    setting = create_setting(tenant, fallback_period=100)
    top_up(tenant, 20)
    on_line = "+886912000101"
    uid = line_user(base_url, on_line)  # LINE knows this number: the notification message arrives
    sms_only = "+886912000102"  # LINE does not: after the fallback period, an SMS
    csv_text = ("mobile,customer_name,order_number,registration_date\r\n"
                "0912000101,王小明,A1,2024-01-05\r\n"
                "not-a-phone,nobody,A0,2024-01-06\r\n"
                f"{sms_only},陳大文,A2,2024-02-01\r\n"
                "12345,short,A9,2024-03-01\r\n")
    page = signed_in("marketer")

    page.goto("/console/sms-plus/")
    row = page.locator(f"tr[data-scenario='{setting['id']}']")
    row.get_by_role("link", name=re.compile("Formal sending")).click()
    page.wait_for_url(f"**/console/sms-plus/{setting['id']}/")
    upload_in_page(page, "customers.csv", csv_text.encode())

    # the preview: the first two rows, the "Imported Rows" count, the invalid numbers listed
    expect(page.locator("#imported-rows")).to_have_text("2")
    expect(page.locator("#invalid-count")).to_have_text("2")
    expect(page.locator("#invalid-numbers")).to_contain_text("not-a-phone")
    expect(page.locator("#invalid-numbers")).to_contain_text("12345")
    preview = page.locator("#preview-rows tbody tr")
    expect(preview).to_have_count(2)
    expect(preview.nth(0)).to_contain_text("王小明")
    expect(preview.nth(1)).to_contain_text("陳大文")

    # order_number found its column by name; customer_name is chosen for {{name}}
    expect(page.locator("select[name='pnp.order_number']")).to_have_value("order_number")
    page.select_option("select[name='pnp.name']", "customer_name")
    page.select_option("select[name='sms.name']", "customer_name")
    expect(page.locator("#template-preview")).to_contain_text("Hi 王小明, order A1 has shipped.")
    expect(page.locator("#sms-preview")).to_have_text("Order A1 for 王小明 has shipped.")
    assert_accessible(page)

    page.get_by_role("button", name="Send", exact=True).click()
    dialog = page.locator("#send-confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("2 recipients")
    expect(dialog).to_contain_text("Up to 2 points")
    screenshot(page, "sms_plus_csv_confirm")
    page.locator("#confirm-send").click()

    page.wait_for_url(re.compile(r"/uploads/\d+/$"))
    expect(page.locator("#delivery-progress.final")).to_be_visible(timeout=SLOW)
    expect(page.locator("#delivery-progress [data-count='line']")).to_have_text("1")
    expect(page.locator("#delivery-progress [data-count='sms']")).to_have_text("1")
    assert page.locator("#delivery-progress").get_attribute("hx-trigger") is None  # polling stopped
    screenshot(page, "sms_plus_csv_delivered")

    received = json.dumps(inbox(uid), ensure_ascii=False)
    assert "Hi 王小明, order A1 has shipped." in received, received
    assert texts_to(base_url, sms_only) == ["Order A2 for 陳大文 has shipped."]
    assert texts_to(base_url, "+886912000101") == []


def test_formal_sending_with_an_xlsx_reaches_the_phones_by_sms(tenant: Any, base_url: str, signed_in: Any,
                                                               screenshot: Any, assert_accessible: Any) -> None:
    # LINE knows none of these numbers: each LINE notification fails, the SMS follows
    setting = create_setting(tenant, name="Appointment reminder", sms_text="Dear {{name}}, see you on {{appointment_date}}.",
                             pnp_messages=[{"type": "text", "text": "Hi {{name}}! Your appointment is on "
                                                                    "{{appointment_date}}. Reply to change it."}])
    top_up(tenant, 20)
    workbook = xlsx_bytes([["customer", "mobile_no", "appointment_date"],
                           ["Mei-Li Lin", "0912000201", "2024-08-03"],
                           ["Ta-Tung Wang", "+886912000202", "2024-08-04"],
                           ["Bad number", "999", "2024-08-05"],
                           ["San Chang", "0912000203", "2024-08-06"]])
    page = signed_in("admin")
    page.goto(f"/console/sms-plus/{setting['id']}/")
    page.get_by_label("Phone number column").fill("mobile_no")
    upload_in_page(page, "appointments.xlsx", workbook,
                   "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    expect(page.locator("#imported-rows")).to_have_text("3")
    expect(page.locator("#invalid-count")).to_have_text("1")
    expect(page.locator("#invalid-numbers")).to_contain_text("999")
    page.select_option("select[name='pnp.name']", "customer")
    page.select_option("select[name='sms.name']", "customer")
    expect(page.locator("select[name='sms.appointment_date']")).to_have_value("appointment_date")
    expect(page.locator("#sms-preview")).to_have_text("Dear Mei-Li Lin, see you on 2024-08-03.")
    expect(page.locator("#template-preview")).to_contain_text("Hi Mei-Li Lin! Your appointment is on 2024-08-03.")
    screenshot(page, "sms_plus_flow", full_page=False)

    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#send-confirm")).to_contain_text("3 recipients")
    page.locator("#confirm-send").click()
    expect(page.locator("#delivery-progress.final")).to_be_visible(timeout=SLOW)
    expect(page.locator("#delivery-progress [data-count='sms']")).to_have_text("3")
    screenshot(page, "sms_plus_xlsx_delivered")
    assert_accessible(page)
    assert texts_to(base_url, "+886912000201") == ["Dear Mei-Li Lin, see you on 2024-08-03."]
    assert texts_to(base_url, "+886912000202") == ["Dear Ta-Tung Wang, see you on 2024-08-04."]
    assert texts_to(base_url, "+886912000203") == ["Dear San Chang, see you on 2024-08-06."]


def test_a_mapping_left_empty_is_named_and_nothing_is_sent(tenant: Any, signed_in: Any, screenshot: Any) -> None:
    setting = create_setting(tenant, pnp_enabled=False, pnp_messages=[])
    upload = api_upload(tenant, setting["id"], b"phone,who,order_number\n0912000301,a,B1\n")
    page = signed_in("marketer")
    page.goto(f"/console/sms-plus/{setting['id']}/uploads/{upload['id']}/")
    expect(page.locator("#sms-preview")).to_have_text("Order B1 for {{name}} has shipped.")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#send-errors")).to_contain_text("name")
    expect(page.locator("#send-confirm")).to_have_count(0)
    screenshot(page, "sms_plus_mapping_missing")
    assert messages_of(tenant, setting["id"]) == []


def test_an_upload_error_is_shown_on_the_form(tenant: Any, signed_in: Any, screenshot: Any) -> None:
    setting = create_setting(tenant)
    page = signed_in("marketer")
    page.goto(f"/console/sms-plus/{setting['id']}/")
    page.set_input_files("#upload-file", files=[{"name": "list.csv", "mimeType": "text/csv",
                                                 "buffer": b"name,order\nx,1\n"}])
    page.get_by_role("button", name="Import list").click()
    expect(page.locator("#upload-file-errors")).to_contain_text("The file has no phone column")
    assert page.url.endswith(f"/console/sms-plus/{setting['id']}/")
    screenshot(page, "sms_plus_upload_error")


def test_delete_a_list_from_its_trash_icon(tenant: Any, signed_in: Any, screenshot: Any,
                                           assert_accessible: Any) -> None:
    setting = create_setting(tenant)
    kept = api_upload(tenant, setting["id"], b"phone,name\n0912000401,a\n", "kept.csv")
    doomed = api_upload(tenant, setting["id"], b"phone,name\n0912000402,b\n", "doomed.csv")
    page = signed_in("marketer")
    page.goto(f"/console/sms-plus/{setting['id']}/")
    assert_accessible(page)
    row = page.locator(f"tr[data-upload='{doomed['id']}']")
    trash = row.get_by_role("button", name="Delete the list doomed.csv")
    expect(trash).to_have_css("opacity", "0")
    row.hover()
    expect(trash).to_have_css("opacity", "1")
    trash.click()
    dialog = page.locator(f"#delete-upload-{doomed['id']}")
    expect(dialog).to_contain_text("doomed.csv")
    screenshot(page, "sms_plus_delete_confirm")
    dialog.get_by_role("button", name="Delete", exact=True).click()
    page.wait_for_url(f"**/console/sms-plus/{setting['id']}/")
    expect(page.locator(f"tr[data-upload='{doomed['id']}']")).to_have_count(0)
    expect(page.locator(f"tr[data-upload='{kept['id']}']")).to_have_count(1)
    assert tenant.client.get(tenant.api(f"pnp/upload/{doomed['id']}/")).status_code == 404
    assert tenant.client.get(tenant.api(f"pnp/upload/{kept['id']}/")).status_code == 200


# --- list performance and balance ---------------------------------------------------------------------

def _message(tenant: Any, setting_id: int, created: datetime, **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"organization_id": tenant.id, "pnp_setting_id": setting_id, "phone_number": "+886912000000",
            "phone_hash": "0" * 64, "hashed_input": False, "params": {}, "sms_segments": 0, "points_held": 0,
            "sms_attempts": 0, "finished": True, "created_at": created, "updated_at": now, **fields}


def test_list_performance_counts_a_campaign_on_its_trigger_date(tenant: Any, database: Any, signed_in: Any,
                                                                screenshot: Any, assert_accessible: Any) -> None:
    """Triggered on 8/3 (Taipei): the notification delivered on 8/3 and the SMS sent on 8/4 both
    count on 8/3, as does a message triggered at 00:30 on 8/3 Taipei time (still 8/2 in UTC)."""
    from openmaac.sms_plus.models import PnpMessage

    setting = create_setting(tenant, name="Campaign 8/3")
    other = create_setting(tenant, name="Other scenario")
    rows = [
        # 8/3 20:00 Taipei; PNP delivered the same evening
        _message(tenant, setting["id"], datetime(2026, 8, 3, 12, 0, tzinfo=UTC), status="pnp_delivered",
                 pnp_status="pnp_delivered", pnp_delivered_at=datetime(2026, 8, 3, 12, 1, tzinfo=UTC)),
        # 8/3 23:30 Taipei; PNP failed, SMS delivered on 8/4
        _message(tenant, setting["id"], datetime(2026, 8, 3, 15, 30, tzinfo=UTC), status="sms_delivered",
                 pnp_status="pnp_failed", sms_status="sms_delivered",
                 sms_delivered_at=datetime(2026, 8, 4, 1, 0, tzinfo=UTC)),
        # 8/3 00:30 Taipei = 8/2 16:30 UTC; still waiting
        _message(tenant, setting["id"], datetime(2026, 8, 2, 16, 30, tzinfo=UTC), status="pnp_accepted",
                 pnp_status="pnp_accepted", finished=False),
        # the other scenario, 8/4 10:00 Taipei
        _message(tenant, other["id"], datetime(2026, 8, 4, 2, 0, tzinfo=UTC), status="sms_delivered",
                 sms_status="sms_delivered"),
    ]
    with database.write() as session:
        session.add_all([PnpMessage(**row) for row in rows])

    page = signed_in("viewer")
    page.goto("/console/sms-plus/?start=2026-08-01&end=2026-08-05")
    day = page.locator("#performance-days tr[data-day='2026-08-03']")
    expect(day.locator("td")).to_have_text(["3", "1", "1"])
    expect(page.locator("#performance-days tr[data-day='2026-08-04'] td")).to_have_text(["1", "0", "1"])
    expect(page.locator("#performance-days tr[data-day='2026-08-02'] td")).to_have_text(["0", "0", "0"])
    expect(page.locator(f"tr[data-scenario='{setting['id']}'] td.num")).to_have_text(["3", "1", "1"])
    expect(page.locator(f"tr[data-scenario='{other['id']}'] td.num")).to_have_text(["1", "0", "1"])

    chart = "() => { const c = Chart.getChart(document.querySelector('canvas.sms-plus-chart'));" \
            " return c ? {labels: c.data.labels, sets: c.data.datasets.map(d => d.data)} : null; }"
    page.wait_for_function("() => window.Chart && Chart.getChart(document.querySelector('canvas.sms-plus-chart'))")
    drawn = page.evaluate(chart)
    assert drawn["labels"] == ["2026-08-01", "2026-08-02", "2026-08-03", "2026-08-04", "2026-08-05"]
    assert drawn["sets"] == [[0, 0, 3, 1, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0]]
    page.locator("details.day-table summary").click()
    screenshot(page, "sms_plus_performance")
    assert_accessible(page)

    # one scenario's chart, swapped in by htmx: the old chart is replaced, not stacked
    page.select_option("#range-scenario", str(other["id"]))
    page.wait_for_function("() => { const c = Chart.getChart(document.querySelector('canvas.sms-plus-chart'));"
                           " return c && c.data.datasets[0].data[3] === 1 && c.data.datasets[0].data[2] === 0; }")
    assert page.evaluate("() => document.querySelectorAll('canvas.sms-plus-chart').length") == 1
    assert "scenario=" in page.url


def test_the_balance_and_its_recharge_reminder(tenant: Any, signed_in: Any) -> None:
    create_setting(tenant)
    page = signed_in("viewer")
    top_up(tenant, 999)
    page.goto("/console/sms-plus/")
    expect(page.locator("#points-balance")).to_have_text("999")
    expect(page.locator("#recharge-reminder")).to_contain_text("below 1,000 points")
    top_up(tenant, 5000)
    page.reload()
    expect(page.locator("#points-balance")).to_have_text("5,999")
    expect(page.locator("#recharge-reminder")).to_have_count(0)


def test_a_bad_range_is_named_and_the_default_shown(tenant: Any, signed_in: Any) -> None:
    page = signed_in("viewer")
    page.goto("/console/sms-plus/?start=2026-08-05&end=2026-08-01")
    expect(page.locator("#performance .form-error")).to_have_text("The start date must not be after the end date.")
    expect(page.locator("#performance-days tbody tr")).to_have_count(7)


# --- roles ----------------------------------------------------------------------------------------------

def test_a_viewer_sees_no_send_and_a_hand_made_post_is_refused(tenant: Any, signed_in: Any,
                                                                screenshot: Any) -> None:
    setting = create_setting(tenant, pnp_enabled=False, pnp_messages=[])
    top_up(tenant, 10)
    upload = api_upload(tenant, setting["id"], b"phone,name,order_number\n0912000501,a,C1\n")
    page = signed_in("viewer")
    page.goto(f"/console/sms-plus/{setting['id']}/")
    expect(page.locator("#upload-form")).to_have_count(0)
    expect(page.locator("button.trash")).to_have_count(0)
    page.goto(f"/console/sms-plus/{setting['id']}/uploads/{upload['id']}/")
    expect(page.locator("#preview-rows")).to_be_visible()
    expect(page.get_by_role("button", name="Send", exact=True)).to_have_count(0)
    screenshot(page, "sms_plus_viewer")

    token = csrf_token_of(page)
    base = f"/console/sms-plus/{setting['id']}/uploads/{upload['id']}/"
    sent = page.request.post(base + "send", form={"csrf_token": token, "sms.name": "name",
                                                  "sms.order_number": "order_number"})
    assert sent.status == 403, sent.text()
    deleted = page.request.post(base + "delete", form={"csrf_token": token})
    assert deleted.status == 403
    uploaded = page.request.post(f"/console/sms-plus/{setting['id']}/uploads", headers={"X-CSRF-Token": token},
                                 multipart={"file": {"name": "x.csv", "mimeType": "text/csv",
                                                     "buffer": b"phone\n0912000502\n"}})
    assert uploaded.status == 403
    confirm = page.request.get(base + "confirm?sms.name=name&sms.order_number=order_number")
    assert confirm.status == 403
    assert messages_of(tenant, setting["id"]) == []
    assert tenant.client.get(tenant.api(f"pnp/upload/{upload['id']}/")).json()["status"] == "uploaded"
    listed = tenant.client.get(tenant.api(f"pnp/setting/{setting['id']}/")).json()
    assert listed["metric"]["all"] == 0


def test_scenario_settings_are_for_admins(tenant: Any, signed_in: Any) -> None:
    setting = create_setting(tenant)
    page = signed_in("marketer")
    page.goto(f"/console/sms-plus/{setting['id']}/")
    expect(page.get_by_role("link", name="Scenario settings")).to_have_count(0)
    assert page.goto(f"/console/sms-plus/settings/{setting['id']}/").status == 403
    assert page.goto("/console/sms-plus/settings/new").status == 403
    page.goto(f"/console/sms-plus/{setting['id']}/")
    refused = page.request.post(f"/console/sms-plus/settings/{setting['id']}/",
                                form={"csrf_token": csrf_token_of(page), "name": "renamed", "status": "enable",
                                      "fallback_enabled": "1", "sms_text": "x", "fallback_period": "5"})
    assert refused.status == 403
    assert tenant.client.get(tenant.api(f"pnp/setting/{setting['id']}/")).json()["name"] == "Shipping notice"


def test_an_admin_creates_and_edits_a_scenario_with_errors_shown_on_the_form(tenant: Any, signed_in: Any,
                                                                              screenshot: Any,
                                                                              assert_accessible: Any) -> None:
    page = signed_in("admin")
    page.goto("/console/sms-plus/")
    page.get_by_role("link", name="New scenario").click()
    page.locator("#field-name").fill("Order shipped")
    page.get_by_label("Content (LINE message objects, JSON)").fill('[{"type": "text", "text": "Hi {{name}"')
    page.get_by_label("SMS text").fill("")
    page.get_by_role("button", name="Create scenario").click()
    # the form comes back with what was typed and each field's error
    expect(page.locator("#field-name")).to_have_value("Order shipped")
    expect(page.locator("#field-pnp_messages-errors")).to_contain_text("Enter valid JSON")
    expect(page.get_by_label("Content (LINE message objects, JSON)")).to_have_value('[{"type": "text", "text": "Hi {{name}"')
    screenshot(page, "sms_plus_setting_errors")
    assert_accessible(page)
    page.get_by_label("Content (LINE message objects, JSON)").fill('[{"type": "text", "text": "Hi {{name}}"}]')
    page.get_by_role("button", name="Create scenario").click()
    expect(page.locator("#field-sms_text-errors")).to_contain_text("required when fallback_enabled")
    page.get_by_label("SMS text").fill("Hi {{name}}, your order shipped.")
    page.get_by_label("Fallback period (minutes)").fill("30")
    page.get_by_label("LINE approval").select_option("approved")
    page.get_by_role("button", name="Create scenario").click()
    page.wait_for_url(re.compile(r"/console/sms-plus/\d+/$"))
    setting_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    saved = tenant.client.get(tenant.api(f"pnp/setting/{setting_id}/content/")).json()
    assert saved["name"] == "Order shipped" and saved["parameters"] == ["name"]
    assert saved["sms_text"] == "Hi {{name}}, your order shipped." and saved["fallback_period"] == 30
    assert saved["pnp_approval_status"] == "approved" and saved["line_push_enabled"] is False

    page.get_by_role("link", name="Scenario settings").click()
    expect(page.locator("#field-name")).to_have_value("Order shipped")
    page.locator("#field-name").fill("Order shipped (v2)")
    page.get_by_label("Send an SMS when no LINE message was delivered").uncheck()
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(f"**/console/sms-plus/{setting_id}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Order shipped (v2)")
    saved = tenant.client.get(tenant.api(f"pnp/setting/{setting_id}/content/")).json()
    assert saved["fallback_enabled"] is False and saved["name"] == "Order shipped (v2)"


# --- tenant walls and escaping ------------------------------------------------------------------------

def test_another_organisations_scenario_and_list_are_not_found(tenant: Any, other_tenant: Any,
                                                               signed_in: Any) -> None:
    setting = create_setting(tenant)
    upload = api_upload(tenant, setting["id"], b"phone,name\n0912000601,a\n")
    page = signed_in("admin", tenant=other_tenant)  # an admin, of another organisation
    base = f"/console/sms-plus/{setting['id']}/"
    for path in (base, base + f"uploads/{upload['id']}/", base + f"uploads/{upload['id']}/preview",
                 base + f"uploads/{upload['id']}/confirm", base + f"uploads/{upload['id']}/progress",
                 f"/console/sms-plus/settings/{setting['id']}/"):
        assert page.goto(path).status == 404, path
    token = csrf_token_of(page)
    assert page.request.post(base + f"uploads/{upload['id']}/delete", form={"csrf_token": token}).status == 404
    assert page.request.post(base + f"uploads/{upload['id']}/send", form={"csrf_token": token}).status == 404
    # their own scenario with the same ids' neighbours does not leak either
    page.goto("/console/sms-plus/")
    expect(page.locator(f"tr[data-scenario='{setting['id']}']")).to_have_count(0)
    assert tenant.client.get(tenant.api(f"pnp/upload/{upload['id']}/")).status_code == 200


def test_a_script_in_a_scenario_name_and_a_cell_renders_inert(tenant: Any, signed_in: Any, screenshot: Any) -> None:
    evil = "<script>alert(1)</script>"
    setting = create_setting(tenant, name=evil, pnp_enabled=False, pnp_messages=[])
    content = f'phone,name,order_number\n0912000701,"{evil}",<img src=x onerror=alert(2)>\n'.encode()
    upload = api_upload(tenant, setting["id"], content, f"{evil}.csv")
    page = signed_in("admin")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto("/console/sms-plus/")
    expect(page.locator(f"tr[data-scenario='{setting['id']}'] a").first).to_have_text(evil)
    page.goto(f"/console/sms-plus/{setting['id']}/")
    expect(page.get_by_role("heading", level=1)).to_have_text(evil)
    page.goto(f"/console/sms-plus/{setting['id']}/uploads/{upload['id']}/")
    expect(page.locator("#preview-rows tbody tr").first).to_contain_text(evil)
    page.select_option("select[name='sms.name']", "name")
    expect(page.locator("#sms-preview")).to_have_text(f"Order <img src=x onerror=alert(2)> for {evil} has shipped.")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#send-confirm")).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    page.goto(f"/console/sms-plus/settings/{setting['id']}/")
    expect(page.locator("#field-name")).to_have_value(evil)
    screenshot(page, "sms_plus_xss")
    assert dialogs == []
    assert page.evaluate("() => document.querySelectorAll('img[src=x]').length") == 0


def test_the_sms_plus_pages_in_traditional_chinese(tenant: Any, signed_in: Any) -> None:
    setting = create_setting(tenant, pnp_enabled=False, pnp_messages=[])
    upload = api_upload(tenant, setting["id"], b"phone,who,order_number\n0912000801,a,D1\nbad,b,D2\n")
    page = signed_in("marketer", locale="zh_TW")
    page.goto("/console/sms-plus/?start=2026-08-05&end=2026-08-01")
    expect(page.locator("#balance-title")).to_have_text("點數餘額")
    expect(page.locator("#performance .form-error")).to_have_text("開始日期不可晚於結束日期。")
    expect(page.locator(f"tr[data-scenario='{setting['id']}'] .chip")).to_have_text(["簡訊"])
    page.goto(f"/console/sms-plus/{setting['id']}/uploads/{upload['id']}/")
    expect(page.locator("#mapping-title")).to_have_text("選擇匯入名單中對應參數的欄位")
    expect(page.locator("#invalid-numbers summary")).to_have_text("1 列的手機號碼無效，不會發送")
    page.get_by_role("button", name="發送", exact=True).click()
    expect(page.locator("#send-errors")).to_contain_text("此欄位為必填。")


def test_a_file_over_25_mb_is_refused(tenant: Any, signed_in: Any) -> None:
    setting = create_setting(tenant)
    page = signed_in("marketer")
    page.goto(f"/console/sms-plus/{setting['id']}/")
    too_big = b"phone\n" + b"0" * (25 * 1024 * 1024)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.method))
    page.set_input_files("#upload-file", files=[{"name": "big.csv", "mimeType": "text/csv", "buffer": too_big}],
                         timeout=SLOW)
    page.get_by_role("button", name="Import list").click()
    # refused in the page, before sending 25 MB
    expect(page.locator(".upload-progress-text")).to_have_text("The file is larger than 25 MB.", timeout=SLOW)
    assert "POST" not in requests
    # sent anyway (no script): the server refuses it with the same words, on the form
    answer = page.request.post(f"/console/sms-plus/{setting['id']}/uploads", headers={"X-CSRF-Token": csrf_token_of(page)},
                               multipart={"file": {"name": "big.csv", "mimeType": "text/csv", "buffer": too_big}},
                               timeout=SLOW * 2)
    assert answer.status == 400
    assert "The file is larger than 25 MB." in answer.text()
    assert tenant.client.get(tenant.api(f"pnp/setting/{setting['id']}/")).status_code == 200

"""A scenario read by a hot path is a plain ``PnpSetting`` built from the row's values, as the
ORM's loader builds one: every column readable, nothing pending for a session, and usable in a
fresh process whose first use of the ORM it is."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from sqlalchemy import inspect

from openmaac.sms_plus import engine
from openmaac.sms_plus.models import PnpSetting


def _values() -> list[object]:
    now = datetime(2026, 12, 6, 1, 2, 3, tzinfo=UTC)
    by_name = {"id": 7, "organization_id": 3, "name": "出貨通知", "status": "enable", "line_push_enabled": False,
               "line_push_template_id": None, "pnp_enabled": True,
               "pnp_messages": [{"type": "text", "text": "Order {{order}}"}], "pnp_approval_status": "approved",
               "fallback_enabled": True, "sms_text": "Order {{order}}", "fallback_period": 30,
               "whatsapp_enabled": False, "whatsapp_template_name": None, "whatsapp_language": None,
               "parameters": ["order"], "sms_parameters": ["order"], "metric_all": 1, "metric_fail": 2,
               "metric_pnp": 3, "metric_sms": 4, "created_at": now, "updated_at": now}
    assert list(by_name) == engine._SETTING_NAMES  # the table's column order, as the hot paths read it
    return list(by_name.values())


def test_a_plain_setting_reads_every_column_and_is_never_pending_in_a_session() -> None:
    values = _values()
    setting = engine.plain_setting(values)
    assert isinstance(setting, PnpSetting)
    assert [getattr(setting, name) for name in engine._SETTING_NAMES] == values
    state = inspect(setting)
    assert state.transient and not state.modified  # nothing for a flush to write
    built = PnpSetting(**dict(zip(engine._SETTING_NAMES, values, strict=True)))  # the constructor's object
    assert {name: getattr(built, name) for name in engine._SETTING_NAMES} == \
        {name: getattr(setting, name) for name in engine._SETTING_NAMES}


def test_a_plain_setting_is_readable_in_a_process_that_used_no_orm_before() -> None:
    code = ("from openmaac.sms_plus import engine\n"
            "values = [None] * len(engine._SETTING_NAMES)\n"
            "values[engine._SETTING_NAMES.index('status')] = 'enable'\n"
            "print(engine.plain_setting(values).status)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "enable"

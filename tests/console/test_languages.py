"""English and Traditional Chinese: chosen per user, defaulting from the browser."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from console_helpers import assert_accessible, screenshot

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "src" / "openmaac" / "console" / "locale" / "zh_TW" / "LC_MESSAGES" / "messages.po"


def test_a_zh_tw_user_sees_chinese_in_the_sidebar(signed_in):
    page = signed_in("marketer", locale="zh_TW")
    nav = page.get_by_role("navigation", name="主選單").inner_text()
    for label in ("聯絡人", "標籤", "分眾", "模板", "訊息活動", "SMS+", "Webhook", "API 權杖", "設定"):
        assert label in nav
    assert page.get_by_role("button", name="登出").is_visible()
    assert page.locator("html").get_attribute("lang") == "zh-TW"
    assert_accessible(page)
    screenshot(page, "dashboard_zh_tw")


def test_the_browser_language_is_the_default(new_page, console_user):
    user = console_user("viewer")
    page = new_page(locale="zh-TW")
    page.goto("/console/sign-in")
    assert page.get_by_role("heading", level=1).inner_text() == "登入主控台"
    page.get_by_label("電子郵件地址").fill(user.email)
    page.get_by_label("密碼").fill("wrong password")
    page.get_by_role("button", name="登入").click()
    assert page.get_by_role("alert").inner_text() == "電子郵件地址或密碼不正確。"
    screenshot(page, "sign_in_zh_tw")
    english = new_page(locale="en-US")
    english.goto("/console/sign-in")
    assert english.get_by_role("heading", level=1).inner_text() == "Sign in to the console"


def test_choosing_a_language_on_the_account_page(signed_in):
    page = signed_in("viewer")
    page.goto("/console/account")
    assert_accessible(page)
    page.get_by_label("Language of the console").select_option("zh_TW")
    page.get_by_role("button", name="Save language").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "您的帳號"
    screenshot(page, "account_zh_tw")
    page.get_by_label("主控台語言").select_option("")
    page.get_by_role("button", name="儲存語言").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", level=1).inner_text() == "Your account"  # the browser's en-US


@pytest.mark.parametrize(("header", "expected"), [
    (None, "en"), ("", "en"), ("zh-TW,zh;q=0.9,en;q=0.8", "zh_TW"), ("zh-Hant", "zh_TW"), ("zh-HK", "zh_TW"),
    ("zh-CN,zh;q=0.9", "en"), ("ja,en-GB;q=0.5", "en"), ("fr;q=0.9,zh-TW;q=0.8", "zh_TW"),
    ("en;q=0.5,zh-TW;q=0.9", "zh_TW"), ("*", "en"), ("garbage;;q=x", "en"),
])
def test_negotiation(header, expected):
    from openmaac.console.i18n import negotiate

    assert negotiate(header) == expected


def test_the_catalog_covers_every_string_and_keeps_placeholders():
    """Every string marked in the console has a Traditional Chinese translation with the same
    %(name)s placeholders (scripts/console_i18n.py lists the missing ones)."""
    from babel.messages.pofile import read_po

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "console_i18n.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(PO, "rb") as handle:
        catalog = read_po(handle)
    for message in catalog:
        if message.id and message.string:
            # a plural entry has a tuple of forms on each side: each translation keeps the placeholders
            # of the English plural
            source = message.id[-1] if isinstance(message.id, tuple) else message.id
            forms = message.string if isinstance(message.string, tuple) else (message.string,)
            for form in forms:
                assert sorted(re.findall(r"%\(\w+\)s", source)) == sorted(re.findall(r"%\(\w+\)s", form)), \
                    message.id

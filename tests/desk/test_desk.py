"""The collectors' desk in a real browser (Debian's Chromium through Playwright) against the app
served on a real port with a worker behind it: sign-in and lock-out; a collector takes the next
task, sees the guard's answer, starts the call, records an outcome with a promise and the loan
shows the promise under their name; a refused plan shows its reason and changes nothing; two
collectors taking next at once get different tasks; a collector cannot open another queue's
task or a loan they hold no task for; a POST without the CSRF token and an idle session are
refused; the supervisor's page. The README's screenshots are taken here (docs/screenshots/)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from playwright.async_api import expect
from sqlmodel import Session, select

from client import get_status
from db.tables import TaskRow
from desk.sessions import SESSION_COOKIE, CookieCodec, DeskSession
from desk.users import create_user
from ops import experiments
from tests.helpers import DESK_PASSWORD, DESK_PEOPLE, ROOT, SCREENSHOTS, DeskSite, daytime_zone, desk_sign_in

DESK_SECRET = "desk-tests-secret-key-0123456789abcdef"  # tests/desk/conftest.py signs with it


def task_row(site: DeskSite, task_id: str) -> TaskRow:
    with Session(site.engine) as session:
        return session.exec(select(TaskRow).where(TaskRow.task_id == task_id)).one()


SAMPLE_EXPERIMENT = ROOT / "strategies" / "experiments" / "sample.toml"


async def test_sign_in_wrong_password_and_lock_out(site: DeskSite, new_page: Any) -> None:
    create_user(site.database_url, "lock.test", "collector", DESK_PASSWORD, queues=["collectors"], language="en")
    page = await new_page()
    await page.goto(site.url("/desk/"))
    await expect(page).to_have_url(re.compile(r"/desk/login$"))  # not signed in: the sign-in page
    await page.goto(site.url("/desk/login?lang=en"))
    for attempt in range(5):
        await page.get_by_label("User name").fill("lock.test")
        await page.get_by_label("Password", exact=True).fill(f"wrong guess {attempt}")
        await page.get_by_role("button", name="Sign in").click()
        message = page.locator("#message")
        if attempt < 4:
            await expect(message).to_have_text("Wrong user name or password.")
    await expect(page.locator("#message")).to_contain_text("this account is locked until")
    # locked: even the right password is refused, and no session cookie is given
    await page.get_by_label("User name").fill("lock.test")
    await page.get_by_label("Password", exact=True).fill(DESK_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#message")).to_contain_text("locked until")
    assert SESSION_COOKIE not in {c["name"] for c in await page.context.cookies()}
    # an unknown name reads like a wrong password
    await page.get_by_label("User name").fill("nobody.here")
    await page.get_by_label("Password", exact=True).fill(DESK_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#message")).to_have_text("Wrong user name or password.")

    # from the keyboard alone: the name field has the focus, Tab to the password, Enter sends
    await page.goto(site.url("/desk/login?lang=en"))
    await page.keyboard.type(DESK_PEOPLE["collector"][0])
    await page.keyboard.press("Tab")
    await page.keyboard.type(DESK_PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.locator("#me")).to_have_text("li.wei")
    cookie = next(c for c in await page.context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#message")).to_have_text("You are signed out.")
    await page.goto(site.url("/desk/"))
    await expect(page).to_have_url(re.compile(r"/desk/login$"))


async def test_a_collector_takes_the_next_task_and_records_a_promise(site: DeskSite, new_page: Any) -> None:
    zone = daytime_zone()
    await site.hand_over("DESK-1", dpd=12, tz=zone)
    task_id = await site.open_task("DESK-1")
    page = await new_page()
    await desk_sign_in(page, site, "collector")
    row = page.locator(f'tr[data-task="{task_id}"]')
    await expect(row.locator("td.contact")).to_have_text("yes")  # the guard's answer for a call now
    await expect(page.locator("#order")).to_contain_text("outcome deadline has passed come first")
    await page.screenshot(path=str(SCREENSHOTS / "queue.png"))

    await page.get_by_role("button", name="Take next task").click()
    await expect(page).to_have_url(re.compile(r"/desk/loans/"))
    taken = re.search(r"task=([^&]+)", page.url)
    assert taken is not None
    loan_id = page.url.split("/desk/loans/")[1].split("?")[0]
    assert task_row(site, taken.group(1).replace("%2F", "/").replace("%40", "@")).assignee == "li.wei"
    if loan_id != "DESK-1":  # another test's loan was on top: work ours (claim it from the queue)
        await page.goto(site.url("/desk/"))
        await page.locator(f'tr[data-task="{task_id}"]').get_by_role("button", name="Claim").click()
        await expect(page).to_have_url(re.compile(r"/desk/loans/DESK-1"))
    assert task_row(site, task_id).assignee == "li.wei"

    phone = page.locator('#contact tr[data-channel="phone"]')
    await expect(phone).to_contain_text("allowed now")
    await page.get_by_role("button", name="Start call").click()
    await expect(page.locator("#notice")).to_contain_text("Call started")
    await expect(page.locator("#dial")).to_have_text("+8613800000000")

    promise_day = datetime.now(UTC).astimezone(ZoneInfo(zone)).date() + timedelta(days=3)
    await expect(page.locator("#promise-limits")).to_contain_text("Latest promise date")
    form = page.locator("#outcome-form")
    await form.get_by_label("Outcome").select_option("promised")
    await form.get_by_label("Note").fill("will pay on Friday")
    await form.get_by_label("Recording reference").fill("REC-0001")
    await form.get_by_label("Amount").fill("500.00")
    await form.get_by_label("Date").fill(promise_day.isoformat())
    await form.get_by_role("button", name="Save").click()
    await expect(page.locator("#notice")).to_contain_text(f"{task_id}: promised")
    await expect(page.locator("#arrangement")).to_contain_text("promise")
    await expect(page.locator("#arrangement")).to_contain_text(promise_day.isoformat())
    outcome_row = page.locator("#timeline tr", has_text="call_outcome")
    await expect(outcome_row).to_contain_text("collector:li.wei")  # the outcome under the collector's name
    await expect(page.locator("#timeline tr", has_text="500.00 CNY by")).to_contain_text("collector:li.wei")
    await page.screenshot(path=str(SCREENSHOTS / "loan.png"), full_page=True)

    status = await get_status(site.client, "DESK-1")
    assert status.arrangement is not None and status.arrangement.kind == "promise"
    assert status.arrangement.next_due_date == promise_day
    assert task_id not in {t.task_id for t in status.open_tasks}
    closed = task_row(site, task_id)
    assert (closed.status, closed.outcome, closed.recording_ref) == ("closed", "promised", "REC-0001")


async def test_a_refused_plan_shows_its_reason_and_changes_nothing_on_a_tablet(site: DeskSite, new_page: Any) -> None:
    await site.hand_over("DESK-2", dpd=8)
    task_id = await site.open_task("DESK-2")
    page = await new_page(768, 1024)  # a tablet, upright
    await desk_sign_in(page, site, "collector")
    await page.locator(f'tr[data-task="{task_id}"]').get_by_role("button", name="Claim").click()
    await expect(page).to_have_url(re.compile(r"/desk/loans/DESK-2"))
    await page.get_by_text("Instalment plan").click()
    await expect(page.locator("#plan-limits")).to_contain_text("At most 12 instalments")
    plan = page.locator("#plan-form")
    await plan.get_by_label("Instalments").fill("24")
    first_due = (datetime.now(UTC) + timedelta(days=7)).date()
    await plan.get_by_label("First due date").fill(first_due.isoformat())
    await plan.get_by_role("button", name="Send").click()
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("Refused")
    await expect(notice).to_contain_text("24 instalments exceed the maximum of 12")
    status = await get_status(site.client, "DESK-2")
    assert status.arrangement is None and not any(e.action == "plan" for e in status.timeline)


async def test_two_collectors_taking_next_at_once_get_different_tasks(site: DeskSite, new_page: Any) -> None:
    for n in (3, 4, 5):
        await site.hand_over(f"DESK-{n}", dpd=5 + n)
    for n in (3, 4, 5):
        await site.open_task(f"DESK-{n}")
    first, second = await new_page(), await new_page()
    await desk_sign_in(first, site, "collector")
    await desk_sign_in(second, site, "other")  # a Chinese-speaking collector of the same queue
    await expect(second.get_by_role("button", name="领取下一个任务")).to_be_visible()
    await second.screenshot(path=str(SCREENSHOTS / "queue-zh.png"))
    await asyncio.gather(
        first.get_by_role("button", name="Take next task").click(),
        second.get_by_role("button", name="领取下一个任务").click(),
    )
    await expect(first).to_have_url(re.compile(r"task="))
    await expect(second).to_have_url(re.compile(r"task="))
    one = re.search(r"task=([^&]+)", first.url)
    two = re.search(r"task=([^&]+)", second.url)
    assert one is not None and two is not None and one.group(1) != two.group(1)
    with Session(site.engine) as session:
        held = {t.assignee for t in session.exec(select(TaskRow).where(TaskRow.status == "open")).all()}
    assert {"li.wei", "wang.fang"} <= held


async def test_a_collector_cannot_open_another_queues_task_or_a_loan_without_a_task(
    site: DeskSite, new_page: Any
) -> None:
    await site.hand_over("DESK-6", dpd=7)
    task_id = await site.open_task("DESK-6")  # a call: queue `collectors`
    page = await new_page()
    await desk_sign_in(page, site, "field")  # zhao.lei works `field-agents` only
    await expect(page.locator(f'tr[data-task="{task_id}"]')).to_have_count(0)
    response = await page.goto(site.url("/desk/loans/DESK-6"))
    assert response is not None and response.status == 403
    await expect(page.locator("#error-title")).to_have_text("Not allowed")
    csrf = await page.locator('input[name="csrf"]').first.get_attribute("value")
    claim = await page.request.post(site.url(f"/desk/tasks/{task_id}/claim"), form={"csrf": csrf or ""})
    assert claim.status == 403
    assert task_row(site, task_id).assignee == ""
    outcome = await page.request.post(
        site.url("/desk/loans/DESK-6/outcome"), form={"csrf": csrf or "", "task_id": task_id, "outcome": "answered"}
    )
    assert outcome.status == 403 and task_row(site, task_id).status == "open"


async def test_a_post_without_the_csrf_token_and_an_idle_session_are_refused(site: DeskSite, new_page: Any) -> None:
    await site.hand_over("DESK-7", dpd=9)
    task_id = await site.open_task("DESK-7")
    page = await new_page()
    await desk_sign_in(page, site, "collector")
    refused = await page.request.post(site.url(f"/desk/tasks/{task_id}/claim"), form={"csrf": "forged"})
    assert refused.status == 403 and "form has expired" in await refused.text()
    bare = await page.request.post(site.url("/desk/next"), form={})
    assert bare.status == 403
    assert task_row(site, task_id).assignee == ""

    # a session idle for longer than DESK_IDLE_MINUTES: the next page asks to sign in again
    user = DESK_PEOPLE["collector"][0]
    idle = DeskSession(user=user, epoch=0, csrf="x" * 43, seen=(datetime.now(UTC) - timedelta(hours=2)).timestamp())
    forged = CookieCodec(DESK_SECRET).session(idle)
    await page.context.add_cookies([{"name": SESSION_COOKIE, "value": forged, "domain": "127.0.0.1", "path": "/desk"}])
    await page.goto(site.url("/desk/"))
    await expect(page).to_have_url(re.compile(r"/desk/login\?expired=1$"))
    await expect(page.locator("#message")).to_contain_text("Please sign in again")
    # a tampered cookie is no session at all
    tampered = forged[:-4] + ("AAAA" if not forged.endswith("AAAA") else "BBBB")
    await page.context.add_cookies(
        [{"name": SESSION_COOKIE, "value": tampered, "domain": "127.0.0.1", "path": "/desk"}]
    )
    await page.goto(site.url("/desk/"))
    await expect(page).to_have_url(re.compile(r"/desk/login$"))


async def test_the_supervisor_sees_every_queue_and_reassigns(site: DeskSite, new_page: Any) -> None:
    experiments.start(site.engine, SAMPLE_EXPERIMENT.read_text(encoding="utf-8"), str(SAMPLE_EXPERIMENT))
    await site.hand_over("DESK-8", dpd=6, policy="auto")  # policy auto: screened, and the experiment gives it an arm
    task_id = await site.open_task("DESK-8")
    page = await new_page()
    await desk_sign_in(page, site, "supervisor")
    await page.get_by_role("link", name="Supervisor").click()
    await expect(page.locator('#queues tr[data-queue="collectors"]')).to_be_visible()
    row = page.locator(f'#reassign tr[data-task="{task_id}"]')
    await row.get_by_label("Give to").select_option("wang.fang")
    await row.get_by_role("button", name="Reassign").click()
    await expect(page.locator("#notice")).to_contain_text(f"{task_id} → wang.fang")
    assert task_row(site, task_id).assignee == "wang.fang"
    await expect(page.locator('#day tr[data-collector="li.wei"]')).to_be_visible()
    panel = page.locator("#h-experiment")
    await expect(panel).to_contain_text("Experiment: early-call-2026-12")
    await expect(page.locator("#experiment tbody tr").first).to_contain_text(re.compile("champion|challenger"))
    await page.screenshot(path=str(SCREENSHOTS / "supervisor.png"), full_page=True)
    # a collector may not see this page
    other = await new_page()
    await desk_sign_in(other, site, "collector")
    response = await other.goto(site.url("/desk/supervisor"))
    assert response is not None and response.status == 403

"""The dashboard in a real browser: Playwright driving Debian's chromium against the app served
by uvicorn, with a real worker running jobs in a thread.

Screenshots of each main page go to the test's temporary folder; with
``CONVEYOR_UPDATE_SCREENSHOTS=1`` they also replace docs/screenshots/*.png.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from support import running_worker, wait_for
from support.browser import DOCS, chromium_page, require_browser
from support.web import TOKEN, served

from conveyor import App, Settings
from conveyor.features.cron import Cron, CronEntry
from conveyor.features.flags import Flags
from conveyor.features.operations import OperationStore
from conveyor.web import WebSettings, create_app

sync_api = require_browser()


@pytest.fixture
def browser_page() -> Iterator[sync_api.Page]:
    with chromium_page(sync_api) as page:
        yield page


def until(page: sync_api.Page, check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Reload ``page`` until ``check()`` holds (for pages that are not live)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen within {timeout}s"
        time.sleep(0.2)
        page.reload()


def test_operator_flows_in_chromium(
    settings: Settings, r: redis.Redis, browser_page: sync_api.Page, tmp_path: Path
) -> None:
    page = browser_page
    expect = sync_api.expect
    app = App(settings.replace(queues=(("mail", 1), ("default", 1)), concurrency=4))
    release = threading.Event()

    @app.job(queue="mail")
    def deliver(n: int) -> None:
        time.sleep(0.02)

    @app.job(queue="default")
    def long_report(n: int) -> None:
        release.wait(20)

    @app.job(queue="mail", retry=0)
    def explode(n: int) -> None:
        raise ValueError(f"mailbox {n} is full")

    @app.job(queue="mail", retry=5)
    def flaky(n: int) -> None:
        raise ConnectionError("smtp timed out")

    Cron(app).put(CronEntry("nightly-digest", "0 3 * * *", "long_report", [1], "default"))
    Flags(app).enable("new_billing", "bill with the new engine")
    Flags(app).set_percentage("new_search", 25)
    shots: list[Path] = []

    def shot(name: str) -> None:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=False)
        shots.append(path)

    web = create_app(app, WebSettings(token=TOKEN, poll_interval=0.3))
    with served(web) as base:
        # Log in.
        page.goto(base + "/queues")
        expect(page).to_have_url(f"{base}/login?next=/queues")
        shot("login")
        page.fill('input[name="token"]', "wrong-token-123")
        page.click("button[type=submit]")
        expect(page.locator(".flash.error")).to_contain_text("Wrong token")
        page.fill('input[name="token"]', TOKEN)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{base}/queues")

        # A queue fills (live, without reloading) and drains once a worker runs.
        deliver.bulk_perform_async([[i] for i in range(40)])
        explode.perform_async(1)
        flaky.perform_async(2)
        row = page.locator('tr[data-queue="mail"]')
        expect(row.locator('[data-field="size"]')).to_have_text("42")
        shot("queues")
        page.goto(base + "/queues/mail")
        expect(page.locator("h1")).to_contain_text("mail")
        shot("queue")
        page.goto(base + "/queues")
        with running_worker(app) as worker:
            expect(row.locator('[data-field="size"]')).to_have_text("0")
            expect(page.locator('[data-stat="processed"]')).to_have_text("42")
            expect(page.locator('[data-stat="dead_size"]')).to_have_text("1")

            # Busy: what each process and thread runs.
            for i in range(3):
                long_report.perform_async(i)
            wait_for(lambda: worker.busy == 3)
            page.goto(base + "/busy")
            until(page, lambda: page.locator("text=long_report").count() == 3, "3 busy threads")
            shot("busy")
            release.set()

            page.goto(base + "/")
            expect(page.locator('[data-stat="processed"]')).to_have_text("45")
            page.wait_for_timeout(700)  # a few live samples for the chart
            shot("overview")

            # Quiet the process.
            page.goto(base + "/processes")
            process = page.locator(f'tr[data-identity="{worker.identity}"]')
            expect(process.locator(".badge")).to_have_text("running")
            process.get_by_role("button", name="Quiet").click()
            expect(page.locator(".flash.ok")).to_contain_text("asked")
            until(page, lambda: process.locator(".badge").inner_text() == "quiet", "quiet badge")
            assert r.hget(worker.identity, "quiet") == "true"
            shot("processes")

            # Retry the dead job (the quiet worker leaves it on its queue).
            page.goto(base + "/retries")
            expect(page.locator("td.error-cell")).to_contain_text("smtp timed out")
            shot("retries")
            page.goto(base + "/dead")
            expect(page.locator("td.error-cell")).to_contain_text("mailbox 1 is full")
            shot("dead")
            page.check('input[name="jid"]')
            page.get_by_role("button", name="Retry now").click()
            expect(page.locator(".flash.ok")).to_contain_text("retry: 1 of 1")
            expect(page.locator("td.empty")).to_have_text("Nothing here.")
            assert r.zcard("dead") == 0
            assert r.llen("queue:mail") == 1, "the retried job waits on its queue"

        # Toggle a cron job.
        page.goto(base + "/cron")
        entry = page.locator('tr[data-cron="nightly-digest"]')
        expect(entry.locator(".badge")).to_have_text("enabled")
        entry.get_by_role("button", name="Disable").click()
        expect(entry.locator(".badge")).to_have_text("disabled")
        assert not Cron(app).get("nightly-digest").enabled
        entry.get_by_role("button", name="Enable").click()
        expect(entry.locator(".badge")).to_have_text("enabled")
        assert Cron(app).get("nightly-digest").enabled
        shot("cron")

        page.goto(base + "/flags")
        expect(page.locator('tr[data-flag="new_search"] .badge')).to_have_text("25% of actors")
        shot("flags")

        # A bulk operation's progress bar follows the counts live; failed items are listed.
        ops = OperationStore(app.store)
        op_id = ops.create_operation("security_label_update", 7, 400, {})
        ops.record_batch(op_id, "b0", 120, [])
        failed = [
            ops.failed_item(
                entity_id=i,
                entity_type="Project",
                entity_name=f"service-{i}",
                entity_full_path=f"acme/service-{i}",
                error_message="Project is archived" if i % 2 else "Permission denied",
                error_code="service_error",
            )
            for i in range(6)
        ]
        ops.record_batch(op_id, "b1", 94, failed)
        page.goto(base + f"/operations/{op_id}")
        detail = page.locator(f'[data-op-detail="{op_id}"]')
        expect(detail.locator('[data-op-field="processed_items"]').first).to_have_text("220")
        ops.record_batch(op_id, "b2", 100, [])
        expect(detail.locator('[data-op-field="processed_items"]').first).to_have_text("320")
        expect(detail.locator('[data-op-field="percent"]')).to_have_text("80")
        expect(page.locator("table.failed-items tbody tr")).to_have_count(6)
        shot("operations")
    app.close()

    assert all(p.stat().st_size > 5_000 for p in shots)
    if os.environ.get("CONVEYOR_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        for path in shots:
            shutil.copy(path, DOCS / path.name)

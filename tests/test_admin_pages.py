"""The admin pages in a real browser: Playwright drives Debian's chromium against a real
``precompute serve``, with a real ``dagster-webserver`` and ``dagster-daemon`` running the
refresh and remediation runs from the run queue.

The story, once: sign in with the keyboard; see the spaces; refresh one and watch its row update;
open its report (sort, filter, CSV); select three unused fields; review; a user fills one of
them in; apply: two are removed, the third is skipped and shown; the activity log; the source no
longer has the two in the space's configuration, and the refreshed report no longer lists them;
undo: they are back. Then, each on its own: a stale report refuses to apply with its message;
another tenant's key can neither see nor act on the space; a post without the CSRF token is
refused; the pages fit a 390-pixel-wide phone. Every step's screenshot is kept under the test's tmp
folder, printed when a test fails.

Wall time: about 90 s on 2 CPUs (servers ~25 s; the story's five runs through the queue ~40 s;
the other tests ~12 s; stopping the servers ~14 s).
"""

from __future__ import annotations

import csv
import io
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import require_service
from dagster import DagsterInstance
from live_dagster import LiveDagster, free_port, wait_for_webserver, wait_until
from live_service import PROJECT, Service, compute_reports, running_service
from playwright.sync_api import expect, sync_playwright
from processes import Server, daemon_command, server_group, webserver_command
from test_service import project_env

from precompute_assets.core.actions import ActionLog
from precompute_assets.core.api_keys import ApiKeys
from precompute_assets.core.db import create_engine_for, sqlite_url
from precompute_assets.core.report_store import ReportStore
from precompute_assets.demo.source import DemoScale, generate_source, touch_space
from precompute_assets.orchestration.webserver import DagsterWebserver

pytestmark = [pytest.mark.slow, pytest.mark.servers]

CHROMIUM = "/usr/bin/chromium"
TOOL = "unused_fields"
SCALE = DemoScale(tenants=2, spaces=4, work_items=4_000, seed=3)
STORY_SCOPE = "t1-s001"  # 583 work items
STALE_SCOPE = "t1-s002"  # no work items: every admin field of it is unused
OTHER_SCOPE = "t2-s001"
RUN_TIMEOUT_MS = 180_000
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 800}
# Where the story leaves the README's two screenshots, when set (docs/images).
README_SHOTS = os.environ.get("PRECOMPUTE_README_SCREENSHOTS")


@dataclass
class Site(LiveDagster):
    """The servers, the data behind them, and a browser."""

    processes: list[Server] = field(default_factory=list)
    service: Service | None = None
    home: Path = Path()
    source_path: Path = Path()
    store_url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    browser: object = None

    def servers(self) -> list[Server]:
        return [*self.processes, *([self.service.server] if self.service else [])]

    @property
    def url(self) -> str:
        return self.service.url

    def generation(self, scope: str) -> int:
        engine = create_engine_for(self.store_url, read_only=True)
        header = ReportStore(engine).header(TOOL, scope)
        engine.dispose()
        return header.generation

    def unused(self, scope: str) -> list[tuple[str, str]]:
        """The unused fields of the stored report: (id, name), by id."""
        engine = create_engine_for(self.store_url, read_only=True)
        _, records = ReportStore(engine).read_records(TOOL, scope)
        engine.dispose()
        return [(r["entity_id"], r["detail"]["name"]) for r in records if r["unused"]]

    def space_fields(self, scope: str) -> set[str]:
        with sqlite3.connect(self.source_path) as connection:
            rows = connection.execute(
                "SELECT a.field_id FROM space_fields a JOIN spaces s ON s.id = a.space_id"
                " WHERE s.key = ?",
                (scope,),
            )
            return {str(field_id) for (field_id,) in rows}

    def plan(self, scope: str) -> str:
        """A plan of t1's admin to remove the report's first unused field (as a review makes)."""
        engine = create_engine_for(self.store_url)
        header, records = ReportStore(engine).read_records(TOOL, scope)
        [first, *_] = [record for record in records if record["unused"]]
        action = ActionLog(engine).plan(
            tool=TOOL, scope=scope, tenant="t1", generation=header.generation,
            watermark=header.watermark, entities=[{"id": first["entity_id"], "name": "x"}],
            params=header.summary["params"], key_id="t1-admin", batch_size=100,
        )  # fmt: skip
        engine.dispose()
        return action.action_id

    def fill_in(self, scope: str, field_id: str) -> None:
        """A user gives the field a value on one of the space's work items, now."""
        with sqlite3.connect(self.source_path, timeout=30) as connection:
            [item] = connection.execute(
                "SELECT MAX(w.id) FROM work_items w JOIN spaces s ON s.id = w.space_id"
                " WHERE s.key = ?",
                (scope,),
            ).fetchone()
            connection.execute(
                "INSERT INTO field_values (work_item_id, field_id, updated_at) VALUES (?, ?, ?)",
                (item, int(field_id), int(time.time())),
            )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not Path(CHROMIUM).exists():
        require_service(f"chromium at {CHROMIUM}", "apt-get install chromium (.ci/run does)")
    home = tmp_path_factory.mktemp("admin_pages")
    (home / "dagster.yaml").write_bytes((PROJECT / "dagster.yaml").read_bytes())
    source_url, store_url = sqlite_url(home / "source.db"), sqlite_url(home / "reports.db")
    generate_source(source_url, SCALE)
    port = free_port()
    env = project_env(home, source_url, store_url, f"http://127.0.0.1:{port}")
    with DagsterInstance.from_config(str(home)) as instance:
        compute_reports(instance, source_url, store_url)
    keys = ApiKeys(create_engine_for(store_url))
    made = {"t1": keys.create("t1 admin", "t1")[1], "t2": keys.create("t2 admin", "t2")[1]}
    with ExitStack() as stack:
        webserver = stack.enter_context(
            server_group("webserver", webserver_command(port), env, home, PROJECT)
        )
        daemon = stack.enter_context(server_group("daemon", daemon_command(), env, home, PROJECT))
        service = stack.enter_context(running_service(env, home))
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        built = Site(client, port, [webserver, daemon], service, home, home / "source.db")
        built.store_url, built.keys = store_url, made
        wait_for_webserver(built)
        webserver_api = DagsterWebserver(env["PRECOMPUTE_DAGSTER_URL"])

        def daemon_healthy() -> bool:
            try:
                webserver_api.check_daemon()
            except Exception:
                return False
            return True

        wait_until(daemon_healthy, 90, built.logs)
        browsers = stack.enter_context(sync_playwright())
        built.browser = browsers.chromium.launch(executable_path=CHROMIUM)
        stack.callback(built.browser.close)
        yield built


class Walk:
    """The pages a test opens, with a screenshot of each step in ``folder``."""

    def __init__(self, site: Site, folder: Path) -> None:
        self.site, self.folder = site, folder
        self.pages: list = []
        self.contexts: list = []
        self.steps = 0

    def signed_in(self, tenant: str, viewport: dict[str, int] = DESKTOP):
        """A new browser of the tenant's admin, signed in with the key typed at the keyboard."""
        context = self.site.browser.new_context(viewport=viewport)
        self.contexts.append(context)
        page = context.new_page()
        self.pages.append(page)
        page.goto(f"{self.site.url}/admin")
        expect(page).to_have_url(re.compile(r"/admin/sign-in\?next=/admin$"))
        expect(page.get_by_label("Your tenant's API key")).to_be_focused()
        page.keyboard.type(self.site.keys[tenant])
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Your spaces")).to_be_visible()
        self.shot(page, f"signed-in-{tenant}")
        return page

    def shot(self, page, name: str) -> None:
        self.steps += 1
        page.screenshot(path=self.folder / f"{self.steps:02d}-{name}.png", full_page=True)

    def close(self, failed: bool) -> None:
        if failed:
            for page in self.pages:
                if not page.is_closed():
                    self.shot(page, "at-failure")
            print(f"screenshots of every step: {self.folder}")
        for context in self.contexts:
            context.close()


@pytest.fixture
def walk(site: Site, request, tmp_path: Path) -> Iterator[Walk]:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    walking = Walk(site, folder)
    yield walking
    report = getattr(request.node, "rep_call", None)
    walking.close(failed=report is None or report.failed)


def _readme_shot(page, name: str) -> None:
    if README_SHOTS:
        page.screenshot(path=Path(README_SHOTS) / name, type="jpeg", quality=70)


def _entity_ids(page) -> set[str]:
    texts = page.locator("table.entities tbody th").all_inner_texts()
    return {re.search(r"#(\w+)$", text.strip()).group(1) for text in texts}


def test_an_admin_refreshes_removes_three_unused_fields_and_undoes_it(site: Site, walk: Walk):
    page = walk.signed_in("t1")
    # The tenant's spaces, and no other tenant's.
    spaces = page.locator("table.spaces").first
    expect(spaces).to_contain_text(STORY_SCOPE)
    expect(spaces).to_contain_text(STALE_SCOPE)
    expect(page.locator("main")).not_to_contain_text(OTHER_SCOPE)
    row = page.locator(f"#row-{TOOL}-{STORY_SCOPE}")
    expect(row).to_contain_text(re.compile(r"\d+ of 700 \(\d+%\)"))
    expect(row).to_contain_text("computed")
    assert row.locator("svg.bar rect.threshold").get_attribute("x") == "69.25"  # at 70%
    _readme_shot(page, "admin-spaces.jpg")

    # Refresh now: the row follows the run, then shows the new report.
    before = site.generation(STORY_SCOPE)
    row.get_by_role("button", name=f"Refresh now {STORY_SCOPE}").click()
    expect(row.locator(".status")).to_have_text(re.compile("Queuing|Queued|Running"))
    walk.shot(page, "refreshing")
    status = page.locator(f"#row-{TOOL}-{STORY_SCOPE} .status")
    expect(status).to_have_text("Refreshed.", timeout=RUN_TIMEOUT_MS)
    expect(page.locator(f"#row-{TOOL}-{STORY_SCOPE}")).to_contain_text("computed just now")
    assert site.generation(STORY_SCOPE) == before + 1
    walk.shot(page, "refreshed")

    # The report: unused first, "never", sortable, filterable, as CSV.
    row.get_by_role("link", name=STORY_SCOPE, exact=True).click()
    computed = page.locator("#computed")
    expect(computed).to_contain_text(f"Computed just now (generation {before + 1})")
    expect(page.locator("table.entities tbody tr").first).to_have_class("unused")
    expect(page.locator("table.entities")).to_contain_text("never")
    unused = site.unused(STORY_SCOPE)
    assert len(unused) >= 3
    page.get_by_role("link", name="Uses", exact=True).click()
    expect(page.locator("th[aria-sort]")).to_have_attribute("aria-sort", "descending")
    counts = [int(c) for c in page.locator("table.entities td.num").all_inner_texts()]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    page.get_by_label("Show", exact=True).select_option("unused")
    page.get_by_role("button", name="Filter").click()
    assert _entity_ids(page) == {entity for entity, _ in unused}
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    lines = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert lines[0][:3] == ["entity_type", "entity_id", "unused"]
    assert sum(1 for line in lines[1:] if line[2] == "true") == len(unused)
    walk.shot(page, "report")

    # Select three unused fields, review them.
    chosen = unused[:3]
    for _, name in chosen:
        page.get_by_label(f"Select {name}", exact=True).check()
    page.get_by_role("button", name="Review selected").click()
    expect(page.get_by_role("heading", name="Review: Remove from the space")).to_be_visible()
    for _, name in chosen:
        expect(page.locator("main table")).to_contain_text(name)
    walk.shot(page, "review")

    # A user fills the second one in before the admin applies.
    site.fill_in(STORY_SCOPE, chosen[1][0])
    configured = site.space_fields(STORY_SCOPE)
    page.get_by_role("button", name="Apply to 3").click()
    status = page.locator("#action-status")
    expect(status).to_contain_text("Done", timeout=RUN_TIMEOUT_MS)
    expect(status).to_contain_text("2 applied, 1 skipped")
    expect(page.locator("#applied li")).to_have_count(2)
    expect(page.locator("#skipped")).to_contain_text(chosen[1][1])
    action_url = page.url
    walk.shot(page, "applied")
    _readme_shot(page, "admin-action.jpg")

    # The source: the two are gone from the space's configuration, the skipped one stays.
    removed = {chosen[0][0], chosen[2][0]}
    assert site.space_fields(STORY_SCOPE) == configured - removed
    # The run, beside the report runs, with its tags.
    action_id = action_url.rsplit("/", 1)[1]
    webserver = DagsterWebserver(f"http://127.0.0.1:{site.port}")
    [run] = wait_until(
        lambda: webserver.runs(("SUCCESS",), {"precompute/action_id": action_id}), 60, site.logs
    )
    assert run.job_name == f"{TOOL}_remediation_job"
    assert run.tags["precompute/action"] == "apply" and run.tags["precompute/scope"] == STORY_SCOPE

    # The activity log.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Activity").click()
    first = page.locator("table.activity tbody tr").first
    expect(first).to_contain_text("Apply (3)")
    expect(first).to_contain_text(f"{TOOL} / {STORY_SCOPE}")
    expect(first).to_contain_text("done")
    walk.shot(page, "activity")

    # The report refreshed through the queue no longer lists them.
    wait_until(lambda: site.generation(STORY_SCOPE) == before + 2, 180, site.logs)
    page.goto(f"{site.url}/admin/tools/{TOOL}/spaces/{STORY_SCOPE}")
    listed = _entity_ids(page)
    assert not removed & listed and chosen[1][0] in listed
    walk.shot(page, "report-after")

    # Undo: they are back, and the undo is audited.
    page.goto(action_url)
    page.get_by_role("button", name="Undo").click()
    status = page.locator("#action-status")
    expect(status).to_contain_text("Done", timeout=RUN_TIMEOUT_MS)
    expect(status).to_contain_text("Undone: 2 restored.")
    assert site.space_fields(STORY_SCOPE) == configured
    walk.shot(page, "undone")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Activity").click()
    expect(page.locator("table.activity tbody tr").first).to_contain_text("Undo (2)")


def test_a_stale_report_refuses_to_apply_with_its_message(site: Site, walk: Walk):
    page = walk.signed_in("t1")
    touch_space(sqlite_url(site.source_path), STALE_SCOPE)
    page.goto(f"{site.url}/admin/tools/{TOOL}/spaces/{STALE_SCOPE}")
    page.locator('input[name="entity"]').first.check()
    page.get_by_role("button", name="Review selected").click()
    refusal = page.get_by_role("alert")
    expect(refusal).to_contain_text("The source changed since this report was computed")
    expect(refusal).to_contain_text("refresh the report, then review again")
    expect(page.get_by_role("button", name=re.compile("^Apply"))).to_have_count(0)
    walk.shot(page, "refused")
    page.get_by_role("link", name="Back to the report").click()
    expect(page.get_by_role("alert")).to_contain_text("The source changed since this report")
    log = ActionLog(create_engine_for(site.store_url, read_only=True))
    assert log.recent(None, scope=STALE_SCOPE) == []


def test_another_tenants_key_can_neither_see_nor_act(site: Site, walk: Walk):
    owner = walk.signed_in("t1")
    plan = f"{site.url}/admin/actions/{site.plan(STORY_SCOPE)}"
    owner.goto(plan)
    expect(owner.get_by_role("button", name=re.compile("^Apply"))).to_be_visible()

    other = walk.signed_in("t2")
    expect(other.locator("main")).not_to_contain_text(STORY_SCOPE)
    token = other.locator('input[name="csrf_token"]').first.get_attribute("value")
    space = f"{site.url}/admin/tools/{TOOL}/spaces/{STORY_SCOPE}"
    for url in (space, f"{space}/report.csv", plan, f"{space}/row"):
        answer = other.goto(url)
        assert answer.status == 404, url
        expect(other.get_by_role("heading", name="Not found")).to_be_visible()
    walk.shot(other, "not-found")
    for url, form in (
        (f"{plan}/apply", {}),
        (f"{space}/review", {"entity": "1", "generation": "1"}),
        (f"{space}/refresh", {}),
    ):
        answer = other.request.post(url, form={"csrf_token": token, **form})
        assert answer.status == 404, (url, answer.status)
    action_id = plan.rsplit("/", 1)[1]
    log = ActionLog(create_engine_for(site.store_url, read_only=True))
    assert log.get(action_id).status == "planned"


def test_a_post_without_the_csrf_token_is_refused(site: Site, walk: Walk):
    page = walk.signed_in("t1")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "precompute_session"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/admin")
    apply = f"{site.url}/admin/actions/{site.plan(STORY_SCOPE)}/apply"
    space = f"{site.url}/admin/tools/{TOOL}/spaces/{STORY_SCOPE}"
    for url, form in (
        (apply, {}),
        (apply, {"csrf_token": "forged"}),
        (f"{space}/review", {"entity": "1", "generation": "1"}),
        (f"{space}/refresh", {}),
        (f"{site.url}/admin/sign-out", {}),
    ):
        answer = page.request.post(url, form=form)
        assert answer.status == 403, (url, answer.status)
        assert "This form was not sent by a page of this site" in answer.text()
    log = ActionLog(create_engine_for(site.store_url, read_only=True))
    assert log.get(apply.rsplit("/", 2)[1]).status == "planned"
    # Still signed in; signing out with the page's own form ends the session.
    page.goto(f"{site.url}/admin")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You are signed out")
    assert page.goto(f"{site.url}/admin/activity").url.startswith(f"{site.url}/admin/sign-in")


def test_the_pages_fit_a_phone_and_the_keyboard_reaches_every_control(site: Site, walk: Walk):
    page = walk.signed_in("t1", PHONE)
    for path in ("/admin", f"/admin/tools/{TOOL}/spaces/{STALE_SCOPE}", "/admin/activity"):
        page.goto(site.url + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
        walk.shot(page, path.strip("/").replace("/", "-"))
    page.goto(f"{site.url}/admin/tools/{TOOL}/spaces/{STALE_SCOPE}")
    expect(page.get_by_role("button", name="Review selected")).to_be_in_viewport()
    # From the top, Tab reaches the refresh, the filters, the sorting, the selection, the review.
    page.goto(f"{site.url}/admin/tools/{TOOL}/spaces/{STALE_SCOPE}?show=used")
    reached = set()
    for _ in range(30):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.innerText"))
    wanted = {"Sign out", "q", "show", "Name", "select-all", "Review selected"}
    assert wanted <= reached, reached

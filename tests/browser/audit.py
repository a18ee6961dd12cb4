"""Auditing one page: screenshots at two widths, the CSP it is served with, and axe-core.

Each page is opened twice. First in an ordinary browser context, as a visitor sees it:
the Content-Security-Policy is enforced, so a violation (an inline script or style
slipping in) shows on the console. Uncaught script errors, broken sub-resources, POST
forms whose csrf_token is empty (the server would refuse them) and pages wider than the
window are collected there too, and the screenshots are taken there. Then in a context
that bypasses the CSP, only so that axe.min.js can be injected and run (our CSP rightly
forbids it), at both widths.

Only serious and critical axe violations fail a test; every violation is written to
``artifacts/axe/<page>.json`` for the record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Response,
    StorageState,
    ViewportSize,
)

DESKTOP = ViewportSize(width=1280, height=900)
PHONE = ViewportSize(width=375, height=812)
WIDTHS = {"desktop": DESKTOP, "phone": PHONE}
BLOCKING_IMPACTS = ("serious", "critical")
TIMEOUT_MS = 10_000  # a page element that is not there fails in 10 s, not 30

# Runs in the page after axe.min.js: every violation, with the selectors of its nodes.
AXE_RUN = """async () => {
  const results = await axe.run(document, {resultTypes: ["violations"]});
  return results.violations.map((v) => ({
    rule: v.id,
    impact: v.impact || "",
    help: v.help,
    targets: v.nodes.map((n) => [].concat(n.target).flat().map(String).join(" ")),
  }));
}"""

# The actions of the page's POST forms whose csrf_token field is missing or empty.
TOKENLESS_FORMS = "form[method=post i]"
TOKENLESS_FORMS_JS = """forms => forms
  .filter((f) => !(f.elements.csrf_token && f.elements.csrf_token.value))
  .map((f) => f.getAttribute("action") || location.pathname)"""

Visit = Callable[[Page], Any]


@dataclass(frozen=True)
class Violation:
    width: str
    rule: str
    impact: str
    help: str
    targets: list[str]

    def __str__(self) -> str:
        targets = ", ".join(self.targets[:8]) + (" …" if len(self.targets) > 8 else "")
        return f"[{self.width}] {self.rule} ({self.impact}): {self.help} — {targets}"


# Elements that scroll sideways inside the page (overflow-x auto or scroll, content wider than
# the box): described by tag and class. A code block may; nothing else should.
INNER_SCROLL_JS = """() => [...document.querySelectorAll("body *")]
  .filter(e => e.tagName !== "PRE" && e.tagName !== "TEXTAREA"
    && ["auto", "scroll"].includes(getComputedStyle(e).overflowX)
    && e.scrollWidth > e.clientWidth + 1)
  .map(e => e.tagName.toLowerCase() + (e.className ? "." + [...e.classList].join(".") : ""))"""


@dataclass
class Report:
    name: str
    csp: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # sub-resources answering >= 400
    tokenless: list[str] = field(default_factory=list)  # POST forms without a CSRF token
    too_wide: list[str] = field(default_factory=list)  # widths at which the page scrolls sideways
    violations: list[Violation] = field(default_factory=list)

    @property
    def blocking(self) -> list[Violation]:
        return [v for v in self.violations if v.impact in BLOCKING_IMPACTS]

    def problems(self) -> list[str]:
        return (
            [f"CSP violation: {m}" for m in self.csp]
            + [f"script error: {m}" for m in self.script_errors]
            + [f"broken sub-resource: {m}" for m in self.broken]
            + [
                f"a POST form to {m} has an empty csrf_token: it will be refused"
                for m in self.tokenless
            ]
            + [f"the page scrolls sideways: {m}" for m in self.too_wide]
            + [f"axe: {v}" for v in self.blocking]
        )

    def failure(self) -> str:
        lines = "\n  ".join(self.problems())
        return f"page {self.name!r} has {len(self.problems())} problem(s):\n  {lines}"


def _is_csp(message: ConsoleMessage) -> bool:
    return "Content Security Policy" in message.text


class Auditor:
    """Audits pages. Each visitor keeps two tabs open across audits (opening a tab costs more
    than a page load): one in a context that enforces the CSP, one in a context that
    bypasses it."""

    def __init__(
        self,
        browser: Browser,
        *,
        base_url: str,
        axe_script: Path,
        artifacts: Path,
        locale: str | None = None,
    ) -> None:
        self.browser = browser
        self.locale = locale  # the browser's language (its Accept-Language); None: English
        self.base_url = base_url
        self.axe_script = axe_script
        self.screenshots = artifacts / "screenshots"
        self.axe_reports = artifacts / "axe"
        self.screenshots.mkdir(parents=True, exist_ok=True)
        self.axe_reports.mkdir(parents=True, exist_ok=True)
        self._tabs: dict[tuple[str, bool], Page] = {}

    def close(self) -> None:
        for page in self._tabs.values():
            page.context.close()
        self._tabs.clear()

    def _tab(self, who: str, state: StorageState | None, *, bypass_csp: bool) -> Page:
        key = (who, bypass_csp)
        if key not in self._tabs:
            context = self.browser.new_context(
                base_url=self.base_url,
                viewport=DESKTOP,
                storage_state=state,
                bypass_csp=bypass_csp,
                **({"locale": self.locale} if self.locale else {}),
            )
            context.set_default_timeout(TIMEOUT_MS)
            self._tabs[key] = context.new_page()
        page = self._tabs[key]
        page.set_viewport_size(DESKTOP)
        return page

    def audit(
        self, name: str, visit: Visit, *, who: str = "anonymous", state: StorageState | None = None
    ) -> Report:
        """Open the page ``visit`` leads to, as ``who`` (signed in by ``state``), and audit it."""
        report = Report(name)
        self._as_visitors_see_it(report, visit, self._tab(who, state, bypass_csp=False))
        self._axe(report, visit, self._tab(who, state, bypass_csp=True))
        (self.axe_reports / f"{name}.json").write_text(
            json.dumps([asdict(v) for v in report.violations], indent=2) + "\n"
        )
        return report

    def _as_visitors_see_it(self, report: Report, visit: Visit, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if _is_csp(message):
                report.csp.append(message.text)

        def on_page_error(error: Error) -> None:
            report.script_errors.append(str(error))

        def on_response(response: Response) -> None:
            if response.status >= 400 and response.request.resource_type != "document":
                report.broken.append(f"{response.status} {response.url}")

        page.on("console", on_console)
        page.on("pageerror", on_page_error)
        page.on("response", on_response)
        try:
            visit(page)
            page.wait_for_load_state("load")
            report.tokenless += page.eval_on_selector_all(TOKENLESS_FORMS, TOKENLESS_FORMS_JS)
            for width, size in WIDTHS.items():
                page.set_viewport_size(size)
                wide = page.evaluate("() => document.documentElement.scrollWidth")
                if wide > size["width"]:
                    report.too_wide.append(f"{wide} px wide in a {size['width']} px {width} window")
                # Nor may a part of it (a table in its wrapper) scroll sideways on its own.
                for inner in page.evaluate(INNER_SCROLL_JS):
                    report.too_wide.append(f"{inner} scrolls sideways in a {width} window")
                page.screenshot(
                    path=self.screenshots / f"{report.name}-{width}.png", full_page=True
                )
        finally:
            page.remove_listener("console", on_console)
            page.remove_listener("pageerror", on_page_error)
            page.remove_listener("response", on_response)

    def _axe(self, report: Report, visit: Visit, page: Page) -> None:
        visit(page)
        page.wait_for_load_state("load")
        page.add_script_tag(path=self.axe_script)
        for width, size in WIDTHS.items():
            page.set_viewport_size(size)
            for found in page.evaluate(AXE_RUN):
                report.violations.append(Violation(width=width, **found))

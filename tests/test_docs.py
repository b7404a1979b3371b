"""The documentation builds (``mkdocs build --strict``) and its code runs as written.

Every ```` ```python ```` block of our pages (``docs/*.md``, ``docs/recipes/*.md``,
``docs/api/*.md``, and ``README.md``; pages other people own test their own code) runs, per
page, in subprocesses, bounded in time:

* a block titled ``...server.py`` (```` ```python title="server.py" ````) is a server a user
  starts in one terminal: it runs in the background, its port is read from the start-up
  banner and given to the following blocks as ``VUER_CLIENT_URI``, and at the end of the page
  it is stopped with Ctrl-C and must exit cleanly;
* any other titled block (``client.py``) is a program a user runs in another terminal: it
  must exit 0;
* the untitled blocks of a page are one session, run in order as one script (after the
  titled ones, with the servers still up);
* a block whose first line is ``# docs: no-run`` is not run (for the very few that need real
  hardware or a browser).

Scripts run in a temporary directory with ``VUER_PORT=0`` (``Vuer()`` picks a free port) and
``BROWSER=true`` (``app.show()`` outside Jupyter opens nothing). Line numbers in tracebacks are
the Markdown file's.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest
from test_examples import ServerProcess, run_script, subprocess_env

from conftest import require

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# pages written and tested by other people
NOT_OURS = {"browser.md", "performance.md", "rtc.md", "schemas.md"}
NO_RUN = "# docs: no-run"
MAX_NO_RUN = 3  # keep the unrun blocks few

# what each page's server.py must print once the page's clients have run
SERVER_SAYS: Dict[str, List[str]] = {
    "quickstart.md": [r"Received HELLO: \{'message': 'Hi!'\}",
                      r"Received MOVE_BOX: \[1, 0\.5, 0\]"],
    "remote-client.md": [r"SET_POSITION #200\b"],
}

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python(?P<attrs>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S)


@dataclass
class Block:
    page: Path
    line: int  # line of the block's first code line in the page (1-based)
    title: str
    code: str

    @property
    def kind(self) -> str:
        if self.code.lstrip().startswith(NO_RUN):
            return "skip"
        if self.title.endswith("server.py"):
            return "server"
        return "program" if self.title else "script"


def our_pages() -> List[Path]:
    pages = [p for p in DOCS.glob("*.md") if p.name not in NOT_OURS]
    return sorted(pages + [*(DOCS / "recipes").glob("*.md"), *(DOCS / "api").glob("*.md")])


def blocks_of(page: Path) -> List[Block]:
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        title = re.search(r'title="([^"]*)"', m.group("attrs"))
        indent = len(m.group("indent"))
        code = "".join(line[indent:] if line.strip() else "\n"
                       for line in m.group("body").splitlines(keepends=True))
        line = text.count("\n", 0, m.start("body")) + 1
        out.append(Block(page, line, title.group(1) if title else "", code))
    return out


def padded(blocks: List[Block]) -> str:
    """The blocks as one script, each at its own line of the page (tracebacks point there)."""
    lines: List[str] = []
    for b in blocks:
        lines.extend([""] * (b.line - 1 - len(lines)))
        lines.extend(b.code.splitlines())
    return "\n".join(lines) + "\n"


def run_page(page: Path, tmp_path: Path) -> None:
    env = subprocess_env(VUER_PORT="0", BROWSER="true")
    for k in ("VUER_CLIENT_URI", "VUER_TOKEN", "VUER_HOST"):
        env.pop(k, None)
    blocks = [b for b in blocks_of(page) if b.kind != "skip"]
    assert blocks, f"{page.name}: nothing to run"
    with contextlib.ExitStack() as stack:  # kills what is still running, whatever happens
        servers: List[ServerProcess] = []
        for b in blocks:
            if b.kind == "server":
                script = tmp_path / b.title
                script.write_text(padded([b]))
                srv = stack.enter_context(ServerProcess([str(script)], tmp_path, dict(env)))
                servers.append(srv)
                env["VUER_CLIENT_URI"] = f"ws://localhost:{srv.port}"
            elif b.kind == "program":
                script = tmp_path / b.title
                script.write_text(padded([b]))
                r = run_script([str(script)], tmp_path, env)
                assert r.returncode == 0, f"{page.name}:{b.line} ({b.title}) failed:\n{r.stdout}"
        session = [b for b in blocks if b.kind == "script"]
        if session:
            script = tmp_path / f"{page.stem}_session.py"
            script.write_text(padded(session))
            r = run_script([str(script)], tmp_path, env, timeout=60)
            assert r.returncode == 0, f"{page.name} failed:\n{r.stdout}"
        for srv in servers:
            for pattern in SERVER_SAYS.get(page.name, []):
                srv.wait_for(pattern)
            rc = srv.stop()
            assert rc == 0 and "Traceback" not in srv.output, \
                f"{page.name}: server.py exited with {rc}:\n{srv.output}"


def test_blocks_are_found_and_few_are_skipped():
    pages = our_pages()
    assert {p.name for p in pages} >= {"index.md", "quickstart.md", "concepts.md",
                                       "migrating.md", "security.md", "reliability.md",
                                       "cli.md", "jupyter.md"}
    blocks = [b for p in pages for b in blocks_of(p)]
    assert len(blocks) >= 40, f"only {len(blocks)} python blocks found: is FENCE broken?"
    skipped = [f"{b.page.name}:{b.line}" for b in blocks if b.kind == "skip"]
    assert len(skipped) <= MAX_NO_RUN, f"too many '{NO_RUN}' blocks: {skipped}"
    for page in SERVER_SAYS:
        assert any(b.kind == "server" for p in pages if p.name == page for b in blocks_of(p))


@pytest.mark.parametrize("page", [p for p in our_pages() if blocks_of(p)],
                         ids=lambda p: str(p.relative_to(DOCS)))
def test_code_blocks_run(page, tmp_path):
    run_page(page, tmp_path)


README = ROOT / "README.md"


def test_readme_code_blocks_run(tmp_path):
    """The README's snippets run as pasted, with the page rules above: the quick start is a
    ``server.py`` (stopped with Ctrl-C at the end), the client a ``client.py`` run against it,
    the robot loop a script of its own."""
    blocks = blocks_of(README)
    kinds = [b.kind for b in blocks]
    assert len(blocks) >= 3 and "skip" not in kinds, kinds
    assert kinds.count("server") == 1 and "program" in kinds and "script" in kinds, kinds
    run_page(README, tmp_path)


def test_mkdocs_build_strict(tmp_path):
    require("mkdocs")
    require("material")
    require("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # no -q: mkdocs 1.6 does not count the warnings it does not print, so --strict -q passes
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                        "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)], check=False,
                       cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout}\n{r.stderr}"
    assert (site / "index.html").is_file()
    api = (site / "api" / "server" / "index.html").read_text()
    assert "wait_for_session" in api  # mkdocstrings rendered the docstrings


def test_nav_lists_every_page_of_ours():
    yaml = require("yaml")

    def files(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for v in node.values():
                yield from files(v)
        elif isinstance(node, list):
            for v in node:
                yield from files(v)

    nav = set(files(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))
    ours = {str(p.relative_to(DOCS)) for p in our_pages()}
    assert ours <= nav, f"pages missing from the mkdocs nav: {sorted(ours - nav)}"

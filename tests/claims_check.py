"""Quoted numbers in README.md and docs/*.md against the committed results files they cite.

Used by tests/test_claims.py. A Markdown file is cut into blocks: paragraphs, list items and tables
(fenced and indented code is skipped, so are inline code spans). A block cites a results file when it
names ``benchmarks/results/X.md``, ``benchmarks/RESULTS.md`` or a bare ``bench_X.md``; a table or a
list also takes the citations of the paragraph just before it, and every block takes those of the headings it
sits under. Every number of a citing block must appear in a cited file, as written or as the same
value at the precision written (``1.73`` matches ``1.7312``, ``9`` matches ``8.8``); a block that
quotes a number without citing a file is a problem of its own. Tokens in ``exempt`` (preset sizes,
versions, option values: not measurements) are skipped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CITE = re.compile(r"benchmarks/results/[\w.-]+\.md|benchmarks/RESULTS\.md|(?<![\w/])bench_\w+\.md")
NUMBER = re.compile(r"(?:(?<![\w.])|(?<=[\s(]x))(?<![A-Za-z]-)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:x|k|M|B|%)?(?![\w])")
DATE = re.compile(r"\b\d{4}-\d{2}(?:-\d{2})?\b")
CODE_SPAN = re.compile(r"`[^`]*`")
LINK = re.compile(r"\]\([^)]*\)|https?://\S+")
LIST_MARK = re.compile(r"^\s*(?:[-*]|\d+\.)\s", re.M)


@dataclass(frozen=True)
class Block:
    path: str
    line: int
    text: str
    cites: tuple[str, ...]


def cited_files(text: str) -> list[str]:
    out = []
    for m in CITE.findall(text):
        name = m if m.startswith("benchmarks/") else "benchmarks/results/" + m
        if name not in out:
            out.append(name)
    return out


def numbers(text: str, *, prose: bool = True) -> list[str]:
    """Number tokens of ``text`` as written, without sign or suffix (``1,872``, ``1.73``, ``0.05``).
    For prose, inline code, links, dates and file names are left out first."""
    if prose:
        text = CODE_SPAN.sub(" ", text)
        text = LINK.sub(" ", text)
        text = CITE.sub(" ", text)
        text = DATE.sub(" ", text)
        text = LIST_MARK.sub(" ", text)
    return [m.group(1) + (m.group(2) or "") for m in NUMBER.finditer(text)]


def value(token: str) -> tuple[float, int]:
    """(value, decimals written)."""
    t = token.replace(",", "")
    return float(t), (len(t.split(".")[1]) if "." in t else 0)


def blocks(path: Path) -> list[Block]:
    """The prose blocks of a Markdown file with the results files each cites (see the module)."""
    rel = path.resolve().relative_to(ROOT).as_posix() if path.resolve().is_relative_to(ROOT) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    headings: list[tuple[int, list[str]]] = []  # (level, cites) of the headings above
    cur: list[str] = []
    start = 0
    kind = None  # "para", "table", "item"
    prev_para_cites: list[str] = []
    fenced = False

    def flush():
        nonlocal cur, kind, prev_para_cites
        if cur:
            text = "\n".join(cur)
            cites = cited_files(text)
            if kind in ("table", "item"):
                cites = cites + [c for c in prev_para_cites if c not in cites]
            for _, hc in headings:
                cites += [c for c in hc if c not in cites]
            out.append(Block(rel, start + 1, text, tuple(cites)))
            if kind == "para":
                prev_para_cites = cited_files(text)
        cur, kind = [], None

    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("```"):
            flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        if not s:
            flush()
            continue
        if s.startswith("#"):
            flush()
            level = len(s) - len(s.lstrip("#"))
            headings = [h for h in headings if h[0] < level] + [(level, cited_files(s))]
            prev_para_cites = []
            continue
        if line.startswith("    ") and kind is None:  # indented code
            continue
        is_table = s.startswith("|")
        is_item = bool(re.match(r"(- |\* |\d+\. )", s)) and not line.startswith("  ")
        if is_table and kind != "table" or is_item or (kind == "table" and not is_table):
            flush()
        if not cur:
            start = i
            kind = "table" if is_table else "item" if is_item else "para"
        cur.append(line)
    flush()
    return out


def results_tokens(name: str) -> list[tuple[float, int, str]]:
    text = (ROOT / name).read_text(encoding="utf-8")
    return [(*value(t), t) for t in numbers(text, prose=False)]


def matches(token: str, found: list[tuple[float, int, str]]) -> bool:
    v, d = value(token)
    half = 0.5 * 10.0 ** -d + 1e-9
    for fv, _, ft in found:
        if ft == token or abs(fv - v) <= half:
            return True
    return False


def problems(path: Path, exempt=frozenset(), inputs=()) -> list[str]:
    """Every quoted number of ``path`` that its cited results files do not hold, and every block that
    quotes numbers without citing a results file, as one line each. Blocks starting with a prefix in
    ``inputs`` hold sourced inputs, not measurements, and are skipped."""
    out = []
    cache: dict[str, list] = {}
    for b in blocks(path):
        if b.text.lstrip().startswith(tuple(inputs)):
            continue
        toks = [t for t in numbers(b.text) if t not in exempt]
        if not toks:
            continue
        where = f"{b.path}:{b.line}"
        if not b.cites:
            out.append(f"{where}: quotes {', '.join(dict.fromkeys(toks))} without citing a results file "
                       f"(name benchmarks/results/X.md in the paragraph): {b.text[:80]!r}")
            continue
        missing_files = [c for c in b.cites if not (ROOT / c).is_file()]
        if missing_files:
            out.append(f"{where}: cites {', '.join(missing_files)}, which does not exist")
            continue
        found = []
        for c in b.cites:
            if c not in cache:
                cache[c] = results_tokens(c)
            found += cache[c]
        for t in dict.fromkeys(toks):
            if not matches(t, found):
                out.append(f"{where}: {t} is not in {' or '.join(b.cites)} (at the precision written)")
    return out

"""Every relative link in the repository's Markdown files resolves: the file
or folder it names exists, and its #anchor, if any, is a heading there."""
import os
import re
import unicodedata

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SKIPPED_FOLDERS = {".git", "node_modules", "__pycache__"}
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def markdown_files(root):
    """The .md files under `root`, outside build folders, dependencies and .git."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders
                               if d not in SKIPPED_FOLDERS and not d.startswith(("build", ".")))
        yield from (os.path.join(folder, name) for name in sorted(files) if name.endswith(".md"))


def without_code(text):
    """`text` with fenced code blocks and inline code spans blanked out."""
    text = re.sub(r"^( {0,3})(```|~~~).*?^\1\2[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text, flags=re.DOTALL)


def slug(heading):
    """GitHub's anchor for a heading: lower case, markup and punctuation other
    than - and _ dropped, spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path):
    """The anchors of the headings in the Markdown file `path` (repeated ones numbered as GitHub does)."""
    with open(path, encoding="utf-8") as f:
        text = without_code(f.read())
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, flags=re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path):
    """(target, why) for each relative link in `path` that does not resolve."""
    with open(path, encoding="utf-8") as f:
        text = without_code(f.read())
    broken = []
    for target in LINK.findall(text) + REFERENCE.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):  # http:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(resolved):
            broken.append((target, "no such file"))
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            broken.append((target, f"no heading #{anchor} in {os.path.relpath(resolved, ROOT)}"))
    return broken


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "b.md").write_text("# Deploying on a 512 MB host\n\n## Same\n\n## Same\n")
    (tmp_path / "a.md").write_text(
        "[ok](b.md#deploying-on-a-512-mb-host) [second](b.md#same-1) [web](https://example.org/x.md)\n"
        "`[code](missing.md)`\n```\n[fenced](missing.md)\n```\n"
        "[gone](missing.md) [no heading](b.md#nowhere) ![image](pic.png)\n")
    assert broken_links(str(tmp_path / "a.md")) == [
        ("missing.md", "no such file"), ("b.md#nowhere", "no heading #nowhere in " +
                                         os.path.relpath(str(tmp_path / "b.md"), ROOT)),
        ("pic.png", "no such file")]


@pytest.mark.parametrize("path", [os.path.relpath(p, ROOT) for p in markdown_files(ROOT)])
def test_every_relative_link_resolves(path):
    assert broken_links(os.path.join(ROOT, path)) == []

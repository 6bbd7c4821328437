"""
The links of the Markdown documents in the source tree (README.md,
CHANGELOG.md, docs/*.md): every relative link names a file that exists,
and every #anchor a heading of its target, as GitHub slugs headings.
Links to other sites are not followed; code (fenced, indented or inline)
is not read for links.
"""

import glob
import os
import re

from twisted.trial import unittest

from harness import temporary_directory

SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# [text](target) and ![alt](target), the target up to a space (a title may follow) or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def documents(root=SOURCE_TREE):
    """The Markdown files whose links are checked, as paths."""
    names = [os.path.join(root, "README.md"), os.path.join(root, "CHANGELOG.md")]
    names += sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    return [name for name in names if os.path.isfile(name)]


def prose(text, spans=True):
    """C{text} without its code: fenced blocks, indented blocks after a blank line, and inline code spans if C{spans}."""
    lines, fence, code, previous_blank = [], None, False, True
    for line in text.splitlines():
        stripped = line.strip()
        if fence or stripped.startswith(("```", "~~~")):
            fence = None if fence and stripped.startswith(fence) else (fence or stripped[:3])
            lines.append("")
            continue
        if stripped and line.startswith(("    ", "\t")) and (previous_blank or code):
            code, previous_blank = True, False  # an indented code block
            lines.append("")
            continue
        code = code and not stripped
        previous_blank = not stripped
        lines.append(re.sub(r"(`+)(?:(?!\1).)+\1", "", line) if spans else line)
    return "\n".join(lines)


def slug(heading):
    """GitHub's anchor for a heading's text: lower case, markup and punctuation gone, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    """The anchors of the headings of a Markdown file (a repeated one with -1, -2, ..., as GitHub does)."""
    seen, found = {}, set()
    with open(path, encoding="utf-8") as f:
        for line in prose(f.read(), spans=False).splitlines():
            match = HEADING.match(line)
            if match:
                base = slug(match.group(2))
                count = seen.get(base, 0)
                seen[base] = count + 1
                found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path):
    """Each relative link or anchor of the file at C{path} that does not resolve, with why."""
    with open(path, encoding="utf-8") as f:
        text = prose(f.read())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto: ...: another site
        name, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), name)) if name else path
        if not os.path.exists(resolved):
            broken.append(f"{target}: no such file {os.path.relpath(resolved, SOURCE_TREE)}")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {os.path.relpath(resolved, SOURCE_TREE)}")
    return broken


class LinkTests(unittest.TestCase):
    def setUp(self):
        if not documents():
            raise unittest.SkipTest("needs the source tree's README.md and docs/")

    def test_every_relative_link_and_anchor_resolves(self):
        """Every link of README.md, CHANGELOG.md and docs/*.md to a file of the tree, or a heading, resolves."""
        broken = {os.path.relpath(path, SOURCE_TREE): broken_links(path) for path in documents()}
        self.assertEqual({path: links for path, links in broken.items() if links}, {})

    def test_the_check_catches_a_missing_file_and_a_missing_anchor(self):
        """A link to a file that is not there and one to a heading that is not there are both reported."""
        folder = temporary_directory(self)
        os.makedirs(os.path.join(folder, "docs"))
        with open(os.path.join(folder, "docs", "a.md"), "w") as f:
            f.write("# A\n\n## The `key` file: where it lives\n\nSee [b](b.md), [c](../c.md), [k](#the-key-file-where-it-lives),"
                    " [gone](#gone), [web](https://example.org/x.md) and `[code](nowhere.md)`.\n\n"
                    "    [indented code](nowhere.md)\n")
        with open(os.path.join(folder, "c.md"), "w") as f:
            f.write("# C\n")
        found = broken_links(os.path.join(folder, "docs", "a.md"))
        self.assertEqual(len(found), 2, found)
        self.assertTrue(found[0].startswith("b.md: no such file"), found)
        self.assertTrue(found[1].startswith("#gone: no heading with the anchor #gone"), found)

    def test_anchors_are_githubs_slugs(self):
        """Headings become GitHub's anchors: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
        self.assertEqual(slug("A last good copy on local disk"), "a-last-good-copy-on-local-disk")
        self.assertEqual(slug("Install a node as a systemd service"), "install-a-node-as-a-systemd-service")
        self.assertEqual(slug("`iwsrv status` and `switchover`"), "iwsrv-status-and-switchover")
        self.assertEqual(slug("Worked example: two hosts, each the other's backup"),
                         "worked-example-two-hosts-each-the-others-backup")
        self.assertEqual(slug("Failover (the pair's)"), "failover-the-pairs")
        folder = temporary_directory(self)
        path = os.path.join(folder, "x.md")
        with open(path, "w") as f:
            f.write("# Notes\n\n## Notes\n\n    # not a heading\n")
        self.assertEqual(anchors(path), {"notes", "notes-1"})

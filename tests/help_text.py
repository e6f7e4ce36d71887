"""Reading a command's ``--help`` text as a user sees it: which arguments it lists, and which lack a description.

Shared by the CLI tests of every package (tests/ is on pytest's path through its conftest.py).
"""

import re

_ENTRY = re.compile(r"  (-?-?[\w][\w-]*)(.*)")  # an argument entry: two spaces, then its flag or name


def arguments_without_description(help_text: str) -> list[str]:
    """The arguments whose entry in ``help_text`` has no description, beside it or on the lines below."""
    lines = help_text.splitlines()
    bare = []
    for index, line in enumerate(lines):
        entry = _ENTRY.fullmatch(line)
        if entry is None:
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        described_beside = re.search(r"\S\s{2,}\S", line.strip()) is not None
        described_below = re.match(r" {4,}\S", following) is not None
        if not (described_beside or described_below):
            bare.append(entry.group(1))
    return bare


def listed_flags(help_text: str) -> set[str]:
    """The ``--flags`` that the usage line of ``help_text`` offers."""
    usage = help_text.split("\n\n", 1)[0]
    return set(re.findall(r"--[\w][\w-]*", usage))


def flags_with_an_entry(help_text: str) -> set[str]:
    """The ``--flags`` that have an entry of their own in ``help_text``'s argument lists."""
    flags = set()
    for line in help_text.splitlines():
        if _ENTRY.fullmatch(line):
            flags.update(re.findall(r"--[\w][\w-]*", line[2:].split("  ", 1)[0]))  # the flags, not the description
    return flags

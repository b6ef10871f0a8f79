#!/usr/bin/env python3
"""README against what it describes: the server's flags and the tree's layout.

    readme_check.py --server build/server/masknet_server --readme README.md

Flags: every flag `masknet_server --help` lists is a row of the table under
"## Server flags", every row is a flag it lists, and each default in the table
is the default --help shows (the table writes sizes in MiB/GiB and calls a
computed or empty default by what it means, e.g. "(required)" or "the only
model").

Layout: "## Layout" names every top-level folder of the checkout, and every
file of server/ and batching/ (as `server/x.cc`, or `server/x.{h,cc}` for a
pair), and nothing there that does not exist.

Exit 0 when all agree; otherwise 1, naming each disagreement.
"""
import argparse
import os
import re
import subprocess
import sys

_UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}


def help_defaults(server):
    """{flag: default as --help prints it} for the server's own flags (not absl's)."""
    text = subprocess.run([server, "--help"], capture_output=True, text=True, timeout=120).stdout
    own = re.search(r"Flags from \S*server/flags\.cc:\n(.*?)(?:\n  Flags from |\n\n|\Z)", text, re.S)
    if own is None:
        sys.exit(f"readme_check: no 'Flags from .../server/flags.cc' section in {server} --help")
    found = {}
    for entry in re.split(r"\n(?=    --)", own.group(1)):  # one flag each, wrapped over lines
        m = re.fullmatch(r"\s*--(\w+) \(.*\);\s+default: (.*);\s*", entry, re.S)
        if m is None:
            sys.exit(f"readme_check: cannot read this --help entry: {entry!r}")
        found[m.group(1)] = m.group(2)
    return found


def readme_defaults(readme):
    """{flag: default as the README's table writes it}."""
    text = open(readme, encoding="utf-8").read()
    section = re.search(r"^## Server flags\n(.*?)^## ", text, re.S | re.M)
    if section is None:
        sys.exit(f"readme_check: no '## Server flags' section in {readme}")
    table = {}
    for row in re.finditer(r"^\| (`--.*?) \| (.*?) \|", section.group(1), re.M):
        flags = re.findall(r"`--(\w+)`", row.group(1))
        defaults = [d.strip() for d in row.group(2).split(", ")]
        if len(defaults) not in (1, len(flags)):
            sys.exit(f"readme_check: the row of {flags} has {len(defaults)} defaults")
        for i, flag in enumerate(flags):
            table[flag] = defaults[i if len(defaults) > 1 else 0]
    return table


def normalized(value):
    """A default as a comparable value: a number, seconds, a word, or None for empty."""
    value = value.strip().strip("`").strip('"')
    if value == "":
        return None
    if m := re.fullmatch(r"(\d+) (KiB|MiB|GiB)", value):
        return int(m.group(1)) * _UNITS[m.group(2)]
    if re.fullmatch(r"(\d+(\.\d+)?(h|ms|m|s))+", value):
        return sum(float(n) * _SECONDS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", value))
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return float(value)
    return value


def disagreements(helped, documented):
    problems = []
    for flag in sorted(set(helped) - set(documented)):
        problems.append(f"--{flag} is in --help but not in README's table")
    for flag in sorted(set(documented) - set(helped)):
        problems.append(f"--{flag} is in README's table but not in --help")
    for flag in sorted(set(helped) & set(documented)):
        said, shown = documented[flag], helped[flag]
        # A default written as words ("(required)", "the only model", "the
        # CPUs this process may use") stands for an empty or zero one.
        words = isinstance(normalized(said), str) and (" " in said or said.startswith("("))
        if words:
            if normalized(shown) not in (None, 0.0):
                problems.append(f"--{flag}: README says '{said}', --help shows default {shown}")
        elif normalized(said) != normalized(shown):
            problems.append(f"--{flag}: README says default {said}, --help shows {shown}")
    return problems


def layout_problems(readme_text, checkout):
    """What "## Layout" leaves out of, or adds to, the checkout (the files git tracks or would)."""
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", readme_text, re.S | re.M)
    if section is None:
        return ["README has no '## Layout' section"]
    named = set()
    for name in re.findall(r"`([\w./{},-]+)`", section.group(1)):
        if m := re.fullmatch(r"(.*)\.\{(.*)\}", name):
            named.update(f"{m.group(1)}.{ext}" for ext in m.group(2).split(","))
        else:
            named.add(name.rstrip("/"))
    files = subprocess.run(["git", "-C", checkout, "ls-files", "--cached", "--others", "--exclude-standard"], capture_output=True, text=True,
                           check=True).stdout.split()
    folders = {f.split("/")[0] for f in files if "/" in f}
    described = {f for f in files if f.split("/")[0] in ("server", "batching") and not f.endswith("CMakeLists.txt")}
    problems = [f"the top-level folder {d}/ is not in README's Layout" for d in sorted(folders - named)]
    problems += [f"{f} is not in README's Layout" for f in sorted(described - named)]
    problems += [f"README's Layout names {n}, which is not in the checkout" for n in sorted(named)
                 if n.split("/")[0] in ("server", "batching") and "/" in n
                 and not any(f == n or f.startswith(n + ".") for f in files)]  # a stem names its files
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--readme", required=True)
    args = parser.parse_args()
    helped, documented = help_defaults(args.server), readme_defaults(args.readme)
    problems = disagreements(helped, documented)
    with open(args.readme, encoding="utf-8") as f:
        problems += layout_problems(f.read(), os.path.dirname(os.path.abspath(args.readme)))
    for p in problems:
        print(f"readme_check: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"readme_check: {len(helped)} flags, README and --help agree; the Layout names every folder and file it must")


if __name__ == "__main__":
    main()

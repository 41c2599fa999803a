#!/usr/bin/env python3
"""Every `unsafe` block or impl in src/ must be preceded by a `// SAFETY:` comment (within the
comment lines just above it); `unsafe fn` declarations must document `# Safety`. Exit 1 if not."""
import pathlib, re, sys

bad = []
for path in sorted(pathlib.Path(__file__).resolve().parent.parent.joinpath("src").rglob("*.rs")):
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        code = line.split("//")[0]
        if not re.search(r"\bunsafe\b", code):
            continue
        if re.search(r"\bunsafe\s+extern\b", code):
            continue  # a foreign function's type or declaration, not an unsafe block
        if re.search(r"\bunsafe\s+fn\b", code):
            above = "\n".join(lines[max(0, i - 12):i])
            if "# Safety" not in above:
                bad.append(f"{path}:{i + 1}: unsafe fn without a '# Safety' section")
            continue
        # Look upward through the statement's start and the comment block above it.
        j = i
        found = "SAFETY:" in line
        while not found and j > 0 and j > i - 8:
            j -= 1
            prev = lines[j].strip()
            if "SAFETY:" in prev:
                found = True
            elif prev.startswith("//") or prev.endswith(("(", ",", "=", "{", "|")) or prev == "":
                continue
            elif not prev.startswith("//"):
                # one code line above is allowed (e.g. `let x =` split over lines)
                continue
        if not found:
            bad.append(f"{path}:{i + 1}: unsafe without a // SAFETY: comment")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)

#!/usr/bin/env python3
"""check_limits.py -- the size and layering limits of issue 13 on the non-test sources.

    python3 tests/limits/check_limits.py [--exempt FILE]... [-I DIR]...

Three checks over the C files git tracks outside tests/:
  1. no function longer than 120 lines (counted from the body's opening brace to its closing brace,
     both in column 0, as the tree's style writes every function);
  2. no .c or .h file longer than 900 lines;
  3. no include circle among the headers: `#include "x.h"` is resolved against the including file's
     directory, then each -I directory in order (the Makefile's INCS); headers found nowhere (system
     and library headers) are not followed.
An --exempt FILE is reported but not counted (a file that is being rewritten elsewhere); an exempt
file that is already within the limits is named so the exemption can go.

Prints one line per violation, then "check-limits: P passed, F failed, 0 skipped" (one count per
check) and exits 1 if any check failed. Reads files only; runs in well under a second.
"""
import os
import re
import subprocess
import sys

FUNC_MAX = 120
FILE_MAX = 900
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
NAME_RE = re.compile(r'([A-Za-z_]\w*)\s*\(')


def sources():
    """The tracked .c and .h files outside tests/ (outside a git checkout: every such file under the
    current directory but build output and hidden folders)."""
    try:
        out = subprocess.check_output(['git', 'ls-files', '*.c', '*.h'], text=True, stderr=subprocess.DEVNULL)
        files = out.split()
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, subdirs, names in os.walk('.'):
            subdirs[:] = sorted(s for s in subdirs if not s.startswith(('.', 'build')))
            files += [os.path.normpath(os.path.join(d, n)) for n in sorted(names) if n.endswith(('.c', '.h'))]
    return [f for f in files if not f.startswith('tests/')]


def long_functions(path, lines):
    """(name, first line, length) of each function body longer than FUNC_MAX lines."""
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith('{'):
            j = i - 1  # the signature: back to its first line (continuations are indented)
            while j > 0 and (not lines[j] or lines[j][0] in ' \t'):
                j -= 1
            m = NAME_RE.search(lines[j]) if j >= 0 else None
            k = i + 1
            while k < len(lines) and not lines[k].startswith('}'):
                k += 1
            n = k - i + 1
            if n > FUNC_MAX:
                found.append((m.group(1) if m else '?', j + 1, n))
            i = k
        i += 1
    return found


def resolve(name, from_file, incdirs):
    for d in [os.path.dirname(from_file)] + incdirs:
        p = os.path.normpath(os.path.join(d, name))
        if os.path.isfile(p):
            return p
    return None


def include_circles(headers, incdirs):
    """Each circle once, as a list of headers that ends where it starts."""
    edges = {}
    for h in headers:
        deps = []
        with open(h, errors='replace') as f:
            for line in f:
                m = INCLUDE_RE.match(line)
                if m:
                    p = resolve(m.group(1), h, incdirs)
                    if p and p in headers:
                        deps.append(p)
        edges[h] = deps
    circles, seen, state = [], set(), {}
    for root in sorted(headers):
        if state.get(root):
            continue
        stack = [(root, iter(edges[root]))]
        path, state[root] = [root], 1  # 1: on the path, 2: done
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                c = path[path.index(nxt):] + [nxt]
                key = frozenset(c)
                if key not in seen:
                    seen.add(key)
                    circles.append(c)
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(edges[nxt])))
    return circles


def main(argv):
    exempt, incdirs, i = set(), [], 0
    while i < len(argv):
        a = argv[i]
        if a == '--exempt' and i + 1 < len(argv):
            exempt.add(os.path.normpath(argv[i + 1]))
            i += 1
        elif a.startswith('-I'):
            incdirs.append(a[2:] if len(a) > 2 else argv[i + 1])
            i += 0 if len(a) > 2 else 1
        else:
            print('usage: check_limits.py [--exempt FILE]... [-I DIR]...', file=sys.stderr)
            return 2
        i += 1
    files = sources()
    bad_funcs, bad_files = [], []
    for path in files:
        with open(path, errors='replace') as f:
            lines = f.read().split('\n')
        nlines = len(lines) - 1 if lines and lines[-1] == '' else len(lines)
        funcs = long_functions(path, lines)
        over = nlines > FILE_MAX
        if path in exempt:
            what = [f'{name} at line {n} is {length} lines' for name, n, length in funcs]
            if over:
                what.append(f'{nlines} lines')
            print(f'exempt: {path}: ' + ('; '.join(what) if what else 'within the limits: drop the exemption'))
            continue
        bad_funcs += [(path, name, n, length) for name, n, length in funcs]
        if over:
            bad_files.append((path, nlines))
    for path, name, n, length in bad_funcs:
        print(f'{path}:{n}: function {name} is {length} lines (at most {FUNC_MAX})')
    for path, nlines in bad_files:
        print(f'{path}: {nlines} lines (at most {FILE_MAX} in a non-test source file)')
    circles = include_circles({f for f in files if f.endswith('.h')}, incdirs)
    for c in circles:
        print('include circle: ' + ' -> '.join(c))
    failed = (len(bad_funcs) > 0) + (len(bad_files) > 0) + (len(circles) > 0)
    print(f'check-limits: {3 - failed} passed, {failed} failed, 0 skipped')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""irikit CI: no import circles between source files (issue 16).

Builds the file-level import graph of every crate's `src/` (generated code, `src/bin/` and
`tests/` are leaves and left out) and prints its strongly connected components of more than one
file, then `N import circles`. An edge a -> b: file a names a path (`use` or inline) starting
with `crate::`, `super::` or `self::` that resolves into module file b of the same crate.
`mod x;` declarations are not edges; `pub use` re-exports are. Exits 0 either way; CI checks
the last line."""
import os, re, sys, subprocess
root = sys.argv[1] if len(sys.argv) > 1 else '.'
os.chdir(root)
files = subprocess.check_output(['git', 'ls-files', '*.rs'], text=True).split()
files = [f for f in files if '/generated/' not in f and os.path.exists(f)]
# crate roots: dirs with Cargo.toml containing src/
crates = {}
for f in files:
    m = re.match(r'(.*?)/?src/', f)
    if m is None: continue
    cdir = m.group(1)
    crates.setdefault(cdir, []).append(f)
def modpath(cdir, f):
    rel = f[len(cdir)+1 if cdir else 0:]
    rel = rel[len('src/'):]
    if rel.startswith('bin/'):
        return None
    parts = rel[:-3].split('/')
    if parts[-1] in ('mod', 'lib', 'main'): parts = parts[:-1]
    return tuple(parts)
pathre = re.compile(r'\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)')
usegroup = re.compile(r'\buse\s+(crate|super|self)::\{([^;]*)\};', re.S)
edges = {}
for cdir, fs in crates.items():
    mods = {}
    for f in fs:
        mp = modpath(cdir, f)
        if mp is not None: mods[mp] = f
    for f in fs:
        mp = modpath(cdir, f)
        if mp is None: continue
        src = open(f).read()
        src = re.sub(r'//[^\n]*', '', src)
        isdir = f.endswith(('mod.rs', 'lib.rs', 'main.rs'))
        here = mp if isdir else mp[:-1]   # the module whose children are resolved with self::
        # strip #[cfg(test)] mod tests { ... } blocks roughly: ignore content after '#[cfg(test)]\nmod tests'
        i = src.find('#[cfg(test)]\nmod tests')
        if i >= 0: src = src[:i]
        targets = []
        def add(kind, rest):
            segs = [s for s in rest.split('::') if s]
            if kind == 'crate': base = ()
            elif kind == 'self': base = mp
            else:
                base = mp[:-1]
                while segs and segs[0] == 'super': base = base[:-1]; segs = segs[1:]
            path = tuple(base) + tuple(segs)
            for n in range(len(path), -1, -1):
                if path[:n] in mods:
                    targets.append(mods[path[:n]]); return
        for m in pathre.finditer(src): add(m.group(1), m.group(2))
        for m in usegroup.finditer(src):
            for item in re.split(r',', m.group(2)):
                item = item.strip().split(' as ')[0].strip()
                if not item or item.startswith('{'): continue
                add(m.group(1), '::' + item.split('::{')[0])
        for t in targets:
            if t != f: edges.setdefault(f, set()).add(t)
# tarjan
sys.setrecursionlimit(10000)
index = {}; low = {}; stack = []; on = set(); sccs = []; c = [0]
def strong(v):
    index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
for v in list(edges):
    if v not in index: strong(v)
for s in sccs:
    print(f'circle of {len(s)} files:')
    for f in s:
        print('   ', f, '->', ', '.join(sorted(t for t in edges.get(f, ()) if t in s)))
print(f'{len(sccs)} import circles')

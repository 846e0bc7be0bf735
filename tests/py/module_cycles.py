"""Module cycles of a Rust crate: which modules import each other, directly or through others.

Usage: module_cycles.py SRC_DIR... ; prints each strongly connected set of modules with the
imports between them, and exits 1 if there is any. An import is a `crate::`, `super::` or
`self::` path in code (comments and `#[cfg(test)] mod tests` are skipped); a module's own
submodules and parents are not counted as cycles.
"""
import os,re,sys

def cycles(root):
    mods={}
    for dp,dn,fn in os.walk(root):
        for f in fn:
            if not f.endswith('.rs'): continue
            p=os.path.join(dp,f); rel=os.path.relpath(p,root)[:-3]
            parts=rel.split('/')
            if parts[-1] in ('mod','lib','main'): parts=parts[:-1]
            mods['::'.join(parts)]=p
    def resolve(cur, path):
        # path like crate::a::b::C or super::x
        segs=path.split('::')
        if segs[0]=='crate': base=[]; segs=segs[1:]
        elif segs[0]=='super':
            base=cur.split('::') if cur else []
            # file module: super goes to parent
            base=base[:-1]
            segs=segs[1:]
            while segs and segs[0]=='super': base=base[:-1]; segs=segs[1:]
        elif segs[0]=='self': base=cur.split('::') if cur else []; segs=segs[1:]
        else: return None
        # longest prefix that is a module
        best=None
        for i in range(len(segs),0,-1):
            m='::'.join(base+segs[:i])
            if m in mods: best=m; break
        if best is None and base: best='::'.join(base) if '::'.join(base) in mods else None
        return best
    edges={m:set() for m in mods}
    for m,p in mods.items():
        src=open(p).read()
        # strip test modules roughly
        src=re.split(r"#\[cfg\(test\)\]\s*mod tests",src)[0]
        src=re.sub(r"//[^\n]*","",src)
        for u in re.findall(r'\b((?:crate|super|self)(?:::\w+)+)',src):
            t=resolve(m,u)
            if t and t!=m and not t.startswith(m+'::') and not m.startswith(t+'::') if t else False:
                edges[m].add(t)
    # find cycles between modules (strongly connected comps)
    idx={};low={};st=[];on=set();res=[];i=[0]
    sys.setrecursionlimit(10000)
    def sc(v):
        idx[v]=low[v]=i[0];i[0]+=1;st.append(v);on.add(v)
        for w in edges[v]:
            if w not in idx: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: res.append(comp)
    for v in edges:
        if v not in idx: sc(v)
    return [(sorted(c), sorted((a,b) for a in c for b in edges[a] if b in c)) for c in res]

if __name__ == "__main__":
    found = False
    for root in sys.argv[1:]:
        for comp, imports in cycles(root):
            found = True
            print(f"{root}: {' <-> '.join(comp)}")
            for a, b in imports:
                print(f"    {a} -> {b}")
    sys.exit(1 if found else 0)

#!/usr/bin/env python3
"""Tables of where a FUSE daemon spends a read, for bench/profile_mount.sh.

    profile_report.py perf SCRIPT.txt --requests N [--bytes B] [--seconds S] [--label TEXT]
    profile_report.py strace TRACE.txt --requests N [--label TEXT]
    profile_report.py locks SCRIPT.txt --requests N [--label TEXT]

`perf`: SCRIPT.txt is `perf script -F comm,tid,period,ip,sym,dso` of a
`perf record --call-graph dwarf -p DAEMON` (call chains needed). Every
sample is put in one group by its whole chain, not its leaf alone (a kernel
copy under pread64 is our copy of the sources; under writev to /dev/fuse it
is the transport's copy into the reader's pages):

  transport        the kernel's /dev/fuse work: the reply writev (the copy
                   into the reader's pages), the request read (waiting,
                   wakeups), and libfuse in user space
  our copy         pread64 of sources into the request buffer, the gather's
                   memcpy from mapped sources and the page faults it takes,
                   dtype conversion
  locks            pthread mutexes (ShardFS's `Locked`), futex calls, Swift Mutex
  other syscalls   every other system call, by name (fstat, cachestat,
                   madvise, rt_sigprocmask, ...)
  Swift runtime,   retain/release, allocation (swift_allocObject, malloc,
                   free), exclusivity checks (swift_beginAccess), other
                   runtime calls, the standard library's generic code
  ShardFS code     the rest of our own code (self time), by function
  other            kernel work outside a system call (faults, scheduling,
                   interrupts) and anything else

Then the top symbols by self time, and our functions (ShardFS, swift-system,
the C gather helpers) by inclusive time: the share of samples with the
function anywhere on the stack. "µs/request" is sampled CPU time divided by
the read requests served meanwhile (the daemon's readsServed).

Swift names are demangled with `swift-demangle` (PATH, or $SWIFT_DEMANGLE)
when it is there, and simplified (`specialized`, closures and argument
lists dropped: a closure counts as its function).

`locks`: SCRIPT.txt is `perf script` of `perf record -e probe_libc:pthread_mutex_lock
--call-graph dwarf -p DAEMON` (a uprobe on libc's pthread_mutex_lock): every
lock taken, per read request, by the ShardFS function that took it.

`strace`: TRACE.txt is `strace -f -o TRACE.txt -p DAEMON` during a short
read. Threads that write replies (writev) are the FUSE workers; counts per
read request, for them and for the other threads (prefetcher, watcher).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys

TRANSPORT, OURCOPY, LOCKS, SYSCALLS, RUNTIME, OURCODE, OTHER = (
    "transport (kernel /dev/fuse, libfuse)", "our copy", "locks", "other syscalls",
    "Swift runtime, allocation", "ShardFS code (self)", "other")
GROUP_ORDER = [TRANSPORT, OURCOPY, LOCKS, SYSCALLS, RUNTIME, OURCODE, OTHER]

COPY_LEAVES = re.compile(r"^(__pi_memcpy|memcpy|_copy_(to|from)_iter|copy_(user|page)_\w*|rep_movs_alternative|"
                         r"copy_mc_\w*|__memcpy|memcpy_orig|fuse_copy_do|copyin|copyout|_copy_from_user|_copy_to_user)$")
USER_MEMCPY = re.compile(r"^(__)?mem(cpy|move)(_\w+)?(@@\S+)?$|^__memmove_\w+|^__memcpy_\w+")
RETAIN = re.compile(r"^(swift_(retain|release|bridgeObjectRetain|bridgeObjectRelease|unknownObjectRetain|unknownObjectRelease|"
                    r"nonatomic_\w+|tryRetain|retain_n|release_n|isUniquelyReferenced\w*|setDeallocating)|_swift_release_dealloc)")
ALLOC = re.compile(r"^(swift_(allocObject|deallocObject|deallocClassInstance|slowAlloc|slowDealloc|allocBox|deallocBox|"
                   r"deallocUninitializedObject|allocEmptyBox)|malloc|free|cfree|calloc|realloc|_int_malloc|_int_free\w*|"
                   r"__libc_(malloc|free|calloc|realloc|memalign)|malloc_consolidate|tcache_\w+|aligned_alloc|posix_memalign|"
                   r"_mid_memalign|__posix_memalign|unlink_chunk\w*|sysmalloc|_int_memalign)(@@\S+)?$")
ACCESS = re.compile(r"^swift_(beginAccess|endAccess)$")
MUTEX_USER = re.compile(r"^(pthread_mutex_(lock|unlock|trylock)|___pthread_mutex_\w+|__pthread_mutex_\w+|__lll_lock_\w+|"
                        r"lll_mutex_\w+|__GI___pthread_mutex_\w+|pthread_spin_\w+)(@@\S+)?$")
SWIFT_MUTEX = re.compile(r"Mutex|_MutexHandle|os_unfair_lock")
SYSCALL_FRAME = re.compile(r"^__(?:x64|ia32|se)_sys_(\w+)$|^__do_sys_(\w+)$|^ksys_(\w+)$")
# Where the kernel inlines or tail-calls the __x64_sys_ frame away.
SYSCALL_BODY = {"do_writev": "writev", "do_readv": "readv", "do_preadv": "preadv", "do_madvise": "madvise",
                "do_futex": "futex", "do_sys_openat2": "openat", "do_sys_poll": "poll", "do_epoll_wait": "epoll_wait"}
WRAPPERS = {"writev": "writev", "pread64": "pread64", "pread": "pread64", "lll_lock_wake": "futex",
            "lll_lock_wait": "futex", "futex": "futex", "madvise": "madvise", "sigprocmask": "rt_sigprocmask",
            "pthread_sigmask": "rt_sigprocmask", "futex_wake": "futex", "futex_wait": "futex", "futex_abstimed_wait_common": "futex",
            "lll_lock_wait_private": "futex", "lll_lock_wake_private": "futex", "sigsetjmp": "rt_sigprocmask", "fstat": "newfstatat",
            "fstatat": "newfstatat", "read": "read", "cachestat": "cachestat", "mmap": "mmap", "munmap": "munmap"}
FUSE_WRITE = {"fuse_dev_write", "fuse_dev_do_write", "fuse_dev_splice_write"}
FUSE_READ = {"fuse_dev_read", "fuse_dev_do_read", "fuse_dev_splice_read"}
# Functions the hot-path work names: their inclusive share is listed even when small.
WATCHED = ["opRead", "MountedFileSystem.read", "MountedFileSystem.takeContext", "MountedFileSystem.sourceProblem",
           "ExtentReader.read", "ExtentReader.readSource", "ExtentReader.gather", "ExtentReader.open",
           "ExtentReader.readConverted", "OpenSourceFile.read", "SourceFile.open", "OpenFiles.cached",
           "SourceWatch.check", "SourceFile.change", "OpenSourceFile.change", "Prefetcher.read", "MadeFiles.file",
           "MappedPages.touched", "OpenSourceFile.prefetch", "shardfs_populate", "all_cached", "shardfs_gather_rows",
           "shardfs_release_mapped", "FUSEServer.readStarted", "FUSEServer.readEnded", "shardfs_bufvec_create",
           "fuse_reply_data", "VirtualFile.pieces", "Locked.withLock"]


def demangler(symbols):
    """Maps mangled Swift symbols to simplified names."""
    tool = os.environ.get("SWIFT_DEMANGLE") or shutil.which("swift-demangle")
    mangled = sorted(s for s in symbols if s.startswith(("$s", "_$s", "$S")))
    names = {}
    if tool and mangled:
        try:
            out = subprocess.run([tool, "--simplified", "--compact"], input="\n".join(mangled) + "\n",
                                 capture_output=True, text=True, check=True).stdout.splitlines()
            if len(out) == len(mangled):
                names = dict(zip(mangled, out))
        except (OSError, subprocess.CalledProcessError):
            pass
    return {s: simplify(names.get(s, s)) for s in symbols}


def simplify(name):
    """`specialized closure #1 in static X.f<A>(_:b:)` -> `X.f`."""
    prev = None
    while prev != name:
        prev = name
        name = re.sub(r"^(specialized |generic specialization <.*?> of |function signature specialization <.*?> of |"
                      r"merged |partial apply for |reabstraction thunk helper .*? from |outlined \w+ of |"
                      r"(implicit )?closure #\d+ (\(.*?\) )?in |static |implicit |@objc |thunk for )", "", name)
    name = re.sub(r"\(.*\)$", "", name)            # argument labels
    # generic parameters: innermost first
    while True:
        stripped = re.sub(r"<[^<>]*>", "", name)
        if stripped == name:
            break
        name = stripped
    name = re.sub(r" in \S+$", "", name)
    return name.strip() or prev


class Frame:
    __slots__ = ("sym", "dso", "kernel")

    def __init__(self, sym, dso, kernel):
        self.sym, self.dso, self.kernel = sym, dso, kernel


def read_samples(path):
    """Yields (tid, period, [Frame leaf..root]) from perf script output."""
    head = None
    frames = []
    pending = []  # inlined entries waiting for their address group's dso
    last_addr = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if head:
                    frames.extend(pending)
                    yield head[0], head[1], frames
                head, frames, pending, last_addr = None, [], [], None
                continue
            if not line.startswith("\t"):  # a sample's header (frames are indented by a tab)
                parts = line.split()
                # comm may hold spaces: tid and period are the last two numbers
                nums = [p for p in parts if p.isdigit()]
                head = (nums[-2] if len(nums) >= 2 else "?", int(nums[-1]) if nums else 1)
                continue
            m = re.match(r"\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$", line)
            if not m:
                continue
            addr, sym, dso = m.groups()
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            kernel = dso.startswith("[kernel") or addr.startswith("ffffffff")
            if addr != last_addr:
                frames.extend(pending)
                pending = []
                last_addr = addr
            if dso == "inlined":
                pending.append(Frame(sym, None, kernel))
            else:
                for p in pending:
                    p.dso = dso
                frames.extend(pending)
                pending = []
                frames.append(Frame(sym, dso, kernel))
    if head:
        frames.extend(pending)
        yield head[0], head[1], frames


def is_ours(frame, binary):
    s = frame.sym
    if s.startswith(("$s7ShardFS", "$s13SystemPackage", "shardfs_", "all_cached")):
        return True
    return frame.dso is not None and os.path.basename(frame.dso) == binary and not s.startswith("[unknown]")


def classify(frames, name, binary):
    """(group, sub-group, context) for one sample's chain."""
    kernel = [f for f in frames if f.kernel]
    user = [f for f in frames if not f.kernel]
    ksyms = {f.sym for f in kernel}
    usyms = [name.get(f.sym, f.sym) for f in user]
    context = caller(user, name, binary)
    syscall = None
    for f in kernel:
        m = SYSCALL_FRAME.match(f.sym)
        if m:
            syscall = next(g for g in m.groups() if g)
            break
        if f.sym in SYSCALL_BODY:
            syscall = SYSCALL_BODY[f.sym]
            break
    if syscall is None and any(f.sym.startswith("entry_SYSCALL") for f in kernel):
        # Entry/exit work only: named by the libc wrapper that made the call.
        wrapper = next((f.sym for f in user if not f.sym.startswith("[unknown]")), "?")
        while True:
            stripped = re.sub(r"^(__GI_|__libc_|_)", "", wrapper)
            if stripped == wrapper:
                break
            wrapper = stripped
        wrapper = re.sub(r"(64)?(@@\S+)?$", "", wrapper) if wrapper != "pread64" else wrapper
        if wrapper == "syscall" and any(f.sym == "all_cached" for f in user):
            wrapper = "cachestat"
        syscall = WRAPPERS.get(wrapper, "unnamed (from " + wrapper + ")")
    in_gather = any(s.startswith("shardfs_gather") or "ExtentReader.gather" in s for s in usyms)
    leaf = frames[0] if frames else Frame("?", "?", False)
    leafname = name.get(leaf.sym, leaf.sym)
    conversion = any("DTypeConversion" in s or s.startswith("shardfs_convert") for s in usyms)

    if kernel:
        if ksyms & FUSE_WRITE:
            if COPY_LEAVES.match(leaf.sym):
                return TRANSPORT, "reply writev to /dev/fuse: the copy into the reader's pages (fuse_copy_*)", context
            if leaf.sym.startswith(("_raw_spin", "__raw_callee_save___pv_queued_spin", "native_queued_spin", "queued_spin")):
                return TRANSPORT, "reply writev to /dev/fuse: spin locks (fuse_copy_fill, the request's lock)", context
            if leaf.sym.startswith(("gup_", "__get_user_pages", "pin_user_pages", "iov_iter_get_pages", "follow_page")):
                return TRANSPORT, "reply writev to /dev/fuse: pinning the reader's pages (gup)", context
            return TRANSPORT, "reply writev to /dev/fuse: the rest (waking the reader, ending the request)", context
        if ksyms & FUSE_READ or (syscall == "read" and any(f.dso and "libfuse3" in f.dso for f in user)):
            return TRANSPORT, "request read on /dev/fuse (waiting, wakeups, copying the request)", "-"
        if syscall == "writev":
            return TRANSPORT, "reply writev to /dev/fuse: the rest (waking the reader, ending the request)", context
        if syscall == "pread64":
            if "asm_exc_page_fault" in ksyms:
                return OURCOPY, "pread64: page faults on the request buffer (first touch)", context
            return OURCOPY, "pread64 of sources into the request buffer (filemap_read, copy_page_to_iter)", context
        if syscall == "futex":
            return LOCKS, "futex (lock waits and wakes, in the kernel)", context
        if syscall:
            return SYSCALLS, syscall, context
        if "asm_exc_page_fault" in ksyms or "exc_page_fault" in ksyms:
            if in_gather:
                return OURCOPY, "gather: page faults on the mapped sources", context
            if conversion:
                return OURCOPY, "dtype conversion: page faults", context
            return OTHER, "kernel: page faults elsewhere (" + (usyms[0] if usyms else "?") + ")", context
        return OTHER, "kernel outside a system call (" + leaf.sym + ")", context
    # user space leaf
    if conversion:
        return OURCOPY, "dtype conversion", context
    if USER_MEMCPY.match(leaf.sym) or leaf.sym.startswith("shardfs_gather"):
        if in_gather:
            return OURCOPY, "gather: memcpy from mapped sources (shardfs_gather_rows)", context
        return OURCOPY, "memcpy elsewhere (" + context + ")", context
    if MUTEX_USER.match(leaf.sym):
        return LOCKS, "pthread mutex lock/unlock (our Locked, libfuse's lists)", context
    if SWIFT_MUTEX.search(leafname):
        return LOCKS, "Swift Mutex / os_unfair_lock", context
    if RETAIN.match(leaf.sym):
        return RUNTIME, "retain/release", context
    if ALLOC.match(leaf.sym):
        return RUNTIME, "allocation (swift_allocObject, malloc, free)", context
    if ACCESS.match(leaf.sym):
        return RUNTIME, "exclusivity checks (swift_beginAccess/endAccess)", context
    if leaf.sym.startswith("swift_") or leaf.sym.startswith("_swift_"):
        return RUNTIME, "other runtime calls (" + leaf.sym + ")", context
    if leaf.dso and "libswiftCore" in leaf.dso:
        return RUNTIME, "standard library generic code (libswiftCore)", context
    if leaf.dso and "libfuse3" in leaf.dso:
        return TRANSPORT, "libfuse in user space (request parsing, reply building)", "-"
    if is_ours(leaf, binary):
        return OURCODE, leafname, context
    if re.match(r"^(__GI_+)?(__libc_)?(writev|read)$", leaf.sym) and any(f.dso and "libfuse3" in f.dso for f in user):
        return TRANSPORT, "libfuse in user space (request parsing, reply building)", context
    if not any(is_ours(f, binary) for f in user) and any(f.dso and "libfuse3" in f.dso for f in user):
        return TRANSPORT, "libfuse in user space (request parsing, reply building)", "-"
    return OTHER, "user space: " + leafname + " (" + os.path.basename(leaf.dso or "?") + ")", context


def caller(user, name, binary):
    """The nearest of our frames to the leaf, as "X" (a ShardFS function) or
    "X ← Y" (X a library or standard-library function built into our binary,
    Y the nearest ShardFS function); Locked.withLock gives way to its caller."""
    first = None
    for f in user:
        if not is_ours(f, binary):
            continue
        n = name.get(f.sym, f.sym)
        if n.startswith("Locked.withLock") or n.startswith("$defer"):
            continue
        shardfs = f.sym.startswith(("$s7ShardFS", "shardfs_", "all_cached"))
        if shardfs:
            return f"{first} ← {n}" if first and first != n else n
        if first is None:
            first = n
    return first or "-"


def thread_role(frames, name):
    syms = [name.get(f.sym, f.sym) for f in frames]
    if any(s.startswith("opRead") for s in syms):
        return "in the read handler (opRead)"
    if any(s.startswith("Prefetcher") for s in syms):
        return "prefetcher threads"
    if any(s.startswith(("SourceWatch", "FUSEServer.startSourceWatcher")) for s in syms):
        return "source watcher thread"
    if any(f.sym in ("fuse_dev_read", "fuse_dev_do_read", "fuse_dev_write", "fuse_dev_do_write") for f in frames) or \
            any(f.dso and "libfuse3" in f.dso for f in frames):
        return "libfuse loop, outside the read handler (receiving requests, other operations)"
    return "other"


def pct(n, total):
    return f"{100.0 * n / total:.1f}%" if total else "-"


def per_request(ns, requests):
    return f"{ns / 1000.0 / requests:.1f}" if requests else "-"


def perf_report(args):
    samples = list(read_samples(args.file))
    if not samples:
        sys.exit(f"profile_report: no samples in {args.file}")
    symbols = {f.sym for _, _, fr in samples for f in fr}
    name = demangler(symbols)
    total = sum(p for _, p, _ in samples)
    groups = collections.Counter()
    subs = collections.Counter()
    contexts = collections.defaultdict(collections.Counter)
    selfsym = collections.Counter()
    inclusive = collections.Counter()
    watched_other = collections.Counter()
    roles = collections.Counter()
    for tid, period, frames in samples:
        group, sub, context = classify(frames, name, args.binary)
        groups[group] += period
        subs[(group, sub)] += period
        contexts[(group, sub)][context] += period
        leaf = frames[0] if frames else Frame("?", "?", False)
        selfsym[(name.get(leaf.sym, leaf.sym), os.path.basename(leaf.dso or ("[kernel]" if leaf.kernel else "(inlined)")))] += period
        seen = set()
        for f in frames:
            if f.kernel:
                continue
            n = name.get(f.sym, f.sym)
            if n in seen:
                continue
            if is_ours(f, args.binary):
                seen.add(n)
                inclusive[n] += period
            elif n in WATCHED:
                seen.add(n)
                watched_other[n] += period
        roles[thread_role(frames, name)] += period

    req = args.requests
    out = []
    label = f" ({args.label})" if args.label else ""
    out.append(f"#### Where the daemon's CPU goes{label}")
    out.append("")
    line = f"{len(samples)} samples, {total / 1e9:.2f} s of daemon CPU sampled; {req} read requests served"
    if req:
        line += f": {total / 1e3 / req:.0f} µs of CPU per request"
    if args.bytes and args.seconds:
        line += f"; {args.bytes / 1e9:.2f} GB in {args.seconds:.2f} s under perf ({args.bytes / args.seconds / 1e9:.2f} GB/s)"
    out.append(line)
    out.append("")
    out.append("| group | where | share of daemon CPU | µs per request | called from (ours, top 3) |")
    out.append("|---|---|---:|---:|---|")
    for g in GROUP_ORDER:
        if not groups[g]:
            continue
        out.append(f"| **{g}** | | **{pct(groups[g], total)}** | **{per_request(groups[g], req)}** | |")
        rows = sorted(((n, s) for (gg, s), n in subs.items() if gg == g), reverse=True)
        shown = 0
        rest = 0
        for n, s in rows:
            if shown < args.rows and n / total >= args.min_share / 100:
                ctx = contexts[(g, s)]
                callers = ", ".join(f"{c} {pct(v, n)}" for c, v in ctx.most_common(3) if c != "-") or "-"
                out.append(f"| | {s} | {pct(n, total)} | {per_request(n, req)} | {callers} |")
                shown += 1
            else:
                rest += n
        if rest:
            out.append(f"| | (the rest of this group) | {pct(rest, total)} | {per_request(rest, req)} | |")
    out.append("")
    out.append("| thread / role | share of daemon CPU |")
    out.append("|---|---:|")
    for r, n in roles.most_common():
        out.append(f"| {r} | {pct(n, total)} |")
    out.append("")
    if args.brief:
        out = out[:-(len(roles) + 3)]  # no thread table either
    out.append(f"Top {args.top} symbols by self time:")
    out.append("")
    out.append("| self | symbol | object |")
    out.append("|---:|---|---|")
    for (s, d), n in selfsym.most_common(args.top):
        out.append(f"| {pct(n, total)} | `{s}` | {d} |")
    if args.brief:
        print("\n".join(out))
        return
    out.append("")
    out.append(f"Our functions by inclusive time (on the stack), top {args.top}:")
    out.append("")
    out.append("| inclusive | µs per request | function |")
    out.append("|---:|---:|---|")
    for s, n in inclusive.most_common(args.top):
        out.append(f"| {pct(n, total)} | {per_request(n, req)} | `{s}` |")
    out.append("")
    out.append("The hot path's functions by inclusive time (0 where no sample had them on the stack):")
    out.append("")
    out.append("| inclusive | µs per request | function |")
    out.append("|---:|---:|---|")
    for s in WATCHED:
        n = inclusive.get(s, 0) + watched_other.get(s, 0)
        out.append(f"| {pct(n, total)} | {per_request(n, req)} | `{s}` |")
    print("\n".join(out))


def locks_report(args):
    """Calls of a probed function (pthread_mutex_lock) per read request, by caller."""
    samples = list(read_samples(args.file))
    symbols = {f.sym for _, _, fr in samples for f in fr}
    name = demangler(symbols)
    sites = collections.Counter()
    roles = collections.Counter()
    for _, _, frames in samples:
        user = [f for f in frames if not f.kernel]
        role = thread_role(frames, name)
        roles[role] += 1
        # The first frame past libc's: ours, or libfuse's own locking.
        first = next((f for f in user if not (f.dso and "libc.so" in f.dso) and "pthread_mutex" not in f.sym), None)
        if first is not None and first.dso and "libfuse3" in first.dso:
            named = next((f.sym for f in user if f.dso and "libfuse3" in f.dso and not f.sym.startswith("[unknown]")), None)
            ours = caller(user, name, args.binary)
            site = "libfuse" + (f" ({named})" if named else "") + (f" ← {ours}" if ours != "-" else "")
        else:
            site = caller(user, name, args.binary)
            # and the ShardFS function that called that one
            chain = [name.get(f.sym, f.sym) for f in user if f.sym.startswith("$s7ShardFS")]
            chain = [c for c in chain if not c.startswith(("Locked.withLock", "$defer"))]
            if len(chain) > 1:
                nxt = next((c for c in chain[1:] if c != chain[0]), None)
                if nxt:
                    site += f" ← {nxt}"
        sites[(site, "read handler" if role.startswith("in the read") else role)] += 1
    req = args.requests
    label = f" ({args.label})" if args.label else ""
    print(f"#### {args.what} calls per read request{label}")
    print()
    total = args.total or len(samples)
    line = f"{total} calls while {req} read requests were served" + (f": {total / req:.2f} per request" if req else "")
    if args.total and args.total != len(samples):
        line += (f" ({len(samples)} of them recorded with their callers, the rest lost by a busy machine:"
                 f" the callers' counts are scaled by {args.total / len(samples):.2f})")
    print(line)
    print()
    scale = total / len(samples) if samples else 1
    print(f"| per request | called from (the nearest ShardFS function ← its caller) | thread |")
    print("|---:|---|---|")
    for (site, role), n in sites.most_common(args.top):
        n *= scale
        print(f"| {n / req:.2f} | `{site}` | {role} |" if req else f"| {n:.0f} | `{site}` | {role} |")


def strace_report(args):
    calls = collections.defaultdict(collections.Counter)
    with open(args.file, errors="replace") as f:
        for line in f:
            m = re.match(r"(\d+)\s+(?:\d[\d:.]*\s+)?([a-z_0-9]+)\(", line)
            if m:
                calls[m.group(1)][m.group(2)] += 1
    # strace before 6.5 has no name for cachestat (451 = 0x1c3)
    rename = {"syscall_0x1c3": "cachestat", "syscall_451": "cachestat"}
    kinds = collections.defaultdict(collections.Counter)
    threads = collections.Counter()
    for tid, c in calls.items():
        if c["writev"] or c["write"]:
            kind = "FUSE worker threads"
        elif c["poll"] or c["ppoll"]:
            kind = "source watcher"
        else:
            kind = "other threads (prefetcher)"
        for s, n in c.items():
            kinds[kind][rename.get(s, s)] += n
        threads[kind] += 1
    req = args.requests
    label = f" ({args.label})" if args.label else ""
    print(f"#### System calls per read request{label}")
    print()
    print(f"{req} read requests served during the trace (strace -f; counts are exact, times under strace are not)")
    print()
    order = ["FUSE worker threads", "other threads (prefetcher)", "source watcher"]
    present = [k for k in order if k in kinds]
    print("| system call | " + " | ".join(f"{k} ({threads[k]}): per request" for k in present) + " |")
    print("|---|" + "---:|" * len(present))
    names = collections.Counter()
    for k in present:
        names.update(kinds[k])
    for s, _ in names.most_common():
        print(f"| {s} | " + " | ".join(f"{kinds[k][s] / req:.2f}" if req and kinds[k][s] else "-" for k in present) + " |")
    tot = [sum(kinds[k].values()) for k in present]
    print("| **all** | " + " | ".join(f"**{t / req:.2f}**" if req else "-" for t in tot) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["perf", "strace", "locks"])
    p.add_argument("--what", default="pthread_mutex_lock", help="locks: the probed function's name, for the title")
    p.add_argument("--total", type=int, default=0, help="locks: the exact count (perf stat), when the record lost some")
    p.add_argument("file")
    p.add_argument("--requests", type=int, default=0, help="read requests served during the recording")
    p.add_argument("--bytes", type=float, default=0)
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--label", default="")
    p.add_argument("--binary", default="shardfs", help="file name of the daemon's executable (its own frames)")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--rows", type=int, default=8, help="sub-rows per group at most")
    p.add_argument("--min-share", type=float, default=0.2, help="sub-rows below this %% of the CPU go to the group's rest")
    p.add_argument("--brief", action="store_true", help="the group table and the top symbols only")
    args = p.parse_args()
    if args.mode == "perf":
        perf_report(args)
    elif args.mode == "locks":
        locks_report(args)
    else:
        strace_report(args)


if __name__ == "__main__":
    main()

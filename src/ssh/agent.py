# mcpsh exec agent, Python edition: the same frames and behaviour as
# agent.pl (read that file's header), preferred when the host has Python 3.8
# or newer because it starts commands with posix_spawn (vfork, no copy of
# the interpreter's memory; about half of what Perl's fork costs per
# command). Started as `python3 -c THIS PERL_AGENT`; an older Python hands
# over to the Perl agent. Written for any Python 3 to parse, so that the
# version check runs.
import os, sys
if sys.version_info < (3, 8) or not hasattr(os, 'posix_spawn'):
    os.execvp('perl', ['perl', '-e', sys.argv[1]])
import errno, select, signal, struct, time

sr, sw = os.pipe()
for fd in (sr, sw):
    os.set_blocking(fd, False)
signal.signal(signal.SIGCHLD, lambda s, f: None)
signal.set_wakeup_fd(sw)
jobs = {}
bypid = {}
out = []


def put(t, jid, p):
    j = jobs.get(jid)
    if t != b'P' and j is not None and j['pp'] is not None:
        j['pp'] = None
        put(b'P', jid, str(j['pid']).encode())
    out.append(struct.pack('>IcI', 5 + len(p), t, jid) + p)


def flush():
    data = b''.join(out)
    del out[:]
    while data:
        try:
            n = os.write(1, data)
        except BlockingIOError:
            poller = select.poll()
            poller.register(1, select.POLLOUT)
            poller.poll()
            continue
        except OSError:
            os._exit(0)
        data = data[n:]


def which(name, env):
    if b'/' in name:
        return name
    for d in env.get(b'PATH', b'/usr/bin:/bin').split(b':'):
        p = os.path.join(d or b'.', name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def fail(jid, text, code):
    put(b'O', jid, text.encode(errors='surrogateescape') + b'\n')
    put(b'X', jid, b'c%d' % code)


def start(jid, p):
    f = p.split(b'\0')
    f.pop()
    cwd = f.pop(0)
    ne = int(f.pop(0))
    pairs = f[:2 * ne]
    del f[:2 * ne]
    na = int(f.pop(0))
    argv = f[:na]
    env = dict(os.environb)
    for i in range(0, len(pairs), 2):
        env[pairs[i]] = pairs[i + 1]
    name = argv[0].decode(errors='surrogateescape')
    if cwd:
        try:
            os.chdir(cwd)
        except OSError as e:
            return fail(jid, 'cd: %s: %s' % (cwd.decode(errors='surrogateescape'), e.strerror), 126)
    path = which(argv[0], env)
    if path is None:
        return fail(jid, '%s: No such file or directory' % name, 127)
    r, w = os.pipe()
    acts = [(os.POSIX_SPAWN_OPEN, 0, '/dev/null', os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)]
    kw = dict(file_actions=acts, setsid=True, setsigmask=(),
              setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    try:
        try:
            pid = os.posix_spawn(path, argv, env, **kw)
        except OSError as e:
            if e.errno != errno.ENOEXEC:
                raise
            # As execvp does: a file with no #! line is a sh script.
            pid = os.posix_spawn('/bin/sh', [b'sh', path] + argv[1:], env, **kw)
    except OSError as e:
        os.close(r)
        os.close(w)
        return fail(jid, '%s: %s' % (name, e.strerror), 127)
    finally:
        if cwd:
            os.fchdir(home)
    os.close(w)
    os.set_blocking(r, False)
    jobs[jid] = {'pid': pid, 'fd': r, 'open': True, 'st': None, 'at': 0,
                 'pp': time.monotonic() + 0.003}
    bypid[pid] = jid


def read(fd):
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b''


# Commands without a cwd start where sshd started us (the login directory).
home = os.open('.', os.O_RDONLY)
# posix_spawn's setsid needs glibc 2.26 (an older one raises
# NotImplementedError here): if this probe fails in any way, the Perl agent
# takes over.
try:
    os.waitpid(os.posix_spawn('/bin/sh', ['sh', '-c', ':'], {}, setsid=True), 0)
except Exception:
    os.execvp('perl', ['perl', '-e', sys.argv[1]])
put(b'R', 0, b'1 ' + (b'bash' if which(b'bash', os.environb) else b'sh') + b' python')
flush()
buf = b''
while True:
    wait = 1 if jobs else None
    now = time.monotonic()
    fds = [0, sr]
    for j in jobs.values():
        if j['open']:
            fds.append(j['fd'])
        if (j['st'] is not None or not j['open']) and wait > 0.02:
            wait = 0.02
        if j['pp'] is not None:
            wait = min(wait, max(j['pp'] - now, 0))
    # poll, not select: no limit on fd numbers.
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ready = set(fd for fd, ev in poller.poll(None if wait is None else wait * 1000))
    if 0 in ready:
        got = os.read(0, 65536)
        if not got:
            os._exit(0)
        buf += got
        while len(buf) >= 4:
            n = struct.unpack('>I', buf[:4])[0]
            if len(buf) < 4 + n:
                break
            t, jid = struct.unpack('>cI', buf[4:9])
            p = buf[9:4 + n]
            buf = buf[4 + n:]
            if t == b'S':
                start(jid, p)
    if sr in ready:
        read(sr)
    while True:
        try:
            pid, s = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        jid = bypid.pop(pid, None)
        if jid is None or jid not in jobs:
            continue
        j = jobs[jid]
        j['st'] = b's%d' % os.WTERMSIG(s) if os.WIFSIGNALED(s) else b'c%d' % os.WEXITSTATUS(s)
        j['at'] = time.monotonic()
    for jid in list(jobs):
        j = jobs[jid]
        if j['open'] and j['fd'] in ready:
            d = read(j['fd'])
            if d:
                put(b'O', jid, d)
            elif d is not None:
                os.close(j['fd'])
                j['open'] = False
        if j['st'] is not None and (not j['open'] or time.monotonic() - j['at'] > 0.1):
            while j['open']:
                d = read(j['fd'])
                if not d:
                    break
                put(b'O', jid, d)
            if j['open']:
                os.close(j['fd'])
            put(b'X', jid, j['st'])
            del jobs[jid]
            continue
        if j['pp'] is not None and time.monotonic() >= j['pp']:
            j['pp'] = None
            put(b'P', jid, str(j['pid']).encode())
    flush()

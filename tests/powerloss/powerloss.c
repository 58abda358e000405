/*
 * powerloss.so: an LD_PRELOAD shim that makes `kill -9` of a process behave
 * like a power cut for the files under one directory.
 *
 * Why: after `kill -9` the kernel's page cache survives, so data written but
 * never fsynced is still there when the process restarts. A node that
 * acknowledges before its fsync (the `ack-before-fsync` test mutation) then
 * loses nothing, and the fault suite cannot tell it from a correct node.
 *
 * Model. For regular files under $LOCKER_POWERLOSS_DIR opened by this
 * process, every write stays in this process's memory (an overlay: a list of
 * pending extents per file, plus a pending size) and reads see the overlay
 * (read-your-writes, the right file size from fstat and lseek). Only
 * fsync/fdatasync (on any descriptor of the file) or syncfs/sync write the
 * pending data to the real file, before the real sync call. When the process
 * dies by a signal that runs no destructor (SIGKILL, abort), the overlay dies
 * with it: exactly what was not synced is lost, as in a power cut. A normal
 * exit() writes the overlay through (the page cache survives a clean exit).
 *
 * sync_file_range(2) makes nothing durable here: it neither commits the
 * file's size nor its block allocation nor the disk's cache (its man page:
 * "there are no guarantees that the data will be available after a crash"),
 * so it is a no-op for tracked files.
 *
 * Not modelled (documented limits, all in the "too kind" direction):
 *  - directory operations: open(O_CREAT), O_TRUNC, rename, unlink and mkdir
 *    take effect at once and survive, as if every directory were fsynced;
 *  - no torn writes inside one write call, no reordering between files, no
 *    background writeback (pending data is lost however old it is);
 *  - files opened O_SYNC/O_DSYNC, mmap, copy_file_range, sendfile, writev
 *    with an offset (pwritev), stat() by path and statx: passed through or
 *    report the durable size; the node's store (sled 0.34) uses none of them
 *    on its files (it uses open, pwrite, pread, write, read, lseek,
 *    ftruncate, fstat, fsync, sync_file_range);
 *  - descriptors numbered PL_MAXFD or above are not tracked (warned once),
 *    nor a descriptor that dup2/dup3 turned into a tracked file after it
 *    was seen as something else (the node does neither).
 *
 * Memory is bounded: once more than $LOCKER_POWERLOSS_MAX_BYTES (default
 * 256 MiB) is pending, the file being written is written through (not
 * synced, but no longer lost by a kill) and a line says so on stderr.
 *
 * Build: gcc -shared -fPIC -O2 -o powerloss.so powerloss.c -ldl -lpthread
 * Use:   LD_PRELOAD=/path/powerloss.so LOCKER_POWERLOSS_DIR=/data/dir cmd
 * Without LOCKER_POWERLOSS_DIR the shim passes everything through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define PL_MAXFD 65536

/* One write not yet synced: `len` bytes at `off`, applied in list order. */
struct ext {
    struct ext *next;
    off_t off;
    size_t len;
    char data[];
};

/* One tracked file (an inode), shared by every descriptor open on it. */
struct pfile {
    struct pfile *next;
    dev_t dev;
    ino_t ino;
    char path[PATH_MAX];
    off_t size;     /* size as this process sees it */
    off_t durable;  /* size of the real file */
    off_t min_size; /* lowest size since the last sync (pending truncation) */
    struct ext *head, *tail;
    size_t pending;
};

enum { FD_UNKNOWN = 0, FD_IGNORED = 1, FD_TRACKED = 2 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char fd_state[PL_MAXFD];
static struct pfile *fd_file[PL_MAXFD];
static struct pfile *files;
static char root[PATH_MAX];
static size_t root_len;
static int enabled;
static size_t cap = 256u << 20;
static size_t total_pending;

/* The real libc functions. */
static int (*r_open)(const char *, int, ...);
static int (*r_openat)(int, const char *, int, ...);
static int (*r_close)(int);
static ssize_t (*r_read)(int, void *, size_t);
static ssize_t (*r_write)(int, const void *, size_t);
static ssize_t (*r_pread)(int, void *, size_t, off_t);
static ssize_t (*r_pwrite)(int, const void *, size_t, off_t);
static off_t (*r_lseek)(int, off_t, int);
static int (*r_ftruncate)(int, off_t);
static int (*r_fstat)(int, struct stat64 *);
static int (*r_fsync)(int);
static int (*r_fdatasync)(int);
static int (*r_syncfs)(int);
static void (*r_sync)(void);
static int (*r_sfr)(int, off_t, off_t, unsigned int);
static int (*r_unlink)(const char *);
static int (*r_unlinkat)(int, const char *, int);

static void say(const char *msg)
{
    /* stderr without stdio: no locks, no allocation. */
    ssize_t rc = r_write ? r_write(2, msg, strlen(msg)) : -1;
    (void)rc;
}

/* Resolves the real functions; wrappers call it too, since another
 * library's constructor may do I/O before ours runs. */
static void resolve(void)
{
    if (r_unlinkat)
        return;
    r_open = dlsym(RTLD_NEXT, "open64");
    r_openat = dlsym(RTLD_NEXT, "openat64");
    r_close = dlsym(RTLD_NEXT, "close");
    r_read = dlsym(RTLD_NEXT, "read");
    r_write = dlsym(RTLD_NEXT, "write");
    r_pread = dlsym(RTLD_NEXT, "pread64");
    r_pwrite = dlsym(RTLD_NEXT, "pwrite64");
    r_lseek = dlsym(RTLD_NEXT, "lseek64");
    r_ftruncate = dlsym(RTLD_NEXT, "ftruncate64");
    r_fstat = dlsym(RTLD_NEXT, "fstat64");
    r_fsync = dlsym(RTLD_NEXT, "fsync");
    r_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    r_syncfs = dlsym(RTLD_NEXT, "syncfs");
    r_sync = dlsym(RTLD_NEXT, "sync");
    r_sfr = dlsym(RTLD_NEXT, "sync_file_range");
    r_unlink = dlsym(RTLD_NEXT, "unlink");
    r_unlinkat = dlsym(RTLD_NEXT, "unlinkat");
}

#define RESOLVE()          \
    do {                   \
        if (!r_unlinkat)   \
            resolve();     \
    } while (0)

__attribute__((constructor)) static void pl_init(void)
{
    resolve();
    const char *dir = getenv("LOCKER_POWERLOSS_DIR");
    if (!dir || !*dir)
        return;
    /* The directory may not exist yet: fall back to the name as given. */
    if (!realpath(dir, root))
        snprintf(root, sizeof root, "%s", dir);
    root_len = strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/')
        root[--root_len] = 0;
    const char *c = getenv("LOCKER_POWERLOSS_MAX_BYTES");
    if (c && *c)
        cap = strtoull(c, NULL, 10);
    enabled = 1;
    char line[PATH_MAX + 64];
    snprintf(line, sizeof line, "powerloss: unsynced writes under %s are lost on kill\n", root);
    say(line);
}

static int under_root(const char *p)
{
    return strncmp(p, root, root_len) == 0 && (p[root_len] == '/' || p[root_len] == 0);
}

static struct pfile *find_file(dev_t dev, ino_t ino)
{
    for (struct pfile *f = files; f; f = f->next)
        if (f->dev == dev && f->ino == ino)
            return f;
    return NULL;
}

static void drop_extents(struct pfile *f)
{
    struct ext *e = f->head;
    while (e) {
        struct ext *n = e->next;
        free(e);
        e = n;
    }
    f->head = f->tail = NULL;
    total_pending -= f->pending;
    f->pending = 0;
}

/* Called with `mu` held, after a successful open of `fd`. */
static void register_fd(int fd, int flags)
{
    if (fd < 0 || fd >= PL_MAXFD) {
        static int warned;
        if (fd >= PL_MAXFD && !warned++)
            say("powerloss: descriptor above PL_MAXFD is not tracked\n");
        return;
    }
    struct stat64 st;
    char link[64], path[PATH_MAX];
    fd_state[fd] = FD_IGNORED;
    fd_file[fd] = NULL;
    if (flags & (O_SYNC | O_DSYNC))
        return; /* every write is durable anyway */
    if (r_fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
        return;
    path[n] = 0;
    if (!under_root(path))
        return;
    struct pfile *f = find_file(st.st_dev, st.st_ino);
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f)
            return;
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        f->size = f->durable = f->min_size = st.st_size;
        f->next = files;
        files = f;
    } else if (flags & O_TRUNC) {
        /* O_TRUNC went to the real file at once (not modelled as pending). */
        drop_extents(f);
        f->size = f->durable = f->min_size = 0;
    }
    snprintf(f->path, sizeof f->path, "%s", path);
    fd_state[fd] = FD_TRACKED;
    fd_file[fd] = f;
}

/* The tracked file behind `fd`, or NULL; resolves descriptors this shim did
 * not see opened (dup, fcntl(F_DUPFD)) by their inode. Takes `mu` when it
 * returns non-NULL; the caller unlocks. */
static struct pfile *tracked(int fd)
{
    RESOLVE();
    if (!enabled || fd < 0 || fd >= PL_MAXFD)
        return NULL;
    unsigned char s = __atomic_load_n(&fd_state[fd], __ATOMIC_ACQUIRE);
    if (s == FD_IGNORED)
        return NULL;
    pthread_mutex_lock(&mu);
    if (fd_state[fd] == FD_UNKNOWN) {
        struct stat64 st;
        struct pfile *f = NULL;
        if (r_fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
            f = find_file(st.st_dev, st.st_ino);
        fd_file[fd] = f;
        __atomic_store_n(&fd_state[fd], f ? FD_TRACKED : FD_IGNORED, __ATOMIC_RELEASE);
    }
    if (fd_state[fd] == FD_TRACKED)
        return fd_file[fd];
    pthread_mutex_unlock(&mu);
    return NULL;
}

static ssize_t pwrite_all(int fd, const char *p, size_t n, off_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = r_pwrite(fd, p + done, n - done, off + (off_t)done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        done += (size_t)w;
    }
    return (ssize_t)done;
}

/* A writable descriptor on `f` (0 if none could be opened). Any open
 * descriptor of the file is reopened through /proc, so a read-only
 * descriptor or a renamed file still works. */
static int writable_fd(struct pfile *f, int hint)
{
    char link[64];
    int fd = hint;
    for (int i = 0; fd < 0 && i < PL_MAXFD; i++)
        if (fd_state[i] == FD_TRACKED && fd_file[i] == f)
            fd = i;
    if (fd >= 0) {
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        int w = r_open(link, O_WRONLY | O_CLOEXEC);
        if (w >= 0)
            return w;
    }
    return r_open(f->path, O_WRONLY | O_CLOEXEC);
}

/* Writes `f`'s pending data to the real file (no sync). `mu` held. */
static int write_through(struct pfile *f, int hint)
{
    if (!f->head && f->size == f->durable && f->min_size == f->durable)
        return 0;
    int w = writable_fd(f, hint);
    if (w < 0)
        return -1;
    int rc = 0;
    if (f->min_size < f->durable && r_ftruncate(w, f->min_size) != 0)
        rc = -1;
    for (struct ext *e = f->head; e && rc == 0; e = e->next)
        if (pwrite_all(w, e->data, e->len, e->off) < 0)
            rc = -1;
    if (rc == 0 && r_ftruncate(w, f->size) != 0)
        rc = -1;
    int saved = errno;
    r_close(w);
    errno = saved;
    if (rc == 0) {
        drop_extents(f);
        f->durable = f->min_size = f->size;
    }
    return rc;
}

/* pread through the overlay. `mu` held. */
static ssize_t overlay_pread(struct pfile *f, int fd, char *buf, size_t n, off_t off)
{
    if (off < 0) {
        errno = EINVAL;
        return -1;
    }
    if (off >= f->size)
        return 0;
    if ((off_t)n > f->size - off)
        n = (size_t)(f->size - off);
    /* Real bytes only below the lowest pending truncation; zeros above. */
    size_t real = off < f->min_size ? (size_t)(f->min_size - off) : 0;
    if (real > n)
        real = n;
    size_t got = 0;
    while (got < real) {
        ssize_t r = r_pread(fd, buf + got, real - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    memset(buf + got, 0, n - got);
    for (struct ext *e = f->head; e; e = e->next) {
        off_t lo = e->off > off ? e->off : off;
        off_t hi = e->off + (off_t)e->len;
        if (hi > off + (off_t)n)
            hi = off + (off_t)n;
        if (lo < hi)
            memcpy(buf + (lo - off), e->data + (lo - e->off), (size_t)(hi - lo));
    }
    return (ssize_t)n;
}

/* pwrite into the overlay. `mu` held. */
static ssize_t overlay_pwrite(struct pfile *f, int fd, const char *buf, size_t n, off_t off)
{
    if (off < 0) {
        errno = EINVAL;
        return -1;
    }
    if ((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY) {
        errno = EBADF;
        return -1;
    }
    if (n == 0)
        return 0;
    struct ext *e = malloc(sizeof *e + n);
    if (!e) {
        errno = ENOMEM;
        return -1;
    }
    e->next = NULL;
    e->off = off;
    e->len = n;
    memcpy(e->data, buf, n);
    if (f->tail)
        f->tail->next = e;
    else
        f->head = e;
    f->tail = e;
    f->pending += n;
    total_pending += n;
    if (off + (off_t)n > f->size)
        f->size = off + (off_t)n;
    if (total_pending > cap) {
        char line[PATH_MAX + 160];
        snprintf(line, sizeof line,
                 "powerloss: over %zu pending bytes: %s written through (a kill no longer loses it)\n",
                 cap, f->path);
        say(line);
        if (write_through(f, fd) != 0)
            return -1;
    }
    return (ssize_t)n;
}

static int do_open(int dirfd, const char *path, int flags, mode_t mode, int at)
{
    RESOLVE();
    int fd = at ? r_openat(dirfd, path, flags, mode) : r_open(path, flags, mode);
    if (enabled && fd >= 0) {
        pthread_mutex_lock(&mu);
        register_fd(fd, flags);
        pthread_mutex_unlock(&mu);
    }
    return fd;
}

#define MODE_ARG(flags, mode)                                \
    do {                                                     \
        if ((flags) & (O_CREAT | __O_TMPFILE)) {             \
            va_list ap;                                      \
            va_start(ap, flags);                             \
            mode = (mode_t)va_arg(ap, int);                  \
            va_end(ap);                                      \
        }                                                    \
    } while (0)

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return do_open(AT_FDCWD, path, flags, mode, 0);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return do_open(AT_FDCWD, path, flags, mode, 0);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return do_open(dirfd, path, flags, mode, 1);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return do_open(dirfd, path, flags, mode, 1);
}

int close(int fd)
{
    RESOLVE();
    if (enabled && fd >= 0 && fd < PL_MAXFD &&
        __atomic_load_n(&fd_state[fd], __ATOMIC_ACQUIRE) != FD_UNKNOWN) {
        /* Closing syncs nothing: the pending data stays with the inode. */
        pthread_mutex_lock(&mu);
        fd_file[fd] = NULL;
        __atomic_store_n(&fd_state[fd], FD_UNKNOWN, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&mu);
    }
    return r_close(fd);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    struct pfile *f = tracked(fd);
    if (!f)
        return r_pwrite(fd, buf, n, off);
    ssize_t r = overlay_pwrite(f, fd, buf, n, off);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite64(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
    struct pfile *f = tracked(fd);
    if (!f)
        return r_pread(fd, buf, n, off);
    ssize_t r = overlay_pread(f, fd, buf, n, off);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    return pread64(fd, buf, n, off);
}

/* write/read at the descriptor's offset: the kernel keeps the offset (we
 * move it with lseek), the overlay keeps the bytes. */
ssize_t write(int fd, const void *buf, size_t n)
{
    struct pfile *f = tracked(fd);
    if (!f)
        return r_write(fd, buf, n);
    off_t pos = (fcntl(fd, F_GETFL) & O_APPEND) ? f->size : r_lseek(fd, 0, SEEK_CUR);
    ssize_t r = pos < 0 ? -1 : overlay_pwrite(f, fd, buf, n, pos);
    if (r > 0)
        r_lseek(fd, pos + r, SEEK_SET);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t read(int fd, void *buf, size_t n)
{
    struct pfile *f = tracked(fd);
    if (!f)
        return r_read(fd, buf, n);
    off_t pos = r_lseek(fd, 0, SEEK_CUR);
    ssize_t r = pos < 0 ? -1 : overlay_pread(f, fd, buf, n, pos);
    if (r > 0)
        r_lseek(fd, pos + r, SEEK_SET);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (!tracked(fd)) {
        ssize_t (*real)(int, const struct iovec *, int) = dlsym(RTLD_NEXT, "writev");
        return real(fd, iov, cnt);
    }
    pthread_mutex_unlock(&mu);
    ssize_t total = 0;
    for (int i = 0; i < cnt; i++) {
        ssize_t r = write(fd, iov[i].iov_base, iov[i].iov_len);
        if (r < 0)
            return total ? total : -1;
        total += r;
    }
    return total;
}

off_t lseek64(int fd, off_t off, int whence)
{
    struct pfile *f = whence == SEEK_END ? tracked(fd) : NULL;
    if (!f)
        return r_lseek(fd, off, whence);
    off_t r = r_lseek(fd, f->size + off, SEEK_SET);
    pthread_mutex_unlock(&mu);
    return r;
}

off_t lseek(int fd, off_t off, int whence)
{
    return lseek64(fd, off, whence);
}

int ftruncate64(int fd, off_t len)
{
    struct pfile *f = tracked(fd);
    if (!f)
        return r_ftruncate(fd, len);
    if (len < 0) {
        pthread_mutex_unlock(&mu);
        errno = EINVAL;
        return -1;
    }
    /* Pending like a write: clip the extents, remember the lowest size. */
    for (struct ext *e = f->head; e; e = e->next)
        if (e->off + (off_t)e->len > len)
            e->len = e->off >= len ? 0 : (size_t)(len - e->off);
    f->size = len;
    if (len < f->min_size)
        f->min_size = len;
    pthread_mutex_unlock(&mu);
    return 0;
}

int ftruncate(int fd, off_t len)
{
    return ftruncate64(fd, len);
}

int fstat64(int fd, struct stat64 *st)
{
    struct pfile *f = tracked(fd);
    if (!f)
        return r_fstat(fd, st);
    int r = r_fstat(fd, st);
    if (r == 0)
        st->st_size = f->size;
    pthread_mutex_unlock(&mu);
    return r;
}

int fstat(int fd, struct stat *st)
{
    /* The same layout as struct stat64 on 64-bit Linux. */
    return fstat64(fd, (struct stat64 *)st);
}

static int sync_one(int fd, int (*real)(int))
{
    struct pfile *f = tracked(fd);
    if (f) {
        int r = write_through(f, fd);
        pthread_mutex_unlock(&mu);
        if (r != 0)
            return -1;
    }
    return real(fd);
}

int fsync(int fd)
{
    return sync_one(fd, r_fsync);
}

int fdatasync(int fd)
{
    return sync_one(fd, r_fdatasync);
}

static void write_through_all(void)
{
    pthread_mutex_lock(&mu);
    for (struct pfile *f = files; f; f = f->next)
        write_through(f, -1);
    pthread_mutex_unlock(&mu);
}

int syncfs(int fd)
{
    RESOLVE();
    if (enabled)
        write_through_all();
    return r_syncfs(fd);
}

void sync(void)
{
    RESOLVE();
    if (enabled)
        write_through_all();
    r_sync();
}

int sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
    if (!tracked(fd))
        return r_sfr(fd, off, n, flags);
    /* Durable nothing (see the header); the data stays pending. */
    pthread_mutex_unlock(&mu);
    return 0;
}

/* An unlinked file's pending data can never be synced: forget it, so that a
 * new file reusing the inode number does not inherit it. */
static void forget_path(int dirfd, const char *path)
{
    RESOLVE();
    struct stat st;
    if (!enabled || fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_nlink != 1)
        return;
    pthread_mutex_lock(&mu);
    for (struct pfile **p = &files; *p; p = &(*p)->next) {
        struct pfile *f = *p;
        if (f->dev == st.st_dev && f->ino == st.st_ino) {
            int open_fds = 0;
            for (int i = 0; i < PL_MAXFD && !open_fds; i++)
                open_fds = fd_state[i] == FD_TRACKED && fd_file[i] == f;
            if (!open_fds) {
                drop_extents(f);
                *p = f->next;
                free(f);
            }
            break;
        }
    }
    pthread_mutex_unlock(&mu);
}

int unlink(const char *path)
{
    forget_path(AT_FDCWD, path);
    return r_unlink(path);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    if (!(flags & AT_REMOVEDIR))
        forget_path(dirfd, path);
    return r_unlinkat(dirfd, path, flags);
}

/* A clean exit keeps the page cache: write everything through. SIGKILL and
 * abort() run no destructor, which is the power cut. */
__attribute__((destructor)) static void pl_fini(void)
{
    if (enabled)
        write_through_all();
}

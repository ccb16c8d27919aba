/* Lock-step for an unmodified minetest binary, loaded with LD_PRELOAD (worldloom.envs.minetest_engine).

   Before the game runs, every clock is real. The client mod (wlrec) calls os.clock() in its
   first globalstep; LuaJIT's os.clock is libc's clock(), so that call, made on the main thread,
   switches the process into lock-step:
   - CLOCK_MONOTONIC and CLOCK_MONOTONIC_RAW (minetest's porting::getTimeUs, Irrlicht's timer) return
     a virtual time that only the controller advances; the wall clock (CLOCK_REALTIME,
     gettimeofday) stays real, since semaphore deadlines are computed from it.
   - After each glXSwapBuffers of the main thread (the end of one engine frame), the shim syncs the
     X connection (so the frame is on the X server before anyone grabs it), writes the frame number
     to WL_GATE_NOTIFY_FD and blocks reading the next virtual time (8 bytes, ns) from
     WL_GATE_WAKE_FD. Only the main thread parks: the server, emerge and mesh threads keep working.
   An end of file on the wake pipe means the controller is gone: the process exits at once.
*/
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct _XDisplay Display;
typedef unsigned long GLXDrawable;

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static clock_t (*real_clock)(void);
static void (*real_swap)(Display *, GLXDrawable);
static int (*x_sync)(Display *, int);

static int notify_fd = -1, wake_fd = -1;
static pid_t main_tid;
static volatile int active;            /* set once, by the main thread */
static int64_t virtual_ns;             /* read by every thread, written by the main thread */
static uint64_t frame;

__attribute__((constructor)) static void lockstep_init(void) {
    real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    real_clock = dlsym(RTLD_NEXT, "clock");
    main_tid = getpid();
    const char *n = getenv("WL_GATE_NOTIFY_FD"), *w = getenv("WL_GATE_WAKE_FD");
    if (n && w) {
        notify_fd = atoi(n);
        wake_fd = atoi(w);
    }
}

static int on_main_thread(void) { return (pid_t)syscall(SYS_gettid) == main_tid; }

static int64_t real_ns(clockid_t clk) {
    struct timespec ts;
    real_clock_gettime(clk, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
    if (active && (clk == CLOCK_MONOTONIC || clk == CLOCK_MONOTONIC_RAW)) {
        int64_t ns = __atomic_load_n(&virtual_ns, __ATOMIC_ACQUIRE);
        ts->tv_sec = ns / 1000000000LL;
        ts->tv_nsec = ns % 1000000000LL;
        return 0;
    }
    return real_clock_gettime(clk, ts);
}

clock_t clock(void) {
    if (!active && notify_fd >= 0 && on_main_thread()) {
        /* Start from the later of the two clocks: no reader sees time go backwards. */
        int64_t mono = real_ns(CLOCK_MONOTONIC), raw = real_ns(CLOCK_MONOTONIC_RAW);
        __atomic_store_n(&virtual_ns, mono > raw ? mono : raw, __ATOMIC_RELEASE);
        active = 1;
    }
    return real_clock();
}

static void read_all(int fd, void *buf, size_t size) {
    char *p = buf;
    while (size > 0) {
        ssize_t got = read(fd, p, size);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) _exit(0); /* the controller is gone: leave nothing behind */
        p += got;
        size -= (size_t)got;
    }
}

void glXSwapBuffers(Display *dpy, GLXDrawable drawable) {
    if (!real_swap) real_swap = dlsym(RTLD_NEXT, "glXSwapBuffers");
    real_swap(dpy, drawable);
    if (!active || !on_main_thread()) return;
    if (!x_sync) x_sync = dlsym(RTLD_DEFAULT, "XSync");
    if (x_sync) x_sync(dpy, 0);
    frame++;
    for (;;) {
        ssize_t put = write(notify_fd, &frame, sizeof frame);
        if (put == (ssize_t)sizeof frame) break;
        if (put < 0 && errno == EINTR) continue;
        _exit(0);
    }
    int64_t next_ns;
    read_all(wake_fd, &next_ns, sizeof next_ns);
    __atomic_store_n(&virtual_ns, next_ns, __ATOMIC_RELEASE);
}

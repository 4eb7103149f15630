/*
 * ferry_sendfile: sends a byte range of a file to a TCP socket with Linux
 * sendfile(2), on a thread of its own, and reports back on the JS thread.
 *
 * Why it exists: Node streams a file to a socket through user space (read
 * into a Buffer, write it out), which tops out well below what the kernel can
 * do; the reference registry (Go) pulls a 100 MiB blob about twice as fast
 * because Go's io.Copy from a file to a TCP socket uses sendfile. No pure-Node
 * API reaches sendfile, so src/http/sendfile.ts calls this for large local
 * blobs on plain-TCP connections and streams everything else as before.
 *
 * JS API:
 *   start(socketFd, fileFd, offset, length, idleTimeoutMs, done) -> handle
 *     done(errno, bytesSent) is called once on the JS thread; errno 0 = ok.
 *   cancel(handle) -> boolean   (true if the transfer was still running)
 *
 * Safety argument:
 * 1. Descriptor ownership. start() dup()s the socket and the file on the JS
 *    thread, synchronously, before returning. The transfer thread only ever
 *    uses its own duplicates, so Node closing the socket (destroy) or the
 *    caller closing the file at any moment cannot make the thread read from
 *    or write into a descriptor number that was closed and reused for
 *    something else. The thread closes its duplicates exactly once, under the
 *    job's mutex, and marks them -1.
 * 2. Cancellation. Because the duplicate keeps the connection open after Node
 *    closed its own descriptor, the JS side calls cancel() on the socket's
 *    'close'. cancel() takes the same mutex and, only while the duplicate is
 *    still open, calls shutdown(SHUT_RDWR) on it: a pending sendfile fails and
 *    a waiting poll wakes (POLLHUP), and the flag makes the thread stop with
 *    ECANCELED. shutdown acts on the connection, which is exactly what is
 *    wanted: cancel is only used when the connection is going away anyway.
 * 3. Nobody else writes. The JS side starts a transfer only once the response
 *    headers are in the kernel and writes nothing to the socket until done()
 *    ran. Node may keep reading from the socket meanwhile; that is harmless.
 * 4. Non-blocking socket. libuv sockets are O_NONBLOCK (the duplicate shares
 *    that flag; it is never changed here). On EAGAIN the thread polls for
 *    POLLOUT; no progress for idleTimeoutMs ends the transfer with ETIMEDOUT.
 * 5. Signals. Node ignores SIGPIPE; the thread is also created with every
 *    signal blocked, so no signal is ever delivered to it.
 * 6. Lifetime. A job has two references: the thread's and the JS handle's.
 *    Completion goes through a napi_threadsafe_function (which also keeps the
 *    event loop alive while a transfer runs, as a pending socket write would);
 *    its callback drops the thread's reference, the handle's finalizer the
 *    other. Whichever is last frees the job.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHUNK ((size_t)1 << 30)

typedef struct {
  pthread_mutex_t lock;
  int out_fd; /* our duplicate of the socket; -1 once closed (under lock) */
  int in_fd;  /* our duplicate of the file; -1 once closed (under lock) */
  int64_t offset, remaining, sent;
  int idle_ms;
  int err;
  atomic_int cancelled;
  atomic_int refs;
  napi_threadsafe_function tsfn;
} job_t;

static void job_unref(job_t *j) {
  if (atomic_fetch_sub(&j->refs, 1) == 1) {
    pthread_mutex_destroy(&j->lock);
    free(j);
  }
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int transfer(job_t *j) {
  int64_t last_progress = now_ms();
  int hung_up = 0;
  while (j->remaining > 0) {
    if (atomic_load(&j->cancelled)) return ECANCELED;
    off_t off = (off_t)j->offset;
    size_t want = (uint64_t)j->remaining > MAX_CHUNK ? MAX_CHUNK : (size_t)j->remaining;
    ssize_t n = sendfile(j->out_fd, j->in_fd, &off, want);
    if (n > 0) {
      j->offset += n;
      j->remaining -= n;
      j->sent += n;
      last_progress = now_ms();
      hung_up = 0;
      continue;
    }
    if (n == 0) return EIO; /* the file is shorter than the range */
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return errno;
    if (hung_up) return EPIPE; /* poll said hang-up, and still nothing can be written */
    int64_t left = (int64_t)j->idle_ms - (now_ms() - last_progress);
    if (left <= 0) return ETIMEDOUT;
    struct pollfd p = {.fd = j->out_fd, .events = POLLOUT};
    int r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
    if (r < 0 && errno != EINTR) return errno;
    if (r > 0 && !(p.revents & POLLOUT) && (p.revents & (POLLHUP | POLLERR))) hung_up = 1;
  }
  return 0;
}

static void *run(void *arg) {
  job_t *j = arg;
  int err = transfer(j);
  if (err != 0 && atomic_load(&j->cancelled)) err = ECANCELED;
  j->err = err;
  pthread_mutex_lock(&j->lock);
  close(j->out_fd);
  j->out_fd = -1;
  close(j->in_fd);
  j->in_fd = -1;
  pthread_mutex_unlock(&j->lock);
  /* j may be freed as soon as the call is queued: keep the tsfn in a local. */
  napi_threadsafe_function tsfn = j->tsfn;
  if (napi_call_threadsafe_function(tsfn, j, napi_tsfn_blocking) != napi_ok) job_unref(j);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  return NULL;
}

/* Runs on the JS thread (or with env == NULL while the environment is torn down). */
static void call_done(napi_env env, napi_value done, void *context, void *data) {
  (void)context;
  job_t *j = data;
  if (env != NULL && done != NULL) {
    napi_value argv[2], recv;
    napi_create_int32(env, j->err, &argv[0]);
    napi_create_double(env, (double)j->sent, &argv[1]);
    napi_get_undefined(env, &recv);
    napi_call_function(env, recv, done, 2, argv, NULL);
  }
  job_unref(j);
}

static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  job_unref((job_t *)data);
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, message);
  return NULL;
}

static int dup_cloexec(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 3); }

static napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value a[6];
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 6) {
    napi_throw_type_error(env, NULL, "start(socketFd, fileFd, offset, length, idleTimeoutMs, done)");
    return NULL;
  }
  int32_t sock, file, idle;
  int64_t offset, length;
  napi_valuetype done_type;
  if (napi_get_value_int32(env, a[0], &sock) != napi_ok || napi_get_value_int32(env, a[1], &file) != napi_ok ||
      napi_get_value_int64(env, a[2], &offset) != napi_ok || napi_get_value_int64(env, a[3], &length) != napi_ok ||
      napi_get_value_int32(env, a[4], &idle) != napi_ok || napi_typeof(env, a[5], &done_type) != napi_ok ||
      done_type != napi_function || sock < 0 || file < 0 || offset < 0 || length < 0 || idle <= 0) {
    napi_throw_type_error(env, NULL, "start: bad arguments");
    return NULL;
  }

  job_t *j = calloc(1, sizeof *j);
  if (j == NULL) return throw_errno(env, "start", ENOMEM);
  pthread_mutex_init(&j->lock, NULL);
  atomic_init(&j->cancelled, 0);
  atomic_init(&j->refs, 2);
  j->offset = offset;
  j->remaining = length;
  j->idle_ms = idle;
  j->out_fd = dup_cloexec(sock);
  j->in_fd = j->out_fd < 0 ? -1 : dup_cloexec(file);
  if (j->out_fd < 0 || j->in_fd < 0) {
    int err = errno;
    if (j->out_fd >= 0) close(j->out_fd);
    pthread_mutex_destroy(&j->lock);
    free(j);
    return throw_errno(env, "dup", err);
  }

  napi_value name, handle;
  napi_create_string_utf8(env, "ferry_sendfile", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, a[5], NULL, name, 0, 1, NULL, NULL, NULL, call_done, &j->tsfn) != napi_ok) {
    close(j->out_fd);
    close(j->in_fd);
    pthread_mutex_destroy(&j->lock);
    free(j);
    napi_throw_error(env, NULL, "start: cannot create the completion callback");
    return NULL;
  }

  /* The new thread inherits this mask: it never receives a signal. */
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t thread;
  int err = pthread_create(&thread, &attr, run, j);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  if (err != 0) {
    close(j->out_fd);
    close(j->in_fd);
    napi_release_threadsafe_function(j->tsfn, napi_tsfn_abort);
    pthread_mutex_destroy(&j->lock);
    free(j);
    return throw_errno(env, "pthread_create", err);
  }

  if (napi_create_external(env, j, finalize_handle, NULL, &handle) != napi_ok) {
    /* The transfer runs and reports anyway; it just cannot be cancelled. */
    job_unref(j);
    napi_get_undefined(env, &handle);
  }
  return handle;
}

static napi_value Cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg, result;
  void *data = NULL;
  napi_valuetype type;
  if (napi_get_cb_info(env, info, &argc, &arg, NULL, NULL) != napi_ok || argc < 1 ||
      napi_typeof(env, arg, &type) != napi_ok || type != napi_external ||
      napi_get_value_external(env, arg, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "cancel(handle)");
    return NULL;
  }
  job_t *j = data;
  int acted = 0;
  pthread_mutex_lock(&j->lock);
  if (j->out_fd >= 0) {
    atomic_store(&j->cancelled, 1);
    shutdown(j->out_fd, SHUT_RDWR);
    acted = 1;
  }
  pthread_mutex_unlock(&j->lock);
  napi_get_boolean(env, acted, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value start, cancel;
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, Start, NULL, &start);
  napi_create_function(env, "cancel", NAPI_AUTO_LENGTH, Cancel, NULL, &cancel);
  napi_set_named_property(env, exports, "start", start);
  napi_set_named_property(env, exports, "cancel", cancel);
  return exports;
}

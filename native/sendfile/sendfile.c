/*
 * ferry_sendfile: sends a byte range of a file to a TCP socket on a thread of
 * its own, and reports back on the JS thread. Two ways to move the bytes:
 *
 * - copy (copyBufferBytes > 0, the default Ferry uses: 64 KiB): pread() into
 *   a private buffer, send() it out. On loopback this is the fastest: the
 *   receiver copies out of skbs whose data is still hot in the cache that
 *   just wrote them, instead of out of cold page-cache pages.
 * - sendfile (copyBufferBytes = 0): Linux sendfile(2), zero-copy. On a real
 *   NIC it saves the CPU the copy costs (the NIC DMAs straight from the page
 *   cache), so it is kept for network-bound or CPU-bound servers.
 *
 * Measured (curl pulling a 100 MiB blob over loopback, 16 interleaved rounds,
 * medians): sendfile 1313 MB/s; copy 16 KiB 1479, 32 KiB 2171, 64 KiB 2436,
 * 256 KiB 1769 (the buffer no longer fits the cache); the reference registry
 * (Go, io.Copy -> sendfile) 1525. Node's own streaming through user space is
 * well below both, and no pure-Node API reaches either loop, so
 * src/http/sendfile.ts calls this for large local blobs on plain-TCP
 * connections and streams everything else as before.
 *
 * JS API:
 *   start(socketFd, fileFd, offset, length, idleTimeoutMs, done[, copyBufferBytes]) -> handle
 *     done(errno, bytesSent, partialWrites) is called once on the JS thread;
 *     errno 0 = ok; partialWrites counts writes the socket took only in part
 *     (its buffer was full), which tests use to prove that path ran.
 *     copyBufferBytes: 0 or absent = sendfile(2); > 0 = copy loop with a
 *     buffer of that size (at most MAX_COPY_BUFFER), allocated here on the JS
 *     thread (so a failed allocation throws before anything is sent) and
 *     freed by the transfer thread when it ends.
 *   cancel(handle) -> boolean   (true if the transfer was still running)
 *
 * Safety argument (both modes):
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
 *    still open, calls shutdown(SHUT_RDWR) on it: a pending sendfile/send
 *    fails and a waiting poll wakes (POLLHUP), and the flag, checked on every
 *    iteration of either loop, makes the thread stop with ECANCELED.
 *    shutdown acts on the connection, which is exactly what is wanted:
 *    cancel is only used when the connection is going away anyway.
 * 3. Nobody else writes. The JS side starts a transfer only once the response
 *    headers are in the kernel and writes nothing to the socket until done()
 *    ran. Node may keep reading from the socket meanwhile; that is harmless.
 * 4. Non-blocking socket. libuv sockets are O_NONBLOCK (the duplicate shares
 *    that flag; it is never changed here). On EAGAIN the thread polls for
 *    POLLOUT (wait_writable, shared by both loops); no progress for
 *    idleTimeoutMs ends the transfer with ETIMEDOUT. The copy loop keeps its
 *    position in the buffer across partial writes and EAGAIN: a byte is read
 *    from the file once and sent once, in order.
 * 5. Signals. Node ignores SIGPIPE, send() is called with MSG_NOSIGNAL, and
 *    the thread is created with every signal blocked, so no signal is ever
 *    delivered to it.
 * 6. Lifetime. A job has four references: the JS handle's, the completion
 *    call's, the thread's and the teardown hook's. Completion goes through a
 *    napi_threadsafe_function (which also keeps the event loop alive while a
 *    transfer runs, as a pending socket write would); its callback drops the
 *    call's reference and unregisters the hook, the handle's finalizer drops
 *    the handle's, the thread drops its own as its very last step.
 *    Whichever is last frees the job. The copy buffer belongs to the thread
 *    alone and is freed before completion is reported.
 * 6b. Teardown. When the JS environment goes away with a job still running
 *    (a serving thread terminated after its drain deadline, the process
 *    exiting), an environment cleanup hook cancels the job and waits for its
 *    thread to end: the threadsafe function it would call, and for a receive
 *    the memory it writes into, are freed with the environment.
 * 7. Short files. Either loop reaching end of file before the range ends
 *    reports EIO (never a hang, never bytes from beyond the range).
 */
#define _GNU_SOURCE
#include "common.h"
#include <dlfcn.h>
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
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define MAX_CHUNK ((size_t)1 << 30)
#define MAX_COPY_BUFFER ((int64_t)64 << 20)
#define DISCARD_BUFFER ((size_t)64 << 10)

typedef struct {
  pthread_mutex_t lock;
  int out_fd; /* our duplicate of the socket; -1 once closed (under lock) */
  int in_fd;  /* our duplicate of the file; -1 once closed (under lock) */
  int64_t offset, remaining, sent;
  int64_t partial_writes; /* writes the socket took only in part */
  int idle_ms;
  int err;
  char *buf;       /* copy mode: the thread's buffer; NULL = sendfile */
  size_t buf_size;
  atomic_int cancelled;
  atomic_int refs;
  napi_threadsafe_function tsfn;
  pthread_cond_t ended_cond; /* signalled (under lock) once the thread is done with the job */
  int ended;
  int hooked; /* the teardown hook is registered and has not run (JS thread only) */
} job_t;

static void job_unref(job_t *j) {
  if (atomic_fetch_sub(&j->refs, 1) == 1) {
    pthread_cond_destroy(&j->ended_cond);
    pthread_mutex_destroy(&j->lock);
    free(j);
  }
}



/* When a transfer last moved bytes, and whether poll reported a hang-up since. */
typedef struct {
  int64_t last_progress;
  int hung_up;
} pace_t;

static void advance(job_t *j, pace_t *p, ssize_t n) {
  j->offset += n;
  j->remaining -= n;
  j->sent += n;
  p->last_progress = now_ms();
  p->hung_up = 0;
}

/*
 * The socket said EAGAIN: waits for it to take more. 0 = try again, else the
 * errno that ends the transfer (ETIMEDOUT after idle_ms without progress,
 * EPIPE when a hang-up was seen and writing still would block).
 */
static int wait_writable(job_t *j, pace_t *p) {
  if (p->hung_up) return EPIPE;
  int64_t left = (int64_t)j->idle_ms - (now_ms() - p->last_progress);
  if (left <= 0) return ETIMEDOUT;
  struct pollfd fds = {.fd = j->out_fd, .events = POLLOUT};
  int r = poll(&fds, 1, left > INT32_MAX ? INT32_MAX : (int)left);
  if (r < 0 && errno != EINTR) return errno;
  if (r > 0 && !(fds.revents & POLLOUT) && (fds.revents & (POLLHUP | POLLERR))) p->hung_up = 1;
  return 0;
}

static int transfer_sendfile(job_t *j) {
  pace_t p = {now_ms(), 0};
  while (j->remaining > 0) {
    if (atomic_load(&j->cancelled)) return ECANCELED;
    off_t off = (off_t)j->offset;
    size_t want = (uint64_t)j->remaining > MAX_CHUNK ? MAX_CHUNK : (size_t)j->remaining;
    ssize_t n = sendfile(j->out_fd, j->in_fd, &off, want);
    if (n > 0) {
      if ((size_t)n < want) j->partial_writes++;
      advance(j, &p, n);
      continue;
    }
    if (n == 0) return EIO; /* the file is shorter than the range */
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return errno;
    int err = wait_writable(j, &p);
    if (err != 0) return err;
  }
  return 0;
}

/*
 * buf[pos, have) is read from the file and not yet sent; j->offset is the
 * file offset of buf[pos], so when the buffer is drained it is also where
 * the next pread starts.
 */
static int transfer_copy(job_t *j) {
  pace_t p = {now_ms(), 0};
  size_t have = 0, pos = 0;
  while (j->remaining > 0) {
    if (atomic_load(&j->cancelled)) return ECANCELED;
    if (pos == have) {
      size_t want = (uint64_t)j->remaining > j->buf_size ? j->buf_size : (size_t)j->remaining;
      ssize_t r = pread(j->in_fd, j->buf, want, (off_t)j->offset);
      if (r < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (r == 0) return EIO; /* the file is shorter than the range */
      have = (size_t)r;
      pos = 0;
    }
    ssize_t n = send(j->out_fd, j->buf + pos, have - pos, MSG_NOSIGNAL);
    if (n > 0) {
      if ((size_t)n < have - pos) j->partial_writes++;
      pos += (size_t)n;
      advance(j, &p, n);
      continue;
    }
    if (n == 0) return EIO; /* cannot happen for a non-empty send on a stream socket */
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
    int err = wait_writable(j, &p);
    if (err != 0) return err;
  }
  return 0;
}

static void *run(void *arg) {
  job_t *j = arg;
  int err = j->buf != NULL ? transfer_copy(j) : transfer_sendfile(j);
  free(j->buf);
  j->buf = NULL;
  if (err != 0 && atomic_load(&j->cancelled)) err = ECANCELED;
  j->err = err;
  pthread_mutex_lock(&j->lock);
  close(j->out_fd);
  j->out_fd = -1;
  close(j->in_fd);
  j->in_fd = -1;
  pthread_mutex_unlock(&j->lock);
  REPORT_AND_END(j, job_unref);
  return NULL;
}

/*
 * The JS environment is going away (a serving thread terminated, the process
 * exiting) while the transfer runs: stop it and wait for its thread, which
 * would otherwise call into a freed threadsafe function.
 */
static void teardown_transfer(void *arg) {
  job_t *j = arg;
  j->hooked = 0;
  pthread_mutex_lock(&j->lock);
  atomic_store(&j->cancelled, 1);
  if (j->out_fd >= 0) shutdown(j->out_fd, SHUT_RDWR);
  pthread_mutex_unlock(&j->lock);
  WAIT_ENDED(j);
  job_unref(j); /* the hook's reference */
}

/* Runs on the JS thread (or with env == NULL while the environment is torn down). */
static void call_done(napi_env env, napi_value done, void *context, void *data) {
  (void)context;
  job_t *j = data;
  /* With env NULL the environment is being torn down and the hook already ran (and dropped its reference). */
  if (env != NULL && j->hooked) {
    j->hooked = 0;
    napi_remove_env_cleanup_hook(env, teardown_transfer, j);
    job_unref(j);
  }
  if (env != NULL && done != NULL) {
    napi_value argv[3], recv;
    napi_create_int32(env, j->err, &argv[0]);
    napi_create_double(env, (double)j->sent, &argv[1]);
    napi_create_double(env, (double)j->partial_writes, &argv[2]);
    napi_get_undefined(env, &recv);
    napi_call_function(env, recv, done, 3, argv, NULL);
  }
  job_unref(j);
}

static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  job_unref((job_t *)data);
}






static napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value a[7];
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 6) {
    napi_throw_type_error(env, NULL, "start(socketFd, fileFd, offset, length, idleTimeoutMs, done[, copyBufferBytes])");
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
  int64_t copy_bytes = 0;
  napi_valuetype copy_type = napi_undefined;
  if (argc >= 7 && napi_typeof(env, a[6], &copy_type) != napi_ok) copy_type = napi_null;
  if (copy_type != napi_undefined &&
      (napi_get_value_int64(env, a[6], &copy_bytes) != napi_ok || copy_bytes < 0 || copy_bytes > MAX_COPY_BUFFER)) {
    napi_throw_type_error(env, NULL, "start: copyBufferBytes must be an integer from 0 to 64 MiB");
    return NULL;
  }

  job_t *j = calloc(1, sizeof *j);
  if (j == NULL) return throw_errno(env, "start", ENOMEM);
  pthread_mutex_init(&j->lock, NULL);
  pthread_cond_init(&j->ended_cond, NULL);
  atomic_init(&j->cancelled, 0);
  /* The JS handle's, the completion call's, the thread's and the teardown hook's. */
  atomic_init(&j->refs, 4);
  j->offset = offset;
  j->remaining = length;
  j->idle_ms = idle;
  if (copy_bytes > 0) {
    j->buf_size = (size_t)copy_bytes;
    j->buf = malloc(j->buf_size);
    if (j->buf == NULL) {
      pthread_mutex_destroy(&j->lock);
      free(j);
      return throw_errno(env, "start", ENOMEM);
    }
  }
  j->out_fd = dup_cloexec(sock);
  j->in_fd = j->out_fd < 0 ? -1 : dup_cloexec(file);
  if (j->out_fd < 0 || j->in_fd < 0) {
    int err = errno;
    if (j->out_fd >= 0) close(j->out_fd);
    free(j->buf);
    pthread_mutex_destroy(&j->lock);
    free(j);
    return throw_errno(env, "dup", err);
  }

  napi_value name;
  napi_create_string_utf8(env, "ferry_sendfile", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, a[5], NULL, name, 0, 1, NULL, NULL, NULL, call_done, &j->tsfn) != napi_ok) {
    close(j->out_fd);
    close(j->in_fd);
    free(j->buf);
    pthread_mutex_destroy(&j->lock);
    free(j);
    napi_throw_error(env, NULL, "start: cannot create the completion callback");
    return NULL;
  }

  j->hooked = napi_add_env_cleanup_hook(env, teardown_transfer, j) == napi_ok;
  if (!j->hooked) atomic_fetch_sub(&j->refs, 1);
  int err = start_thread(run, j);
  if (err != 0) {
    if (j->hooked) napi_remove_env_cleanup_hook(env, teardown_transfer, j);
    close(j->out_fd);
    close(j->in_fd);
    napi_release_threadsafe_function(j->tsfn, napi_tsfn_abort);
    free(j->buf);
    pthread_mutex_destroy(&j->lock);
    free(j);
    return throw_errno(env, "pthread_create", err);
  }

  return job_handle(env, j, finalize_handle, &TRANSFER_TAG);
}

static napi_value Cancel(napi_env env, napi_callback_info info) {
  napi_value result;
  job_t *j = handle_arg(env, info, &TRANSFER_TAG, "cancel(handle)");
  if (j == NULL) return NULL;
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

/*
 * receive(socketFd, target, offset, length, idleTimeoutMs, done) -> handle:
 * reads exactly `length` bytes of a request body from the socket into
 * target[offset, offset + length) (a Uint8Array, typically a page-aligned
 * slab of shared memory) on a thread of its own, and calls
 * done(errno, bytesReceived) once on the JS thread. errno 0 = every byte came;
 * ECONNRESET = the peer closed first; ETIMEDOUT = no byte for idleTimeoutMs;
 * ECANCELED = cancel(handle) ran.
 *
 * With `target` null it reads and throws away up to `length` bytes instead,
 * through a 64 KiB buffer of the thread's, and the peer closing is a normal
 * end (errno 0): a lingering close, so a client still sending reads our
 * answer rather than a reset, and Node's parser never sees those bytes.
 *
 * Why: Node's HTTP parser reads a body 64 KiB at a time on the event loop and
 * copies every chunk into a fresh buffer, which storage then copies again
 * into its aligned slab: at 8 concurrent 100 MiB pushes the event loop was
 * ~85% busy, a third of it in those copies and the receive path around them
 * (docs/benchmarks-history.md, "Speed round 9"). Here the kernel copies each body byte
 * once, straight into the slab the disk write and the hash then use.
 *
 * The same safety argument as start() holds (see the top of this file):
 * the thread uses its own duplicate of the socket; every signal is blocked on
 * it; the job has two references. cancelReceive() does not touch the
 * connection (Node may go on to read and discard the rest of the body, and
 * write the response): it sets the flag and wakes the thread's poll through
 * an eventfd of the job's own. It never
 * reads past `length`, so bytes the client sent after the body (a pipelined
 * request) stay in the kernel. The JS side must keep `target` alive and
 * untouched until done() ran: the thread writes into it until then. Node
 * must not read the socket meanwhile (the caller stops its reading first).
 */
typedef struct {
  pthread_mutex_t lock;
  int fd;        /* our duplicate of the socket; -1 once closed (under lock) */
  int wake_fd;   /* eventfd cancelReceive() writes to; closed with fd */
  char *target;  /* where the bytes go; NULL = discard them (into `scratch`) */
  char *scratch; /* discard mode: the thread's buffer, freed by it */
  int64_t remaining, received;
  int idle_ms;
  int err;
  atomic_int cancelled;
  atomic_int refs;
  napi_ref keep; /* the target's array, held until done() */
  napi_threadsafe_function tsfn;
  pthread_cond_t ended_cond;
  int ended;
  int hooked;
} recv_job_t;

static void recv_job_unref(recv_job_t *j) {
  if (atomic_fetch_sub(&j->refs, 1) == 1) {
    pthread_cond_destroy(&j->ended_cond);
    pthread_mutex_destroy(&j->lock);
    free(j);
  }
}

static void wake_receive(recv_job_t *j) {
  atomic_store(&j->cancelled, 1);
  uint64_t one = 1;
  /* Wakes a waiting poll; cannot fail short of the counter overflowing. */
  ssize_t woke = write(j->wake_fd, &one, sizeof one);
  (void)woke;
}

/* As teardown_transfer: the target's memory and the threadsafe function go with the environment. */
static void teardown_receive(void *arg) {
  recv_job_t *j = arg;
  j->hooked = 0;
  pthread_mutex_lock(&j->lock);
  if (j->fd >= 0) wake_receive(j);
  pthread_mutex_unlock(&j->lock);
  WAIT_ENDED(j);
  recv_job_unref(j);
}

static int receive_all(recv_job_t *j) {
  int64_t last_progress = now_ms();
  while (j->remaining > 0) {
    if (atomic_load(&j->cancelled)) return ECANCELED;
    size_t want = (uint64_t)j->remaining > MAX_CHUNK ? MAX_CHUNK : (size_t)j->remaining;
    if (j->target == NULL && want > DISCARD_BUFFER) want = DISCARD_BUFFER;
    ssize_t n = recv(j->fd, j->target != NULL ? j->target + j->received : j->scratch, want, 0);
    if (n > 0) {
      j->received += n;
      j->remaining -= n;
      last_progress = now_ms();
      continue;
    }
    /* The peer closed: before the body ended, or (discarding) what a lingering close waits for. */
    if (n == 0) return j->target != NULL ? ECONNRESET : 0;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
    int64_t left = (int64_t)j->idle_ms - (now_ms() - last_progress);
    if (left <= 0) return ETIMEDOUT;
    struct pollfd fds[2] = {{.fd = j->fd, .events = POLLIN}, {.fd = j->wake_fd, .events = POLLIN}};
    int r = poll(fds, 2, left > INT32_MAX ? INT32_MAX : (int)left);
    if (r < 0 && errno != EINTR) return errno;
  }
  return 0;
}

static void *run_receive(void *arg) {
  recv_job_t *j = arg;
  int err = receive_all(j);
  free(j->scratch);
  j->scratch = NULL;
  if (err != 0 && atomic_load(&j->cancelled)) err = ECANCELED;
  j->err = err;
  pthread_mutex_lock(&j->lock);
  close(j->fd);
  j->fd = -1;
  close(j->wake_fd);
  j->wake_fd = -1;
  pthread_mutex_unlock(&j->lock);
  REPORT_AND_END(j, recv_job_unref);
  return NULL;
}

static void call_received(napi_env env, napi_value done, void *context, void *data) {
  (void)context;
  recv_job_t *j = data;
  if (env != NULL) {
    if (j->hooked) {
      j->hooked = 0;
      napi_remove_env_cleanup_hook(env, teardown_receive, j);
      recv_job_unref(j);
    }
    if (j->keep != NULL) napi_delete_reference(env, j->keep);
    if (done != NULL) {
      napi_value argv[2], recv;
      napi_create_int32(env, j->err, &argv[0]);
      napi_create_double(env, (double)j->received, &argv[1]);
      napi_get_undefined(env, &recv);
      napi_call_function(env, recv, done, 2, argv, NULL);
    }
  }
  recv_job_unref(j);
}

static void finalize_receive(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  recv_job_unref((recv_job_t *)data);
}

static napi_value Receive(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value a[6], ab, name;
  bool typed = false;
  napi_typedarray_type type;
  size_t target_length = 0, byte_offset = 0;
  void *target = NULL;
  int32_t sock, idle;
  int64_t offset, length;
  napi_valuetype done_type;
  napi_valuetype target_type = napi_undefined;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 6 ||
      napi_typeof(env, a[1], &target_type) != napi_ok) target_type = napi_undefined;
  bool discard = target_type == napi_null;
  if (target_type == napi_undefined || napi_get_value_int32(env, a[0], &sock) != napi_ok ||
      (!discard && (napi_is_typedarray(env, a[1], &typed) != napi_ok || !typed ||
                    napi_get_typedarray_info(env, a[1], &type, &target_length, &target, &ab, &byte_offset) != napi_ok ||
                    type != napi_uint8_array)) ||
      napi_get_value_int64(env, a[2], &offset) != napi_ok ||
      napi_get_value_int64(env, a[3], &length) != napi_ok || napi_get_value_int32(env, a[4], &idle) != napi_ok ||
      napi_typeof(env, a[5], &done_type) != napi_ok || done_type != napi_function || sock < 0 || idle <= 0 ||
      offset < 0 || length <= 0 ||
      (!discard && ((uint64_t)offset > target_length || (uint64_t)length > target_length - (size_t)offset))) {
    napi_throw_type_error(env, NULL, "receive(socketFd, target: Uint8Array | null, offset, length > 0 (fitting), idleTimeoutMs > 0, done)");
    return NULL;
  }
  recv_job_t *j = calloc(1, sizeof *j);
  if (j == NULL) return throw_errno(env, "receive", ENOMEM);
  pthread_mutex_init(&j->lock, NULL);
  pthread_cond_init(&j->ended_cond, NULL);
  atomic_init(&j->cancelled, 0);
  /* The JS handle's, the completion call's, the thread's and the teardown hook's. */
  atomic_init(&j->refs, 4);
  j->target = discard ? NULL : (char *)target + offset;
  j->remaining = length;
  if (discard && (j->scratch = malloc(DISCARD_BUFFER)) == NULL) {
    pthread_cond_destroy(&j->ended_cond);
    pthread_mutex_destroy(&j->lock);
    free(j);
    return throw_errno(env, "receive", ENOMEM);
  }
  j->idle_ms = idle;
  j->fd = dup_cloexec(sock);
  j->wake_fd = j->fd < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (j->fd < 0 || j->wake_fd < 0) {
    int err = errno;
    if (j->fd >= 0) close(j->fd);
    pthread_mutex_destroy(&j->lock);
    free(j->scratch);
    free(j);
    return throw_errno(env, "receive", err);
  }
  napi_create_string_utf8(env, "ferry_receive", NAPI_AUTO_LENGTH, &name);
  if ((!discard && napi_create_reference(env, a[1], 1, &j->keep) != napi_ok) ||
      napi_create_threadsafe_function(env, a[5], NULL, name, 0, 1, NULL, NULL, NULL, call_received, &j->tsfn) != napi_ok) {
    if (j->keep != NULL) napi_delete_reference(env, j->keep);
    close(j->fd);
    close(j->wake_fd);
    pthread_mutex_destroy(&j->lock);
    free(j->scratch);
    free(j);
    napi_throw_error(env, NULL, "receive: cannot create the completion callback");
    return NULL;
  }
  j->hooked = napi_add_env_cleanup_hook(env, teardown_receive, j) == napi_ok;
  if (!j->hooked) atomic_fetch_sub(&j->refs, 1);
  int err = start_thread(run_receive, j);
  if (err != 0) {
    if (j->hooked) napi_remove_env_cleanup_hook(env, teardown_receive, j);
    close(j->fd);
    close(j->wake_fd);
    if (j->keep != NULL) napi_delete_reference(env, j->keep);
    napi_release_threadsafe_function(j->tsfn, napi_tsfn_abort);
    pthread_mutex_destroy(&j->lock);
    free(j->scratch);
    free(j);
    return throw_errno(env, "pthread_create", err);
  }
  return job_handle(env, j, finalize_receive, &RECEIVE_TAG);
}

/* cancelReceive(handle) -> boolean (true if the receive was still running). */
static napi_value CancelReceive(napi_env env, napi_callback_info info) {
  napi_value result;
  recv_job_t *j = handle_arg(env, info, &RECEIVE_TAG, "cancelReceive(handle)");
  if (j == NULL) return NULL;
  int acted = 0;
  pthread_mutex_lock(&j->lock);
  if (j->fd >= 0) {
    wake_receive(j);
    acted = 1;
  }
  pthread_mutex_unlock(&j->lock);
  napi_get_boolean(env, acted, &result);
  return result;
}

/*
 * setTrimThreshold(bytes) -> boolean: glibc's M_TRIM_THRESHOLD. Node's HTTP
 * parser copies every request-body chunk into a fresh 64 KiB malloc block;
 * once a push's chunks are freed, glibc hands the top of the heap back to the
 * kernel and the next push faults every page in again. On VMs a fault costs
 * ~20 us, about 0.5 s of CPU per 100 MiB pushed; keeping up to `bytes` of
 * freed heap mapped removes that. Returns false where this is not glibc.
 */
static napi_value SetTrimThreshold(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg, result;
  int64_t bytes = 0;
  if (napi_get_cb_info(env, info, &argc, &arg, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int64(env, arg, &bytes) != napi_ok || bytes < 0 || bytes > INT32_MAX) {
    napi_throw_type_error(env, NULL, "setTrimThreshold(bytes)");
    return NULL;
  }
  int ok = 0;
#ifdef __GLIBC__
  ok = mallopt(M_TRIM_THRESHOLD, (int)bytes) == 1;
#endif
  napi_get_boolean(env, ok, &result);
  return result;
}

/*
 * trimHeap() -> boolean: glibc's malloc_trim(0), which hands the free pages
 * inside the heap back to the kernel (MADV_DONTNEED), not only the top the
 * trim threshold covers. Concurrent pushes keep tens of MiB of 64 KiB
 * request-body chunks alive between garbage collections; once they are freed
 * the main heap is mostly free space pinned below a few live blocks, which
 * stays resident for good (75 MiB of heap with 40 MiB free after 8 concurrent
 * 100 MiB pushes, docs/storage.md). Called once the pushes have gone quiet,
 * so the page faults of refilling it are not paid per push. Returns whether
 * any memory was released (false where this is not glibc).
 */
static napi_value TrimHeap(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  int released = 0;
#ifdef __GLIBC__
  released = malloc_trim(0);
#endif
  napi_get_boolean(env, released, &result);
  return result;
}

/*
 * discardPages(view) -> bytes: madvise(MADV_DONTNEED) on the whole pages
 * inside a Uint8Array's memory. They read as zeros afterwards and stop being
 * resident until written again; the memory stays the array's. For scratch
 * slabs a pool keeps once pushes have gone quiet: the pool keeps its slabs
 * (no allocation or garbage collection when pushes resume, only a page fault
 * per 4 KiB written, ~2 us here) but not their memory. Returns the bytes
 * discarded (0 when the view spans no whole page or madvise failed).
 */
static napi_value DiscardPages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg, result, buffer;
  bool typed = false;
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, &arg, NULL, NULL) != napi_ok || argc < 1 ||
      napi_is_typedarray(env, arg, &typed) != napi_ok || !typed ||
      napi_get_typedarray_info(env, arg, &type, &length, &data, &buffer, &offset) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "discardPages(Uint8Array)");
    return NULL;
  }
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)data + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)data + length) & ~(page - 1);
  double discarded = 0;
  if (data != NULL && end > start && madvise((void *)start, end - start, MADV_DONTNEED) == 0) discarded = (double)(end - start);
  napi_create_double(env, discarded, &result);
  return result;
}

/*
 * copyInto(target, offset, source) -> bytes: memcpy of all of `source` into
 * `target` at `offset` (both Uint8Arrays; throws unless it fits). For
 * copying request-body chunks into the SharedArrayBuffer slabs the hashing
 * thread reads: V8 copies into shared memory with relaxed atomic moves (it
 * must assume another thread reads them), which took 13% of Ferry's CPU
 * during 8 concurrent 100 MiB pushes against ~4% for a plain copy of the
 * same bytes. Here the slab is the request thread's alone until it is
 * posted, so a plain memcpy is safe.
 */
static napi_value CopyInto(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value a[3], result, ab;
  bool typed_target = false, typed_source = false;
  napi_typedarray_type type_target, type_source;
  size_t target_length = 0, source_length = 0, byte_offset = 0;
  void *target = NULL, *source = NULL;
  int64_t offset = -1;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 3 ||
      napi_is_typedarray(env, a[0], &typed_target) != napi_ok || !typed_target ||
      napi_is_typedarray(env, a[2], &typed_source) != napi_ok || !typed_source ||
      napi_get_typedarray_info(env, a[0], &type_target, &target_length, &target, &ab, &byte_offset) != napi_ok ||
      napi_get_typedarray_info(env, a[2], &type_source, &source_length, &source, &ab, &byte_offset) != napi_ok ||
      type_target != napi_uint8_array || type_source != napi_uint8_array ||
      napi_get_value_int64(env, a[1], &offset) != napi_ok || offset < 0 || (uint64_t)offset > target_length ||
      source_length > target_length - (size_t)offset) {
    napi_throw_range_error(env, NULL, "copyInto(target: Uint8Array, offset, source: Uint8Array): source must fit at offset");
    return NULL;
  }
  if (source_length > 0) memmove((char *)target + offset, source, source_length);
  napi_create_double(env, (double)source_length, &result);
  return result;
}

/*
 * listenReusePort(address, port, backlog) -> fd, or -errno: a listening TCP
 * socket with SO_REUSEPORT, so that each `ferry serve` thread has a socket of
 * its own on one port and the kernel spreads new connections over them by
 * their addresses. Threads sharing one socket instead leave the balance to
 * whichever event loop wakes first: with 32 connections opened at once, one
 * thread took nearly all of them (docs/benchmarks-history.md, "Speed round 5").
 * `address` is numeric IPv4 or IPv6; "" is every interface (IPv6 and IPv4).
 * With `exclusive`, the port is first bound once without SO_REUSEPORT: a
 * port another server already listens on (another Ferry started twice on it
 * included, which SO_REUSEPORT would otherwise let in) fails with EADDRINUSE.
 */
static napi_value ListenReusePort(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value a[4], result;
  bool exclusive = false;
  char address[64];
  size_t length = 0;
  int32_t port = -1, backlog = 511;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_string_utf8(env, a[0], address, sizeof address, &length) != napi_ok ||
      napi_get_value_int32(env, a[1], &port) != napi_ok || napi_get_value_int32(env, a[2], &backlog) != napi_ok ||
      (argc >= 4 && napi_get_value_bool(env, a[3], &exclusive) != napi_ok) || port < 0 || port > 65535 || backlog < 1) {
    napi_throw_type_error(env, NULL, "listenReusePort(address, port, backlog)");
    return NULL;
  }
  struct sockaddr_storage storage;
  memset(&storage, 0, sizeof storage);
  socklen_t size;
  int family, any = length == 0;
  if (any || strchr(address, ':') != NULL) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&storage;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    if (any) in6->sin6_addr = in6addr_any;
    else if (inet_pton(AF_INET6, address, &in6->sin6_addr) != 1) {
      napi_create_int32(env, -EINVAL, &result);
      return result;
    }
    family = AF_INET6;
    size = sizeof *in6;
  } else {
    struct sockaddr_in *in4 = (struct sockaddr_in *)&storage;
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, address, &in4->sin_addr) != 1) {
      napi_create_int32(env, -EINVAL, &result);
      return result;
    }
    family = AF_INET;
    size = sizeof *in4;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 && any) {
    /* No IPv6 on this machine: every IPv4 interface, as Node does. */
    struct sockaddr_in *in4 = (struct sockaddr_in *)&storage;
    memset(&storage, 0, sizeof storage);
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    in4->sin_addr.s_addr = htonl(INADDR_ANY);
    family = AF_INET;
    size = sizeof *in4;
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  }
  int err = 0, on = 1, off = 0;
  if (fd >= 0 && exclusive && port != 0) {
    int probe = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0 || setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        (family == AF_INET6 && any && setsockopt(probe, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) != 0) ||
        bind(probe, (struct sockaddr *)&storage, size) != 0) {
      err = errno;
    }
    if (probe >= 0) close(probe);
    if (err) {
      close(fd);
      napi_create_int32(env, -err, &result);
      return result;
    }
  }
  if (fd < 0) err = errno;
  else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
           setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
           (family == AF_INET6 && any && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) != 0) ||
           bind(fd, (struct sockaddr *)&storage, size) != 0 || listen(fd, backlog) != 0) {
    err = errno;
    close(fd);
  }
  napi_create_int32(env, err ? -err : fd, &result);
  return result;
}

/*
 * Keeps this library mapped for the life of the process. A job's threads run
 * a few instructions of it after they told the teardown hook they are done
 * (unlocking, returning); were the library unloaded with the last environment
 * that loaded it (a worker thread terminated), they would jump into unmapped
 * memory. Found by a review that crashed 3 of 5 runs of 300 terminated workers.
 */
static void pin_library(void) {
  Dl_info info;
  if (dladdr((void *)&pin_library, &info) != 0 && info.dli_fname != NULL) {
    void *self = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    (void)self; /* never closed */
  }
}

NAPI_MODULE_INIT() {
  pin_library();
  napi_value start, cancel, trim, trimHeap, reuse, discard, copy, receive, cancelReceive;
  napi_create_function(env, "receive", NAPI_AUTO_LENGTH, Receive, NULL, &receive);
  napi_set_named_property(env, exports, "receive", receive);
  napi_create_function(env, "cancelReceive", NAPI_AUTO_LENGTH, CancelReceive, NULL, &cancelReceive);
  napi_set_named_property(env, exports, "cancelReceive", cancelReceive);
  napi_create_function(env, "copyInto", NAPI_AUTO_LENGTH, CopyInto, NULL, &copy);
  napi_set_named_property(env, exports, "copyInto", copy);
  napi_create_function(env, "discardPages", NAPI_AUTO_LENGTH, DiscardPages, NULL, &discard);
  napi_set_named_property(env, exports, "discardPages", discard);
  napi_create_function(env, "listenReusePort", NAPI_AUTO_LENGTH, ListenReusePort, NULL, &reuse);
  napi_set_named_property(env, exports, "listenReusePort", reuse);
  napi_create_function(env, "setTrimThreshold", NAPI_AUTO_LENGTH, SetTrimThreshold, NULL, &trim);
  napi_set_named_property(env, exports, "setTrimThreshold", trim);
  napi_create_function(env, "trimHeap", NAPI_AUTO_LENGTH, TrimHeap, NULL, &trimHeap);
  napi_set_named_property(env, exports, "trimHeap", trimHeap);
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, Start, NULL, &start);
  napi_create_function(env, "cancel", NAPI_AUTO_LENGTH, Cancel, NULL, &cancel);
  napi_set_named_property(env, exports, "start", start);
  napi_set_named_property(env, exports, "cancel", cancel);
  register_body_file(env, exports);
  return exports;
}
